"""Quantization-aware training (QAT): fine-tune a float model through the integer numerics.

The network trained here computes in float32 exactly what ``docs/numerics.md`` computes in
integers, with the fractions (``fw`` per output channel, ``fa`` per activation) chosen by the
post-training rules and held fixed while the weights train (re-chosen once, after a quarter of
the epochs by default, for the network as trained so far: :func:`recalibrate`):

- the input is the hardware's ``p * 2**-8``, the first layer's weights scaled by ``2**8`` as
  :func:`sw.quantize.quantize` scales them;
- weights are ``q * 2**-fw`` with ``q`` the rounded, clipped (or, at 1 bit, sign) integer;
  biases ``rint(b * 2**(fw + fa_in)) * 2**-(fw + fa_in)``;
- hidden activations are ``clamp(floor(y * 2**fa + 1/2), lo, hi) * 2**-fa``, the requantizer's
  round half up and clamp; the last layer's output are the logits.

Every product and sum is a small multiple of a power of two, so float32 holds it exactly and
the trained network *is* the integer model. Gradients pass straight through (STE): the
identity for weights inside their representable range (latent weights are clipped to it, as
in BinaryConnect) and for activations inside the clamp, zero outside. In training only, the
logits are multiplied by a learned temperature, which does not change their argmax.

The result is saved as a plain ``.keras`` model with the de-quantized weights (it expects
``p / 255`` like the float seed models) plus a sidecar ``NAME.quant.json`` with the fractions;
:func:`sw.quantize.quantize_model` finds the pair and reproduces the trained integer model.
"""

import functools
import json
import os
from pathlib import Path

import numpy as np

from .errors import UserError
from .keras_import import FloatConv2D, FloatDense, FloatFlatten, FloatMaxPool2D
from .qmodel import value_range, weight_range

__all__ = [
    "SIDECAR_FORMAT",
    "export_model",
    "fake_quant_model",
    "fractions_of",
    "integer_layers",
    "load_fractions",
    "qat_model_path",
    "recalibrate",
    "save_qat",
    "sidecar_path",
    "train_qat",
    "verify_export",
]

SIDECAR_FORMAT = "nnfpga-qat-fractions"
_SIDECAR_VERSION = 1
#: The hardware's pixel fraction: the first layer sees ``p * 2**-8``.
_INPUT_FRAC = 8


def sidecar_path(keras_path):
    """The fractions file that goes with a QAT ``.keras`` model: ``NAME.quant.json``."""
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.stem + ".quant.json")


def qat_model_path(name, weight_bits, act_bits, directory=None):
    """Where the shipped QAT model of seed ``name`` at ``W``/``A`` bits lives (may not exist)."""
    from .models import MODELS_DIR

    return Path(directory or MODELS_DIR) / f"{name}-w{weight_bits}a{act_bits}.keras"


def fractions_of(qmodel):
    """The ``{layer name: {"weight_frac": [...], "out_frac": int or None}}`` of a QModel."""
    return {layer.name: {"weight_frac": [int(v) for v in layer.weight_frac],
                         "out_frac": None if layer.is_output else int(layer.out_frac)}
            for layer in qmodel.weight_layers}


def load_fractions(path):
    """Read a sidecar written by :func:`save_qat`.

    Returns
    -------
    dict
        With ``weight_bits``, ``act_bits``, ``layers`` (the fractions, as for
        :func:`sw.quantize.quantize`) and ``training`` (how the model was trained).

    Raises
    ------
    UserError
        If the file is missing, not a sidecar, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"QAT fractions file {str(path)!r} not found")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT or data.get("version") != _SIDECAR_VERSION:
            raise UserError(f"{path}: not a version {_SIDECAR_VERSION} {SIDECAR_FORMAT} file")
        layers = {}
        for name, entry in data["layers"].items():
            fw = [int(v) for v in entry["weight_frac"]]
            out = entry["out_frac"]
            if not fw or any(v != w for v, w in zip(fw, entry["weight_frac"], strict=True)) or (
                    out is not None and int(out) != out):
                raise ValueError(f"layer {name!r}: fractions must be integers")
            layers[name] = {"weight_frac": fw, "out_frac": None if out is None else int(out)}
        return {"weight_bits": int(data["weight_bits"]), "act_bits": int(data["act_bits"]),
                "layers": layers, "training": dict(data.get("training", {}))}
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: corrupt QAT fractions file ({type(error).__name__}: "
                        f"{str(error)[:120]})") from None


def _plan(fnet, fractions, weight_bits, act_bits):
    """One step per float layer, with the latent weights and the fixed fractions."""
    steps, in_frac = [], _INPUT_FRAC
    for flayer in fnet.layers:
        if isinstance(flayer, FloatConv2D | FloatDense):
            fixed = fractions[flayer.name]
            # The float first layer acts on raw pixels; the hardware's input is p * 2**-8.
            scale = 2.0 ** _INPUT_FRAC if flayer is fnet.weight_layers[0] else 1.0
            fw = np.asarray(fixed["weight_frac"], dtype=np.int64)
            steps.append({
                "kind": "conv2d" if isinstance(flayer, FloatConv2D) else "dense",
                "name": flayer.name, "kernel": flayer.weight * scale, "bias": flayer.bias,
                "weight_frac": fw, "in_frac": in_frac, "relu": flayer.relu,
                "out_frac": fixed["out_frac"], "weight_bits": weight_bits, "act_bits": act_bits,
                "stride": getattr(flayer, "stride", 1),
                "padding": getattr(flayer, "padding", "valid")})
            if fixed["out_frac"] is not None:
                in_frac = fixed["out_frac"]
        elif isinstance(flayer, FloatMaxPool2D):
            steps.append({"kind": "maxpool2d", "name": flayer.name, "size": flayer.size})
        elif isinstance(flayer, FloatFlatten):
            steps.append({"kind": "flatten", "name": flayer.name})
        else:
            raise UserError(f"layer {flayer.name!r} ({type(flayer).__name__}) is not supported "
                            f"by quantization-aware training yet")
    return steps


def _weight_bound(bits):
    """Largest ``|w * 2**fw|`` that still has a gradient (rounds into the range)."""
    return 1.0 if bits == 1 else weight_range(bits)[1] + 0.5


def _quantize_kernel(kernel, fw, bits):
    """Integer weights of a latent kernel, as the fake-quant forward computes them."""
    scaled = np.asarray(kernel, dtype=np.float64) * 2.0 ** fw
    if bits == 1:
        return np.where(scaled >= 0, 1, -1).astype(np.int64)
    lo, hi = weight_range(bits)
    return np.clip(np.rint(scaled), lo, hi).astype(np.int64)


@functools.cache
def _network_class():
    """The fake-quant Keras model class (built lazily: TensorFlow takes seconds to import)."""
    import keras
    import tensorflow as tf

    @tf.custom_gradient
    def ste(quantized, latent, mask):
        def grad(upstream):
            return tf.zeros_like(quantized), upstream * mask, tf.zeros_like(mask)
        return tf.identity(quantized), grad

    def straight_through(quantized, latent, mask=None):
        # A custom gradient, not `q + (x - stop_gradient(x))`: Grappler reassociates that sum
        # in graph mode, and the forward value must be exactly `quantized`.
        mask = tf.ones_like(latent) if mask is None else mask
        return ste(tf.stop_gradient(quantized), latent, mask)

    class FakeQuantNet(keras.Model):
        """The integer network of ``docs/numerics.md`` in float32, trainable through STEs."""

        def __init__(self, plan, image_shape, **kwargs):
            super().__init__(**kwargs)
            self.plan, self.image_shape = plan, tuple(image_shape)
            self.kernels, self.biases = [], []
            # Scales the logits in training only: argmax, and so the integer model, ignores
            # it, but a low-bit network, whose logit range the fixed fractions pin, gets to
            # choose its softmax temperature.
            self.log_temperature = self.add_weight(shape=(), name="log_temperature",
                                                   initializer="zeros")
            for step in plan:
                if step["kind"] not in ("conv2d", "dense"):
                    continue
                fw = step["weight_frac"].astype(np.float64)
                limit = (_weight_bound(step["weight_bits"]) * 2.0 ** -fw).astype(np.float32)
                # Latent weights stay where they round into range (BinaryConnect's clip):
                # outside it their gradient would be zero for good.
                kernel = np.clip(step["kernel"], -limit, limit).astype(np.float32)
                self.kernels.append(self.add_weight(
                    shape=kernel.shape, name=f"{step['name']}_kernel",
                    initializer=keras.initializers.Constant(kernel),
                    constraint=functools.partial(tf.clip_by_value, clip_value_min=-limit,
                                                 clip_value_max=limit)))
                self.biases.append(self.add_weight(
                    shape=step["bias"].shape, name=f"{step['name']}_bias",
                    initializer=keras.initializers.Constant(step["bias"].astype(np.float32))))

        def call(self, x, training=False):
            index = 0
            for step in self.plan:
                if step["kind"] == "maxpool2d":
                    x = tf.nn.max_pool2d(x, step["size"], step["size"], "VALID")
                elif step["kind"] == "flatten":
                    x = tf.reshape(x, [tf.shape(x)[0], -1])
                else:
                    x = self._weight_layer(x, step, self.kernels[index], self.biases[index])
                    index += 1
            return x * tf.exp(self.log_temperature) if training else x

        @staticmethod
        def _weight_layer(x, step, kernel, bias):
            # Only multiplications by powers of two: exact, where TensorFlow's graph-mode
            # division by a constant is not (it multiplies by an approximate reciprocal).
            def power(exponent):
                return tf.constant(2.0 ** np.asarray(exponent, np.float64), tf.float32)

            bits, fw, fa_in = step["weight_bits"], step["weight_frac"], step["in_frac"]
            scaled = kernel * power(fw)
            if bits == 1:
                q = tf.where(scaled >= 0, 1.0, -1.0)
            else:
                lo, hi = weight_range(bits)
                q = tf.clip_by_value(tf.round(scaled), lo, hi)  # tf.round is numpy.rint
            mask = tf.cast(tf.abs(scaled) <= _weight_bound(bits), tf.float32)
            w = straight_through(q * power(-fw), kernel, mask)
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

    return FakeQuantNet


def fake_quant_model(fnet, fractions, weight_bits, act_bits):
    """Build the trainable fake-quant model of ``fnet`` at fixed ``fractions``.

    Parameters
    ----------
    fnet : FloatNet
        The float model, its latent weights' starting point.
    fractions : dict
        ``{layer name: {"weight_frac": [...], "out_frac": int or None}}``.
    weight_bits, act_bits : int

    Returns
    -------
    keras.Model
        Takes ``float32`` images ``p * 2**-8`` of shape ``(N, *input_shape)`` and returns the
        logits ``acc * 2**-(fw + fa_in)`` of the integer model.
    """
    model = _network_class()(_plan(fnet, fractions, weight_bits, act_bits), fnet.input_shape,
                             name=fnet.name)
    model(np.zeros((1, *fnet.input_shape), np.float32))
    return model


def integer_layers(model):
    """The trained integer ``(weight, bias)`` of each weight layer, as the forward uses them."""
    layers = []
    steps = [step for step in model.plan if step["kind"] in ("conv2d", "dense")]
    for step, kernel, bias in zip(steps, model.kernels, model.biases, strict=True):
        fw = step["weight_frac"]
        q = _quantize_kernel(kernel.numpy(), fw, step["weight_bits"])
        b = np.rint(bias.numpy().astype(np.float64) * 2.0 ** (fw + step["in_frac"]))
        layers.append((q, b.astype(np.int64)))
    return layers


def export_model(model):
    """A plain Keras model (no custom objects) with the de-quantized trained weights.

    Like the float seed models it expects ``p / 255``; its first layer's weights are therefore
    ``q * 2**-fw * 255/256`` (exact in float32), which :func:`sw.keras_import.extract` and
    :func:`sw.quantize.quantize` turn back into ``q``.
    """
    import keras

    layers, weights = [keras.Input(model.image_shape)], []
    integers = iter(integer_layers(model))
    first = True
    for step in model.plan:
        name = step["name"]
        if step["kind"] == "maxpool2d":
            layers.append(keras.layers.MaxPooling2D(step["size"], name=name))
            continue
        if step["kind"] == "flatten":
            layers.append(keras.layers.Flatten(name=name))
            continue
        q, b = next(integers)
        activation = "relu" if step["relu"] else None
        if step["kind"] == "conv2d":
            layers.append(keras.layers.Conv2D(q.shape[-1], q.shape[0], strides=step["stride"],
                                              padding=step["padding"], activation=activation,
                                              name=name))
        else:
            layers.append(keras.layers.Dense(q.shape[-1], activation=activation, name=name))
        fw = step["weight_frac"]
        # q * 255 has at most 15 bits: the float32 value is exact.
        w = q * (255.0 / 2.0 ** _INPUT_FRAC if first else 1.0) * 2.0 ** -fw.astype(np.float64)
        weights.append((name, w.astype(np.float32),
                        (b * 2.0 ** -(fw + step["in_frac"]).astype(np.float64)).astype(np.float32)))
        first = False
    plain = keras.Sequential(layers, name=model.name)
    for name, w, b in weights:
        plain.get_layer(name).set_weights([w, b])
    return plain


def _pixels_dataset(images, labels, batch_size, seed, shape):
    """Augmented batches as the hardware sees them: whole pixels ``0..255`` times ``2**-8``."""
    from .train import augmented_dataset

    def to_hardware(x, y):
        import tensorflow as tf

        x = tf.clip_by_value(tf.round(x), 0.0, 255.0) * 2.0 ** -_INPUT_FRAC
        return tf.reshape(x, (-1, *shape)), y

    return augmented_dataset(images, labels, batch_size=batch_size, seed=seed,
                             raw=True).map(to_hardware)


def recalibrate(model, pixels):
    """Re-choose every fraction for the network as it is now, with the post-training rules.

    Weight fractions come from the latent weights (1-bit weights keep theirs); each
    activation's from the pre-clamp values of the fake-quant network itself (earlier layers
    already at their new fractions), not from a float model.

    Parameters
    ----------
    model : keras.Model
        A fake-quant model (:func:`fake_quant_model`).
    pixels : ndarray of uint8
        Calibration (training) images.

    Returns
    -------
    keras.Model
        A new fake-quant model with the same latent weights and the new fractions.
    """
    import tensorflow as tf

    from .quantize import choose_activation_frac, quantize_weights

    net = type(model)
    x = tf.constant(np.asarray(pixels, np.float32).reshape(len(pixels), *model.image_shape)
                    * np.float32(2.0 ** -_INPUT_FRAC))
    plan, in_frac, index = [], _INPUT_FRAC, 0
    for step in model.plan:
        if step["kind"] == "maxpool2d":
            x = tf.nn.max_pool2d(x, step["size"], step["size"], "VALID")
        elif step["kind"] == "flatten":
            x = tf.reshape(x, [tf.shape(x)[0], -1])
        if step["kind"] not in ("conv2d", "dense"):
            plan.append(step)
            continue
        kernel, bias = model.kernels[index].numpy(), model.biases[index].numpy()
        index += 1
        output = step["out_frac"] is None
        fw = step["weight_frac"]
        if step["weight_bits"] > 1:
            # Binary latent weights sit near the clip at 2**-fw, so their magnitude says
            # nothing new about the scale: 1-bit weights keep their fractions.
            _, fw = quantize_weights(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64),
                                     step["weight_bits"], per_channel=not output)
        new = {**step, "kernel": kernel, "bias": bias, "weight_frac": fw, "in_frac": in_frac}
        if not output:
            y = net._weight_layer(x, {**new, "out_frac": None}, tf.constant(kernel),
                                  tf.constant(bias)).numpy()
            samples = np.maximum(y, 0) if step["relu"] else y
            new["out_frac"] = choose_activation_frac(samples[:4096], step["act_bits"],
                                                     not step["relu"])
            x = net._weight_layer(x, new, tf.constant(kernel), tf.constant(bias))
            in_frac = new["out_frac"]
        plan.append(new)
    fresh = net(plan, model.image_shape, name=model.name)
    fresh(np.zeros((1, *model.image_shape), np.float32))
    fresh.log_temperature.assign(model.log_temperature)
    return fresh


def _fractions_of_model(model):
    return {step["name"]: {"weight_frac": [int(v) for v in step["weight_frac"]],
                           "out_frac": None if step["out_frac"] is None else
                           int(step["out_frac"])}
            for step in model.plan if step["kind"] in ("conv2d", "dense")}


def train_qat(fnet, images, labels, weight_bits, act_bits, *, epochs=40, batch_size=64,
              learning_rate=2e-3, seed=0, calibration=1000, recalibrate_after=10, verbose=1):
    """Fine-tune ``fnet`` with fake-quantized weights and activations.

    The fractions are those post-training quantization picks (calibrated on
    ``images[:calibration]``). With ``recalibrate_after = E``, they are re-chosen once after
    ``E`` epochs for the network as trained so far (:func:`recalibrate`) and training goes on
    with a fresh cosine schedule; either way they are fixed while the weights train, and the
    returned fractions are the ones the final network used.

    Parameters
    ----------
    fnet : FloatNet
    images, labels : ndarray of uint8
        Training images ``(N, 28, 28)`` and labels.
    weight_bits, act_bits : int
    epochs, batch_size, learning_rate, seed, calibration, recalibrate_after, verbose
        Adam with cosine decay from ``learning_rate``; ``seed`` makes the run repeatable.

    Returns
    -------
    model : keras.Model
        The trained fake-quant model (:func:`fake_quant_model`).
    fractions : dict
        The fixed fractions it used.
    """
    import keras
    import tensorflow as tf

    from .quantize import QuantConfig, quantize

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    config = QuantConfig(weight_bits=weight_bits, act_bits=act_bits)
    fractions = fractions_of(quantize(fnet, images[:calibration], config))
    model = fake_quant_model(fnet, fractions, config.weight_bits, config.act_bits)
    dataset = _pixels_dataset(images, labels, batch_size, seed, fnet.input_shape)
    phases = [recalibrate_after, epochs - recalibrate_after] if 0 < recalibrate_after < epochs \
        else [epochs]
    for phase, phase_epochs in enumerate(phases):
        if phase:
            model = recalibrate(model, images[:calibration])
        steps = phase_epochs * -(-len(images) // batch_size)
        model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                          learning_rate, steps, alpha=0.02)),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(dataset, epochs=phase_epochs, verbose=verbose,
                  shuffle=False)  # the dataset shuffles
    return model, _fractions_of_model(model)


def save_qat(model, fractions, out, training):
    """Write the plain ``.keras`` model and its ``.quant.json`` sidecar (each atomically).

    Parameters
    ----------
    model : keras.Model
        The trained fake-quant model.
    fractions : dict
    out : str or Path
        The ``.keras`` file.
    training : dict
        How it was trained, recorded in the sidecar.

    Returns
    -------
    list of Path
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    step = next(step for step in model.plan if step["kind"] in ("conv2d", "dense"))
    sidecar = {"format": SIDECAR_FORMAT, "version": _SIDECAR_VERSION,
               "weight_bits": step["weight_bits"], "act_bits": step["act_bits"],
               "rounding": "nearest", "granularity": "channel", "layers": fractions,
               "training": training}
    temporary = out.with_suffix(".tmp.keras")
    export_model(model).save(temporary)
    side = sidecar_path(out)
    side_tmp = side.with_suffix(".tmp")
    side_tmp.write_text(json.dumps(sidecar, indent=1) + "\n")
    os.replace(temporary, out)
    os.replace(side_tmp, side)
    return [out, side]


def verify_export(model, path, pixels):
    """Quantize the saved pair as every command does and check it is the trained model.

    Parameters
    ----------
    model : keras.Model
        The trained fake-quant model.
    path : str or Path
        Its saved ``.keras`` file (with the sidecar beside it).
    pixels : ndarray of uint8
        A few images (quantization needs some, though the fractions are fixed).

    Returns
    -------
    QModel
        The integer model, equal to the trained one weight for weight.
    """
    from .keras_import import extract, load_keras_model
    from .quantize import QuantConfig, quantize

    sidecar = load_fractions(sidecar_path(path))
    fnet = extract(load_keras_model(path), name=model.name)
    config = QuantConfig(weight_bits=sidecar["weight_bits"], act_bits=sidecar["act_bits"])
    qmodel = quantize(fnet, pixels, config, fractions=sidecar["layers"])
    for (q, b), layer in zip(integer_layers(model), qmodel.weight_layers, strict=True):
        if not (np.array_equal(q, layer.weight) and np.array_equal(b, layer.bias)):
            raise RuntimeError(f"{path}: layer {layer.name!r} does not quantize back to the "
                               f"trained integers")
    return qmodel
