# amaranth: UnusedElaboratable=no
"""The harness catches broken components: each mutant breaks one rule and its proof fails.

Every mutant wraps a real component (whose own proofs pass in the other test files) and
breaks one thing at its output, or (``Overflowing``) is a component with one line changed.
Each is checked with the component's own contract, and the property named here must have a
counterexample from reset; the unmutated wrapper passes the same run.
"""

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.fifo import StreamFIFO
from hw.requantize import Requantize
from hw.width import WidthConverter
from tests.formal.harness import Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

DEPTH = 12


class Mutant(wiring.Component):
    """``inner`` with its ``o`` passed through :meth:`mutate`; ``i`` goes straight in."""

    def __init__(self, inner):
        self.inner = inner
        super().__init__({
            "i": In(stream.Signature(inner.i.payload.shape())),
            "o": Out(stream.Signature(inner.o.payload.shape())),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.i), inner.i)
        # Whether o waited in the last cycle (valid, not taken).
        waited = Signal()
        m.d.sync += waited.eq(self.o.valid & ~self.o.ready)
        self.mutate(m, inner.o, self.o, waited)
        return m

    def mutate(self, m, inner, o, waited):
        m.d.comb += [o.valid.eq(inner.valid), o.payload.eq(inner.payload),
                     inner.ready.eq(o.ready)]


class Impatient(Mutant):
    """Withdraws ``o.valid`` after one cycle of waiting (the payload stays inside)."""

    def mutate(self, m, inner, o, waited):
        m.d.comb += [o.valid.eq(inner.valid & ~waited), o.payload.eq(inner.payload),
                     inner.ready.eq(o.ready & ~waited)]


class Fickle(Mutant):
    """Changes its payload while it waits."""

    def mutate(self, m, inner, o, waited):
        m.d.comb += [o.valid.eq(inner.valid), inner.ready.eq(o.ready),
                     Value.cast(o.payload).eq(Value.cast(inner.payload) ^ waited)]


class Dropper(Mutant):
    """Takes every second payload from the component without passing it on."""

    def mutate(self, m, inner, o, waited):
        skip = Signal()
        with m.If(inner.valid & inner.ready):
            m.d.sync += skip.eq(~skip)
        m.d.comb += [o.valid.eq(inner.valid & ~skip), o.payload.eq(inner.payload),
                     inner.ready.eq(o.ready | skip)]


class Stutter(Mutant):
    """Sends every payload twice."""

    def mutate(self, m, inner, o, waited):
        again = Signal()
        with m.If(o.valid & o.ready):
            m.d.sync += again.eq(~again)
        m.d.comb += [o.valid.eq(inner.valid), o.payload.eq(inner.payload),
                     inner.ready.eq(o.ready & again)]


class Eager(Mutant):
    """Comes out of reset with ``o.valid`` high (an output register initialized to 1)."""

    def mutate(self, m, inner, o, waited):
        primed = Signal(init=1)
        with m.If(o.ready):
            m.d.sync += primed.eq(0)
        m.d.comb += [o.valid.eq(inner.valid | primed), o.payload.eq(inner.payload),
                     inner.ready.eq(o.ready & ~primed)]


class Swapped(Mutant):
    """Sends the lanes of each output transfer in reverse order (counts stay right)."""

    def mutate(self, m, inner, o, waited):
        m.d.comb += [o.valid.eq(inner.valid), inner.ready.eq(o.ready)]
        lanes = len(inner.payload)
        m.d.comb += [o.payload[k].eq(inner.payload[lanes - 1 - k]) for k in range(lanes)]


class Overflowing(StreamFIFO):
    """A FIFO that always claims room: ``i.ready`` high even when full, so a write into a
    full FIFO is lost (``StreamFIFO.elaborate`` with that one change)."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(self.shape).width,
                                                    depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(Value.cast(self.i.payload)),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(1),
            Value.cast(self.o.payload).eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
            self.level.eq(fifo.level),
        ]
        return m


def fifo():
    return StreamFIFO(shape=unsigned(2), depth=2)


def fifo_harness(dut, **options):
    """The FIFO's own contract (tests/formal/test_fifo.py) around ``dut``."""
    return StreamHarness(dut, Contract(capacity=2, drain=2), order_lanes=(1, 1), **options)


def requantize():
    return Requantize(np.array([1, 3]), pe=1, acc_bits=4, out_bits=2, out_signed=False)


def requantize_harness(dut):
    return StreamHarness(dut, Contract(capacity=1, drain=1))


#: (mutant, component, harness, property that must fail)
CASES = {
    "impatient_fifo": (Impatient, fifo, fifo_harness, "o.hold"),
    "fickle_requantize": (Fickle, requantize, requantize_harness, "o.stable"),
    "eager_requantize": (Eager, requantize, requantize_harness, "reset.idle"),
    "dropper_fifo": (Dropper, fifo, fifo_harness, "count.drain"),
    "stutter_fifo": (Stutter, fifo, fifo_harness, "count.no_creation"),
}


@pytest.mark.parametrize("case", CASES)
def test_mutant_fails(sby, case):
    mutant, component, harness, prop = CASES[case]
    expect(sby(harness(mutant(component())), mode="bmc", depth=DEPTH), "FAIL", [prop])


def test_overflowing_fifo_fails(sby):
    result = sby(fifo_harness(Overflowing(shape=unsigned(2), depth=2)), mode="bmc", depth=DEPTH)
    expect(result, "FAIL", ["count.bounded", "count.drain", "order"])


@pytest.mark.parametrize("case", ["fifo", "requantize"])
def test_identity_passes(sby, case):
    # The same wrapper without a mutation keeps every proof: the failures above are the
    # mutations', not the wrapper's.
    component, harness = {"fifo": (fifo, fifo_harness),
                          "requantize": (requantize, requantize_harness)}[case]
    expect(sby(harness(Mutant(component())), mode="bmc", depth=DEPTH))


def test_swapped_lanes_fail_order_only(sby):
    dut = Swapped(WidthConverter(shape=unsigned(1), in_lanes=1, out_lanes=2))
    harness = StreamHarness(dut, Contract(enables=(0, 1), capacity=1, drain=1),
                            order_lanes=(1, 2))
    result = sby(harness, mode="bmc", depth=DEPTH)
    expect(result, "FAIL", ["order"])
    assert set(result.failed) == {"order"}, result
