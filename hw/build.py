"""``python -m hw.build``: from a Keras model to a bitstream (or Verilog) and a report.

Command line::

    python -m hw.build --bits 4 [--model lenet5|tiny_cnn|mlp|mlp64|PATH.keras]
        [--weight-bits N --act-bits M] [--layer-bits first=8,last=8] [--board NAME]
        [--fold auto|FILE.json]
        [--target bitstream|verilog] [--out DIR] [--program]

Stages: quantize, fold, generate, synthesize + place and route + pack, report. Everything
is written to a scratch directory first and moved to ``--out`` only when the build
succeeded, so a failed build leaves nothing half-written.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from amaranth.back import verilog

from sw.data import check_images, load_test, load_train, parse_data_arg
from sw.errors import UserError, cli_main
from sw.golden import classify
from sw.host import link_images_per_second
from sw.models import model_path
from sw.outputs import prepare_dir, replace_dir
from sw.quantize import (
    CALIBRATION_IMAGES,
    METHOD_HELP,
    QuantConfig,
    add_bits_arguments,
    bits_from_args,
    check_calibration,
    check_method,
    quantize_model,
    widths_label,
    write_exports,
)

from .boards import BOARDS, BoardTop, get_board
from .folding import DEVICES, auto_fold, device_lanes, estimate, lanes_by_kind, load_fold
from .multiplier import DSP_WIDTHS
from .network import Accelerator
from .pll import pll_settings
from .program import program
from .toolchain import SCRIPT_AFTER_READ, tool_env
from .uart_rx import uart_clock_filter, uart_divisor

__all__ = ["AUTO_START_MHZ", "DEFAULT_BOARD", "DEFAULT_MODEL", "WEIGHTS_FILE", "DoesNotFit",
           "board_plan", "build", "main"]

DEFAULT_MODEL = "lenet5"
DEFAULT_BOARD = "ulx3s-85f"
#: nextpnr's names for what the report counts, per family.
_NEXTPNR_CELLS = {
    "ice40": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "dsps": "ICESTORM_DSP",
              "sprams": "ICESTORM_SPRAM"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD",
             "dsps": "MULT18X18D"},
}


class _Progress:
    def __init__(self, total):
        self.total, self.step, self.start = total, 0, time.monotonic()

    def __call__(self, message):
        self.step += 1
        print(f"[{self.step}/{self.total}] {message} ({time.monotonic() - self.start:.0f} s)",
              file=sys.stderr, flush=True)


def _test_set(data):
    """The test set for the report: ``--data``'s (an unusable one is an error), else any found.

    Without ``--data`` a missing test set only means no accuracy in the report, said in a note.
    """
    if data is not None:
        return load_test(data)
    try:
        return load_test(None)
    except UserError as error:
        print(f"note: integer accuracy not measured ({error})", file=sys.stderr)
        return None


def _integer_accuracy(qmodel, test_set):
    if test_set is None:
        return None, 0
    images, labels = test_set
    classes, _ = classify(qmodel, check_images(images, qmodel.input_shape, qmodel.name))
    return float(np.mean(classes == labels)), len(images)


def _nextpnr_report(directory, family):
    """Utilization and Fmax from nextpnr's ``--report`` JSON (and its log as a fallback)."""
    path = directory / "top.report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    used = {key: report.get("utilization", {}).get(cell, {}).get("used", 0)
            for key, cell in _NEXTPNR_CELLS[family].items()}
    available = {key: report.get("utilization", {}).get(cell, {}).get("available", 0)
                 for key, cell in _NEXTPNR_CELLS[family].items()}
    fmax = [clock.get("achieved") for clock in report.get("fmax", {}).values()]
    return used, available, (min(fmax) if fmax else None)


def _ff_count(directory, family):
    """Flip-flops from Yosys' statistics (iCE40 nextpnr folds them into logic cells)."""
    log = (directory / "top.rpt").read_text(errors="replace") if (
        directory / "top.rpt").is_file() else ""
    section = log[log.rfind("Printing statistics"):] if "Printing statistics" in log else log
    # Yosys 0.70 prints the top module's own counts and then the design hierarchy's totals:
    # count one of them, not both.
    if "=== design hierarchy ===" in section:
        section = section[section.find("=== design hierarchy ==="):]
    pattern = r"^\s+(\d+)\s+(SB_DFF\w*)$|^\s+(SB_DFF\w*)\s+(\d+)$" if family == "ice40" else \
        r"^\s+(\d+)\s+(TRELLIS_FF)$|^\s+(TRELLIS_FF)\s+(\d+)$"
    total = 0
    for match in re.finditer(pattern, section, re.MULTILINE):
        total += int(match.group(1) or match.group(4))
    return total


def _write_reports(directory, report, stages):
    (directory / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"# {report['model']} at W{report['weight_bits']}A{report['act_bits']} on "
        f"{report['board']}",
        "",
        f"- target: {report['target']}",
        f"- quantization: {report.get('quantization', 'post-training')}",
        "- widths (weights/activations): " + ", ".join(
            f"{name} {weight}/{act if act is not None else 'logits'}"
            for name, (weight, act) in report["layer_bits"].items()),
        "- integer accuracy: " + (f"{100 * report['accuracy']:.2f}% on "
                                  f"{report['test_images']} test images"
                                  if report["accuracy"] is not None else "not measured"),
        f"- cycles per image (predicted steady-state interval): {report['cycles_per_image']}",
        f"- MACs per image: {report['macs_per_image']}; MAC lanes: {report['multipliers']} "
        f"({', '.join(f'{n} {kind}' for kind, n in report['lanes_by_kind'].items() if n)}); "
        f"MAC efficiency: {report['mac_efficiency']:.3f} of the lanes used, "
        f"{report['mac_efficiency_device']:.3f} of the {report['device_lanes']} the device "
        f"could hold (estimated)",
    ]
    if report["target"] == "bitstream":
        lines += [
            f"- core clock: {report['clock_mhz']:.3f} MHz from the PLL (oscillator "
            f"{report['oscillator_mhz']:g} MHz); Fmax {report['fmax_mhz'] or 0:.2f} MHz: timing "
            f"{'met' if report['timing_met'] else 'NOT met'}",
            "- clock search (MHz -> Fmax): " + ", ".join(
                f"{run['clock_mhz']:.2f} -> {run['fmax_mhz'] or 0:.2f}"
                f"{'' if run['met'] else ' (not met)'}" for run in report["clock_search"]),
            f"- images/s at the core clock: {report['images_per_second']:.0f}; over the UART "
            f"at {report['baud']} baud ({100 * report['baud_error']:+.2f}%): at most "
            f"{report['link_images_per_second']:.0f} (one request and response per image)",
            f"- bitstream: `{report['bitstream']}`",
        ]
    if report.get("weights_file"):
        lines.append(f"- loaded weights ({', '.join(report['fold']['loaded'])}): in RAM the "
                     f"bitstream cannot initialize; send `{report['weights_file']}` "
                     f"({2 * report['load_words']:,} bytes) once after programming: `python -m "
                     f"sw.host --port PORT --load {report['weights_file']}`")
    if report["target"] == "bitstream":
        keys = ("luts", "ffs", "brams", "dsps", *(("sprams",) if "sprams" in report else ()))
        lines += [
            "",
            "| resource | used | available | estimated |",
            "|---|---|---|---|",
            *(f"| {key} | {report[key]} | {report.get(key + '_available', '')} | "
              f"{report['estimate'][key]} |" for key in keys),
        ]
    lines += ["", "| stage | kind | PE | SIMD | cycles/image | MACs |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.name} | {s.kind} | {s.pe} | {s.simd} | {s.cycles} | {s.macs} |"
              for s in stages]
    (directory / "report.md").write_text("\n".join(lines) + "\n")


def build(args, progress):
    """Run the build described by parsed ``args``; returns the report dictionary."""
    board = get_board(args.board)
    device = DEVICES[board.device]
    weight_bits, act_bits = bits_from_args(args)
    out = prepare_dir(args.out or f"build/{Path(args.model).stem}-{weight_bits}b-{args.board}",
                      "hw.build", force=args.force, legacy=("report.json", "core.v"))
    if args.fold != "auto" and not Path(args.fold).is_file():
        raise UserError(f"fold file {args.fold!r} not found (use --fold auto or a JSON file)")

    progress(f"quantizing {args.model} to "
             f"{widths_label(weight_bits, act_bits, args.layer_bits or ())}")
    model_path(args.model)  # an unknown name fails before the training images load
    test_set = _test_set(args.data)  # a bad --data fails before the long steps
    train_images, _ = load_train(args.data)
    check_calibration(args.calibration, len(train_images))
    qmodel, method = quantize_model(args.model, QuantConfig(weight_bits=weight_bits,
                                                            act_bits=act_bits,
                                                            layer_bits=args.layer_bits or ()),
                                    train_images[:args.calibration],
                                    getattr(args, "method", "auto"))
    print(f"    quantization: {method}", file=sys.stderr)
    accuracy, test_images = _integer_accuracy(qmodel, test_set)

    progress(f"folding for {board.name} ({device.name})")
    fold = (auto_fold(qmodel, device) if args.fold == "auto"
            else load_fold(args.fold, qmodel, DSP_WIDTHS[device.family]))
    quantized = {"weight_bits": weight_bits, "act_bits": act_bits, "quantization": method,
                 "accuracy": accuracy, "test_images": test_images}
    for attempt in range(_REFOLDS + 1):
        try:
            return _build_fold(args, board, qmodel, quantized, fold, out, progress)
        except DoesNotFit as error:
            if args.fold != "auto" or attempt == _REFOLDS:
                raise
            # The estimate said it fits and nextpnr could not place it: fold again for
            # fewer LUTs than that estimate (an iCE40 placement can fail from 95% full).
            budget = error.budget(device)
            print(f"    {error.reason}: folding again within {budget} of the estimated "
                  f"{error.estimated_luts} LUTs (nextpnr: {error.used_luts})", file=sys.stderr)
            fold = auto_fold(qmodel, device, max_luts=budget)


def _build_fold(args, board, qmodel, quantized, fold, out, progress):
    """:func:`build`'s steps after folding: ``qmodel`` folded as ``fold`` into ``out``."""
    device = DEVICES[board.device]
    dsp_width = DSP_WIDTHS[device.family]
    need = estimate(qmodel, fold, device)
    core = Accelerator(qmodel, fold, dsp_width)
    stages = core.stages
    interval = core.cycles_per_image
    for stage in stages:
        kind = f" {fold[stage.name].multiplier}" if stage.name in fold else ""
        print(f"    {stage.name:<22} {stage.kind:<9} PE {stage.pe:>3} SIMD {stage.simd:>3} "
              f"{stage.cycles:>8} cycles/image{kind}", file=sys.stderr)
    print(f"    predicted interval: {interval} cycles/image", file=sys.stderr)

    ceiling = device_lanes(qmodel, device)
    with replace_dir(out, "hw.build") as scratch:
        write_exports(qmodel, scratch / "export", fold)
        (scratch / "fold.json").write_text(json.dumps(fold.to_json(), indent=1) + "\n")
        report = {
            "board": board.name, "device": device.name, "model": qmodel.name,
            "weight_bits": quantized["weight_bits"], "act_bits": quantized["act_bits"],
            "target": args.target,
            # Each weight layer's widths: weights, and its output's (None for the logits).
            "layer_bits": {layer.name: [layer.weight_bits,
                                        None if layer.is_output else layer.out_bits]
                           for layer in qmodel.weight_layers},
            "quantization": quantized["quantization"],
            "accuracy": quantized["accuracy"], "test_images": quantized["test_images"],
            "fold": fold.to_json(),
            "cycles_per_image": interval, "macs_per_image": qmodel.macs,
            "multipliers": core.multipliers,
            "lanes_by_kind": lanes_by_kind(qmodel, fold, device),
            "mac_efficiency": qmodel.macs / (core.multipliers * interval),
            # What the device could hold, every multiplier resource busy (an estimate).
            "device_lanes": ceiling,
            "mac_efficiency_device": qmodel.macs / (ceiling * interval),
            "stages": [vars(stage) for stage in stages],
            "estimate": vars(need),
        }
        progress("generating Verilog")
        # core.v is the core to simulate: loaded weights start in their RAMs there, as after
        # a load request (the board's RAMs start undefined).
        simulated = Accelerator(qmodel, fold, dsp_width, preload=True) if fold.loaded else core
        (scratch / "core.v").write_text(verilog.convert(simulated, name="nnfpga_core"))
        if fold.loaded:
            (scratch / WEIGHTS_FILE).write_bytes(core.load_image())
            report.update(weights_file=WEIGHTS_FILE, load_words=core.load_words)
        if args.target == "bitstream":
            report.update(_place_and_route(board, device, core, scratch, need, progress,
                                           args.clock, args.baud or board.default_baud))
            if not report["timing_met"]:
                print(f"warning: timing not met: Fmax {report['fmax_mhz'] or 0:.2f} MHz < clock "
                      f"{report['clock_mhz']:.2f} MHz; the bitstream may compute wrong answers "
                      f"(choose a lower --clock)", file=sys.stderr)
        progress("writing the report")
        _write_reports(scratch, report, stages)
    if report.get("bitstream"):
        report["bitstream"] = str(out / report["bitstream"])
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    report["out"] = str(out)
    return report


class DoesNotFit(UserError):
    """nextpnr could not place or route the design: ``reason`` (its error line), the resource
    model's ``estimated_luts`` of what it was given, and the LUTs (iCE40: logic cells) nextpnr
    counted, ``used_luts`` (None when its log does not say)."""

    def __init__(self, message, *, reason, estimated_luts, used_luts=None):
        super().__init__(message)
        self.reason, self.estimated_luts, self.used_luts = reason, estimated_luts, used_luts

    def budget(self, device):
        """The estimated LUTs to fold again within: :data:`_REFOLD_SHARE` of this fold's
        estimate, and less where nextpnr counted more than estimated, so that the next fold
        lands near :data:`_PLACEABLE` of the device by nextpnr's count."""
        share = _REFOLD_SHARE
        if self.used_luts:
            share = min(share, _PLACEABLE * device.luts / self.used_luts)
        return int(share * self.estimated_luts)


#: ``--fold auto``: folds tried again after nextpnr could not place one, each within
#: ``_REFOLD_SHARE`` of the last one's estimated LUTs, and within what would put nextpnr's
#: count at ``_PLACEABLE`` of the device (LeNet-5 W1A1 on the UP5K failed placement at 95%
#: and 98% of its cells, where LeNet-5 W2A2 placed at 93% and tiny_cnn W4A4 at 98.5%).
_REFOLDS, _REFOLD_SHARE, _PLACEABLE = 3, 0.97, 0.92
#: The load image of a build with loaded weights, beside its report.
WEIGHTS_FILE = "weights.bin"
#: ``--clock auto`` starts here (MHz), above what designs reach, and steps down to the Fmax.
AUTO_START_MHZ = {"ecp5": 125, "ice40": 48}
#: ``--clock auto``: place-and-route runs at most; the margin below the lowest failed Fmax that
#: the next run aims at (placement changes from run to run); once a run meets timing with room,
#: the share of its Fmax that one more run aims at; and how much higher that must be to pay.
_AUTO_ATTEMPTS, _AUTO_MARGIN, _AUTO_UPWARD, _AUTO_WORTH = 4, 0.94, 0.97, 1.03


def board_plan(board, core, pll, baud):
    """The board's build plan (Amaranth's ``BuildPlan``: the board top's RTLIL, constraints
    and the Yosys/nextpnr scripts) for ``core`` with its clock from ``pll``."""

    overrides = {"nextpnr_opts": "--report top.report.json --timing-allow-fail --seed 1",
                 "script_after_read": SCRIPT_AFTER_READ}
    if pll.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    top = BoardTop(core, baud, pll=pll, pll_pad=board.pll_pad)
    return board.make_platform().build(top, name="top", do_build=False, **overrides)


def _run_toolchain(board, device, core, directory, pll, need, baud):
    """Yosys + nextpnr + pack into ``directory`` for ``pll``; a design that does not fit is a
    one-line error naming what ran out."""

    family = device.family
    plan = board_plan(board, core, pll, baud)
    shutil.rmtree(directory, ignore_errors=True)
    try:
        plan.execute_local(str(directory), env=tool_env())
    except subprocess.CalledProcessError:
        log = (directory / "top.tim").read_text(errors="replace") if (
            directory / "top.tim").is_file() else ""
        reason = next((line.strip() for line in log.splitlines() if "ERROR" in line),
                      "see the nextpnr log")
        used_cells = re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", log,
                                re.MULTILINE)
        if used_cells:
            print("nextpnr utilization:", file=sys.stderr)
            for cell, count, total, percent in used_cells:
                if int(count):
                    print(f"  {cell:<14} {count:>6} / {total:<6} {percent:>4}%",
                          file=sys.stderr)
        luts = _NEXTPNR_CELLS[family]["luts"]
        used_luts = next((int(count) for cell, count, _, _ in used_cells if cell == luts), None)
        raise DoesNotFit(
            f"the design does not fit {device.name} ({reason}); estimated {need.luts} LUTs, "
            f"{need.brams} block RAMs, {need.dsps} DSPs of {device.luts}/{device.brams}/"
            f"{device.dsps}: try fewer bits, a smaller --fold, or a bigger board",
            reason=reason, estimated_luts=need.luts, used_luts=used_luts) from None
    return _nextpnr_report(directory, family)


class _Run(NamedTuple):
    """One place-and-route run of ``--clock``'s search."""

    pll: object
    directory: Path
    used: dict
    available: dict
    fmax: float | None
    divisor: int
    baud_error: float

    @property
    def met(self):
        return self.fmax is not None and self.fmax >= self.pll.output_mhz


def _next_target(runs, start):
    """Where ``--clock auto`` aims after ``runs``, or ``None`` when the search is done.

    Down to :data:`_AUTO_MARGIN` below the lowest Fmax while no run met timing; once one did,
    one run up to :data:`_AUTO_UPWARD` of its Fmax (a first run at a high target places for
    it and often reaches less than the next, gentler run shows the design can). A failed run
    after a met one ends the search: the met one is kept.
    """
    last, met = runs[-1], [run for run in runs if run.met]
    if len(runs) == _AUTO_ATTEMPTS or last.fmax is None:
        return None
    if not met:
        return min(run.fmax for run in runs) * _AUTO_MARGIN
    if not last.met or any(run.met for run in runs[:-1]):
        return None
    failed = [float(run.pll.output_mhz) for run in runs if not run.met]
    return min(last.fmax * _AUTO_UPWARD, start, *failed)


def _place_and_route(board, device, core, scratch, need, progress, clock, baud):
    """Build the board's bitstream with its core clock from the PLL.

    ``clock`` is ``"auto"`` (start at :data:`AUTO_START_MHZ` and search as
    :func:`_next_target` says: the fastest run that met timing is kept) or a frequency in
    MHz. The report's ``clock_mhz`` is what the PLL really makes, and ``images_per_second``
    is at that clock.
    """
    family = device.family
    oscillator_mhz = board.make_platform().default_clk_frequency / 1e6
    start = AUTO_START_MHZ[family]
    target = start if clock == "auto" else clock
    progress(f"synthesizing, placing and routing for {device.name} (Yosys, nextpnr)")
    runs = []
    while target is not None:
        try:
            pll = pll_settings(family, oscillator_mhz, target, "at_most",
                               accept=uart_clock_filter(baud))
        except ValueError as error:
            raise UserError(f"--clock {target:g}: {error}") from None
        tried = any(run.pll.output_mhz == pll.output_mhz for run in runs)
        if tried or any(pll.output_mhz < run.pll.output_mhz * _AUTO_WORTH for run in runs
                        if run.met):
            break  # tried already, or too little above a met clock to pay for another run
        try:
            divisor, baud_error = uart_divisor(float(pll.output_mhz) * 1e6, baud)
        except ValueError as error:
            raise UserError(f"--baud: {error}") from None
        print(f"    core clock {float(pll.output_mhz):.3f} MHz from the {oscillator_mhz:g} MHz "
              f"oscillator (PLL {pll.dividers}); UART {baud} baud, divisor {divisor} "
              f"({100 * baud_error:+.2f}%)", file=sys.stderr, flush=True)
        directory = scratch / f"gateware-{len(runs) + 1}"
        used, available, fmax = _run_toolchain(board, device, core, directory, pll, need, baud)
        runs.append(_Run(pll, directory, used, available, fmax, divisor, baud_error))
        print(f"    Fmax {fmax or 0:.2f} MHz: timing {'met' if runs[-1].met else 'not met'}",
              file=sys.stderr, flush=True)
        target = _next_target(runs, start) if clock == "auto" else None
    met = [run for run in runs if run.met]
    chosen = max(met, key=lambda run: run.pll.output_mhz) if met else runs[-1]
    _keep_gateware(chosen.directory, runs, scratch / "gateware")
    report = _pnr_report(chosen, family, device, core, oscillator_mhz, baud,
                         scratch / "gateware")
    report["clock_search"] = [{"clock_mhz": float(run.pll.output_mhz), "fmax_mhz": run.fmax,
                               "met": run.met} for run in runs]
    return report


def _keep_gateware(chosen, runs, directory):
    """Move the chosen run's files to ``directory``; the other runs' files are deleted."""

    for run in runs:
        if run.directory != chosen:
            shutil.rmtree(run.directory, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    if chosen.exists():
        chosen.rename(directory)


def _pnr_report(run, family, device, core, oscillator_mhz, baud, directory):
    """The report's place-and-route fields for the chosen ``run``."""

    used, available, pll = dict(run.used), dict(run.available), run.pll
    clock_mhz = float(pll.output_mhz)
    if family == "ice40":
        used["ffs"], available["ffs"] = _ff_count(directory, family), device.ffs
    return {
        "luts": used["luts"], "luts_available": available["luts"] or device.luts,
        "ffs": used["ffs"], "ffs_available": available.get("ffs") or device.ffs,
        "brams": used["brams"], "brams_available": available["brams"] or device.brams,
        "dsps": used["dsps"], "dsps_available": available["dsps"] or device.dsps,
        **({"sprams": used["sprams"], "sprams_available": available["sprams"] or device.sprams}
           if "sprams" in used else {}),
        "fmax_mhz": run.fmax, "clock_mhz": clock_mhz, "timing_met": run.met,
        "oscillator_mhz": oscillator_mhz,
        "pll": {"family": family, "vco_mhz": float(pll.vco_mhz), **pll.dividers},
        "images_per_second": clock_mhz * 1e6 / core.cycles_per_image,
        "baud": baud, "baud_error": run.baud_error, "uart_divisor": run.divisor,
        "link_images_per_second": link_images_per_second(baud, core.pixels, core.classes,
                                                         core.logit_bits),
        "bitstream": "gateware/top.bin" if family == "ice40" else "gateware/top.bit",
    }


def _clock_arg(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a frequency in MHz") \
            from None
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError(f"{text!r} MHz is outside 1..500")
    return value


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.build",
                                     description=__doc__.split("\n")[0])
    add_bits_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"seed model or .keras/.h5 file (default {DEFAULT_MODEL})")
    parser.add_argument("--board", default=DEFAULT_BOARD,
                        help=f"one of {', '.join(BOARDS)} (default {DEFAULT_BOARD})")
    parser.add_argument("--fold", default="auto", help="auto, or a JSON {layer: [pe, simd]}")
    parser.add_argument("--target", choices=("bitstream", "verilog"), default="bitstream")
    parser.add_argument("--out", default=None, help="output directory "
                        "(default build/<model>-<bits>b-<board>)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--calibration", type=int, default=CALIBRATION_IMAGES,
                        help="training images for activation calibration "
                             f"(default {CALIBRATION_IMAGES})")
    parser.add_argument("--method", type=check_method, default="auto",
                        help=METHOD_HELP)
    parser.add_argument("--program", action="store_true",
                        help="load the bitstream onto the board afterwards (python -m hw.program)")
    parser.add_argument("--flash", action="store_true",
                        help="with --program: write the board's flash, not the FPGA's SRAM")
    parser.add_argument("--clock", default="auto", type=_clock_arg,
                        help="core clock in MHz from the PLL, or auto: the highest that meets "
                             "timing (default)")
    parser.add_argument("--baud", type=int, default=None,
                        help="UART rate (default: the fastest the board's USB-UART carries; "
                             "3000000 on ULX3S and iCEBreaker)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds files hw.build did not write")
    args = parser.parse_args(argv)
    bits_from_args(args)  # bad widths fail before anything runs
    check_calibration(args.calibration)
    if args.program and args.target != "bitstream":
        raise UserError("--program needs --target bitstream")
    if args.baud is not None and args.baud < 1:
        raise UserError(f"--baud must be a positive rate, not {args.baud}")
    if args.board not in BOARDS:
        raise UserError(f"unknown board {args.board!r}; known boards: {', '.join(BOARDS)}")
    steps = 4 + (args.target == "bitstream")
    report = build(args, _Progress(steps))
    summary = [f"{report['model']} W{report['weight_bits']}A{report['act_bits']} on "
               f"{report['board']}: {report['cycles_per_image']} cycles/image"]
    if report.get("bitstream"):
        summary.append(f"{report['luts']}/{report['luts_available']} LUTs, "
                       f"{report['brams']}/{report['brams_available']} BRAM, "
                       f"{report['dsps']}/{report['dsps_available']} DSP, "
                       f"Fmax {report['fmax_mhz'] or 0:.1f} MHz, "
                       f"{report['images_per_second']:.0f} images/s at "
                       f"{report['clock_mhz']:.1f} MHz"
                       + ("" if report["timing_met"] else " (timing NOT met)"))
    if report.get("bitstream"):
        summary.append(f"UART {report['baud']} baud carries at most "
                       f"{report['link_images_per_second']:.0f} images/s")
    if report["accuracy"] is not None:
        summary.append(f"integer accuracy {100 * report['accuracy']:.2f}%")
    if report.get("weights_file"):
        summary.append(f"load {report['out']}/{report['weights_file']} after programming "
                       f"(python -m sw.host --load)")
    print("; ".join(summary))
    print(f"report: {report['out']}/report.md")
    if args.program:
        program(get_board(args.board), report["bitstream"], flash=args.flash)


if __name__ == "__main__":
    main()
