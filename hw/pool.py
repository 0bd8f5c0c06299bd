"""Streaming max or average pooling (windows with stride = window, or global) on an HWC stream."""

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.qmodel import value_range

from .params import check_int
from .streams import may_load

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


def _deciding_sums(count, lo, hi):
    """The sums in ``[lo, hi]`` whose exact division decides every other's: the smallest and
    the largest of each residue class modulo ``count`` (see :func:`division_constants`)."""
    if hi - lo + 1 <= 2 * count:
        return np.arange(lo, hi + 1, dtype=object)
    residues = np.arange(count, dtype=object)
    return np.concatenate([lo + (residues - lo) % count, hi - (hi - residues) % count])


def division_constants(count, lo, hi):
    """Constants that divide every integer sum in ``[lo, hi]`` by ``count``, rounding half up.

    Finds the smallest ``shift`` (then multiplier) for which
    ``(total * multiplier + offset) >> shift == floor((2 * total + count) / (2 * count))``
    for *every* ``total`` in ``[lo, hi]`` (``>>`` is the arithmetic shift, a floor), and checks
    it before returning.

    Why ``2 * count`` sums decide the whole range: write ``total = k * count + r`` with
    ``0 <= r < count``. The rounded quotient is ``k + c`` with ``c = [2 * r >= count]``, and
    the equality holds iff ``0 <= total * multiplier + offset - (k + c) * 2**shift <
    2**shift``, whose middle term is ``k * (count * multiplier - 2**shift) + r * multiplier +
    offset - c * 2**shift``: linear in ``k`` for a fixed ``r``. A linear function stays
    between two bounds over an interval of ``k`` iff it does at both ends, so the smallest
    and largest sum of each residue class in ``[lo, hi]`` decide every sum between them
    (``tests/test_hw_pool.py`` also checks every sum of every 1..8-bit range).

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
    # Python integers (object arrays): no product can wrap, whatever the range.
    totals = _deciding_sums(count, lo, hi)
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
                                      f"{shift} fail the check")
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
        constant and a shift (:func:`division_constants`, proven for every reachable sum).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, lanes)))
        Pixels in raster order, each ``channels // lanes`` transfers (channel groups in order).
    o : Out(stream.Signature(ArrayLayout(shape, lanes)))
        The pooled image, same element order.
    height, width, channels, lanes, shape, op
        The parameters, checked (``shape`` a ``Shape``).
    window : (int, int)
        ``(rows, cols)`` of a window, also the stride.
    sum_shape : Shape
        Shape of one partial result in the row buffer (the element's for max pooling).
    division : (int, int, int) or None
        ``(multiplier, offset, shift)`` of the average (``None`` for max pooling), and
        ``division_terms`` the shifted copies of the sum its multiplication adds (0 for max).
    latency : int
        Cycles from the transfer completing a window to its output being valid.
    out_height, out_width : int
        ``height // rows`` and ``width // cols``.
    buffer_depth, buffer_width : int
        Row buffer entries (one per output column and channel group) and bits per entry.
    input_words_per_image, output_words_per_image : int
        Transfers per image on ``i`` and on ``o``.

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
        self.height = check_int("height", height)
        self.width = check_int("width", width)
        self.channels = check_int("channels", channels)
        if isinstance(size, tuple | list):
            if len(size) != 2:
                raise ValueError(f"size must be an int or (rows, cols), not {size!r}")
            self.window = (check_int("size rows", size[0]), check_int("size cols", size[1]))
        else:
            side = check_int("size", size)
            self.window = (side, side)
        self.lanes = check_int("lanes", lanes)
        try:
            self.shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self.shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, not {op!r}")
        self.op = op
        if channels % lanes:
            raise ValueError(f"lanes ({lanes}) must divide channels ({channels})")
        rows, cols = self.window
        if rows > height or cols > width:
            raise ValueError(f"pool size {rows}x{cols} is larger than the {height}x{width} "
                             f"image: the output would be empty")
        self._derive()
        layout = data.ArrayLayout(self.shape, lanes)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def _derive(self):
        """The figures that follow from the parameters (see the class's attributes)."""
        rows, cols = self.window
        if self.op == "avg":
            lo, hi = value_range(self.shape.width, self.shape.signed)
            count = rows * cols
            self.sum_shape = Shape.cast(range(count * lo, count * hi + 1))
            self.division = division_constants(count, count * lo, count * hi)
        else:
            self.sum_shape, self.division = self.shape, None
        self.division_terms = len(_signed_digits(self.division[0])) if self.division else 0
        self.latency = 2 if self.op == "max" else 3
        self.out_height, self.out_width = self.height // rows, self.width // cols
        self.buffer_depth = self.out_width * self.channels // self.lanes
        self.buffer_width = self.lanes * self.sum_shape.width
        self.input_words_per_image = self.height * self.width * self.channels // self.lanes
        self.output_words_per_image = (self.out_height * self.out_width * self.channels
                                       // self.lanes)

    def _divide(self, total):
        """The rounded quotient of ``total`` (a lane's window sum): adders, no multiplier."""
        multiplier, offset, shift = self.division
        # Shifted copies in signed-digit form instead of `*`: Yosys would map a product to
        # one of the DSP blocks the MAC arrays need, where a few adders do.
        terms = [(total << k) if digit > 0 else -(total << k)
                 for k, digit in _signed_digits(multiplier)]
        value = terms[0]
        for term in terms[1:]:
            value = value + term
        return ((value + offset) >> shift)[:self.shape.width]

    def _lane(self, value, k, width):
        """Lane ``k`` of a flat vector of ``width``-bit lanes, signed like the elements."""
        bits = value[k * width:(k + 1) * width]
        return bits.as_signed() if self.shape.signed else bits

    def elaborate(self, platform):
        m = Module()
        # Plain bit vectors inside, not views of lanes: see hw.toolchain.SCRIPT_AFTER_READ.
        m.submodules.row = row = Memory(shape=unsigned(self.buffer_width),
                                        depth=self.buffer_depth, init=[])
        wr = row.write_port()
        rd = row.read_port(transparent_for=(wr,))
        at = self._position()
        b = self._stage_b(m, rd)
        emit_free = self._output_side(m, b)

        # Only a transfer completing a window needs the output side; others never wait.
        m.d.comb += b.go.eq(~b.emit | emit_free)
        m.d.comb += self.i.ready.eq(~b.valid | b.go)
        fire = Signal()
        m.d.comb += fire.eq(self.i.valid & self.i.ready)
        m.d.comb += [
            rd.addr.eq(at.column + at.g),
            # A stalled stage B keeps its read data: no new read until it moves.
            rd.en.eq(fire),
            wr.addr.eq(b.addr),
            wr.data.eq(b.combined),
            wr.en.eq(b.valid & b.go & ~b.last & ~b.drop),
        ]
        rows, cols = self.window
        with m.If(self.i.ready):
            m.d.sync += [
                b.valid.eq(self.i.valid),
                b.word.eq(Value.cast(self.i.payload)),
                b.addr.eq(rd.addr),
                b.first.eq((at.kx == 0) & (at.ky == 0)),
                b.last.eq((at.kx == cols - 1) & (at.ky == rows - 1)),
                b.drop.eq((at.x >= self.out_width * cols) | (at.y >= self.out_height * rows)),
            ]
        with m.If(fire):
            self._advance(m, at)
        return m

    def _position(self):
        """The input position: channel group, column and row, their offsets inside the
        window, and the first row-buffer entry of the current output column."""
        rows, cols = self.window
        return SimpleNamespace(
            g=Signal(range(self.channels // self.lanes), name="g"),
            x=Signal(range(self.width), name="x"), y=Signal(range(self.height), name="y"),
            kx=Signal(range(cols), name="kx"), ky=Signal(range(rows), name="ky"),
            column=Signal(range(self.buffer_depth), name="column"))

    def _stage_b(self, m, rd):
        """Stage B: the previous transfer, combined with its partial result from the
        memory (``combined``: the new partial result, or the window's when ``last``)."""
        w, sw = self.shape.width, self.sum_shape.width
        b = SimpleNamespace(
            valid=Signal(), first=Signal(), last=Signal(), drop=Signal(),
            word=Signal(self.lanes * w, name="b_word"), addr=Signal.like(rd.addr, name="b_addr"),
            emit=Signal(name="b_emit"), go=Signal(name="b_go"),
            combined=Signal(self.lanes * sw, name="combined"))
        m.d.comb += b.emit.eq(b.valid & b.last & ~b.drop)
        for k in range(self.lanes):
            a, partial = self._lane(b.word, k, w), self._lane(rd.data, k, sw)
            if self.op == "max":
                result = Mux(b.first | (a > partial), a, partial)
            else:
                result = Mux(b.first, a, a + partial)
            m.d.comb += self._lane(b.combined, k, sw).eq(result)
        return b

    def _output_side(self, m, b):
        """``o`` for max pooling; for the average a sum register (stage C) and the quotient
        in ``o``. Returns ``emit_free``: a completed window can leave stage B this cycle."""
        o_free = may_load(self.o.valid, self.o.ready)
        if self.op == "max":
            with m.If(b.emit & b.go):
                m.d.sync += [self.o.valid.eq(1), Value.cast(self.o.payload).eq(b.combined)]
            with m.Elif(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            return o_free
        sw = self.sum_shape.width
        c_valid, c_sum = Signal(), Signal(self.lanes * sw)
        with m.If(c_valid & o_free):
            m.d.sync += self.o.valid.eq(1)
            m.d.sync += [self.o.payload[k].eq(self._divide(self._lane(c_sum, k, sw)))
                         for k in range(self.lanes)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(b.emit & b.go):
            m.d.sync += [c_valid.eq(1), c_sum.eq(b.combined)]
        with m.Elif(o_free):
            m.d.sync += c_valid.eq(0)
        return ~c_valid | o_free

    def _advance(self, m, at):
        """Move the input position on by one transfer (raster order, groups innermost)."""
        rows, cols = self.window
        groups = self.channels // self.lanes
        with m.If(at.g == groups - 1):
            m.d.sync += at.g.eq(0)
            with m.If(at.x == self.width - 1):
                m.d.sync += [at.x.eq(0), at.kx.eq(0), at.column.eq(0)]
                with m.If(at.y == self.height - 1):
                    m.d.sync += [at.y.eq(0), at.ky.eq(0)]
                with m.Else():
                    m.d.sync += [at.y.eq(at.y + 1), at.ky.eq(Mux(at.ky == rows - 1, 0, at.ky + 1))]
            with m.Else():
                m.d.sync += at.x.eq(at.x + 1)
                with m.If(at.kx == cols - 1):
                    m.d.sync += at.kx.eq(0)
                    # Past the last full window the column stops moving (dropped anyway).
                    with m.If(at.column != (self.out_width - 1) * groups):
                        m.d.sync += at.column.eq(at.column + groups)
                with m.Else():
                    m.d.sync += at.kx.eq(at.kx + 1)
        with m.Else():
            m.d.sync += at.g.eq(at.g + 1)
