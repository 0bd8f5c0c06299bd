# amaranth: UnusedElaboratable=no
"""WeightRAM: loaded through its stream, read like a ROM, a broken-off load restarted, and the
iCE40 SPRAM primitives it becomes."""

import random

import pytest
from amaranth.back import rtlil

from hw.weight_ram import BLOCK_DEPTH, WeightRAM, load_chunks
from tests.test_hw_weight_rom import read_back

pytestmark = pytest.mark.hw


def load_then_read(ram, loads, reads, seed):
    """Send each chunk list of ``loads`` (the first chunk marked ``first``), with random gaps;
    then read ``reads`` random words with random enables. Returns the reads' mismatches."""
    rng = random.Random(seed)

    async def load(ctx):
        for chunks in loads:
            for index, chunk in enumerate(chunks):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(ram.load.valid, 1)
                ctx.set(ram.load.payload, {"data": chunk, "first": index == 0})
                assert ctx.get(ram.load.ready)
                await ctx.tick()
                ctx.set(ram.load.valid, 0)
    load.chunks = [chunk for chunks in loads for chunk in chunks]
    return read_back(ram, reads, seed, before=load, expected=None)


@pytest.mark.parametrize(("depth", "width"), [(1, 3), (5, 16), (40, 20), (33, 64), (7, 47)])
def test_loaded_words_read_back(depth, width):
    rng = random.Random(depth * 7 + width)
    words = [rng.randrange(1 << width) for _ in range(depth)]
    ram = WeightRAM(words, width=width)
    chunks = load_chunks(words, width)
    assert len(chunks) == depth * ram.blocks == depth * -(-width // 16)
    assert load_then_read(ram, [chunks], 4 * depth + 20, seed=depth) == []


def test_a_broken_off_load_is_restarted_by_the_next_one():
    rng = random.Random(3)
    words = [rng.randrange(1 << 40) for _ in range(12)]
    ram = WeightRAM(words, width=40)
    chunks = load_chunks(words, 40)
    garbage = [rng.randrange(1 << 16) for _ in range(len(chunks) - 5)]
    assert load_then_read(ram, [garbage, chunks], 60, seed=4) == []
    # Without the good load the garbage is what is read: the test can fail.
    assert load_then_read(ram, [garbage, chunks[:len(chunks) // 2]], 60, seed=4) != []


def test_preloaded_words_need_no_load():
    words = list(range(1, 30))
    assert load_then_read(WeightRAM(words, width=8, preload=True), [], 80, seed=5) == []
    assert load_then_read(WeightRAM(words, width=8), [], 80, seed=5) != []


def test_parameter_errors():
    with pytest.raises(ValueError, match="at least one word"):
        WeightRAM([], width=4)
    with pytest.raises(ValueError, match="at most 16384 words"):
        WeightRAM([0] * (BLOCK_DEPTH + 1), width=4)
    with pytest.raises(ValueError, match="does not fit 4 unsigned bits"):
        WeightRAM([16], width=4)


class _ICE40:
    family = "iCE40"


def test_ice40_uses_one_spram_per_16_bits():
    """On an iCE40 platform the RAM is SB_SPRAM256KA blocks, side by side, none preloaded."""
    ram = WeightRAM([1, 2, 3], width=40)
    text = rtlil.convert(ram, platform=_ICE40())
    assert text.count("SB_SPRAM256KA") == 3
    assert "SB_SPRAM256KA" not in rtlil.convert(WeightRAM([1, 2, 3], width=40))
