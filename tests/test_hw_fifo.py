# amaranth: UnusedElaboratable=no
"""StreamFIFO: order, backpressure, level, throughput and block RAM."""

import random

import pytest
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.fifo import StreamFIFO
from sim.streams import AmaranthPort, StreamSink, StreamSource
from tests.streams import check_protocol, run_simulation, stream_bench

pytestmark = pytest.mark.hw

SHAPES = [
    unsigned(1),
    signed(7),
    data.ArrayLayout(signed(3), 4),
    data.StructLayout({"label": unsigned(4), "logits": data.ArrayLayout(signed(8), 10)}),
]


def setup(dut, rng, idle=0.0, stall=0.0):
    """Simulator, source, sink and both protocol logs; payloads as raw unsigned bits."""
    mask = (1 << Shape.cast(dut.shape).width) - 1
    sim = Simulator(dut)
    source = StreamSource(rng, idle)
    sink = StreamSink(rng, stall, decode=lambda v: v & mask)
    sent = check_protocol(sim, dut.i, "i")
    received = check_protocol(sim, dut.o, "o")
    return sim, source, sink, sent, received, mask


@pytest.mark.parametrize("depth", [1, 2, 5, 16])
@pytest.mark.parametrize("shape", SHAPES, ids=["u1", "s7", "array", "struct"])
def test_order_under_backpressure(depth, shape):
    rng = random.Random(depth)
    dut = StreamFIFO(shape=shape, depth=depth)
    width = Shape.cast(shape).width
    items = [rng.getrandbits(width) for _ in range(60)]
    sim, source, sink, sent, received, mask = setup(dut, rng, idle=0.3, stall=0.4)
    sim.add_testbench(stream_bench(source.send, dut.i, items))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(items)))
    run_simulation(sim, 1000)
    assert sink.received == items
    assert [v & mask for v in sent] == items and [v & mask for v in received] == items


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_fills_to_depth_and_reports_level(depth):
    rng = random.Random(0)
    dut = StreamFIFO(shape=unsigned(8), depth=depth)
    items = list(range(depth + 3))
    sim, source, sink, sent, _, _ = setup(dut, rng)
    sim.add_testbench(stream_bench(source.send, dut.i, items))

    async def consumer(ctx):
        await ctx.tick().repeat(2 * depth + 5)
        # Nobody reads: it holds exactly `depth` payloads and refuses the rest.
        assert ctx.get(dut.level) == depth
        assert ctx.get(dut.i.ready) == 0
        assert len(sent) == depth
        await sink.receive(AmaranthPort(ctx, dut.o), len(items))
        await ctx.tick()
        assert ctx.get(dut.level) == 0
    sim.add_testbench(consumer)
    run_simulation(sim, 200)
    assert sink.received == items


def test_full_throughput():
    """Depth >= 2: one payload per cycle in and out, two cycles through an empty FIFO."""
    rng = random.Random(1)
    dut = StreamFIFO(shape=signed(12), depth=4)
    items = [rng.getrandbits(12) for _ in range(50)]
    sim, source, sink, _, _, _ = setup(dut, rng)
    sim.add_testbench(stream_bench(source.send, dut.i, items))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(items)))
    run_simulation(sim, 200)
    assert sink.received == items
    # Item j is written in cycle j (from 0) and read two cycles later; the sink counts from 1.
    assert sink.times == [j + 3 for j in range(len(items))]


def test_properties():
    layout = data.ArrayLayout(unsigned(4), 3)
    dut = StreamFIFO(shape=layout, depth=7)
    assert dut.shape is layout and dut.depth == 7
    with pytest.raises(AttributeError):
        dut.depth = 3


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"depth": 0}, ValueError, r"depth must be at least 1, not 0"),
    ({"depth": "4"}, TypeError, r"depth must be an int, not '4'"),
    ({"shape": "u8"}, TypeError, r"shape must be a shape-like object, not 'u8'"),
    ({"shape": unsigned(0)}, ValueError, r"has zero width"),
])
def test_bad_parameters(kwargs, error, message):
    params = dict(shape=unsigned(8), depth=4)
    params.update(kwargs)
    with pytest.raises(error, match=message):
        StreamFIFO(**params)


@pytest.mark.synth
def test_deep_fifo_in_block_ram():
    from hw import toolchain

    counts = toolchain.synthesize(StreamFIFO(shape=unsigned(8), depth=512), "ice40")
    assert counts["brams"] >= 1
    assert counts["ffs"] < 100
