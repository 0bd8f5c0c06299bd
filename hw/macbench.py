"""Cost and speed of one MAC array: cells per MAC lane from Yosys, Fmax from nextpnr; and the
cells of every layer of a build beside the resource model's estimate.

Command line::

    python -m hw.macbench [--bits 4,8] [--multiplier dsp,lut,packed] [--pe 4] [--simd 4]
                          [--fan-in 64] [--channels 16]
    python -m hw.macbench --build DIR [--device NAME]

``--build DIR`` takes a ``hw.build`` output (its quantized model and fold), synthesizes each
layer's stages alone for the build's device and prints, per layer, Yosys' LUT4s, flip-flops,
block RAMs and DSPs beside :func:`hw.folding.layer_estimates`: the measurements the model's
constants are fitted to.

The array gets random weights of the given width and unsigned inputs of the same width, and
multiplies with each ``--multiplier`` kind (:mod:`hw.multiplier`); ``"packed"`` is checked
against the device's hard multiplier (18x18 on ECP5, 16x16 on the UP5K) and reported as not
fitting where it is too wide. For place and route the array sits in a harness that drives it
from an LFSR and folds its outputs into 8 registered pins, so the I/O count fits the smallest
package (iCE40 UP5K sg48, ECP5 25F).

Cells are Yosys' counts for the array alone. ``LUTs`` are LUT4 cells: on the iCE40 they
include the LUT beside every ``SB_CARRY``; on ECP5 the carry chains are ``CCU2C`` cells
(``carries``), each the two LUT4s of a slice, so ``LUT4 eq./lane`` counts
``LUTs + 2 * carries`` there (the iCE40's equals its LUTs).
"""

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from sw.errors import UserError, cli_main
from sw.qmodel import Dense, load_qmodel, weight_range
from sw.quantize import parse_bits

from .folding import DEVICES, layer_estimates, load_fold
from .mac_array import MACArray
from .multiplier import DSP_WIDTHS, MULTIPLIER_KINDS, packing_shift
from .network import layer_stages
from .toolchain import SCRIPT_AFTER_READ, synthesize, tool

__all__ = ["Harness", "layer_cells", "main", "measure"]

_PNR = {
    "ice40": ("NEXTPNR_ICE40", ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained",
                                "--freq", "30"]),
    "ecp5": ("NEXTPNR_ECP5", ["--25k", "--lpf-allow-unconstrained", "--freq", "100"]),
}
_SYNTH = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}


class Harness(wiring.Component):
    """Drives a MAC array from an LFSR and folds its outputs into 8 registered pins."""

    out: Out(8)

    def __init__(self, dut):
        self._dut = dut
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        lfsr = Signal(31, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[3]))
        width = len(dut.i.payload.as_value())
        m.d.comb += [dut.i.payload.eq(Cat(*([lfsr] * (width // 31 + 1)))[:width]),
                     dut.i.valid.eq(lfsr[5]), dut.o.ready.eq(lfsr[9])]
        outputs = Cat(dut.o.payload.as_value(), dut.o.valid, dut.i.ready)
        m.d.sync += self.out.eq(Cat(*[outputs[k::8].xor() for k in range(8)]))
        return m


def _array(bits, pe, simd, fan_in, channels, multiplier, family, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = weight_range(bits)
    weights = rng.integers(lo, hi + 1, size=(fan_in, channels))
    if bits == 1:
        weights[weights == 0] = 1
    layer = Dense(name="bench", in_shape=(fan_in,), out_shape=(channels,), weight=weights,
                  bias=rng.integers(-64, 64, size=channels), weight_bits=bits,
                  weight_frac=np.zeros(channels, int), in_bits=bits, in_signed=False,
                  in_frac=0, relu=True)
    return MACArray(weights, layer.bias, weight_bits=bits, in_shape=unsigned(bits),
                    acc_bits=layer.acc_bits, pe=pe, simd=simd, multiplier=multiplier,
                    dsp_width=DSP_WIDTHS[family])


def measure(bits, pe, simd, fan_in, channels, family, multiplier="dsp"):
    """Synthesize the array alone (cell counts) and place the harness (Fmax) on ``family``.

    Returns
    -------
    dict
        ``luts``, ``carries``, ``ffs``, ``brams``, ``dsps`` (cell counts), ``fmax_mhz``
        (``None`` if place and route failed) and ``error`` (nextpnr's first error, or why a
        ``"packed"`` array does not fit, with every count ``None``).
    """
    if multiplier == "packed" and bits > 1:
        try:
            packing_shift(bits, unsigned(bits), DSP_WIDTHS[family])
        except ValueError as error:
            return {**dict.fromkeys(("luts", "carries", "ffs", "brams", "dsps", "fmax_mhz")),
                    "error": str(error)}
    arguments = (bits, pe, simd, fan_in, channels, multiplier, family)
    cells = synthesize(_array(*arguments), family)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / "top.il").write_text(rtlil.convert(Harness(_array(*arguments)), name="top"))
        subprocess.run([tool("YOSYS"), "-q", "-p", f"read_rtlil top.il; {SCRIPT_AFTER_READ}; "
                        f"{_SYNTH[family]} -top top -json top.json"], cwd=directory, check=True,
                       capture_output=True)
        variable, options = _PNR[family]
        subprocess.run([tool(variable), "--json", "top.json", "--log", "pnr.log", "--seed", "1",
                        *options], cwd=directory, capture_output=True)
        log = (directory / "pnr.log").read_text(errors="replace")
    found = re.findall(r"Max frequency for clock\s+'[^']+': ([\d.]+) MHz", log)
    errors = [line.strip() for line in log.splitlines() if "ERROR" in line]
    return {**{key: cells[key] for key in ("luts", "carries", "ffs", "brams", "dsps")},
            "fmax_mhz": float(found[-1]) if found else None,
            "error": errors[0] if errors else None}


def _row(bits, device, family, multiplier, r, lanes):
    """One Markdown table row of :func:`main`."""
    if r["luts"] is None:
        return f"| {bits} | {device} | {multiplier} | does not fit: {r['error']} |"
    fmax = f"{r['fmax_mhz']:.1f} MHz" if r["fmax_mhz"] else f"fails: {r['error']}"
    equivalent = r["luts"] + (2 * r["carries"] if family == "ecp5" else 0)
    return (f"| {bits} | {device} | {multiplier} | {r['luts']} | {r['carries']} | {r['ffs']} "
            f"| {r['brams']} | {r['dsps']} | {r['luts'] / lanes:.1f} | {equivalent / lanes:.1f} "
            f"| {r['ffs'] / lanes:.1f} | {r['dsps'] / lanes:.2f} | {fmax} |")


def layer_cells(directory, device):
    """``{layer: (measured, estimated)}`` for the ``hw.build`` output in ``directory``:
    Yosys' cell counts of each layer's stages synthesized alone (``luts`` as LUT4s plus two
    per ECP5 carry cell, ``ffs``, ``brams``, ``dsps``), and the model's estimate."""
    directory = Path(directory)
    try:
        qmodel = load_qmodel(directory / "export" / "model.npz")
    except FileNotFoundError:
        raise UserError(f"{str(directory)!r} is not a hw.build output (no "
                        f"export/model.npz)") from None
    width = DSP_WIDTHS[device.family]
    fold = load_fold(directory / "fold.json", qmodel, width)
    estimates = layer_estimates(qmodel, fold, device)
    rows = {}
    for index, layer in enumerate(qmodel.layers):
        stages = layer_stages(qmodel, fold, index, width)
        if not stages:
            continue
        measured = dict.fromkeys(("luts", "ffs", "brams", "dsps"), 0)
        for _, stage in stages:
            cells = synthesize(stage, device.family)
            carries = 2 * cells["carries"] if device.family == "ecp5" else 0
            for key in measured:
                measured[key] += cells[key] + (carries if key == "luts" else 0)
        rows[layer.name] = (measured, vars(estimates[layer.name]))
    return rows


def _build_table(directory, device_name):
    device = DEVICES[device_name]
    print(f"| layer | LUT4 measured / estimated | FFs | BRAM | DSP |  ({device.name})")
    print("|---|---|---|---|---|")
    totals = [dict.fromkeys(("luts", "ffs", "brams", "dsps"), 0) for _ in range(2)]
    for name, pair in layer_cells(directory, device).items():
        for total, values in zip(totals, pair, strict=True):
            for key in total:
                total[key] += values[key]
        measured, estimated = pair
        print(f"| {name} | " + " | ".join(f"{measured[key]} / {estimated[key]}"
                                          for key in ("luts", "ffs", "brams", "dsps")) + " |",
              flush=True)
    measured, estimated = totals
    print("| all layers | " + " | ".join(f"{measured[key]} / {estimated[key]}"
                                        for key in ("luts", "ffs", "brams", "dsps")) + " |")


def _multipliers(text):
    kinds = [part.strip() for part in str(text).split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in MULTIPLIER_KINDS]
    if not kinds or unknown:
        raise UserError(f"--multiplier takes a list of {', '.join(MULTIPLIER_KINDS)}, not "
                        f"{text!r}")
    return kinds


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.macbench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--bits", default="4,8")
    parser.add_argument("--multiplier", default="dsp",
                        help="comma-separated multiplier kinds: dsp, lut, packed")
    parser.add_argument("--pe", type=int, default=4)
    parser.add_argument("--simd", type=int, default=4)
    parser.add_argument("--fan-in", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--build", default=None, metavar="DIR",
                        help="per-layer cells of a hw.build output against the model")
    parser.add_argument("--device", default=None, choices=sorted(DEVICES),
                        help="device of --build (default: its report's)")
    args = parser.parse_args(argv)
    if args.build:
        report = Path(args.build) / "report.json"
        device = args.device or (json.loads(report.read_text())["device"]
                                 if report.is_file() else "LFE5U-85F")
        _build_table(args.build, device)
        return
    multipliers = _multipliers(args.multiplier)
    lanes = args.pe * args.simd
    print(f"MAC array {args.pe} PE x {args.simd} SIMD, {args.fan_in} inputs x {args.channels} "
          f"outputs; per lane = array / {lanes}")
    print("| bits | device | multiplier | LUTs | carries | FFs | BRAMs | DSPs | LUT/lane "
          "| LUT4 eq./lane | FF/lane | DSP/lane | Fmax |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bits in parse_bits(args.bits):
        for family, device in (("ice40", "UP5K"), ("ecp5", "ECP5-25F")):
            for multiplier in multipliers:
                r = measure(bits, args.pe, args.simd, args.fan_in, args.channels, family,
                            multiplier)
                print(_row(bits, device, family, multiplier, r, lanes), flush=True)


if __name__ == "__main__":
    main()
