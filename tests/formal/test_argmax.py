# amaranth: UnusedElaboratable=no
"""Argmax: one output per image of ``classes / lanes`` input transfers."""

import pytest
from amaranth.hdl import signed

from hw.argmax import Argmax
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: (classes, lanes): a two-lane comparison stage, one lane (no tree), and a whole image per
#: transfer (every transfer completes an image).
CONFIGS = [(4, 2), (3, 1), (4, 4)]
BMC_DEPTH = 20


def contract(dut):
    """An image's last transfer enables its output; each pipeline stage holds at most one
    image's result, so at most :attr:`latency` are owed; with the input stopped an owed
    output leaves at least every :attr:`latency` cycles."""
    words = dut.words_per_image
    return Contract(enables=(0,) * (words - 1) + (1,), capacity=dut.latency,
                    drain=dut.latency)


def harness(config, checks=None, **options):
    classes, lanes = config
    dut = Argmax(classes=classes, shape=signed(2), lanes=lanes)
    return StreamHarness(dut, contract(dut), checks=checks, **options)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}classes{c[1]}lanes")
def test_bmc(sby, config):
    expect(sby(harness(config), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}classes{c[1]}lanes")
def test_rules_by_induction(sby, config):
    expect(sby(harness(config, RULES), mode="prove", depth=4))


def test_cover(sby):
    expect(sby(harness((4, 2), cover_outputs=3), mode="cover", depth=BMC_DEPTH))
