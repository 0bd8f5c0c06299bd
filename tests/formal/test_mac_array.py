# amaranth: UnusedElaboratable=no
"""MACArray: NF output transfers per vector of SF input transfers, under credits."""

import numpy as np
import pytest
from amaranth.hdl import unsigned

from hw.mac_array import MACArray
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: (fan_in, channels, pe, simd, multiplier): two folds each way with LUT products; two PEs
#: (one output fold) with hard multipliers; a two-lane adder tree; a packed pair.
CONFIGS = {
    "fold_lut": (2, 2, 1, 1, "lut"),
    "pe2_dsp": (2, 2, 2, 1, "dsp"),
    "simd2_dsp": (4, 2, 1, 2, "dsp"),
    "packed": (2, 2, 2, 1, "packed"),
}


def mac(name):
    fan_in, channels, pe, simd, multiplier = CONFIGS[name]
    rng = np.random.default_rng(len(name))
    weights = rng.integers(-1, 2, size=(fan_in, channels))
    bias = rng.integers(-2, 3, size=channels)
    return MACArray(weights, bias, weight_bits=2, in_shape=unsigned(2), acc_bits=6, pe=pe,
                    simd=simd, multiplier=multiplier)


def contract(dut):
    """A vector's last input transfer enables its ``NF`` outputs. The array takes the next
    vector only once every fold of the last one has issued, so at most ``NF`` plus the
    output FIFO's entries are owed. With the input stopped an owed output leaves at least
    every :attr:`latency` cycles (the first after the last input; later folds come every
    ``SF`` cycles)."""
    return Contract(enables=(0,) * (dut.sf - 1) + (dut.nf,), capacity=dut.nf + dut.fifo_depth,
                    drain=dut.latency)


def harness(name, checks=None, **options):
    dut = mac(name)
    return StreamHarness(dut, contract(dut), checks=checks, **options)


@pytest.mark.parametrize("name", CONFIGS)
def test_bmc(sby, name):
    expect(sby(harness(name), mode="bmc", depth=24))


@pytest.mark.parametrize("name", CONFIGS)
def test_rules_by_induction(sby, name):
    expect(sby(harness(name, RULES), mode="prove", depth=4))


def test_cover(sby):
    # Two vectors' outputs: the credits have gone round.
    expect(sby(harness("fold_lut", cover_outputs=4), mode="cover", depth=24))
