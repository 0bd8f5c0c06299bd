"""Quantize a float model to the integer model of ``docs/numerics.md``, and export it.

Command line::

    python -m sw.quantize --model lenet5 --bits 4 --out build/lenet5-4b [--method NAME]

``--method`` is one of :data:`METHODS` (``docs/quantization.md``); :func:`quantize_model`
turns a model, bit widths and a method name into the integer model, for every command.
"""

import argparse
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .data import check_images, load_train, parse_data_arg
from .errors import UserError, cli_main
from .keras_import import extract, load_keras_model
from .models import SEED_MODELS, load_float_net, model_path
from .outputs import prepare_dir, replace_dir
from .qmodel import MAX_BITS, QModel, save_qmodel, value_range, weight_range
from .trained import load_fractions, sidecar_path, trained_model_path

__all__ = [
    "CALIBRATION_IMAGES",
    "GRANULARITIES",
    "METHODS",
    "METHOD_ALIASES",
    "METHOD_HELP",
    "METHOD_TABLE",
    "PRESETS",
    "ROUNDINGS",
    "SCALE_RULES",
    "TRAINED_LABELS",
    "TRAINED_METHODS",
    "TRAIN_FLAGS",
    "QuantConfig",
    "add_bits_arguments",
    "bits_from_args",
    "check_bits",
    "check_calibration",
    "check_method",
    "choose_activation_frac",
    "layer_widths",
    "main",
    "parse_bits",
    "parse_layer_bits",
    "quantize",
    "quantize_model",
    "quantize_weights",
    "rom_words",
    "train_command",
    "widths_label",
    "write_exports",
]

ROUNDINGS = ("nearest", "floor", "stochastic")
#: How power-of-two fractions are chosen: least squared error after rounding (``error``, the
#: post-training default) or the largest fraction at which nothing clips (``range``: dynamic
#: fixed point).
SCALE_RULES = ("error", "range")
#: Every quantization method by name, with what it does (``docs/quantization.md``): the one
#: table every command's ``--method`` and :func:`quantize_model` follow.
METHOD_TABLE = {
    "auto": "the shipped dual-copy (QAT) model where there is one for these bits, else ptq "
            "(the default)",
    "ptq": "post-training: round the float weights once, fractions of least squared error",
    "dynamic-fp": "dynamic fixed point: post-training, each channel's and activation's "
                  "power-of-two exponent from its range (nothing clips on calibration data)",
    "randomized": "stochastic rounding (seeded): the model trained so (sw.train --method "
                  "randomized) where there is one, else post-training",
    "dual-copy": "the model trained with a float copy of every weight rounded in each forward "
                 "pass (sw.train --method dual-copy); none is an error",
    "iterative": "the model trained by incremental quantization (sw.train --method "
                 "iterative); none is an error",
}
#: Other spellings of the same methods: ``qat`` is today's name of ``dual-copy``.
METHOD_ALIASES = {"qat": "dual-copy", "dual_copy": "dual-copy", "dynamic_fp": "dynamic-fp"}
#: Every name ``--method`` takes (``choices=`` of commands that have not moved to
#: :func:`check_method`).
METHODS = (*METHOD_TABLE, *METHOD_ALIASES)
#: Methods that are a way of training: :func:`quantize_model` finds the model they trained.
TRAINED_METHODS = ("dual-copy", "randomized", "iterative")
#: The ``--method`` help of every command that quantizes.
METHOD_HELP = "; ".join([f"{name}: {what}" for name, what in METHOD_TABLE.items()]
                        + ["qat: dual-copy (its former name)"]) + " (docs/quantization.md)"
GRANULARITIES = ("channel", "tensor")
#: Fixed weight fraction of the seed notebook's ``int(w*256)`` scheme.
PRESETS = {"x256": {"weight_frac": 8, "rounding": "floor", "weight_bits": 8, "act_bits": 8}}


#: Training images that calibrate activations, the same for every command (a build and its
#: regression must quantize identically).
CALIBRATION_IMAGES = 1000


def check_calibration(count, available=None):
    """Return ``count`` of calibration images if it is usable, or raise a :class:`UserError`.

    Parameters
    ----------
    count : int
        ``--calibration``.
    available : int, optional
        Training images there are; asking for more is said, not silently cut.
    """
    if count < 1:
        raise UserError(f"--calibration must be a positive number of images, not {count}")
    if available is not None and count > available:
        print(f"note: --calibration {count}: only {available} training images; using all",
              file=sys.stderr)
    return count


def check_bits(bits, what="bit width"):
    """Return ``bits`` as an int in 1..:data:`~sw.qmodel.MAX_BITS`, or raise a one-line
    :class:`UserError`."""
    try:
        value = int(bits)
    except (TypeError, ValueError):
        raise UserError(f"{what} {bits!r} is not an integer in 1..{MAX_BITS}") from None
    if str(value) != str(bits).strip() or not 1 <= value <= MAX_BITS:
        raise UserError(f"{what} {bits!r} is out of range: must be an integer in 1..{MAX_BITS}")
    return value


def parse_bits(text):
    """Parse ``"8,4,2,1"`` into a list of bit widths, each checked by :func:`check_bits`."""
    parts = [part for part in str(text).split(",") if part.strip()]
    if not parts:
        raise UserError("--bits needs at least one bit width, e.g. 8,4")
    return [check_bits(part.strip(), "--bits entry") for part in parts]


def add_bits_arguments(parser, default="4"):
    """``--bits``, ``--weight-bits`` and ``--act-bits``, meaning the same in every command:
    ``--bits`` is the width of the weights and of the activations, and the other two
    override either (read them with :func:`bits_from_args`)."""
    parser.add_argument("--bits", default=default,
                        help=f"weight and activation bits, 1..{MAX_BITS} (default {default}; "
                             f"beyond 8 on hard multipliers only)")
    parser.add_argument("--weight-bits", default=None, help="weight bits (default: --bits)")
    parser.add_argument("--act-bits", default=None, help="activation bits (default: --bits)")
    parser.add_argument("--layer-bits", default=None, type=parse_layer_bits,
                        help="per-layer widths, e.g. first=8,last=8 or conv2d=8/4 "
                             "(weights/activations; mixed precision)")


def parse_layer_bits(text):
    """``--layer-bits``: ``"conv2d=8,dense_2=8"`` (weights and activations) or
    ``"conv2d=8/4"`` (weights / activations) as :class:`QuantConfig`'s ``layer_bits``."""
    overrides = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        name, equals, widths = item.partition("=")
        weight, _, act = widths.partition("/")
        if not equals or not name.strip() or not weight.strip():
            raise UserError(f"--layer-bits {item!r}: expected LAYER=BITS or LAYER=WBITS/ABITS")
        overrides.append((name.strip(), check_bits(weight.strip(), f"--layer-bits {item!r}"),
                          check_bits((act or weight).strip(), f"--layer-bits {item!r}")))
    names = [name for name, _, _ in overrides]
    if len(set(names)) != len(names):
        raise UserError(f"--layer-bits names a layer twice: {text!r}")
    return tuple(overrides)


def bits_from_args(args):
    """``(weight_bits, act_bits)`` of the options of :func:`add_bits_arguments`, checked."""
    weight_bits = getattr(args, "weight_bits", None)
    return (check_bits(weight_bits or args.bits, "--weight-bits" if weight_bits else "--bits"),
            check_bits(args.act_bits or args.bits, "--act-bits" if args.act_bits else "--bits"))


def check_method(name):
    """Return the canonical name of quantization method ``name``, or raise a :class:`UserError`.

    Parameters
    ----------
    name : str
        A name of :data:`METHOD_TABLE` or :data:`METHOD_ALIASES` (``qat`` is ``dual-copy``).
        Usable as an ``argparse`` ``type=``: an unknown name is a one-line error, not a usage
        message.
    """
    canonical = METHOD_ALIASES.get(name, name)
    if canonical not in METHOD_TABLE:
        raise UserError(f"unknown quantization method {name!r}; known: "
                        f"{', '.join(METHOD_TABLE)} (qat is dual-copy)")
    return canonical


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize.

    Parameters
    ----------
    weight_bits : int
        Signed weight width, 1..16 (1 is binarized).
    act_bits : int, optional
        Activation width, 1..16; defaults to ``weight_bits``.
    rounding : {"nearest", "floor", "stochastic"}
    granularity : {"channel", "tensor"}
        One weight scale per output channel or per tensor (the output layer is always per
        tensor).
    seed : int
        Seeds stochastic rounding.
    preset : {"x256"}, optional
        The seed notebook's fixed-point scheme; overrides the fields it names.
    scales : {"error", "range"}
        How fractions are chosen (:data:`SCALE_RULES`); ``range`` is dynamic fixed point.
    layer_bits : tuple of (str, int, int)
        Per-layer overrides ``(weight layer name, weight bits, activation bits)`` (mixed
        precision, :func:`parse_layer_bits`; ``first`` and ``last`` name the first and the last
        weight layer); a layer's activation bits are its output's (none for the logits).
    """

    weight_bits: int = 8
    act_bits: int | None = None
    rounding: str = "nearest"
    granularity: str = "channel"
    seed: int = 0
    preset: str | None = None
    scales: str = "error"
    layer_bits: tuple = ()

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise UserError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            for key, value in PRESETS[self.preset].items():
                if key in ("weight_bits", "act_bits", "rounding"):
                    object.__setattr__(self, key, value)
        object.__setattr__(self, "weight_bits", check_bits(self.weight_bits, "weight bits"))
        act = self.weight_bits if self.act_bits is None else self.act_bits
        object.__setattr__(self, "act_bits", check_bits(act, "activation bits"))
        if self.rounding not in ROUNDINGS:
            raise UserError(f"unknown rounding {self.rounding!r}; known: {', '.join(ROUNDINGS)}")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"unknown granularity {self.granularity!r}; known: "
                            f"{', '.join(GRANULARITIES)}")
        if self.scales not in SCALE_RULES:
            raise UserError(f"unknown scale rule {self.scales!r}; known: "
                            f"{', '.join(SCALE_RULES)}")
        if self.scales == "range" and self.preset is not None:
            raise UserError(f"preset {self.preset!r} fixes the weight fractions; it cannot be "
                            f"combined with range-based (dynamic fixed point) scales")
        object.__setattr__(self, "layer_bits", tuple(
            (str(name), check_bits(weight, f"{name}'s weight bits"),
             check_bits(act, f"{name}'s activation bits"))
            for name, weight, act in self.layer_bits))

    @property
    def fixed_weight_frac(self):
        return PRESETS[self.preset].get("weight_frac") if self.preset else None


def _round(x, rounding, rng):
    if rounding == "nearest":
        return np.rint(x)
    if rounding == "floor":
        return np.floor(x)
    return np.floor(x + rng.random(x.shape))


def _quantize_at(w, frac, bits, rounding, rng):
    if bits == 1:
        if rounding == "stochastic":
            # The two levels -1 and +1 are 2 apart: +1 with probability (x + 1) / 2.
            up = np.clip((w * 2.0 ** frac + 1.0) / 2.0, 0.0, 1.0)
            return np.where(rng.random(np.shape(w)) < up, 1, -1).astype(np.int64)
        return np.where(w >= 0, 1, -1).astype(np.int64)
    lo, hi = weight_range(bits)
    return np.clip(_round(w * 2.0 ** frac, rounding, rng), lo, hi).astype(np.int64)


def _best_weight_frac(w, bits):
    """The power-of-two fraction with the least squared error (nearest rounding)."""
    magnitude = float(np.mean(np.abs(w))) if bits == 1 else float(np.max(np.abs(w)))
    if magnitude == 0.0:
        return 0
    if bits == 1:
        center = round(-math.log2(magnitude))
        candidates = range(center - 1, center + 2)
    else:
        start = math.floor(math.log2(weight_range(bits)[1] / magnitude))
        candidates = range(start, start + 4)

    def error(frac):
        q = _quantize_at(w, frac, bits, "nearest", None)
        return float(np.sum((q * 2.0 ** -frac - w) ** 2))
    return min(candidates, key=error)


def _range_frac(magnitude, top):
    """The largest fraction ``f`` with ``magnitude * 2**f <= top`` (0 for a zero magnitude)."""
    if magnitude == 0.0:
        return 0
    frac = math.floor(math.log2(top / magnitude))
    while magnitude * 2.0 ** (frac + 1) <= top:  # log2 may be off by one ulp either way
        frac += 1
    while magnitude * 2.0 ** frac > top:
        frac -= 1
    return frac


def _range_weight_frac(w, bits):
    """Dynamic fixed point: the largest fraction at which no weight clips (1 bit: as error)."""
    if bits == 1:
        return _best_weight_frac(w, bits)  # every weight is +-1: there is no range to fit
    return _range_frac(float(np.max(np.abs(w))), weight_range(bits)[1])


def quantize_weights(matrix, bits, *, rounding="nearest", per_channel=True, rng=None,
                     fixed_frac=None, scales="error"):
    """Quantize a ``(inputs, outputs)`` weight matrix to ``bits``-bit integers.

    Parameters
    ----------
    matrix : ndarray, shape (inputs, outputs)
    bits : int
    rounding : {"nearest", "floor", "stochastic"}
    per_channel : bool
        One fraction per output channel, or one for the matrix.
    rng : numpy.random.Generator, optional
        Draws of stochastic rounding (default: seeded with 0).
    fixed_frac : int or array of int, optional
        Use these fractions instead of choosing them.
    scales : {"error", "range"}
        Choose each fraction by least squared error, or as the largest at which nothing clips.

    Returns
    -------
    q : ndarray of int64, same shape
    frac : ndarray of int64, shape (outputs,)
        Fractional bits of each output channel (all equal when not ``per_channel``).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    columns = matrix.shape[1]
    if fixed_frac is not None:
        fracs = np.full(columns, fixed_frac)
    else:
        choose = _range_weight_frac if scales == "range" else _best_weight_frac
        fracs = np.array([choose(matrix[:, c], bits) for c in range(columns)]) if per_channel \
            else np.full(columns, choose(matrix, bits))
    q = np.stack([_quantize_at(matrix[:, c], fracs[c], bits, rounding, rng)
                  for c in range(columns)], axis=1)
    return q, fracs.astype(np.int64)


def choose_activation_frac(samples, bits, signed, scales="error"):
    """Calibrate an activation's fraction bits on float ``samples``.

    ``scales="error"``: the least squared error between the samples and their clipped integer
    image; ``"range"``: the largest fraction at which no sample exceeds the largest integer.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    lo, hi = value_range(bits, signed)
    magnitude = float(np.max(np.abs(samples))) if samples.size else 0.0
    if scales == "range":
        return _range_frac(magnitude, max(hi, 1))
    if magnitude == 0.0:
        return 0
    start = math.floor(math.log2(max(hi, 1) / magnitude))

    def error(frac):
        q = np.clip(np.rint(samples * 2.0 ** frac), lo, hi)
        return float(np.mean((q * 2.0 ** -frac - samples) ** 2))
    return min(range(start - 1, start + 5), key=error)


def _check_fractions(fnet, fractions):
    """Check that fixed fractions name every weight layer of ``fnet`` and fit its shape."""
    if fractions is None:
        return
    last = fnet.weight_layers[-1]
    for flayer in fnet.weight_layers:
        entry = fractions.get(flayer.name)
        if entry is None:
            raise UserError(f"the fixed fractions do not name layer {flayer.name!r} of model "
                            f"{fnet.name!r}: they belong to another model")
        channels = flayer.weight.shape[-1]
        hidden = flayer is not last
        if len(entry["weight_frac"]) != channels or (entry["out_frac"] is None) == hidden or (
                not hidden and len(set(entry["weight_frac"])) != 1):
            raise UserError(f"the fixed fractions of layer {flayer.name!r} do not fit it "
                            f"({channels} channels, {'hidden' if hidden else 'output'} layer)")
    unknown = sorted(set(fractions) - {layer.name for layer in fnet.weight_layers})
    if unknown:
        raise UserError(f"the fixed fractions name layer {unknown[0]!r}, which model "
                        f"{fnet.name!r} does not have")


def layer_widths(fnet, config):
    """``{weight layer name: (weight bits, activation bits)}``: ``config.layer_bits`` (where
    ``first`` and ``last`` name the first and the last weight layer) over the network's."""
    names = [layer.name for layer in fnet.weight_layers]
    aliases = {"first": names[0], "last": names[-1]}
    widths = dict.fromkeys(names, (config.weight_bits, config.act_bits))
    for name, weight, act in config.layer_bits:
        name = aliases.get(name, name) if name not in widths else name
        if name not in widths:
            raise UserError(f"--layer-bits: {fnet.name} has no weight layer {name!r}; its "
                            f"weight layers are {', '.join(names)} (or first, last)")
        widths[name] = (weight, act)
    return widths


def quantize(fnet, calibration_pixels, config=QuantConfig(), fractions=None):
    """Quantize a :class:`~sw.keras_import.FloatNet` into a validated :class:`QModel`.

    Parameters
    ----------
    fnet : FloatNet
    calibration_pixels : ndarray of uint8, shape (N, ...)
        Training images for calibrating activation ranges (never test images).
    config : QuantConfig
    fractions : dict, optional
        Fixed ``{layer name: {"weight_frac": [per channel], "out_frac": int or None}}`` (a
        quantization-aware trained model's, see :mod:`sw.qat`) instead of choosing them.
    """
    check_images(calibration_pixels, fnet.input_shape, fnet.name)
    _check_fractions(fnet, fractions)
    fixed = fractions or {}
    rng = np.random.default_rng(config.seed)
    outputs = fnet.forward(calibration_pixels)
    shapes = fnet.shapes()
    last = fnet.layers.index(fnet.weight_layers[-1])
    qmodel = QModel(fnet.name, tuple(fnet.input_shape), [], config.weight_bits,
                    config.act_bits, config={**asdict(config), "notes": fnet.notes,
                                             "method": "QAT" if fractions else "post-training"})
    widths = layer_widths(fnet, config)
    bits, signed, frac = qmodel.input_bits, False, qmodel.input_frac
    in_shape = tuple(fnet.input_shape)
    layers = zip(fnet.layers, outputs, shapes, strict=True)
    for index, (flayer, output, out_shape) in enumerate(layers):
        common = {"name": flayer.name, "in_shape": in_shape, "out_shape": out_shape}
        if flayer.weighted:
            # The first layer's float weights act on raw pixels; the integer input means
            # pixel * 2**-frac, so those weights are scaled by 2**frac (docs/numerics.md).
            scale = 2.0 ** frac if flayer is fnet.weight_layers[0] else 1.0
            matrix = flayer.weight.reshape(-1, flayer.weight.shape[-1]) * scale
            weight_bits, act_bits = widths[flayer.name]
            q, wfrac = quantize_weights(
                matrix, weight_bits, rounding=config.rounding, rng=rng,
                per_channel=config.granularity == "channel" and index != last,
                scales=config.scales, fixed_frac=fixed[flayer.name]["weight_frac"] if fixed else
                config.fixed_weight_frac)
            bias = np.rint(flayer.bias * 2.0 ** (wfrac + frac)).astype(np.int64)
            fields = {**common, "weight": q.reshape(flayer.weight.shape), "bias": bias,
                      "weight_bits": weight_bits, "weight_frac": wfrac,
                      "in_bits": bits, "in_signed": signed, "in_frac": frac,
                      "relu": flayer.relu}
            if index != last:
                out_signed = not flayer.relu
                out_frac = fixed[flayer.name]["out_frac"] if fixed else \
                    choose_activation_frac(output[:4096], act_bits, out_signed, config.scales)
                fields.update(shift=wfrac + frac - out_frac, out_bits=act_bits,
                              out_signed=out_signed, out_frac=out_frac)
            layer = flayer.quantized(**fields)
            if index != last:
                bits, signed, frac = layer.out_bits, layer.out_signed, layer.out_frac
        else:  # pooling or flatten: the input's width
            layer = flayer.quantized(**common, bits=bits, signed=signed)
        qmodel.layers.append(layer)
        in_shape = out_shape
    return qmodel.validate()


#: ``qmodel.config["method"]`` of a model trained with each of :data:`TRAINED_METHODS`.
TRAINED_LABELS = {"dual-copy": "QAT", "randomized": "randomized training",
                  "iterative": "iterative"}
#: How each training method is asked for on ``sw.train``'s command line.
TRAIN_FLAGS = {"dual-copy": "--qat", "randomized": "--method randomized",
                "iterative": "--method iterative"}


def widths_label(weight_bits, act_bits, layer_bits=()):
    """How messages name a network's widths: ``W1A1`` and each per-layer override
    (``W1A1, first W8A8``)."""
    return f"W{weight_bits}A{act_bits}" + "".join(
        f", {layer} W{weight}A{act}" for layer, weight, act in layer_bits)


def train_command(spec, config, method):
    """The ``sw.train`` command that trains ``spec`` with ``method`` (one of
    :data:`TRAINED_METHODS`) at ``config``'s widths."""
    return (f"python -m sw.train --model {spec} {TRAIN_FLAGS[method]} --bits "
            f"{config.weight_bits} --act-bits {config.act_bits}" + (
                " --layer-bits " + ",".join(f"{layer}={weight}/{act}" for layer, weight, act
                                            in config.layer_bits)
                if config.layer_bits else ""))


def _find_trained(spec, config, method=None):
    """The trained ``(.keras path, sidecar)`` for ``spec`` at ``config``, or ``(None, reason)``.

    ``method`` is the training method asked for; ``None`` (``auto``) takes a seed's dual-copy
    model, or whatever trained a file that has fractions beside it.
    """
    bits = widths_label(config.weight_bits, config.act_bits, config.layer_bits)
    wanted = method or "dual-copy"
    name, directory = (spec, None) if spec in SEED_MODELS else (Path(spec).stem,
                                                                 Path(spec).parent)
    # A trained file itself, or the model sw.train fine-tuned from a seed or a float file:
    # models/ for a seed, beside the float file for a file.
    path = trained_model_path(name, config.weight_bits, config.act_bits, wanted, directory,
                              config.layer_bits)
    if spec not in SEED_MODELS and sidecar_path(spec).is_file():
        path = Path(spec)
    elif not sidecar_path(path).is_file() or not path.is_file():
        return None, (f"no {TRAINED_LABELS[wanted]} model of {spec} at {bits} ({path.name} and "
                      f"its {sidecar_path(path).name}); train one with "
                      f"{train_command(spec, config, wanted)}")
    sidecar = load_fractions(sidecar_path(path))
    if method is not None and sidecar["method"] != method:
        return None, f"{path} was trained with --method {sidecar['method']}, not {method}"
    if (sidecar["weight_bits"], sidecar["act_bits"], sorted(sidecar["layer_bits"])) != (
            config.weight_bits, config.act_bits, sorted(config.layer_bits)):
        trained = widths_label(sidecar["weight_bits"], sidecar["act_bits"],
                               sidecar["layer_bits"])
        return None, f"{path} was trained at {trained}, not {bits}"
    if config.preset or config.rounding != "nearest" or config.granularity != "channel" or \
            config.scales != "error":
        return None, ("trained models are quantized with nearest rounding, per-channel scales "
                      "and no preset")
    return path, sidecar


def _quantize_trained(spec, path, sidecar, config, calibration_pixels):
    """The integer model a trained ``.keras`` file and its fractions hold."""
    name = spec if spec in SEED_MODELS else Path(spec).stem
    fnet = extract(load_keras_model(path), name=name)
    qmodel = quantize(fnet, calibration_pixels, config, fractions=sidecar["layers"])
    qmodel.config.update(method=TRAINED_LABELS[sidecar["method"]], qat_model=path.name)
    return qmodel


def _post_training(spec, config, calibration_pixels, label):
    qmodel = quantize(load_float_net(spec), calibration_pixels, config)
    qmodel.config["method"] = label
    return qmodel


def quantize_model(spec, config, calibration_pixels, method="auto"):
    """Quantize a model by name or file with quantization method ``method``.

    This is the one entry point of every command's ``--method`` (``docs/quantization.md``).

    Parameters
    ----------
    spec : str
        A seed model name or a ``.keras``/``.h5`` file. A trained model of seed ``name`` at
        ``W``/``A`` bits is ``models/{name}-w{W}a{A}.keras`` (dual-copy) or
        ``models/{name}-w{W}a{A}-{method}.keras`` (randomized, iterative), with its
        ``.quant.json`` fractions; a file with a ``.quant.json`` beside it is a trained model,
        and a float file ``F.keras`` has its trained models beside it as ``F-w{W}a{A}.keras``
        (what ``sw.train --model F.keras`` writes).
    config : QuantConfig
        Bits, granularity, seed and (for ``ptq``) rounding; each method sets its own rounding
        and scale rule, and a ``config`` that contradicts it is a :class:`UserError`.
    calibration_pixels : ndarray of uint8
        Training images (post-training quantization calibrates activations on them).
    method : str
        A name of :data:`METHOD_TABLE` or :data:`METHOD_ALIASES`:

        - ``auto``: the seed's dual-copy model (or the file's trained fractions) at these
          bits where there is one, else ``ptq``;
        - ``ptq``: post-training quantization of the float model, fractions of least squared
          error, ``config.rounding``;
        - ``dynamic-fp``: post-training, fractions by range (``config.scales = "range"``);
        - ``randomized``: the model trained with stochastic rounding where there is one,
          else post-training with stochastic rounding seeded by ``config.seed``;
        - ``dual-copy`` (``qat``), ``iterative``: the model trained so; none is a
          :class:`UserError` saying how to train one.

        With ``config.layer_bits`` (mixed precision) a trained model is one trained at those
        widths (``sw.train --layer-bits``), named by them (:func:`trained_model_path`).

    Returns
    -------
    qmodel : QModel
        ``qmodel.config["method"]`` says how it was made: ``"post-training"``,
        ``"dynamic-fp"``, ``"randomized"``, ``"QAT"`` (dual-copy), ``"randomized training"``
        or ``"iterative"``.
    method : str
        The same label.
    """
    method = check_method(method)
    if method == "randomized" and config.rounding not in ("nearest", "stochastic"):
        raise UserError(f"--method randomized rounds stochastically, not {config.rounding!r}")
    if method == "dynamic-fp":
        config = replace(config, scales="range")  # its preset conflict is QuantConfig's error
    if method in ("ptq", "dynamic-fp"):
        qmodel = _post_training(spec, config, calibration_pixels,
                                "dynamic-fp" if method == "dynamic-fp" else "post-training")
        return qmodel, qmodel.config["method"]
    trained_config = replace(config, rounding="nearest") if method == "randomized" else config
    path, found = _find_trained(spec, trained_config, None if method == "auto" else method)
    if path is not None:
        qmodel = _quantize_trained(spec, path, found, trained_config, calibration_pixels)
    elif method in ("dual-copy", "iterative"):
        raise UserError(found)
    elif method == "randomized":
        qmodel = _post_training(spec, replace(config, rounding="stochastic"),
                                calibration_pixels, "randomized")
    else:
        qmodel = _post_training(spec, config, calibration_pixels, "post-training")
    return qmodel, qmodel.config["method"]


def rom_words(matrix, bits, pe=1, simd=1):
    """Tile a weight matrix into per-PE ROM words (FINN's layout).

    Parameters
    ----------
    matrix : ndarray of int, shape (inputs, outputs)
    bits : int
        Weight width; 1-bit weights are stored as ``(q + 1) // 2``.
    pe, simd : int
        Output and input parallelism; they must divide ``outputs`` and ``inputs``.

    Returns
    -------
    list of list of int
        ``words[p][nf * SF + sf]`` holds the ``simd`` weights
        ``matrix[sf*simd + s, nf*pe + p]``, lane ``s`` in bits ``[s*bits, (s+1)*bits)``,
        two's complement.
    """
    inputs, outputs = matrix.shape
    if outputs % pe or inputs % simd:
        raise UserError(f"PE {pe} must divide {outputs} outputs and SIMD {simd} must divide "
                        f"{inputs} inputs")
    codes = (matrix + 1) // 2 if bits == 1 else matrix & ((1 << bits) - 1)
    codes = codes.astype(np.int64)
    nf, sf = outputs // pe, inputs // simd
    # (sf, simd, nf, pe) -> (pe, nf, sf, simd)
    tiles = codes.reshape(sf, simd, nf, pe).transpose(3, 2, 0, 1)
    # Python integers: words of more than 64 bits (e.g. 16 lanes of 8 bits) must not wrap.
    weights = np.array([1 << (lane * bits) for lane in range(simd)], dtype=object)
    words = (tiles.astype(object) * weights).sum(axis=-1)
    return [[int(v) for v in row] for row in words.reshape(pe, nf * sf)]


def write_exports(qmodel, out, pe_simd=None):
    """Write the model export, the seed's ``flat_weights.txt``, and ``$readmemh`` ROM files.

    Parameters
    ----------
    qmodel : QModel
    out : Path
    pe_simd : dict, optional
        ``{layer name: (pe, simd)}`` for the ROM tiling; ``(1, 1)`` where absent.

    Returns
    -------
    list of Path
        Every file written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "model.npz", out / "manifest.json"]
    save_qmodel(qmodel, written[0])
    lines = []
    for layer in qmodel.weight_layers:
        lines.extend(str(int(v)) for v in layer.weight.reshape(-1))
        lines.extend(str(int(v)) for v in layer.bias)
    (out / "flat_weights.txt").write_text("\n".join(lines) + "\n")
    written.append(out / "flat_weights.txt")
    for layer in qmodel.weight_layers:
        pe, simd = tuple((pe_simd or {}).get(layer.name, (1, 1)))[:2]
        digits = (simd * layer.weight_bits + 3) // 4
        for p, words in enumerate(rom_words(layer.matrix, layer.weight_bits, pe, simd)):
            path = out / f"{layer.name}.pe{p}.hex"
            path.write_text("".join(f"{w:0{digits}x}\n" for w in words))
            written.append(path)
    return written


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sw.quantize", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", default="lenet5",
                        help="seed model name or a .keras/.h5 file (default: lenet5)")
    add_bits_arguments(parser)
    parser.add_argument("--rounding", choices=ROUNDINGS, default="nearest")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds stochastic rounding (--method randomized; default 0)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES,
                        help="training images used to calibrate activations "
                             f"(default {CALIBRATION_IMAGES})")
    parser.add_argument("--method", type=check_method, default="auto", help=METHOD_HELP)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds files sw.quantize did not write")
    args = parser.parse_args(argv)
    check_calibration(args.calibration)
    out = prepare_dir(args.out, "sw.quantize", force=args.force,
                      legacy=("manifest.json", "model.npz"))
    weight_bits, act_bits = bits_from_args(args)
    config = QuantConfig(weight_bits=weight_bits, act_bits=act_bits,
                         layer_bits=args.layer_bits or (),
                         rounding=args.rounding, granularity=args.granularity, seed=args.seed,
                         preset=args.preset)
    model_path(args.model)  # an unknown name fails before the training images load
    images, _ = load_train(args.data)
    check_calibration(args.calibration, len(images))
    qmodel, method = quantize_model(args.model, config, images[:args.calibration], args.method)
    print(f"{qmodel.name} W{qmodel.weight_bits}A{qmodel.act_bits}: {method}", file=sys.stderr)
    with replace_dir(out, "sw.quantize") as scratch:
        written = write_exports(qmodel, scratch)
    for path in written:
        print(out / path.relative_to(scratch))


if __name__ == "__main__":
    main()
