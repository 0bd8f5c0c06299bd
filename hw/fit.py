"""Which models fit which boards at which bit widths: a table, from the resource model or builds.

Command line::

    python -m hw.fit [--models lenet5,tiny_cnn,mlp,mlp64] [--bits 1,2,4,8]
        [--boards icebreaker,ice40-hx8k,ulx3s-25f,ulx3s-85f] [--build] [--json OUT]

With one model, one bit width and one board (and no ``--build``) it prints that cell in
full: the fold chosen, the estimate per layer, and the MAC lanes against the ceiling of the
device.

Without ``--build`` each cell is the resource model's verdict (``hw/folding.py``) with the
cycles per image of the folding it chose; with ``--build`` every cell is a real Yosys +
nextpnr build (minutes each), whose verdict is final.
"""

import argparse
import json
import sys
import tempfile
from argparse import Namespace
from pathlib import Path

from sw.data import load_train
from sw.errors import UserError, cli_main
from sw.models import SEED_MODELS
from sw.quantize import CALIBRATION_IMAGES, QuantConfig, parse_bits, quantize_model

from .boards import BOARDS, get_board
from .build import build
from .folding import DEVICES, auto_fold, device_lanes, estimate, layer_estimates
from .network import schedule

__all__ = ["fit_table", "main"]


def _chosen(qmodel, board):
    """The board's device, the fold :func:`~hw.folding.auto_fold` picks and its interval."""
    device = DEVICES[get_board(board).device]
    fold = auto_fold(qmodel, device)
    return device, fold, max(stage.cycles for stage in schedule(qmodel, fold))


def _cell(qmodel, board, do_build, model, bits):
    try:
        _, _, interval = _chosen(qmodel, board)
    except UserError:
        return {"fits": False, "source": "model"}
    if not do_build:
        return {"fits": True, "source": "model", "cycles_per_image": interval}
    with tempfile.TemporaryDirectory() as scratch:
        args = Namespace(board=board, model=model, bits=str(bits), weight_bits=None,
                         act_bits=None, fold="auto", target="bitstream", data=None,
                         out=str(Path(scratch) / "out"), calibration=CALIBRATION_IMAGES,
                         method="auto")
        try:
            report = build(args, lambda message: print(f"    {message}", file=sys.stderr))
        except UserError as error:
            return {"fits": False, "source": "nextpnr", "reason": str(error)}
    return {"fits": True, "source": "nextpnr", "cycles_per_image": interval,
            "luts": report["luts"], "luts_available": report["luts_available"],
            "brams": report["brams"], "dsps": report["dsps"], "fmax_mhz": report["fmax_mhz"]}


def _quantized(model, bits):
    return quantize_model(model, QuantConfig(weight_bits=bits),
                          load_train(None)[0][:CALIBRATION_IMAGES])[0]


def fit_table(models, bits_list, boards, do_build=False):
    """Return ``{model: {bits: {board: cell}}}`` (see :func:`main`)."""
    table = {}
    for model in models:
        for bits in bits_list:
            qmodel = _quantized(model, bits)
            for board in boards:
                print(f"{model} {bits}-bit on {board}", file=sys.stderr)
                table.setdefault(model, {}).setdefault(str(bits), {})[board] = _cell(
                    qmodel, board, do_build, model, bits)
    return table


def _markdown(table, bits_list, boards):
    lines = ["| model | bits | " + " | ".join(boards) + " |",
             "|---|---|" + "---|" * len(boards)]
    for model, rows in table.items():
        for bits in bits_list:
            cells = []
            for board in boards:
                cell = rows[str(bits)][board]
                if not cell["fits"]:
                    cells.append("no")
                elif "luts" in cell:
                    cells.append(f"yes: {cell['cycles_per_image']} cyc, {cell['luts']} LUT, "
                                 f"{cell['fmax_mhz']:.0f} MHz")
                else:
                    cells.append(f"yes ({cell['cycles_per_image']} cyc/img)")
            lines.append(f"| {model} | {bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detail(model, bits, board_name):
    """One cell in full: the chosen fold, the estimate per layer, and the ceilings."""
    qmodel = _quantized(model, bits)
    device, fold, interval = _chosen(qmodel, board_name)
    lanes = sum(entry.pe * entry.simd for entry in fold.values())
    print(f"{model} W{bits} on {board_name} ({device.name}): {interval} cycles/image, "
          f"{fold.pixels} pixel(s) a clock")
    print("| layer | PE | SIMD | multiplier | hard lanes | LUTs | FFs | BRAM | DSP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, part in layer_estimates(qmodel, fold, device).items():
        entry = fold.get(name)
        shape = (f"{entry.pe} | {entry.simd} | {entry.multiplier} | "
                 f"{entry.simd if entry.hard_lanes is None else entry.hard_lanes}"
                 if entry else "| | |")
        print(f"| {name} | {shape} | {part.luts} | {part.ffs} | {part.brams} | {part.dsps} |")
    need = estimate(qmodel, fold, device)
    print(f"estimate: {need.luts}/{device.luts} LUTs, {need.ffs} FFs, {need.brams}/"
          f"{device.brams} BRAM, {need.dsps}/{device.dsps} DSP"
          + (f", {need.sprams}/{device.sprams} SPRAM" if device.sprams else ""))
    if fold.loaded:
        print(f"loaded weights (sent by the host after configuration, `sw.host --load`): "
              f"{', '.join(sorted(fold.loaded))}")
    ceiling = device_lanes(qmodel, device)
    print(f"MAC lanes: {lanes} used, about {ceiling} the device could hold; MAC efficiency "
          f"{qmodel.macs / (lanes * interval):.3f} of the lanes used, "
          f"{qmodel.macs / (ceiling * interval):.3f} of the device's")


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.fit", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(SEED_MODELS))
    parser.add_argument("--bits", default="1,2,4,8")
    parser.add_argument("--boards", default="icebreaker,ice40-hx8k,ulx3s-25f,ulx3s-85f")
    parser.add_argument("--build", action="store_true", help="verify every cell with nextpnr")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    bits_list = parse_bits(args.bits)
    boards = [board for board in args.boards.split(",") if board]
    unknown = [board for board in boards if board not in BOARDS]
    if unknown:
        raise UserError(f"unknown board {unknown[0]!r}; known boards: {', '.join(BOARDS)}")
    models = [model for model in args.models.split(",") if model]
    if len(models) == len(bits_list) == len(boards) == 1 and not args.build:
        _detail(models[0], bits_list[0], boards[0])
        return
    table = fit_table(models, bits_list, boards, args.build)
    print(_markdown(table, bits_list, boards))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
