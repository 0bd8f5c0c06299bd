"""The quantized integer model: layers, validation, and the versioned ``.npz`` + JSON export.

A :class:`QModel` is what every later stage consumes: the golden model runs it, the hardware
generator builds its ROMs from it, and the export writes and reads it. See
``docs/numerics.md`` for what every field means.
"""

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = [
    "FORMAT",
    "LAYER_KINDS",
    "MAX_BITS",
    "POOL_KINDS",
    "VERSION",
    "Conv2D",
    "Dense",
    "Flatten",
    "Pool2D",
    "QModel",
    "accumulator_range",
    "conv_output_size",
    "load_qmodel",
    "save_qmodel",
    "signed_bits",
    "value_range",
    "weight_range",
]

FORMAT = "nnfpga-qmodel"
VERSION = 1
#: The widest weights and activations, in bits. Beyond 8 the hardware multiplies on hard
#: multipliers only (``hw.multiplier``), whose operands are 16 (iCE40) or 18 bits (ECP5).
MAX_BITS = 16


def value_range(bits, signed):
    """Return the ``(lo, hi)`` integer range of a ``bits``-wide value."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def signed_bits(lo, hi):
    """Return the smallest two's complement width that holds every integer in ``[lo, hi]``."""
    lo, hi = int(lo), int(hi)
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def accumulator_range(matrix, bias, in_bits, in_signed):
    """The ``(lo, hi)`` that every partial sum of ``bias + x @ matrix`` (and the bias added
    first or last) stays within, for ``x`` of ``in_bits`` (signed or not): the accumulator
    range of ``docs/numerics.md``."""
    xlo, xhi = value_range(in_bits, in_signed)
    m = np.asarray(matrix).astype(np.int64)
    lo = np.minimum(m * xlo, m * xhi).sum(axis=0)
    hi = np.maximum(m * xlo, m * xhi).sum(axis=0)
    b = np.asarray(bias).astype(np.int64)
    return int(min(lo.min(), (lo + b).min())), int(max(hi.max(), (hi + b).max()))


def weight_range(bits):
    """Return the ``(lo, hi)`` range of ``bits``-bit weights (symmetric; 1 bit is ``{-1, +1}``)."""
    if bits == 1:
        return -1, 1
    return -((1 << (bits - 1)) - 1), (1 << (bits - 1)) - 1


@dataclass(eq=False)
class _WeightLayer:
    """Fields shared by :class:`Conv2D` and :class:`Dense` (see ``docs/numerics.md``)."""

    #: Whether the layer has weights (and so a fold entry, a MAC array and an accumulator).
    weighted = True
    name: str
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray
    bias: np.ndarray
    weight_bits: int
    weight_frac: np.ndarray
    in_bits: int
    in_signed: bool
    in_frac: int
    relu: bool
    #: ``None`` for the output layer (logits are the accumulators).
    shift: np.ndarray | None = None
    out_bits: int = 0
    out_signed: bool = True
    out_frac: int = 0

    @property
    def is_output(self):
        return self.shift is None

    @property
    def matrix(self):
        """The weights as a ``(inputs, outputs)`` matrix, rows in the order inputs arrive."""
        return self.weight.reshape(-1, self.weight.shape[-1])

    @property
    def fan_in(self):
        return self.matrix.shape[0]

    @property
    def channels(self):
        return self.weight.shape[-1]

    @property
    def macs(self):
        """Multiply-accumulates per image."""
        return int(np.prod(self.out_shape)) * self.fan_in

    @property
    def acc_range(self):
        """The ``(lo, hi)`` that every partial sum and every accumulator stays within."""
        return accumulator_range(self.matrix, self.bias, self.in_bits, self.in_signed)

    @property
    def acc_bits(self):
        """The exact accumulator width of ``docs/numerics.md``: it never overflows."""
        return signed_bits(*self.acc_range)

    def check_input(self, where, bits, signed, last):
        """Raise a :class:`UserError` (``where`` names the layer) unless the layer takes
        ``bits``-bit inputs (``signed`` or not) and holds weights, bias and shifts of its
        widths; ``last`` for the model's output layer. Returns the output's ``(bits,
        signed)``."""
        if (self.in_bits, self.in_signed) != (bits, signed):
            raise UserError(f"{where}: input is {self.in_bits} bits, expected {bits}")
        if not 1 <= self.weight_bits <= MAX_BITS:
            raise UserError(f"{where}: weight bits {self.weight_bits} not in 1..{MAX_BITS}")
        lo, hi = weight_range(self.weight_bits)
        w = self.weight
        if w.dtype.kind not in "iu" or w.min(initial=0) < lo or w.max(initial=0) > hi:
            raise UserError(f"{where}: weights outside the {self.weight_bits}-bit range")
        if self.weight_bits == 1 and np.any(w == 0):
            raise UserError(f"{where}: 1-bit weights must be -1 or +1")
        if self.bias.shape != (self.channels,) or self.bias.dtype.kind not in "iu":
            raise UserError(f"{where}: bias must be {self.channels} integers")
        if last != self.is_output:
            raise UserError(f"{where}: only the last layer may (and must) lack a shift")
        if last:
            return self.acc_bits, True
        if self.shift.shape != (self.channels,):
            raise UserError(f"{where}: shift must have {self.channels} entries")
        return self.out_bits, self.out_signed

    def _meta(self):
        return {
            "name": self.name,
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "weight_bits": self.weight_bits,
            "weight_frac": [int(v) for v in self.weight_frac],
            "in_bits": self.in_bits,
            "in_signed": self.in_signed,
            "in_frac": self.in_frac,
            "relu": self.relu,
            "shift": None if self.shift is None else [int(v) for v in self.shift],
            "out_bits": self.out_bits,
            "out_signed": self.out_signed,
            "out_frac": self.out_frac,
            "acc_bits": self.acc_bits,
        }


@dataclass(eq=False)
class Conv2D(_WeightLayer):
    """A 2-D convolution; ``weight`` is Keras' ``(K, K, Cin, Cout)`` (HWIO)."""

    kind = "conv2d"
    stride: int = 1
    padding: str = "valid"

    @property
    def kernel_size(self):
        return self.weight.shape[0]

    @property
    def positions(self):
        """Output positions per image (``Ho * Wo``), each an output vector of all channels."""
        return math.prod(self.out_shape[:-1])

    def meta(self):
        return {"kind": self.kind, **self._meta(), "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding}

    @classmethod
    def from_meta(cls, meta, arrays, index, common):
        return cls(**_weight_fields(meta, arrays, index, common), stride=meta["stride"],
                   padding=meta["padding"])


@dataclass(eq=False)
class Dense(_WeightLayer):
    """A fully connected layer; ``weight`` is ``(inputs, outputs)``."""

    kind = "dense"
    #: Output positions per image: the one output vector.
    positions = 1

    def meta(self):
        return {"kind": self.kind, **self._meta()}

    @classmethod
    def from_meta(cls, meta, arrays, index, common):
        return cls(**_weight_fields(meta, arrays, index, common))


#: Manifest ``kind`` of each pooling ``(op, global)``.
POOL_KINDS = {("max", False): "maxpool2d", ("avg", False): "avgpool2d",
              ("max", True): "globalmaxpool2d", ("avg", True): "globalavgpool2d"}


@dataclass(eq=False)
class Pool2D:
    """Max or average pooling, ``size x size`` with stride ``size``, or global (``size=None``).

    A trailing row or column that does not fill a window is dropped. Global pooling's window
    is the whole ``H x W`` image; its output is ``(C,)``, or ``(1, 1, C)`` where the Keras layer
    kept the dimensions. The output has the input's bits, signedness and fraction; the
    average rounds half up (``docs/numerics.md``, Pooling).
    """

    weighted = False
    name: str
    in_shape: tuple
    out_shape: tuple
    op: str
    size: int | None
    bits: int
    signed: bool

    @property
    def kind(self):
        return POOL_KINDS[self.op, self.size is None]

    @property
    def window(self):
        """``(rows, cols)`` of one window (and the stride)."""
        return tuple(self.in_shape[:2]) if self.size is None else (self.size, self.size)

    @property
    def count(self):
        """Values per window (the divisor of the average)."""
        return self.window[0] * self.window[1]

    def expected_out_shape(self):
        """The output shape the input shape and window imply (``None`` if they do not fit)."""
        if len(self.in_shape) != 3:
            return None
        (height, width, channels), (rows, cols) = self.in_shape, self.window
        if not 1 <= rows <= height or not 1 <= cols <= width:
            return None
        if self.size is None:
            return (channels,) if len(self.out_shape) == 1 else (1, 1, channels)
        return (height // rows, width // cols, channels)

    def check_input(self, where, bits, signed, last):
        """Raise a :class:`UserError` (``where`` names the layer) unless the layer takes
        ``bits``-bit inputs (``signed`` or not) and its shapes fit its window. Returns the
        output's ``(bits, signed)``: the input's."""
        if (self.bits, self.signed) != (bits, signed):
            raise UserError(f"{where}: input is {self.bits} bits, expected {bits}")
        if tuple(self.out_shape) != self.expected_out_shape():
            raise UserError(f"{where}: {self.kind} cannot turn {tuple(self.in_shape)} "
                            f"into {tuple(self.out_shape)}")
        return bits, signed

    def meta(self):
        return {"kind": self.kind, "name": self.name, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "size": self.size, "bits": self.bits,
                "signed": self.signed}

    @classmethod
    def from_meta(cls, meta, arrays, index, common):
        op, is_global = next(key for key, kind in POOL_KINDS.items() if kind == meta["kind"])
        if is_global != (meta["size"] is None):
            raise UserError(f"layer {index}: {meta['kind']} with size {meta['size']!r}")
        return cls(**common, op=op, size=meta["size"], bits=meta["bits"],
                   signed=meta["signed"])


@dataclass(eq=False)
class Flatten:
    """Reorders nothing: an ``(H, W, C)`` stream is already in Keras' flatten order."""

    kind = "flatten"
    weighted = False
    name: str
    in_shape: tuple
    out_shape: tuple

    def check_input(self, where, bits, signed, last):
        """The output's ``(bits, signed)``: the input's (any input will do)."""
        return bits, signed

    def meta(self):
        return {"kind": self.kind, "name": self.name, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape)}

    @classmethod
    def from_meta(cls, meta, arrays, index, common):
        return cls(**common)


@dataclass(eq=False)
class QModel:
    """A quantized model: 8-bit pixel input, a chain of integer layers, logits out."""

    name: str
    input_shape: tuple
    layers: list
    weight_bits: int
    act_bits: int
    #: How the model was quantized (rounding, granularity, preset...), for reports.
    config: dict = field(default_factory=dict)
    input_bits: int = 8
    input_frac: int = 8

    @property
    def weight_layers(self):
        return [layer for layer in self.layers if layer.weighted]

    @property
    def output_layer(self):
        return self.layers[-1]

    @property
    def classes(self):
        return self.output_layer.channels

    @property
    def macs(self):
        return sum(layer.macs for layer in self.weight_layers)

    def manifest(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "input": {"shape": list(self.input_shape), "bits": self.input_bits,
                      "frac": self.input_frac},
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "config": self.config,
            "macs_per_image": self.macs,
            "layers": [layer.meta() for layer in self.layers],
        }

    def validate(self):
        """Check that shapes chain and every integer fits its declared width.

        Raises
        ------
        UserError
            Naming the first layer that is inconsistent.
        """
        shape = tuple(self.input_shape)
        bits, signed = self.input_bits, False
        if not self.layers or not self.layers[-1].weighted:
            raise UserError(f"model {self.name!r}: the last layer must be Conv2D or Dense")
        for index, layer in enumerate(self.layers):
            where = f"model {self.name!r} layer {index} ({layer.name})"
            if tuple(layer.in_shape) != shape:
                raise UserError(f"{where}: input shape {tuple(layer.in_shape)} does not chain "
                                f"with the previous output {shape}")
            bits, signed = layer.check_input(where, bits, signed,
                                             index == len(self.layers) - 1)
            shape = tuple(layer.out_shape)
        return self


def save_qmodel(qmodel, path):
    """Write ``qmodel`` as one ``.npz`` (arrays plus the JSON manifest as bytes).

    Parameters
    ----------
    qmodel : QModel
    path : str or Path
        The ``.npz`` file; a ``manifest.json`` copy is written beside it for people to read.
    """
    path = Path(path)
    manifest = qmodel.manifest()
    arrays = {"manifest": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)}
    for index, layer in enumerate(qmodel.layers):
        if layer.weighted:
            # One byte a weight up to 8 bits, two beyond.
            arrays[f"layer{index}.weight"] = layer.weight.astype(
                np.int8 if layer.weight_bits <= 8 else np.int16)
            arrays[f"layer{index}.bias"] = layer.bias.astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    (path.parent / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


#: The layer class of each manifest ``kind`` (each reads its own fields: ``from_meta``).
LAYER_KINDS = {"conv2d": Conv2D, "dense": Dense, "flatten": Flatten,
               **dict.fromkeys(POOL_KINDS.values(), Pool2D)}


def _weight_fields(meta, arrays, index, common):
    """The fields :class:`Conv2D` and :class:`Dense` share, from a manifest entry and the
    arrays file."""
    return {
        **common,
        "weight": arrays[f"layer{index}.weight"].astype(np.int64),
        "bias": arrays[f"layer{index}.bias"].astype(np.int64),
        "weight_bits": meta["weight_bits"],
        "weight_frac": np.array(meta["weight_frac"], dtype=np.int64),
        "in_bits": meta["in_bits"], "in_signed": meta["in_signed"], "in_frac": meta["in_frac"],
        "relu": meta["relu"],
        "shift": None if meta["shift"] is None else np.array(meta["shift"], dtype=np.int64),
        "out_bits": meta["out_bits"], "out_signed": meta["out_signed"],
        "out_frac": meta["out_frac"],
    }


def _layer_from_meta(meta, arrays, index):
    kind = LAYER_KINDS.get(meta["kind"])
    if kind is None:
        raise UserError(f"layer {index}: unknown kind {meta['kind']!r}")
    common = {"name": meta["name"], "in_shape": tuple(meta["in_shape"]),
              "out_shape": tuple(meta["out_shape"])}
    return kind.from_meta(meta, arrays, index, common)


def load_qmodel(path):
    """Read and validate a quantized model written by :func:`save_qmodel`.

    Raises
    ------
    UserError
        If the file is missing, not a valid export, of another format version, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"quantized model {str(path)!r} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        manifest = json.loads(arrays["manifest"].tobytes().decode())
        if manifest.get("format") != FORMAT:
            raise UserError(f"{path}: not an {FORMAT} file")
        if manifest.get("version") != VERSION:
            raise UserError(f"{path}: format version {manifest.get('version')} is not the "
                            f"supported {VERSION}")
        layers = [_layer_from_meta(meta, arrays, index)
                  for index, meta in enumerate(manifest["layers"])]
        qmodel = QModel(name=manifest["name"], input_shape=tuple(manifest["input"]["shape"]),
                        layers=layers, weight_bits=manifest["weight_bits"],
                        act_bits=manifest["act_bits"], config=manifest.get("config", {}),
                        input_bits=manifest["input"]["bits"], input_frac=manifest["input"]["frac"])
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"{path}: corrupt quantized model ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    return qmodel.validate()


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis (Keras' rule)."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1
