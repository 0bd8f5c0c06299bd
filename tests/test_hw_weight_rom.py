# amaranth: UnusedElaboratable=no
"""WeightROM: synchronous reads, enable, parameter checks and block RAM mapping."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.weight_rom import BLOCK_MIN_DEPTH, WeightROM
from sw.quantize import rom_words
from tests.streams import run_simulation

pytestmark = pytest.mark.hw


def read_back(rom, steps, seed, before=None, expected=0):
    """Drive random ``addr``/``en`` for ``steps`` cycles; check ``data`` every cycle from
    ``expected`` (what the read register starts with; None: unchecked until the first read)
    on, after awaiting ``before(ctx)`` (for a RAM: its load)."""
    rng = random.Random(seed)
    mismatches = []
    start = expected

    async def testbench(ctx):
        if before is not None:
            await before(ctx)
        expected = start
        for cycle in range(steps):
            addr, en = rng.randrange(rom.depth), rng.random() < 0.7
            ctx.set(rom.addr, addr)
            ctx.set(rom.en, en)
            await ctx.tick()
            if en:
                expected = rom.words[addr]
            # Valid the cycle after addr/en; held while en is low.
            if expected is not None and ctx.get(rom.data) != expected:
                mismatches.append((cycle, addr, en, ctx.get(rom.data), expected))

    sim = Simulator(rom)
    sim.add_testbench(testbench)
    run_simulation(sim, steps + 10 + 3 * len(getattr(before, "chunks", ())))
    return mismatches


@pytest.mark.parametrize(("depth", "width"), [(1, 1), (2, 3), (37, 8), (64, 16), (300, 5)])
def test_random_reads_with_enable(depth, width):
    rng = random.Random(depth * 100 + width)
    words = [rng.randrange(1 << width) for _ in range(depth)]
    rom = WeightROM(words, width=width)
    assert (rom.depth, rom.width, rom.words) == (depth, width, tuple(words))
    assert read_back(rom, 3 * depth + 20, seed=depth) == []


def test_holds_rom_words_of_a_weight_matrix():
    """The MAC array's use: FINN-tiled words of a signed 4-bit matrix, numpy ints accepted."""
    matrix = np.random.default_rng(1).integers(-7, 8, size=(12, 6))
    words = rom_words(matrix, 4, pe=2, simd=3)[1]
    rom = WeightROM(np.array(words), width=12)
    assert rom.words == tuple(words)
    assert read_back(rom, 40, seed=2) == []


def test_style_resolves_to_yosys_attribute():
    small, big = [0] * (BLOCK_MIN_DEPTH - 1), [0] * BLOCK_MIN_DEPTH
    assert WeightROM(small, width=4).attrs == {}
    assert WeightROM(big, width=4).attrs == {"rom_style": "block"}
    assert WeightROM(small, width=4, style="block").attrs == {"rom_style": "block"}
    assert WeightROM(big, width=4, style="logic").attrs == {"rom_style": "logic"}


@pytest.mark.parametrize(("args", "error", "message"), [
    ({"words": []}, ValueError, "ROM needs at least one word"),
    ({"words": [1, 16]}, ValueError, "ROM word 1 = 16 does not fit 4 unsigned bits"),
    ({"words": [-1]}, ValueError, "ROM word 0 = -1 does not fit 4 unsigned bits"),
    ({"words": [1, 2.0]}, TypeError, "ROM word 1 is 2.0, not an int"),
    ({"width": 0}, ValueError, "ROM width must be at least 1, not 0"),
    ({"width": "4"}, TypeError, "ROM width must be an int, not '4'"),
    ({"style": "huge"}, ValueError,
     "ROM style must be one of 'auto', 'block', 'logic', not 'huge'"),
])
def test_parameter_errors(args, error, message):
    kwargs = {"words": [1, 2, 3], "width": 4, **args}
    words = kwargs.pop("words")
    with pytest.raises(error) as info:
        WeightROM(words, **kwargs)
    assert str(info.value) == message


@pytest.mark.synth
@pytest.mark.parametrize(("family", "brams"), [("ice40", 2), ("ecp5", 1)])
def test_synthesis_maps_to_block_ram(family, brams):
    """512 x 16 bits: two SB_RAM40_4K (256 x 16 each) or one DP16KD (1024 x 18)."""
    from hw.toolchain import synthesize

    rng = random.Random(0)
    rom = WeightROM([rng.randrange(1 << 16) for _ in range(512)], width=16)
    counts = synthesize(rom, family)
    assert counts["brams"] == brams, counts
    assert counts["luts"] < 20 and counts["dsps"] == 0, counts


@pytest.mark.synth
def test_synthesis_logic_style_avoids_block_ram():
    from hw.toolchain import synthesize

    rng = random.Random(1)
    rom = WeightROM([rng.randrange(256) for _ in range(64)], width=8, style="logic")
    counts = synthesize(rom, "ice40")
    assert counts["brams"] == 0 and counts["luts"] > 0, counts
