"""Quantize a float model to the integer model of ``docs/numerics.md``, and export it.

Command line::

    python -m sw.quantize --model lenet5 --bits 4 --out build/lenet5-4b [--method auto|qat|ptq]
"""

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError, cli_main
from .keras_import import FloatConv2D, FloatDense, FloatFlatten, FloatPool2D
from .outputs import prepare_dir, replace_dir
from .qmodel import (
    Conv2D,
    Dense,
    Flatten,
    Pool2D,
    QModel,
    save_qmodel,
    value_range,
    weight_range,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "GRANULARITIES",
    "METHODS",
    "METHOD_HELP",
    "PRESETS",
    "ROUNDINGS",
    "QuantConfig",
    "check_bits",
    "check_calibration",
    "choose_activation_frac",
    "main",
    "quantize",
    "quantize_model",
    "quantize_weights",
    "rom_words",
    "write_exports",
]

ROUNDINGS = ("nearest", "floor", "stochastic")
#: How :func:`quantize_model` may quantize: QAT where trained (auto), or insist on one.
METHODS = ("auto", "qat", "ptq")
#: The ``--method`` help of every command that quantizes.
METHOD_HELP = ("auto: the shipped quantization-aware trained model where there is one for "
               "these bits, else post-training quantization; qat: insist on QAT; ptq: always "
               "post-training (default auto)")
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
    """Return ``bits`` as an int in 1..8, or raise a one-line :class:`UserError`."""
    try:
        value = int(bits)
    except (TypeError, ValueError):
        raise UserError(f"{what} {bits!r} is not an integer in 1..8") from None
    if str(value) != str(bits).strip() or not 1 <= value <= 8:
        raise UserError(f"{what} {bits!r} is out of range: must be an integer in 1..8")
    return value


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize.

    Parameters
    ----------
    weight_bits : int
        Signed weight width, 1..8 (1 is binarized).
    act_bits : int, optional
        Activation width, 1..8; defaults to ``weight_bits``.
    rounding : {"nearest", "floor", "stochastic"}
    granularity : {"channel", "tensor"}
        One weight scale per output channel or per tensor (the output layer is always per
        tensor).
    seed : int
        Seeds stochastic rounding.
    preset : {"x256"}, optional
        The seed notebook's fixed-point scheme; overrides the fields it names.
    """

    weight_bits: int = 8
    act_bits: int | None = None
    rounding: str = "nearest"
    granularity: str = "channel"
    seed: int = 0
    preset: str | None = None

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


def quantize_weights(matrix, bits, *, rounding="nearest", per_channel=True, rng=None,
                     fixed_frac=None):
    """Quantize a ``(inputs, outputs)`` weight matrix to ``bits``-bit integers.

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
    elif per_channel:
        fracs = np.array([_best_weight_frac(matrix[:, c], bits) for c in range(columns)])
    else:
        fracs = np.full(columns, _best_weight_frac(matrix, bits))
    q = np.stack([_quantize_at(matrix[:, c], fracs[c], bits, rounding, rng)
                  for c in range(columns)], axis=1)
    return q, fracs.astype(np.int64)


def choose_activation_frac(samples, bits, signed):
    """Calibrate an activation's fraction bits on float ``samples`` (least squared error)."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    lo, hi = value_range(bits, signed)
    magnitude = float(np.max(np.abs(samples))) if samples.size else 0.0
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
    from .data import check_images

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
    bits, signed, frac = qmodel.input_bits, False, qmodel.input_frac
    in_shape = tuple(fnet.input_shape)
    layers = zip(fnet.layers, outputs, shapes, strict=True)
    for index, (flayer, output, out_shape) in enumerate(layers):
        common = {"name": flayer.name, "in_shape": in_shape, "out_shape": out_shape}
        if isinstance(flayer, FloatConv2D | FloatDense):
            # The first layer's float weights act on raw pixels; the integer input means
            # pixel * 2**-frac, so those weights are scaled by 2**frac (docs/numerics.md).
            scale = 2.0 ** frac if flayer is fnet.weight_layers[0] else 1.0
            matrix = flayer.weight.reshape(-1, flayer.weight.shape[-1]) * scale
            q, wfrac = quantize_weights(
                matrix, config.weight_bits, rounding=config.rounding, rng=rng,
                per_channel=config.granularity == "channel" and index != last,
                fixed_frac=fixed[flayer.name]["weight_frac"] if fixed else
                config.fixed_weight_frac)
            bias = np.rint(flayer.bias * 2.0 ** (wfrac + frac)).astype(np.int64)
            fields = {**common, "weight": q.reshape(flayer.weight.shape), "bias": bias,
                      "weight_bits": config.weight_bits, "weight_frac": wfrac,
                      "in_bits": bits, "in_signed": signed, "in_frac": frac,
                      "relu": flayer.relu}
            if index != last:
                out_signed = not flayer.relu
                out_frac = fixed[flayer.name]["out_frac"] if fixed else \
                    choose_activation_frac(output[:4096], config.act_bits, out_signed)
                fields.update(shift=wfrac + frac - out_frac, out_bits=config.act_bits,
                              out_signed=out_signed, out_frac=out_frac)
            if isinstance(flayer, FloatConv2D):
                layer = Conv2D(**fields, stride=flayer.stride, padding=flayer.padding)
            else:
                layer = Dense(**fields)
            if index != last:
                bits, signed, frac = layer.out_bits, layer.out_signed, layer.out_frac
        elif isinstance(flayer, FloatPool2D):
            layer = Pool2D(**common, op=flayer.op, size=flayer.size, bits=bits, signed=signed)
        elif isinstance(flayer, FloatFlatten):
            layer = Flatten(**common)
        qmodel.layers.append(layer)
        in_shape = out_shape
    return qmodel.validate()


def _find_qat(spec, config):
    """The QAT ``(.keras path, sidecar)`` for ``spec`` at ``config``, or ``(None, reason)``."""
    from .models import SEED_MODELS
    from .qat import load_fractions, qat_model_path, sidecar_path

    bits = f"W{config.weight_bits}A{config.act_bits}"
    if spec in SEED_MODELS:
        path = qat_model_path(spec, config.weight_bits, config.act_bits)
        if not path.is_file() or not sidecar_path(path).is_file():
            return None, (f"no QAT model of {spec} at {bits} ({path.name} and its "
                          f"{sidecar_path(path).name}); train one with python -m sw.train "
                          f"--model {spec} --qat --bits {config.weight_bits} --act-bits "
                          f"{config.act_bits}")
    else:
        path = Path(spec)
        if not sidecar_path(path).is_file():
            return None, f"{spec} has no QAT fractions file {sidecar_path(path).name} beside it"
    sidecar = load_fractions(sidecar_path(path))
    if (sidecar["weight_bits"], sidecar["act_bits"]) != (config.weight_bits, config.act_bits):
        return None, (f"{path} was trained at W{sidecar['weight_bits']}A{sidecar['act_bits']}, "
                      f"not {bits}")
    if config.preset or config.rounding != "nearest" or config.granularity != "channel":
        return None, ("QAT models are quantized with nearest rounding, per-channel scales and "
                      "no preset")
    return path, sidecar


def quantize_model(spec, config, calibration_pixels, method="auto"):
    """Quantize a model by name or file the way every command does: QAT where trained.

    Parameters
    ----------
    spec : str
        A seed model name or a ``.keras``/``.h5`` file. A seed name at ``W``/``A`` bits means
        the shipped quantization-aware trained ``models/{name}-w{W}a{A}.keras`` (with its
        ``.quant.json`` fractions) where it exists, else post-training quantization of
        ``models/{name}.keras``. A file with a ``.quant.json`` beside it trained at these bits
        is used with its fractions.
    config : QuantConfig
    calibration_pixels : ndarray of uint8
        Training images (post-training quantization calibrates activations on them).
    method : {"auto", "qat", "ptq"}
        ``qat`` insists on a QAT model (a :class:`UserError` where there is none), ``ptq``
        quantizes the float model after training even where a QAT model exists.

    Returns
    -------
    qmodel : QModel
        ``qmodel.config["method"]`` is ``"QAT"`` or ``"post-training"``.
    method : str
        The same: ``"QAT"`` or ``"post-training"``.
    """
    from .keras_import import extract, load_keras_model
    from .models import SEED_MODELS, load_float_net

    if method not in METHODS:
        raise UserError(f"unknown quantization method {method!r}; known: {', '.join(METHODS)}")
    path, found = (None, None) if method == "ptq" else _find_qat(spec, config)
    if path is None:
        if method == "qat":
            raise UserError(found)
        qmodel = quantize(load_float_net(spec), calibration_pixels, config)
        return qmodel, qmodel.config["method"]
    name = spec if spec in SEED_MODELS else Path(spec).stem
    fnet = extract(load_keras_model(path), name=name)
    qmodel = quantize(fnet, calibration_pixels, config, fractions=found["layers"])
    qmodel.config["qat_model"] = path.name
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
    from .data import load_train, parse_data_arg
    from .models import model_path

    parser = argparse.ArgumentParser(prog="python -m sw.quantize", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", default="lenet5",
                        help="seed model name or a .keras/.h5 file (default: lenet5)")
    parser.add_argument("--bits", default="4", help="weight bits, 1..8 (default 4)")
    parser.add_argument("--act-bits", default=None, help="activation bits (default: --bits)")
    parser.add_argument("--rounding", choices=ROUNDINGS, default="nearest")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="channel")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES,
                        help="training images used to calibrate activations "
                             f"(default {CALIBRATION_IMAGES})")
    parser.add_argument("--method", choices=METHODS, default="auto", help=METHOD_HELP)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds files sw.quantize did not write")
    args = parser.parse_args(argv)
    check_calibration(args.calibration)
    out = prepare_dir(args.out, "sw.quantize", force=args.force,
                      legacy=("manifest.json", "model.npz"))
    config = QuantConfig(weight_bits=check_bits(args.bits, "--bits"),
                         act_bits=None if args.act_bits is None else
                         check_bits(args.act_bits, "--act-bits"),
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
