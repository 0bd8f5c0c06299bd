"""Training through the integer numerics: dual-copy (QAT), randomized and iterative.

The three training methods of ``docs/quantization.md``, all on the fake-quant network below:

- ``dual-copy`` (QAT, BinaryConnect's float shadow copy): latent float weights, rounded to
  nearest in every forward pass, straight-through gradients (:func:`train_qat`);
- ``randomized`` (Gupta et al. 2015): no float copy; the weights live on their integer grid and
  every optimizer step's result is rounded back to it stochastically, seeded
  (:func:`train_qat` with ``method="randomized"``);
- ``iterative`` (incremental network quantization, Zhou et al. 2017): a growing share of each
  layer's weights, largest magnitudes first, is rounded and frozen, the float rest fine-tuned
  in between, until none is left (:func:`train_iterative`).

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

import json
import math
import os
from pathlib import Path

import numpy as np

from .data import augmented_dataset
from .errors import UserError
from .keras_import import (
    FloatConv2D,
    FloatDense,
    FloatFlatten,
    FloatMaxPool2D,
    extract,
    load_keras_model,
)
from .qmodel import weight_range
from .quantize import (
    CALIBRATION_IMAGES,
    TRAINED_LABELS,
    QuantConfig,
    choose_activation_frac,
    layer_widths,
    quantize,
    quantize_weights,
)
from .trained import (
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    TRAINING_SCHEMES,
    fractions_of,
    load_fractions,
    sidecar_path,
)

__all__ = [
    "ITERATIVE_SHARES",
    "check_shares",
    "export_model",
    "fake_quant_model",
    "freeze",
    "integer_layers",
    "recalibrate",
    "save_qat",
    "train_iterative",
    "train_qat",
    "verify_export",
]

#: Incremental quantization's cumulative shares of each layer's weights frozen per step.
ITERATIVE_SHARES = (0.5, 0.75, 0.875, 1.0)
#: The hardware's pixel fraction: the first layer sees ``p * 2**-8``.
_INPUT_FRAC = 8


#: The fake-quant network's step kind for each float layer kind it trains (average and
#: global pooling have no fake-quant step yet).
_PLAN_KINDS = {FloatConv2D: "conv2d", FloatDense: "dense", FloatMaxPool2D: "maxpool2d",
               FloatFlatten: "flatten"}


def _plan(fnet, fractions, widths):
    """One step per float layer, with the latent weights, the fixed fractions and the
    widths (``{weight layer name: (weight bits, activation bits)}``)."""
    steps, in_frac = [], _INPUT_FRAC
    for flayer in fnet.layers:
        kind = _PLAN_KINDS.get(type(flayer))
        if kind is None:
            raise UserError(f"layer {flayer.name!r} ({type(flayer).__name__}) is not supported "
                            f"by quantization-aware training yet")
        if not flayer.weighted:
            steps.append({"kind": kind, "name": flayer.name,
                          **({"size": flayer.size} if kind == "maxpool2d" else {})})
            continue
        fixed = fractions[flayer.name]
        # The float first layer acts on raw pixels; the hardware's input is p * 2**-8.
        scale = 2.0 ** _INPUT_FRAC if flayer is fnet.weight_layers[0] else 1.0
        steps.append({
            "kind": kind, "name": flayer.name, "kernel": flayer.weight * scale,
            "bias": flayer.bias, "weight_frac": np.asarray(fixed["weight_frac"], dtype=np.int64),
            "in_frac": in_frac, "relu": flayer.relu, "out_frac": fixed["out_frac"],
            "weight_bits": widths[flayer.name][0], "act_bits": widths[flayer.name][1],
            "stride": getattr(flayer, "stride", 1),
            "padding": getattr(flayer, "padding", "valid")})
        if fixed["out_frac"] is not None:
            in_frac = fixed["out_frac"]
    return steps


def _quantize_kernel(kernel, fw, bits):
    """Integer weights of a latent kernel, as the fake-quant forward computes them."""
    scaled = np.asarray(kernel, dtype=np.float64) * 2.0 ** fw
    if bits == 1:
        return np.where(scaled >= 0, 1, -1).astype(np.int64)
    lo, hi = weight_range(bits)
    return np.clip(np.rint(scaled), lo, hi).astype(np.int64)


def _stochastic_grid(kernel, fw, bits, rng):
    """``kernel`` stochastically rounded onto its integer grid ``q * 2**-fw`` (numpy)."""
    matrix = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    q, _ = quantize_weights(matrix, bits, rounding="stochastic", rng=rng, fixed_frac=fw)
    return (q * 2.0 ** -np.asarray(fw, np.float64)).reshape(kernel.shape)


def fake_quant_model(fnet, fractions, weight_bits, act_bits, scheme="dual-copy", seed=0,
                     layer_bits=()):
    """Build the trainable fake-quant model of ``fnet`` at fixed ``fractions``.

    Parameters
    ----------
    fnet : FloatNet
        The float model, its latent weights' starting point.
    fractions : dict
        ``{layer name: {"weight_frac": [...], "out_frac": int or None}}``.
    weight_bits, act_bits : int
    scheme : {"dual-copy", "randomized", "iterative"}
        How the weights are held (:data:`TRAINING_SCHEMES`). ``randomized`` starts from the
        float weights stochastically rounded onto their grid (``seed``); ``iterative`` starts
        with nothing frozen (:func:`freeze`).
    seed : int
        Seeds ``randomized``'s rounding, here and after every optimizer step.
    layer_bits : tuple
        Per-layer widths over ``weight_bits``/``act_bits`` (:class:`QuantConfig`'s
        ``layer_bits``: mixed precision).

    Returns
    -------
    keras.Model
        Takes ``float32`` images ``p * 2**-8`` of shape ``(N, *input_shape)`` and returns the
        logits ``acc * 2**-(fw + fa_in)`` of the integer model.
    """
    if scheme not in TRAINING_SCHEMES:
        raise UserError(f"unknown training method {scheme!r}; known: "
                        f"{', '.join(TRAINING_SCHEMES)}")
    config = QuantConfig(weight_bits=weight_bits, act_bits=act_bits, layer_bits=layer_bits)
    plan = _plan(fnet, fractions, layer_widths(fnet, config))
    if scheme == "randomized":
        rng = np.random.default_rng(seed)
        for step in plan:
            if step["kind"] in ("conv2d", "dense"):
                step["kernel"] = _stochastic_grid(step["kernel"], step["weight_frac"],
                                                  step["weight_bits"], rng)
    # TensorFlow takes seconds to import: only the training commands load the network class.
    from .fake_quant import FakeQuantNet

    model = FakeQuantNet(plan, fnet.input_shape, scheme=scheme, seed=seed, name=fnet.name)
    model(np.zeros((1, *fnet.input_shape), np.float32))
    model.quant_config = config  # the widths, for the sidecar (save_qat)
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

    net = type(model)
    rng = np.random.default_rng([model.seed, 1])  # randomized: the re-rounding's draws
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
        if model.scheme == "randomized":  # onto the new grid, as after an optimizer step
            kernel = _stochastic_grid(kernel, fw, step["weight_bits"], rng).astype(np.float32)
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
    fresh = net(plan, model.image_shape, scheme=model.scheme, seed=model.seed + 1,
                name=model.name)
    fresh(np.zeros((1, *model.image_shape), np.float32))
    fresh.log_temperature.assign(model.log_temperature)
    fresh.quant_config = model.quant_config
    return fresh


def _fractions_of_model(model):
    return {step["name"]: {"weight_frac": [int(v) for v in step["weight_frac"]],
                           "out_frac": None if step["out_frac"] is None else
                           int(step["out_frac"])}
            for step in model.plan if step["kind"] in ("conv2d", "dense")}


def _fit(model, dataset, epochs, steps_per_epoch, learning_rate, verbose):
    """Adam with a fresh cosine decay from ``learning_rate`` over ``epochs``."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                      learning_rate, epochs * steps_per_epoch, alpha=0.02)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False)  # the dataset shuffles


def _start(fnet, images, weight_bits, act_bits, seed, calibration, layer_bits):
    """Seed everything; the post-training fractions and the config of a training run."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    config = QuantConfig(weight_bits=weight_bits, act_bits=act_bits, layer_bits=layer_bits)
    return fractions_of(quantize(fnet, images[:calibration], config)), config


def train_qat(fnet, images, labels, weight_bits, act_bits, *, epochs=40, batch_size=64,
              learning_rate=2e-3, seed=0, calibration=CALIBRATION_IMAGES, recalibrate_after=10,
              verbose=1, method="dual-copy", layer_bits=()):
    """Fine-tune ``fnet`` with fake-quantized weights and activations (dual-copy or randomized).

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
    method : {"dual-copy", "randomized"}
        ``dual-copy``: latent float weights, rounded to nearest in each forward pass;
        ``randomized``: weights on their grid, each step's result rounded back
        stochastically (seeded by ``seed``).
    layer_bits : tuple
        Per-layer widths (mixed precision), as :class:`QuantConfig`'s.

    Returns
    -------
    model : keras.Model
        The trained fake-quant model (:func:`fake_quant_model`).
    fractions : dict
        The fixed fractions it used.
    """
    if method not in ("dual-copy", "randomized"):
        raise UserError(f"train_qat trains dual-copy or randomized, not {method!r}")
    fractions, config = _start(fnet, images, weight_bits, act_bits, seed, calibration,
                               layer_bits)
    model = fake_quant_model(fnet, fractions, config.weight_bits, config.act_bits,
                             scheme=method, seed=seed, layer_bits=config.layer_bits)
    dataset = _pixels_dataset(images, labels, batch_size, seed, fnet.input_shape)
    phases = [recalibrate_after, epochs - recalibrate_after] if 0 < recalibrate_after < epochs \
        else [epochs]
    for phase, phase_epochs in enumerate(phases):
        if phase:
            model = recalibrate(model, images[:calibration])
        _fit(model, dataset, phase_epochs, -(-len(images) // batch_size), learning_rate,
             verbose)
    return model, _fractions_of_model(model)


def check_shares(shares, epochs):
    """Return incremental quantization's cumulative ``shares`` as floats, or raise a UserError.

    They must rise strictly within ``(0, 1]`` and end at 1 (every weight quantized), and
    ``epochs`` must give each fine-tuning step (one before each share but the last) one.
    """
    try:
        values = tuple(float(share) for share in shares)
    except (TypeError, ValueError):
        raise UserError(f"--shares {shares!r} must be numbers, e.g. 0.5,0.75,0.875,1") from None
    if not values or values[-1] != 1.0 or not all(a < b for a, b in
                                                  zip((0.0, *values), values, strict=False)):
        raise UserError(f"--shares {','.join(f'{v:g}' for v in values)} must rise strictly "
                        f"within (0, 1] and end at 1, e.g. 0.5,0.75,0.875,1")
    if epochs < len(values) - 1:
        raise UserError(f"--epochs {epochs} is fewer than the {len(values) - 1} fine-tuning "
                        f"steps of --shares {','.join(f'{v:g}' for v in values)}")
    return values


def freeze(model, share):
    """Round and freeze the largest free weights of every layer until ``share`` are frozen.

    Incremental quantization's partition step: in each weight layer, the weights not yet
    frozen are ranked by magnitude ``|w|`` (the latent float, ties to the lower flat index),
    and the largest are rounded to nearest and frozen until ``ceil(share * size)`` of the
    layer's weights are; frozen weights keep their integer values from then on.

    Parameters
    ----------
    model : keras.Model
        An ``iterative`` fake-quant model (:func:`fake_quant_model`).
    share : float
        The cumulative share of each layer's weights frozen after this step, in ``(0, 1]``.
    """
    steps = [step for step in model.plan if step["kind"] in ("conv2d", "dense")]
    for step, kernel, frozen, anchor in zip(steps, model.kernels, model.frozen, model.anchors,
                                            strict=True):
        w = kernel.numpy().astype(np.float64)
        mask = frozen.numpy().reshape(-1) > 0
        free = np.flatnonzero(~mask)
        order = free[np.argsort(-np.abs(w.reshape(-1)[free]), kind="stable")]
        mask[order[:max(math.ceil(share * w.size) - int(mask.sum()), 0)]] = True
        mask = mask.reshape(w.shape)
        rounded = _quantize_kernel(w, step["weight_frac"], step["weight_bits"]) \
            * 2.0 ** -step["weight_frac"].astype(np.float64)
        values = np.where(mask, rounded, 0.0).astype(np.float32)
        anchor.assign(values)
        frozen.assign(mask.astype(np.float32))
        kernel.assign(np.where(mask, values, w).astype(np.float32))


def train_iterative(fnet, images, labels, weight_bits, act_bits, *, shares=ITERATIVE_SHARES,
                    epochs=40, batch_size=64, learning_rate=2e-3, seed=0,
                    calibration=CALIBRATION_IMAGES, verbose=1, callback=None, layer_bits=()):
    """Incremental quantization: freeze growing shares of the weights, fine-tuning the rest.

    The fractions are post-training quantization's (calibrated on ``images[:calibration]``)
    and stay fixed. For each share, :func:`freeze` rounds and freezes the largest free
    weights of every layer, then the still-float weights (and the biases) are fine-tuned with
    the fake-quant forward, frozen weights fixed; after the last share (1) no float weight is
    left and the network is the integer model.

    Parameters
    ----------
    fnet : FloatNet
    images, labels : ndarray of uint8
    weight_bits, act_bits : int
    shares : sequence of float
        Cumulative shares, default :data:`ITERATIVE_SHARES` (checked by
        :func:`check_shares`).
    epochs : int
        Fine-tuning epochs in all, split as evenly as can be over the steps before the last
        (earlier steps get the odd ones); at least one each.
    batch_size, learning_rate, seed, calibration, verbose
        As :func:`train_qat`; each fine-tuning step starts a fresh Adam with cosine decay.
    callback : callable, optional
        Called as ``callback(stage, share, model)`` with ``stage`` ``"frozen"`` after each
        partition and ``"tuned"`` after each fine-tuning.
    layer_bits : tuple
        Per-layer widths (mixed precision), as :class:`QuantConfig`'s.

    Returns
    -------
    model : keras.Model
        The trained fake-quant model, every weight frozen.
    fractions : dict
    """
    shares = check_shares(shares, epochs)
    tuned = len(shares) - 1
    fractions, config = _start(fnet, images, weight_bits, act_bits, seed, calibration,
                               layer_bits)
    model = fake_quant_model(fnet, fractions, config.weight_bits, config.act_bits,
                             scheme="iterative", seed=seed, layer_bits=config.layer_bits)
    dataset = _pixels_dataset(images, labels, batch_size, seed, fnet.input_shape)
    for index, share in enumerate(shares):
        freeze(model, share)
        if callback is not None:
            callback("frozen", share, model)
        if index < tuned:
            _fit(model, dataset, epochs // tuned + (index < epochs % tuned),
                 -(-len(images) // batch_size), learning_rate, verbose)
            if callback is not None:
                callback("tuned", share, model)
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
    config = model.quant_config
    sidecar = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
               "weight_bits": config.weight_bits, "act_bits": config.act_bits,
               "layer_bits": [list(entry) for entry in config.layer_bits],
               "rounding": "nearest", "granularity": "channel", "method": model.scheme,
               "layers": fractions, "training": training}
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
    sidecar = load_fractions(sidecar_path(path))
    fnet = extract(load_keras_model(path), name=model.name)
    config = QuantConfig(weight_bits=sidecar["weight_bits"], act_bits=sidecar["act_bits"],
                         layer_bits=sidecar["layer_bits"])
    qmodel = quantize(fnet, pixels, config, fractions=sidecar["layers"])
    qmodel.config["method"] = TRAINED_LABELS[sidecar["method"]]
    for (q, b), layer in zip(integer_layers(model), qmodel.weight_layers, strict=True):
        if not (np.array_equal(q, layer.weight) and np.array_equal(b, layer.bias)):
            raise RuntimeError(f"{path}: layer {layer.name!r} does not quantize back to the "
                               f"trained integers")
    return qmodel
