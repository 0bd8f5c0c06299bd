"""The board's own benchmark, measured in RTL simulation of the whole board top.

Command line::

    python -m sim.board_bench [--model lenet5] [--bits 4] [--board ulx3s-85f]
        [--repeats 1,2,100] [--clock MHZ] [--data DIR] [--json OUT]

The model is quantized and folded as ``hw.build`` does for the board; the Verilog of the
board top (``UARTTop`` around the accelerator: UART receiver, frame parser, image buffer,
feeder, core, response writer) runs in Verilator under the real host driver
(``sw.host.Board`` over a bit-level serial line, :func:`sim.uart.simulate_uart_top`), which
sends test image 0 in one bench request per repeat count (``docs/protocol.md``, command
``0x02``); a core with loaded weights gets its load request first (command ``0x03``, after
checking that it refuses images before a load and after a damaged one). The board answers
with its hardware cycle count and the last result. The command checks that every count is
exactly ``L + (N - 1) * I`` (``L`` the count of ``N = 1``, the latency of one image; ``I``
the predicted interval) and that every result is the golden model's, prints the on-chip
images/s at ``--clock`` (the clock a build's ``report.json`` says its bitstream runs at; per
MHz without it), and exits non-zero when a check fails.

The serial line runs at four clocks a bit (the count is of core cycles from the first image
into the core to the last result out, so it does not depend on the baud rate).
"""

import argparse
import sys
from argparse import Namespace

from sw.data import load_test, parse_data_arg
from sw.errors import UserError, cli_main
from sw.golden import classify
from sw.host import MAX_REPEATS
from sw.outputs import prepare_file, write_json

from .regress import from_model
from .uart import simulate_uart_top

__all__ = ["bench_counts", "check_counts", "main"]

#: Clocks per bit of the simulated serial line.
DIVISOR = 4


def check_counts(counts, interval):
    """Problems with bench ``counts`` (``{N: cycles}``, ``N = 1`` among them) for a core of
    predicted ``interval``: each must be ``counts[1] + (N - 1) * interval``."""
    latency = counts[1]
    problems = [f"N={n}: {count} cycles, expected {latency + (n - 1) * interval}"
                for n, count in sorted(counts.items()) if count != latency + (n - 1) * interval]
    if latency < interval:
        problems.append(f"latency {latency} below the interval {interval}")
    return problems


def bench_counts(qmodel, fold, image, repeats, workdir=None):
    """Bench requests for ``image`` on the board top's RTL: a summary dict (see :func:`main`)."""
    results = simulate_uart_top(qmodel, fold, image[None], divisor=DIVISOR, faults=(),
                                bench=repeats, workdir=workdir)
    labels, logits = classify(qmodel, image[None].reshape(1, *qmodel.input_shape))
    counts = {bench["repeats"]: bench["cycles"] for bench in results["bench"]}
    interval = results["cycles_per_image"]
    problems = list(results["problems"]) + check_counts(counts, interval)
    problems += [f"N={bench['repeats']}: answered class {bench['label']}, golden "
                 f"{int(labels[0])}" for bench in results["bench"]
                 if (bench["label"], bench["logits"]) != (int(labels[0]), logits[0].tolist())]
    if results["mismatches"]:
        problems.append("classification of image 0 differs from the golden model")
    # A core with loaded weights is loaded first, over the same line, with its refusals before.
    problems += [f"{fault['fault']}: answered {fault['got']}, expected {fault['expected']}"
                 for fault in results["faults"] if fault["got"] != fault["expected"]]
    return {"model": qmodel.name, "weight_bits": qmodel.weight_bits,
            "act_bits": qmodel.act_bits, "fold": fold.to_json(),
            "cycles_per_image_predicted": interval, "latency": counts[1],
            "counts": {str(n): count for n, count in counts.items()},
            "problems": problems, "passed": not problems}


def _repeats(text):
    try:
        values = sorted({int(part) for part in text.split(",") if part})
    except ValueError:
        raise UserError(f"--repeats must be comma-separated counts, not {text!r}") from None
    if 1 not in values or not all(1 <= value <= MAX_REPEATS for value in values):
        raise UserError(f"--repeats must include 1 and stay within 1..{MAX_REPEATS}, "
                        f"not {text!r}")
    return values


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.board_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--bits", default="4", help="weight and activation bits (default 4)")
    parser.add_argument("--board", default="ulx3s-85f")
    parser.add_argument("--repeats", default="1,2,100", type=_repeats,
                        help="bench requests' repeat counts (default 1,2,100)")
    parser.add_argument("--clock", type=float, default=None,
                        help="the core clock in MHz (report.json's clock_mhz)")
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args(argv)
    if args.clock is not None and not args.clock > 0:
        raise UserError(f"--clock must be positive, not {args.clock:g}")
    if args.json:
        prepare_file(args.json, "sim.board_bench")
    images, _ = load_test(args.data)
    _, qmodel, fold, _ = from_model(Namespace(
        model=args.model, bits=args.bits, act_bits=None, board=args.board, fold=None,
        method=None, data=args.data))
    summary = bench_counts(qmodel, fold, images[0], args.repeats)
    summary.update(board=args.board, clock_mhz=args.clock)
    interval, most = summary["cycles_per_image_predicted"], max(args.repeats)
    cycles = summary["counts"][str(most)]
    for n, count in summary["counts"].items():
        print(f"N={n:>5}: {count} cycles (latency {summary['latency']} + {int(n) - 1} x "
              f"{interval})")
    # Images per second of the longest request: what the board measures of itself.
    per_mhz = most * 1e6 / cycles
    summary["images_per_second_per_mhz"] = per_mhz
    if args.clock:
        summary["images_per_second"] = per_mhz * args.clock
        print(f"on chip: {summary['images_per_second']:,.0f} images/s at {args.clock:g} MHz "
              f"({most} images in {cycles} cycles)")
    else:
        print(f"on chip: {per_mhz:,.1f} images/s per MHz ({most} images in {cycles} cycles)")
    if args.json:
        write_json(args.json, summary, "sim.board_bench")
    if not summary["passed"]:
        print(f"error: {'; '.join(summary['problems'])}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
