# amaranth: UnusedElaboratable=no
"""Pool (max and average, windowed and global): bit-exact against ``sw.golden.pool2d``, one
input word per cycle, and the average's constant division checked over every reachable sum."""

import itertools
import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.pool import Pool, division_constants
from sim.streams import StreamSink, StreamSource
from sw.golden import average, pool2d
from sw.qmodel import value_range
from tests.streams import check_protocol, pack, run_simulation, stream_bench, unpack

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
    expected = pool2d(images, dut.window, dut.op).reshape(-1, lanes).tolist()
    sim = Simulator(dut)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, bits))
    sink = StreamSink(rng, stall, decode=lambda v: unpack(v, lanes, bits, is_signed))
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, images.reshape(-1, lanes).tolist()))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(expected)))
    run_simulation(sim, 10 * images.size + 200)
    assert len(sent) == images.size // lanes
    assert len(received) == len(expected)
    return expected, sink


def _pool(rng, height, width, channels, bits, is_signed, op, size):
    lanes = rng.choice([d for d in range(1, channels + 1) if channels % d == 0])
    return Pool(height=height, width=width, channels=channels, size=size, lanes=lanes,
                shape=signed(bits) if is_signed else unsigned(bits), op=op)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_golden(op, seed):
    rng = random.Random(seed)
    height, width, channels = rng.randint(5, 12), rng.randint(5, 12), rng.randint(1, 6)
    # Square windows as Keras makes them, and one rectangular one.
    size = (rng.randint(1, 4), rng.randint(1, 4)) if seed == 5 else rng.randint(1, 4)
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = _pool(rng, height, width, channels, bits, is_signed, op, size)
    images = random_images(rng, 3, height, width, channels, bits, is_signed)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("seed", range(4))
def test_global_pooling_matches_golden(op, seed):
    """A window of the whole image: one output pixel, ``channels // lanes`` transfers."""
    rng = random.Random(100 + seed)
    height, width, channels = rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 8)
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = _pool(rng, height, width, channels, bits, is_signed, op, (height, width))
    assert (dut.out_height, dut.out_width) == (1, 1)
    assert dut.buffer_depth == channels // dut.lanes
    images = random_images(rng, 4, height, width, channels, bits, is_signed)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.4)
    assert sink.received == expected


@pytest.mark.parametrize("op", ["max", "avg"])
def test_one_channel_group_back_to_back_same_window(op):
    # channels == lanes: consecutive transfers update the same partial result, which the
    # memory's transparent read forwards; heavy backpressure stalls the read-modify-write.
    rng = random.Random(5)
    dut = Pool(height=6, width=6, channels=2, size=3, lanes=2, shape=signed(5), op=op)
    images = random_images(rng, 2, 6, 6, 2, 5, True)
    expected, sink = simulate(dut, images, rng, idle=0.0, stall=0.8)
    assert sink.received == expected


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize(("height", "width", "channels", "size", "lanes"),
                         [(8, 8, 3, 2, 1), (9, 6, 4, 3, 2), (6, 12, 1, 2, 1), (5, 7, 4, (5, 7), 2),
                          (3, 3, 1, (3, 3), 1)])
def test_accepts_every_cycle(op, height, width, channels, size, lanes):
    """II = 1: with ``o`` always ready, image after image goes in at one word per cycle."""
    rng = random.Random(0)
    dut = Pool(height=height, width=width, channels=channels, size=size, lanes=lanes,
               shape=unsigned(8), op=op)
    images = random_images(rng, 3, height, width, channels, 8, False)
    expected, sink = simulate(dut, images, rng)
    assert sink.received == expected
    # The last input word (cycle 3 * words - 1, counted from 0) completes the last window and
    # leaves `latency` cycles later; the sink counts cycles from 1.
    assert sink.times[-1] == 3 * dut.input_words_per_image + dut.latency
    assert dut.latency == {"max": 2, "avg": 3}[op]
    # Within a window row the outputs of one pooled pixel are back to back.
    groups = channels // lanes
    for start in range(0, len(sink.times), groups):
        pixel = sink.times[start:start + groups]
        assert pixel == list(range(pixel[0], pixel[0] + groups))


@pytest.mark.parametrize("op", ["max", "avg"])
def test_drops_trailing_rows_and_columns(op):
    rng = random.Random(3)
    dut = Pool(height=7, width=5, channels=1, size=2, lanes=1, shape=unsigned(3), op=op)
    assert (dut.out_height, dut.out_width) == (3, 2)
    assert dut.output_words_per_image == 6 and dut.input_words_per_image == 35
    images = random_images(rng, 4, 7, 5, 1, 3, False)
    expected, sink = simulate(dut, images, rng, idle=0.2, stall=0.2)
    assert sink.received == expected


def test_division_constants_are_exact_over_every_sum():
    """The constants of every window size up to 8 x 8 (and global 28 x 28) and every input
    format, checked on every sum here, independently of the search (which decides on each
    residue class's extreme sums), and some of 9..16 bits."""
    narrow = [(count, bits) for count in [*range(1, 65), 81, 196, 784] for bits in range(1, 9)]
    wide = [(count, bits) for count in (4, 9, 25) for bits in (12, 16)] + [(784, 12), (676, 13)]
    for (count, bits), is_signed in itertools.product(narrow + wide, (False, True)):
        lo, hi = value_range(bits, is_signed)
        multiplier, offset, shift = division_constants(count, count * lo, count * hi)
        totals = np.arange(count * lo, count * hi + 1, dtype=np.int64)
        assert np.array_equal((totals * multiplier + offset) >> shift,
                              average(totals, count)), (count, bits, is_signed)
        if count & (count - 1) == 0:  # powers of two: a plain rounding shift
            assert (multiplier, offset) == (1, count // 2)


def _every_sum_windows(count, bits, is_signed):
    """One window of ``count`` values per reachable sum: the whole division range."""
    lo, hi = value_range(bits, is_signed)
    windows = []
    for total in range(count * lo, count * hi + 1):
        values, rest = [], total
        for left in range(count, 0, -1):
            value = min(hi, max(lo, rest - (left - 1) * lo))
            values.append(value)
            rest -= value
        assert rest == 0 and lo <= min(values) and max(values) <= hi
        windows.append(values)
    return np.array(windows, dtype=np.int64)


@pytest.mark.parametrize(("rows", "cols", "bits", "is_signed"),
                         [(1, 3, 8, True), (3, 3, 5, False), (1, 7, 4, True), (5, 5, 3, False),
                          (2, 3, 1, True)])
def test_average_hardware_over_every_reachable_sum(rows, cols, bits, is_signed):
    """The generated division (shift-and-add) itself, not only its constants: every sum a
    window can have goes through the hardware once."""
    windows = _every_sum_windows(rows * cols, bits, is_signed)
    # Lay the windows side by side: an image `rows` high, one window per `cols` columns.
    image = windows.reshape(-1, rows, cols).transpose(1, 0, 2).reshape(1, rows, -1, 1)
    dut = Pool(height=rows, width=image.shape[2], channels=1, size=(rows, cols), lanes=1,
               shape=signed(bits) if is_signed else unsigned(bits), op="avg")
    expected, sink = simulate(dut, image, random.Random(7))
    assert sink.received == expected
    assert [v for [v] in expected] == average(windows.sum(axis=1), rows * cols).tolist()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"lanes": 4}, ValueError, r"lanes \(4\) must divide channels \(6\)"),
    ({"size": 9}, ValueError, r"pool size 9x9 is larger than the 8x10 image"),
    ({"size": (2, 11)}, ValueError, r"pool size 2x11 is larger than the 8x10 image"),
    ({"size": 0}, ValueError, r"size must be at least 1, not 0"),
    ({"size": (2, 2, 2)}, ValueError, r"size must be an int or \(rows, cols\)"),
    ({"width": "10"}, TypeError, r"width must be an int, not '10'"),
    ({"shape": 3.5}, TypeError, r"shape must be an integer shape"),
    ({"op": "min"}, ValueError, r"op must be one of max, avg, not 'min'"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(height=8, width=10, channels=6, size=2, shape=unsigned(8), lanes=2)
    params.update(kwargs)
    with pytest.raises(error, match=message):
        Pool(**params)


def test_attributes():
    dut = Pool(height=4, width=6, channels=2, size=(2, 3), shape=signed(4), lanes=1, op="avg")
    assert (dut.window, dut.op, dut.sum_shape) == ((2, 3), "avg", signed(7))
    assert dut.division == division_constants(6, 6 * -8, 6 * 7)
    assert (dut.out_height, dut.out_width, dut.buffer_depth, dut.buffer_width) == (2, 2, 4, 7)
    assert (dut.input_words_per_image, dut.output_words_per_image, dut.latency) == (48, 8, 3)


@pytest.mark.synth
@pytest.mark.parametrize("op", ["max", "avg"])
def test_synthesis_row_buffer_in_block_ram(synthesize, op):
    # LeNet-like: 28 wide, 16 channels one per transfer: 224 partial results of 8 bits.
    dut = Pool(height=28, width=28, channels=16, size=2, lanes=1, shape=signed(8), op=op)
    counts = synthesize(dut, "ice40")
    assert counts["brams"] >= 1
    assert 0 < counts["luts"] < 300
    assert counts.get("dsps", 0) == 0  # the average's division takes adders, not a DSP
