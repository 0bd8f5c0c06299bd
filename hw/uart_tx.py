"""UART transmitter: 8 data bits, no parity, 1 stop bit (8N1), least significant bit first."""

from amaranth.hdl import C, Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .uart_rx import check_divisor

__all__ = ["UARTTransmitter"]


class UARTTransmitter(wiring.Component):
    """Sends each byte of a stream as one 8N1 character.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, ``clock_hz // baud`` (at least 4).

    Attributes
    ----------
    i : In(stream.Signature(unsigned(8)))
        Bytes to send; ``i.ready`` is high while the line is idle and in the last cycle of a
        stop bit, so back-to-back bytes leave no gap.
    tx : Out(1)
        The serial line, driven straight from a flip-flop (no glitches); idle high.

    Notes
    -----
    Each character is a start bit (low), the 8 data bits least significant first and a stop
    bit (high), each exactly ``divisor`` cycles: with ``i.valid`` held high one byte goes out
    every ``10 * divisor`` cycles. ``tx`` starts its start bit the cycle after the transfer.
    """

    def __init__(self, *, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(unsigned(8))),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        # The line level is the shift register's low bit; ones shift in, so it idles high.
        line = Signal(10, init=(1 << 10) - 1)
        remaining = Signal(range(11))  # bits of the current character still on the line
        timer = Signal(range(divisor))
        bit_end = Signal()
        m.d.comb += [
            bit_end.eq(timer == 0),
            self.i.ready.eq((remaining == 0) | ((remaining == 1) & bit_end)),
            self.tx.eq(line[0]),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [line.eq(Cat(C(0, 1), self.i.payload, C(1, 1))), remaining.eq(10),
                         timer.eq(divisor - 1)]
        with m.Elif(remaining != 0):
            with m.If(bit_end):
                m.d.sync += [line.eq(Cat(line[1:], C(1, 1))), remaining.eq(remaining - 1),
                             timer.eq(divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
