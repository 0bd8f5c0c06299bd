"""The board-side UART protocol (``docs/protocol.md``) around an accelerator core."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw.host import (
    CMD_CLASSIFY,
    MAX_PIXELS,
    REQUEST_MAGIC,
    RESPONSE_HEADER_BYTES,
    RESPONSE_MAGIC,
    Status,
    logit_bytes,
)

from .uart_rx import UARTReceiver, check_divisor
from .uart_tx import UARTTransmitter

__all__ = ["CRC8_POLY", "UARTTop", "crc8_next"]

#: CRC-8 generator polynomial without its ``x^8`` term (CRC-8/SMBUS, as ``sw.host.crc8``).
CRC8_POLY = 0x07
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


class UARTTop(wiring.Component):
    """Frames requests from a UART into images for ``core`` and its results into responses.

    Parameters
    ----------
    core : wiring.Component
        The accelerator: ``i`` takes one image's pixels (one byte per transfer, raster
        order), ``o`` gives one ``{label, logits}`` transfer per image; it has the properties
        ``pixels``, ``classes``, ``logit_bits`` and ``label_bits``. It becomes a submodule.
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
        The label of the last classification answered (0 after reset), e.g. for LEDs.
    status : Out(8)
        The status code of the last response sent (``sw.host.Status``; 0 after reset).

    Notes
    -----
    A request's pixels are written into a buffer (a block RAM of ``pixels`` bytes, synchronous
    read) and only streamed into ``core`` once the whole request, checksum included, has
    arrived intact; so the core only ever sees whole images, whatever arrives on the line.
    Any error part-way through a request (framing error, unknown command, wrong pixel count,
    bad checksum, idle timeout) discards it; the device then ignores the line until it has
    been idle for ``timeout_cycles``, sends the error response, and hunts for the next
    request magic. Bytes arriving while an image is classified or a response is sent are
    ignored (the host waits for each response before sending the next request).
    """

    def __init__(self, core, *, divisor, timeout_cycles):
        self._divisor = check_divisor(divisor)
        for name in ("i", "o"):
            if not hasattr(core, name):
                raise TypeError(f"core must have stream port {name!r}, not {core!r}")
        self._pixels = _core_int(core, "pixels", 1, MAX_PIXELS)
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
        """Length of a successful response; error responses are 7 bytes."""
        return RESPONSE_HEADER_BYTES + self._classes * self.logit_bytes + 1

    def elaborate(self, platform):
        m = Module()
        core, pixels, classes = self._core, self._pixels, self._classes
        width = self.logit_bytes

        m.submodules.core = core
        m.submodules.receiver = receiver = UARTReceiver(divisor=self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(divisor=self._divisor)
        # The receiver is always read, so it never overruns: bytes that arrive while the
        # device is busy are read and dropped here.
        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx),
                     receiver.o.ready.eq(1)]
        got, byte = receiver.o.valid, receiver.o.payload

        # Cycles the line has been idle, saturating at the timeout.
        idle = Signal(range(self._timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self._timeout)
        with m.If(receiver.busy):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        m.submodules.buffer = buffer = Memory(shape=unsigned(8), depth=pixels, init=[])
        write = buffer.write_port()
        read = buffer.read_port()

        index = Signal(range(max(pixels, RESPONSE_HEADER_BYTES + classes * width) + 1))
        crc = Signal(8)
        code = Signal(8)  # status of the response being prepared
        length_low = Signal(8)
        fetched = Signal()  # every pixel has been read from the buffer
        pixel_valid = Signal()  # the read port's data is a pixel not yet taken by the core
        fetch = Signal()
        m.d.comb += [
            write.addr.eq(index),
            write.data.eq(byte),
            read.addr.eq(index),
            core.i.valid.eq(pixel_valid),
            Value.cast(core.i.payload).eq(read.data),
            fetch.eq(~pixel_valid | core.i.ready),
            read.en.eq(0),  # the port's enable defaults to 1; it only reads in RUN
        ]

        # The response, byte by byte; the core's result stays on its (stalled) output stream
        # until the last byte is out, so it needs no copy here.
        ok = Signal()
        m.d.comb += ok.eq(code == Status.OK)
        extended = []
        for k in range(classes):
            logit = Signal(signed(8 * width), name=f"logit_{k}")
            m.d.comb += logit.eq(core.o.payload.logits[k])
            extended.append(logit)
        flat = Cat(*extended)
        last = Signal(range(RESPONSE_HEADER_BYTES + classes * width + 1))
        m.d.comb += last.eq(Mux(ok, RESPONSE_HEADER_BYTES + classes * width,
                                RESPONSE_HEADER_BYTES))
        logit_byte = Signal(range(classes * width + 1))
        m.d.comb += logit_byte.eq(index - RESPONSE_HEADER_BYTES)
        out = transmitter.i.payload
        with m.Switch(index):
            with m.Case(0):
                m.d.comb += out.eq(RESPONSE_MAGIC[0])
            with m.Case(1):
                m.d.comb += out.eq(RESPONSE_MAGIC[1])
            with m.Case(2):
                m.d.comb += out.eq(code)
            with m.Case(3):
                m.d.comb += out.eq(Mux(ok, core.o.payload.label, 0))
            with m.Case(4):
                m.d.comb += out.eq(Mux(ok, classes, 0))
            with m.Case(5):
                m.d.comb += out.eq(Mux(ok, width, 0))
            with m.Default():
                m.d.comb += out.eq(Mux(index == last, crc, flat.word_select(logit_byte, 8)))

        def abort(status):
            m.d.sync += code.eq(status)
            m.next = "DRAIN"

        with m.FSM(name="protocol"):
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
            for state in ("COMMAND", "LENGTH_LOW", "LENGTH_HIGH", "PIXELS", "CHECKSUM"):
                with m.State(state):
                    # A framing error and a timeout exclude a received byte in the same cycle.
                    with m.If(receiver.error):
                        abort(Status.FRAMING)
                    with m.Elif(timed_out):
                        abort(Status.TIMEOUT)
                    with m.Elif(got):
                        m.d.sync += crc.eq(crc8_next(crc, byte))
                        if state == "COMMAND":
                            with m.If(byte == CMD_CLASSIFY):
                                m.next = "LENGTH_LOW"
                            with m.Else():
                                abort(Status.COMMAND)
                        elif state == "LENGTH_LOW":
                            m.d.sync += length_low.eq(byte)
                            m.next = "LENGTH_HIGH"
                        elif state == "LENGTH_HIGH":
                            with m.If(Cat(length_low, byte) == pixels):
                                m.d.sync += index.eq(0)
                                m.next = "PIXELS"
                            with m.Else():
                                abort(Status.LENGTH)
                        elif state == "PIXELS":
                            m.d.comb += write.en.eq(1)
                            with m.If(index == pixels - 1):
                                m.next = "CHECKSUM"
                            with m.Else():
                                m.d.sync += index.eq(index + 1)
                        else:
                            with m.If(byte == crc):
                                m.d.sync += [index.eq(0), fetched.eq(0)]
                                m.next = "RUN"
                            with m.Else():
                                abort(Status.CHECKSUM)
            with m.State("DRAIN"):
                # The rest of a bad request is ignored until the line falls quiet, so none of
                # its bytes can be mistaken for the start of the next request.
                with m.If(timed_out):
                    m.d.sync += [index.eq(0), crc.eq(0)]
                    m.next = "RESPOND"
            with m.State("RUN"):
                # The read port's data register is the core's payload: it only advances when
                # the core takes the pixel (or none is waiting), so it holds while stalled.
                with m.If(fetch):
                    with m.If(~fetched):
                        m.d.comb += read.en.eq(1)
                        m.d.sync += [pixel_valid.eq(1), index.eq(index + 1)]
                        with m.If(index == pixels - 1):
                            m.d.sync += fetched.eq(1)
                    with m.Else():
                        m.d.sync += pixel_valid.eq(0)
                        m.next = "RESULT"
            with m.State("RESULT"):
                with m.If(core.o.valid):
                    m.d.sync += [code.eq(Status.OK), index.eq(0), crc.eq(0)]
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += transmitter.i.valid.eq(1)
                with m.If(transmitter.i.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If((index >= 2) & (index != last)):
                        m.d.sync += crc.eq(crc8_next(crc, out))
                    with m.If(index == last):
                        m.d.sync += self.status.eq(code)
                        with m.If(ok):
                            # The core's result has been sent: release it.
                            m.d.comb += core.o.ready.eq(1)
                            m.d.sync += self.last_label.eq(core.o.payload.label)
                        m.next = "HUNT"

        return m
