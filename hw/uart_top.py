"""The board-side UART protocol (``docs/protocol.md``) around an accelerator core.

:class:`UARTTop` joins the UART receiver and transmitter to the core through four stages,
each its own component:

- :class:`FrameParser` takes the received bytes, checks a request frame (magic, command,
  pixel count, a bench request's repeat count, CRC-8) and writes its pixels into the image
  buffer, a block RAM;
- :class:`ImageFeeder` streams the buffered image into the core, ``N`` times back to back;
- :class:`BenchTimer` counts the clock cycles from the first pixel the core takes to its
  ``N``-th result;
- :class:`ResponseSender` sends the status, the core's last result and (for a bench request)
  the cycle count as response bytes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sw.host import (
    CMD_BENCH,
    CMD_CLASSIFY,
    CMD_LOAD,
    CYCLE_COUNT_BYTES,
    MAX_LOAD_WORDS,
    MAX_PIXELS,
    MAX_REPEATS,
    REQUEST_MAGIC,
    RESPONSE_HEADER_BYTES,
    RESPONSE_MAGIC,
    Status,
    logit_bytes,
)

from .streams import may_load
from .uart_rx import UARTReceiver, check_divisor
from .uart_tx import UARTTransmitter
from .weight_ram import LOAD_LAYOUT

__all__ = [
    "CRC8_POLY",
    "CYCLE_COUNT_BITS",
    "REQUEST_LAYOUT",
    "BenchTimer",
    "FrameParser",
    "ImageFeeder",
    "ResponseSender",
    "UARTTop",
    "crc8_next",
    "request_layout",
    "response_layout",
]

#: CRC-8 generator polynomial without its ``x^8`` term (CRC-8/SMBUS, as ``sw.host.crc8``).
CRC8_POLY = 0x07
#: Width of the bench cycle counter: the response's count field.
CYCLE_COUNT_BITS = 8 * CYCLE_COUNT_BYTES


def request_layout(load=False):
    """What :class:`FrameParser` hands on per request: the response's status (``OK`` or the
    error that ended the request), whether it is a bench request, how many times to run the
    image, and (for a core with loaded weights) whether it is a load request."""
    return data.StructLayout({
        "status": unsigned(8),
        "bench": unsigned(1),
        "repeats": unsigned(MAX_REPEATS.bit_length()),
        **({"load": unsigned(1)} if load else {}),
    })


#: :func:`request_layout` of a core without loaded weights.
REQUEST_LAYOUT = request_layout()
#: The device's idle timeout must cover at least this many characters of 10 bits.
_MIN_TIMEOUT_CHARACTERS = 2


def crc8_next(crc, byte):
    """The CRC-8 after one more ``byte``: a pure XOR network (the CRC is linear over GF(2))."""
    # Run the bitwise shift register symbolically: each bit is the set of input bits of
    # ``crc ^ byte`` whose XOR it is, so the result needs no chain of multiplexers.
    terms = [{index} for index in range(8)]
    for _ in range(8):
        top = terms[7]
        terms = [set(), *terms[:7]]
        for index in range(8):
            if CRC8_POLY >> index & 1:
                terms[index] = terms[index] ^ top
    mixed = Value.cast(crc) ^ Value.cast(byte)
    bits = []
    for term in terms:
        value = Const(0, 1)
        for index in sorted(term):
            value = value ^ mixed[index]
        bits.append(value)
    return Cat(*bits)


def response_layout(*, classes, label_bits, logit_bits, load=False):
    """The payload of :class:`ResponseSender`'s input: everything one response carries (a
    load request's answer is the short response, status only)."""
    return data.StructLayout({
        "status": unsigned(8),
        "bench": unsigned(1),
        "label": unsigned(label_bits),
        "logits": data.ArrayLayout(signed(logit_bits), classes),
        "cycles": unsigned(CYCLE_COUNT_BITS),
        **({"load": unsigned(1)} if load else {}),
    })


def _core_int(core, name, low, high):
    try:
        value = getattr(core, name)
    except AttributeError:
        raise TypeError(f"core must expose a {name!r} property (an accelerator core such as "
                        f"hw.network.Accelerator), not {core!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"core.{name} must be an int, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"core.{name} is {value}; the UART protocol supports {low}..{high}")
    return value


def image_buffer_signature(pixels, lanes):
    """The image buffer's write port: ``pixels // lanes`` words of ``lanes`` bytes, written a
    byte at a time."""
    return WritePort.Signature(addr_width=ceil_log2(pixels // lanes), shape=unsigned(8 * lanes),
                               granularity=8)


class FrameParser(wiring.Component):
    """Checks request frames and writes their pixels into the image buffer.

    Parameters
    ----------
    pixels : int
        Pixels per image, the only pixel count a request may announce.
    timeout_cycles : int
        Idle cycles (``receiving`` low) that end a request part-way.
    lanes : int
        Pixels per buffer word (the core takes a word per transfer); must divide ``pixels``.
    load_words : int
        16-bit words of the core's load image, the only count a load request may announce;
        0 (default) for a core without loaded weights, which refuses load requests.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(8)))
        The received bytes. Always ready, so the receiver never overruns: bytes that arrive
        while a request is served are taken and dropped.
    error : In(1)
        The receiver's framing-error pulse.
    receiving : In(1)
        The receiver's ``busy``; the line counts as idle while it is low.
    write : In(WritePort.Signature(addr_width=ceil_log2(pixels // lanes),
                                   shape=unsigned(8 * lanes), granularity=8))
        The image buffer's write port: pixel ``n`` of a request goes to address
        ``n // lanes``, byte lane ``n % lanes``.
    o : Out(stream.Signature(request_layout(load_words > 0)))
        One transfer per request. ``valid`` rises in the cycle after the checksum byte of a
        good request (status ``OK``), or once the line has been idle for ``timeout_cycles``
        after the byte that ended a bad one (status: the error). Until the transfer, which
        the consumer makes when the response has been sent, the line is ignored; then the
        parser hunts for the next request magic.
    load : Out(stream.Signature(hw.weight_ram.LOAD_LAYOUT))
        With ``load_words`` only: a load request's words as they arrive, for the core (which
        always takes them). Classify and bench requests are refused (``NOT_LOADED``) from the
        first word written until a load request has ended with a good checksum.
    """

    def __init__(self, *, pixels, timeout_cycles, lanes=1, load_words=0):
        if pixels % lanes:
            raise ValueError(f"lanes {lanes} must divide the {pixels} pixels")
        if not 0 <= load_words <= MAX_LOAD_WORDS:
            raise ValueError(f"load_words must be in 0..{MAX_LOAD_WORDS}, not {load_words}")
        self._pixels, self._timeout, self._lanes = pixels, timeout_cycles, lanes
        self._load_words = load_words
        ports = {
            "i": In(stream.Signature(unsigned(8))),
            "error": In(1),
            "receiving": In(1),
            "write": In(image_buffer_signature(pixels, lanes)),
            "o": Out(stream.Signature(request_layout(load_words > 0))),
        }
        if load_words:
            ports["load"] = Out(stream.Signature(LOAD_LAYOUT))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        got, byte = self.i.valid, self.i.payload
        m.d.comb += self.i.ready.eq(1)

        # Cycles the line has been idle, saturating at the timeout.
        idle = Signal(range(self._timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self._timeout)
        with m.If(self.receiving):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        index = Signal(range(self._pixels))  # the pixel
        word = Signal(range(self._pixels // self._lanes))  # the buffer word it goes to
        lane = Signal(range(self._lanes))  # and its byte lane there
        crc = Signal(8)
        low = Signal(8)  # the first byte of a 16-bit field
        m.d.comb += [self.write.addr.eq(word),
                     self.write.data.eq(Cat(*[byte] * self._lanes))]
        counters = (index, word, lane)
        fields = ["COMMAND", "LENGTH_LOW", "LENGTH_HIGH", "REPEATS_LOW", "REPEATS_HIGH",
                  "PIXELS", "CHECKSUM"]
        if self._load_words:
            fields += ["LOAD_LOW", "LOAD_HIGH"]
            self._loaded = Signal()  # the weights are whole: a load has ended well since
            self._chunk = Signal(range(self._load_words))
        with m.FSM(name="frame"):
            with m.State("HUNT"):
                with m.If(got & (byte == REQUEST_MAGIC[0])):
                    m.next = "MAGIC"
            with m.State("MAGIC"):
                with m.If(got):
                    with m.If(byte == REQUEST_MAGIC[1]):
                        m.d.sync += crc.eq(0)
                        m.next = "COMMAND"
                    with m.Elif(byte != REQUEST_MAGIC[0]):
                        m.next = "HUNT"
            for state in fields:
                with m.State(state):
                    # A framing error and a timeout exclude a received byte in the same cycle.
                    with m.If(self.error):
                        self._abort(m, Status.FRAMING)
                    with m.Elif(timed_out):
                        self._abort(m, Status.TIMEOUT)
                    with m.Elif(got):
                        m.d.sync += crc.eq(crc8_next(crc, byte))
                        self._take(m, state, byte, Cat(low, byte), low, counters, crc)
            with m.State("DRAIN"):
                # The rest of a bad request is ignored until the line falls quiet, so none of
                # its bytes can be mistaken for the start of the next request.
                with m.If(timed_out):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "HUNT"
        return m

    def _abort(self, m, status):
        m.d.sync += self.o.payload.status.eq(status)
        m.next = "DRAIN"

    def _take(self, m, state, byte, both, low, counters, crc):
        """The received ``byte`` in field ``state``; ``both`` is a 16-bit field's value;
        ``counters`` are the pixel's index, its buffer word and its byte lane there."""
        index, word, lane = counters
        request = self.o.payload
        load = self._load_words > 0
        # A core without loaded weights gets no load branches at all (``first`` opens the
        # chain of the others).
        first = m.If
        if state == "COMMAND":
            if load:
                m.d.sync += request.load.eq(byte == CMD_LOAD)
                with m.If(byte == CMD_LOAD):
                    m.d.sync += [request.bench.eq(0), request.repeats.eq(1)]
                    m.next = "LENGTH_LOW"
                with m.Elif(((byte == CMD_CLASSIFY) | (byte == CMD_BENCH)) & ~self._loaded):
                    self._abort(m, Status.NOT_LOADED)
                first = m.Elif
            with first(byte == CMD_CLASSIFY):
                m.d.sync += [request.bench.eq(0), request.repeats.eq(1)]
                m.next = "LENGTH_LOW"
            with m.Elif(byte == CMD_BENCH):
                m.d.sync += request.bench.eq(1)
                m.next = "LENGTH_LOW"
            with m.Else():
                self._abort(m, Status.COMMAND)
        elif state in ("LENGTH_LOW", "REPEATS_LOW"):
            m.d.sync += low.eq(byte)
            m.next = state.replace("LOW", "HIGH")
        elif state == "LENGTH_HIGH":
            if load:
                with m.If(request.load):
                    with m.If(both != self._load_words):
                        self._abort(m, Status.LENGTH)
                    with m.Else():
                        m.d.sync += self._chunk.eq(0)
                        m.next = "LOAD_LOW"
                first = m.Elif
            with first(both != self._pixels):
                self._abort(m, Status.LENGTH)
            with m.Elif(request.bench):
                m.next = "REPEATS_LOW"
            with m.Else():
                m.d.sync += [counter.eq(0) for counter in counters]
                m.next = "PIXELS"
        elif state == "REPEATS_HIGH":
            with m.If(both == 0):
                self._abort(m, Status.REPEATS)
            with m.Else():
                m.d.sync += [request.repeats.eq(both),
                             *[counter.eq(0) for counter in counters]]
                m.next = "PIXELS"
        elif state == "LOAD_LOW":
            m.d.sync += low.eq(byte)
            m.next = "LOAD_HIGH"
        elif state == "LOAD_HIGH":
            # The word goes to the core now: the weights are no longer whole until the
            # request's checksum is found good.
            m.d.comb += [self.load.valid.eq(1), self.load.payload.data.eq(both),
                         self.load.payload.first.eq(self._chunk == 0)]
            m.d.sync += self._loaded.eq(0)
            with m.If(self._chunk == self._load_words - 1):
                m.next = "CHECKSUM"
            with m.Else():
                m.d.sync += self._chunk.eq(self._chunk + 1)
                m.next = "LOAD_LOW"
        elif state == "PIXELS":
            m.d.comb += self.write.en.eq(1 << lane)
            with m.If(index == self._pixels - 1):
                m.next = "CHECKSUM"
            with m.Else():
                m.d.sync += index.eq(index + 1)
                with m.If(lane == self._lanes - 1):
                    m.d.sync += [lane.eq(0), word.eq(word + 1)]
                with m.Else():
                    m.d.sync += lane.eq(lane + 1)
        else:
            with m.If(byte == crc):
                m.d.sync += request.status.eq(Status.OK)
                if load:
                    with m.If(request.load):
                        m.d.sync += self._loaded.eq(1)
                m.next = "DONE"
            with m.Else():
                self._abort(m, Status.CHECKSUM)


class ImageFeeder(wiring.Component):
    """Streams the image buffer into the core ``N`` times back to back, at the core's pace.

    Parameters
    ----------
    pixels : int
        Pixels per image.
    lanes : int
        Pixels per buffer word and per transfer on ``o``; must divide ``pixels``.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(16)))
        Jobs: how many times ``N`` (at least 1) to send the image. Taken while the feeder is
        idle; the first pixel is read in the same cycle.
    read : In(ReadPort.Signature(addr_width=ceil_log2(pixels // lanes),
                                 shape=unsigned(8 * lanes)))
        The image buffer's (synchronous) read port.
    o : Out(stream.Signature(unsigned(8 * lanes)))
        The pixels, image after image, ``lanes`` a transfer (the first in the low byte). The
        next word is read in every cycle in which the waiting one is taken, so ``o.valid``
        stays high from the first word to the last: the core is fed in every cycle it is
        ready, also across images.
    """

    def __init__(self, *, pixels, lanes=1):
        if pixels % lanes:
            raise ValueError(f"lanes {lanes} must divide the {pixels} pixels")
        self._words = pixels // lanes
        super().__init__({
            "i": In(stream.Signature(unsigned(MAX_REPEATS.bit_length()))),
            "read": In(ReadPort.Signature(addr_width=ceil_log2(self._words),
                                          shape=unsigned(8 * lanes))),
            "o": Out(stream.Signature(unsigned(8 * lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        index = Signal(range(self._words))  # the next word to read
        images = Signal.like(self.i.payload)  # images left to read, the current one included
        running = Signal()  # pixels are left to read
        start, fetch = Signal(), Signal()
        address, remaining = Signal.like(index), Signal.like(images)
        m.d.comb += [
            self.i.ready.eq(~running & ~self.o.valid),
            start.eq(self.i.valid & self.i.ready),
            address.eq(Mux(start, 0, index)),
            remaining.eq(Mux(start, self.i.payload, images)),
            # The read port's data register is the payload: it only advances when the
            # waiting pixel is taken (or none waits), so it holds while the core stalls.
            fetch.eq((running | start) & may_load(self.o.valid, self.o.ready)),
            self.read.en.eq(fetch),
            self.read.addr.eq(address),
            self.o.payload.eq(self.read.data),
        ]
        with m.If(fetch):
            m.d.sync += self.o.valid.eq(1)
            with m.If(address == self._words - 1):
                # The next image starts from its first word in the next cycle: no bubble.
                m.d.sync += [index.eq(0), images.eq(remaining - 1),
                             running.eq(remaining != 1)]
            with m.Else():
                m.d.sync += [index.eq(address + 1), images.eq(remaining), running.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class BenchTimer(wiring.Component):
    """Counts clock cycles from a run's first input transfer to its last result.

    Attributes
    ----------
    clear : In(1)
        Zeroes the count and arms the timer for the next ``start``.
    start : In(1)
        An input transfer into the core; the first one after ``clear`` starts the count.
    stop : In(1)
        The last result is on the core's output; the count stops in this cycle.
    count : Out(CYCLE_COUNT_BITS)
        Cycles from the ``start`` cycle to the ``stop`` cycle (1 if ``stop`` comes in the
        cycle after ``start``), 0 until counting; it stops at ``2**CYCLE_COUNT_BITS - 1``.
    """

    clear: In(1)
    start: In(1)
    stop: In(1)
    count: Out(CYCLE_COUNT_BITS)

    def elaborate(self, platform):
        m = Module()
        armed = Signal()  # cleared, waiting for the first input transfer
        counting = Signal()
        with m.If(self.clear):
            m.d.sync += [self.count.eq(0), armed.eq(1), counting.eq(0)]
        with m.Elif(counting):
            # Saturate rather than wrap: an overlong run must not read as a short one.
            with m.If(~self.count.all()):
                m.d.sync += self.count.eq(self.count + 1)
            with m.If(self.stop):
                m.d.sync += counting.eq(0)
        with m.Elif(armed & self.start):
            m.d.sync += [armed.eq(0), counting.eq(1)]
        return m


class ResponseSender(wiring.Component):
    """Sends one response: header, logits, a bench result's cycle count, CRC-8.

    Parameters
    ----------
    classes, label_bits, logit_bits : int
        The core's.
    load : bool
        The core has loaded weights: a response may answer a load request (the short
        response, status only).

    Attributes
    ----------
    i : In(stream.Signature(response_layout(...)))
        The response to send. It is taken in the cycle its last byte is, so its payload (the
        core's result, stalled on the core's output) needs no copy here. A ``status`` other
        than ``OK`` sends the 7-byte error response; ``bench`` adds the ``cycles`` count.
    o : Out(stream.Signature(unsigned(8)))
        The response's bytes, for the transmitter; valid while ``i`` is.
    """

    def __init__(self, *, classes, label_bits, logit_bits, load=False):
        self._classes, self._width, self._load = classes, logit_bytes(logit_bits), load
        super().__init__({
            "i": In(stream.Signature(response_layout(classes=classes, label_bits=label_bits,
                                                     logit_bits=logit_bits, load=load))),
            "o": Out(stream.Signature(unsigned(8))),
        })

    def elaborate(self, platform):
        m = Module()
        classes, width, header = self._classes, self._width, RESPONSE_HEADER_BYTES
        response, out = self.i.payload, self.o.payload
        index = Signal(range(header + classes * width + CYCLE_COUNT_BYTES + 1))
        crc = Signal(8)
        ok = Signal()  # a result: label, logits (and a bench's count) follow the header
        result = response.status == Status.OK
        if self._load:
            result = result & ~response.load
        m.d.comb += ok.eq(result)
        # The body after the header, byte after byte: logits sign-extended to whole bytes,
        # then the count (sent only in bench results).
        extended = []
        for k in range(classes):
            logit = Signal(signed(8 * width), name=f"logit_{k}")
            m.d.comb += logit.eq(response.logits[k])
            extended.append(logit)
        body = Cat(*extended, response.cycles)
        offset = Signal(range(classes * width + CYCLE_COUNT_BYTES + 1))
        last = Signal.like(index)
        m.d.comb += [
            offset.eq(index - header),
            last.eq(Mux(ok, header + classes * width + Mux(response.bench, CYCLE_COUNT_BYTES, 0),
                        header)),
        ]
        with m.Switch(index):
            with m.Case(0):
                m.d.comb += out.eq(RESPONSE_MAGIC[0])
            with m.Case(1):
                m.d.comb += out.eq(RESPONSE_MAGIC[1])
            with m.Case(2):
                m.d.comb += out.eq(response.status)
            with m.Case(3):
                m.d.comb += out.eq(Mux(ok, response.label, 0))
            with m.Case(4):
                m.d.comb += out.eq(Mux(ok, classes, 0))
            with m.Case(5):
                m.d.comb += out.eq(Mux(ok, width, 0))
            with m.Default():
                m.d.comb += out.eq(Mux(index == last, crc, body.word_select(offset, 8)))
        m.d.comb += self.o.valid.eq(self.i.valid)
        with m.If(self.o.valid & self.o.ready):
            with m.If(index == last):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += [index.eq(0), crc.eq(0)]
            with m.Else():
                m.d.sync += index.eq(index + 1)
                with m.If(index >= 2):  # the CRC covers everything after the magic
                    m.d.sync += crc.eq(crc8_next(crc, out))
        return m


class UARTTop(wiring.Component):
    """Frames requests from a UART into images for ``core`` and its results into responses.

    Parameters
    ----------
    core : wiring.Component
        The accelerator: ``i`` takes one image's pixels (raster order, ``input_lanes``
        bytes per transfer, 1 if the core has no such property), ``o`` gives one
        ``{label, logits}`` transfer per image; it has the properties ``pixels``,
        ``classes``, ``logit_bits`` and ``label_bits``. It becomes a submodule.
    divisor : int
        Clock cycles per bit, ``clock_hz // baud`` (at least 4).
    timeout_cycles : int
        Idle cycles (line high, no character in progress) that end a request part-way; at
        least ``20 * divisor`` (two characters). ``clock_hz // 20`` (50 ms) suits hosts.

    Attributes
    ----------
    rx : In(1)
        UART line from the host (idle high).
    tx : Out(1)
        UART line to the host (idle high).
    last_label : Out(core.label_bits)
        The label of the last result answered (0 after reset), e.g. for LEDs.
    status : Out(8)
        The status code of the last response sent (``sw.host.Status``; 0 after reset).

    Notes
    -----
    A request's pixels are written into a buffer (a block RAM of ``pixels`` bytes in words
    of ``input_lanes`` bytes, synchronous read) and only streamed into ``core`` once the
    whole request, checksum included, has arrived intact; so the core only ever sees whole
    images, whatever arrives on the line.
    Any error part-way through a request (framing error, unknown command, wrong pixel count,
    a bench repeat count of 0, bad checksum, idle timeout) discards it; the device then
    ignores the line until it has been idle for ``timeout_cycles``, sends the error
    response, and hunts for the next request magic. Bytes arriving while a request is served
    are ignored (the host waits for each response before sending the next request).

    A bench request streams the image into the core ``N`` times back to back, feeding it in
    every cycle it is ready, and takes every result but the last as it appears, so the core
    never waits for the board. :class:`BenchTimer` counts the cycles from the first pixel
    transfer to the cycle the ``N``-th result appears on ``core.o``: the latency of one image
    plus ``N - 1`` image intervals. The response carries that count and the last result.
    """

    def __init__(self, core, *, divisor, timeout_cycles):
        self._divisor = check_divisor(divisor)
        for name in ("i", "o"):
            if not hasattr(core, name):
                raise TypeError(f"core must have stream port {name!r}, not {core!r}")
        self._pixels = _core_int(core, "pixels", 1, MAX_PIXELS)
        self._lanes = _core_int(core, "input_lanes", 1, 64) if hasattr(
            core, "input_lanes") else 1
        if self._pixels % self._lanes:
            raise ValueError(f"core.input_lanes ({self._lanes}) must divide core.pixels "
                             f"({self._pixels})")
        self._classes = _core_int(core, "classes", 1, 255)
        self._label_bits = _core_int(core, "label_bits", 1, 8)
        self._logit_bits = _core_int(core, "logit_bits", 1, 64)
        if isinstance(timeout_cycles, bool) or not isinstance(timeout_cycles, int):
            raise TypeError(f"timeout_cycles must be an int, not {timeout_cycles!r}")
        least = 10 * _MIN_TIMEOUT_CHARACTERS * divisor
        if timeout_cycles < least:
            raise ValueError(f"timeout_cycles must be at least {least} (two characters at "
                             f"divisor {divisor}), not {timeout_cycles}")
        self._timeout = timeout_cycles
        self._core = core
        self._load_words = getattr(core, "load_words", 0) if hasattr(core, "load") else 0
        if self._load_words > MAX_LOAD_WORDS:
            raise ValueError(f"core.load_words is {self._load_words}; a load request carries at "
                             f"most {MAX_LOAD_WORDS}")
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "last_label": Out(self._label_bits),
            "status": Out(8),
        })

    @property
    def core(self):
        """The accelerator core inside."""
        return self._core

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    @property
    def timeout_cycles(self):
        """Idle cycles that abort a request part-way (and precede an error response)."""
        return self._timeout

    @property
    def pixels(self):
        """Pixels per request (the core's)."""
        return self._pixels

    @property
    def classes(self):
        """Logits per response (the core's)."""
        return self._classes

    @property
    def logit_bytes(self):
        """Bytes per logit in a response: ``ceil(core.logit_bits / 8)``."""
        return logit_bytes(self._logit_bits)

    @property
    def response_bytes(self):
        """Length of a classify result; error responses are 7 bytes."""
        return RESPONSE_HEADER_BYTES + self._classes * self.logit_bytes + 1

    @property
    def bench_response_bytes(self):
        """Length of a bench result: a classify result and the cycle count."""
        return self.response_bytes + CYCLE_COUNT_BYTES

    def elaborate(self, platform):
        m = Module()
        core = self._core
        m.submodules.core = core
        m.submodules.receiver = receiver = UARTReceiver(divisor=self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(divisor=self._divisor)
        m.submodules.parser = parser = FrameParser(pixels=self._pixels,
                                                   timeout_cycles=self._timeout,
                                                   lanes=self._lanes,
                                                   load_words=self._load_words)
        m.submodules.buffer = buffer = Memory(shape=unsigned(8 * self._lanes),
                                              depth=self._pixels // self._lanes, init=[])
        m.submodules.feeder = feeder = ImageFeeder(pixels=self._pixels, lanes=self._lanes)
        m.submodules.timer = timer = BenchTimer()
        m.submodules.sender = sender = ResponseSender(
            classes=self._classes, label_bits=self._label_bits, logit_bits=self._logit_bits,
            load=self._load_words > 0)

        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx),
                     parser.error.eq(receiver.error), parser.receiving.eq(receiver.busy)]
        wiring.connect(m, receiver.o, parser.i)
        wiring.connect(m, parser.write, buffer.write_port(granularity=8))
        wiring.connect(m, feeder.read, buffer.read_port())
        # The core's pixels are an ``ArrayLayout`` of bytes: joined by hand, not connect().
        m.d.comb += [core.i.valid.eq(feeder.o.valid), feeder.o.ready.eq(core.i.ready),
                     Value.cast(core.i.payload).eq(feeder.o.payload)]
        wiring.connect(m, sender.o, transmitter.i)
        if self._load_words:
            wiring.connect(m, parser.load, core.load)
        self._serve(m, parser.o, feeder.i, timer, sender.i)
        return m

    def _serve(self, m, request, job, timer, response):
        """Serve each request from the parser: run the core, take its results, respond."""
        core = self._core
        error = Signal()
        # A request with a result to wait for (a load request is answered as soon as it is
        # checked: no job, no result).
        result = ~error
        if self._load_words:
            result = Signal()
            m.d.comb += result.eq(~error & ~request.payload.load)
        launched = Signal()  # the feeder has taken this request's job
        finished = Signal()  # the last result is waiting on the core's output
        results = Signal.like(request.payload.repeats)  # results to come, the last included
        last_result = Signal()
        m.d.comb += [
            error.eq(request.payload.status != Status.OK),
            job.valid.eq(request.valid & result & ~launched),
            job.payload.eq(request.payload.repeats),
            last_result.eq(launched & core.o.valid & (results == 1)),
            # Results before the last are taken the cycle they appear and dropped, so a
            # bench run never holds the core back; the last one waits for its response.
            core.o.ready.eq(launched & (results != 1)),
            timer.clear.eq(job.valid & job.ready),
            timer.start.eq(core.i.valid & core.i.ready),
            timer.stop.eq(last_result),
            response.valid.eq(request.valid & ((~result if self._load_words else error)
                                               | finished)),
            response.payload.status.eq(request.payload.status),
            response.payload.bench.eq(request.payload.bench),
            response.payload.label.eq(core.o.payload.label),
            response.payload.logits.eq(core.o.payload.logits),
            response.payload.cycles.eq(timer.count),
        ]
        if self._load_words:
            m.d.comb += response.payload.load.eq(request.payload.load)
        with m.If(job.valid & job.ready):
            m.d.sync += [launched.eq(1), results.eq(request.payload.repeats)]
        with m.If(core.o.valid & core.o.ready):
            m.d.sync += results.eq(results - 1)
        with m.If(last_result):
            m.d.sync += finished.eq(1)
        with m.If(response.valid & response.ready):
            # The response is out: the request is done (the parser hunts again) and the
            # core's result, sent, is released.
            m.d.comb += request.ready.eq(1)
            m.d.sync += [launched.eq(0), finished.eq(0), self.status.eq(request.payload.status)]
            with m.If(result):
                m.d.comb += core.o.ready.eq(1)
                m.d.sync += self.last_label.eq(core.o.payload.label)
