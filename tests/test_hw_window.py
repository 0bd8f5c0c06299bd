# amaranth: UnusedElaboratable=no
"""WindowGenerator: bit-exact against ``sw.golden.windows``, full rate, block RAM."""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.window import WindowGenerator
from sw.golden import windows
from sw.qmodel import value_range
from tests.streams import StreamSink, StreamSource, check_protocol, pack, run_simulation, unpack

pytestmark = pytest.mark.hw


@pytest.fixture
def synthesize(monkeypatch):
    """``hw.toolchain.synthesize``, with Yosys' ABC flow kept off Amaranth's view wires.

    The ``x[0]`` wires that Amaranth adds for the lanes of an ``ArrayLayout`` payload next to
    ``x`` itself make ABC's reintegration assert (``count_id(wire->name) == 0``,
    YosysHQ/yosys#4349); ``proc; opt_clean -purge`` before synthesis removes them.
    """
    from hw import toolchain

    for family, script in toolchain.FAMILIES.items():
        if "opt_clean -purge" not in script:
            monkeypatch.setitem(toolchain.FAMILIES, family, f"proc; opt_clean -purge; {script}")
    return toolchain.synthesize


def random_images(rng, count, height, width, channels, bits, is_signed):
    lo, hi = value_range(bits, is_signed)
    return np.array([rng.randint(lo, hi) for _ in range(count * height * width * channels)],
                    dtype=np.int64).reshape(count, height, width, channels)


def simulate(dut, images, rng, idle=0.0, stall=0.0):
    """Stream ``images`` through ``dut``; return (expected words, sink, input/output logs)."""
    bits, is_signed, simd = dut.shape.width, dut.shape.signed, dut.simd
    expected = windows(images, dut.kernel, dut.stride, dut.padding).reshape(-1, simd).tolist()
    sim = Simulator(dut)
    source = StreamSource(dut.i, lambda v: pack(v, bits), rng, idle)
    sink = StreamSink(dut.o, lambda v: unpack(v, simd, bits, is_signed), rng, stall)
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(source.run(images.reshape(-1, simd).tolist()))
    sim.add_testbench(sink.run(len(expected)))
    run_simulation(sim, 10 * (len(expected) + images.size) + 200)
    assert len(sent) == images.size // simd
    assert len(received) == len(expected)
    return expected, sink


def random_config(rng, padding=None, stride=None):
    height, width = rng.randint(5, 12), rng.randint(5, 12)
    channels = rng.randint(1, 6)
    return dict(
        height=height, width=width, channels=channels,
        kernel=rng.randint(1, 5),
        simd=rng.choice([d for d in range(1, channels + 1) if channels % d == 0]),
        stride=stride if stride is not None else rng.randint(1, 3),
        padding=padding or rng.choice(["valid", "same"]),
    )


def check_random(seed, padding, stride):
    rng = random.Random(seed)
    config = random_config(rng, padding, stride)
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = WindowGenerator(shape=signed(bits) if is_signed else unsigned(bits), **config)
    images = random_images(rng, 3, config["height"], config["width"], config["channels"],
                           bits, is_signed)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected, config


@pytest.mark.parametrize("seed", range(6))
def test_valid_stride1_matches_golden(seed):
    check_random(seed, "valid", 1)


@pytest.mark.parametrize("seed", range(4))
def test_same_padding_matches_golden(seed):
    check_random(100 + seed, "same", 1)


@pytest.mark.parametrize("seed", range(6))
def test_stride_matches_golden(seed):
    # Strides 2 and 3, either padding (Keras' split of the 'same' zeros).
    check_random(200 + seed, None, 2 + seed % 2)


@pytest.mark.parametrize("bits", [1, 8])
def test_extreme_widths_and_heavy_backpressure(bits):
    rng = random.Random(bits)
    dut = WindowGenerator(height=6, width=7, channels=2, kernel=3, shape=signed(bits), simd=1,
                          padding="same")
    images = random_images(rng, 2, 6, 7, 2, bits, True)
    expected, sink = simulate(dut, images, rng, idle=0.7, stall=0.7)
    assert sink.received == expected


# (height, width, channels, kernel, simd, stride, padding): output strictly the slower side,
# input and output rates equal, and a 1x1 identity.
FULL_RATE = [
    (8, 8, 1, 3, 1, 1, "valid"),
    (9, 7, 2, 3, 1, 1, "same"),
    (8, 10, 4, 5, 2, 1, "valid"),
    (10, 6, 2, 4, 1, 3, "same"),
    (8, 8, 2, 2, 1, 2, "valid"),
    (9, 9, 1, 3, 1, 3, "valid"),
    (7, 5, 3, 1, 3, 1, "valid"),
]


@pytest.mark.parametrize("config", FULL_RATE)
def test_full_rate(config):
    """One output word every cycle within an image; exact latency and gap between images."""
    height, width, channels, kernel, simd, stride, padding = config
    dut = WindowGenerator(height=height, width=width, channels=channels, kernel=kernel,
                          shape=unsigned(4), simd=simd, stride=stride, padding=padding)
    assert dut.full_rate
    rng = random.Random(0)
    images = random_images(rng, 3, height, width, channels, 4, False)
    expected, sink = simulate(dut, images, rng)
    assert sink.received == expected
    words, times = dut.output_words_per_image, sink.times
    # The sink counts cycles from 1: input word j transfers in cycle j (0-based), the first
    # output word latency cycles after the last input word its window needs.
    assert times[0] == dut.first_window_words + dut.latency
    for image in range(3):
        first, last = times[image * words], times[(image + 1) * words - 1]
        assert last - first == words - 1
    gaps = [times[(n + 1) * words] - times[(n + 1) * words - 1] - 1 for n in range(2)]
    if dut.out_width * kernel ** 2 > stride * width:
        assert gaps == [dut.image_gap] * 2
    else:
        assert all(dut.image_gap <= gap <= dut.first_window_words + width * dut.groups
                   for gap in gaps)


def test_image_gap_values():
    # valid 3x3 on 8x8: the buffer (4 rows) prefetches one row of the next image while the
    # last window row is produced; the first window needs 2 rows + 3 pixels.
    dut = WindowGenerator(height=8, width=8, channels=1, kernel=3, shape=unsigned(8), simd=1)
    assert (dut.buffer_rows, dut.first_window_words, dut.image_gap) == (4, 19, 11)
    same = WindowGenerator(height=8, width=8, channels=1, kernel=3, shape=unsigned(8), simd=1,
                           padding="same")
    assert (same.first_window_words, same.image_gap) == (10, 0)


def test_properties():
    dut = WindowGenerator(height=28, width=27, channels=6, kernel=5, shape=signed(4), simd=3,
                          stride=2, padding="same")
    assert (dut.out_height, dut.out_width) == (14, 14)
    # Keras: total padding 13 * 2 + 5 - 28 = 3 rows (1 on top), 13 * 2 + 5 - 27 = 4 columns.
    assert (dut.pad_top, dut.pad_left) == (1, 2)
    assert dut.groups == 2
    assert dut.input_words_per_image == 28 * 27 * 2
    assert dut.output_words_per_image == 14 * 14 * 25 * 2
    assert dut.buffer_depth == 7 * 27 * 2
    valid = WindowGenerator(height=12, width=9, channels=1, kernel=4, shape=unsigned(1),
                            simd=1, stride=2)
    assert (valid.out_height, valid.out_width) == (5, 3)
    with pytest.raises(AttributeError):
        valid.kernel = 3


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"simd": 4}, ValueError, r"simd \(4\) must divide channels \(6\)"),
    ({"kernel": 9}, ValueError, r"kernel 9 is larger than the 8x10 image"),
    ({"padding": "full"}, ValueError, r"padding must be 'valid' or 'same', not 'full'"),
    ({"stride": 0}, ValueError, r"stride must be at least 1, not 0"),
    ({"height": 2.0}, TypeError, r"height must be an int, not 2.0"),
    ({"channels": True}, TypeError, r"channels must be an int"),
    ({"shape": "int8"}, TypeError, r"shape must be an integer shape"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(height=8, width=10, channels=6, kernel=3, shape=unsigned(8), simd=2)
    params.update(kwargs)
    with pytest.raises(error, match=message):
        WindowGenerator(**params)


def test_same_padding_allows_kernel_larger_than_image():
    rng = random.Random(7)
    dut = WindowGenerator(height=3, width=2, channels=1, kernel=5, shape=unsigned(3), simd=1,
                          padding="same")
    images = random_images(rng, 2, 3, 2, 1, 3, False)
    expected, sink = simulate(dut, images, rng, idle=0.2, stall=0.2)
    assert sink.received == expected


@pytest.mark.synth
@pytest.mark.parametrize(("family", "channels", "kernel"), [("ice40", 1, 5), ("ecp5", 8, 3)])
def test_line_buffer_maps_to_block_ram(synthesize, family, channels, kernel):
    # LeNet's first layer on iCE40 (6 rows x 28 words: one SB_RAM40_4K); on ECP5 a buffer
    # that small goes to distributed RAM, so take 8 channels (4 rows x 224 words: a DP16KD).
    dut = WindowGenerator(height=28, width=28, channels=channels, kernel=kernel,
                          shape=unsigned(8), simd=1)
    counts = synthesize(dut, family)
    assert counts["brams"] == 1
    # The storage is not in flip-flops: only counters and the output flag are.
    assert counts["ffs"] < 200
    assert 0 < counts["luts"] < 500
