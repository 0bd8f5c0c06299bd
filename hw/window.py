"""Sliding-window generator (FINN's ``slidingwindow``): convolution windows from a pixel stream.

Two datapaths share one line buffer (a ring of input rows in block RAM) and its bookkeeping::

    i ─► write ─► line buffer ─┬─ kernel-row path (simd divides K x C): a word of each of
                               │  simd / in_lanes banks (row words spread over them),
                               │  rotated into order ────────────────────────────────────► o
                               │
                               └─ window-register path (any other divisor of K x K x C):
                                  a word of each of K banks (row y in bank y % K): one column
                                  ─► rotate ─► shift into the window register (K rows of N
                                  words) ─► on a word that completes windows, copy it into
                                  the snapshot ─► each window it holds, simd elements a
                                  transfer, picked by where the window ends ─────────────► o

The kernel-row path needs no window register: each output transfer lies in one kernel row
and is read straight out of the line buffer. The window-register path takes SIMD up to the
whole ``K x K x C`` window (a transfer may span several kernel rows), and several pixels per
input word.
"""

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

from amaranth.hdl import Array, C, Cat, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.golden import same_padding
from sw.qmodel import conv_output_size

from .params import check_int
from .streams import lanes_signature, may_load

__all__ = ["WindowGenerator"]

PADDINGS = ("valid", "same")

#: Images the schedule model runs to reach its steady state (it does after one or two).
_MODEL_IMAGES = 4


@dataclass(frozen=True)
class _Geometry:
    """The integers that fix a generator's buffer and schedule (hashable, so the buffer
    search below runs once per geometry however many times the folder builds one)."""

    height: int
    width: int
    channels: int
    kernel: int
    simd: int
    stride: int
    pad_top: int
    pad_left: int
    out_height: int
    out_width: int
    in_lanes: int
    register_path: bool  # the window-register path

    @property
    def row_words(self):
        """Input words per image row."""
        return self.width * self.channels // self.in_lanes

    @property
    def unit(self):
        """Elements of the finest grain that both words and pixels are made of."""
        return min(self.in_lanes, self.channels)

    @property
    def word_units(self):
        """Units per input word (1, or the pixels of a word)."""
        return self.in_lanes // self.unit

    @property
    def step_units(self):
        """Units between the ends of neighbouring windows of a row."""
        return self.stride * self.channels // self.unit

    @property
    def end0(self):
        """Unit index (from the row's start) of the last element of a row's first window."""
        return (self.kernel - self.pad_left) * self.channels // self.unit - 1

    @property
    def window_words(self):
        """Output transfers per window."""
        return self.kernel ** 2 * self.channels // self.simd

    @property
    def row_banks(self):
        """Banks that rows are spread over: the window register reads ``kernel`` rows at once."""
        return self.kernel if self.register_path else 1

    @property
    def col_banks(self):
        """Banks that a row's words are spread over: one kernel-row transfer, read at once."""
        return 1 if self.register_path else self.simd // self.in_lanes

    @property
    def bank_row(self):
        """Words of one row in one bank."""
        return -(-self.row_words // self.col_banks)

    @property
    def register_words(self):
        """Words per kernel row of the window register: a window plus the slack of a word
        that ends inside it (several pixels per word)."""
        slack = max(self.in_lanes - self.channels, 0)
        return -(-(self.kernel * self.channels + slack) // self.in_lanes)

    def needed_words(self, ox):
        """Words of a row that window ``ox`` of a window row needs."""
        end = (ox * self.stride - self.pad_left + self.kernel) * self.channels // self.unit - 1
        return min(end // self.word_units + 1, self.row_words)

    def top(self, window_row):
        """Top input row (over the stream, negative in the first top padding) of a window row."""
        image, oy = divmod(window_row, self.out_height)
        return image * self.height + oy * self.stride - self.pad_top

    def bottom(self, window_row):
        """Last input row of the image that a window row needs."""
        image = window_row // self.out_height
        return min(self.top(window_row) + self.kernel - 1, image * self.height + self.height - 1)

    @functools.cached_property
    def fetch_plan(self):
        """The window-register path's reads of one window row: ``(word, windows, dist)``.

        ``dist`` is how many units past the start of word ``u`` the next window ends: it ends
        in this word when ``dist < word_units``, and so do the following windows that end
        before the word does. The row's last word also completes every window that ends in
        the right padding (their zeros are not read). The hardware's counters step the same
        way.
        """
        plan, dist, done, word = [], self.end0, 0, 0
        while True:
            count = 0
            if word == self.row_words - 1:
                count = self.out_width - done
            elif dist < self.word_units:
                count = (self.word_units - 1 - dist) // self.step_units + 1
                count = min(count, self.out_width - done)
            plan.append((word, count, dist))
            done += count
            if done == self.out_width:
                return tuple(plan)
            dist += count * self.step_units - self.word_units
            word += 1

    @property
    def offsets(self):
        """Every ``dist`` at which a window ends, counted from the start of the word that
        completes it (beyond ``word_units``: it ends in the right padding)."""
        return sorted({dist + n * self.step_units for _, count, dist in self.fetch_plan
                       for n in range(count)})


class _InputRows:
    """When each input row starts in the sizing model, ``i`` always valid.

    Row ``y`` (counted over the stream) starts once row ``y - 1`` is in and the ring has
    room for it: from the cycle after the last read of the window row that frees its slot
    (the path models append those cycles to :attr:`freed`, one per window row, in order).
    """

    def __init__(self, geometry, rows):
        self._geometry, self._rows = geometry, rows
        self.freed = []
        self._starts = []
        self._frees = 0  # the window row from whose end on the next input row may be written

    def start(self, y):
        while len(self._starts) <= y:
            x = len(self._starts)
            cycle = self._starts[-1] + self._geometry.row_words if self._starts else 0
            while self._geometry.top(self._frees) <= x - self._rows:  # row x - rows in use
                self._frees += 1
            if self._frees:
                # With at least the rows one window row spans, the window row that frees the
                # slot never waits for this input row (no deadlock).
                assert self._frees <= len(self.freed)
                cycle = max(cycle, self.freed[self._frees - 1])
            self._starts.append(cycle)
        return self._starts[y]


def _row_path_model(geometry, rows, images, spacing):
    """Cycle in which each window's first word is read (kernel-row path).

    A window is read, one word per cycle, ``spacing`` cycles after the previous one (its
    ``window_words`` with ``o`` always ready; more behind a slower consumer), from the cycle
    after the transfer of the last input word it needs.
    """
    g, inputs = geometry, _InputRows(geometry, rows)
    free, starts = 0, []
    for window_row in range(images * g.out_height):
        bottom = g.bottom(window_row)
        for ox in range(g.out_width):
            issue = max(free, inputs.start(bottom) + g.needed_words(ox))
            starts.append(issue)
            free = issue + spacing
        inputs.freed.append(free)
    return starts


def _window_path_model(geometry, rows, images, spacing):
    """Cycle in which each window's first word is ready (window-register path).

    A word is read once its input word is in and the previous word has shifted into the
    register. It shifts in the next cycle; a word that completes windows waits until the
    snapshot has sent the previous word's windows (``spacing`` cycles each: ``window_words``
    with ``o`` always ready) and enters the snapshot with its windows in the same cycle.
    """
    g, inputs = geometry, _InputRows(geometry, rows)
    shift = free = -math.inf
    starts = []
    for window_row in range(images * g.out_height):
        bottom = g.bottom(window_row)
        for word, count, _ in g.fetch_plan:
            issue = max(shift, inputs.start(bottom) + word + 1)
            shift = issue + 1
            if count:
                shift = max(shift, free)
                starts += [shift + n * spacing for n in range(count)]
                free = shift + count * spacing
        inputs.freed.append(issue + 1)
    return starts


@functools.cache
def _buffer_plan(geometry, window_cycles):
    """The fewest ring rows reaching the steady-state period, with that period and whether
    every image's words then leave back to back (``full_rate``), both with ``o`` always
    ready; behind a consumer that takes ``window_cycles`` cycles a window, at least the rows
    with which the generator keeps that consumer busy too (see :class:`WindowGenerator`)."""
    g = geometry
    model = _window_path_model if g.register_path else _row_path_model
    windows = g.out_height * g.out_width

    def measure(rows, spacing=g.window_words):
        starts = model(g, rows, _MODEL_IMAGES, spacing)
        firsts, lasts = starts[::windows], starts[windows - 1::windows]
        back_to_back = all(last - first == (windows - 1) * spacing
                           for first, last in zip(firsts, lasts, strict=True))
        return firsts[-1] - firsts[-2], back_to_back

    # Rows a window row spans (top padding included: its rows take ring slots too); the
    # window-register path needs a multiple of its row banks.
    fewest = max(g.bottom(n) - g.top(n) + 1 for n in range(g.out_height))
    fewest = -(-fewest // g.row_banks) * g.row_banks
    limit = fewest + 2 * (g.height + g.kernel + g.stride) * g.row_banks
    spacings = sorted({g.window_words, max(g.window_words, window_cycles)})
    for spacing in spacings:  # the consumer's own pace last: it may need more rows
        best = measure(limit, spacing)[0]
        fewest = next((rows for rows in range(fewest, limit, g.row_banks)
                       if measure(rows, spacing)[0] == best), limit)
    return (fewest, *measure(fewest))


def _ring_add(value, step, depth):
    """``value + step`` modulo ``depth``, for ``0 <= value < depth`` and ``0 <= step <= depth``."""
    total = value + step
    return Mux(total >= depth, total - depth, total)


class WindowGenerator(wiring.Component):
    """Turns a raster pixel stream into the ``kernel x kernel`` windows of a convolution.

    The windows are exactly the rows of :func:`sw.golden.windows` ``(x, kernel, stride,
    padding)``, flattened in ``(ky, kx, c)`` order and grouped ``simd`` elements per transfer:
    element ``sf * simd + s`` of a window is lane ``s`` of its transfer ``sf``, as
    :class:`~hw.mac_array.MACArray` expects.

    Parameters
    ----------
    height, width, channels : int
        Input image shape (HWC).
    kernel : int
        Window side ``K``.
    shape : shape-like
        Shape of one element (``unsigned(n)`` or ``signed(n)``).
    simd : int
        Elements per output transfer; any divisor of the window, ``kernel**2 * channels``.
        A divisor of one kernel row (``kernel * channels``) uses the kernel-row path; any
        other (such as the whole window) the window-register path (see the notes).
    stride : int
        Step between windows in both directions (any positive stride).
    padding : {"valid", "same"}
        Keras padding. ``"same"`` zeros are made here (they never travel on ``i``); their
        split is Keras' (the smaller half on the top/left, :func:`sw.golden.same_padding`).
    pixels : int, optional
        Whole pixels per input transfer; must divide ``width``. ``None`` (the default) takes
        :attr:`in_lanes` ``= gcd(simd, channels)`` elements per transfer, a pixel in
        :attr:`groups` channel groups. With ``pixels`` the input carries ``pixels *
        channels`` elements per transfer, so it is not limited to one pixel per cycle; more
        than one pixel per word, or a ``simd`` that a whole pixel does not divide, takes
        the window-register path.
    window_cycles : int, optional
        Cycles the consumer takes per window (a MAC array's ``nf * sf``); ``window_words``
        (``o`` always ready) when not given. The ring then holds at least the rows with which
        the generator keeps such a consumer busy: where the stride skips input rows (a 1x1
        kernel at stride 2), the skipped rows must stream in while the consumer still works
        on the windows before them.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(shape, in_lanes)))
        The pixels of one image in raster order (row, then column), :attr:`in_lanes`
        elements per transfer in ``(x, c)`` order; images follow one another.
    o : Out(stream.Signature(ArrayLayout(shape, simd)))
        For each output position in raster order, its window in ``(ky, kx, c)`` order:
        :attr:`window_words` transfers, each the next ``simd`` elements.
    height, width, channels, kernel, simd, stride, padding, pixels, window_cycles
        The parameters, checked (``pixels`` as given, ``None`` for channel groups;
        ``window_cycles`` ``window_words`` when not given); ``shape`` a ``Shape``.
    buffer_rows : int
        Rows the line buffer's ring holds (see the notes).
    cycles_per_image : int
        Steady-state cycles between images with ``i`` always valid and ``o`` ready.
    full_rate : bool
        Whether every image's output words then leave back to back.

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If ``simd`` does not divide the window, ``pixels`` the width, ``padding`` is
        unknown, or ``'valid'`` padding leaves no window.

    Notes
    -----
    **Line buffer.** :attr:`banks` memories (``Memory`` with a synchronous read port each,
    so they map to block RAM) hold the last :attr:`buffer_rows` input rows as a ring. The
    input is accepted as long as the row it writes is no longer needed (it runs up to
    ``buffer_rows - 1`` rows ahead of the top row of the current window row, also into the
    next image); a read waits until the input word it needs has been written.

    **Kernel-row path.** A row's words are spread over ``simd // in_lanes`` banks (word
    ``u`` in bank ``u % banks``): the words of an output transfer are in distinct banks, so
    one read of each bank, rotated into order, is a transfer. Each transfer is read after
    the previous one, so ``o`` sends a word in every cycle in which the input has kept up.

    **Window-register path.** Row ``y`` lives in bank ``y % kernel``, so one read of each
    bank fetches the ``kernel`` input words of one column of a window row. Each column shifts
    into a register of :attr:`register_words` words per kernel row; a word that completes
    windows (several where a word holds several pixels, and a row's last word completes the
    windows that end in the right padding too) copies the register into the snapshot in the
    same cycle, and ``o`` sends the snapshot's windows (:attr:`window_words` transfers each)
    while the next columns shift in. A window row starts on a cleared register (its left
    padding), zeros past the register's end are its right padding, and padding rows are
    zeroed as they are read. With ``simd`` the whole window and one pixel per cycle, as with
    any configuration where the input is the slower side, the output keeps pace with the
    input once the buffer is primed: one window per input word, bounded by the input only.

    **Timing.** :attr:`buffer_rows` is the fewest rows with which the pipeline reaches its
    best steady state with ``i`` always valid and ``o`` always ready, found at construction
    with a cycle-exact model of the control (checked against simulation by the tests). The
    first words of consecutive images then leave :attr:`cycles_per_image` cycles apart (from
    the first image on where :attr:`full_rate` holds, else from the second)::

        cycles_per_image = max(input_words_per_image,
                               output_words_per_image + out_height * row_wait)

    :attr:`row_wait` is 0 on the kernel-row path; on the window-register path it is how much
    longer a window row's first columns take to read than the previous row's last snapshot
    takes to send (the register is busy until then), which shows only where the output is
    the slower side. Where :attr:`full_rate` holds each image's words leave in as many
    consecutive cycles. The first word of an image leaves :attr:`latency` cycles after the
    input transfer of the last word it needs.
    """

    def __init__(self, *, height, width, channels, kernel, shape, simd, stride=1,
                 padding="valid", pixels=None, window_cycles=None):
        self.height = check_int("height", height)
        self.width = check_int("width", width)
        self.channels = check_int("channels", channels)
        self.kernel = check_int("kernel", kernel)
        self.simd = check_int("simd", simd)
        self.stride = check_int("stride", stride)
        try:
            self.shape = Shape.cast(shape)
        except TypeError as error:
            raise TypeError(f"shape must be an integer shape such as unsigned(8), "
                            f"not {shape!r}") from error
        if self.shape.width < 1:
            raise ValueError(f"shape must be at least 1 bit wide, not {shape!r}")
        window = kernel ** 2 * channels
        if window % simd:
            raise ValueError(f"simd ({simd}) must divide kernel**2 * channels ({window})")
        if pixels is not None and width % check_int("pixels", pixels):
            raise ValueError(f"pixels ({pixels}) must divide the width ({width})")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
        if padding == "valid" and (kernel > height or kernel > width):
            raise ValueError(f"kernel {kernel} is larger than the {height}x{width} image: "
                             f"'valid' padding leaves no window")
        self.padding = padding
        self.pixels = pixels
        in_lanes = math.gcd(simd, channels) if pixels is None else pixels * channels
        # The kernel-row path reads a transfer as whole input words of one kernel row, and
        # a window's edge must fall on a word's (a word holds no more than one pixel).
        kernel_rows = ((kernel * channels) % simd == 0 and simd % in_lanes == 0
                       and channels % in_lanes == 0)
        self._geometry = _Geometry(
            height=height, width=width, channels=channels, kernel=kernel, simd=simd,
            stride=stride,
            pad_top=same_padding(height, kernel, stride)[0] if padding == "same" else 0,
            pad_left=same_padding(width, kernel, stride)[0] if padding == "same" else 0,
            out_height=conv_output_size(height, kernel, stride, padding),
            out_width=conv_output_size(width, kernel, stride, padding),
            in_lanes=in_lanes, register_path=not kernel_rows)
        self.window_cycles = (self._geometry.window_words if window_cycles is None else
                               check_int("window_cycles", window_cycles))
        self.buffer_rows, self.cycles_per_image, self.full_rate = _buffer_plan(
            self._geometry, self.window_cycles)
        super().__init__({
            "i": In(lanes_signature(self.shape, in_lanes)),
            "o": Out(lanes_signature(self.shape, simd)),
        })

    @property
    def in_lanes(self):
        """Elements per input transfer: ``gcd(simd, channels)``, or ``pixels * channels``."""
        return self._geometry.in_lanes

    @property
    def groups(self):
        """Input transfers per pixel (1 when a transfer holds whole pixels)."""
        return max(self.channels // self.in_lanes, 1)

    @property
    def path(self):
        """``"kernel-row"``, or ``"window-register"`` where ``simd`` is no divisor of a kernel
        row in whole input words, or an input word holds several pixels (see the notes)."""
        return "window-register" if self._geometry.register_path else "kernel-row"

    @property
    def pad_top(self):
        """Zero rows above the image (``"same"``: Keras' smaller half; else 0)."""
        return self._geometry.pad_top

    @property
    def pad_left(self):
        """Zero columns left of the image."""
        return self._geometry.pad_left

    @property
    def out_height(self):
        """Output rows (Keras' rule, :func:`sw.qmodel.conv_output_size`)."""
        return self._geometry.out_height

    @property
    def out_width(self):
        """Output columns."""
        return self._geometry.out_width

    @property
    def window_words(self):
        """Output transfers per window: ``kernel**2 * channels // simd``."""
        return self._geometry.window_words

    @property
    def banks(self):
        """Line-buffer memories: ``simd // in_lanes`` (kernel-row path) or ``kernel``."""
        return self._geometry.row_banks * self._geometry.col_banks

    @property
    def buffer_depth(self):
        """Words (of :attr:`in_lanes` elements) in each bank."""
        g = self._geometry
        return self.buffer_rows // g.row_banks * g.bank_row

    @property
    def register_words(self):
        """Input words per kernel row in the window register (0 on the kernel-row path)."""
        return self._geometry.register_words if self._geometry.register_path else 0

    @property
    def register_bits(self):
        """Flip-flops of the window and snapshot registers (0 on the kernel-row path)."""
        if not self._geometry.register_path:
            return 0
        words = self.kernel * self.register_words * self.in_lanes
        return (words + self.kernel ** 2 * self.channels) * self.shape.width

    @property
    def input_words_per_image(self):
        """Input transfers per image: ``height * width * channels // in_lanes``."""
        return self.height * self._geometry.row_words

    @property
    def output_words_per_image(self):
        """Output transfers per image: ``out_height * out_width * window_words``."""
        return self.out_height * self.out_width * self.window_words

    @property
    def latency(self):
        """Cycles from the input transfer completing a window to its first output word:
        2 (kernel-row path, one bank) or 3 (several banks, or the window-register path)."""
        return 2 if self.banks == 1 and not self._geometry.register_path else 3

    @property
    def first_window_words(self):
        """Input words of an image that must be in before its first window starts."""
        g = self._geometry
        return g.bottom(0) * g.row_words + g.needed_words(0)

    @property
    def row_wait(self):
        """Cycles a window row's first window waits for its first columns where the output
        is the slower side (see the class notes; 0 on the kernel-row path)."""
        if not self._geometry.register_path:
            return 0
        plan = self._geometry.fetch_plan
        first = next(index for index, (_, count, _) in enumerate(plan) if count) + 1
        return max(0, first - plan[-1][1] * self.window_words)

    @property
    def image_gap(self):
        """Idle output cycles per image in steady state (``i`` always valid, ``o`` ready):
        ``cycles_per_image - output_words_per_image``."""
        return self.cycles_per_image - self.output_words_per_image

    def elaborate(self, platform):
        m = Module()
        lines = self._line_buffer(m)
        rows = self._window_rows(m, lines)
        if self._geometry.register_path:
            fetch = self._column_counters(m, lines, rows)
            window = self._window_register(m, lines, fetch)
            self._snapshot_output(m, fetch, window)
        else:
            reads = self._row_reads(m, lines, rows)
            self._row_counters(m, rows, reads)
            self._row_output(m, lines, reads)
        return m

    def _line_buffer(self, m):
        """Line buffer: the memories and their write side.

        Word ``u`` of stream row ``y`` lives in bank ``(y % row_banks) * col_banks + u %
        col_banks``, at ``((y // row_banks) % slots) * bank_row + u // col_banks`` with
        ``slots = buffer_rows // row_banks``.
        """
        g, depth = self._geometry, self.buffer_depth
        # Plain bit vectors inside, not views of lanes: see hw.toolchain.SCRIPT_AFTER_READ.
        memories = []
        for bank in range(self.banks):
            memory = Memory(shape=unsigned(g.in_lanes * self.shape.width), depth=depth,
                            init=[])
            m.submodules[f"lines{bank}"] = memory
            memories.append(memory)
        writes = [memory.write_port() for memory in memories]
        lines = SimpleNamespace(
            reads=[memory.read_port() for memory in memories],
            col=Signal(range(g.row_words)),  # words of the current input row written
            row_done=Signal(),  # the input row's last word transfers
        )
        col_bank = Signal(range(g.col_banks))
        row_bank = Signal(range(g.row_banks))
        row_base = Signal(range(depth))  # address of the current input row's slot
        addr = Signal(range(depth))
        fire = Signal()
        m.d.comb += [
            fire.eq(self.i.valid & self.i.ready),
            lines.row_done.eq(fire & (lines.col == g.row_words - 1)),
        ]
        for bank, port in enumerate(writes):
            selected = (row_bank == bank // g.col_banks) & (col_bank == bank % g.col_banks)
            m.d.comb += [
                port.addr.eq(addr),
                port.data.eq(Value.cast(self.i.payload)),
                port.en.eq(fire & selected),
            ]
        with m.If(fire):
            m.d.sync += [
                lines.col.eq(Mux(lines.row_done, 0, lines.col + 1)),
                col_bank.eq(Mux(lines.row_done | (col_bank == g.col_banks - 1), 0,
                                col_bank + 1)),
            ]
            with m.If(lines.row_done):
                last_bank = row_bank == g.row_banks - 1
                new_base = Mux(last_bank, _ring_add(row_base, g.bank_row, depth), row_base)
                m.d.sync += [
                    row_bank.eq(Mux(last_bank, 0, row_bank + 1)),
                    row_base.eq(new_base),
                    addr.eq(new_base),
                ]
            with m.Elif(col_bank == g.col_banks - 1):
                m.d.sync += addr.eq(addr + 1)
        return lines

    def _ring_rows(self, bank, base, rows):
        """The ring position (row bank, slot address) ``rows`` rows after ``(bank, base)``."""
        g, depth = self._geometry, self.buffer_depth
        whole, extra = divmod(rows, g.row_banks)
        slots = self.buffer_rows // g.row_banks
        moved = _ring_add(base, whole % slots * g.bank_row, depth)
        if g.row_banks == 1:
            return bank, moved
        carry = bank + extra >= g.row_banks
        return (Mux(carry, bank + extra - g.row_banks, bank + extra),
                Mux(carry, _ring_add(moved, g.bank_row, depth), moved))

    def _window_rows(self, m, lines):
        """Window rows: which input rows the current window row needs, and when rows free.

        ``ahead`` is the input's current row minus the top row ``top`` of the current window
        row, both counted over the whole stream (images back to back). The input writes its
        row over the one ``buffer_rows`` earlier, which is free once ``ahead < buffer_rows``;
        the window row needs rows ``top .. top + need``. The read side raises ``end`` when it
        issues the window row's last read, which moves everything to the next window row.
        """
        g = self._geometry
        h, k, s, pt = g.height, g.kernel, g.stride, g.pad_top
        # The first window row's top row, -pad_top over the stream, in the ring.
        first_bank = -pt % g.row_banks
        first_base = -pt // g.row_banks % (self.buffer_rows // g.row_banks) * g.bank_row
        rows = SimpleNamespace(
            ahead=Signal(range(-(h + s + k + 1), self.buffer_rows + 2), init=pt),
            need=Signal(range(k), init=min(k - 1, h - 1 + pt)),
            top=Signal(signed((h + k + s).bit_length() + 1), init=-pt),  # image coordinates
            oy=Signal(range(g.out_height)),
            bank=Signal(range(g.row_banks), init=first_bank),  # the top row's ring position
            base=Signal(range(self.buffer_depth), init=first_base),
            end=Signal(),
            last=Signal(),
        )
        jump = h - (g.out_height - 1) * s  # rows from the last window row to the next image's
        step_bank, step_base = self._ring_rows(rows.bank, rows.base, s)
        jump_bank, jump_base = self._ring_rows(rows.bank, rows.base, jump)
        rows.next_top = Mux(rows.last, -pt, rows.top + s)
        rows.next_base = Mux(rows.last, jump_base, step_base)
        m.d.comb += [
            self.i.ready.eq(rows.ahead < self.buffer_rows),
            rows.last.eq(rows.oy == g.out_height - 1),
        ]
        release = Mux(rows.end, Mux(rows.last, jump, s), 0)
        m.d.sync += rows.ahead.eq(rows.ahead + lines.row_done - release)
        with m.If(rows.end):
            below = h - 1 - rows.next_top
            m.d.sync += [
                rows.top.eq(rows.next_top),
                rows.base.eq(rows.next_base),
                rows.oy.eq(Mux(rows.last, 0, rows.oy + 1)),
                rows.need.eq(Mux(below < k - 1, below, k - 1)),
            ]
            if g.row_banks > 1:
                m.d.sync += rows.bank.eq(Mux(rows.last, jump_bank, step_bank))
        return rows

    def _row_reads(self, m, lines, rows):
        """Kernel-row path, reads: the current transfer's row, its first input word, where
        they sit in the banks, and whether the input has written them."""
        g = self._geometry
        h, k, s, gi, nb = g.height, g.kernel, g.stride, self.groups, g.col_banks
        # The window's left edge in input words of a row, as bank word `q_bank` plus `rho`
        # words (the first `rho` banks are one word further right) ...
        q_init = -g.pad_left * gi
        span = (g.row_words + (k + s) * gi + nb).bit_length() + 1
        reads = SimpleNamespace(
            q_init=q_init,
            q_words=Signal(signed(span), init=q_init),
            q_bank=Signal(signed(span), init=q_init // nb),
            rho=Signal(range(nb), init=q_init % nb),
            # ... and the current word's row and first input word, and their bank address.
            y_cur=Signal.like(rows.top, init=-g.pad_top),
            col_cur=Signal(signed(span), init=q_init),
            bcol=Signal(signed(span), init=q_init // nb),
            row_addr=Signal.like(rows.base, init=rows.base.init),
            # Input words of the window's bottom row that must be in before it starts.
            need_init=g.needed_words(0),
            need_col=Signal(range(g.row_words + 1), init=g.needed_words(0)),
            issue=Signal(),
            available=Signal(),
            lane_pad=Signal(nb),
        )
        addr_lo = Signal.like(rows.base)
        addr_hi = Signal.like(rows.base)
        m.d.comb += [
            reads.available.eq((rows.ahead > rows.need) | (
                (rows.ahead == rows.need) & (lines.col >= reads.need_col))),
            addr_lo.eq(reads.row_addr + reads.bcol),
            addr_hi.eq(reads.row_addr + reads.bcol + 1),
        ]
        for bank, port in enumerate(lines.reads):
            m.d.comb += [
                port.addr.eq(Mux(reads.rho > bank, addr_hi, addr_lo) if nb > 1 else addr_lo),
                port.en.eq(reads.issue),
            ]
        # Which lanes of the word are padding: outside the image's rows or columns.
        row_pad = (reads.y_cur < 0) | (reads.y_cur >= h)
        m.d.comb += reads.lane_pad.eq(Cat(*[
            row_pad | (reads.col_cur + lane < 0) | (reads.col_cur + lane >= g.row_words)
            for lane in range(nb)]))
        return reads

    def _row_counters(self, m, rows, reads):
        """Kernel-row path, positions: word of the kernel row, kernel row, window of the row."""
        g = self._geometry
        k, gi, nb, wo = g.kernel, self.groups, g.col_banks, g.out_width
        row_reads = k * gi // nb  # output words per kernel row
        j = Signal(range(row_reads))
        ky = Signal(range(k))
        ox = Signal(range(wo))
        end_kx, end_win, end_row = Signal(), Signal(), Signal()
        m.d.comb += [
            end_kx.eq(j == row_reads - 1),
            end_win.eq(end_kx & (ky == k - 1)),
            end_row.eq(end_win & (ox == wo - 1)),
            rows.end.eq(reads.issue & end_row),
        ]
        step = g.stride * gi  # input words between neighbouring windows
        q_next = reads.q_words + step
        carry = reads.rho + step % nb >= nb
        q_bank_next = reads.q_bank + step // nb + carry
        rho_next = Mux(carry, reads.rho + step % nb - nb, reads.rho + step % nb)
        q_init = reads.q_init
        with m.If(reads.issue):
            with m.If(~end_kx):
                m.d.sync += [j.eq(j + 1), reads.col_cur.eq(reads.col_cur + nb),
                             reads.bcol.eq(reads.bcol + 1)]
            with m.Elif(~end_win):
                # Next row of the same window.
                m.d.sync += [
                    j.eq(0), ky.eq(ky + 1), reads.col_cur.eq(reads.q_words),
                    reads.bcol.eq(reads.q_bank), reads.y_cur.eq(reads.y_cur + 1),
                    reads.row_addr.eq(_ring_add(reads.row_addr, g.bank_row, self.buffer_depth)),
                ]
            with m.Elif(~end_row):
                # Next window of the same window row.
                need_next = reads.need_col + step
                m.d.sync += [
                    j.eq(0), ky.eq(0), ox.eq(ox + 1),
                    reads.q_words.eq(q_next), reads.col_cur.eq(q_next),
                    reads.q_bank.eq(q_bank_next), reads.bcol.eq(q_bank_next),
                    reads.rho.eq(rho_next),
                    reads.need_col.eq(Mux(need_next > g.row_words, g.row_words, need_next)),
                    reads.y_cur.eq(rows.top), reads.row_addr.eq(rows.base),
                ]
            with m.Else():
                # Next window row (or next image): back to the left edge.
                m.d.sync += [
                    j.eq(0), ky.eq(0), ox.eq(0),
                    reads.q_words.eq(q_init), reads.col_cur.eq(q_init),
                    reads.q_bank.eq(q_init // nb), reads.bcol.eq(q_init // nb),
                    reads.rho.eq(q_init % nb), reads.need_col.eq(reads.need_init),
                    reads.y_cur.eq(rows.next_top), reads.row_addr.eq(rows.next_base),
                ]

    def _row_output(self, m, lines, reads):
        """Kernel-row path, output: the banks' read registers (held while stalled: the read
        enable is low), the padding flags and the rotation that goes with them."""
        nb = self._geometry.col_banks
        lane_bits = self.in_lanes * self.shape.width
        valid1 = Signal()
        pad1 = Signal(nb)
        rho1 = Signal.like(reads.rho)
        advance = Signal()  # the read stage may move on
        if nb == 1:
            # The read register is the output register.
            m.d.comb += [
                advance.eq(may_load(self.o.valid, self.o.ready)),
                Value.cast(self.o.payload).eq(Mux(pad1, 0, lines.reads[0].data)),
                self.o.valid.eq(valid1),
            ]
        else:
            # Lane l comes from bank (l + rho) % banks; the rotation is registered so that
            # `o` leaves a register.
            out_data = Signal(nb * lane_bits)
            rotated = Cat(*[
                Mux(pad1[lane], 0, Array(lines.reads[(lane + turn) % nb].data
                                         for turn in range(nb))[rho1])
                for lane in range(nb)])
            out_valid = Signal()
            m.d.comb += [
                advance.eq(may_load(out_valid, self.o.ready)),
                Value.cast(self.o.payload).eq(out_data),
                self.o.valid.eq(out_valid),
            ]
            with m.If(advance):
                m.d.sync += [out_valid.eq(valid1), out_data.eq(rotated)]
        m.d.comb += reads.issue.eq(reads.available & (~valid1 | advance))
        with m.If(reads.issue):
            m.d.sync += [valid1.eq(1), pad1.eq(reads.lane_pad), rho1.eq(reads.rho)]
        with m.Elif(advance):
            m.d.sync += valid1.eq(0)

    def _column_counters(self, m, lines, rows):
        """Window-register path, positions and reads: word ``u`` of the window row, read from
        all ``kernel`` banks at once; ``dist``, the units from its start to the end of the
        next window; the row's windows done. Registered with the read: which kernel rows are
        padding, the banks' rotation, and the windows the word completes."""
        g = self._geometry
        k, plan = g.kernel, g.fetch_plan
        u = Signal(range(len(plan)))
        dist = Signal(range(max(d for *_, d in plan) + 1), init=g.end0)
        done = Signal(range(g.out_width))
        count = Signal(range(max(c for _, c, _ in plan) + 1))
        last = Signal()
        fetch = SimpleNamespace(
            issue=Signal(), advance=Signal(),  # `advance`: the word read shifts in
            valid=Signal(), pad=Signal(k), clear=Signal(), rot=Signal(range(k)),
            count=Signal.like(count), dist=Signal.like(dist))
        left = g.out_width - done
        completes = dist < g.word_units
        ends = 1  # windows that end in the word, from `dist` on (more with several pixels)
        if g.word_units > 1:
            ends = Array(C((g.word_units - 1 - d) // g.step_units + 1, count.shape())
                         for d in range(g.word_units))[dist]
        at_end = u == g.row_words - 1  # the row's last word: right-padding windows too
        m.d.comb += [
            count.eq(Mux(at_end, left, Mux(completes, Mux(ends > left, left, ends), 0))),
            last.eq(at_end | (completes & (ends >= left))),
            rows.end.eq(fetch.issue & last),
            fetch.issue.eq(((rows.ahead > rows.need) | (
                (rows.ahead == rows.need) & (lines.col > u))) & (~fetch.valid | fetch.advance)),
        ]
        # Row top + b sits in bank (bank + b) % kernel: the banks before the top's are one
        # slot further round the ring.
        below = _ring_add(rows.base, g.bank_row, self.buffer_depth)
        for bank, port in enumerate(lines.reads):
            base = Mux(rows.bank > bank, below, rows.base) if bank < k - 1 else rows.base
            m.d.comb += [port.addr.eq(base + u), port.en.eq(fetch.issue)]
        with m.If(fetch.issue):
            with m.If(last):
                m.d.sync += [u.eq(0), dist.eq(g.end0), done.eq(0)]
            with m.Else():
                m.d.sync += [u.eq(u + 1), done.eq(done + count),
                             dist.eq(dist + count * g.step_units - g.word_units)]
            pad = [(rows.top + ky < 0) | (rows.top + ky >= g.height) for ky in range(k)]
            m.d.sync += [
                fetch.valid.eq(1), fetch.pad.eq(Cat(*pad)), fetch.clear.eq(u == 0),
                fetch.rot.eq(rows.bank), fetch.count.eq(count), fetch.dist.eq(dist),
            ]
        with m.Elif(fetch.advance):
            m.d.sync += fetch.valid.eq(0)
        return fetch

    def _window_register(self, m, lines, fetch):
        """Window-register path, the register: each column read shifts in; a word that
        completes windows copies the register, itself included, into the snapshot in the
        same cycle (once the snapshot has sent its windows), so the next columns can follow
        at once."""
        g = self._geometry
        k, word = g.kernel, g.in_lanes * self.shape.width
        registers = [Signal(g.register_words * word, name=f"window_row{ky}", reset_less=True)
                     for ky in range(k)]
        window = SimpleNamespace(
            take=Signal(), free=Signal(),  # `free`: the snapshot may take new windows
            rows=[Signal.like(register, name=f"snapshot_row{ky}")
                  for ky, register in enumerate(registers)])
        m.d.comb += [
            fetch.advance.eq(fetch.valid & ((fetch.count == 0) | window.free)),
            window.take.eq(fetch.advance & (fetch.count != 0)),
        ]
        with m.If(fetch.advance):
            for ky, (register, copy) in enumerate(zip(registers, window.rows, strict=True)):
                turn = fetch.rot + ky  # kernel row ky was read from bank (top bank + ky) % K
                data = Array(port.data for port in lines.reads)[
                    Mux(turn >= k, turn - k, turn)] if k > 1 else lines.reads[0].data
                kept = register[word:]
                if g.register_words > 1:
                    # A window row starts on a cleared register: its left padding.
                    kept = Mux(fetch.clear, 0, kept)
                shifted = Cat(kept, Mux(fetch.pad[ky], 0, data))
                m.d.sync += register.eq(shifted)
                with m.If(window.take):
                    m.d.sync += copy.eq(shifted)
        return window

    def _snapshot_output(self, m, fetch, window):
        """Window-register path, output: the snapshot sends its windows one after another,
        each ``simd`` elements a transfer in ``(ky, kx, c)`` order; which part of the snapshot
        a window is depends on where it ends (zeros past the end: the right padding)."""
        g = self._geometry
        bits, offsets = self.shape.width, g.offsets
        lane_bits = g.simd * bits
        windows = Signal.like(fetch.count)  # windows of the snapshot still to send
        word = Signal(range(g.window_words))  # the current window's transfer
        off = Signal(range(offsets[-1] + 1))  # where the current window ends
        send = Signal()
        last_word = word == g.window_words - 1 if g.window_words > 1 else C(1, 1)
        m.d.comb += [
            self.o.valid.eq(windows != 0),
            send.eq(self.o.valid & self.o.ready),
            window.free.eq((windows == 0) | ((windows == 1) & last_word & send)),
        ]
        with m.If(window.take):
            m.d.sync += [windows.eq(fetch.count), word.eq(0), off.eq(fetch.dist)]
        with m.Elif(send & last_word):
            m.d.sync += [windows.eq(windows - 1), word.eq(0), off.eq(off + g.step_units)]
        with m.Elif(send):
            m.d.sync += word.eq(word + 1)
        # A window ending `off` units into the newest word starts `base + off` units in.
        unit_bits, span = g.unit * bits, g.kernel * g.channels // g.unit
        base = g.register_words * g.word_units - span - g.word_units + 1
        past = offsets[-1] - (g.word_units - 1)  # units of right padding, at most
        rows = [Cat(row, C(0, past * unit_bits)) if past > 0 else row for row in window.rows]

        def transfer(end):
            start = (base + end) * unit_bits
            value = Cat(*[row[start:start + span * unit_bits] for row in rows])
            return value.word_select(word, lane_bits) if g.window_words > 1 else value

        payload = Value.cast(self.o.payload)
        if len(offsets) == 1:
            m.d.comb += payload.eq(transfer(offsets[0]))
        else:
            with m.Switch(off):
                for end in offsets:
                    with m.Case(end):
                        m.d.comb += payload.eq(transfer(end))
