# amaranth: UnusedElaboratable=no
"""MaxPool: bit-exact against ``sw.golden.maxpool2d``, one input word per cycle."""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.maxpool import MaxPool
from sw.golden import maxpool2d
from sw.qmodel import value_range
from tests.streams import StreamSink, StreamSource, check_protocol, pack, run_simulation, unpack

pytestmark = pytest.mark.hw


@pytest.fixture
def synthesize():
    from hw import toolchain

    return toolchain.synthesize


def random_images(rng, count, height, width, channels, bits, is_signed):
    lo, hi = value_range(bits, is_signed)
    return np.array([rng.randint(lo, hi) for _ in range(count * height * width * channels)],
                    dtype=np.int64).reshape(count, height, width, channels)


def simulate(dut, images, rng, idle=0.0, stall=0.0):
    bits, is_signed, lanes = dut.shape.width, dut.shape.signed, dut.lanes
    expected = maxpool2d(images, dut.size).reshape(-1, lanes).tolist()
    sim = Simulator(dut)
    source = StreamSource(dut.i, lambda v: pack(v, bits), rng, idle)
    sink = StreamSink(dut.o, lambda v: unpack(v, lanes, bits, is_signed), rng, stall)
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(source.run(images.reshape(-1, lanes).tolist()))
    sim.add_testbench(sink.run(len(expected)))
    run_simulation(sim, 10 * images.size + 200)
    assert len(sent) == images.size // lanes
    assert len(received) == len(expected)
    return expected, sink


@pytest.mark.parametrize("seed", range(8))
def test_matches_golden(seed):
    rng = random.Random(seed)
    height, width, channels = rng.randint(5, 12), rng.randint(5, 12), rng.randint(1, 6)
    size = rng.randint(1, 4)
    lanes = rng.choice([d for d in range(1, channels + 1) if channels % d == 0])
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = MaxPool(height=height, width=width, channels=channels, size=size, lanes=lanes,
                  shape=signed(bits) if is_signed else unsigned(bits))
    images = random_images(rng, 3, height, width, channels, bits, is_signed)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected


def test_one_channel_group_back_to_back_same_window():
    # channels == lanes: consecutive transfers update the same partial maximum, which the
    # memory's transparent read forwards; heavy backpressure stalls the read-modify-write.
    rng = random.Random(5)
    dut = MaxPool(height=6, width=6, channels=2, size=3, lanes=2, shape=signed(5))
    images = random_images(rng, 2, 6, 6, 2, 5, True)
    expected, sink = simulate(dut, images, rng, idle=0.0, stall=0.8)
    assert sink.received == expected


@pytest.mark.parametrize(("height", "width", "channels", "size", "lanes"),
                         [(8, 8, 3, 2, 1), (9, 6, 4, 3, 2), (6, 12, 1, 2, 1)])
def test_accepts_every_cycle(height, width, channels, size, lanes):
    """II = 1: with ``o`` always ready, image after image goes in at one word per cycle."""
    rng = random.Random(0)
    dut = MaxPool(height=height, width=width, channels=channels, size=size, lanes=lanes,
                  shape=unsigned(8))
    images = random_images(rng, 3, height, width, channels, 8, False)
    expected, sink = simulate(dut, images, rng)
    assert sink.received == expected
    # The last input word (cycle 3 * words - 1, counted from 0) completes the last window and
    # leaves 2 cycles later; the sink counts cycles from 1.
    assert sink.times[-1] == 3 * dut.input_words_per_image + 2
    # Within a window row the outputs of one pooled pixel are back to back.
    groups = channels // lanes
    for start in range(0, len(sink.times), groups):
        pixel = sink.times[start:start + groups]
        assert pixel == list(range(pixel[0], pixel[0] + groups))


def test_drops_trailing_rows_and_columns():
    rng = random.Random(3)
    dut = MaxPool(height=7, width=5, channels=1, size=2, lanes=1, shape=unsigned(3))
    assert (dut.out_height, dut.out_width) == (3, 2)
    assert dut.output_words_per_image == 6 and dut.input_words_per_image == 35
    images = random_images(rng, 4, 7, 5, 1, 3, False)
    expected, sink = simulate(dut, images, rng, idle=0.2, stall=0.2)
    assert sink.received == expected


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lanes": 4}, ValueError, r"lanes \(4\) must divide channels \(6\)"),
    ({"size": 9}, ValueError, r"pool size 9 is larger than the 8x10 image"),
    ({"size": 0}, ValueError, r"size must be at least 1, not 0"),
    ({"width": "10"}, TypeError, r"width must be an int, not '10'"),
    ({"shape": 3.5}, TypeError, r"shape must be an integer shape"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(height=8, width=10, channels=6, size=2, shape=unsigned(8), lanes=2)
    params.update(kwargs)
    with pytest.raises(error, match=message):
        MaxPool(**params)


@pytest.mark.synth
def test_synthesis_row_buffer_in_block_ram(synthesize):
    # LeNet-like: 28 wide, 16 channels one per transfer: 224 partial maxima of 8 bits.
    dut = MaxPool(height=28, width=28, channels=16, size=2, lanes=1, shape=signed(8))
    counts = synthesize(dut, "ice40")
    assert counts["brams"] >= 1
    assert 0 < counts["luts"] < 300
