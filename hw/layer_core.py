"""One layer of the network generator's pipeline on its own, for per-layer verification."""

from amaranth.hdl import Module
from amaranth.lib import wiring

from sw.errors import UserError

from .network import layer_stages

__all__ = ["LayerCore"]


class LayerCore(wiring.Component):
    """The stages :class:`~hw.network.Accelerator` builds for ``qmodel.layers[index]``, alone.

    The same code builds them as in the whole core (:func:`hw.network.layer_stages`), so a layer
    that is bit-exact here is bit-exact there; what differs is only what feeds it.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    index : int
        Position of the layer in ``qmodel.layers``; a layer without hardware (``Flatten``)
        is refused.
    fold : dict, optional
        ``{weight layer name: (pe, simd)}`` as for the whole core.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, lanes)))
        The layer's input tensor in ``(y, x, c)`` order, ``lanes`` elements a transfer, as
        the previous layer's stages deliver it.
    o : Out(stream.Signature(ArrayLayout(shape, lanes)))
        The layer's output tensor in the same order.
    """

    def __init__(self, qmodel, index, fold=None):
        if not isinstance(index, int) or not 0 <= index < len(qmodel.layers):
            raise UserError(f"layer index {index!r} is out of range: the model has "
                            f"{len(qmodel.layers)} layers")
        layer, stages = qmodel.layers[index], layer_stages(qmodel, fold or {}, index)
        if not stages:
            raise UserError(f"layer {layer.name!r} ({layer.kind}) has no hardware of its own")
        self._layer, self._stages = layer, stages
        super().__init__({"i": stages[0][1].signature.members["i"],
                          "o": stages[-1][1].signature.members["o"]})

    @property
    def layer(self):
        """The :mod:`sw.qmodel` layer this core computes."""
        return self._layer

    def elaborate(self, platform):
        m = Module()
        upstream = wiring.flipped(self.i)
        for name, stage in self._stages:
            m.submodules[name] = stage
            wiring.connect(m, upstream=upstream, downstream=stage.i)
            upstream = stage.o
        wiring.connect(m, upstream=upstream, downstream=wiring.flipped(self.o))
        return m
