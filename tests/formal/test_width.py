# amaranth: UnusedElaboratable=no
"""WidthConverter: stream rules, element counts and element order for several lane pairs."""

import math

import pytest
from amaranth.hdl import unsigned

from hw.width import WidthConverter
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: (in_lanes, out_lanes): deserializer, serializer, both general directions, wire-through.
PAIRS = [(1, 3), (3, 1), (2, 3), (3, 2), (2, 2)]
BMC_DEPTH = 16


def contract(n_in, n_out):
    """Output transfers each input transfer completes: input ``k`` of a period of
    ``lcm / n_in`` brings the element count from ``k * n_in`` to ``(k + 1) * n_in``, and an
    output leaves for every ``n_out`` of them. What the buffer holds bounds the rest; a
    completed output is valid in the next cycle (``o`` is registered), so with the input
    stopped none waits a cycle."""
    period = math.lcm(n_in, n_out) // n_in
    enables = tuple((k + 1) * n_in // n_out - k * n_in // n_out for k in range(period))
    held = 0 if n_in == n_out else n_in + n_out - math.gcd(n_in, n_out)
    return Contract(enables=enables, capacity=max(1, held // n_out), drain=1)


def harness(pair, checks=None, **options):
    n_in, n_out = pair
    # One-bit elements: every lane is still its own bit to keep stable and in order.
    dut = WidthConverter(shape=unsigned(1), in_lanes=n_in, out_lanes=n_out)
    return StreamHarness(dut, contract(n_in, n_out), checks=checks, order_lanes=pair,
                         passthrough=n_in == n_out, **options)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0]}to{pair[1]}")
def test_bmc(sby, pair):
    expect(sby(harness(pair), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda pair: f"{pair[0]}to{pair[1]}")
def test_rules_by_induction(sby, pair):
    expect(sby(harness(pair, RULES), mode="prove", depth=4))


def test_cover(sby):
    expect(sby(harness((2, 3), cover_outputs=4), mode="cover", depth=BMC_DEPTH))
