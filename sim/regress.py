"""Run real test images through the generated RTL and compare every logit with the golden model.

Command line::

    python -m sim.regress --model lenet5 --bits 4 --images 10000 [--data DIR]
        [--sim verilator|icarus] [--jobs N] [--board NAME | --fold FILE] [--json OUT]

The core is folded exactly as ``python -m hw.build`` folds it for the same board, so the
cycles per image measured here are comparable with the build report's prediction. Exits
non-zero on any mismatch, after simulating each layer alone on the first mismatching image to
name the first layer whose RTL differs from the golden model (:mod:`sim.layers`).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from sw.errors import UserError, cli_main

__all__ = ["main", "regress"]


def _run_chunk(args):
    qmodel_path, fold, images, options, workdir = args
    from sw.qmodel import load_qmodel

    from .core import simulate_core

    return simulate_core(load_qmodel(qmodel_path), fold, images, workdir=workdir, **options)


def regress(qmodel, fold, images, labels, *, jobs=2, simulator="verilator", idle=0.0,
            stall=0.0, progress=True):
    """Simulate ``images`` in ``jobs`` parallel simulations; returns the summary dictionary."""
    from tqdm import tqdm

    from sw.golden import classify
    from sw.qmodel import save_qmodel

    from .core import TOPLEVEL, core_verilog
    from .runner import build

    verilog, core = core_verilog(qmodel, fold)
    build(verilog, TOPLEVEL, simulator)  # once, before the parallel runs share it
    scratch = Path(tempfile.mkdtemp(prefix="nnfpga-regress-"))
    save_qmodel(qmodel, scratch / "model.npz")
    # Chunks big enough to amortize simulator start-up, small enough to show progress.
    chunk = max(1, min(250, math.ceil(len(images) / max(1, jobs))))
    tasks = [(scratch / "model.npz", fold, images[start:start + chunk],
              {"simulator": simulator, "idle": idle, "stall": stall, "seed": start},
              scratch / f"chunk{start}") for start in range(0, len(images), chunk)]
    logits = [None] * len(tasks)
    intervals, mismatches = [], []
    start_time = time.monotonic()
    with ProcessPoolExecutor(max_workers=jobs) as pool, tqdm(
            total=len(images), unit="image", disable=not progress, file=sys.stderr) as bar:
        futures = {pool.submit(_run_chunk, task): index for index, task in enumerate(tasks)}
        for future in as_completed(futures):
            index = futures[future]
            try:
                result = future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # no point simulating the rest
                raise
            logits[index] = np.array(result["logits"], dtype=np.int64)
            offset = index * chunk
            mismatches += [offset + i for i in result["mismatches"]]
            if result["interval"] is not None:
                intervals.append(result["interval"])
            bar.update(len(tasks[index][2]))
    elapsed = time.monotonic() - start_time
    rtl_logits = np.concatenate(logits)
    rtl_classes = np.argmax(rtl_logits, axis=1)
    golden_classes, _ = classify(qmodel, images)
    return {
        "model": qmodel.name, "weight_bits": qmodel.weight_bits, "act_bits": qmodel.act_bits,
        "images": len(images), "mismatches": len(mismatches),
        "mismatched_images": sorted(mismatches)[:20],
        "rtl_accuracy": float(np.mean(rtl_classes == labels)),
        "golden_accuracy": float(np.mean(golden_classes == labels)),
        "cycles_per_image": float(np.median(intervals)) if intervals else None,
        "cycles_per_image_predicted": core.cycles_per_image,
        "sim_images_per_second": len(images) / elapsed, "seconds": elapsed,
        "simulator": simulator, "jobs": jobs, "fold": fold,
    }


@cli_main
def main(argv=None):
    from hw.boards import BOARDS, get_board
    from hw.folding import DEVICES, auto_fold, load_fold
    from sw.data import check_images, load_test, load_train, parse_data_arg
    from sw.models import model_path
    from sw.quantize import METHOD_HELP, METHODS, QuantConfig, check_bits, quantize_model

    from .layers import first_differing_layer
    from .runner import SIMULATORS

    parser = argparse.ArgumentParser(prog="python -m sim.regress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet5", help="seed model or .keras/.h5 file")
    parser.add_argument("--bits", default="4", help="weight bits 1..8")
    parser.add_argument("--act-bits", default=None, help="activation bits (default: --bits)")
    parser.add_argument("--images", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--sim", choices=SIMULATORS, default=os.environ.get("SIM", "verilator"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--board", default="ulx3s-85f",
                        help=f"fold as hw.build does for this board ({', '.join(BOARDS)})")
    parser.add_argument("--fold", default="auto", help="auto (for --board) or a JSON file")
    parser.add_argument("--idle", type=float, default=0.0, help="input idle probability")
    parser.add_argument("--stall", type=float, default=0.0, help="output stall probability")
    parser.add_argument("--method", choices=METHODS, default="auto", help=METHOD_HELP)
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args(argv)
    bits = check_bits(args.bits, "--bits")
    act_bits = check_bits(args.act_bits or bits, "--act-bits")
    if args.images < 1 or args.jobs < 1:
        raise UserError("--images and --jobs must be positive")
    board = get_board(args.board)
    model_path(args.model)  # an unknown name fails before the training images load
    train_images, _ = load_train(args.data)
    qmodel, method = quantize_model(args.model, QuantConfig(weight_bits=bits, act_bits=act_bits),
                                    train_images[:1000], args.method)
    images, labels = load_test(args.data)
    images, labels = images[:args.images], labels[:args.images]
    images = check_images(images, qmodel.input_shape, qmodel.name)
    fold = auto_fold(qmodel, DEVICES[board.device]) if args.fold == "auto" else \
        load_fold(args.fold, qmodel)
    summary = regress(qmodel, fold, images, labels, jobs=args.jobs, simulator=args.sim,
                      idle=args.idle, stall=args.stall)
    summary["method"] = method
    print(f"model            {summary['model']} W{bits}A{act_bits} {method} ({args.sim}, "
          f"{args.jobs} jobs)")
    print(f"images           {summary['images']}")
    print(f"mismatches       {summary['mismatches']}")
    print(f"RTL accuracy     {100 * summary['rtl_accuracy']:.2f}%")
    print(f"golden accuracy  {100 * summary['golden_accuracy']:.2f}%")
    print(f"cycles/image     {summary['cycles_per_image']} measured, "
          f"{summary['cycles_per_image_predicted']} predicted")
    print(f"simulation       {summary['sim_images_per_second']:.1f} images/s, "
          f"{summary['seconds']:.0f} s")
    if summary["mismatches"]:
        first = summary["mismatched_images"][0]
        print(f"first mismatch: image {first}; simulating each layer alone on it ...",
              file=sys.stderr)
        found = first_differing_layer(qmodel, fold, images[first], simulator=args.sim)
        summary["first_mismatch"] = {"image": first, "layer": found}
        if found is None:
            print("  every layer alone equals the golden model: the fault is in how the "
                  "layers are joined", file=sys.stderr)
        else:
            print(f"  first differing layer: #{found['index']} {found['layer']} "
                  f"({found['kind']}), output element {found['element']}: RTL {found['rtl']}, "
                  f"golden {found['golden']} ({found['differing']} elements differ)",
                  file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if summary["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
