"""Run real test images through the generated RTL and compare every logit with the golden model.

Command line::

    python -m sim.regress --model lenet5 --bits 4 --images 10000 [--data DIR] [--jobs N]
        [--harness compiled|cocotb] [--sim verilator|icarus] [--board NAME | --fold FILE]
        [--idle P] [--stall P] [--netlist ice40|ecp5] [--json OUT]
    python -m sim.regress --from-build DIR [--images N] [--data DIR] [--jobs N] ...

The core is folded exactly as ``python -m hw.build`` folds it for the same board, so the
cycles per image measured here are comparable with the build report's prediction. With
``--from-build DIR`` nothing is regenerated: the very ``DIR/core.v`` that ``hw.build --target
verilog`` wrote is simulated, against the quantized model and fold beside it.

The Verilog is generated once; the default ``compiled`` harness (:mod:`sim.compiled`, a C++
Verilator testbench) builds it once and runs ``--jobs`` copies of the executable on chunks
of the images; ``cocotb`` runs the cocotb testbench instead (:mod:`sim.tb_stream`). Exits 1 on
any mismatch, after tapping every layer's output inside the same Verilog on the first
mismatching image to name the first layer (and channel and position) that differs.

With ``--netlist FAMILY`` the core simulated is its post-synthesis netlist (``synth_ice40 -dsp``
or ``synth_ecp5``, as the board builds synthesize it) with the vendor cell models
(:mod:`sim.netlist`), in the same compiled harness, compared with the golden model the same
way; the board's family must be ``FAMILY``.
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hw.boards import BOARDS, get_board
from hw.folding import DEVICES, auto_fold, load_fold
from hw.multiplier import DSP_WIDTHS
from sw.data import check_images, load_test, load_train, parse_data_arg
from sw.errors import UserError, cli_main
from sw.golden import classify
from sw.models import model_path
from sw.outputs import prepare_file, write_json
from sw.qmodel import load_qmodel, save_qmodel
from sw.quantize import (
    CALIBRATION_IMAGES,
    METHOD_HELP,
    QuantConfig,
    check_bits,
    check_method,
    parse_layer_bits,
    quantize_model,
    widths_label,
)

from . import netlist, runner
from .compiled import (
    CompiledCore,
    accelerator,
    compare_outputs,
    core_deadline,
    describe_difference,
    first_differing_layer,
)
from .core import TOPLEVEL, core_verilog
from .harness import simulate_stream

__all__ = ["HARNESSES", "from_model", "load_build", "main", "regress"]

HARNESSES = ("compiled", "cocotb")
#: Images per run of the compiled executable: its start-up and the pipeline filling up cost
#: well under one image's time, so chunks only need to be small enough to show progress.
COMPILED_CHUNK = 1000
#: cocotb starts a simulator per chunk (seconds) and runs ~10 images/s.
COCOTB_CHUNK = 250


def _cocotb_chunk(args):
    """One cocotb run in a worker process: the Verilog is built already (same cache key)."""
    verilog, qmodel_path, fold, images, options, workdir = args
    qmodel = load_qmodel(qmodel_path)
    core = accelerator(qmodel, fold)
    deadline = core_deadline(core, len(images), options["idle"], options["stall"])
    received = simulate_stream(verilog, TOPLEVEL, np.asarray(images).reshape(-1).tolist(),
                               len(images), deadline=deadline, workdir=workdir, **options)
    return compare_outputs(qmodel, core, images, received["words"], received["times"])


def _chunks(count, size):
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def _run_compiled(compiled, images, jobs, idle, stall, bar):
    """``{start: result}`` of every chunk, run by ``jobs`` copies of the executable at once."""
    chunk = max(1, min(COMPILED_CHUNK, math.ceil(len(images) / jobs)))
    results = {}
    # Threads suffice: each waits on its own simulator process, which does the work.
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(compiled.run, images[start:end], idle=idle, stall=stall,
                               seed=start): (start, end)
                   for start, end in _chunks(len(images), chunk)}
        _collect(pool, futures, results, bar)
    return results


def _run_cocotb(qmodel, fold, verilog, images, jobs, simulator, idle, stall, bar):
    scratch = Path(tempfile.mkdtemp(prefix="nnfpga-regress-"))
    save_qmodel(qmodel, scratch / "model.npz")
    chunk = max(1, min(COCOTB_CHUNK, math.ceil(len(images) / jobs)))
    results = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_cocotb_chunk, (
            verilog, scratch / "model.npz", fold, images[start:end],
            {"simulator": simulator, "idle": idle, "stall": stall, "seed": start},
            scratch / f"chunk{start}")): (start, end)
            for start, end in _chunks(len(images), chunk)}
        _collect(pool, futures, results, bar)
    return results


def _collect(pool, futures, results, bar):
    for future in as_completed(futures):
        start, end = futures[future]
        try:
            results[start] = future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # no point simulating the rest
            raise
        bar.update(end - start)


def regress(qmodel, fold, images, labels, *, jobs=2, simulator="verilator", idle=0.0,
            stall=0.0, progress=True, harness="compiled", verilog=None):
    """Simulate ``images`` in ``jobs`` parallel simulations; returns the summary dictionary.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict
        ``{weight layer name: (pe, simd)}``.
    images, labels : ndarray
        Test images (shaped as the model's input) and their true classes.
    harness : {"compiled", "cocotb"}
        The C++ Verilator testbench (:mod:`sim.compiled`, Verilator only) or cocotb on
        ``simulator``.
    verilog : str, optional
        The core's Verilog as given (``--from-build``); generated once from ``qmodel`` and
        ``fold`` when not given.

    Returns
    -------
    dict
        Counts, accuracies, measured and predicted cycles per image, simulation speed,
        ``mismatched_images`` (the first 20) and the settings.
    """
    if harness not in HARNESSES:
        raise UserError(f"unknown harness {harness!r}; known: {', '.join(HARNESSES)}")
    if harness == "compiled" and simulator != "verilator":
        raise UserError(f"the compiled harness runs on Verilator only, not {simulator}: "
                        f"use --harness cocotb")
    start_time = time.monotonic()
    if verilog is None:
        verilog, _ = core_verilog(qmodel, fold)
    if harness == "compiled":
        compiled = CompiledCore(qmodel, fold, verilog)
    else:
        compiled = None
        runner.build(verilog, TOPLEVEL, simulator)  # once, before the parallel runs share it
    build_seconds = time.monotonic() - start_time
    start_time = time.monotonic()
    with tqdm(total=len(images), unit="image", disable=not progress, file=sys.stderr) as bar:
        if compiled is not None:
            results = _run_compiled(compiled, images, jobs, idle, stall, bar)
        else:
            results = _run_cocotb(qmodel, fold, verilog, images, jobs, simulator, idle, stall,
                                  bar)
    elapsed = time.monotonic() - start_time
    ordered = sorted(results.items())
    rtl_logits = np.concatenate([np.array(result["logits"], dtype=np.int64).reshape(
        -1, qmodel.classes) for _, result in ordered])
    mismatches = [start + index for start, result in ordered for index in result["mismatches"]]
    intervals = [result["interval"] for _, result in ordered if result["interval"] is not None]
    golden_classes, _ = classify(qmodel, images)
    return {
        "model": qmodel.name, "weight_bits": qmodel.weight_bits, "act_bits": qmodel.act_bits,
        "widths": _widths(qmodel), "images": len(images), "mismatches": len(mismatches),
        "mismatched_images": mismatches[:20],
        "rtl_accuracy": float(np.mean(np.argmax(rtl_logits, axis=1) == labels)),
        "golden_accuracy": float(np.mean(golden_classes == labels)),
        "cycles_per_image": float(np.median(intervals)) if intervals else None,
        "cycles_per_image_predicted": accelerator(qmodel, fold).cycles_per_image,
        "sim_images_per_second": len(images) / elapsed, "seconds": elapsed,
        "build_seconds": build_seconds, "harness": harness,
        "simulator": "verilator" if harness == "compiled" else simulator, "jobs": jobs,
        "idle": idle, "stall": stall, "fold": accelerator(qmodel, fold).fold.to_json(),
    }


def load_build(directory):
    """The ``core.v``, quantized model, fold and report that ``hw.build`` wrote to ``directory``.

    Returns
    -------
    tuple
        ``(verilog, qmodel, fold, report)``; ``report`` is ``{}`` without ``report.json``.

    Raises
    ------
    UserError
        If a file is missing or does not belong with the others.
    """
    directory = Path(directory)
    source = directory / "core.v"
    if not source.is_file():
        raise UserError(f"{directory} has no core.v: write it with python -m hw.build "
                        f"--target verilog --out {directory}")
    qmodel = load_qmodel(directory / "export" / "model.npz")
    fold = load_fold(directory / "fold.json", qmodel)
    report_path = directory / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return source.read_text(), qmodel, fold, report


def _parser():
    parser = argparse.ArgumentParser(prog="python -m sim.regress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="seed model or .keras/.h5 file "
                        "(default lenet5)")
    parser.add_argument("--bits", default=None, help="weight bits 1..16 (default 4)")
    parser.add_argument("--act-bits", default=None, help="activation bits (default: --bits)")
    parser.add_argument("--layer-bits", default=None, type=parse_layer_bits,
                        help="per-layer widths, e.g. first=8,last=8 (as hw.build's)")
    parser.add_argument("--from-build", default=None, metavar="DIR",
                        help="simulate DIR/core.v as written by hw.build --target verilog, "
                             "with DIR/export/model.npz and DIR/fold.json")
    parser.add_argument("--images", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--harness", choices=HARNESSES, default="compiled",
                        help="C++ Verilator testbench (default) or cocotb")
    parser.add_argument("--sim", choices=runner.SIMULATORS, default=None,
                        help="simulator of the cocotb harness (default $SIM or verilator)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--board", default=None,
                        help=f"fold as hw.build does for this board ({', '.join(BOARDS)}; "
                             f"default ulx3s-85f)")
    parser.add_argument("--fold", default=None, help="auto (for --board) or a JSON file")
    parser.add_argument("--idle", type=float, default=0.0, help="input idle probability")
    parser.add_argument("--stall", type=float, default=0.0, help="output stall probability")
    parser.add_argument("--method", type=check_method, default=None,
                        help=METHOD_HELP)
    parser.add_argument("--netlist", default=None, metavar="FAMILY",
                        help="simulate the core's post-synthesis netlist for this FPGA family "
                             f"({', '.join(netlist.FAMILIES)}) with the vendor cell models")
    parser.add_argument("--json", default=None, help="write the summary here")
    parser.add_argument("--force", action="store_true",
                        help="replace a --json file that sim.regress did not write")
    return parser


def _from_build(args):
    """``(verilog, qmodel, fold, method)`` from ``--from-build``, refusing conflicting flags."""
    verilog, qmodel, fold, report = load_build(args.from_build)
    for flag, value in (("--fold", args.fold), ("--board", args.board),
                        ("--method", args.method)):
        if value is not None:
            raise UserError(f"{flag} does not apply with --from-build: the build's fold and "
                            f"model are used")
    if args.model is not None and Path(args.model).stem != qmodel.name:
        raise UserError(f"--model {args.model} conflicts with --from-build {args.from_build}, "
                        f"which holds {qmodel.name}")
    for flag, value, built in (("--bits", args.bits, qmodel.weight_bits),
                               ("--act-bits", args.act_bits, qmodel.act_bits)):
        if value is not None and check_bits(value, flag) != built:
            raise UserError(f"{flag} {value} conflicts with --from-build {args.from_build}, "
                            f"built at {built} bits")
    return verilog, qmodel, fold, report.get("quantization", "from build")


def from_model(args):
    """``(verilog, qmodel, fold, method)``: quantize, fold and generate the core as
    ``hw.build`` would for the board (``args``: ``model``, ``bits``, ``act_bits``,
    ``layer_bits``, ``board``, ``fold``, ``method`` and ``data`` as :func:`main` parses them;
    ``None`` for the defaults)."""
    bits = check_bits(args.bits or "4", "--bits")
    act_bits = check_bits(args.act_bits or bits, "--act-bits")
    board = get_board(args.board or "ulx3s-85f")
    dsp_width = DSP_WIDTHS[DEVICES[board.device].family]
    model = args.model or "lenet5"
    model_path(model)  # an unknown name fails before the training images load
    train_images, _ = load_train(args.data)
    config = QuantConfig(weight_bits=bits, act_bits=act_bits,
                         layer_bits=getattr(args, "layer_bits", None) or ())
    qmodel, method = quantize_model(model, config, train_images[:CALIBRATION_IMAGES],
                                    args.method or "auto")
    fold = auto_fold(qmodel, DEVICES[board.device]) if args.fold in (None, "auto") else \
        load_fold(args.fold, qmodel, dsp_width)
    verilog, _ = core_verilog(qmodel, fold, dsp_width)
    return verilog, qmodel, fold, method


def _check_netlist_options(args):
    """A one-line error, before anything is built, for a ``--netlist`` that cannot run: an
    unknown family, the cocotb harness, or a board (``--board``, or the build's) of another
    family."""
    family = netlist.check_family(args.netlist)
    if args.harness != "compiled":
        raise UserError("--netlist runs on the compiled harness only")
    board, where = args.board or "ulx3s-85f", "--board"
    if args.from_build:
        report = Path(args.from_build) / "report.json"
        board = json.loads(report.read_text()).get("board") if report.is_file() else None
        where = "the build's board"
    known = DEVICES[get_board(board).device].family if board in BOARDS else None
    if known not in (None, family):
        raise UserError(f"--netlist {family} does not match {where} {board}, an {known} board: "
                        f"fold for an {family} board")


def _netlist_source(family, verilog, qmodel, fold):
    """``(simulation source, summary entries)`` of the core's ``family`` netlist (``--netlist``);
    ``verilog`` is the core's RTL."""
    print(f"synthesizing the core for {family} (Yosys) ...", file=sys.stderr, flush=True)
    synthesized = netlist.synthesize(verilog, family)
    return netlist.simulation_source(synthesized.verilog, family), {
        "netlist": family, "synthesis_seconds": synthesized.seconds,
        "synthesis_cached": synthesized.cached, "netlist_cells": synthesized.cells}


def _widths(qmodel):
    """The network's widths as messages name them, with each layer that has its own."""
    own = [(layer.name, layer.weight_bits, qmodel.act_bits if layer.is_output else layer.out_bits)
           for layer in qmodel.weight_layers]
    return widths_label(qmodel.weight_bits, qmodel.act_bits, [
        entry for entry in own if entry[1:] != (qmodel.weight_bits, qmodel.act_bits)])


def _print_summary(summary, method):
    print(f"model            {summary['model']} {summary['widths']} "
          f"{method} ({summary['harness']} harness, {summary['simulator']}, "
          f"{summary['jobs']} jobs)")
    print(f"images           {summary['images']}")
    print(f"mismatches       {summary['mismatches']}")
    simulated = "netlist" if "netlist" in summary else "RTL    "
    print(f"{simulated} accuracy {100 * summary['rtl_accuracy']:.2f}%")
    print(f"golden accuracy  {100 * summary['golden_accuracy']:.2f}%")
    print(f"cycles/image     {summary['cycles_per_image']} measured, "
          f"{summary['cycles_per_image_predicted']} predicted")
    print(f"simulation       {summary['sim_images_per_second']:.1f} images/s, "
          f"{summary['seconds']:.1f} s (+ {summary['build_seconds']:.1f} s to generate and "
          f"build)")
    if "netlist" in summary:
        print(f"netlist          {summary['netlist']}: {sum(summary['netlist_cells'].values())} "
              f"cells, synthesized in {summary['synthesis_seconds']:.1f} s"
              f"{' (cached)' if summary['synthesis_cached'] else ''}")


def _explain(summary, qmodel, fold, images, verilog, family=None):
    """Tap every layer inside the simulated Verilog on the first mismatching image (for a
    netlist, inside a synthesis of ``verilog`` that keeps the hierarchy)."""
    first = summary["mismatched_images"][0]
    inside = f"an {family} netlist keeping the hierarchy" if family else "the same Verilog"
    print(f"first mismatch: image {first}; tapping every layer's output in {inside} ...",
          file=sys.stderr)
    if family:
        found = netlist.first_differing_layer(qmodel, fold, images[first], verilog, family)
        line = describe_difference(found).replace(": RTL ", ": netlist ")
    else:
        found = first_differing_layer(qmodel, fold, images[first], verilog=verilog)
        line = describe_difference(found)
    summary["first_mismatch"] = {"image": first, "layer": found}
    print(f"  {line}", file=sys.stderr)


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.images < 1 or args.jobs < 1:
        raise UserError("--images and --jobs must be positive")
    if not 0 <= args.idle < 1 or not 0 <= args.stall < 1:
        raise UserError("--idle and --stall must be at least 0 and below 1")
    if args.netlist is not None:
        _check_netlist_options(args)
    simulator = args.sim or ("verilator" if args.harness == "compiled" else
                             os.environ.get("SIM", "verilator"))
    if args.json:
        prepare_file(args.json, "sim.regress", force=args.force)
    images, labels = load_test(args.data)  # a bad --data fails before anything is built
    rtl, qmodel, fold, method = (_from_build if args.from_build else from_model)(args)
    images, labels = images[:args.images], labels[:args.images]
    images = check_images(images, qmodel.input_shape, qmodel.name)
    verilog, extra = rtl, {}
    if args.netlist:
        verilog, extra = _netlist_source(args.netlist, rtl, qmodel, fold)
    summary = regress(qmodel, fold, images, labels, jobs=args.jobs, simulator=simulator,
                      idle=args.idle, stall=args.stall, harness=args.harness, verilog=verilog)
    summary.update(extra, method=method)
    if args.from_build:
        summary["from_build"] = str(args.from_build)
    _print_summary(summary, method)
    if summary["mismatches"]:
        _explain(summary, qmodel, fold, images, rtl, args.netlist)
    if args.json:
        write_json(args.json, summary, "sim.regress")
    if summary["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
