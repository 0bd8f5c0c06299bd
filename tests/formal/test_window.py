# amaranth: UnusedElaboratable=no
"""WindowGenerator: every window of a tiny image, as soon as its pixels are in."""

import pytest
from amaranth.hdl import unsigned

from hw.window import WindowGenerator
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

#: 3x3 one-channel images, 2x2 windows: the kernel-row path (a kernel row per transfer) and
#: the window-register path (the whole window per transfer); a 3x3 window over "same"
#: padding at stride 2 (padding rows and columns made inside, windows that end in them).
CONFIGS = {
    "kernel_row": dict(kernel=2, simd=2),
    "window_register": dict(kernel=2, simd=4),
    "same_stride2": dict(kernel=3, simd=3, stride=2, padding="same"),
}
BMC_DEPTH = 20


def generator(name):
    return WindowGenerator(height=3, width=3, channels=1, shape=unsigned(1), **CONFIGS[name])


def contract(dut):
    """The input transfer that brings a window's last pixel enables its
    :attr:`window_words` transfers; windows leave in raster order, so a window is enabled no
    earlier than the one before it (with "same" padding a bottom-row window can need fewer
    pixels than the right end of the row above).

    Owed at most: the windows of every window row whose pixels fit in the ring of
    :attr:`buffer_rows` rows starting at the current window row's top (the input runs no
    further ahead), plus one window row already read out of the ring (the output pipeline;
    on the window-register path the register and its snapshot hold the row's last columns).
    With the input stopped an owed transfer leaves at least every :attr:`latency` cycles.
    """
    rows, columns = dut.out_height, dut.out_width
    row_words = dut.width * dut.channels // dut.in_lanes
    needs, need = [], 0
    for oy in range(rows):
        for ox in range(columns):
            bottom = min(oy * dut.stride - dut.pad_top + dut.kernel - 1, dut.height - 1)
            right = min(ox * dut.stride - dut.pad_left + dut.kernel - 1, dut.width - 1)
            need = max(need, bottom * row_words + -(-(right + 1) * dut.channels // dut.in_lanes))
            needs.append(need)
    enables = [0] * dut.input_words_per_image
    for need in needs:
        enables[need - 1] += dut.window_words

    def top(window_row):
        image, oy = divmod(window_row, rows)
        return image * dut.height + oy * dut.stride - dut.pad_top

    def bottom(window_row):
        image = window_row // rows
        return min(top(window_row) + dut.kernel - 1, image * dut.height + dut.height - 1)

    ahead = max(sum(1 for r in range(r0, r0 + 4 * rows)
                    if bottom(r) <= top(r0) + dut.buffer_rows - 1) for r0 in range(rows))
    capacity = (ahead + 1) * columns * dut.window_words
    return Contract(enables=tuple(enables), capacity=capacity, drain=dut.latency)


def harness(name, checks=None, **options):
    dut = generator(name)
    return StreamHarness(dut, contract(dut), checks=checks, **options)


@pytest.mark.parametrize("name", CONFIGS)
def test_bmc(sby, name):
    expect(sby(harness(name), mode="bmc", depth=BMC_DEPTH))


@pytest.mark.parametrize("name", CONFIGS)
def test_rules_by_induction(sby, name):
    expect(sby(harness(name, RULES), mode="prove", depth=4))


def test_cover(sby):
    # Every window of a first image (eight transfers) and the first of the next.
    expect(sby(harness("kernel_row", cover_outputs=9), mode="cover", depth=BMC_DEPTH))
