"""Each layer's RTL alone against the golden model's layer, and finding the layer that differs.

:func:`simulate_layer` runs one layer's stages (:class:`hw.layer_core.LayerCore`, the same
hardware the whole core instantiates) on the golden model's input to that layer.
:func:`first_differing_layer` does this layer by layer for one image, which is how
``python -m sim.regress`` explains a mismatch.
"""

import math

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Shape

from hw.layer_core import LayerCore
from sw.golden import run

from .harness import pack, simulate_stream, unpack

__all__ = ["LAYER_TOPLEVEL", "first_differing_layer", "layer_verilog", "simulate_layer"]

LAYER_TOPLEVEL = "nnfpga_layer"


def _port_format(port):
    """``(width, lanes, signed)`` of a stream port whose payload is an ``ArrayLayout``."""
    layout = port.payload.shape()
    shape = Shape.cast(layout.elem_shape)
    return shape.width, layout.length, shape.signed


def layer_verilog(qmodel, index, fold):
    """Verilog of layer ``index`` alone, and its :class:`~hw.layer_core.LayerCore`."""
    core = LayerCore(qmodel, index, fold)
    return verilog.convert(core, name=LAYER_TOPLEVEL), core


def simulate_layer(qmodel, index, fold, inputs, *, idle=0.0, stall=0.0, seed=0,
                   simulator="verilator", workdir=None):
    """Run layer ``index`` of ``qmodel`` in RTL on ``inputs`` (a batch of its input tensors).

    Returns
    -------
    ndarray of int64
        The layer's outputs, shape ``(len(inputs), *layer.out_shape)``, as the RTL computed
        them (compare with the golden model's layer output).
    """
    source, core = layer_verilog(qmodel, index, fold)
    layer = core.layer
    inputs = np.asarray(inputs, dtype=np.int64).reshape(-1, *layer.in_shape)
    in_width, in_lanes, _ = _port_format(core.i)
    out_width, out_lanes, out_signed = _port_format(core.o)
    outputs = len(inputs) * math.prod(layer.out_shape) // out_lanes
    macs = getattr(layer, "macs", 0)
    deadline = int(len(inputs) + 4) * (2 * math.prod(layer.in_shape) + macs + 1000) * 8
    received = simulate_stream(source, LAYER_TOPLEVEL, pack(inputs, in_width, in_lanes),
                               outputs, deadline=deadline, idle=idle, stall=stall, seed=seed,
                               simulator=simulator, workdir=workdir)
    values = unpack(received["words"], out_width, out_lanes, out_signed)
    return values.reshape(len(inputs), *layer.out_shape)


def first_differing_layer(qmodel, fold, image, *, rtl_model=None, simulator="verilator",
                          workdir=None):
    """Find the first layer whose RTL output differs from the golden model on ``image``.

    Every layer with hardware is simulated on the golden model's input to it, so a layer
    is judged on its own, not on an upstream layer's error.

    Parameters
    ----------
    rtl_model : QModel, optional
        The model the RTL is generated from, when it is not ``qmodel`` (a deliberately
        different one shows how a fault is reported).

    Returns
    -------
    dict or None
        ``None`` when every layer matches, else ``index``, ``layer`` (name), ``kind``,
        ``element`` (flat index of the first differing output element), ``rtl`` and
        ``golden`` (its two values) and ``differing`` (how many elements differ).
    """
    image = np.asarray(image).reshape(1, *qmodel.input_shape)
    outputs = run(qmodel, image)
    inputs = [image.astype(np.int64), *outputs[:-1]]
    for index, layer in enumerate(qmodel.layers):
        if layer.kind == "flatten":
            continue
        rtl = simulate_layer(rtl_model or qmodel, index, fold, inputs[index], simulator=simulator,
                             workdir=None if workdir is None else f"{workdir}/layer{index}")
        golden = np.asarray(outputs[index]).reshape(rtl.shape)
        differ = np.flatnonzero(rtl.reshape(-1) != golden.reshape(-1))
        if len(differ):
            element = int(differ[0])
            return {"index": index, "layer": layer.name, "kind": layer.kind,
                    "element": element, "rtl": int(rtl.reshape(-1)[element]),
                    "golden": int(golden.reshape(-1)[element]), "differing": len(differ)}
    return None
