"""Sliding-window generator (FINN's ``slidingwindow``): convolution windows from a pixel stream."""

from math import gcd

from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.golden import same_padding
from sw.qmodel import conv_output_size

from .params import check_int

__all__ = ["WindowGenerator"]

PADDINGS = ("valid", "same")

#: Images the schedule model runs to reach its steady state (it does after one or two).
_MODEL_IMAGES = 4


class WindowGenerator(wiring.Component):
    """Turns a raster pixel stream into the ``kernel x kernel`` windows of a convolution.

    The windows are exactly the rows of :func:`sw.golden.windows` ``(x, kernel, stride,
    padding)``, flattened in ``(ky, kx, c)`` order and grouped ``simd`` elements per transfer.

    Parameters
    ----------
    height, width, channels : int
        Input image shape (HWC).
    kernel : int
        Window side ``K``.
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``).
    simd : int
        Elements per output transfer; must divide ``kernel * channels`` (one kernel row of a
        window). A divisor of ``channels`` splits each pixel into channel groups; a multiple
        of it, such as ``kernel * channels``, takes several pixels of a kernel row at once
        (``simd = kernel`` lets a 1-channel first layer run ``kernel`` times faster).
    stride : int
        Step between windows in both directions (any positive stride).
    padding : {"valid", "same"}
        Keras padding. ``"same"`` zeros are made here (they never travel on ``i``); their
        split is Keras' (the smaller half on the top/left, :func:`sw.golden.same_padding`).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, in_simd)))
        Pixels of one image in raster order (row, then column), each pixel :attr:`groups`
        transfers of :attr:`in_simd` ``= gcd(simd, channels)`` elements (channel groups in
        order); images follow one another.
    o : Out(stream.Signature(ArrayLayout(shape, simd)))
        For each output position in raster order, its window in ``(ky, kx, c)`` order:
        ``kernel**2 * channels // simd`` transfers, each the next ``simd`` elements. A transfer
        never spans two kernel rows; with ``simd > channels`` it holds elements of several
        consecutive pixels of one (whole pixels where ``channels`` divides ``simd``).

    Notes
    -----
    **Line buffer.** :attr:`banks` ``= simd // in_simd`` memories (``Memory`` with a
    synchronous read port each, so they map to block RAM) hold the last :attr:`buffer_rows`
    input rows as a ring. Input word ``u`` of a row lives in bank ``u % banks``: the
    ``banks`` consecutive input words of an output transfer are in distinct banks, so they
    are read in one cycle whatever the window's column, and a rotation puts them in order.
    The input is accepted as long as the row it writes is no longer needed (it runs up to
    ``buffer_rows - 1`` rows ahead of the top row of the current window row, also into the
    next image); a window starts as soon as the last input word it needs has been written.

    :attr:`buffer_rows` is the fewest rows with which the slower side never waits (``i``
    always valid, ``o`` always ready): enough for the input to write the next image's first
    rows while the current image's last window row is produced. Where the output is the
    slower side that is ``2 * kernel`` rows for ``valid`` padding and stride 1 (10 for
    LeNet's 28x28 5x5 layer), ``kernel + 1`` for ``same`` padding and stride 1 (fewer on
    images smaller than the kernel). It is found at construction with a cycle-exact model
    of the control (checked against simulation by the tests).

    **Timing.** A read is issued in every cycle that the next window word is available and
    the output pipeline has room. With one bank, ``o`` is the memory's read register (plus a
    valid flag and a padding flag that zeroes it); with several, the rotated word is
    registered once more. The first word of a window leaves :attr:`latency` (2, or 3 with
    several banks) cycles after the input transfer of the last word it needs, unless ``o`` is
    still busy: with ``i`` valid from cycle 0, the first output transfer happens in cycle
    ``first_window_words + latency - 1`` (counting from 0).

    With ``i`` always valid and ``o`` always ready, the first words of consecutive images
    leave exactly ``max(output_words_per_image, input_words_per_image) =
    output_words_per_image + image_gap`` cycles apart in steady state (from the first image
    on where :attr:`full_rate` holds, else from the second): no gap between images whenever
    the input keeps up. Where in addition :attr:`full_rate` holds (``out_width * kernel**2
    * channels // simd >= stride * width * groups``: a window row takes the output at least
    as long as the input's ``stride`` rows), each image's ``output_words_per_image`` words
    leave in as many consecutive cycles, with no bubble at word, window or row boundaries;
    the ``image_gap`` idle cycles, if any, come before each image's first window.
    Otherwise the output also waits for the input within images.
    """

    def __init__(self, *, height, width, channels, kernel, shape, simd, stride=1,
                 padding="valid"):
        self._height = check_int("height", height)
        self._width = check_int("width", width)
        self._channels = check_int("channels", channels)
        self._kernel = check_int("kernel", kernel)
        self._simd = check_int("simd", simd)
        self._stride = check_int("stride", stride)
        try:
            self._shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self._shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if (kernel * channels) % simd:
            raise ValueError(f"simd ({simd}) must divide kernel * channels "
                             f"({kernel * channels})")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
        if padding == "valid" and (kernel > height or kernel > width):
            raise ValueError(f"kernel {kernel} is larger than the {height}x{width} image: "
                             f"'valid' padding leaves no window")
        self._padding = padding
        self._pad_top = same_padding(height, kernel, stride)[0] if padding == "same" else 0
        self._pad_left = same_padding(width, kernel, stride)[0] if padding == "same" else 0
        self._in_simd = gcd(simd, channels)
        self._buffer_rows, self._period = self._size_buffer()
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(self._shape, self._in_simd))),
            "o": Out(stream.Signature(data.ArrayLayout(self._shape, simd))),
        })

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
        """Input channels."""
        return self._channels

    @property
    def kernel(self):
        """Window side."""
        return self._kernel

    @property
    def shape(self):
        """Shape of one element."""
        return self._shape

    @property
    def simd(self):
        """Elements per output transfer."""
        return self._simd

    @property
    def in_simd(self):
        """Elements per input transfer: ``gcd(simd, channels)``."""
        return self._in_simd

    @property
    def stride(self):
        """Step between windows."""
        return self._stride

    @property
    def padding(self):
        """``"valid"`` or ``"same"``."""
        return self._padding

    @property
    def pad_top(self):
        """Zero rows above the image (``"same"``: Keras' smaller half; else 0)."""
        return self._pad_top

    @property
    def pad_left(self):
        """Zero columns left of the image."""
        return self._pad_left

    @property
    def out_height(self):
        """Output rows (Keras' rule, :func:`sw.qmodel.conv_output_size`)."""
        return conv_output_size(self._height, self._kernel, self._stride, self._padding)

    @property
    def out_width(self):
        """Output columns."""
        return conv_output_size(self._width, self._kernel, self._stride, self._padding)

    @property
    def groups(self):
        """Input transfers per pixel (``channels // in_simd``)."""
        return self._channels // self._in_simd

    @property
    def banks(self):
        """Line-buffer memories: input words per output transfer (``simd // in_simd``)."""
        return self._simd // self._in_simd

    @property
    def input_words_per_image(self):
        """Input transfers per image: ``height * width * channels // in_simd``."""
        return self._height * self._width * self.groups

    @property
    def output_words_per_image(self):
        """Output transfers per image: ``out_height * out_width * kernel**2 * channels // simd``."""
        return self.out_height * self.out_width * self._window_words

    @property
    def _window_words(self):
        return self._kernel ** 2 * self._channels // self._simd

    @property
    def buffer_rows(self):
        """Rows the line buffer holds (see the class notes)."""
        return self._buffer_rows

    @property
    def buffer_depth(self):
        """Words (of ``in_simd`` elements) in each bank: ``buffer_rows * ceil(width * groups /
        banks)``."""
        return self._buffer_rows * -(-self._width * self.groups // self.banks)

    @property
    def latency(self):
        """Cycles from the input transfer completing a window to its first output word."""
        return 2 if self.banks == 1 else 3

    @property
    def first_window_words(self):
        """Input words of an image that must be in before its first window starts."""
        last_row = min(self._kernel - 1 - self._pad_top, self._height - 1)
        last_col = min(self._kernel - 1 - self._pad_left, self._width - 1)
        return (last_row * self._width + last_col + 1) * self.groups

    @property
    def full_rate(self):
        """Whether the input keeps up with a full-rate output row (``i`` always valid)."""
        return self.out_width * self._window_words >= self._stride * self._width * self.groups

    @property
    def image_gap(self):
        """Idle output cycles per image in steady state (``i`` always valid, ``o`` ready).

        An image takes ``output_words_per_image + image_gap`` cycles. The buffer is sized so
        that the slower side never waits, which makes it ``max(0, input_words_per_image -
        output_words_per_image)``: 0 whenever the input keeps up.
        """
        return self._period - self.output_words_per_image

    def _first_issues(self, rows, images):
        """Cycles in which the first words of the first ``images`` images are read.

        A cycle-exact model of :meth:`elaborate`'s control with a ``rows``-row buffer, ``i``
        valid from cycle 0 and ``o`` always ready. Input row ``x`` (counted over the stream)
        starts once the previous row is in and the ring has room for it: from the cycle after
        the last read of the window row that frees its slot. A window is read, one word per
        cycle, after the previous one, from the cycle after its last input word's transfer.
        """
        h, s, k, gi = self._height, self._stride, self._kernel, self.groups
        ho, wo, pt, pl = self.out_height, self.out_width, self._pad_top, self._pad_left
        row_words = self._width * gi
        row_start = []  # first transfer cycle of each input row
        row_freed = []  # cycle after the last read of each window row (over the stream)
        frees = 0  # the window row from whose start on the next input row may be written

        def top(row):
            image, oy = divmod(row, ho)
            return image * h + oy * s - pt

        def start(x):
            nonlocal frees
            while len(row_start) <= x:
                y = len(row_start)
                cycle = row_start[-1] + row_words if row_start else 0
                while top(frees) <= y - rows:  # row y - rows is still in use before that
                    frees += 1
                if frees:
                    # With at least the rows one window row spans, the window row that frees
                    # the slot never waits for this input row (no deadlock).
                    assert frees <= len(row_freed)
                    cycle = max(cycle, row_freed[frees - 1])
                row_start.append(cycle)
            return row_start[x]

        free = 0  # first cycle in which the next window may be read
        firsts = []
        for image in range(images):
            for oy in range(ho):
                last_row = image * h + min(oy * s - pt + k - 1, h - 1)
                for ox in range(wo):
                    need = min((ox * s - pl + k) * gi, row_words)
                    issue = max(free, start(last_row) + need)
                    if oy == ox == 0:
                        firsts.append(issue)
                    free = issue + self._window_words
                row_freed.append(free)
        return firsts

    def _size_buffer(self):
        """The fewest buffer rows reaching the steady-state rate; with the period they give."""
        h, s, k, pt = self._height, self._stride, self._kernel, self._pad_top
        # Rows a window row spans (top padding included: its rows take ring slots too).
        fewest = max(min(top + k - 1, h - 1) - top + 1
                     for top in range(-pt, self.out_height * s - pt, s))
        best = max(self.output_words_per_image, self.input_words_per_image)
        # The search ends long before this bound (at most about kernel + stride + height).
        for rows in range(fewest, fewest + 2 * (h + k + s) + 1):
            firsts = self._first_issues(rows, _MODEL_IMAGES)
            period = firsts[-1] - firsts[-2]
            if period == best:
                break
        return rows, period

    def elaborate(self, platform):
        m = Module()
        h, w, k, s = self._height, self._width, self._kernel, self._stride
        gi, nb = self.groups, self.banks
        row_words = w * gi  # input words per image row
        bank_row = -(-row_words // nb)  # words per row in each bank
        rows = self.buffer_rows
        depth = self.buffer_depth
        ho, wo = self.out_height, self.out_width
        pt, pl = self._pad_top, self._pad_left
        row_reads = k * gi // nb  # output words per kernel row
        lane_bits = self._in_simd * self._shape.width

        # Plain bit vectors inside: Yosys' ABC flow (issue YosysHQ/yosys#4349) can trip over
        # the `x` / `x[0]` wire pairs that views of one-lane arrays add to the netlist.
        banks = []
        for bank in range(nb):
            memory = Memory(shape=unsigned(lane_bits), depth=depth, init=[])
            m.submodules[f"lines{bank}" if nb > 1 else "lines"] = memory
            banks.append((memory.write_port(), memory.read_port()))

        def ring_add(value, step):
            """``value + step`` modulo the bank depth, ``0 <= step < depth``."""
            total = value + step % depth
            return Mux(total >= depth, total - depth, total)

        # `ahead` is the input's current row minus the top row `p` of the output's current
        # window row, both counted over the whole stream (images back to back). The input
        # writes its row over the one `rows` earlier, which is free once `ahead < rows`;
        # the window row needs rows p .. p + need_rows, the last one written up to `need_col`.
        ahead = Signal(range(-(h + s + k + 1), rows + 2), init=pt)
        need_rows = Signal(range(k), init=min(k - 1, h - 1 + pt))

        # Input side: word position in its row, its bank and its address there (a ring of
        # `rows` slots of `bank_row` words).
        col_in = Signal(range(row_words))
        wbank = Signal(range(nb))
        wrow = Signal(range(depth))
        waddr = Signal(range(depth))
        fire_i = Signal()
        row_done = Signal()
        m.d.comb += [
            self.i.ready.eq(ahead < rows),
            fire_i.eq(self.i.valid & self.i.ready),
            row_done.eq(fire_i & (col_in == row_words - 1)),
        ]
        for bank, (wr, _) in enumerate(banks):
            m.d.comb += [
                wr.addr.eq(waddr),
                wr.data.eq(Value.cast(self.i.payload)),
                wr.en.eq(fire_i & (wbank == bank)),
            ]
        with m.If(fire_i):
            m.d.sync += [
                col_in.eq(Mux(row_done, 0, col_in + 1)),
                wbank.eq(Mux(row_done | (wbank == nb - 1), 0, wbank + 1)),
            ]
            with m.If(row_done):
                m.d.sync += [
                    wrow.eq(ring_add(wrow, bank_row)),
                    waddr.eq(ring_add(wrow, bank_row)),
                ]
            with m.Elif(wbank == nb - 1):
                m.d.sync += waddr.eq(waddr + 1)

        # Output side: the current word's position in its kernel row, the kernel row ...
        j = Signal(range(row_reads))
        ky = Signal(range(k))
        ox = Signal(range(wo))
        oy = Signal(range(ho))
        # ... the window's top row in image coordinates (negative in the top padding) ...
        p = Signal(signed((h + k + s).bit_length() + 1), init=-pt)
        # ... its left edge in input words of a row, as bank word `q_bank` plus `rho` words
        # (the first `rho` banks are one word further right) ...
        q_init = -pl * gi
        span = row_words + (k + s) * gi + nb
        q_words = Signal(signed(span.bit_length() + 1), init=q_init)
        q_bank = Signal(signed(span.bit_length() + 1), init=q_init // nb)
        rho = Signal(range(nb), init=q_init % nb)
        # ... and the current word's row and first input word, and where they sit in the banks.
        y_cur = Signal.like(p, init=-pt)
        col_cur = Signal.like(q_words, init=q_init)
        bcol = Signal.like(q_bank, init=q_init // nb)
        first_row_addr = ((-pt) % rows) * bank_row
        top_addr = Signal(range(depth), init=first_row_addr)
        row_addr = Signal(range(depth), init=first_row_addr)
        # Input words of the window's bottom row that must be in before the window starts.
        need_init = (min(k - 1 - pl, w - 1) + 1) * gi
        need_col = Signal(range(row_words + 1), init=need_init)

        available = Signal()
        issue = Signal()
        addr_lo = Signal(range(depth))
        addr_hi = Signal(range(depth))
        m.d.comb += [
            available.eq((ahead > need_rows) | ((ahead == need_rows) & (col_in >= need_col))),
            addr_lo.eq(row_addr + bcol),
            addr_hi.eq(row_addr + bcol + 1),
        ]
        for bank, (_, rd) in enumerate(banks):
            m.d.comb += [
                rd.addr.eq(Mux(rho > bank, addr_hi, addr_lo) if nb > 1 else addr_lo),
                rd.en.eq(issue),
            ]

        # Which lanes of the word are padding: outside the image's rows or columns.
        lane_pad = Signal(nb)
        row_pad = (y_cur < 0) | (y_cur >= h)
        m.d.comb += lane_pad.eq(Cat(*[
            row_pad | (col_cur + lane < 0) | (col_cur + lane >= row_words) for lane in range(nb)]))

        # The read stage: the banks' read registers (held while stalled: `rd.en` is low), the
        # padding flags and the rotation that goes with them.
        valid1 = Signal()
        pad1 = Signal(nb)
        rho1 = Signal.like(rho)
        advance = Signal()  # the read stage may move on
        if nb == 1:
            # The read register is the output register.
            m.d.comb += [
                advance.eq(~self.o.valid | self.o.ready),
                Value.cast(self.o.payload).eq(Mux(pad1, 0, banks[0][1].data)),
                self.o.valid.eq(valid1),
            ]
        else:
            # Lane l comes from bank (l + rho) % banks; the rotation is registered so that
            # `o` leaves a register.
            out_data = Signal(nb * lane_bits)
            rotated = Cat(*[
                Mux(pad1[lane], 0, Array(banks[(lane + turn) % nb][1].data
                                         for turn in range(nb))[rho1])
                for lane in range(nb)])
            out_valid = Signal()
            m.d.comb += [
                advance.eq(~out_valid | self.o.ready),
                Value.cast(self.o.payload).eq(out_data),
                self.o.valid.eq(out_valid),
            ]
            with m.If(advance):
                m.d.sync += [out_valid.eq(valid1), out_data.eq(rotated)]
        m.d.comb += issue.eq(available & (~valid1 | advance))
        with m.If(issue):
            m.d.sync += [valid1.eq(1), pad1.eq(lane_pad), rho1.eq(rho)]
        with m.Elif(advance):
            m.d.sync += valid1.eq(0)

        end_kx = Signal()
        end_win = Signal()
        end_row = Signal()
        end_img = Signal()
        m.d.comb += [
            end_kx.eq(j == row_reads - 1),
            end_win.eq(end_kx & (ky == k - 1)),
            end_row.eq(end_win & (ox == wo - 1)),
            end_img.eq(end_row & (oy == ho - 1)),
        ]
        # How far the output's top row moves at the end of a window row / of an image.
        release = Signal.like(ahead)
        m.d.comb += release.eq(Mux(issue & end_img, h - (ho - 1) * s,
                                   Mux(issue & end_row, s, 0)))
        m.d.sync += ahead.eq(ahead + row_done - release)

        step = s * gi  # input words between neighbouring windows
        q_next = q_words + step
        carry = rho + step % nb >= nb
        q_bank_next = q_bank + step // nb + carry
        rho_next = Mux(carry, rho + step % nb - nb, rho + step % nb)
        with m.If(issue):
            with m.If(~end_kx):
                m.d.sync += [j.eq(j + 1), col_cur.eq(col_cur + nb), bcol.eq(bcol + 1)]
            with m.Elif(~end_win):
                # Next row of the same window.
                m.d.sync += [
                    j.eq(0), ky.eq(ky + 1), col_cur.eq(q_words), bcol.eq(q_bank),
                    y_cur.eq(y_cur + 1), row_addr.eq(ring_add(row_addr, bank_row)),
                ]
            with m.Elif(~end_row):
                # Next window of the same window row.
                m.d.sync += [
                    j.eq(0), ky.eq(0), ox.eq(ox + 1),
                    q_words.eq(q_next), col_cur.eq(q_next),
                    q_bank.eq(q_bank_next), bcol.eq(q_bank_next), rho.eq(rho_next),
                    need_col.eq(Mux(need_col + step > row_words, row_words, need_col + step)),
                    y_cur.eq(p), row_addr.eq(top_addr),
                ]
            with m.Else():
                # Next window row (or next image): back to the left edge.
                m.d.sync += [
                    j.eq(0), ky.eq(0), ox.eq(0),
                    q_words.eq(q_init), col_cur.eq(q_init),
                    q_bank.eq(q_init // nb), bcol.eq(q_init // nb), rho.eq(q_init % nb),
                    need_col.eq(need_init),
                ]
                with m.If(~end_img):
                    below = h - 1 - (p + s)
                    m.d.sync += [
                        oy.eq(oy + 1), p.eq(p + s), y_cur.eq(p + s),
                        need_rows.eq(Mux(below < k - 1, below, k - 1)),
                        top_addr.eq(ring_add(top_addr, s * bank_row)),
                        row_addr.eq(ring_add(top_addr, s * bank_row)),
                    ]
                with m.Else():
                    jump = (h - (ho - 1) * s) * bank_row
                    m.d.sync += [
                        oy.eq(0), p.eq(-pt), y_cur.eq(-pt),
                        need_rows.eq(need_rows.init),
                        top_addr.eq(ring_add(top_addr, jump)),
                        row_addr.eq(ring_add(top_addr, jump)),
                    ]
        return m
