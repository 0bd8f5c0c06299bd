"""Re-packing a stream of elements from one number of lanes per transfer to another."""

import math

from amaranth.hdl import Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .streams import lanes_signature

__all__ = ["WidthConverter"]


def _integer_shape(shape):
    try:
        cast = Shape.cast(shape)
    except TypeError as error:
        raise TypeError(f"shape must be an integer shape such as unsigned(8) or signed(8), "
                        f"not {shape!r}") from error
    if cast.width < 1:
        raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
    return cast


class WidthConverter(wiring.Component):
    """Re-packs a flat element stream from ``in_lanes`` to ``out_lanes`` elements per transfer.

    Elements keep their order: lane 0 of a transfer comes before lane 1, and the lanes of one
    transfer before those of the next. Any pair of lane counts works (``2 -> 3`` too): a
    buffer of ``in_lanes + out_lanes - gcd(in_lanes, out_lanes)`` elements collects inputs
    and hands out ``out_lanes`` of them at a time.

    Parameters
    ----------
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``).
    in_lanes, out_lanes : int
        Elements per input and per output transfer.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, in_lanes)))
    o : Out(stream.Signature(ArrayLayout(shape, out_lanes)))

    Notes
    -----
    The converter does not know about images: an output transfer is made once ``out_lanes``
    elements are in, whichever transfers they came from. Image boundaries therefore stay on
    transfer boundaries on both sides exactly when every image holds a multiple of
    ``lcm(in_lanes, out_lanes)`` elements; otherwise the last elements of one image share a
    transfer with the first ones of the next.

    ``in_lanes == out_lanes`` is a plain wire-through (no register, no latency). Otherwise
    ``o`` is registered and, with ``i`` always valid and ``o`` always ready, the slower side
    moves every cycle: a ``1 -> n`` deserializer accepts every cycle, an ``n -> 1``
    serializer emits every cycle, a ``1 -> 1`` path has no bubble, and a general pair runs at
    ``min(in_lanes, out_lanes)`` elements per cycle. ``i.ready`` depends on ``o.ready``
    (combinationally), which is what lets a full buffer take a new input in the cycle its
    oldest elements leave.
    """

    def __init__(self, *, shape, in_lanes, out_lanes):
        self._shape = _integer_shape(shape)
        self._in_lanes = check_int("in_lanes", in_lanes)
        self._out_lanes = check_int("out_lanes", out_lanes)
        super().__init__({
            "i": In(lanes_signature(self._shape, in_lanes)),
            "o": Out(lanes_signature(self._shape, out_lanes)),
        })

    @property
    def shape(self):
        """Shape of one element."""
        return self._shape

    @property
    def in_lanes(self):
        """Elements per input transfer."""
        return self._in_lanes

    @property
    def out_lanes(self):
        """Elements per output transfer."""
        return self._out_lanes

    @property
    def granule(self):
        """Elements per image must be a multiple of this (``lcm(in_lanes, out_lanes)``)."""
        return math.lcm(self._in_lanes, self._out_lanes)

    @property
    def buffer_elements(self):
        """Elements the converter stores (0 for a wire-through)."""
        if self._in_lanes == self._out_lanes:
            return 0
        return self._in_lanes + self._out_lanes - math.gcd(self._in_lanes, self._out_lanes)

    def elaborate(self, platform):
        m = Module()
        n_in, n_out, w = self._in_lanes, self._out_lanes, self._shape.width
        if n_in == n_out:
            m.d.comb += [
                Value.cast(self.o.payload).eq(Value.cast(self.i.payload)),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
            return m

        step = math.gcd(n_in, n_out)
        size = self.buffer_elements
        buf = Signal(size * w)
        # Number of valid elements in buf (always a multiple of step).
        level = Signal(range(size + 1))
        fire_o = Signal()
        fire_i = Signal()
        m.d.comb += [
            self.o.valid.eq(level >= n_out),
            Value.cast(self.o.payload).eq(buf[:n_out * w]),
            fire_o.eq(self.o.valid & self.o.ready),
            # Room for a whole input word after this cycle's output has left. Both cases are
            # compared with the registered level, so ``o.ready`` only selects one: no
            # arithmetic lies between ``o.ready`` and ``i.ready`` (LeNet-5's critical path ran
            # from one converter's level through two carry chains into the upstream FIFO).
            self.i.ready.eq(Mux(fire_o, level <= size - n_in + n_out, level <= size - n_in)),
            fire_i.eq(self.i.valid & self.i.ready),
        ]
        with m.If(fire_o):
            m.d.sync += buf.eq(buf >> (n_out * w))
        # The level before this cycle's input arrives: where the input word goes.
        for pos in range(0, size - n_in + 1, step):
            at = Mux(fire_o, level == pos + n_out, level == pos)
            # Later statements win over the shift above for the bits they assign.
            with m.If(fire_i & at):
                m.d.sync += buf[pos * w:(pos + n_in) * w].eq(Value.cast(self.i.payload))
        m.d.sync += level.eq(level - Mux(fire_o, n_out, 0) + Mux(fire_i, n_in, 0))
        return m
