# amaranth: UnusedElaboratable=no
"""Requantize: one registered stage, one output per input."""

import numpy as np
import pytest

from hw.requantize import Requantize
from tests.formal.harness import COUNTS, RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: (shift per channel, pe, acc_bits, out_bits, out_signed): two folds with different shifts
#: (the fold counter selects the datapath), and two lanes with a left shift and saturation.
CONFIGS = {
    "fold": ([1, 3], 1, 4, 2, False),
    "lanes": ([2, -1, 0, 1], 2, 4, 3, True),
}
BMC_DEPTH = 20


def harness(name, checks=None, **options):
    """One output per input, at most one owed (the output register), which ``o.valid``
    shows; with the input stopped it never waits a cycle (:attr:`latency` is 1)."""
    shift, pe, acc_bits, out_bits, out_signed = CONFIGS[name]
    dut = Requantize(np.array(shift), pe=pe, acc_bits=acc_bits, out_bits=out_bits,
                     out_signed=out_signed)
    return StreamHarness(dut, Contract(capacity=1, drain=dut.latency), checks=checks,
                         invariants=[lambda owed: owed == dut.o.valid], **options)


@pytest.mark.parametrize("name", CONFIGS)
def test_bmc(sby, name):
    expect(sby(harness(name), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("name", CONFIGS)
def test_by_induction(sby, name):
    # The output register is all the state the counts depend on: everything closes.
    expect(sby(harness(name, (*RULES, *COUNTS, "count.invariant")), mode="prove", depth=4))


def test_cover(sby):
    expect(sby(harness("fold", cover_outputs=3), mode="cover", depth=BMC_DEPTH))
