# amaranth: UnusedElaboratable=no
"""WindowGenerator: bit-exact against ``sw.golden.windows``, gap-free, block RAM."""

import itertools
import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib.data import ArrayLayout
from amaranth.sim import Simulator

from hw.window import WindowGenerator
from sim.streams import StreamSink, StreamSource
from sw.golden import windows
from sw.qmodel import conv_output_size, value_range
from tests.streams import check_protocol, pack, run_simulation, stream_bench, unpack

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
    """Stream ``images`` through ``dut``; return (expected words, sink)."""
    bits, is_signed, simd = dut.shape.width, dut.shape.signed, dut.simd
    expected = windows(images, dut.kernel, dut.stride, dut.padding).reshape(-1, simd).tolist()
    sim = Simulator(dut)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, bits))
    sink = StreamSink(rng, stall, decode=lambda v: unpack(v, simd, bits, is_signed))
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, images.reshape(-1, dut.in_lanes).tolist()))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(expected)))
    run_simulation(sim, 10 * (len(expected) + images.size) + 200)
    assert len(sent) == images.size // dut.in_lanes
    assert len(received) == len(expected)
    return expected, sink


PATHS = ["kernel-row", "window-register"]


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def random_config(rng, padding=None, stride=None, path=None):
    """A random shape and SIMD for ``path``: ``"kernel-row"`` (a divisor of a kernel row,
    channel groups or one pixel a word), ``"window-register"`` (a divisor of the window across
    kernel rows, or several pixels per input word), ``None`` either; under ~1000 output words
    an image."""
    height, width = rng.randint(5, 12), rng.randint(5, 12)
    channels, kernel = rng.randint(1, 6), rng.randint(1, 5)
    stride = stride if stride is not None else rng.randint(1, 3)
    padding = padding or rng.choice(["valid", "same"])
    path = path or rng.choice(PATHS)
    positions = (conv_output_size(height, kernel, stride, padding)
                 * conv_output_size(width, kernel, stride, padding))
    window, row = kernel ** 2 * channels, kernel * channels
    simds = [d for d in divisors(window) if positions * window // d <= 1000] or [window]
    if path == "kernel-row":
        simd = rng.choice([d for d in simds if row % d == 0] or [row])
        pixels = rng.choice([None, 1] if simd % channels == 0 else [None])
    else:
        across = [d for d in simds if row % d]
        simd = rng.choice(across or simds)
        several = [p for p in divisors(width) if p > 1]
        pixels = rng.choice([None, 1, *several[:3]]) if across else rng.choice(several)
    return dict(height=height, width=width, channels=channels, kernel=kernel, simd=simd,
                stride=stride, padding=padding, pixels=pixels)


def check_random(seed, padding, stride, path):
    rng = random.Random(seed)
    config = random_config(rng, padding, stride, path)
    bits, is_signed = rng.randint(1, 8), rng.random() < 0.5
    dut = WindowGenerator(shape=signed(bits) if is_signed else unsigned(bits), **config)
    assert dut.path == path
    images = random_images(rng, 3, config["height"], config["width"], config["channels"],
                           bits, is_signed)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected, config


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(3))
def test_valid_stride1_matches_golden(seed, path):
    check_random(seed, "valid", 1, path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(3))
def test_same_padding_matches_golden(seed, path):
    check_random(100 + seed, "same", 1, path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(4))
def test_stride_matches_golden(seed, path):
    # Strides 2 and 3, either padding (Keras' split of the 'same' zeros).
    check_random(200 + seed, None, 2 + seed % 2, path)


@pytest.mark.parametrize(("channels", "kernel", "simd", "padding", "stride"), [
    (1, 5, 5, "valid", 1),  # a 1-channel layer, one kernel row per word
    (2, 4, 4, "same", 1),  # two whole pixels per word, padded at both edges
    (6, 5, 10, "same", 2),  # 1 2/3 pixels per word: pixels split across words
    (3, 5, 15, "valid", 2),  # a whole kernel row per word, stride 2
])
def test_simd_across_kernel_row_matches_golden(channels, kernel, simd, padding, stride):
    rng = random.Random(simd)
    dut = WindowGenerator(height=9, width=8, channels=channels, kernel=kernel,
                          shape=signed(5), simd=simd, stride=stride, padding=padding)
    assert dut.banks > 1 and dut.path == "kernel-row"
    images = random_images(rng, 2, 9, 8, channels, 5, True)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected


@pytest.mark.parametrize(("channels", "kernel", "simd", "padding", "stride", "pixels"), [
    (1, 5, 25, "valid", 1, None),  # the whole window: LeNet's first layer
    (6, 5, 150, "valid", 1, None),  # the whole window of LeNet's second layer
    (6, 5, 25, "same", 1, None),  # 25 of a row's 30: spans two rows, one element a word
    (2, 4, 16, "valid", 1, None),  # two whole kernel rows (2 * K * C)
    (3, 4, 24, "same", 2, None),  # two whole kernel rows, stride 2, padded
    (3, 3, 1, "valid", 1, 1),  # SIMD 1 out of whole-pixel words
    (1, 3, 9, "same", 1, 2),  # two pixels a word
    (2, 3, 6, "same", 2, 4),  # four pixels a word, stride 2
    (2, 5, 50, "same", 1, 8),  # a whole row a word, the kernel wider than the word
])
def test_simd_across_kernel_rows_matches_golden(channels, kernel, simd, padding, stride,
                                                pixels):
    rng = random.Random(simd + kernel)
    dut = WindowGenerator(height=9, width=8, channels=channels, kernel=kernel,
                          shape=signed(5), simd=simd, stride=stride, padding=padding,
                          pixels=pixels)
    assert dut.path == "window-register" and dut.banks == kernel
    images = random_images(rng, 2, 9, 8, channels, 5, True)
    expected, sink = simulate(dut, images, rng, idle=0.3, stall=0.3)
    assert sink.received == expected


@pytest.mark.parametrize(("bits", "simd", "pixels"), [(1, 3, None), (8, 3, None), (1, 18, None),
                                                      (8, 2, 1)])
def test_extreme_widths_and_heavy_backpressure(bits, simd, pixels):
    rng = random.Random(bits + simd)
    dut = WindowGenerator(height=6, width=7, channels=2, kernel=3, shape=signed(bits),
                          simd=simd, padding="same", pixels=pixels)
    images = random_images(rng, 2, 6, 7, 2, bits, True)
    expected, sink = simulate(dut, images, rng, idle=0.7, stall=0.7)
    assert sink.received == expected


def check_steady_state(dut, count, rng):
    """Stream ``count`` images at full rate; check latency, interval and bubbles, exactly."""
    images = random_images(rng, count, dut.height, dut.width, dut.channels, 4, False)
    expected, sink = simulate(dut, images, rng)
    assert sink.received == expected
    words, times = dut.output_words_per_image, sink.times
    # The sink counts cycles from 1: input word j transfers in cycle j (0-based), the first
    # output word latency cycles after the last input word its window needs.
    assert times[0] == dut.first_window_words + dut.latency
    # Interval between the first words of consecutive images: the model's, from the first
    # image on where each image's words leave back to back, else from the second.
    starts = times[::words]
    intervals = [later - earlier for earlier, later in itertools.pairwise(starts)]
    skip = 0 if dut.full_rate else 1
    assert intervals[skip:] == [dut.cycles_per_image] * (count - 1 - skip)
    bubbles = [times[(image + 1) * words - 1] - times[image * words] - (words - 1)
               for image in range(count)]
    assert (bubbles == [0] * count) == dut.full_rate
    return intervals


def gap_free(dut):
    """The interval of a generator that never idles for itself: the slower side's words."""
    return max(dut.input_words_per_image, dut.output_words_per_image)


# (height, width, channels, kernel, simd, stride, padding, pixels)
FULL_RATE = [
    (28, 28, 1, 5, 1, 1, "valid", None),  # LeNet conv1 (the gap was 89 cycles per image)
    (28, 28, 1, 5, 5, 1, "valid", None),  # ... five times as fast: a kernel row per word
    (12, 12, 6, 5, 6, 1, "valid", None),  # LeNet conv2
    (12, 12, 6, 5, 10, 1, "valid", None),  # ... pixels split across words (in_lanes 2)
    (12, 12, 6, 5, 30, 1, "valid", None),  # ... a whole kernel row per word
    (10, 10, 1, 3, 1, 1, "valid", None),  # (the gap was 13 cycles)
    (10, 10, 1, 3, 3, 1, "valid", None),
    (9, 7, 2, 3, 1, 1, "same", None),
    (9, 9, 2, 3, 3, 1, "same", None),
    (11, 11, 1, 5, 5, 2, "same", None),
    (10, 10, 2, 3, 2, 2, "valid", None),
    (10, 6, 2, 4, 1, 3, "same", None),
    (8, 8, 2, 2, 1, 2, "valid", None),  # input and output rates equal
    (9, 9, 1, 3, 1, 3, "valid", None),  # input and output rates equal, unused bottom rows
    (7, 5, 3, 1, 3, 1, "valid", None),  # a 1x1 identity
    (10, 10, 2, 3, 3, 2, "valid", None),  # the input is the slower side (not full rate)
    # The window-register path (LeNet conv1 at SIMD 25, one pixel a word: further down).
    (28, 28, 1, 5, 25, 1, "valid", 4),  # ... four pixels a word: a window per cycle, 576
    (12, 12, 6, 5, 150, 1, "valid", None),  # LeNet conv2, the whole window: 144 (input)
    (12, 12, 6, 5, 25, 1, "valid", None),  # ... one element a word: 864 (input)
    (12, 12, 6, 5, 25, 1, "valid", 1),  # ... whole pixels a word: 384 (output)
    (10, 10, 2, 4, 16, 1, "same", None),  # two kernel rows a transfer
    (9, 9, 2, 3, 18, 1, "same", None),  # the whole window, rates equal
    (11, 11, 1, 5, 25, 2, "same", None),  # stride 2
    (10, 10, 1, 3, 9, 1, "same", 2),  # two pixels a word, padded
    (8, 8, 3, 3, 1, 1, "valid", 1),  # SIMD 1 out of whole-pixel words
]


@pytest.mark.parametrize("config", FULL_RATE)
def test_full_rate(config):
    """No idle cycle of the generator's own: the slower side sets the interval exactly."""
    height, width, channels, kernel, simd, stride, padding, pixels = config
    dut = WindowGenerator(height=height, width=width, channels=channels, kernel=kernel,
                          shape=unsigned(4), simd=simd, stride=stride, padding=padding,
                          pixels=pixels)
    assert dut.cycles_per_image == gap_free(dut)
    if dut.input_words_per_image <= dut.output_words_per_image:
        assert dut.full_rate and dut.image_gap == 0
    # At full rate the first interval is already the steady one: two images are enough.
    check_steady_state(dut, 2 if dut.full_rate else 3, random.Random(0))


def test_whole_window_runs_at_the_input_rate():
    # LeNet's first layer with all 25 products at once: a window per input pixel once the
    # buffer is primed (4 rows + 5 pixels, plus the latency), 784 cycles per image.
    dut = WindowGenerator(height=28, width=28, channels=1, kernel=5, shape=unsigned(8),
                          simd=25)
    assert (dut.path, dut.in_lanes, dut.window_words, dut.latency) == (
        "window-register", 1, 1, 3)
    assert (dut.first_window_words, dut.cycles_per_image, dut.image_gap) == (117, 784, 208)
    intervals = check_steady_state(dut, 3, random.Random(1))
    assert intervals == [784, 784]


@pytest.mark.parametrize("config", [
    (28, 28, 1, 5, 25, 1, "valid", 2),  # LeNet conv1, two pixels a word: 576 + 24 * 1
    (12, 12, 6, 5, 75, 1, "valid", 1),  # LeNet conv2, two rows and a half: 128 + 8 * 3
    (10, 10, 6, 4, 16, 1, "valid", None),  # 4 * 3 reads for 6 transfers: 294 + 7 * 6
])
def test_row_start_wait(config):
    # Where the output is the slower side and a window row's first window needs more reads
    # than the previous row's last snapshot has transfers, each window row waits the
    # difference; the model has it exactly.
    height, width, channels, kernel, simd, stride, padding, pixels = config
    dut = WindowGenerator(height=height, width=width, channels=channels, kernel=kernel,
                          shape=unsigned(4), simd=simd, stride=stride, padding=padding,
                          pixels=pixels)
    assert dut.row_wait > 0 and not dut.full_rate
    assert dut.cycles_per_image == dut.output_words_per_image + dut.out_height * dut.row_wait
    assert dut.cycles_per_image > gap_free(dut)
    check_steady_state(dut, 3, random.Random(2))


@pytest.mark.parametrize("seed", range(4))
def test_random_steady_state(seed):
    # The buffer size and the interval come from a model of the control: check it on random
    # shapes (it may take one image to settle where the input is the slower side).
    rng = random.Random(300 + seed)
    dut = WindowGenerator(shape=unsigned(4), **random_config(rng, path=PATHS[seed % 2]))
    check_steady_state(dut, 4, rng)


def test_image_gap_values():
    # valid 3x3 on 10x10: 2 * 3 rows let the next image's first 2 rows + 3 pixels in while
    # the last window row is produced (with kernel + stride = 4 rows the gap was 13).
    dut = WindowGenerator(height=10, width=10, channels=1, kernel=3, shape=unsigned(8), simd=1)
    assert (dut.buffer_rows, dut.first_window_words, dut.image_gap) == (6, 23, 0)
    lenet = WindowGenerator(height=28, width=28, channels=1, kernel=5, shape=unsigned(8),
                            simd=1)
    assert (lenet.buffer_rows, lenet.buffer_depth, lenet.image_gap) == (10, 280, 0)
    assert lenet.output_words_per_image == 14400
    fast = WindowGenerator(height=28, width=28, channels=1, kernel=5, shape=unsigned(8),
                           simd=5)
    assert (fast.banks, fast.buffer_depth, fast.output_words_per_image) == (5, 60, 2880)
    # The whole window: a row per bank, two slots each.
    whole = WindowGenerator(height=28, width=28, channels=1, kernel=5, shape=unsigned(8),
                            simd=25)
    assert (whole.banks, whole.buffer_rows, whole.buffer_depth) == (5, 10, 56)
    assert (whole.output_words_per_image, whole.register_bits) == (576, 2 * 25 * 8)
    same = WindowGenerator(height=8, width=8, channels=1, kernel=3, shape=unsigned(8), simd=1,
                           padding="same")
    assert (same.buffer_rows, same.first_window_words, same.image_gap) == (4, 10, 0)
    # The input is the slower side: it never waits, the output idles the difference.
    slow = WindowGenerator(height=10, width=10, channels=2, kernel=3, shape=unsigned(8),
                           simd=3, stride=2)
    assert (slow.input_words_per_image, slow.output_words_per_image) == (200, 96)
    assert slow.image_gap == 104


def test_ring_sized_for_a_slower_consumer():
    """A 1x1 kernel at stride 2 skips every other input row: with ``o`` always ready one ring
    row does, but behind a MAC array of 9 cycles a window the skipped row must stream in while
    the row before it is still being consumed, so the ring takes more rows; a 5x5 kernel at
    stride 1 (LeNet's) needs none beyond its own."""
    skipping = {"height": 28, "width": 28, "channels": 1, "kernel": 1, "shape": unsigned(8),
                "simd": 1, "stride": 2}
    alone, behind = WindowGenerator(**skipping), WindowGenerator(**skipping, window_cycles=9)
    assert (alone.window_cycles, alone.buffer_rows) == (1, 1)
    assert (behind.window_cycles, behind.buffer_rows) == (9, 3)
    assert behind.cycles_per_image == alone.cycles_per_image == 784  # with o always ready
    # LeNet-5's second convolution behind its 2 x 150 MAC array (8 cycles a window).
    lenet = {"height": 14, "width": 14, "channels": 6, "kernel": 5, "shape": unsigned(4),
             "simd": 150}
    assert WindowGenerator(**lenet, window_cycles=8).buffer_rows == \
        WindowGenerator(**lenet).buffer_rows == 10
    with pytest.raises(ValueError, match="window_cycles must be at least 1"):
        WindowGenerator(**skipping, window_cycles=0)


def test_cycles_formula():
    # The model's interval is the slower side's words plus, on the window-register path,
    # each window row's wait for its first columns; the buffer stays small.
    rng = random.Random(5)
    for index in range(200):
        config = random_config(rng, path=PATHS[index % 2])
        dut = WindowGenerator(shape=unsigned(2), **config)
        assert dut.cycles_per_image == max(
            dut.input_words_per_image,
            dut.output_words_per_image + dut.out_height * dut.row_wait), config
        if dut.path == "kernel-row":
            assert dut.row_wait == 0
            assert dut.image_gap == max(0, dut.input_words_per_image
                                        - dut.output_words_per_image), config
        assert dut.buffer_rows <= dut.banks * (dut.kernel + dut.stride + dut.height), config


def test_properties():
    dut = WindowGenerator(height=28, width=27, channels=6, kernel=5, shape=signed(4), simd=3,
                          stride=2, padding="same")
    assert (dut.out_height, dut.out_width) == (14, 14)
    # Keras: total padding 13 * 2 + 5 - 28 = 3 rows (1 on top), 13 * 2 + 5 - 27 = 4 columns.
    assert (dut.pad_top, dut.pad_left) == (1, 2)
    assert (dut.in_lanes, dut.groups, dut.banks, dut.pixels) == (3, 2, 1, None)
    assert dut.input_words_per_image == 28 * 27 * 2
    assert dut.output_words_per_image == 14 * 14 * 25 * 2
    assert dut.buffer_depth == dut.buffer_rows * 27 * 2
    assert (dut.path, dut.latency, dut.register_words, dut.register_bits) == (
        "kernel-row", 2, 0, 0)
    valid = WindowGenerator(height=12, width=9, channels=1, kernel=4, shape=unsigned(1),
                            simd=1, stride=2)
    assert (valid.out_height, valid.out_width) == (5, 3)
    assert (valid.kernel, valid.stride, valid.padding, valid.window_cycles) == (4, 2, "valid", 16)
    # 10 lanes out of 6-channel pixels: 2 channels per input word, 5 input words per output
    # word in 5 banks of ceil(9 * 3 / 5) words per row.
    wide = WindowGenerator(height=12, width=9, channels=6, kernel=5, shape=signed(3), simd=10)
    assert (wide.in_lanes, wide.groups, wide.banks, wide.latency) == (2, 3, 5, 3)
    assert wide.input_words_per_image == 12 * 9 * 3
    assert wide.output_words_per_image == 8 * 5 * 15
    assert wide.buffer_depth == wide.buffer_rows * 6
    members = wide.signature.members
    assert members["i"].signature.members["payload"].shape == ArrayLayout(signed(3), 2)
    assert members["o"].signature.members["payload"].shape == ArrayLayout(signed(3), 10)
    # Two kernel rows a transfer (2 * 5 * 6 does not divide 150: 75 does), one pixel's 3
    # channels a word: the window-register path, a row per bank, 2 words per pixel.
    across = WindowGenerator(height=12, width=9, channels=6, kernel=5, shape=signed(3),
                             simd=75)
    assert (across.path, across.in_lanes, across.groups, across.banks) == (
        "window-register", 3, 2, 5)
    assert (across.window_words, across.register_words, across.latency) == (2, 10, 3)
    assert across.buffer_depth == across.buffer_rows // 5 * 18
    assert across.register_bits == (5 * 10 * 3 + 150) * 3
    # Four whole pixels a word: the register holds a window plus three pixels of slack.
    quad = WindowGenerator(height=8, width=8, channels=2, kernel=3, shape=unsigned(4),
                           simd=2, pixels=4)
    assert (quad.path, quad.in_lanes, quad.groups, quad.pixels) == ("window-register", 8, 1, 4)
    assert (quad.input_words_per_image, quad.register_words) == (16, 2)
    assert quad.signature.members["i"].signature.members["payload"].shape == ArrayLayout(
        unsigned(4), 8)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"simd": 4}, ValueError, r"simd \(4\) must divide kernel\*\*2 \* channels \(54\)"),
    ({"simd": 7, "kernel": 5, "channels": 1}, ValueError,
     r"simd \(7\) must divide kernel\*\*2 \* channels \(25\)"),
    ({"pixels": 3}, ValueError, r"pixels \(3\) must divide the width \(10\)"),
    ({"pixels": 0}, ValueError, r"pixels must be at least 1, not 0"),
    ({"pixels": 2.0}, TypeError, r"pixels must be an int, not 2.0"),
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


@pytest.mark.parametrize("simd", [1, 25])
def test_same_padding_allows_kernel_larger_than_image(simd):
    rng = random.Random(7)
    dut = WindowGenerator(height=3, width=2, channels=1, kernel=5, shape=unsigned(3),
                          simd=simd, padding="same")
    images = random_images(rng, 2, 3, 2, 1, 3, False)
    expected, sink = simulate(dut, images, rng, idle=0.2, stall=0.2)
    assert sink.received == expected


@pytest.mark.synth
@pytest.mark.parametrize(("family", "channels", "kernel", "simd", "brams"), [
    ("ice40", 1, 5, 1, 1),
    ("ice40", 1, 5, 5, 5),
    ("ice40", 1, 5, 25, 5),
    ("ecp5", 8, 3, 1, 1),
])
def test_line_buffer_maps_to_block_ram(synthesize, family, channels, kernel, simd, brams):
    # LeNet's first layer on iCE40: 10 rows x 28 bytes, one SB_RAM40_4K; with a kernel row
    # per word, one per bank (5 x 60 bytes); with the whole window, one per row bank (5 x
    # 56 bytes). On ECP5 a buffer that small goes to distributed RAM, so take 8 channels (6
    # rows x 224 words: a DP16KD).
    dut = WindowGenerator(height=28, width=28, channels=channels, kernel=kernel,
                          shape=unsigned(8), simd=simd)
    counts = synthesize(dut, family)
    assert counts["brams"] == brams
    # The storage is not in flip-flops: only counters, flags, the window and output
    # registers are.
    assert counts["ffs"] < 150 + 8 * simd + dut.register_bits
    assert 0 < counts["luts"] < 400 + 60 * simd
