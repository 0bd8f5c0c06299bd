# amaranth: UnusedElaboratable=no
"""StreamFIFO (``SyncFIFOBuffered`` behind stream ports): stream rules, counts and order."""

import pytest
from amaranth.hdl import unsigned

from hw.fifo import StreamFIFO
from tests.formal.harness import COUNTS, RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

DEPTHS = [1, 2, 4]
#: Cycles from reset within which every property holds (bounded model checking).
BMC_DEPTH = 24


def harness(depth, checks=None, bits=2, **options):
    """A FIFO in the harness: one output per input, at most ``depth`` owed, ``level`` equal
    to what is owed, and, with the input stopped, an output at least every two cycles while
    anything is owed (a payload into an empty FIFO appears two cycles later)."""
    dut = StreamFIFO(shape=unsigned(bits), depth=depth)
    return StreamHarness(dut, Contract(capacity=depth, drain=2), checks=checks,
                         invariants=[lambda owed: owed == dut.level], **options)


@pytest.mark.parametrize("depth", DEPTHS)
def test_bmc(sby, depth):
    expect(sby(harness(depth), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("depth", DEPTHS)
def test_rules_by_induction(sby, depth):
    expect(sby(harness(depth, RULES), mode="prove", depth=4))


def test_counts_by_induction(sby):
    # Only the one-register FIFO: deeper ones keep their level beside two pointers that the
    # harness cannot see, and induction from an inconsistent state does not close.
    expect(sby(harness(1, (*COUNTS, "count.invariant")), mode="prove", depth=4))


@pytest.mark.parametrize("depth", [2, 3])
def test_order(sby, depth):
    # One-bit payloads suffice: the solver marks the element it follows with a value the
    # others need not share. Depth 3 wraps its two-entry memory within the bound.
    expect(sby(harness(depth, ("order",), bits=1, order_lanes=(1, 1)), mode="bmc", depth=16))


def test_cover(sby):
    expect(sby(harness(2, cover_outputs=4), mode="cover", depth=BMC_DEPTH))
