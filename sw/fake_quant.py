"""The fake-quant Keras network of quantization-aware training (:mod:`sw.qat`).

The integer network of ``docs/numerics.md`` in float32, trainable through straight-through
estimators. Its own module because it needs TensorFlow at import, which takes seconds:
:mod:`sw.qat` imports it only when a model is trained.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from .qmodel import value_range, weight_range

__all__ = ["FakeQuantNet", "power", "stochastic_round", "straight_through", "weight_bound"]


def weight_bound(bits):
    """Largest ``|w * 2**fw|`` that still has a gradient (rounds into the range)."""
    return 1.0 if bits == 1 else weight_range(bits)[1] + 0.5


@tf.custom_gradient
def ste(quantized, latent, mask):
    """``quantized`` forward; backward, the upstream gradient to ``latent`` where ``mask``."""

    def grad(upstream):
        return tf.zeros_like(quantized), upstream * mask, tf.zeros_like(mask)
    return tf.identity(quantized), grad


def straight_through(quantized, latent, mask=None):
    """``quantized`` in the forward pass, ``latent``'s gradient (where ``mask``) backward."""
    # A custom gradient, not `q + (x - stop_gradient(x))`: Grappler reassociates that sum
    # in graph mode, and the forward value must be exactly `quantized`.
    mask = tf.ones_like(latent) if mask is None else mask
    return ste(tf.stop_gradient(quantized), latent, mask)


def power(exponent):
    """``2**exponent`` as a float32 constant."""
    # Only multiplications by powers of two: exact, where TensorFlow's graph-mode
    # division by a constant is not (it multiplies by an approximate reciprocal).
    return tf.constant(2.0 ** np.asarray(exponent, np.float64), tf.float32)


def stochastic_round(w, fw, bits, seed):
    """Gupta et al.'s rounding onto the grid, ``floor(x + u)``; 1 bit: +1 w.p. (x+1)/2."""
    x = w * power(fw)
    u = keras.random.uniform(tf.shape(w), seed=seed)
    if bits == 1:
        q = tf.where(u < tf.clip_by_value((x + 1.0) * 0.5, 0.0, 1.0), 1.0, -1.0)
    else:
        lo, hi = weight_range(bits)
        q = tf.clip_by_value(tf.floor(x + u), lo, hi)
    return q * power(-fw)


class FakeQuantNet(keras.Model):
    """The integer network of ``docs/numerics.md`` in float32, trainable through STEs.

    ``scheme`` (:data:`sw.qat.TRAINING_SCHEMES`) says how the weights are held: ``dual-copy``,
    latent floats rounded to nearest in the forward pass; ``randomized``, on their grid,
    each optimizer step's result rounded back stochastically (seeded by ``seed``);
    ``iterative``, floats except where ``frozen``, which use their ``anchors`` (the
    rounded values, :func:`sw.qat.freeze`).
    """

    def __init__(self, plan, image_shape, scheme="dual-copy", seed=0, **kwargs):
        super().__init__(**kwargs)
        self.plan, self.image_shape = plan, tuple(image_shape)
        self.scheme, self.seed = scheme, seed
        self.kernels, self.biases, self.frozen, self.anchors = [], [], [], []
        # Scales the logits in training only: argmax, and so the integer model, ignores
        # it, but a low-bit network, whose logit range the fixed fractions pin, gets to
        # choose its softmax temperature.
        self.log_temperature = self.add_weight(shape=(), name="log_temperature",
                                               initializer="zeros")
        self.rounding_seed = keras.random.SeedGenerator(seed)
        for step in plan:
            if step["kind"] not in ("conv2d", "dense"):
                continue
            fw = step["weight_frac"].astype(np.float64)
            limit = (weight_bound(step["weight_bits"]) * 2.0 ** -fw).astype(np.float32)
            # Latent weights stay where they round into range (BinaryConnect's clip):
            # outside it their gradient would be zero for good.
            kernel = np.clip(step["kernel"], -limit, limit).astype(np.float32)
            self.kernels.append(self.add_weight(
                shape=kernel.shape, name=f"{step['name']}_kernel",
                initializer=keras.initializers.Constant(kernel),
                constraint=self._constraint(step, kernel.shape, limit)))
            self.biases.append(self.add_weight(
                shape=step["bias"].shape, name=f"{step['name']}_bias",
                initializer=keras.initializers.Constant(step["bias"].astype(np.float32))))

    def _constraint(self, step, shape, limit):
        """What the optimizer makes of a kernel after each step."""
        if self.scheme == "randomized":
            return functools.partial(stochastic_round, fw=step["weight_frac"],
                                     bits=step["weight_bits"], seed=self.rounding_seed)
        clip = functools.partial(tf.clip_by_value, clip_value_min=-limit,
                                 clip_value_max=limit)
        if self.scheme == "dual-copy":
            return clip
        frozen, anchor = (self.add_weight(shape=shape, name=f"{step['name']}_{what}",
                                          initializer="zeros", trainable=False)
                          for what in ("frozen", "anchor"))
        self.frozen.append(frozen)
        self.anchors.append(anchor)
        # Frozen weights are put back to their rounded values whatever the update did.
        return lambda w: tf.where(frozen > 0, anchor, clip(w))

    def call(self, x, training=False):
        index = 0
        for step in self.plan:
            if step["kind"] == "maxpool2d":
                x = tf.nn.max_pool2d(x, step["size"], step["size"], "VALID")
            elif step["kind"] == "flatten":
                x = tf.reshape(x, [tf.shape(x)[0], -1])
            else:
                kernel = self.kernels[index]
                if self.scheme == "iterative":
                    w = tf.where(self.frozen[index] > 0, self.anchors[index], kernel)
                else:
                    w = self._rounded_kernel(step, kernel)
                x = self._layer(x, step, w, self.biases[index])
                index += 1
        return x * tf.exp(self.log_temperature) if training else x

    @staticmethod
    def _rounded_kernel(step, kernel):
        """``q * 2**-fw`` of the latent kernel, straight-through inside the range."""
        bits, fw = step["weight_bits"], step["weight_frac"]
        scaled = kernel * power(fw)
        if bits == 1:
            q = tf.where(scaled >= 0, 1.0, -1.0)
        else:
            lo, hi = weight_range(bits)
            q = tf.clip_by_value(tf.round(scaled), lo, hi)  # tf.round is numpy.rint
        mask = tf.cast(tf.abs(scaled) <= weight_bound(bits), tf.float32)
        return straight_through(q * power(-fw), kernel, mask)

    @staticmethod
    def _layer(x, step, w, bias):
        """The weight layer with weights ``w``: rounded bias, sum, requantization."""
        fw, fa_in = step["weight_frac"], step["in_frac"]
        b = straight_through(tf.round(bias * power(fw + fa_in)) * power(-fw - fa_in), bias)
        if step["kind"] == "conv2d":
            y = tf.nn.conv2d(x, w, step["stride"], step["padding"].upper()) + b
        else:
            y = tf.matmul(x, w) + b
        if step["out_frac"] is None:
            return y  # the logits, at the accumulator's scale
        lo, hi = value_range(step["act_bits"], not step["relu"])
        z = y * power(step["out_frac"])
        out = tf.clip_by_value(tf.floor(z + 0.5), lo, hi) * power(-step["out_frac"])
        inside = tf.cast((z >= lo - 0.5) & (z < hi + 0.5), tf.float32)
        return straight_through(out, y, inside)

    @classmethod
    def _weight_layer(cls, x, step, kernel, bias):
        """The weight layer of a latent kernel rounded to nearest (dual-copy's forward)."""
        return cls._layer(x, step, cls._rounded_kernel(step, kernel), bias)
