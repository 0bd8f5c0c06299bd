"""Streaming max or average pooling (windows with stride = window, or global) on an HWC stream."""

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.qmodel import value_range

from .params import check_int

__all__ = ["OPS", "Pool", "division_constants"]

#: The reductions :class:`Pool` computes.
OPS = ("max", "avg")


def _signed_digits(value):
    """``value`` (> 0) as ``[(shift, +1 or -1), ...]`` in non-adjacent form (fewest adders)."""
    digits, shift = [], 0
    while value:
        if value & 1:
            digit = 2 - (value & 3)  # +1 if value % 4 == 1, -1 if value % 4 == 3
            digits.append((shift, digit))
            value -= digit
        value >>= 1
        shift += 1
    return digits


def division_constants(count, lo, hi):
    """Constants that divide every integer sum in ``[lo, hi]`` by ``count``, rounding half up.

    Finds the smallest ``shift`` (then multiplier) for which
    ``(total * multiplier + offset) >> shift == floor((2 * total + count) / (2 * count))``
    for *every* ``total`` in ``[lo, hi]`` (``>>`` is the arithmetic shift, a floor), and checks
    the whole range before returning.

    Parameters
    ----------
    count : int
        The divisor (values per window), at least 1.
    lo, hi : int
        The range of the sums, ``lo <= hi``.

    Returns
    -------
    (multiplier, offset, shift) : tuple of int

    Raises
    ------
    ArithmeticError
        If no shift below 64 works (cannot happen for ranges a pool can reach).
    """
    totals = np.arange(lo, hi + 1, dtype=np.int64)
    quotients = (2 * totals + count) // (2 * count)
    for shift in range(64):
        base = (1 << shift) // count
        for multiplier in dict.fromkeys((base, base + 1)):
            if multiplier < 1:
                continue
            # floor((t * M + A) / 2**S) == q  <=>  q * 2**S - t * M <= A < (q + 1) * 2**S - t * M
            products = totals * multiplier
            low = int(np.max(quotients * (1 << shift) - products))
            high = int(np.min((quotients + 1) * (1 << shift) - products)) - 1
            if low > high:
                continue
            if not np.array_equal((products + low) >> shift, quotients):
                raise ArithmeticError(f"division by {count}: constants {multiplier}, {low}, "
                                      f"{shift} fail the exhaustive check")
            return multiplier, low, shift
    raise ArithmeticError(f"no constants divide [{lo}, {hi}] by {count} with a shift below 64")


class Pool(wiring.Component):
    """Max or average pooling with stride = window, like :func:`sw.golden.pool2d`.

    A trailing row or column that does not fill a window is dropped (read and discarded). A
    window of the whole image is global pooling: one output pixel (``channels`` values).

    Parameters
    ----------
    height, width, channels : int
        Input image shape.
    size : int or (int, int)
        Window rows and columns (an int for a square window), also the stride; at most
        ``height`` and ``width``.
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``), input and output.
    lanes : int
        Channels per transfer; must divide ``channels``.
    op : {"max", "avg"}
        The reduction. The average over ``n = rows * cols`` values is
        ``floor((2 * sum + n) / (2 * n))`` (round half up), as a multiplication by a
        constant and a shift (:func:`division_constants`, checked over every reachable sum).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, lanes)))
        Pixels in raster order, each ``channels // lanes`` transfers (channel groups in order).
    o : Out(stream.Signature(ArrayLayout(shape, lanes)))
        The pooled image, same element order.

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If a parameter is out of range, ``lanes`` does not divide ``channels`` or the window
        is larger than the image.

    Notes
    -----
    A row buffer (``Memory``, synchronous read, transparent to its own write so that two
    consecutive transfers of the same window need no stall) holds the partial maxima or sums
    of one row of output pixels: ``out_width * channels // lanes`` entries. Each transfer is
    read, combined with its partial result in the next cycle and written back, or passed on
    when it completes a window. Max pooling registers that result in ``o``; average pooling
    registers the sum first and the quotient in ``o`` one cycle later, so the constant
    multiplication has a register stage of its own. The input is accepted every cycle while
    ``o`` is ready; an output appears :attr:`latency` cycles after the transfer that
    completes its window.
    """

    def __init__(self, *, height, width, channels, size, shape, lanes, op="max"):
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        self._channels = check_int("channels", channels)
        if isinstance(size, tuple | list):
            if len(size) != 2:
                raise ValueError(f"size must be an int or (rows, cols), not {size!r}")
            self._window = (check_int("size rows", size[0]), check_int("size cols", size[1]))
        else:
            side = check_int("size", size)
            self._window = (side, side)
        self._lanes = check_int("lanes", lanes)
        try:
            self._shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self._shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, not {op!r}")
        self._op = op
        if channels % lanes:
            raise ValueError(f"lanes ({lanes}) must divide channels ({channels})")
        rows, cols = self._window
        if rows > height or cols > width:
            raise ValueError(f"pool size {rows}x{cols} is larger than the {height}x{width} "
                             f"image: the output would be empty")
        if op == "avg":
            lo, hi = value_range(self._shape.width, self._shape.signed)
            count = rows * cols
            self._sum_shape = Shape.cast(range(count * lo, count * hi + 1))
            self._division = division_constants(count, count * lo, count * hi)
        else:
            self._sum_shape, self._division = self._shape, None
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
    def window(self):
        """``(rows, cols)`` of a window, also the stride."""
        return self._window

    @property
    def shape(self):
        """Shape of one element."""
        return self._shape

    @property
    def lanes(self):
        """Channels per transfer."""
        return self._lanes

    @property
    def op(self):
        """``"max"`` or ``"avg"``."""
        return self._op

    @property
    def sum_shape(self):
        """Shape of one partial result in the row buffer (the element's for max pooling)."""
        return self._sum_shape

    @property
    def division(self):
        """``(multiplier, offset, shift)`` of the average (``None`` for max pooling)."""
        return self._division

    @property
    def division_terms(self):
        """Shifted copies of the sum that the constant multiplication adds (0 for max)."""
        return len(_signed_digits(self._division[0])) if self._division else 0

    @property
    def latency(self):
        """Cycles from the transfer completing a window to its output being valid."""
        return 2 if self._op == "max" else 3

    @property
    def out_height(self):
        """``height // rows``."""
        return self._height // self._window[0]

    @property
    def out_width(self):
        """``width // cols``."""
        return self._width // self._window[1]

    @property
    def buffer_depth(self):
        """Row buffer entries: one per output column and channel group."""
        return self.out_width * self._channels // self._lanes

    @property
    def buffer_width(self):
        """Row buffer bits per entry."""
        return self._lanes * self._sum_shape.width

    @property
    def input_words_per_image(self):
        """Input transfers per image."""
        return self._height * self._width * self._channels // self._lanes

    @property
    def output_words_per_image(self):
        """Output transfers per image."""
        return self.out_height * self.out_width * self._channels // self._lanes

    def _divide(self, total):
        """The rounded quotient of ``total`` (a lane's window sum): adders, no multiplier."""
        multiplier, offset, shift = self._division
        # Shifted copies in signed-digit form instead of `*`: Yosys would map a product to
        # one of the DSP blocks the MAC arrays need, where a few adders do.
        terms = [(total << k) if digit > 0 else -(total << k)
                 for k, digit in _signed_digits(multiplier)]
        value = terms[0]
        for term in terms[1:]:
            value = value + term
        return ((value + offset) >> shift)[:self._shape.width]

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._window
        lanes, groups = self._lanes, self._channels // self._lanes
        w, sw = self._shape.width, self._sum_shape.width
        # Plain bit vectors inside: Yosys' ABC flow (issue YosysHQ/yosys#4349) can trip over
        # the `x` / `x[0]` wire pairs that views of one-lane arrays add to the netlist.
        m.submodules.row = row = Memory(shape=unsigned(self.buffer_width),
                                        depth=self.buffer_depth, init=[])
        wr = row.write_port()
        rd = row.read_port(transparent_for=(wr,))

        # Input position: channel group, column and row, their offsets inside the window,
        # and the first row-buffer entry of the current output column.
        g = Signal(range(groups))
        x = Signal(range(self._width))
        y = Signal(range(self._height))
        kx = Signal(range(cols))
        ky = Signal(range(rows))
        column = Signal(range(self.buffer_depth))

        # Stage B: the previous transfer, combined with its partial result from the memory.
        b_valid, b_first, b_last, b_drop = Signal(), Signal(), Signal(), Signal()
        b_word = Signal(lanes * w)
        b_addr = Signal.like(rd.addr)
        b_emit = Signal()
        b_go = Signal()
        combined = Signal(lanes * sw)
        m.d.comb += b_emit.eq(b_valid & b_last & ~b_drop)

        def lane(value, k, width):
            bits = value[k * width:(k + 1) * width]
            return bits.as_signed() if self._shape.signed else bits

        for k in range(lanes):
            a, b = lane(b_word, k, w), lane(rd.data, k, sw)
            if self._op == "max":
                result = Mux(b_first | (a > b), a, b)
            else:
                result = Mux(b_first, a, a + b)
            m.d.comb += lane(combined, k, sw).eq(result)

        # The output side: `o` for max pooling; for the average a sum register (stage C) and
        # the quotient in `o`. `emit_free`: a completed window can leave stage B this cycle.
        o_free = ~self.o.valid | self.o.ready
        if self._op == "max":
            emit_free = o_free
            with m.If(b_emit & b_go):
                m.d.sync += [self.o.valid.eq(1), Value.cast(self.o.payload).eq(combined)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
        else:
            c_valid, c_sum = Signal(), Signal(lanes * sw)
            emit_free = ~c_valid | o_free
            with m.If(c_valid & o_free):
                m.d.sync += self.o.valid.eq(1)
                m.d.sync += [self.o.payload[k].eq(self._divide(lane(c_sum, k, sw)))
                             for k in range(lanes)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            with m.If(b_emit & b_go):
                m.d.sync += [c_valid.eq(1), c_sum.eq(combined)]
            with m.Elif(o_free):
                m.d.sync += c_valid.eq(0)

        # Only a transfer completing a window needs the output side; others never wait.
        m.d.comb += b_go.eq(~b_emit | emit_free)
        m.d.comb += self.i.ready.eq(~b_valid | b_go)
        fire = Signal()
        m.d.comb += fire.eq(self.i.valid & self.i.ready)

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
                b_last.eq((kx == cols - 1) & (ky == rows - 1)),
                b_drop.eq((x >= self.out_width * cols) | (y >= self.out_height * rows)),
            ]

        with m.If(fire):
            with m.If(g == groups - 1):
                m.d.sync += g.eq(0)
                with m.If(x == self._width - 1):
                    m.d.sync += [x.eq(0), kx.eq(0), column.eq(0)]
                    with m.If(y == self._height - 1):
                        m.d.sync += [y.eq(0), ky.eq(0)]
                    with m.Else():
                        m.d.sync += [y.eq(y + 1), ky.eq(Mux(ky == rows - 1, 0, ky + 1))]
                with m.Else():
                    m.d.sync += x.eq(x + 1)
                    with m.If(kx == cols - 1):
                        m.d.sync += kx.eq(0)
                        # Past the last full window the column stops moving (dropped anyway).
                        with m.If(column != (self.out_width - 1) * groups):
                            m.d.sync += column.eq(column + groups)
                    with m.Else():
                        m.d.sync += kx.eq(kx + 1)
            with m.Else():
                m.d.sync += g.eq(g + 1)
        return m
