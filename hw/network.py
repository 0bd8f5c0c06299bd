"""The network generator: a quantized model becomes one layer-pipelined streaming core.

Every layer gets its own hardware, and all layers work at once on successive parts of the
image stream (FINN's dataflow style)::

    pixels -> [width] -> window -> MAC array -> requantize -> [max/avg pool -> row FIFO]
           -> ... -> [width] -> [FIFO] -> MAC array (dense) -> ... -> MAC array (logits)
           -> argmax -> label

The :class:`Fold` (PE output lanes x SIMD input lanes and a multiplier kind per weight layer,
and the image bytes taken per clock) sets each stage's cycles per image; :func:`schedule`
predicts them and the slowest stage sets the image interval.

What each layer kind of :mod:`sw.qmodel` becomes is its class in :data:`HARDWARE` (the one
place a new kind is added): its stages, their schedule, the stream it passes on, and what a
fold of it must satisfy.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.errors import UserError
from sw.qmodel import Conv2D, Dense, Flatten, Pool2D

from .argmax import Argmax
from .fifo import StreamFIFO
from .mac_array import MACArray
from .multiplier import DSP_WIDTHS, KINDS, lane_problem, packing_shift
from .pool import Pool
from .requantize import Requantize
from .streams import lanes_signature
from .weight_ram import BLOCK_DEPTH, BLOCK_WIDTH, LOAD_LAYOUT
from .width import WidthConverter
from .window import WindowGenerator

__all__ = ["HARDWARE", "Accelerator", "ConvHardware", "DenseHardware", "FlattenHardware", "Fold",
           "LayerFold", "LayerHardware", "PoolHardware", "Stage", "WeightHardware", "check_fold",
           "conv_window", "element_shape", "fold_from_json", "hardware", "input_lanes",
           "layer_stages", "loaded_words", "schedule", "simd_unit"]


def element_shape(bits, is_signed):
    """The Amaranth shape of a ``bits``-bit element, signed or not."""
    return signed(bits) if is_signed else unsigned(bits)


def simd_unit(layer):
    """What SIMD must divide: a conv's whole window, ``K * K * Cin``, or a dense layer's input
    vector (:attr:`WeightHardware.simd_unit`)."""
    return hardware(layer).simd_unit


def _whole_pixels(in_shape, lanes):
    """Whole pixels in a word of ``lanes`` elements of an HWC input, or None unless the
    words hold whole pixels that tile a row."""
    channels, width = in_shape[-1], in_shape[1]
    if lanes % channels or width % (lanes // channels):
        return None
    return lanes // channels


def _window_pixels(layer, simd, upstream=1):
    """``pixels`` of a conv's window generator fed ``upstream`` elements a transfer: several
    whole pixels a word where the upstream brings them (the core's input at several pixels
    per clock); else channel groups of ``gcd(simd, Cin)`` where SIMD divides a kernel row
    (its kernel-row path reads them straight out of the line buffer); else one whole pixel,
    so the input is not slower than the window register."""
    channels = layer.in_shape[-1]
    if upstream > channels and _whole_pixels(layer.in_shape, upstream):
        return upstream // channels
    return None if (layer.kernel_size * channels) % simd == 0 else 1


def input_lanes(layer, simd, upstream=1):
    """Lanes of the stream a weight layer takes in from a stream of ``upstream`` lanes: a
    conv's window generator reads several pixels, ``gcd(simd, Cin)`` channels or a whole
    pixel a word (see :func:`conv_window`) and gathers SIMD from several pixels itself
    (:meth:`WeightHardware.input_lanes`)."""
    return hardware(layer).input_lanes(simd, upstream)


def conv_window(layer, simd, shape, upstream=1, pe=None):
    """The :class:`~hw.window.WindowGenerator` of a conv layer folded to ``pe`` x ``simd``
    lanes (its ring sized to keep that MAC array busy), taking elements of ``shape`` from a
    stream of ``upstream`` lanes."""
    height, width, channels = layer.in_shape
    return WindowGenerator(height=height, width=width, channels=channels,
                           kernel=layer.kernel_size, shape=shape, simd=simd,
                           stride=layer.stride, padding=layer.padding,
                           pixels=_window_pixels(layer, simd, upstream),
                           window_cycles=None if pe is None else
                           layer.channels // pe * (layer.fan_in // simd))


class LayerFold(NamedTuple):
    """How one weight layer is folded: ``pe`` output lanes x ``simd`` input lanes, the
    ``multiplier`` kind of its lanes (:mod:`hw.multiplier`: ``"dsp"``, ``"lut"``,
    ``"packed"``, or ``"constant"`` where every weight has a lane) and how many of its SIMD
    lanes use it (the others are ``"lut"``)."""

    pe: int
    simd: int
    multiplier: str = "dsp"
    #: SIMD lanes that use ``multiplier``'s hard multipliers, the rest LUT-built; all if None.
    hard_lanes: int | None = None


class Fold(dict):
    """A folding: ``{weight layer name: LayerFold}``, ``pixels``, the input elements (bytes of
    the image) the core takes per transfer of its input stream, and ``loaded``, the weight
    layers whose weights are loaded after configuration (:class:`~hw.weight_ram.WeightRAM`)
    rather than held in the bitstream's ROMs.

    Parameters
    ----------
    layers : dict or iterable of pairs
        A :class:`Fold` passes on its ``loaded`` layers unless ``loaded`` is given.
    pixels : int
    loaded : iterable of str, optional
    """

    def __init__(self, layers=(), pixels=1, loaded=None):
        super().__init__(layers)
        self.pixels = pixels
        self.loaded = frozenset(getattr(layers, "loaded", ()) if loaded is None else loaded)

    def to_json(self):
        """``{"pixels": P, "layers": {name: [pe, simd, multiplier, hard_lanes]}}``, and
        ``"loaded": [name, ...]`` when weights are loaded."""
        raw = {"pixels": self.pixels,
               "layers": {name: list(entry) for name, entry in self.items()}}
        if self.loaded:
            raw["loaded"] = sorted(self.loaded)
        return raw


def fold_from_json(raw):
    """A fold from :meth:`Fold.to_json`'s form, or from a plain ``{name: [pe, simd, ...]}``
    (one pixel per transfer)."""
    if isinstance(raw, dict) and {"pixels", "layers"} <= set(raw) <= {"pixels", "layers",
                                                                     "loaded"}:
        return Fold({str(name): tuple(value) for name, value in raw["layers"].items()},
                    int(raw["pixels"]), [str(name) for name in raw.get("loaded", ())])
    return Fold({str(name): tuple(value) for name, value in raw.items()})


def _check_pixels(qmodel, pixels):
    """``pixels`` (input elements per transfer), checked against the first layer's needs."""
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise UserError(f"fold: pixels must be a positive integer, not {pixels!r}")
    # The first layer that computes decides (a Flatten changes nothing in the stream).
    for first in qmodel.layers:
        verdict = hardware(first).first_layer_pixels(qmodel.input_shape, pixels)
        if verdict is not None:
            break
    ok, need = verdict
    if not ok:
        raise UserError(f"fold: {pixels} pixels per transfer do not suit the first layer "
                        f"{first.name!r}: use {need}")
    return pixels


def check_fold(qmodel, fold, dsp_width=DSP_WIDTHS["ecp5"]):
    """Validate ``fold`` and fill in missing layers with ``LayerFold(1, 1)``.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict
        ``{layer name: (pe, simd)}``, ``(pe, simd, multiplier)`` (default ``"dsp"``) or
        ``(pe, simd, multiplier, hard_lanes)`` (see :class:`LayerFold`).
    dsp_width : int
        The hard multiplier's operand width a ``"packed"`` layer must fit.

    Returns
    -------
    Fold
        Its ``pixels`` are ``fold``'s (1 for a plain dict).

    Raises
    ------
    UserError
        Naming the layer whose PE does not divide its outputs, SIMD its inputs, or whose
        multiplier kind is unknown or cannot pack its products.
    """
    names = {layer.name for layer in qmodel.weight_layers}
    unknown = sorted(set(fold) - names)
    if unknown:
        raise UserError(f"fold names unknown layers {unknown}; the model's weight layers are "
                        f"{sorted(names)}")
    loaded = frozenset(getattr(fold, "loaded", ()))
    if loaded - names:
        raise UserError(f"fold loads the weights of unknown layers {sorted(loaded - names)}; "
                        f"the model's weight layers are {sorted(names)}")
    checked = Fold(pixels=_check_pixels(qmodel, getattr(fold, "pixels", 1)), loaded=loaded)
    for layer in qmodel.weight_layers:
        try:
            entry = tuple(fold.get(layer.name, (1, 1)))
            pe, simd = (int(v) for v in entry[:2])
            multiplier = str(entry[2]) if len(entry) > 2 else "dsp"
            hard_lanes = int(entry[3]) if len(entry) > 3 and entry[3] is not None else None
        except (TypeError, ValueError) as error:
            raise UserError(f"layer {layer.name!r}: expected [pe, simd, multiplier, "
                            f"hard_lanes], not {fold.get(layer.name)!r} ({error})") from None
        kind = hardware(layer)
        unit = kind.simd_unit
        if pe < 1 or layer.channels % pe:
            raise UserError(f"layer {layer.name!r}: PE {pe} must divide its {layer.channels} "
                            f"output channels")
        if simd < 1 or unit % simd:
            raise UserError(f"layer {layer.name!r}: SIMD {simd} must divide its {unit} "
                            f"{kind.simd_what}")
        if multiplier not in KINDS:
            raise UserError(f"layer {layer.name!r}: multiplier {multiplier!r} is not one of "
                            f"{', '.join(KINDS)}")
        shape = element_shape(layer.in_bits, layer.in_signed)
        problem = lane_problem(multiplier, layer.weight_bits, shape, dsp_width,
                               multiplier != "lut" and hard_lanes in (None, simd))
        if problem:
            raise UserError(f"layer {layer.name!r}: {problem}")
        if multiplier == "constant" and (pe, simd) != (layer.channels, layer.fan_in):
            raise UserError(f"layer {layer.name!r}: multiplier 'constant' needs a lane for "
                            f"every weight: PE {layer.channels} and SIMD {layer.fan_in}")
        if multiplier == "constant" and layer.name in loaded:
            raise UserError(f"layer {layer.name!r}: multiplier 'constant' keeps its weights in "
                            f"logic, they cannot be loaded")
        if layer.name in loaded and layer.fan_in * layer.channels // (pe * simd) > BLOCK_DEPTH:
            raise UserError(f"layer {layer.name!r}: loaded weights take at most {BLOCK_DEPTH} "
                            f"words of PE x SIMD weights, not "
                            f"{layer.fan_in * layer.channels // (pe * simd)}")
        if multiplier == "packed" and layer.weight_bits > 1:
            try:
                packing_shift(layer.weight_bits, shape, dsp_width)
            except ValueError as error:
                raise UserError(f"layer {layer.name!r}: {error}") from None
        if hard_lanes is not None and not 0 <= hard_lanes <= simd:
            raise UserError(f"layer {layer.name!r}: hard lanes {hard_lanes} must be in "
                            f"0..{simd} (its SIMD)")
        checked[layer.name] = LayerFold(pe, simd, multiplier, hard_lanes)
    return checked


def loaded_words(layer, entry):
    """16-bit transfers that load ``layer``'s weights folded as ``entry``: its
    ``NF x SF`` words of ``PE x SIMD`` weights, 16 bits a transfer (a RAM block each)."""
    pe, simd = entry[:2]
    return (layer.fan_in * layer.channels // (pe * simd)
            * math.ceil(pe * simd * layer.weight_bits / BLOCK_WIDTH))


@dataclass(frozen=True)
class Stage:
    """One hardware stage of the pipeline and its predicted cycles per image at full rate."""

    name: str
    kind: str
    cycles: int
    pe: int = 1
    simd: int = 1
    macs: int = 0


class LayerHardware:
    """What a layer of :mod:`sw.qmodel` becomes in the core: its stages, their schedule and
    the stream it passes on. This base is a layer with no hardware of its own, which passes
    its input stream on as it is.

    Parameters
    ----------
    layer : a layer of :mod:`sw.qmodel`
    """

    def __init__(self, layer):
        self.layer = layer

    def first_layer_pixels(self, input_shape, pixels):
        """``(ok, need)``: whether the layer, first in the core, takes ``pixels`` elements of
        the ``input_shape`` image a transfer, and what it would take; ``None`` where it passes
        the stream on as it is (the next layer decides)."""
        return None

    def schedule(self, fold, lanes):
        """The layer's :class:`Stage` list, fed ``lanes`` elements a transfer."""
        return []

    def output_format(self, fold, shape, lanes):
        """The element shape and lanes of the stream the layer passes on, fed ``lanes``
        elements of ``shape`` a transfer."""
        return shape, lanes

    def stages(self, name, fold, shape, lanes, dsp_width, preload=False):
        """The named components computing the layer, in stream order (see
        :func:`layer_stages`), fed ``lanes`` elements of ``shape`` a transfer; loaded weights
        ``preload``-ed (simulation)."""
        return []


class FlattenHardware(LayerHardware):
    """A :class:`~sw.qmodel.Flatten`: nothing, the stream's HWC order already is Keras'
    flatten order."""


class WeightHardware(LayerHardware):
    """A weight layer: [width converter] -> [its input buffer] -> MAC array -> [requantizer];
    a subclass per kind gives the input buffer and the lanes it takes."""

    #: What :attr:`simd_unit` counts, in :func:`check_fold`'s error.
    simd_what = "inputs"

    @property
    def simd_unit(self):
        """What SIMD must divide: the input vector."""
        return self.layer.fan_in

    def input_lanes(self, simd, upstream=1):
        """Lanes of the stream the layer takes in from a stream of ``upstream`` lanes."""
        return simd

    def buffer(self, name, shape, simd, needed, pe):
        """The named components between the width converter and the MAC array, fed
        ``needed`` elements of ``shape`` a transfer."""
        return []

    def buffer_schedule(self, simd, needed, pe):
        """The :class:`Stage` list of :meth:`buffer`'s components that may set the interval."""
        return []

    def schedule(self, fold, lanes):
        layer = self.layer
        pe, simd = fold[layer.name][:2]
        elements, needed = math.prod(layer.in_shape), self.input_lanes(simd, lanes)
        stages = []
        if lanes != needed:
            stages.append(Stage(f"{layer.name}.width", "width", elements // min(lanes, needed)))
        stages += self.buffer_schedule(simd, needed, pe)
        cycles = layer.positions * (layer.channels // pe) * (layer.fan_in // simd)
        return [*stages, Stage(layer.name, layer.kind, cycles, pe, simd, layer.macs)]

    def output_format(self, fold, shape, lanes):
        layer = self.layer
        if not layer.is_output:
            shape = element_shape(layer.out_bits, layer.out_signed)
        return shape, fold[layer.name].pe

    def stages(self, name, fold, shape, lanes, dsp_width, preload=False):
        layer = self.layer
        pe, simd, multiplier, hard_lanes = fold[layer.name]
        needed = self.input_lanes(simd, lanes)
        stages = []
        if lanes != needed:
            stages.append((f"{name}_width", WidthConverter(
                shape=shape, in_lanes=lanes, out_lanes=needed)))
        stages += self.buffer(name, shape, simd, needed, pe)
        stages.append((f"{name}_mac", MACArray(
            layer.matrix, layer.bias, weight_bits=layer.weight_bits, in_shape=shape,
            acc_bits=layer.acc_bits, pe=pe, simd=simd, multiplier=multiplier,
            dsp_width=dsp_width, hard_lanes=hard_lanes, loaded=layer.name in fold.loaded,
            preload=preload)))
        if not layer.is_output:
            stages.append((f"{name}_requantize", Requantize(
                layer.shift, pe=pe, acc_bits=layer.acc_bits, out_bits=layer.out_bits,
                out_signed=layer.out_signed)))
        return stages


class ConvHardware(WeightHardware):
    """A :class:`~sw.qmodel.Conv2D`: a window generator feeds its MAC array."""

    simd_what = "window inputs (K x K x Cin)"

    @property
    def simd_unit(self):
        """What SIMD must divide: the whole window, ``K * K * Cin``."""
        return self.layer.kernel_size ** 2 * self.layer.in_shape[-1]

    def input_lanes(self, simd, upstream=1):
        """The window generator reads several pixels, ``gcd(simd, Cin)`` channels or a whole
        pixel a word (see :func:`conv_window`) and gathers SIMD from several pixels itself."""
        channels = self.layer.in_shape[-1]
        pixels = _window_pixels(self.layer, simd, upstream)
        return math.gcd(simd, channels) if pixels is None else pixels * channels

    def first_layer_pixels(self, input_shape, pixels):
        channels = input_shape[-1]
        return (pixels == 1 or _whole_pixels(input_shape, pixels) is not None,
                f"1, or a multiple of its {channels} channels whose pixels divide its width")

    def buffer(self, name, shape, simd, needed, pe):
        return [(f"{name}_window", conv_window(self.layer, simd, shape, needed, pe))]

    def buffer_schedule(self, simd, needed, pe):
        # The window generator's own interval: its input, its output, and on its
        # window-register path the wait of each window row for its first columns.
        window = conv_window(self.layer, simd, unsigned(1), needed, pe)
        window._MustUse__silence = True  # built only to ask its schedule
        return [Stage(f"{self.layer.name}.window", "window", window.cycles_per_image,
                      simd=simd)]


class DenseHardware(WeightHardware):
    """A :class:`~sw.qmodel.Dense`: its MAC array takes the input vector, through a buffer
    where it makes several passes over its outputs."""

    def first_layer_pixels(self, input_shape, pixels):
        elements = math.prod(input_shape)
        return elements % pixels == 0, f"a divisor of its {elements} inputs"

    def buffer(self, name, shape, simd, needed, pe):
        layer = self.layer
        if layer.channels // pe == 1:
            return []
        # The MAC array takes input only during its first pass over the outputs;
        # a vector's worth of buffer keeps the upstream layers busy meanwhile.
        return [(f"{name}_buffer", StreamFIFO(
            shape=data.ArrayLayout(shape, simd), depth=layer.fan_in // simd + 1))]


class PoolHardware(LayerHardware):
    """A :class:`~sw.qmodel.Pool2D`: a :class:`~hw.pool.Pool` and a row of its results'
    buffer after it."""

    def first_layer_pixels(self, input_shape, pixels):
        channels = input_shape[-1]
        return channels % pixels == 0, f"a divisor of its {channels} channels"

    def schedule(self, fold, lanes):
        layer = self.layer
        # One input transfer per cycle, global pooling included.
        return [Stage(layer.name, layer.kind, math.prod(layer.in_shape) // lanes, lanes, lanes)]

    def stages(self, name, fold, shape, lanes, dsp_width, preload=False):
        layer = self.layer
        height, width, channels = layer.in_shape
        out_width = width // layer.window[1]
        # A pool sends a row of results in the time of one of its ``window`` input rows and
        # nothing in the others (global pooling: the whole result at the image's last pixel,
        # ``channels // lanes`` transfers back to back): a row's worth of buffer lets a
        # consumer that keeps up on average (a width converter into a dense layer) take them
        # at its pace without stalling the pool.
        return [(f"{name}_pool", Pool(height=height, width=width, channels=channels,
                                      size=layer.window, shape=shape, lanes=lanes, op=layer.op)),
                (f"{name}_buffer", StreamFIFO(shape=data.ArrayLayout(shape, lanes),
                                              depth=out_width * channels // lanes + 1))]


#: The hardware of each layer kind of :mod:`sw.qmodel`.
HARDWARE = {Conv2D: ConvHardware, Dense: DenseHardware, Pool2D: PoolHardware,
            Flatten: FlattenHardware}


def hardware(layer):
    """The :class:`LayerHardware` of ``layer`` (its kind's, from :data:`HARDWARE`)."""
    return HARDWARE[type(layer)](layer)


def schedule(qmodel, fold):
    """Predict the stages' cycles per image for ``fold``; the maximum is the image interval.

    Returns
    -------
    list of Stage
    """
    fold = check_fold(qmodel, fold)
    lanes = fold.pixels
    stages = [Stage("input", "input", math.prod(qmodel.input_shape) // lanes, lanes, lanes)]
    for layer, (_, lanes) in zip(qmodel.layers, _input_formats(qmodel, fold), strict=True):
        stages += hardware(layer).schedule(fold, lanes)
    lanes = fold[qmodel.output_layer.name].pe
    stages.append(Stage("argmax", "argmax", qmodel.classes // lanes, lanes, lanes))
    return stages


def _input_formats(qmodel, fold):
    """The element shape and lanes of the stream entering each layer."""
    shape, lanes, formats = unsigned(qmodel.input_bits), fold.pixels, []
    for layer in qmodel.layers:
        formats.append((shape, lanes))
        shape, lanes = hardware(layer).output_format(fold, shape, lanes)
    return formats


def layer_stages(qmodel, fold, index, dsp_width=DSP_WIDTHS["ecp5"], preload=False):
    """The named stages that compute ``qmodel.layers[index]``, in stream order.

    Each stage's ``o`` feeds the next one's ``i``. A ``Flatten`` has none: the stream order
    is already HWC.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict
        ``{weight layer name: (pe, simd)}`` (see :func:`check_fold`).
    index : int
        Position of the layer in ``qmodel.layers``.
    dsp_width : int
        Operand width of the target's hard multiplier (:data:`hw.multiplier.DSP_WIDTHS`).
    preload : bool
        Loaded weights start in their RAM (simulation; see :class:`~hw.weight_ram.WeightRAM`).

    Returns
    -------
    list of (str, wiring.Component)
    """
    fold = check_fold(qmodel, fold, dsp_width)
    layer = qmodel.layers[index]
    shape, lanes = _input_formats(qmodel, fold)[index]
    return hardware(layer).stages(f"l{index}_{layer.name}", fold, shape, lanes, dsp_width,
                                  preload)


class Accelerator(wiring.Component):
    """A quantized model as a streaming core: pixels in, label and logits out.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict or Fold, optional
        ``{weight layer name: (pe, simd[, multiplier[, hard_lanes]])}`` (see
        :func:`check_fold`); missing layers get ``(1, 1)``. A :class:`Fold` also sets the
        input's pixels per transfer (1 otherwise).
    dsp_width : int
        Operand width of the target's hard multiplier, 18 (ECP5, default) or 16 (iCE40):
        ``"packed"`` layers must fit it. It changes no result, only what is accepted.
    preload : bool
        The ``fold.loaded`` layers' RAMs start with their weights: for simulation, where
        nothing need be loaded (the hardware's start undefined).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(unsigned(8), pixels)))
        The image's bytes in ``(y, x, c)`` order, ``fold.pixels`` per transfer (lane 0
        first).
    o : Out(stream.Signature(StructLayout({"label", "logits"})))
        One transfer per image: the class (lowest index on a tie) and every logit.
    load : In(stream.Signature(LOAD_LAYOUT))
        Only with ``fold.loaded`` layers: the load image (:meth:`load_image`), 16 bits a
        transfer, the first marked ``first``; always taken. Load while no image is in the
        core.
    """

    def __init__(self, qmodel, fold=None, dsp_width=DSP_WIDTHS["ecp5"], preload=False):
        self._qmodel = qmodel
        self._dsp_width = dsp_width
        self._preload = bool(preload)
        self._fold = check_fold(qmodel, {} if fold is None else fold, dsp_width)
        self._schedule = schedule(qmodel, self._fold)
        output = qmodel.output_layer
        self._argmax = Argmax(classes=output.channels, shape=signed(output.acc_bits),
                              lanes=self._fold[output.name].pe)
        ports = {
            "i": In(lanes_signature(unsigned(qmodel.input_bits), self._fold.pixels)),
            "o": Out(stream.Signature(self._argmax.output_layout)),
        }
        if self._fold.loaded:
            ports["load"] = In(stream.Signature(LOAD_LAYOUT))
        super().__init__(ports)

    @property
    def qmodel(self):
        return self._qmodel

    @property
    def fold(self):
        """The :class:`Fold`: a :class:`LayerFold` for every weight layer, and ``pixels``."""
        return Fold(self._fold, self._fold.pixels)

    @property
    def stages(self):
        """The predicted :class:`Stage` list (see :func:`schedule`)."""
        return list(self._schedule)

    @property
    def cycles_per_image(self):
        """Predicted steady-state interval between images, in cycles."""
        return max(stage.cycles for stage in self._schedule)

    @property
    def pixels(self):
        """Bytes of one image."""
        return math.prod(self._qmodel.input_shape)

    @property
    def input_lanes(self):
        """Bytes of the image per transfer on :attr:`i`."""
        return self._fold.pixels

    @property
    def classes(self):
        return self._qmodel.classes

    @property
    def logit_bits(self):
        return self._qmodel.output_layer.acc_bits

    @property
    def label_bits(self):
        return self._argmax.label_bits

    def _stages(self):
        return [stage for index in range(len(self._qmodel.layers))
                for stage in layer_stages(self._qmodel, self._fold, index, self._dsp_width,
                                          self._preload)]

    def load_chunks(self):
        """The 16-bit transfers of the load image: every loaded layer's, in layer order."""
        chunks = []
        for index, layer in enumerate(self._qmodel.layers):
            if layer.name not in self._fold.loaded:
                continue
            for _, stage in layer_stages(self._qmodel, self._fold, index, self._dsp_width):
                # Built to ask its RAM's words (the very words the circuit holds), not used.
                stage._MustUse__silence = True
                if getattr(stage, "loaded", False):
                    chunks += stage.load_chunks()
        return chunks

    @property
    def load_words(self):
        """16-bit transfers of the load image (0 when no weights are loaded)."""
        return sum(loaded_words(layer, self._fold[layer.name])
                   for layer in self._qmodel.weight_layers if layer.name in self._fold.loaded)

    def load_image(self):
        """The bytes a load request carries (``docs/protocol.md``): :meth:`load_chunks`, each
        little-endian; empty when no weights are loaded."""
        return b"".join(chunk.to_bytes(2, "little") for chunk in self.load_chunks())

    @property
    def multipliers(self):
        """MAC lanes instantiated (PE x SIMD summed over weight layers)."""
        return sum(entry.pe * entry.simd for entry in self._fold.values())

    def elaborate(self, platform):
        m = Module()
        upstream = wiring.flipped(self.i)  # the stream feeding the next stage
        stages = self._stages()
        for name, stage in [*stages, ("argmax", self._argmax)]:
            m.submodules[name] = stage
            wiring.connect(m, upstream=upstream, downstream=stage.i)
            upstream = stage.o
        wiring.connect(m, upstream=upstream, downstream=wiring.flipped(self.o))
        if self._fold.loaded:
            self._route_load(m, [stage for _, stage in stages if getattr(stage, "loaded", 0)])
        return m

    def _route_load(self, m, arrays):
        """Each transfer of the load image to the array whose weights it is: the arrays'
        shares follow each other in layer order, each starting with its own ``first``."""
        load = self.load
        sizes = [array.nf * array.sf * math.ceil(array.pe * array.simd * array.weight_bits
                                                 / BLOCK_WIDTH) for array in arrays]
        count = Signal(range(sum(sizes)), name="load_count")
        here = Signal.like(count, name="load_here")
        m.d.comb += [load.ready.eq(1), here.eq(Mux(load.payload.first, 0, count))]
        with m.If(load.valid):
            m.d.sync += count.eq(Mux(here == sum(sizes) - 1, 0, here + 1))
        start = 0
        for array, size in zip(arrays, sizes, strict=True):
            m.d.comb += [
                array.load.valid.eq(load.valid & (here >= start) & (here < start + size)),
                array.load.payload.data.eq(load.payload.data),
                array.load.payload.first.eq(here == start),
            ]
            start += size
