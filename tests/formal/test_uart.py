# amaranth: UnusedElaboratable=no
"""The UART receiver on a free line, and transmitter -> receiver as one stream component."""

import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.uart_rx import MIN_DIVISOR, UARTReceiver
from hw.uart_tx import UARTTransmitter
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: The fewest cycles per bit: a character is 40 cycles.
DIVISOR = MIN_DIVISOR


class Loopback(wiring.Component):
    """A transmitter's line into a receiver: bytes in on ``i``, the same bytes out on ``o``.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(8)))
    o : Out(stream.Signature(unsigned(8)))
    overrun : Out(1)
        The receiver dropped a character: ``o`` still held the previous one.
    """

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__({
            "i": In(stream.Signature(unsigned(8))),
            "o": Out(stream.Signature(unsigned(8))),
            "overrun": Out(1),
        })

    @property
    def latency(self):
        """Cycles from a transfer on ``i`` to ``o.valid``: the start bit leaves the next
        cycle, and the receiver's documented ``3 + divisor // 2 + 9 * divisor`` follow."""
        return 1 + 3 + self.divisor // 2 + 9 * self.divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = UARTTransmitter(divisor=self.divisor)
        m.submodules.rx = rx = UARTReceiver(divisor=self.divisor)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        wiring.connect(m, rx.o, wiring.flipped(self.o))
        m.d.comb += [rx.rx.eq(tx.tx), self.overrun.eq(rx.overrun)]
        return m


def receiver(checks=None, **options):
    """The receiver alone, its line driven freely (glitches, breaks, any timing)."""
    dut = UARTReceiver(divisor=DIVISOR)
    return StreamHarness(dut, checks=checks, free=[dut.rx], **options)


def loopback(checks=None, *, keep_up=False, **options):
    """One character out per character in, or an ``overrun`` pulse when ``o`` still holds
    the last one (dropped by design); at most three owed (one in the transmitter, one on the
    line into the receiver, one waiting on ``o``); with the input stopped a character owed
    arrives within :attr:`Loopback.latency` cycles. ``keep_up`` assumes ``o`` is read in
    time (no overrun)."""
    dut = Loopback(DIVISOR)
    contract = Contract(capacity=3, drain=dut.latency, dropped=lambda dut: dut.overrun)
    return StreamHarness(dut, contract, checks=checks,
                         assumptions=[~dut.overrun] if keep_up else [], **options)


def test_receiver_rules_by_induction(sby):
    expect(sby(receiver(RULES), mode="prove", depth=4))


def test_receiver_cover(sby):
    # A character from a free line: the assumptions leave the receiver a way to work.
    expect(sby(receiver(cover_outputs=1), mode="cover", depth=48))


def test_loopback_bmc(sby):
    # 50 cycles: a character through, the drain bound reached, a second on its way.
    expect(sby(loopback(), mode="bmc", depth=50))


def test_loopback_order(sby):
    # When no character is dropped, the bytes arrive as sent.
    expect(sby(loopback(("order",), keep_up=True, order_lanes=(1, 1)), mode="bmc", depth=50))
