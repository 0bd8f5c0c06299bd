"""Streaming ``size x size`` max pooling with stride ``size`` on an HWC pixel stream."""

from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import check_int

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """``size x size`` max pooling, stride ``size``, like :func:`sw.golden.maxpool2d`.

    A trailing row or column that does not fill a window is dropped (read and discarded).

    Parameters
    ----------
    height, width, channels : int
        Input image shape.
    size : int
        Pool window side and stride; at most ``height`` and ``width``.
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``).
    lanes : int
        Channels per transfer; must divide ``channels``.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, lanes)))
        Pixels in raster order, each ``channels // lanes`` transfers (channel groups in order).
    o : Out(stream.Signature(ArrayLayout(shape, lanes)))
        The pooled image, same element order.

    Notes
    -----
    A row buffer (``Memory``, synchronous read, transparent to its own write so that two
    consecutive transfers of the same window need no stall) holds the partial maxima of one
    row of output pixels: ``out_width * channels // lanes`` entries. Each transfer is read,
    combined with the partial maximum in the next cycle and written back, or sent to ``o``
    when it completes a window. The input is accepted every cycle while ``o`` is ready;
    ``o`` is registered and an output appears two cycles after the transfer that completes
    its window.
    """

    def __init__(self, *, height, width, channels, size, shape, lanes):
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        self._channels = check_int("channels", channels)
        self._size = check_int("size", size)
        self._lanes = check_int("lanes", lanes)
        try:
            self._shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self._shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if channels % lanes:
            raise ValueError(f"lanes ({lanes}) must divide channels ({channels})")
        if size > height or size > width:
            raise ValueError(f"pool size {size} is larger than the {height}x{width} image: "
                             f"the output would be empty")
        layout = data.ArrayLayout(self._shape, lanes)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    @property
    def height(self):
        """Input rows."""
        return self._height

    @property
    def width(self):
        """Input columns."""
        return self._width

    @property
    def channels(self):
        """Channels."""
        return self._channels

    @property
    def size(self):
        """Pool window side and stride."""
        return self._size

    @property
    def shape(self):
        """Shape of one element."""
        return self._shape

    @property
    def lanes(self):
        """Channels per transfer."""
        return self._lanes

    @property
    def out_height(self):
        """``height // size``."""
        return self._height // self._size

    @property
    def out_width(self):
        """``width // size``."""
        return self._width // self._size

    @property
    def input_words_per_image(self):
        """Input transfers per image."""
        return self._height * self._width * self._channels // self._lanes

    @property
    def output_words_per_image(self):
        """Output transfers per image."""
        return self.out_height * self.out_width * self._channels // self._lanes

    def elaborate(self, platform):
        m = Module()
        p, lanes = self._size, self._lanes
        groups = self._channels // lanes
        w = self._shape.width
        # Plain bit vectors inside: Yosys' ABC flow (issue YosysHQ/yosys#4349) can trip over
        # the `x` / `x[0]` wire pairs that views of one-lane arrays add to the netlist.
        m.submodules.row = row = Memory(shape=unsigned(lanes * w), depth=self.out_width * groups,
                                        init=[])
        wr = row.write_port()
        rd = row.read_port(transparent_for=(wr,))

        # Input position: channel group, column and row, their offsets inside the window,
        # and the first row-buffer entry of the current output column.
        g = Signal(range(groups))
        x = Signal(range(self._width))
        y = Signal(range(self._height))
        kx = Signal(range(p))
        ky = Signal(range(p))
        column = Signal(range(self.out_width * groups))

        # Stage B: the previous transfer, combined with its partial maximum from the memory.
        b_valid, b_first, b_last, b_drop = Signal(), Signal(), Signal(), Signal()
        b_word = Signal(lanes * w)
        b_addr = Signal.like(rd.addr)
        b_emit = Signal()
        b_go = Signal()
        combined = Signal(lanes * w)
        m.d.comb += b_emit.eq(b_valid & b_last & ~b_drop)
        # Only a transfer completing a window needs the output register; others never wait.
        m.d.comb += b_go.eq(~b_emit | ~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(~b_valid | b_go)
        fire = Signal()
        m.d.comb += fire.eq(self.i.valid & self.i.ready)

        def lane(value, k):
            bits = value[k * w:(k + 1) * w]
            return bits.as_signed() if self._shape.signed else bits

        for k in range(lanes):
            a, b = lane(b_word, k), lane(rd.data, k)
            m.d.comb += lane(combined, k).eq(Mux(b_first | (a > b), a, b))

        m.d.comb += [
            rd.addr.eq(column + g),
            # A stalled stage B keeps its read data: no new read until it moves.
            rd.en.eq(fire),
            wr.addr.eq(b_addr),
            wr.data.eq(combined),
            wr.en.eq(b_valid & b_go & ~b_last & ~b_drop),
        ]

        with m.If(self.i.ready):
            m.d.sync += [
                b_valid.eq(self.i.valid),
                b_word.eq(Value.cast(self.i.payload)),
                b_addr.eq(rd.addr),
                b_first.eq((kx == 0) & (ky == 0)),
                b_last.eq((kx == p - 1) & (ky == p - 1)),
                b_drop.eq((x >= self.out_width * p) | (y >= self.out_height * p)),
            ]

        with m.If(b_emit & b_go):
            m.d.sync += [self.o.valid.eq(1), Value.cast(self.o.payload).eq(combined)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(fire):
            with m.If(g == groups - 1):
                m.d.sync += g.eq(0)
                with m.If(x == self._width - 1):
                    m.d.sync += [x.eq(0), kx.eq(0), column.eq(0)]
                    with m.If(y == self._height - 1):
                        m.d.sync += [y.eq(0), ky.eq(0)]
                    with m.Else():
                        m.d.sync += [y.eq(y + 1), ky.eq(Mux(ky == p - 1, 0, ky + 1))]
                with m.Else():
                    m.d.sync += x.eq(x + 1)
                    with m.If(kx == p - 1):
                        m.d.sync += kx.eq(0)
                        # Past the last full window the column stops moving (dropped anyway).
                        with m.If(column != (self.out_width - 1) * groups):
                            m.d.sync += column.eq(column + groups)
                    with m.Else():
                        m.d.sync += kx.eq(kx + 1)
            with m.Else():
                m.d.sync += g.eq(g + 1)
        return m
