# amaranth: UnusedElaboratable=no
"""MACArray against the golden model: random shapes, all bit widths, stalls, exact timing.

Every behavioural test runs with each multiplier kind (hard, LUT-built, packed pairs), and
with constant weights wherever the shape gives every weight a lane of its own.
"""

import random

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from hw.mac_array import MACArray, array_latency, constant_tree_depth
from hw.multiplier import constant_depth, constant_levels, max_digits, packing_shift
from sim.streams import StreamSink, StreamSource
from sw import golden
from sw.qmodel import Dense, weight_range
from tests.streams import (
    check_protocol,
    pack,
    run_simulation,
    stream_bench,
    transfer_cycles,
    unpack,
)

pytestmark = pytest.mark.hw

MULTIPLIERS = ("dsp", "lut", "packed")


def make_layer(rng, fan_in, channels, weight_bits, in_shape, bias_bits=10):
    """A random Dense layer whose ``acc_bits`` is the exact width of docs/numerics.md."""
    lo, hi = weight_range(weight_bits)
    if weight_bits == 1:
        weights = rng.choice([-1, 1], size=(fan_in, channels))
    else:
        weights = rng.integers(lo, hi + 1, size=(fan_in, channels))
    bias = rng.integers(-(1 << bias_bits), 1 << bias_bits, size=channels)
    return Dense(name="t", in_shape=(fan_in,), out_shape=(channels,), weight=weights,
                 bias=bias, weight_bits=weight_bits, weight_frac=np.zeros(channels, np.int64),
                 in_bits=in_shape.width, in_signed=in_shape.signed, in_frac=0, relu=False)


def make_array(layer, pe, simd, multiplier="dsp", hard_lanes=None):
    shape = signed(layer.in_bits) if layer.in_signed else unsigned(layer.in_bits)
    return MACArray(layer.matrix, layer.bias, weight_bits=layer.weight_bits, in_shape=shape,
                    acc_bits=layer.acc_bits, pe=pe, simd=simd, multiplier=multiplier,
                    hard_lanes=hard_lanes)


def shape_for(multiplier, weight_bits, in_shape):
    """``in_shape``, or for ``"packed"`` the widest input of its signedness that packs.

    (Pairs too wide for the hard multiplier are refused: see test_parameter_errors.)
    """
    if multiplier != "packed" or weight_bits == 1:
        return in_shape
    make = signed if in_shape.signed else unsigned
    for width in range(in_shape.width, 0, -1):
        try:
            packing_shift(weight_bits, make(width))
        except ValueError:
            continue
        return make(width)
    raise AssertionError("unreachable: 1-bit inputs always pack")


def random_inputs(rng, layer, vectors):
    lo = -(1 << (layer.in_bits - 1)) if layer.in_signed else 0
    hi = (1 << (layer.in_bits - 1)) - 1 if layer.in_signed else (1 << layer.in_bits) - 1
    x = rng.integers(lo, hi + 1, size=(vectors, layer.fan_in))
    # Include the extremes, where an off-by-one width would overflow.
    x[0] = hi
    if vectors > 1:
        x[1] = lo
    return x


def simulate(dut, x, *, seed=0, idle=0.0, stall=0.0, load=False):
    """Stream ``x`` (vectors, fan_in) through ``dut``; return outputs and transfer cycles.

    With ``load``, a ``loaded`` array's weights are sent through its ``load`` stream first,
    with random gaps.
    """
    items = [list(row[sf * dut.simd:(sf + 1) * dut.simd])
             for row in x for sf in range(dut.sf)]
    count = len(x) * dut.nf
    rng = random.Random(seed)
    sim = Simulator(dut)
    source = StreamSource(rng, idle, encode=lambda v: pack(v, dut.in_shape.width))
    sink = StreamSink(rng, stall, decode=lambda w: unpack(w, dut.pe, dut.acc_bits, True))
    sent = check_protocol(sim, dut.i, "i")
    got = check_protocol(sim, dut.o, "o")
    times = {"i": transfer_cycles(sim, dut.i), "o": transfer_cycles(sim, dut.o)}
    chunks = dut.load_chunks() if load else []

    async def load_then_send(ctx):
        for index, chunk in enumerate(chunks):
            if rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.load.valid, 1)
            ctx.set(dut.load.payload, {"data": chunk, "first": index == 0})
            await ctx.tick()
            ctx.set(dut.load.valid, 0)
        await stream_bench(source.send, dut.i, items)(ctx)

    sim.add_testbench(load_then_send)
    sim.add_testbench(stream_bench(sink.receive, dut.o, count))
    budget = 2 * len(chunks) + (len(items) + count * dut.sf) * (4 if idle or stall else 1) + 200
    run_simulation(sim, budget)
    assert len(sent) == len(items) and len(got) == count
    return sink.received, times


def expected_transfers(layer, x, pe):
    acc = golden.dense(x, layer)
    return [[int(v) for v in row[nf * pe:(nf + 1) * pe]]
            for row in acc for nf in range(layer.channels // pe)]


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_random_shapes_all_widths_with_stalls(bits, multiplier):
    """Weights of ``bits`` bits and inputs of ``bits`` bits (signed on odd widths > 1)."""
    rng = np.random.default_rng(100 + bits)
    in_shape = signed(bits) if bits % 2 and bits > 1 else unsigned(bits)
    in_shape = shape_for(multiplier, bits, in_shape)
    fan_in = int(rng.choice([6, 12, 18, 20, 24, 30]))
    channels = int(rng.choice([2, 3, 4, 6, 8]))
    pe = int(rng.choice(divisors(channels)[:4]))
    simd = int(rng.choice([d for d in divisors(fan_in) if d <= 6]))
    layer = make_layer(rng, fan_in, channels, bits, in_shape)
    dut = make_array(layer, pe, simd, multiplier)
    x = random_inputs(rng, layer, 3)
    received, _ = simulate(dut, x, seed=bits, idle=0.3, stall=0.4)
    assert received == expected_transfers(layer, x, pe)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize(("weight_bits", "in_bits"), [(1, 8), (2, 7), (3, 1), (5, 2), (8, 8),
                                                      (4, 6), (6, 3), (7, 5), (4, 8)])
def test_mixed_widths_first_layer_style(weight_bits, in_bits, multiplier):
    """Mixed weight/input widths, including the first layer's 8-bit unsigned pixels."""
    rng = np.random.default_rng(weight_bits * 10 + in_bits)
    in_shape = shape_for(multiplier, weight_bits, unsigned(in_bits))
    layer = make_layer(rng, 16, 4, weight_bits, in_shape, bias_bits=14)
    dut = make_array(layer, pe=2, simd=4, multiplier=multiplier)
    x = random_inputs(rng, layer, 3)
    received, _ = simulate(dut, x, seed=in_bits, idle=0.2, stall=0.5)
    assert received == expected_transfers(layer, x, 2)


@pytest.mark.parametrize("multiplier", [*MULTIPLIERS, "constant"])
@pytest.mark.parametrize(("weight_bits", "in_bits"), [(1, 8), (2, 2), (3, 5), (4, 8), (8, 4)])
def test_constant_weights_one_word(weight_bits, in_bits, multiplier):
    """NF = SF = 1: every lane keeps one weight, built in as a constant (no ROM); the
    extremes of the input range meet every weight of the range."""
    rng = np.random.default_rng(weight_bits * 10 + in_bits)
    lo, hi = weight_range(weight_bits)
    channels = 4
    in_shape = shape_for(multiplier, weight_bits, unsigned(in_bits))
    layer = make_layer(rng, hi - lo + 1, channels, weight_bits, in_shape)
    if weight_bits > 1:  # every weight value in every channel
        layer.weight[...] = np.arange(lo, hi + 1)[:, None]
    dut = make_array(layer, pe=channels, simd=layer.fan_in, multiplier=multiplier)
    assert (dut.nf, dut.sf) == (1, 1)
    x = random_inputs(rng, layer, 3)
    received, _ = simulate(dut, x, seed=in_bits, idle=0.2, stall=0.3)
    assert received == expected_transfers(layer, x, channels)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed_input", [False, True])
def test_constant_lanes_random_shapes_all_widths_with_stalls(bits, signed_input):
    """``"constant"``: a lane for every weight (PE = channels, SIMD = fan-in), random weights
    and shapes, signed and unsigned inputs, input idle and output stalled at random."""
    rng = np.random.default_rng(200 + bits + 10 * signed_input)
    in_shape = signed(max(bits, 2)) if signed_input else unsigned(bits)
    fan_in, channels = int(rng.choice([1, 3, 9, 25, 40])), int(rng.choice([1, 2, 5, 8]))
    layer = make_layer(rng, fan_in, channels, bits, in_shape)
    dut = make_array(layer, channels, fan_in, "constant")
    assert (dut.nf, dut.sf, dut.hard_lanes, dut.stages) == (1, 1, 0, (tuple(range(channels)),))
    x = random_inputs(rng, layer, 12)
    received, _ = simulate(dut, x, seed=bits, idle=0.3, stall=0.4)
    assert received == expected_transfers(layer, x, channels)


@pytest.mark.parametrize(("fan_in", "channels", "weight_bits"), [(1, 1, 2), (25, 4, 4), (9, 3, 8),
                                                                 (40, 2, 1)])
def test_constant_lanes_full_rate_exact_cycles(fan_in, channels, weight_bits):
    """One vector a cycle, outputs at the stated latency: the trees' registered levels
    (:func:`constant_tree_depth`) stand where the other kinds' products and trees do."""
    rng = np.random.default_rng(fan_in + channels)
    layer = make_layer(rng, fan_in, channels, weight_bits, unsigned(8))
    dut = make_array(layer, channels, fan_in, "constant")
    levels = constant_levels(constant_depth(fan_in * max_digits(weight_bits)))
    assert dut.tree_depth == constant_tree_depth(fan_in, weight_bits) == levels - 1
    assert dut.latency == array_latency(channels, fan_in, "constant", weight_bits) == levels + 5
    vectors = 8
    x = random_inputs(rng, layer, vectors)
    received, times = simulate(dut, x)
    assert received == expected_transfers(layer, x, channels)
    assert times["i"] == list(range(vectors))
    assert times["o"] == [v + dut.latency for v in range(vectors)]


@pytest.mark.parametrize("multiplier", ["dsp", "packed"])
@pytest.mark.parametrize(("pe", "simd", "hard_lanes", "weight_bits", "in_bits"), [
    (2, 5, 2, 4, 8), (3, 4, 1, 4, 4), (4, 6, 5, 2, 2), (2, 3, 0, 4, 8), (5, 4, 3, 3, 6)])
def test_some_lanes_hard_the_rest_lut(pe, simd, hard_lanes, weight_bits, in_bits, multiplier):
    """``hard_lanes``: the first lanes use hard (or packed) multipliers, the rest LUTs; a
    packed PE pair's ROM holds high codes only for its packed lanes."""
    rng = np.random.default_rng(pe * 100 + simd * 10 + hard_lanes)
    layer = make_layer(rng, simd * 3, pe * 2, weight_bits, unsigned(in_bits))
    dut = make_array(layer, pe, simd, multiplier, hard_lanes=hard_lanes)
    assert dut.hard_lanes == hard_lanes and dut.multiplier == (multiplier if hard_lanes
                                                               else "lut")
    x = random_inputs(rng, layer, 3)
    received, _ = simulate(dut, x, seed=hard_lanes, idle=0.2, stall=0.3)
    assert received == expected_transfers(layer, x, pe)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("seed", range(4))
def test_larger_random_shapes(seed, multiplier):
    """Fan-in up to 60 and 12 channels, random divisors, including pe=1/simd=1 and full."""
    rng = np.random.default_rng(seed)
    fan_in = int(rng.choice([36, 48, 60]))
    channels = int(rng.choice([6, 10, 12]))
    pe = int(rng.choice(divisors(channels)))
    simd = int(rng.choice([d for d in divisors(fan_in) if d <= 12]))
    bits = int(rng.integers(1, 9))
    in_shape = shape_for(multiplier, bits, unsigned(int(rng.integers(1, 9))))
    layer = make_layer(rng, fan_in, channels, bits, in_shape)
    dut = make_array(layer, pe, simd, multiplier)
    x = random_inputs(rng, layer, 2)
    received, _ = simulate(dut, x, seed=seed, idle=0.2, stall=0.3)
    assert received == expected_transfers(layer, x, pe)


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize(("fan_in", "channels", "pe", "simd"), [
    (12, 6, 2, 3),   # NF=3, SF=4
    (8, 4, 4, 8),    # NF=1, SF=1: one vector a cycle
    (8, 4, 1, 1),    # NF=4, SF=8
    (6, 6, 1, 6),    # NF=6, SF=1: replayed from the buffer every cycle
    (12, 8, 4, 2),   # SF > PE: no deskew registers
    (4, 6, 6, 1),    # PE > SF: deskew registers
    (6, 10, 5, 2),   # odd PE: packed, the last PE is a stage of its own
])
def test_full_rate_exact_cycles(fan_in, channels, pe, simd, multiplier):
    """II=1: back to back vectors, NF*SF cycles each, outputs at the stated latency."""
    rng = np.random.default_rng(fan_in * channels + pe)
    layer = make_layer(rng, fan_in, channels, 4, unsigned(4))
    dut = make_array(layer, pe, simd, multiplier)
    stages = (pe + 1) // 2 if multiplier == "packed" else pe
    # ROM read, ROM register, product register, the adder tree's ceil(log2(simd)) levels...
    assert dut.latency == stages + (simd - 1).bit_length() + 5
    vectors = 6
    x = random_inputs(rng, layer, vectors)
    received, times = simulate(dut, x)
    assert received == expected_transfers(layer, x, pe)
    period = dut.cycles_per_vector
    assert period == dut.nf * dut.sf
    # The input never waits: SF transfers back to back at the start of every vector (the
    # other NF-1 folds replay the buffer).
    assert times["i"] == [v * period + sf for v in range(vectors) for sf in range(dut.sf)]
    # Vector v's first output comes `latency` cycles after its last input transfer...
    for v in range(vectors):
        last_input = (v * dut.nf) * dut.sf + dut.sf - 1
        assert times["o"][v * dut.nf] - last_input == dut.latency
    # ...and then one output every SF cycles, vector after vector, no gap anywhere.
    first = dut.sf - 1 + dut.latency
    assert times["o"] == [first + k * dut.sf for k in range(vectors * dut.nf)]
    assert times["o"][-1] + 1 == vectors * period + dut.latency


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_full_rate_total_cycles_formula(multiplier):
    """V vectors take exactly V*NF*SF cycles plus a constant (latency + 1)."""
    rng = np.random.default_rng(7)
    layer = make_layer(rng, 24, 8, 3, unsigned(3))
    dut = make_array(layer, pe=2, simd=3, multiplier=multiplier)
    for vectors in (1, 5):
        x = random_inputs(rng, layer, vectors)
        received, times = simulate(dut, x)
        assert received == expected_transfers(layer, x, 2)
        # The last output transfers in cycle V*NF*SF - 1 + latency.
        assert times["o"][-1] + 1 == vectors * dut.cycles_per_vector + dut.latency


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
def test_output_stall_then_resume_loses_nothing(multiplier):
    """A long output stall fills the FIFO; credits stop the issue stage, nothing drops."""
    rng = np.random.default_rng(3)
    layer = make_layer(rng, 4, 8, 2, unsigned(5))
    dut = make_array(layer, pe=4, simd=4, multiplier=multiplier)  # SF=1: most in flight
    x = random_inputs(rng, layer, 12)
    received, _ = simulate(dut, x, seed=5, idle=0.0, stall=0.9)
    assert received == expected_transfers(layer, x, 4)


def test_attributes():
    rng = np.random.default_rng(0)
    layer = make_layer(rng, 20, 6, 4, unsigned(8))
    dut = make_array(layer, pe=3, simd=5)
    assert (dut.pe, dut.simd, dut.nf, dut.sf) == (3, 5, 2, 4)
    assert (dut.fan_in, dut.channels, dut.weight_bits) == (20, 6, 4)
    assert dut.acc_bits == layer.acc_bits and dut.in_shape == unsigned(8)
    assert dut.cycles_per_vector == 8 and dut.latency == 3 + 3 + 5  # 5 lanes: 3 tree levels
    assert dut.product_bits == 12  # 255 * 7 needs 12 signed bits
    assert np.array_equal(dut.weights, layer.matrix) and np.array_equal(dut.bias, layer.bias)
    assert (dut.multiplier, dut.dsp_width, dut.stages) == ("dsp", 18, ((0,), (1,), (2,)))
    assert (dut.tree_depth, dut.fifo_depth) == (3, 4)  # ceil((4 + 11) / 4) folds in flight
    packed = make_array(layer, pe=3, simd=5, multiplier="packed")
    assert packed.stages == ((0, 1), (2,)) and packed.latency == 2 + 3 + 5
    # The ROMs of the second PE of a pair hold w_b - [w_a < 0]; the weights stay as given.
    assert np.array_equal(packed.weights, layer.matrix)
    stored = packed._rom_matrix()
    assert np.array_equal(stored[:, 1], layer.matrix[:, 1] - (layer.matrix[:, 0] < 0))
    assert np.array_equal(stored[:, [0, 2, 3, 5]], layer.matrix[:, [0, 2, 3, 5]])
    assert np.array_equal(stored[:, 4], layer.matrix[:, 4] - (layer.matrix[:, 3] < 0))
    assert make_array(layer, pe=3, simd=5, multiplier="lut").latency == dut.latency


def _kwargs(**changes):
    args = {"weights": np.ones((8, 4), np.int64), "bias": np.zeros(4, np.int64),
            "weight_bits": 2, "in_shape": unsigned(4), "acc_bits": 8, "pe": 2, "simd": 4}
    args.update(changes)
    return args


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"pe": 3}, ValueError, "pe 3 does not divide the 4 output channels"),
    ({"simd": 3}, ValueError, "simd 3 does not divide the fan-in of 8 inputs"),
    ({"pe": 0}, ValueError, "pe must be at least 1, not 0"),
    ({"simd": 1.5}, TypeError, "simd must be an int, not 1.5"),
    ({"weight_bits": 17}, ValueError, "weight_bits must be in 1..16, not 17"),
    ({"weights": np.ones((8, 4), np.int64), "weight_bits": 12, "multiplier": "lut"}, ValueError,
     "12-bit weights times 4-bit unsigned inputs multiply on hard multipliers only (LUT-built "
     "products are proven up to 8 bits): multiplier 'dsp' with every lane hard"),
    ({"in_shape": unsigned(9), "acc_bits": 16, "hard_lanes": 3}, ValueError,
     "2-bit weights times 9-bit unsigned inputs multiply on hard multipliers only (LUT-built "
     "products are proven up to 8 bits): multiplier 'dsp' with every lane hard"),
    ({"in_shape": unsigned(16), "acc_bits": 24, "dsp_width": 16}, ValueError,
     "2-bit weights times 16-bit unsigned inputs do not fit a 16x16 signed hard multiplier "
     "(an unsigned input takes a sign bit more)"),
    ({"acc_bits": 7}, ValueError,
     "acc_bits 7 is too narrow: these weights, bias and unsigned(4) inputs need 8 bits"),
    ({"in_shape": 8}, TypeError, "in_shape must be an Amaranth Shape such as unsigned(8), not 8"),
    ({"weights": np.full((8, 4), 2)}, ValueError,
     "weights must lie in the 2-bit range -1..1, found 2..2"),
    ({"weights": np.zeros((8, 4), np.int64), "weight_bits": 1}, ValueError,
     "1-bit weights must be -1 or +1, found 0"),
    ({"weights": np.ones((8, 4)) * 0.5}, TypeError, "weights must be integers, not float64"),
    ({"weights": np.ones(8, np.int64)}, ValueError,
     "weights must be a non-empty (fan_in, channels) matrix, not shape (8,)"),
    ({"bias": np.zeros(3, np.int64)}, ValueError,
     "bias must have shape (4,) to match the weights, not (3,)"),
    ({"multiplier": "booth"}, ValueError,
     "multiplier must be one of 'dsp', 'lut', 'packed', 'constant', not 'booth'"),
    ({"multiplier": "constant"}, ValueError,
     "multiplier 'constant' needs a lane for every weight: pe 4 and simd 8, not 2 and 4"),
    ({"multiplier": "constant", "pe": 4, "simd": 8, "weight_bits": 9, "acc_bits": 16},
     ValueError, "9-bit weights times 4-bit unsigned inputs multiply on hard multipliers only "
     "(LUT-built products are proven up to 8 bits): multiplier 'dsp' with every lane hard"),
    ({"dsp_width": 0}, ValueError, "dsp_width must be at least 2, not 0"),
    ({"multiplier": "packed", "weights": np.full((8, 4), 127), "weight_bits": 8,
      "in_shape": unsigned(8), "acc_bits": 14}, ValueError,
     "packed products of 8-bit weights and unsigned(8) inputs need a 24x9-bit signed "
     "multiplier, wider than 18x18; use multiplier 'dsp' or 'lut'"),
    ({"multiplier": "packed", "weights": np.full((8, 4), 15), "weight_bits": 5,
      "in_shape": unsigned(8), "acc_bits": 16, "dsp_width": 16}, ValueError,
     "packed products of 5-bit weights and unsigned(8) inputs need a 18x9-bit signed "
     "multiplier, wider than 16x16; use multiplier 'dsp' or 'lut'"),
])
def test_parameter_errors(changes, error, message):
    with pytest.raises(error) as info:
        MACArray(**_kwargs(**changes))
    assert str(info.value) == message


@pytest.mark.synth
@pytest.mark.parametrize(("bits", "multiplier"), [(4, "dsp"), (8, "dsp"), (4, "lut"), (8, "lut"),
                                                  (4, "packed")])
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
def test_synthesis_4x4(family, bits, multiplier):
    """A 4x4 array: ROMs in block RAM, products where the multiplier kind puts them."""
    from hw.multiplier import DSP_WIDTHS
    from hw.toolchain import synthesize

    rng = np.random.default_rng(bits)
    layer = make_layer(rng, 32, 8, bits, unsigned(bits))
    dut = MACArray(layer.matrix, layer.bias, weight_bits=bits, in_shape=unsigned(bits),
                   acc_bits=layer.acc_bits, pe=4, simd=4, rom_style="block",
                   multiplier=multiplier, dsp_width=DSP_WIDTHS[family])
    counts = synthesize(dut, family)
    assert counts["brams"] >= dut.pe, counts  # one weight ROM per PE at least
    assert counts["luts"] > 0 and counts["ffs"] > dut.pe * dut.simd * bits, counts
    if multiplier == "lut":
        assert counts["dsps"] == 0, counts
    elif multiplier == "packed":
        # One hard multiplier per pair of PEs and lane (4x4 products alone stay in LUTs on
        # the iCE40, under synth_ice40's 11-bit minimum; packed, they reach it).
        assert counts["dsps"] == dut.pe // 2 * dut.simd, counts
    elif bits == 8 or family == "ecp5":
        # Multipliers go to DSPs (iCE40 packs two 8x8 products into one SB_MAC16).
        assert counts["dsps"] >= dut.pe * dut.simd // 2, counts


@pytest.mark.parametrize(("weight_bits", "in_shape", "dsp_width"), [
    (12, unsigned(8), 18), (9, signed(12), 18), (16, unsigned(16), 18), (4, unsigned(13), 16),
    (16, unsigned(15), 16), (16, signed(16), 16)])
def test_wide_operands_on_hard_multipliers(weight_bits, in_shape, dsp_width):
    """Weights or inputs of 9..16 bits multiply on hard multipliers (``x * w``, every lane):
    exact at both ends of both ranges, under stalls, up to the widest operands the device's
    multiplier takes (16x16 signed on the iCE40: 15-bit unsigned inputs)."""
    rng = np.random.default_rng(weight_bits * 100 + in_shape.width)
    layer = make_layer(rng, 12, 4, weight_bits, in_shape, bias_bits=20)
    lo, hi = weight_range(weight_bits)
    layer.weight[0], layer.weight[1] = hi, lo  # products at the range's extremes
    dut = MACArray(layer.matrix, layer.bias, weight_bits=weight_bits, in_shape=in_shape,
                   acc_bits=layer.acc_bits, pe=2, simd=3, dsp_width=dsp_width)
    assert (dut.multiplier, dut.hard_lanes) == ("dsp", 3)
    x = random_inputs(rng, layer, 4)
    received, _ = simulate(dut, x, seed=weight_bits, idle=0.3, stall=0.4)
    assert received == expected_transfers(layer, x, 2)


@pytest.mark.synth
@pytest.mark.parametrize(("family", "in_shape"), [("ice40", unsigned(15)), ("ecp5", unsigned(16))])
def test_synthesis_16_bit_lanes_take_one_dsp_each(family, in_shape):
    """The widest operands each family's hard multiplier takes (16-bit weights; 15- and
    16-bit unsigned inputs): one DSP a lane, as the resource model counts them."""
    from hw.multiplier import DSP_WIDTHS
    from hw.toolchain import synthesize

    layer = make_layer(np.random.default_rng(16), 8, 2, 16, in_shape, bias_bits=20)
    dut = MACArray(layer.matrix, layer.bias, weight_bits=16, in_shape=in_shape,
                   acc_bits=layer.acc_bits, pe=2, simd=2, dsp_width=DSP_WIDTHS[family])
    assert synthesize(dut, family)["dsps"] == dut.pe * dut.simd


@pytest.mark.parametrize("multiplier", MULTIPLIERS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_loaded_weights_random_shapes_with_stalls(bits, multiplier):
    """Weights in a WeightRAM, loaded through ``load``: the same results as from ROMs."""
    rng = np.random.default_rng(300 + bits)
    in_shape = shape_for(multiplier, bits, unsigned(bits))
    fan_in = int(rng.choice([6, 12, 20, 24]))
    channels = int(rng.choice([2, 4, 6]))
    pe = int(rng.choice(divisors(channels)[:3]))
    simd = int(rng.choice([d for d in divisors(fan_in) if d <= 6]))
    layer = make_layer(rng, fan_in, channels, bits, in_shape)
    shape = in_shape
    dut = MACArray(layer.matrix, layer.bias, weight_bits=bits, in_shape=shape,
                   acc_bits=layer.acc_bits, pe=pe, simd=simd, multiplier=multiplier,
                   loaded=True)
    assert len(dut.load_chunks()) == dut.nf * dut.sf * -(-pe * simd * bits // 16)
    x = random_inputs(rng, layer, 3)
    received, _ = simulate(dut, x, seed=bits, idle=0.3, stall=0.4, load=True)
    assert received == expected_transfers(layer, x, pe)
    preloaded = MACArray(layer.matrix, layer.bias, weight_bits=bits, in_shape=shape,
                         acc_bits=layer.acc_bits, pe=pe, simd=simd, multiplier=multiplier,
                         loaded=True, preload=True)
    received, _ = simulate(preloaded, x, seed=bits, idle=0.3, stall=0.4)
    assert received == expected_transfers(layer, x, pe)


def test_loaded_weights_full_rate_same_cycles_as_roms():
    rng = np.random.default_rng(7)
    layer = make_layer(rng, 24, 6, 2, unsigned(2))
    x = random_inputs(rng, layer, 4)
    kwargs = dict(weight_bits=2, in_shape=unsigned(2), acc_bits=layer.acc_bits, pe=3, simd=4)
    _, rom_times = simulate(MACArray(layer.matrix, layer.bias, **kwargs), x)
    received, ram_times = simulate(MACArray(layer.matrix, layer.bias, loaded=True,
                                            preload=True, **kwargs), x)
    assert received == expected_transfers(layer, x, 3)
    assert ram_times == rom_times


def test_constant_weights_cannot_be_loaded():
    layer = make_layer(np.random.default_rng(1), 4, 2, 4, unsigned(4))
    with pytest.raises(ValueError, match="cannot load"):
        MACArray(layer.matrix, layer.bias, weight_bits=4, in_shape=unsigned(4),
                 acc_bits=layer.acc_bits, pe=2, simd=4, multiplier="constant", loaded=True)
