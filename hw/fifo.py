"""A stream FIFO: :class:`amaranth.lib.fifo.SyncFIFOBuffered` behind stream ports."""

from amaranth.hdl import Module, Shape, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO"]


class StreamFIFO(wiring.Component):
    """A synchronous FIFO between two streams, its storage in block RAM where it is deep.

    Parameters
    ----------
    shape : shape-like
        Payload shape of both streams (``unsigned(n)``, ``signed(n)``, a data layout, ...).
    depth : int
        Number of payloads it holds (at least 1). ``SyncFIFOBuffered`` keeps one of them in
        its output register, so the memory behind it has ``depth - 1`` entries.

    Attributes
    ----------
    i : In(stream.Signature(shape))
        Payloads in; ``i.ready`` is low when the FIFO is full.
    o : Out(stream.Signature(shape))
        The same payloads in the same order; ``o.valid`` is registered.
    level : Out(range(depth + 1))
        Number of payloads held.

    Notes
    -----
    Throughput is one payload per cycle in and out once non-empty, except for ``depth == 1``
    (a single register that alternates between full and empty, one payload every two cycles).
    A payload written into an empty FIFO appears on ``o`` two cycles later.
    """

    def __init__(self, *, shape, depth):
        try:
            width = Shape.cast(shape).width
        except TypeError as error:
            raise TypeError(f"shape must be a shape-like object, not {shape!r}") from error
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"depth must be an int, not {depth!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        if width < 1:
            raise ValueError(f"shape {shape!r} has zero width; there is nothing to buffer")
        self._shape, self._depth, self._width = shape, depth, width
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def shape(self):
        """Payload shape."""
        return self._shape

    @property
    def depth(self):
        """Number of payloads the FIFO holds."""
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._width, depth=self._depth)
        m.d.comb += [
            fifo.w_data.eq(Value.cast(self.i.payload)),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            Value.cast(self.o.payload).eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
            self.level.eq(fifo.level),
        ]
        return m
