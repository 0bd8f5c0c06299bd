# amaranth: UnusedElaboratable=no
"""Requantize against sw.golden.requantize: every width, per-channel shifts, stalls, II=1."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.requantize import Requantize
from sim.streams import StreamSink, StreamSource
from sw import golden
from sw.qmodel import value_range
from tests.streams import (
    check_protocol,
    pack,
    run_simulation,
    stream_bench,
    transfer_cycles,
    unpack,
)

pytestmark = pytest.mark.hw


@pytest.fixture
def synthesize():
    from hw import toolchain

    return toolchain.synthesize


def random_accumulators(rng, acc_bits, vectors, channels):
    lo, hi = value_range(acc_bits, True)
    acc = rng.integers(lo, hi + 1, size=(vectors, channels))
    # Small values exercise the rounding, extremes the saturation.
    acc[0] = rng.integers(max(lo, -8), min(hi, 8) + 1, size=channels)
    acc[1, ::2], acc[1, 1::2] = lo, hi
    return acc


def simulate(dut, acc, *, seed=0, idle=0.0, stall=0.0):
    """Stream accumulators ``(vectors, channels)`` through ``dut``; return outputs, times."""
    items = [list(row[k * dut.pe:(k + 1) * dut.pe]) for row in acc for k in range(dut.nf)]
    rng = random.Random(seed)
    sim = Simulator(dut)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, dut.acc_bits))
    sink = StreamSink(rng, stall, decode=lambda w: unpack(w, dut.pe, dut.out_bits, dut.out_signed))
    sent = check_protocol(sim, dut.i, "i")
    got = check_protocol(sim, dut.o, "o")
    times = {"i": transfer_cycles(sim, dut.i), "o": transfer_cycles(sim, dut.o)}
    sim.add_testbench(stream_bench(source.send, dut.i, items))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(items)))
    run_simulation(sim, len(items) * (6 if idle or stall else 1) + 50)
    assert len(sent) == len(got) == len(items)
    return sink.received, times


def expected(acc, shift, bits, out_signed, pe):
    out = golden.requantize(acc, np.asarray(shift), bits, out_signed)
    return [[int(v) for v in row[k * pe:(k + 1) * pe]]
            for row in out for k in range(len(shift) // pe)]


@pytest.mark.parametrize("out_signed", [False, True])
@pytest.mark.parametrize("out_bits", range(1, 9))
def test_random_per_channel_shifts_with_stalls(out_bits, out_signed):
    rng = np.random.default_rng(out_bits * 2 + out_signed)
    channels = int(rng.choice([1, 3, 4, 6, 8, 12]))
    pe = int(rng.choice([d for d in range(1, channels + 1) if channels % d == 0]))
    acc_bits = int(rng.integers(out_bits + 1, 24))
    # Right and left shifts, zero, and shifts past every accumulator bit.
    shift = rng.integers(-3, acc_bits + 3, size=channels)
    dut = Requantize(shift, pe=pe, acc_bits=acc_bits, out_bits=out_bits, out_signed=out_signed)
    acc = random_accumulators(rng, acc_bits, 12, channels)
    received, _ = simulate(dut, acc, seed=out_bits, idle=0.3, stall=0.4)
    assert received == expected(acc, shift, out_bits, out_signed, pe)


@pytest.mark.parametrize("shift", [-2, 0, 1, 5])
def test_equal_shifts_exhaustive_small_accumulator(shift):
    """Every 8-bit accumulator, one shift for all channels (the constant datapath)."""
    lo, hi = value_range(8, True)
    acc = np.arange(lo, hi + 1).reshape(-1, 4)
    for out_signed in (False, True):
        dut = Requantize([shift] * 4, pe=2, acc_bits=8, out_bits=4, out_signed=out_signed)
        received, _ = simulate(dut, acc, seed=shift, idle=0.1, stall=0.1)
        assert received == expected(acc, [shift] * 4, 4, out_signed, 2)


def test_full_rate_one_word_per_cycle():
    """II=1: one transfer per cycle on both sides, outputs one cycle after inputs."""
    rng = np.random.default_rng(5)
    shift = [3, -1, 7, 0, 2, 2]
    dut = Requantize(shift, pe=2, acc_bits=16, out_bits=8, out_signed=False)
    acc = random_accumulators(rng, 16, 10, 6)
    received, times = simulate(dut, acc)
    assert received == expected(acc, shift, 8, False, 2)
    count = 10 * dut.nf
    assert times["i"] == list(range(count))
    assert times["o"] == [t + dut.latency for t in range(count)]


def test_properties():
    dut = Requantize(np.array([1, 2, 3, 4]), pe=2, acc_bits=20, out_bits=4, out_signed=True)
    assert (dut.pe, dut.nf, dut.channels, dut.acc_bits) == (2, 2, 4, 20)
    assert (dut.out_bits, dut.out_signed, dut.shift, dut.latency) == (4, True, (1, 2, 3, 4), 1)
    with pytest.raises(AttributeError):
        dut.pe = 1


@pytest.mark.parametrize(("args", "error", "message"), [
    ({"pe": 3}, ValueError, "pe 3 does not divide the 4 channels"),
    ({"pe": 0}, ValueError, "pe must be at least 1, not 0"),
    ({"acc_bits": "8"}, TypeError, "acc_bits must be an int, not '8'"),
    ({"out_bits": 0}, ValueError, "out_bits must be at least 1, not 0"),
    ({"out_signed": 1}, TypeError, "out_signed must be a bool, not 1"),
    ({"shift": [0.5] * 4}, TypeError, "shift must be integers, not float64"),
    ({"shift": [[1, 2]]}, ValueError, "shift must be a non-empty (channels,) vector, not shape "
                                      "(1, 2)"),
])
def test_parameter_errors(args, error, message):
    kwargs = {"shift": [1, 2, 3, 4], "pe": 2, "acc_bits": 16, "out_bits": 4,
              "out_signed": False, **args}
    shift = kwargs.pop("shift")
    with pytest.raises(error) as info:
        Requantize(shift, **kwargs)
    assert str(info.value) == message


@pytest.mark.synth
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_synthesis(family, synthesize):
    """Four lanes with per-channel shifts: registered outputs, no block RAM or DSP needed."""
    dut = Requantize([6, 7, 6, 5, 7, 6, 6, 6], pe=4, acc_bits=20, out_bits=4, out_signed=False)
    counts = synthesize(dut, family)
    assert counts["ffs"] >= dut.pe * dut.out_bits + 1, counts
    assert 0 < counts["luts"] < 400 and counts["brams"] == counts["dsps"] == 0, counts
