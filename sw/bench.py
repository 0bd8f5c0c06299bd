"""Sweep models x bit widths x boards and write the results page.

Command line::

    python -m sw.bench [--models lenet5,tiny_cnn] [--bits 1,2,4,8]
        [--boards ulx3s-85f,icebreaker] [--rtl-images 200] [--data DIR] [--out docs/results]

Measures, for every combination: float accuracy (Keras) and integer golden accuracy (post-
training and, where a model was trained for it, quantization-aware) on the whole test set;
RTL accuracy and mismatches on a sample (``python -m sim.regress``); resources, Fmax, cycles
per image, images/s and MAC efficiency from a real build (``python -m hw.build``); and the
CPU baselines a user would otherwise run, on this machine. Writes ``<out>.md``, and
``<out>/results.json`` and PNG plots. Every measurement is stored as soon as it is made, keyed
by what it depends on (the model files' hashes): an interrupted sweep resumes where it
stopped, and a retrained model is measured again.
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import UserError, cli_main
from .outputs import STAMP, marker, prepare_dir, prepare_file, write_file

__all__ = ["Store", "ceiling", "main", "render_markdown"]

ROOT = Path(__file__).resolve().parent.parent
VERSION = 1


class Store:
    """Measurements in a JSON file, written after each one so a sweep can resume."""

    def __init__(self, path, force=False, stored_only=False):
        self.path, self.stored_only = Path(path), stored_only
        self.entries = {}
        if self.path.is_file() and not force:
            try:
                stored = json.loads(self.path.read_text())
            except json.JSONDecodeError as error:
                raise UserError(f"{self.path} is not valid JSON ({error}); delete it or use "
                                f"--force") from None
            if stored.get("version") == VERSION:
                self.entries = stored.get("entries", {})

    def measure(self, key, what, function):
        """The stored result for ``key``, or ``function()``'s, stored before returning."""
        if key in self.entries:
            print(f"  {what}: stored", file=sys.stderr)
            return self.entries[key]
        if self.stored_only:
            print(f"  {what}: not measured yet", file=sys.stderr)
            return None
        print(f"  {what} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        result = function()
        result["measured_seconds"] = round(time.monotonic() - start, 1)
        self.entries[key] = result
        self.save()
        return result

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"version": VERSION, "entries": self.entries},
                                        indent=1, sort_keys=True) + "\n")
        os.replace(temporary, self.path)


def _fingerprint(model, bits):
    """A hash of the files that decide ``model``'s integer weights at ``bits``."""
    from .models import model_path
    from .qat import qat_model_path, sidecar_path

    digest = hashlib.sha256()
    paths = [model_path(model)]
    if bits is not None and qat_model_path(model, bits, bits).is_file():
        qat = qat_model_path(model, bits, bits)
        paths += [qat, sidecar_path(qat)]
    for path in paths:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _run(command, log):
    """Run a project command, its output into ``log``; returns (exit code, last error line)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as file:
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, stdout=file,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    return done.returncode, errors[-1] if errors else None


def ceiling(multipliers, clock_mhz, macs_per_image):
    """Images/s if every multiplier in use did one MAC every cycle at the core clock."""
    return multipliers * clock_mhz * 1e6 / macs_per_image


def _float_accuracy(model, images, labels):
    from .models import load_float_net, load_model
    from .train import accuracy

    return {"accuracy": accuracy(load_model(model), images, labels,
                                 load_float_net(model).pixel_scale), "images": len(images)}


def _golden_accuracy(model, bits, method, calibration, images, labels):
    from .golden import classify
    from .quantize import QuantConfig, quantize_model

    qmodel, used = quantize_model(model, QuantConfig(weight_bits=bits), calibration, method)
    classes, _ = classify(qmodel, images.reshape(len(images), *qmodel.input_shape))
    return {"accuracy": float(np.mean(classes == labels)), "method": used,
            "images": len(images)}


def _cpu_baselines(model, calibration, images):
    import keras

    from .golden import classify
    from .models import load_float_net, load_model
    from .quantize import QuantConfig, quantize_model

    keras_model = load_model(model)
    x = (images.reshape(len(images), *keras_model.input_shape[1:]).astype(np.float32)
         * np.float32(load_float_net(model).pixel_scale))
    keras_model.predict(x[:256], batch_size=256, verbose=0)  # warm up (graph tracing)
    rates = {}
    for batch, count in ((1, 300), (256, len(x))):
        start = time.perf_counter()
        keras_model.predict(x[:count], batch_size=batch, verbose=0)
        rates[f"keras_batch{batch}"] = count / (time.perf_counter() - start)
    qmodel, _ = quantize_model(model, QuantConfig(weight_bits=4), calibration)
    start = time.perf_counter()
    classify(qmodel, images.reshape(len(images), *qmodel.input_shape))
    rates["golden_numpy_4b"] = len(images) / (time.perf_counter() - start)
    return {"images_per_second": rates, "keras": keras.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def _rtl(model, bits, board, images, data, jobs, scratch):
    out = scratch / f"rtl-{model}-{bits}b.json"
    out.unlink(missing_ok=True)  # the bench's own scratch file: a stale one must not be read
    code, error = _run(["sim.regress", "--model", model, "--bits", str(bits), "--images",
                        str(images), "--jobs", str(jobs), "--board", board, "--json", str(out),
                        *(["--data", data] if data else [])], out.with_suffix(".log"))
    if not out.is_file():
        raise UserError(f"sim.regress {model} {bits}b failed: {error or f'exit {code}'} "
                        f"(see {out.with_suffix('.log')})")
    summary = json.loads(out.read_text())
    keys = ("images", "mismatches", "rtl_accuracy", "golden_accuracy", "cycles_per_image",
            "cycles_per_image_predicted", "sim_images_per_second", "seconds", "jobs",
            "method")
    return {key: summary[key] for key in keys}


def _hardware(model, bits, board, data, scratch):
    out = scratch / f"{model}-{bits}b-{board}"
    start = time.monotonic()
    code, error = _run(["hw.build", "--model", model, "--bits", str(bits), "--board", board,
                        "--out", str(out), *(["--data", data] if data else [])],
                       scratch / f"{model}-{bits}b-{board}.log")
    seconds = time.monotonic() - start
    if code:
        return {"fits": False, "error": error or f"hw.build exited {code}",
                "build_seconds": seconds}
    report = json.loads((out / "report.json").read_text())
    keys = ("device", "luts", "luts_available", "ffs", "ffs_available", "brams",
            "brams_available", "dsps", "dsps_available", "fmax_mhz", "clock_mhz",
            "cycles_per_image", "macs_per_image", "multipliers", "mac_efficiency",
            "images_per_second", "timing_met", "fold")
    result = {"fits": True, "build_seconds": seconds, **{key: report[key] for key in keys}}
    result["ceiling_images_per_second"] = ceiling(report["multipliers"], report["clock_mhz"],
                                                  report["macs_per_image"])
    return result


def _percent(value):
    return "–" if value is None else f"{100 * value:.2f}"


def _clock_note(hw):
    """How the clock of a stored build was made (builds before the PLL ran at the oscillator)."""
    if "timing_met" not in hw:
        return ", oscillator"
    return "" if hw["timing_met"] else ", timing NOT met"


def render_markdown(results, models, bits_list, boards, command):
    """The results page from ``results`` (keys like ``hw/lenet5/4/ulx3s-85f``; missing
    ones show as ``–`` and are listed at the end)."""
    get = results.get

    lines = [f"<!-- {marker('sw.bench')}: regenerate, do not edit -->", "# Results", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}; every number below was "
             f"measured by that run (or an earlier run of it, resumed) on this 2-core machine.",
             "Accuracy is on the 10,000 real MNIST test images; RTL accuracy on the first "
             "images of that set through the generated Verilog (Verilator).", "",
             "## Accuracy (%)", "",
             "| model | float | bits | post-training | QAT | RTL (images, mismatches) |",
             "|---|---|---|---|---|---|"]
    for model in models:
        float_ = get(f"float/{model}")
        for bits in bits_list:
            ptq = get(f"golden/{model}/{bits}/ptq")
            qat = get(f"golden/{model}/{bits}/qat")
            rtl = get(f"rtl/{model}/{bits}")
            rtl_text = "–" if rtl is None else (f"{_percent(rtl['rtl_accuracy'])} "
                                               f"({rtl['images']}, {rtl['mismatches']})")
            lines.append(f"| {model} | {_percent(float_ and float_['accuracy'])} | {bits} | "
                         f"{_percent(ptq and ptq['accuracy'])} | "
                         f"{_percent(qat and qat['accuracy'])} | {rtl_text} |")
    lines += ["", "QAT is empty where no quantization-aware trained model is shipped for "
              "those bits; the RTL column uses what `hw.build` uses (QAT where shipped).", "",
              "## Hardware", "",
              "| model | bits | board | LUT | FF | BRAM | DSP | Fmax MHz | cycles/image | "
              "images/s at the core clock (clock) | ceiling | MAC efficiency | build s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        for bits in bits_list:
            for board in boards:
                hw = get(f"hw/{model}/{bits}/{board}")
                if hw is None:
                    continue
                if not hw["fits"]:
                    lines.append(f"| {model} | {bits} | {board} | does not fit: "
                                 f"{hw['error'].removeprefix('error: ')} ||||||||||")
                    continue
                lines.append(
                    f"| {model} | {bits} | {board} | {hw['luts']}/{hw['luts_available']} | "
                    f"{hw['ffs']} | {hw['brams']}/{hw['brams_available']} | "
                    f"{hw['dsps']}/{hw['dsps_available']} | {hw['fmax_mhz']:.1f} | "
                    f"{hw['cycles_per_image']} | {hw['images_per_second']:,.0f} "
                    f"({hw['clock_mhz']:.1f} MHz{_clock_note(hw)}) | "
                    f"{hw['ceiling_images_per_second']:,.0f} | {hw['mac_efficiency']:.3f} | "
                    f"{hw['build_seconds']:.0f} |")
    lines += ["", "Ceiling: images/s if every multiplier in use (DSP and LUT MAC lanes) did "
              "one MAC per cycle at the core clock, `lanes x clock / MACs per image`; MAC "
              "efficiency is the measured images/s over that ceiling, "
              "`MACs / (lanes x cycles per image)`.",
              "", "## CPU baselines (this machine)", "",
              "| model | Keras predict, batch 1 | Keras predict, batch 256 | "
              "numpy golden model (4 bit) |", "|---|---|---|---|"]
    for model in models:
        cpu = get(f"cpu/{model}")
        if cpu is not None:
            rates = cpu["images_per_second"]
            lines.append(f"| {model} | {rates['keras_batch1']:,.0f} | "
                         f"{rates['keras_batch256']:,.0f} | {rates['golden_numpy_4b']:,.0f} |")
    keras = next((results[f"cpu/{model}"]["keras"] for model in models
                  if results.get(f"cpu/{model}")), "?")
    lines += ["", f"images/s; Keras {keras} on {os.cpu_count()} cores.", "", "## Plots", "",
              "![accuracy against bits](results/accuracy.png)", "",
              "![images/s and LUTs against bits](results/hardware.png)", ""]
    missing = sorted(key for key, value in results.items() if value is None)
    if missing:
        lines += ["## Not measured yet", "", "This page was written from stored measurements "
                  "(`--stored-only` or an interrupted sweep); run the command again to measure: "
                  + ", ".join(f"`{key}`" for key in missing) + ".", ""]
    return "\n".join(lines)


def _plots(results, models, bits_list, boards, out):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    get = results.get

    figure, axes = pyplot.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        float_ = get(f"float/{model}")
        if float_:
            axis.axhline(100 * float_["accuracy"], color="gray", linestyle="--", label="float")
        for method, symbol in (("ptq", "o"), ("qat", "s")):
            points = [(bits, get(f"golden/{model}/{bits}/{method}")) for bits in bits_list]
            points = [(bits, 100 * e["accuracy"]) for bits, e in points if e]
            if points:
                axis.plot(*zip(*points, strict=True), marker=symbol,
                          label="post-training" if method == "ptq" else "QAT")
        axis.set(title=model, xlabel="bits (weights = activations)", ylabel="accuracy (%)",
                 xticks=bits_list)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "accuracy.png", dpi=100)
    pyplot.close(figure)

    figure, axes = pyplot.subplots(2, len(boards), figsize=(5 * len(boards), 7), squeeze=False)
    for column, board in enumerate(boards):
        for model in models:
            points = [(bits, get(f"hw/{model}/{bits}/{board}")) for bits in bits_list]
            points = [(bits, e) for bits, e in points if e and e["fits"]]
            if not points:
                continue
            bits = [b for b, _ in points]
            axes[0][column].plot(bits, [e["images_per_second"] for _, e in points],
                                 marker="o", label=model)
            axes[1][column].plot(bits, [e["luts"] for _, e in points], marker="o", label=model)
        axes[0][column].set(title=board, ylabel="images/s at the core clock", yscale="log",
                            xticks=bits_list)
        axes[1][column].set(xlabel="bits", ylabel="LUTs", xticks=bits_list)
        for axis in axes[:, column]:
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend()
    figure.tight_layout()
    figure.savefig(out / "hardware.png", dpi=100)
    pyplot.close(figure)


def _csv(text, what, convert=str):
    values = [convert(v.strip()) for v in text.split(",") if v.strip()]
    if not values:
        raise UserError(f"{what} is empty")
    return values


@cli_main
def main(argv=None):
    from hw.boards import BOARDS, get_board

    from .data import load_test, load_train, parse_data_arg
    from .models import model_path
    from .quantize import check_bits

    parser = argparse.ArgumentParser(prog="python -m sw.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="lenet5,tiny_cnn")
    parser.add_argument("--bits", default="1,2,4,8", help="bit widths (weights = activations)")
    parser.add_argument("--boards", default="ulx3s-85f,icebreaker",
                        help=f"boards to build for ({', '.join(BOARDS)})")
    parser.add_argument("--rtl-images", type=int, default=200,
                        help="test images through the RTL per model and bit width (0: skip)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--out", default="docs/results",
                        help="writes OUT.md, OUT/results.json and OUT/*.png")
    parser.add_argument("--no-build", action="store_true", help="skip the hardware builds")
    parser.add_argument("--force", action="store_true", help="measure everything again")
    parser.add_argument("--stored-only", action="store_true",
                        help="measure nothing; write the page from what is stored")
    args = parser.parse_args(argv)
    models = _csv(args.models, "--models")
    for model in models:
        if not model_path(model).is_file():
            raise UserError(f"model {model!r}: no file {model_path(model)}")
    # Measured in the order given (the one that matters most first), shown sorted.
    order = list(dict.fromkeys(_csv(args.bits, "--bits", lambda v: check_bits(v, "--bits"))))
    bits_list = sorted(order)
    boards = _csv(args.boards, "--boards")
    for board in boards:
        get_board(board)
    if args.rtl_images < 0 or args.jobs < 1:
        raise UserError("--rtl-images must be >= 0 and --jobs >= 1")
    if args.force and args.stored_only:
        raise UserError("--force and --stored-only contradict each other")
    # The results folder is a store this command keeps adding to: it must be new, empty or
    # an earlier sw.bench's, and so must the page beside it.
    out = prepare_dir(args.out, "sw.bench", legacy=("results.json",))
    page = prepare_file(out.with_suffix(".md"), "sw.bench", option="--out")
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text(marker("sw.bench") + "\n")
    store = Store(out / "results.json", force=args.force, stored_only=args.stored_only)
    scratch = ROOT / "build" / "bench"
    images, labels = load_test(args.data)
    calibration = load_train(args.data)[0][:1000]
    command = "python -m sw.bench " + " ".join(argv if argv is not None else sys.argv[1:])

    # Cheap measurements first, then builds, then RTL samples: a sweep stopped early has the
    # whole accuracy table and the hardware of the first models.
    steps = [("float", model, None, None) for model in models]
    steps += [("golden", model, bits, None) for model in models for bits in order]
    if not args.no_build:
        steps += [("hw", model, bits, board) for bits in order for model in models
                  for board in boards]
    if args.rtl_images:
        steps += [("rtl", model, bits, boards[0]) for bits in order for model in models]
    results = {}  # this sweep's measurements, keyed without the fingerprint
    for number, (kind, model, bits, board) in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {kind} {model}" + (f" {bits}-bit" if bits else "") +
              (f" on {board}" if board else ""), file=sys.stderr, flush=True)
        tag = _fingerprint(model, bits)
        if kind == "float":
            results[f"float/{model}"] = store.measure(
                f"float/{model}/{tag}", "float accuracy",
                lambda m=model: _float_accuracy(m, images, labels))
            results[f"cpu/{model}"] = store.measure(
                f"cpu/{model}/{tag}", "CPU baselines",
                lambda m=model: _cpu_baselines(m, calibration, images))
        elif kind == "golden":
            for method in ("ptq", "qat"):
                key = f"golden/{model}/{bits}/{method}"
                try:
                    results[key] = store.measure(
                        f"{key}/{tag}", f"golden accuracy ({method})",
                        lambda m=model, b=bits, t=method: _golden_accuracy(
                            m, b, t, calibration, images, labels))
                except UserError as error:  # no QAT model for these bits
                    print(f"  {method}: {error}", file=sys.stderr)
        elif kind == "hw":
            results[f"hw/{model}/{bits}/{board}"] = store.measure(
                f"hw/{model}/{bits}/{board}/{tag}", "build",
                lambda m=model, b=bits, x=board: _hardware(m, b, x, args.data, scratch))
        else:
            results[f"rtl/{model}/{bits}"] = store.measure(
                f"rtl/{model}/{bits}/{tag}", "RTL sample",
                lambda m=model, b=bits, x=board: _rtl(m, b, x, args.rtl_images, args.data,
                                                      args.jobs, scratch))
    _plots(results, models, bits_list, boards, out)
    markdown = render_markdown(results, models, bits_list, boards, command)
    write_file(page, markdown)
    print(markdown)
    print(f"wrote {page}, {out / 'results.json'}, {out / 'accuracy.png'}, "
          f"{out / 'hardware.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
