"""UART receiver: 8 data bits, no parity, 1 stop bit (8N1), least significant bit first."""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .streams import may_load

__all__ = ["MAX_BAUD_ERROR", "MIN_DIVISOR", "UARTReceiver", "check_divisor", "uart_clock_filter",
           "uart_divisor"]

#: Fewest clock cycles per bit: below this, mid-bit sampling has no margin left.
MIN_DIVISOR = 4
#: Largest relative difference between the divided clock and the requested baud rate: the
#: receiver on the other end samples ten bits on its own clock, so the error adds up over a
#: character; 2 % leaves most of the usual ±4 % budget to the oscillators.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clock_hz, baud):
    """The divisor (clock cycles per bit) for ``baud`` at ``clock_hz``, and its rate error.

    Returns
    -------
    divisor : int
        ``round(clock_hz / baud)``.
    error : float
        ``clock_hz / divisor / baud - 1`` (positive: the line runs fast).

    Raises
    ------
    ValueError
        The divisor would be below :data:`MIN_DIVISOR` or the error above
        :data:`MAX_BAUD_ERROR`.
    """
    if not baud > 0 or not clock_hz > 0:
        raise ValueError(f"baud and clock must be positive, not {baud!r} and {clock_hz!r}")
    divisor = max(1, round(clock_hz / baud))
    error = clock_hz / divisor / baud - 1
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} clock cycles per bit, "
                         f"but a {clock_hz / 1e6:g} MHz clock gives {clock_hz / baud:.2f}")
    if abs(error) > MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud from a {clock_hz / 1e6:g} MHz clock is off by "
                         f"{100 * error:+.2f}% (divisor {divisor}); at most "
                         f"{100 * MAX_BAUD_ERROR:g}% works reliably")
    return divisor, error


def uart_clock_filter(baud):
    """A predicate on clock frequencies (MHz) that :func:`uart_divisor` accepts for ``baud``.

    For :func:`hw.pll.pll_settings` ``accept=``: the PLL search then skips clocks the UART
    cannot divide down to ``baud`` closely enough.
    """
    def accept(clock_mhz):
        try:
            uart_divisor(float(clock_mhz) * 1e6, baud)
        except ValueError:
            return False
        return True
    return accept


def check_divisor(divisor):
    """Validate a UART ``divisor`` (clock cycles per bit) and return it.

    Raises
    ------
    TypeError
        If ``divisor`` is not an int.
    ValueError
        If it is below :data:`MIN_DIVISOR`.
    """
    if isinstance(divisor, bool) or not isinstance(divisor, int):
        raise TypeError(f"divisor must be an int (clock cycles per bit), not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} clock cycles per bit "
                         f"(clock_hz // baud), not {divisor}")
    return divisor


class UARTReceiver(wiring.Component):
    """Receives 8N1 characters from an asynchronous serial line.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, ``clock_hz // baud`` (at least :data:`MIN_DIVISOR`).

    Attributes
    ----------
    rx : In(1)
        The serial line, asynchronous to the clock; idle high.
    o : Out(stream.Signature(unsigned(8)))
        Received characters, one transfer each.
    error : Out(1)
        One-cycle pulse when a character's stop bit is low (framing error, or a break); that
        character is dropped.
    overrun : Out(1)
        One-cycle pulse when a character completes while the previous one still waits on
        ``o`` (``o.ready`` low); the new character is dropped, the waiting one is kept.
    busy : Out(1)
        High while the line is low or a character is being received: a consumer measures the
        line's idle time as the cycles with ``busy`` low.

    Notes
    -----
    ``rx`` passes a 2-flip-flop synchronizer (reset value 1, the idle level). A start bit
    must stay low for ``divisor // 2`` consecutive cycles; a shorter low pulse is a glitch
    and ignored. Data bits and the stop bit are then sampled every ``divisor`` cycles, in the
    middle of each bit. The receiver is ready for the next start bit from the middle of the
    stop bit, so a transmitter slightly faster than ``clock_hz / divisor`` is tolerated
    (about ±4 % in total with an exact divisor). After a framing error it waits for the
    line to return high, so a break (line held low) gives a single ``error`` pulse.
    ``o.valid`` rises ``3 + divisor // 2 + 9 * divisor`` cycles after the first clock edge
    that sees the falling edge of the start bit on ``rx``.
    """

    def __init__(self, *, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(unsigned(8))),
            "error": Out(1),
            "overrun": Out(1),
            "busy": Out(1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor
        half = divisor // 2

        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(divisor))
        bit = Signal(range(8))
        shift = Signal(8)
        done = Signal()  # a character with a good stop bit is complete this cycle

        m.d.sync += [self.error.eq(0), self.overrun.eq(0)]
        with m.FSM(name="rx_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(half - 1)
                    m.next = "START"
            with m.State("START"):
                # Any high sample in the first half of the start bit rejects it as a glitch.
                with m.If(line):
                    m.next = "IDLE"
                with m.Elif(timer == 0):
                    m.d.sync += [timer.eq(divisor - 1), bit.eq(0)]
                    m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    # Least significant bit first: shift in from the top.
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), timer.eq(divisor - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.comb += done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | ~line)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(done):
            with m.If(may_load(self.o.valid, self.o.ready)):
                m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += self.overrun.eq(1)
        return m
