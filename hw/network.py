"""The network generator: a quantized model becomes one layer-pipelined streaming core.

Every layer gets its own hardware, and all layers work at once on successive parts of the
image stream (FINN's dataflow style)::

    pixels -> [width] -> window -> MAC array -> requantize -> [max/avg pool] -> ...
           -> [width] -> MAC array (dense) -> ... -> MAC array (logits) -> argmax -> label

The folding (PE output lanes x SIMD input lanes per weight layer) sets each layer's cycles
per image; :func:`schedule` predicts them and the slowest stage sets the image interval.
"""

import math
from dataclasses import dataclass

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.errors import UserError
from sw.qmodel import Conv2D, Dense, Pool2D

from .argmax import Argmax
from .fifo import StreamFIFO
from .mac_array import MACArray
from .pool import Pool
from .requantize import Requantize
from .width import WidthConverter
from .window import WindowGenerator

__all__ = ["Accelerator", "Stage", "check_fold", "conv_window", "default_fold", "input_lanes",
           "layer_stages", "schedule", "simd_unit"]


def _shape(bits, is_signed):
    return signed(bits) if is_signed else unsigned(bits)


def default_fold(qmodel):
    """The fully folded design: one MAC lane per weight layer (``pe = simd = 1``)."""
    return {layer.name: (1, 1) for layer in qmodel.weight_layers}


def simd_unit(layer):
    """What SIMD must divide: a conv's whole window, ``K * K * Cin``, or a dense layer's input
    vector."""
    if isinstance(layer, Conv2D):
        return layer.kernel_size ** 2 * layer.in_shape[-1]
    return layer.fan_in


def _window_pixels(layer, simd):
    """``pixels`` of a conv's window generator: channel groups of ``gcd(simd, Cin)`` where
    SIMD divides a kernel row (its kernel-row path reads them straight out of the line
    buffer), else whole pixels, so the input is not slower than the window register."""
    return None if (layer.kernel_size * layer.in_shape[-1]) % simd == 0 else 1


def input_lanes(layer, simd):
    """Lanes of the stream a weight layer takes in: a conv's window generator reads
    ``gcd(simd, Cin)`` channels or a whole pixel a word (see :func:`conv_window`) and
    gathers SIMD from several pixels itself."""
    if not isinstance(layer, Conv2D):
        return simd
    channels = layer.in_shape[-1]
    return math.gcd(simd, channels) if _window_pixels(layer, simd) is None else channels


def conv_window(layer, simd, shape):
    """The :class:`~hw.window.WindowGenerator` of a conv layer folded to ``simd`` lanes,
    taking elements of ``shape``."""
    height, width, channels = layer.in_shape
    return WindowGenerator(height=height, width=width, channels=channels,
                           kernel=layer.kernel_size, shape=shape, simd=simd,
                           stride=layer.stride, padding=layer.padding,
                           pixels=_window_pixels(layer, simd))


def check_fold(qmodel, fold):
    """Validate ``fold`` (``{layer name: (pe, simd)}``) and fill in missing layers with 1, 1.

    Raises
    ------
    UserError
        Naming the layer whose PE does not divide its outputs or SIMD its inputs.
    """
    names = {layer.name for layer in qmodel.weight_layers}
    unknown = sorted(set(fold) - names)
    if unknown:
        raise UserError(f"fold names unknown layers {unknown}; the model's weight layers are "
                        f"{sorted(names)}")
    checked = {}
    for layer in qmodel.weight_layers:
        pe, simd = (int(v) for v in fold.get(layer.name, (1, 1)))
        unit = simd_unit(layer)
        if pe < 1 or layer.channels % pe:
            raise UserError(f"layer {layer.name!r}: PE {pe} must divide its {layer.channels} "
                            f"output channels")
        if simd < 1 or unit % simd:
            what = "window inputs (K x K x Cin)" if isinstance(layer, Conv2D) else "inputs"
            raise UserError(f"layer {layer.name!r}: SIMD {simd} must divide its {unit} {what}")
        checked[layer.name] = (pe, simd)
    return checked


@dataclass(frozen=True)
class Stage:
    """One hardware stage of the pipeline and its predicted cycles per image at full rate."""

    name: str
    kind: str
    cycles: int
    pe: int = 1
    simd: int = 1
    macs: int = 0


def schedule(qmodel, fold):
    """Predict the stages' cycles per image for ``fold``; the maximum is the image interval.

    Returns
    -------
    list of Stage
    """
    fold = check_fold(qmodel, fold)
    pixels = math.prod(qmodel.input_shape)
    stages = [Stage("input", "input", pixels)]
    lanes = 1
    for layer in qmodel.layers:
        if isinstance(layer, Conv2D | Dense):
            pe, simd = fold[layer.name]
            elements, needed = math.prod(layer.in_shape), input_lanes(layer, simd)
            if lanes != needed:
                stages.append(Stage(f"{layer.name}.width", "width",
                                    elements // min(lanes, needed)))
            if isinstance(layer, Conv2D):
                # The window generator's own interval: its input, its output, and on its
                # window-register path the wait of each window row for its first columns.
                window = conv_window(layer, simd, unsigned(1))
                window._MustUse__silence = True  # built only to ask its schedule
                stages.append(Stage(f"{layer.name}.window", "window", window.cycles_per_image,
                                    simd=simd))
            positions = math.prod(layer.out_shape[:-1]) if isinstance(layer, Conv2D) else 1
            cycles = positions * (layer.channels // pe) * (layer.fan_in // simd)
            stages.append(Stage(layer.name, layer.kind, cycles, pe, simd, layer.macs))
            lanes = pe
        elif isinstance(layer, Pool2D):
            # One input transfer per cycle, global pooling included.
            stages.append(Stage(layer.name, layer.kind, math.prod(layer.in_shape) // lanes,
                                lanes, lanes))
    stages.append(Stage("argmax", "argmax", qmodel.classes // lanes, lanes, lanes))
    return stages


def _input_formats(qmodel, fold):
    """The element shape and lanes of the stream entering each layer."""
    shape, lanes, formats = unsigned(qmodel.input_bits), 1, []
    for layer in qmodel.layers:
        formats.append((shape, lanes))
        if isinstance(layer, Conv2D | Dense):
            if not layer.is_output:
                shape = _shape(layer.out_bits, layer.out_signed)
            lanes = fold[layer.name][0]
    return formats


def layer_stages(qmodel, fold, index):
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

    Returns
    -------
    list of (str, wiring.Component)
    """
    fold = check_fold(qmodel, fold)
    layer = qmodel.layers[index]
    shape, lanes = _input_formats(qmodel, fold)[index]
    name, stages = f"l{index}_{layer.name}", []
    if isinstance(layer, Conv2D | Dense):
        pe, simd = fold[layer.name]
        if lanes != input_lanes(layer, simd):
            stages.append((f"{name}_width", WidthConverter(
                shape=shape, in_lanes=lanes, out_lanes=input_lanes(layer, simd))))
        if isinstance(layer, Dense) and layer.channels // pe > 1:
            # The MAC array takes input only during its first pass over the outputs;
            # a vector's worth of buffer keeps the upstream layers busy meanwhile.
            stages.append((f"{name}_buffer", StreamFIFO(
                shape=data.ArrayLayout(shape, simd), depth=layer.fan_in // simd + 1)))
        if isinstance(layer, Conv2D):
            stages.append((f"{name}_window", conv_window(layer, simd, shape)))
        stages.append((f"{name}_mac", MACArray(
            layer.matrix, layer.bias, weight_bits=layer.weight_bits, in_shape=shape,
            acc_bits=layer.acc_bits, pe=pe, simd=simd)))
        if not layer.is_output:
            stages.append((f"{name}_requantize", Requantize(
                layer.shift, pe=pe, acc_bits=layer.acc_bits, out_bits=layer.out_bits,
                out_signed=layer.out_signed)))
    elif isinstance(layer, Pool2D):
        height, width, channels = layer.in_shape
        stages.append((f"{name}_pool", Pool(height=height, width=width, channels=channels,
                                            size=layer.window, shape=shape, lanes=lanes,
                                            op=layer.op)))
    return stages


class Accelerator(wiring.Component):
    """A quantized model as a streaming core: pixels in, label and logits out.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict, optional
        ``{weight layer name: (pe, simd)}``; missing layers get ``(1, 1)``.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(unsigned(8), 1)))
        The image's bytes in ``(y, x, c)`` order, one per transfer.
    o : Out(stream.Signature(StructLayout({"label", "logits"})))
        One transfer per image: the class (lowest index on a tie) and every logit.
    """

    def __init__(self, qmodel, fold=None):
        self._qmodel = qmodel
        self._fold = check_fold(qmodel, fold or {})
        self._schedule = schedule(qmodel, self._fold)
        output = qmodel.output_layer
        self._argmax = Argmax(classes=output.channels, shape=signed(output.acc_bits),
                              lanes=self._fold[output.name][0])
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(qmodel.input_bits), 1))),
            "o": Out(stream.Signature(self._argmax.output_layout)),
        })

    @property
    def qmodel(self):
        return self._qmodel

    @property
    def fold(self):
        """``{weight layer name: (pe, simd)}`` for every weight layer."""
        return dict(self._fold)

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
        return math.prod(self._qmodel.input_shape)

    @property
    def classes(self):
        return self._qmodel.classes

    @property
    def logit_bits(self):
        return self._qmodel.output_layer.acc_bits

    @property
    def label_bits(self):
        return self._argmax.label_bits

    @property
    def multipliers(self):
        """MAC lanes instantiated (PE x SIMD summed over weight layers)."""
        return sum(pe * simd for pe, simd in self._fold.values())

    def elaborate(self, platform):
        m = Module()
        upstream = wiring.flipped(self.i)  # the stream feeding the next stage
        stages = [stage for index in range(len(self._qmodel.layers))
                  for stage in layer_stages(self._qmodel, self._fold, index)]
        for name, stage in [*stages, ("argmax", self._argmax)]:
            m.submodules[name] = stage
            wiring.connect(m, upstream=upstream, downstream=stage.i)
            upstream = stage.o
        wiring.connect(m, upstream=upstream, downstream=wiring.flipped(self.o))
        return m
