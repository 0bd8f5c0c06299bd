# amaranth: UnusedElaboratable=no
"""Pool: one output per completed window, trailing rows and columns dropped."""

import pytest
from amaranth.hdl import signed, unsigned

from hw.pool import Pool
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: Max pooling over two channel groups; an average that drops a trailing row and column (3x3
#: image, 2x2 windows); global max pooling with both channels in one transfer.
CONFIGS = {
    "max": dict(height=2, width=4, channels=2, size=2, shape=signed(2), lanes=1, op="max"),
    "avg_drop": dict(height=3, width=3, channels=1, size=2, shape=unsigned(2), lanes=1,
                     op="avg"),
    "global": dict(height=2, width=2, channels=2, size=2, shape=signed(2), lanes=2, op="max"),
}
BMC_DEPTH = 24


def contract(dut):
    """Transfer ``(y, x, g)`` of an image (raster order, channel groups innermost) enables
    an output when it is the bottom-right pixel of a whole window; each of the
    :attr:`latency` stages after it holds at most one; with the input stopped an owed output
    leaves at least every :attr:`latency` cycles."""
    rows, cols = dut.window
    enables = []
    for y in range(dut.height):
        for x in range(dut.width):
            whole = y < dut.out_height * rows and x < dut.out_width * cols
            corner = y % rows == rows - 1 and x % cols == cols - 1
            enables += [int(whole and corner)] * (dut.channels // dut.lanes)
    return Contract(enables=tuple(enables), capacity=dut.latency, drain=dut.latency)


def harness(name, checks=None, **options):
    dut = Pool(**CONFIGS[name])
    return StreamHarness(dut, contract(dut), checks=checks, **options)


@pytest.mark.parametrize("name", CONFIGS)
def test_bmc(sby, name):
    expect(sby(harness(name), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("name", CONFIGS)
def test_rules_by_induction(sby, name):
    expect(sby(harness(name, RULES), mode="prove", depth=4))


def test_cover(sby):
    # The four outputs of a first image (16 transfers) and the first of the next: the
    # position counters wrap.
    expect(sby(harness("max", cover_outputs=5), mode="cover", depth=32))
