# amaranth: UnusedElaboratable=no
"""WidthConverter: order-preserving re-packing between any two lane counts, at full rate."""

import math
import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from hw.width import WidthConverter
from sim.streams import StreamSink, StreamSource
from sw.qmodel import value_range
from tests.streams import check_protocol, pack, run_simulation, stream_bench, unpack

pytestmark = pytest.mark.hw


def simulate(dut, elements, rng, idle=0.0, stall=0.0):
    """Stream ``elements`` through ``dut``; return the sink (its words as lists of lanes)."""
    bits, is_signed = dut.shape.width, dut.shape.signed
    n_in, n_out = dut.in_lanes, dut.out_lanes
    words = [elements[k:k + n_in] for k in range(0, len(elements), n_in)]
    top = Module()
    top.submodules.dut = dut
    # A wire-through converter has no clock domain of its own; the testbench needs one.
    top.d.sync += Signal().eq(1)
    sim = Simulator(top)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, bits))
    sink = StreamSink(rng, stall, decode=lambda v: unpack(v, n_out, bits, is_signed))
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, words))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(elements) // n_out))
    run_simulation(sim, 10 * len(elements) + 100)
    assert len(sent) == len(words) and len(received) == len(elements) // n_out
    return sink


@pytest.mark.parametrize("seed", range(8))
def test_random_pairs_preserve_order(seed):
    rng = random.Random(seed)
    n_in, n_out = rng.randint(1, 6), rng.randint(1, 6)
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = WidthConverter(shape=signed(bits) if is_signed else unsigned(bits),
                         in_lanes=n_in, out_lanes=n_out)
    lo, hi = value_range(bits, is_signed)
    # Several "images" of a whole number of lcm(in, out) elements each, back to back.
    count = dut.granule * sum(rng.randint(1, 4) for _ in range(3))
    elements = [rng.randint(lo, hi) for _ in range(count)]
    sink = simulate(dut, elements, rng, idle=0.3, stall=0.3)
    assert [v for word in sink.received for v in word] == elements


@pytest.mark.parametrize(("n_in", "n_out"), [(60, 3), (3, 60), (16, 3), (5, 7), (7, 5)])
def test_wide_pairs_preserve_order(n_in, n_out):
    """Pairs as the folder makes them (LeNet-5's 60 -> 3 before dense_1) under stalls."""
    rng = random.Random(n_in * 100 + n_out)
    dut = WidthConverter(shape=signed(4), in_lanes=n_in, out_lanes=n_out)
    elements = [rng.randint(-8, 7) for _ in range(dut.granule * 3)]
    sink = simulate(dut, elements, rng, idle=0.3, stall=0.3)
    assert [v for word in sink.received for v in word] == elements


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (3, 3), (1, 4), (4, 1), (2, 3), (3, 2),
                                             (4, 6), (6, 4), (5, 2)])
def test_full_rate(n_in, n_out):
    """With ``i`` always valid and ``o`` always ready the slower side moves every cycle."""
    rng = random.Random(n_in * 10 + n_out)
    dut = WidthConverter(shape=unsigned(8), in_lanes=n_in, out_lanes=n_out)
    elements = [rng.randint(0, 255) for _ in range(dut.granule * 6)]
    sink = simulate(dut, elements, rng)
    assert [v for word in sink.received for v in word] == elements
    n_words_in, n_words_out = len(elements) // n_in, len(elements) // n_out
    # Input word j transfers in cycle j (from 0); the sink counts cycles from 1.
    if n_in == n_out:
        # A wire: each word passes in the cycle it is offered.
        assert sink.times == list(range(1, n_words_in + 1))
    elif n_in > n_out:
        # Output bound: after the first word's one-cycle register delay, one word a cycle.
        assert sink.times == list(range(2, n_words_out + 2))
    else:
        # Input bound: the input never waits; the last word leaves one cycle after it.
        assert sink.times[-1] == n_words_in + 1
        if n_out % n_in == 0:
            step = n_out // n_in
            assert sink.times == [step * (k + 1) + 1 for k in range(n_words_out)]


def test_properties():
    dut = WidthConverter(shape=signed(5), in_lanes=4, out_lanes=6)
    assert (dut.in_lanes, dut.out_lanes, dut.granule, dut.buffer_elements) == (4, 6, 12, 8)
    assert dut.shape == signed(5)
    assert WidthConverter(shape=unsigned(1), in_lanes=3, out_lanes=3).buffer_elements == 0
    assert WidthConverter(shape=unsigned(1), in_lanes=1, out_lanes=8).buffer_elements == 8
    assert math.lcm(2, 3) == WidthConverter(shape=unsigned(2), in_lanes=2, out_lanes=3).granule


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"in_lanes": 0}, ValueError, r"in_lanes must be at least 1, not 0"),
    ({"out_lanes": 2.5}, TypeError, r"out_lanes must be an int, not 2.5"),
    ({"shape": "u8"}, TypeError, r"shape must be an integer shape"),
    ({"shape": unsigned(0)}, ValueError, r"shape must be at least 1 bit wide"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(shape=unsigned(8), in_lanes=2, out_lanes=3)
    params.update(kwargs)
    with pytest.raises(error, match=message):
        WidthConverter(**params)


@pytest.mark.synth
def test_synthesis_smoke():
    from hw import toolchain

    counts = toolchain.synthesize(WidthConverter(shape=signed(8), in_lanes=2, out_lanes=3),
                                  "ice40")
    # The 4-element buffer and its level are registers.
    assert counts["ffs"] >= 4 * 8
    assert counts["luts"] > 0 and counts["brams"] == 0
