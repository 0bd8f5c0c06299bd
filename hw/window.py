"""Sliding-window generator (FINN's ``slidingwindow``): convolution windows from a pixel stream."""

from amaranth.hdl import Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.golden import same_padding
from sw.qmodel import conv_output_size

__all__ = ["WindowGenerator"]

PADDINGS = ("valid", "same")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


class WindowGenerator(wiring.Component):
    """Turns a raster pixel stream into the ``kernel x kernel`` windows of a convolution.

    The windows are exactly the rows of :func:`sw.golden.windows` ``(x, kernel, stride,
    padding)``, flattened and grouped ``simd`` elements per transfer.

    Parameters
    ----------
    height, width, channels : int
        Input image shape (HWC).
    kernel : int
        Window side ``K``.
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``).
    simd : int
        Elements per transfer; must divide ``channels``.
    stride : int
        Step between windows in both directions (any positive stride).
    padding : {"valid", "same"}
        Keras padding. ``"same"`` zeros are made here (they never travel on ``i``); their
        split is Keras' (the smaller half on the top/left, :func:`sw.golden.same_padding`).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, simd)))
        Pixels of one image in raster order (row, then column), each pixel
        ``channels // simd`` transfers (channel groups in order); images follow one another.
    o : Out(stream.Signature(ArrayLayout(shape, simd)))
        For each output position in raster order, its window in ``(ky, kx, c)`` order:
        ``kernel * kernel * channels // simd`` transfers.

    Notes
    -----
    **Line buffer.** One ``Memory`` (synchronous read port, so it maps to block RAM) holds
    the last ``kernel + stride`` input rows as a ring: ``(kernel + stride) * width *
    channels // simd`` words of ``simd`` elements. ``kernel`` rows feed the window row being
    produced while the input fills the next ``stride`` rows, so the output does not wait at
    row changes. The input is accepted as long as the row it writes is no longer needed (it
    runs up to ``kernel + stride - 1`` rows ahead of the top row of the current window row,
    also across an image boundary); a window starts as soon as the last word it needs has
    been written.

    **Timing.** ``o`` is registered (the memory's read register plus a valid flag); a read
    is issued in every cycle that the next window word is available and ``o`` is empty or
    being read, so the first word of a window leaves :attr:`latency` (2) cycles after the
    input transfer of the last word it needs, unless ``o`` is still busy. For the first
    image that word is word ``first_window_words - 1``: with ``i`` always valid from cycle
    0, the first output transfer happens in cycle ``first_window_words + 1``.

    With ``i`` always valid and ``o`` always ready, and when the input can keep up
    (:attr:`full_rate`: ``out_width * kernel**2 >= stride * width``), the
    ``output_words_per_image`` words of each image leave in exactly as many consecutive
    cycles: ``output_words_per_image - 1`` cycles from the first to the last, no bubble at
    window, row or channel-group boundaries. Between two images the output idles while the
    next image's first window waits for rows the buffer could not prefetch: exactly
    :attr:`image_gap` cycles when the output is strictly the slower side (``out_width *
    kernel**2 > stride * width``), so an image then takes ``output_words_per_image +
    image_gap`` cycles in steady state. Where the two rates are equal the input never gets
    ahead of the limit and the gap can be longer (at most ``first_window_words`` plus the
    unused trailing rows of ``valid`` padding). Without :attr:`full_rate` the input is the
    bottleneck and the output waits for it.
    """

    def __init__(self, *, height, width, channels, kernel, shape, simd, stride=1,
                 padding="valid"):
        self._height = _positive_int("height", height)
        self._width = _positive_int("width", width)
        self._channels = _positive_int("channels", channels)
        self._kernel = _positive_int("kernel", kernel)
        self._simd = _positive_int("simd", simd)
        self._stride = _positive_int("stride", stride)
        try:
            self._shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self._shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        if channels % simd:
            raise ValueError(f"simd ({simd}) must divide channels ({channels})")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
        if padding == "valid" and (kernel > height or kernel > width):
            raise ValueError(f"kernel {kernel} is larger than the {height}x{width} image: "
                             f"'valid' padding leaves no window")
        self._padding = padding
        self._pad_top = same_padding(height, kernel, stride)[0] if padding == "same" else 0
        self._pad_left = same_padding(width, kernel, stride)[0] if padding == "same" else 0
        layout = data.ArrayLayout(self._shape, simd)
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
        """Elements per transfer."""
        return self._simd

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
        """Transfers per pixel (``channels // simd``)."""
        return self._channels // self._simd

    @property
    def input_words_per_image(self):
        """Input transfers per image: ``height * width * channels // simd``."""
        return self._height * self._width * self.groups

    @property
    def output_words_per_image(self):
        """Output transfers per image: ``out_height * out_width * kernel**2 * channels // simd``."""
        return self.out_height * self.out_width * self._kernel ** 2 * self.groups

    @property
    def buffer_rows(self):
        """Rows the line buffer holds (``kernel + stride``)."""
        return self._kernel + self._stride

    @property
    def buffer_depth(self):
        """Words (of ``simd`` elements) in the line buffer memory."""
        return self.buffer_rows * self._width * self.groups

    @property
    def latency(self):
        """Cycles from the input transfer completing a window to its first output word."""
        return 2

    @property
    def first_window_words(self):
        """Input words of an image that must be in before its first window starts."""
        last_row = min(self._kernel - 1 - self._pad_top, self._height - 1)
        last_col = min(self._kernel - 1 - self._pad_left, self._width - 1)
        return (last_row * self._width + last_col + 1) * self.groups

    @property
    def full_rate(self):
        """Whether the input keeps up with a full-rate output (``i`` always valid)."""
        return self.out_width * self._kernel ** 2 >= self._stride * self._width

    @property
    def image_gap(self):
        """Idle output cycles between back-to-back images at full rate.

        While the last window row of an image is produced, the input may fill the buffer
        rows it frees with the next image: ``prefetch`` rows of it. The next image's first
        window waits for whatever of :attr:`first_window_words` lies beyond them.
        """
        last_top = (self.out_height - 1) * self._stride - self._pad_top
        prefetch = last_top + self.buffer_rows - self._height
        return max(0, self.first_window_words - prefetch * self._width * self.groups)

    def elaborate(self, platform):
        m = Module()
        h, w, k, s = self._height, self._width, self._kernel, self._stride
        grp = self.groups
        row_words = w * grp
        rows = self.buffer_rows
        depth = self.buffer_depth
        ho, wo = self.out_height, self.out_width
        pt, pl = self._pad_top, self._pad_left

        # Plain bit vectors inside: Yosys' ABC flow (issue YosysHQ/yosys#4349) can trip over
        # the `x` / `x[0]` wire pairs that views of one-lane arrays add to the netlist.
        m.submodules.lines = lines = Memory(
            shape=unsigned(self._simd * self._shape.width), depth=depth, init=[])
        wr = lines.write_port()
        rd = lines.read_port()

        def ring_add(value, step):
            """``value + step`` modulo the memory depth, ``0 <= step < depth``."""
            total = value + step % depth
            return Mux(total >= depth, total - depth, total)

        # `ahead` is the input's current row minus the top row `p` of the output's current
        # window row, both counted over the whole stream (images back to back). The input
        # writes its row over the one `rows` earlier, which is free once `ahead < rows`;
        # the window row needs rows p .. p + need_rows, the last one written up to `need_col`.
        ahead = Signal(range(-(h + s + k + 1), rows + 2), init=pt)
        need_rows = Signal(range(k), init=min(k - 1, h - 1 + pt))

        # Input side: word position in its row and the memory address (a ring of rows).
        col_in = Signal(range(row_words))
        waddr = Signal(range(depth))
        fire_i = Signal()
        row_done = Signal()
        m.d.comb += [
            self.i.ready.eq(ahead < rows),
            fire_i.eq(self.i.valid & self.i.ready),
            row_done.eq(fire_i & (col_in == row_words - 1)),
            wr.addr.eq(waddr),
            wr.data.eq(Value.cast(self.i.payload)),
            wr.en.eq(fire_i),
        ]
        with m.If(fire_i):
            m.d.sync += [
                col_in.eq(Mux(col_in == row_words - 1, 0, col_in + 1)),
                waddr.eq(ring_add(waddr, 1)),
            ]

        # Output side: the element counters of the current window word ...
        g = Signal(range(grp))
        kx = Signal(range(k))
        ky = Signal(range(k))
        ox = Signal(range(wo))
        oy = Signal(range(ho))
        # ... the window's position in padded-minus-padding coordinates (may be negative) ...
        p = Signal(signed((h + k + s).bit_length() + 1), init=-pt)
        q_words = Signal(signed((row_words + (k + s) * grp).bit_length() + 1), init=-pl * grp)
        # ... the element's row and word column, and where they sit in the memory.
        y_cur = Signal.like(p, init=-pt)
        col_cur = Signal.like(q_words, init=-pl * grp)
        first_row_addr = ((-pt) % rows) * row_words
        top_addr = Signal(range(depth), init=first_row_addr)
        row_addr = Signal(range(depth), init=first_row_addr)
        # Input words of the window's bottom row that must be in before the window starts.
        need_init = (min(k - 1 - pl, w - 1) + 1) * grp
        need_col = Signal(range(row_words + 1), init=need_init)

        available = Signal()
        issue = Signal()
        m.d.comb += [
            available.eq((ahead > need_rows) | ((ahead == need_rows) & (col_in >= need_col))),
            issue.eq(available & (~self.o.valid | self.o.ready)),
            rd.addr.eq(row_addr + col_cur),
            rd.en.eq(issue),
        ]

        # Output register: the memory's read data (held while stalled: `rd.en` is low) and a
        # flag that replaces it by zero for padding.
        pad = Signal()
        with m.If(issue):
            m.d.sync += [
                self.o.valid.eq(1),
                pad.eq((y_cur < 0) | (y_cur >= h) | (col_cur < 0) | (col_cur >= row_words)),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += Value.cast(self.o.payload).eq(Mux(pad, 0, rd.data))

        end_kx = Signal()
        end_win = Signal()
        end_row = Signal()
        end_img = Signal()
        m.d.comb += [
            end_kx.eq((g == grp - 1) & (kx == k - 1)),
            end_win.eq(end_kx & (ky == k - 1)),
            end_row.eq(end_win & (ox == wo - 1)),
            end_img.eq(end_row & (oy == ho - 1)),
        ]
        # How far the output's top row moves at the end of a window row / of an image.
        release = Signal.like(ahead)
        m.d.comb += release.eq(Mux(issue & end_img, h - (ho - 1) * s,
                                   Mux(issue & end_row, s, 0)))
        m.d.sync += ahead.eq(ahead + row_done - release)

        with m.If(issue):
            m.d.sync += g.eq(Mux(g == grp - 1, 0, g + 1))
            with m.If(~end_kx):
                m.d.sync += col_cur.eq(col_cur + 1)
                with m.If(g == grp - 1):
                    m.d.sync += kx.eq(kx + 1)
            with m.Elif(~end_win):
                # Next row of the same window.
                m.d.sync += [
                    kx.eq(0), ky.eq(ky + 1), col_cur.eq(q_words),
                    y_cur.eq(y_cur + 1), row_addr.eq(ring_add(row_addr, row_words)),
                ]
            with m.Elif(~end_row):
                # Next window of the same window row.
                m.d.sync += [
                    kx.eq(0), ky.eq(0), ox.eq(ox + 1),
                    q_words.eq(q_words + s * grp), col_cur.eq(q_words + s * grp),
                    need_col.eq(Mux(need_col + s * grp > row_words, row_words,
                                    need_col + s * grp)),
                    y_cur.eq(p), row_addr.eq(top_addr),
                ]
            with m.Else():
                # Next window row (or next image): back to the left edge.
                m.d.sync += [
                    kx.eq(0), ky.eq(0), ox.eq(0),
                    q_words.eq(-pl * grp), col_cur.eq(-pl * grp), need_col.eq(need_init),
                ]
                with m.If(~end_img):
                    below = h - 1 - (p + s)
                    m.d.sync += [
                        oy.eq(oy + 1), p.eq(p + s), y_cur.eq(p + s),
                        need_rows.eq(Mux(below < k - 1, below, k - 1)),
                        top_addr.eq(ring_add(top_addr, s * row_words)),
                        row_addr.eq(ring_add(top_addr, s * row_words)),
                    ]
                with m.Else():
                    step = (h - (ho - 1) * s) * row_words
                    m.d.sync += [
                        oy.eq(0), p.eq(-pt), y_cur.eq(-pt),
                        need_rows.eq(need_rows.init),
                        top_addr.eq(ring_add(top_addr, step)),
                        row_addr.eq(ring_add(top_addr, step)),
                    ]
        return m
