# amaranth: UnusedElaboratable=no
"""Argmax: the label of ``sw.golden.argmax`` (lowest index on a tie) with the logits."""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.argmax import Argmax
from sim.streams import StreamSink, StreamSource
from sw.golden import argmax
from sw.qmodel import value_range
from tests.streams import check_protocol, pack, run_simulation, stream_bench, unpack

pytestmark = pytest.mark.hw


@pytest.fixture
def synthesize():
    from hw import toolchain

    return toolchain.synthesize


def simulate(dut, logits, rng, idle=0.0, stall=0.0):
    """Stream ``logits`` (images x classes); return the sink of (label, logits) pairs."""
    bits, is_signed, lanes = dut.shape.width, dut.shape.signed, dut.lanes
    label_bits, classes = dut.label_bits, dut.classes

    def decode(word):
        return (word & ((1 << label_bits) - 1),
                unpack(word >> label_bits, classes, bits, is_signed))

    sim = Simulator(dut)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, bits))
    sink = StreamSink(rng, stall, decode=decode)
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, logits.reshape(-1, lanes).tolist()))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(logits)))
    run_simulation(sim, 10 * logits.size + 200)
    assert len(sent) == logits.size // lanes and len(received) == len(logits)
    return sink


def expected_outputs(logits):
    return list(zip(argmax(logits).tolist(), logits.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(8))
def test_matches_golden(seed):
    rng = random.Random(seed)
    classes = rng.randint(1, 12)
    lanes = rng.choice([d for d in range(1, classes + 1) if classes % d == 0])
    bits = rng.randint(1, 8)
    is_signed = seed % 4 != 3  # logits are signed; unsigned works too
    lo, hi = value_range(bits, is_signed)
    # Few distinct values, so ties (and all-equal rows) are common.
    logits = np.array([[rng.randint(lo, hi) for _ in range(classes)] for _ in range(40)])
    dut = Argmax(classes=classes, lanes=lanes, shape=signed(bits) if is_signed else unsigned(bits))
    sink = simulate(dut, logits, rng, idle=0.3, stall=0.3)
    assert sink.received == expected_outputs(logits)


def test_ties_lowest_index_wins():
    rng = random.Random(1)
    dut = Argmax(classes=8, lanes=4, shape=signed(6))
    logits = np.array([
        [3, 7, 7, 1, 7, 0, 0, 7],
        [-5, -5, -5, -5, -5, -5, -5, -5],
        [-32, -32, -32, -32, -32, -32, -32, 31],
        [0, 0, 0, 0, 31, 31, 0, 0],
        [-1, -32, 5, 5, -3, 5, 4, 5],
    ])
    sink = simulate(dut, logits, rng, idle=0.5, stall=0.5)
    assert [label for label, _ in sink.received] == [1, 0, 7, 4, 2]
    assert sink.received == expected_outputs(logits)


@pytest.mark.parametrize(("classes", "lanes"), [(10, 1), (10, 2), (10, 10), (7, 7), (12, 3)])
def test_full_rate(classes, lanes):
    """One input word per cycle; a label ``latency`` cycles after each image's last word."""
    rng = random.Random(2)
    dut = Argmax(classes=classes, lanes=lanes, shape=signed(12))
    logits = np.array([[rng.randint(-2048, 2047) for _ in range(classes)] for _ in range(12)])
    sink = simulate(dut, logits, rng)
    assert sink.received == expected_outputs(logits)
    words = classes // lanes
    # Input word j transfers in cycle j; the sink counts cycles from 1.
    assert sink.times == [(n + 1) * words - 1 + dut.latency + 1 for n in range(12)]


def test_properties():
    dut = Argmax(classes=10, lanes=5, shape=signed(20))
    assert (dut.classes, dut.lanes, dut.label_bits, dut.words_per_image) == (10, 5, 4, 2)
    assert dut.latency == 4
    assert dut.output_layout.size == 4 + 10 * 20
    assert Argmax(classes=1, lanes=1, shape=signed(3)).label_bits == 1
    assert Argmax(classes=2, lanes=1, shape=signed(3)).label_bits == 1


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lanes": 3}, ValueError, r"lanes \(3\) must divide classes \(10\)"),
    ({"classes": 0}, ValueError, r"classes must be at least 1, not 0"),
    ({"lanes": None}, TypeError, r"lanes must be an int, not None"),
    ({"shape": "s16"}, TypeError, r"shape must be an integer shape"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(classes=10, lanes=2, shape=signed(16))
    params.update(kwargs)
    with pytest.raises(error, match=message):
        Argmax(**params)


@pytest.mark.synth
def test_synthesis_smoke(synthesize):
    counts = synthesize(Argmax(classes=10, lanes=2, shape=signed(16)), "ecp5")
    # The output register alone holds 10 logits of 16 bits and a 4-bit label.
    assert counts["ffs"] >= 10 * 16 + 4
    assert counts["luts"] > 0 and counts["brams"] == 0
