"""Sweep models x bit widths x boards and write the results page.

Command line::

    python -m sim.bench [--models lenet5,tiny_cnn] [--bits 1,2,4,8]
        [--boards ulx3s-85f,icebreaker] [--rtl-images 200] [--rtl-idle 0.2] [--rtl-stall 0.2]
        [--netlist MODEL:BITS:BOARD:IMAGES,...] [--no-formal] [--random-models 100]
        [--data DIR] [--out docs/results] [--no-build] [--force | --stored-only]

Measures, for every combination: float accuracy (Keras) and integer golden accuracy (post-
training and, where a model was trained for it, quantization-aware) on the whole test set;
an RTL regression of the first ``--rtl-images`` test images through the generated Verilog
(``python -m sim.regress``, with random input gaps and output backpressure): mismatches, RTL
and golden accuracy, measured and predicted cycles per image, simulator speed; resources,
Fmax, cycles per image, images/s and MAC efficiency from a real build (``python -m
hw.build``); the proofs beyond RTL simulation (:mod:`sim.bench_proofs`: gate-level
regressions of synthesized netlists, the formal stream proofs, the random-model sweep); and
the CPU baselines a user would otherwise run, on this machine. Writes
``<out>.md``, and ``<out>/results.json`` and PNG plots.

Every measurement is stored as soon as it is made, keyed by what it depends on: the model
files' hashes and, for RTL regressions, builds and board-top benches, the generated design
itself and the code that measures it (:mod:`sim.design_keys`), and the settings. An
interrupted sweep resumes where it stopped; a retrained model or a changed design is
measured again, while a change to the generator that leaves a design's Verilog identical
keeps its measurements. Builds skipped with ``--no-build`` (and anything not measured with
``--stored-only``) are shown from the newest stored measurement, marked stale when it
measured another design. Exits 1, after writing the page, when an RTL regression on it found
mismatches or failed.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from hw.boards import BOARDS, get_board
from sw.data import load_test, load_train, parse_data_arg
from sw.errors import UserError, cli_main
from sw.golden import classify
from sw.models import load_float_net, load_model, model_path
from sw.outputs import STAMP, marker, prepare_dir, prepare_file, write_file
from sw.paths import ROOT
from sw.quantize import (
    CALIBRATION_IMAGES,
    QuantConfig,
    check_bits,
    parse_layer_bits,
    quantize_model,
)
from sw.train import accuracy
from sw.trained import qat_model_path, sidecar_path

from .bench_methods import (
    COLUMNS,
    COMPARE_BITS,
    MIXED,
    measure_method,
    method_key,
    methods_section,
    mixed_key,
    plot_methods,
)
from .bench_proofs import (
    FORMAL_SOURCES,
    NETLIST_ROWS,
    RANDOM_SOURCES,
    formal_section,
    netlist_rows,
    netlist_section,
    random_section,
    run_formal,
    run_netlist,
    run_project,
    run_random,
    sources_key,
)
from .design_keys import DesignKeys, core_hash

__all__ = ["HARDWARE_SOURCES", "Store", "ceiling", "hardware_fingerprint", "main",
           "render_markdown", "rtl_check"]

VERSION = 1
#: Repeat counts of the board top's bench requests (``sim.board_bench``).
BOARD_REPEATS = (1, 2, 100)
#: The files that decide the generated designs (globs relative to the project): the design
#: hashes of :mod:`sim.design_keys` are remembered in the store under their hash, and made
#: again (a few seconds a design) only when one of them changed.
HARDWARE_SOURCES = ("hw/*.py", "sw/*.py", "sim/core.py", "sim/regress.py",
                    "sim/design_keys.py")


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
        result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.entries[key] = result
        self.save()
        return result

    def newest(self, keys):
        """A copy of the newest stored entry among ``keys`` (``None`` if none is stored).

        Entries from before ``measured_at`` was recorded count as the oldest.
        """
        stored = [(self.entries[key].get("measured_at", ""), key) for key in keys
                  if key in self.entries]
        return dict(self.entries[max(stored)[1]]) if stored else None

    def save(self):
        """Write every entry, atomically (a reader never sees half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"version": VERSION, "entries": self.entries},
                                        indent=1, sort_keys=True) + "\n")
        os.replace(temporary, self.path)


def _fingerprint(model, bits):
    """A hash of the files that decide ``model``'s integer weights at ``bits``."""

    digest = hashlib.sha256()
    paths = [model_path(model)]
    if bits is not None and qat_model_path(model, bits, bits).is_file():
        qat = qat_model_path(model, bits, bits)
        paths += [qat, sidecar_path(qat)]
    for path in paths:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def hardware_fingerprint(root=ROOT):
    """A hash of the hardware generator's source (:data:`HARDWARE_SOURCES` under ``root``).

    A change to any of these files can change a generated design, so the design hashes
    remembered for this one are made again.

    Parameters
    ----------
    root : Path
        The project folder.

    Returns
    -------
    str
        12 hex digits.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted({path for pattern in HARDWARE_SOURCES for path in root.glob(pattern)}):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def ceiling(multipliers, clock_mhz, macs_per_image):
    """Images/s if every multiplier in use did one MAC every cycle at the core clock."""
    return multipliers * clock_mhz * 1e6 / macs_per_image


def _float_accuracy(model, images, labels):

    return {"accuracy": accuracy(load_model(model), images, labels,
                                 load_float_net(model).pixel_scale), "images": len(images)}


def _golden_accuracy(model, bits, method, calibration, images, labels):

    qmodel, used = quantize_model(model, QuantConfig(weight_bits=bits), calibration, method)
    classes, _ = classify(qmodel, images.reshape(len(images), *qmodel.input_shape))
    return {"accuracy": float(np.mean(classes == labels)), "method": used,
            "images": len(images)}


def _cpu_baselines(model, calibration, images):
    import keras  # heavy (TensorFlow), and only the CPU baseline needs it


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


def _rtl(model, bits, board, images, idle, stall, data, jobs, scratch):
    """``python -m sim.regress`` on the first ``images`` test images; its summary.

    A regression that found mismatches is a measurement like any other (its summary names the
    first mismatching image and layer); one that could not run raises :class:`UserError`.
    """
    out = scratch / f"rtl-{model}-{bits}b.json"
    out.unlink(missing_ok=True)  # the bench's own scratch file: a stale one must not be read
    code, error = run_project(["sim.regress", "--model", model, "--bits", str(bits), "--images",
                        str(images), "--jobs", str(jobs), "--board", board, "--idle", str(idle),
                        "--stall", str(stall), "--json", str(out),
                        *(["--data", data] if data else [])], out.with_suffix(".log"))
    if not out.is_file():
        raise UserError(f"sim.regress {model} {bits}b failed: {error or f'exit {code}'} "
                        f"(see {out.with_suffix('.log')})")
    summary = json.loads(out.read_text())
    # Image bytes the core takes per transfer (one before folds recorded it).
    fold = summary.get("fold", {})
    pixels = fold.get("pixels", 1) if isinstance(fold, dict) and "layers" in fold else 1
    keys = ("images", "mismatches", "mismatched_images", "rtl_accuracy", "golden_accuracy",
            "cycles_per_image", "cycles_per_image_predicted", "sim_images_per_second",
            "seconds", "build_seconds", "jobs", "method", "idle", "stall", "harness",
            "first_mismatch")
    return {**{key: summary[key] for key in keys if key in summary}, "input_pixels": pixels}


def _hardware(model, bits, board, data, scratch, core):
    """``python -m hw.build``'s report, checked to be of the core keyed ``core``
    (:func:`sim.design_keys.core_hash` of its ``core.v``)."""
    out = scratch / f"{model}-{bits}b-{board}"
    start = time.monotonic()
    code, error = run_project(["hw.build", "--model", model, "--bits", str(bits), "--board", board,
                        "--out", str(out), *(["--data", data] if data else [])],
                       scratch / f"{model}-{bits}b-{board}.log")
    seconds = time.monotonic() - start
    if code:
        return {"fits": False, "error": error or f"hw.build exited {code}",
                "build_seconds": seconds}
    built = core_hash((out / "core.v").read_text())
    # A fold nextpnr could not place is folded again by hw.build: the build is still keyed by
    # the design it was asked to make (the same flow, with nextpnr's fixed seed, makes the same
    # result again), and records the core it made.
    refolds = (scratch / f"{model}-{bits}b-{board}.log").read_text().count(
        "folding again within")
    if built != core and not refolds:
        raise UserError(f"hw.build made core {built} for {model} {bits}-bit on {board}, not the "
                        f"{core} sim.design_keys made: the bench's keys no longer follow it")
    report = json.loads((out / "report.json").read_text())
    keys = ("device", "luts", "luts_available", "ffs", "ffs_available", "brams",
            "brams_available", "dsps", "dsps_available", "fmax_mhz", "clock_mhz",
            "cycles_per_image", "macs_per_image", "multipliers", "mac_efficiency",
            "images_per_second", "timing_met", "fold")
    result = {"fits": True, "build_seconds": seconds, **{key: report[key] for key in keys},
              **({"refolds": refolds, "built_core": built} if refolds else {})}
    result["ceiling_images_per_second"] = ceiling(report["multipliers"], report["clock_mhz"],
                                                  report["macs_per_image"])
    return result


def _board_bench(model, bits, board, clock_mhz, data, scratch):
    """``python -m sim.board_bench``: bench requests on the board top's RTL; its summary."""
    out = scratch / f"board-{model}-{bits}b-{board}.json"
    out.unlink(missing_ok=True)  # the bench's own scratch file: a stale one must not be read
    code, error = run_project(["sim.board_bench", "--model", model, "--bits", str(bits), "--board",
                        board, "--repeats", ",".join(map(str, BOARD_REPEATS)), "--json",
                        str(out), *(["--clock", str(clock_mhz)] if clock_mhz else []),
                        *(["--data", data] if data else [])], out.with_suffix(".log"))
    if not out.is_file():
        raise UserError(f"sim.board_bench {model} {bits}b failed: {error or f'exit {code}'} "
                        f"(see {out.with_suffix('.log')})")
    summary = json.loads(out.read_text())
    summary.pop("generator", None)
    return summary


def _board_rows(results, models, bits_list, boards):
    rows = []
    for model in models:
        for bits in bits_list:
            entry = results.get(f"board/{model}/{bits}/{boards[0]}")
            if entry is None:
                continue
            if "error" in entry:
                rows.append(f"| {model} | {bits} | {boards[0]} | failed: {entry['error']} "
                            f"|||||")
                continue
            rate = (f"{entry['images_per_second']:,.0f} ({entry['clock_mhz']:.1f} MHz)"
                    if entry.get("images_per_second") else
                    f"{entry['images_per_second_per_mhz']:,.1f} per MHz")
            counts = ", ".join(f"{n}: {count:,}" for n, count in
                               sorted(entry["counts"].items(), key=lambda item: int(item[0])))
            rows.append(f"| {model} | {bits} | {boards[0]} | {counts} | {entry['latency']} + "
                        f"(N - 1) x {entry['cycles_per_image_predicted']} | "
                        f"{rate} | {_source(entry)} | "
                        f"{'ok' if entry['passed'] else '; '.join(entry['problems'])} |")
    if not rows:
        return []
    return ["## Bench requests on the board top (RTL)", "",
            "The board's own benchmark (`python -m sim.board_bench`): the Verilog of the whole "
            "board top (UART receiver, frame parser, image buffer, feeder, core, response) "
            "under the real host driver over a simulated serial line; test image 0 in one "
            "bench request per repeat count N, each answered with the hardware's cycle count "
            "and the last result (the golden model's, checked). Check: every count is exactly "
            "the latency (N = 1) plus N - 1 predicted intervals. On-chip images/s: the "
            "longest request at the clock the first board's build runs at.", "",
            "| model | bits | board (fold) | cycles counted, by N | latency + (N - 1) x "
            "interval | on-chip images/s (clock) | design | check |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def _percent(value):
    return "–" if value is None else f"{100 * value:.2f}"


def _clock_note(hw):
    """How the clock of a stored build was made (builds before the PLL ran at the oscillator)."""
    if "timing_met" not in hw:
        return ", oscillator"
    return "" if hw["timing_met"] else ", timing NOT met"


def _source(entry):
    """The design cell of a stored RTL run, build or bench: its key, marked if stale."""
    if "design" not in entry:  # measured before designs were keyed: by the whole source
        source = entry.get("hw_source")
        return f"source `{source[:8]}` (stale)" if source else "not recorded (stale)"
    return f"`{entry['design'][:8]}`" + (" (stale)" if entry.get("stale") else "")


def _with_words(rtl, image_bytes):
    """``rtl`` with ``input_words``: the input transfers of one image."""
    return {**rtl, "input_words": image_bytes // rtl.get("input_pixels", 1)}


def _input_bound(rtl):
    """Cycles per image a source idle ``idle`` of the time allows an input-bound core."""
    words, idle = rtl.get("input_words"), rtl.get("idle")
    if not words or not idle or rtl["cycles_per_image_predicted"] != words:
        return None
    return words / (1 - idle)


def rtl_check(rtl):
    """Whether an RTL regression passed, and what the page says about it.

    Parameters
    ----------
    rtl : dict
        A stored :func:`sim.regress.regress` summary (or ``{"error": ...}``).

    Returns
    -------
    tuple
        ``(failed, text)``: ``failed`` when the RTL disagreed with the golden model or could
        not run; ``text`` says ``ok`` only when there were no mismatches, the RTL accuracy is
        the golden accuracy and the measured interval is the predicted one.
    """
    if "error" in rtl:
        return True, f"**FAILED**: {rtl['error']}"
    notes = []
    if rtl["mismatches"]:
        first = rtl.get("first_mismatch") or {}
        found = first.get("layer")
        where = "" if not isinstance(found, dict) else f", layer {found['layer']} " + ", ".join(
            f"{name} {value}" for name, value in found.get("position", {}).items())
        count = rtl["mismatches"]
        notes.append(f"**{count} MISMATCH{'ES' if count > 1 else ''}**" + (
            f" (first: image {first['image']}{where.rstrip()})" if first else ""))
    if rtl["rtl_accuracy"] != rtl["golden_accuracy"]:
        notes.append("**RTL accuracy ≠ golden**")
    measured, predicted = rtl["cycles_per_image"], rtl["cycles_per_image_predicted"]
    bound = _input_bound(rtl)
    if measured != predicted and bound and measured is not None and \
            abs(measured - bound) <= 0.01 * bound:
        # An input-bound core takes a word every cycle the source offers one: at idle p
        # that is words / (1 - p) on average, which is the interval to expect.
        return bool(rtl["mismatches"]), "; ".join(notes) or (
            f"ok (input-bound: {rtl['input_words']} words an image at a {1 - rtl['idle']:.0%} "
            f"input rate = {bound:.0f} cycles)")
    if measured != predicted:
        notes.append("**measured ≠ predicted**")
    return bool(rtl["mismatches"]), "; ".join(notes) or "ok"


def _rtl_rows(results, models, bits_list):
    rows = ["| model | bits | images | idle / stall | mismatches | RTL % | golden % | "
            "cycles/image measured | predicted | sim images/s | sim s | design | check |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        for bits in bits_list:
            rtl = results.get(f"rtl/{model}/{bits}")
            if rtl is None:
                continue
            _, check = rtl_check(rtl)
            if "error" in rtl:
                rows.append(f"| {model} | {bits} | {check} ||||||||||")
                continue
            settings = ("–" if "idle" not in rtl else
                        f"{rtl['idle']:.0%} / {rtl['stall']:.0%}")
            measured = rtl["cycles_per_image"]
            rows.append(
                f"| {model} | {bits} | {rtl['images']:,} | {settings} | {rtl['mismatches']} | "
                f"{_percent(rtl['rtl_accuracy'])} | {_percent(rtl['golden_accuracy'])} | "
                f"{'–' if measured is None else f'{measured:g}'} | "
                f"{rtl['cycles_per_image_predicted']} | {rtl['sim_images_per_second']:,.0f} | "
                f"{rtl['seconds']:.0f} | {_source(rtl)} | {check} |")
    return rows


def _accuracy_section(results, models, bits_list):
    get = results.get
    lines = ["## Accuracy (%)", "",
             "| model | float | bits | post-training | QAT | RTL (images, mismatches) |",
             "|---|---|---|---|---|---|"]
    for model in models:
        float_ = get(f"float/{model}")
        for bits in bits_list:
            ptq = get(f"golden/{model}/{bits}/ptq")
            qat = get(f"golden/{model}/{bits}/qat")
            rtl = get(f"rtl/{model}/{bits}")
            rtl_text = ("–" if rtl is None else "failed" if "error" in rtl else
                        f"{_percent(rtl['rtl_accuracy'])} ({rtl['images']:,}, "
                        f"{rtl['mismatches']})")
            lines.append(f"| {model} | {_percent(float_ and float_['accuracy'])} | {bits} | "
                         f"{_percent(ptq and ptq['accuracy'])} | "
                         f"{_percent(qat and qat['accuracy'])} | {rtl_text} |")
    return [*lines, "", "QAT is empty where no quantization-aware trained model is shipped "
            "for those bits; the RTL columns use what `hw.build` uses (QAT where shipped).", ""]


def _rtl_section(results, models, bits_list):
    rtl_rows = _rtl_rows(results, models, bits_list)
    if len(rtl_rows) <= 2:
        return []
    return ["## RTL regression", "",
            "The first test images through the generated core's Verilog (`python -m "
            "sim.regress`: Verilator, the compiled C++ testbench, the fold `hw.build` uses for "
            "the first board), with the input idle on a random fraction of cycles and the "
            "output stalled on another (idle / stall); every logit is compared with the golden "
            "model's. Cycles/image: the median steady-state interval between answers, "
            "measured, and the fold's prediction (the build report's). Sim images/s and s: the "
            "simulation alone, all jobs together. Design: the key of what was measured "
            "(`sim/design_keys.py`: the core's Verilog and the harness and golden model it ran "
            "against); a stale row measured another design and is shown from the store.", "",
            *rtl_rows, ""]


def _hardware_row(model, bits, board, hw):
    if not hw["fits"]:
        return (f"| {model} | {bits} | {board} | does not fit: "
                f"{hw['error'].removeprefix('error: ')} |||||||||| {_source(hw)} |")
    return (f"| {model} | {bits} | {board} | {hw['luts']}/{hw['luts_available']} | "
            f"{hw['ffs']} | {hw['brams']}/{hw['brams_available']} | "
            f"{hw['dsps']}/{hw['dsps_available']} | {hw['fmax_mhz']:.1f} | "
            f"{hw['cycles_per_image']} | {hw['images_per_second']:,.0f} "
            f"({hw['clock_mhz']:.1f} MHz{_clock_note(hw)}) | "
            f"{hw['ceiling_images_per_second']:,.0f} | {hw['mac_efficiency']:.3f} | "
            f"{hw['build_seconds']:.0f} | {_source(hw)}{_refolds(hw)} |")


def _refolds(hw):
    """How often ``hw.build`` folded again after nextpnr could not place a fold."""
    return f"; folded again {hw['refolds']}x (nextpnr could not place)" if hw.get(
        "refolds") else ""


def _hardware_section(results, models, bits_list, boards):
    rows = [_hardware_row(model, bits, board, results[f"hw/{model}/{bits}/{board}"])
            for model in models for bits in bits_list for board in boards
            if results.get(f"hw/{model}/{bits}/{board}") is not None]
    return ["## Hardware", "",
            "| model | bits | board | LUT | FF | BRAM | DSP | Fmax MHz | cycles/image | "
            "images/s at the core clock (clock) | ceiling | MAC efficiency | build s | "
            "design |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows,
            "", "Ceiling: images/s if every multiplier in use (DSP and LUT MAC lanes) did one "
            "MAC per cycle at the core clock, `lanes x clock / MACs per image`; MAC efficiency "
            "is the measured images/s over that ceiling, `MACs / (lanes x cycles per image)`. "
            "Builds are shown from the store when skipped (`--no-build`); a stale one built "
            "another design (its board top's RTLIL, constraints and scripts, or the flow in "
            "`hw/build.py`, `hw/toolchain.py`, `hw/folding.py`).", ""]


def _cpu_section(results, models):
    lines = ["## CPU baselines (this machine)", "",
             "| model | Keras predict, batch 1 | Keras predict, batch 256 | "
             "numpy golden model (4 bit) |", "|---|---|---|---|"]
    for model in models:
        cpu = results.get(f"cpu/{model}")
        if cpu is not None:
            rates = cpu["images_per_second"]
            lines.append(f"| {model} | {rates['keras_batch1']:,.0f} | "
                         f"{rates['keras_batch256']:,.0f} | {rates['golden_numpy_4b']:,.0f} |")
    keras = next((results[f"cpu/{model}"]["keras"] for model in models
                  if results.get(f"cpu/{model}")), "?")
    return [*lines, "", f"images/s; Keras {keras} on {os.cpu_count()} cores.", ""]


def render_markdown(results, models, bits_list, boards, command, netlist=(), compare=()):
    """The results page.

    Parameters
    ----------
    results : dict
        Measurements keyed like ``hw/lenet5/4/ulx3s-85f`` and ``rtl/lenet5/4`` (``None``:
        not measured; shown as ``–`` and listed at the end).
    models, bits_list, boards : list
        What the page shows, in order.
    command : str
        The command line that made the page.
    netlist : list
        The gate-level rows, ``(model, bits, board, images)`` (``netlist/...`` results).
    compare : list
        The models whose quantization methods are compared (``method/...`` results).

    Returns
    -------
    str
        Markdown.
    """
    get = results.get
    rtl_images = sorted({get(f"rtl/{m}/{b}")["images"] for m in models for b in bits_list
                         if get(f"rtl/{m}/{b}") and "images" in get(f"rtl/{m}/{b}")})
    lines = [f"<!-- {marker('sim.bench')}: regenerate, do not edit -->", "# Results", "",
             f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}; every number below was "
             f"measured by that run (or an earlier run of it, resumed) on this 2-core machine.",
             "Accuracy is on the 10,000 real MNIST test images; RTL accuracy on the first "
             + (" or ".join(f"{n:,}" for n in rtl_images) or "N") + " images of that set "
             "through the generated Verilog (Verilator).", "",
             *_accuracy_section(results, models, bits_list),
             *methods_section(results, compare,
                              {model: results.get(f"float/{model}") for model in compare}),
             *_rtl_section(results, models, bits_list),
             *_board_rows(results, models, bits_list, boards),
             *netlist_section(results, netlist, _source, rtl_check),
             *formal_section(results.get("formal"), _source),
             *random_section(results.get("random"), _source),
             *_hardware_section(results, models, bits_list, boards),
             *_cpu_section(results, models),
             "## Plots", "", "![accuracy against bits](results/accuracy.png)", "",
             "![images/s and LUTs against bits](results/hardware.png)", "",
             *(["![accuracy by quantization method](results/methods.png)", ""]
               if compare else [])]
    missing = sorted(key for key, value in results.items() if value is None)
    if missing:
        lines += ["## Not measured yet", "", "This page was written from stored measurements "
                  "(`--stored-only` or an interrupted sweep); run the command again to measure: "
                  + ", ".join(f"`{key}`" for key in missing) + ".", ""]
    return "\n".join(lines)


def _plots(results, models, bits_list, boards, out):
    import matplotlib  # only the plots need it

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


def _generated(store, prefix, design, suffix, what, function, measure):
    """A measurement of the design keyed ``design``, or a stored one of another design.

    Measured (or taken from the store) under ``prefix/<design><suffix>``. When not measuring
    (``--no-build`` for builds, ``--stored-only``) and nothing is stored for this design, the
    newest entry under ``prefix`` is shown instead, marked ``stale``. Returns ``None`` when
    there is none.
    """
    key = f"{prefix}/{design}{suffix}"
    if measure and not store.stored_only:
        return store.measure(key, what, lambda: {**function(), "design": design})
    if key in store.entries:
        print(f"  {what}: stored", file=sys.stderr)
        return store.entries[key]
    # Under the prefix: keyed by a design, by the whole generator source (before designs were
    # keyed), or by nothing more (before that).
    entry = store.newest([k for k in store.entries if k == prefix or k.startswith(prefix + "/")])
    if entry is None:
        print(f"  {what}: {'not measured yet' if measure else 'none stored'}", file=sys.stderr)
        return None
    print(f"  {what}: shown from the store (design {entry.get('design', 'not recorded')}, "
          f"now {design})", file=sys.stderr)
    return {**entry, "stale": True}


def _parser():
    parser = argparse.ArgumentParser(prog="python -m sim.bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="lenet5,tiny_cnn")
    parser.add_argument("--bits", default="1,2,4,8", help="bit widths (weights = activations)")
    parser.add_argument("--boards", default="ulx3s-85f,icebreaker",
                        help=f"boards to build for ({', '.join(BOARDS)}); the RTL regression "
                             f"folds the core for the first")
    parser.add_argument("--rtl-images", type=int, default=200,
                        help="test images through the RTL per model and bit width (0: skip)")
    parser.add_argument("--rtl-idle", type=float, default=0.2,
                        help="probability that the RTL's input is idle on a cycle "
                             "(sim.regress --idle; default 0.2)")
    parser.add_argument("--rtl-stall", type=float, default=0.2,
                        help="probability that the RTL's output is stalled on a cycle "
                             "(sim.regress --stall; default 0.2)")
    parser.add_argument("--board-bench", default="lenet5,tiny_cnn",
                        help="models whose bench requests run on the board top's RTL, at 4 "
                             "bits (or the first --bits) for the first board; '' for none")
    parser.add_argument("--compare", default="lenet5,tiny_cnn", metavar="MODELS",
                        help="models whose quantization methods are compared at "
                             f"{','.join(map(str, COMPARE_BITS))} bits, with the mixed-"
                             "precision rows; '' for none (default: %(default)s)")
    parser.add_argument("--netlist", default=NETLIST_ROWS,
                        help="gate-level rows, MODEL:BITS:BOARD:IMAGES[,...]: the core folded "
                             "for BOARD, synthesized for its FPGA family and simulated "
                             "(sim.regress --netlist); '' for none (default: %(default)s)")
    parser.add_argument("--formal", action=argparse.BooleanOptionalAction, default=True,
                        help="run the formal stream proofs (tests/formal) and list them")
    parser.add_argument("--random-models", type=int, default=100, metavar="N",
                        help="random Keras models drawn through the RTL and against Keras "
                             "(tests/test_random_models.py's sweeps; 0: none; default 100)")
    parser.add_argument("--random-seed", type=int, default=0,
                        help="the random-model sweep's seed (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", default=None, help=parse_data_arg.__doc__)
    parser.add_argument("--out", default="docs/results",
                        help="writes OUT.md, OUT/results.json and OUT/*.png")
    parser.add_argument("--no-build", action="store_true",
                        help="skip the hardware builds (stored ones are still shown)")
    parser.add_argument("--force", action="store_true", help="measure everything again")
    parser.add_argument("--stored-only", action="store_true",
                        help="measure nothing; write the page from what is stored")
    return parser


def _checked(args):
    """``(models, bits in measuring order, boards)``; every bad argument a :class:`UserError`
    before anything is measured."""
    models = _csv(args.models, "--models")
    for model in models:
        if not model_path(model).is_file():
            raise UserError(f"model {model!r}: no file {model_path(model)}")
    # Measured in the order given (the one that matters most first), shown sorted.
    order = list(dict.fromkeys(_csv(args.bits, "--bits", lambda v: check_bits(v, "--bits"))))
    boards = _csv(args.boards, "--boards")
    for board in boards:
        get_board(board)
    if Path(args.out).suffix == ".md":
        raise UserError(f"--out {args.out}: names the results folder, and the page is written "
                        f"beside it as FOLDER.md; drop the .md")
    if args.rtl_images < 0 or args.jobs < 1:
        raise UserError("--rtl-images must be >= 0 and --jobs >= 1")
    if not 0 <= args.rtl_idle < 1 or not 0 <= args.rtl_stall < 1:
        raise UserError("--rtl-idle and --rtl-stall must be at least 0 and below 1")
    if args.force and args.stored_only:
        raise UserError("--force and --stored-only contradict each other")
    if args.random_models < 0:
        raise UserError("--random-models must be >= 0")
    args.compare_models = _csv(args.compare, "--compare") if args.compare else []
    for model in args.compare_models:
        if not model_path(model).is_file():
            raise UserError(f"--compare model {model!r}: no file {model_path(model)}")
    args.netlist_rows = netlist_rows(args.netlist)
    for model, *_ in args.netlist_rows:
        if not model_path(model).is_file():
            raise UserError(f"--netlist model {model!r}: no file {model_path(model)}")
    return models, order, boards


def _steps(models, order, boards, args):
    """Cheap measurements first, then builds, then RTL runs: a sweep stopped early has the
    whole accuracy table and the hardware of the first models."""
    steps = [("float", model, None, None) for model in models]
    steps += [("golden", model, bits, None) for model in models for bits in order]
    steps += [("hw", model, bits, board) for bits in order for model in models
              for board in boards]
    if args.rtl_images:
        steps += [("rtl", model, bits, boards[0]) for bits in order for model in models]
    bench_bits = 4 if 4 in order else order[0]
    steps += [("board", model, bench_bits, boards[0]) for model in models
              if model in args.board_bench.split(",")]
    steps += [("method", model, bits, None) for model in args.compare_models
              for bits in COMPARE_BITS]
    steps += [("mixed", model, bits, spec) for model, bits, spec in MIXED
              if model in args.compare_models]
    steps += [("netlist", model, bits, board) for model, bits, board, _ in args.netlist_rows]
    steps += [("formal", None, None, None)] if args.formal else []
    steps += [("random", None, None, None)] if args.random_models else []
    return steps


class _Sweep:
    """One run's store, data and settings, and how each kind of step is measured into
    :attr:`results` (keyed without the fingerprints)."""

    def __init__(self, args, store, scratch):
        self.args, self.store, self.scratch = args, store, scratch
        self.images, self.labels = load_test(args.data)
        self.calibration = load_train(args.data)[0][:CALIBRATION_IMAGES]
        self.settings = f"/n{args.rtl_images}-i{args.rtl_idle:g}-s{args.rtl_stall:g}"
        self.keys = DesignKeys(args.data)
        self.results = {}

    def measure(self, kind, model, bits, board):
        tag = _fingerprint(model, bits) if model else None
        getattr(self, f"_{kind}")(model, bits, board, tag)

    def _design(self, kind, model, bits, board, tag):
        """The key of ``kind`` (``rtl``, ``build``, ``board_bench``) of a design, its design
        hashes remembered in the store for the generator source they were made from."""
        key = f"design/{model}/{bits}/{board}/{tag}/{hardware_fingerprint()}"
        if key not in self.store.entries:
            print(f"  design keys of {model} {bits}-bit for {board} ...", file=sys.stderr,
                  flush=True)
            self.store.entries[key] = self.keys.design(model, bits, board)
            self.store.save()
        self.keys.remember(model, bits, board, self.store.entries[key])
        return getattr(self.keys, kind)(model, bits, board)

    def _float(self, model, bits, board, tag):
        self.results[f"float/{model}"] = self.store.measure(
            f"float/{model}/{tag}", "float accuracy",
            lambda: _float_accuracy(model, self.images, self.labels))
        self.results[f"cpu/{model}"] = self.store.measure(
            f"cpu/{model}/{tag}", "CPU baselines",
            lambda: _cpu_baselines(model, self.calibration, self.images))

    def _golden(self, model, bits, board, tag):
        for method in ("ptq", "qat"):
            key = f"golden/{model}/{bits}/{method}"
            try:
                self.results[key] = self.store.measure(
                    f"{key}/{tag}", f"golden accuracy ({method})",
                    lambda method=method: _golden_accuracy(
                        model, bits, method, self.calibration, self.images, self.labels))
            except UserError as error:  # no QAT model for these bits
                print(f"  {method}: {error}", file=sys.stderr)

    def _hw(self, model, bits, board, tag):
        key = f"hw/{model}/{bits}/{board}/{tag}"
        design = self._design("build", model, bits, board, tag)
        core = self.keys.design(model, bits, board)["core"]
        entry = _generated(self.store, key, design, "", "build",
                           lambda: _hardware(model, bits, board, self.args.data, self.scratch,
                                             core),
                           measure=not self.args.no_build)
        if entry is not None or not self.args.no_build:  # skipped builds are not "missing"
            self.results[f"hw/{model}/{bits}/{board}"] = entry

    def _board(self, model, bits, board, tag):
        key = f"board/{model}/{bits}/{board}"
        clock = (self.results.get(f"hw/{model}/{bits}/{board}") or {}).get("clock_mhz")
        try:
            self.results[key] = _generated(
                self.store, f"{key}/{tag}", self._design("board_bench", model, bits, board, tag),
                f"/c{clock or 0:g}", "board-top bench",
                lambda: _board_bench(model, bits, board, clock, self.args.data, self.scratch),
                measure=True)
        except UserError as error:  # not stored: the next run tries again
            print(f"  error: {error}", file=sys.stderr)
            self.results[key] = {"error": str(error)}

    def _rtl(self, model, bits, board, tag):
        args, key = self.args, f"rtl/{model}/{bits}"
        words = int(np.prod(self.images.shape[1:]))
        try:
            self.results[key] = _generated(
                self.store, f"{key}/{board}/{tag}", self._design("rtl", model, bits, board, tag),
                self.settings, "RTL regression",
                lambda: _with_words(_rtl(model, bits, board, args.rtl_images, args.rtl_idle,
                                         args.rtl_stall, args.data, args.jobs, self.scratch),
                                    words),
                measure=True)
        except UserError as error:  # not stored: the next run tries again
            print(f"  error: {error}", file=sys.stderr)
            self.results[key] = {"error": str(error)}
        if self.results[key] is not None:
            print(f"  {rtl_check(self.results[key])[1]}", file=sys.stderr)

    def _method(self, model, bits, board, tag):
        for column, *_ in COLUMNS:
            key = f"method/{model}/{bits}/{column}"
            self.results[key] = self.store.measure(
                f"{key}/{method_key(model, bits, column)}", column,
                lambda column=column: measure_method(model, bits, column, self.calibration,
                                                     self.images, self.labels))

    def _mixed(self, model, bits, spec, tag):
        for column in ("ptq", "dual-copy (QAT)"):
            key = f"mixed/{model}/{bits}/{spec}/{column}"
            self.results[key] = self.store.measure(
                f"{key}/{mixed_key(model, bits, spec, column)}", column,
                lambda column=column: measure_method(model, bits, column, self.calibration,
                                                     self.images, self.labels,
                                                     parse_layer_bits(spec)))

    def _netlist(self, model, bits, board, tag):
        args, key = self.args, f"netlist/{model}/{bits}/{board}"
        images = next(n for m, b, d, n in args.netlist_rows if (m, b, d) == (model, bits, board))
        try:
            self.results[key] = _generated(
                self.store, f"{key}/{tag}", self._design("netlist", model, bits, board, tag),
                f"/n{images}-i{args.rtl_idle:g}-s{args.rtl_stall:g}", "gate-level regression",
                lambda: _with_words(run_netlist(model, bits, board, images, args.rtl_idle,
                                                args.rtl_stall, args.data, args.jobs,
                                                self.scratch),
                                    int(np.prod(self.images.shape[1:]))),
                measure=True)
        except UserError as error:  # not stored: the next run tries again
            print(f"  error: {error}", file=sys.stderr)
            self.results[key] = {"error": str(error)}

    def _formal(self, model, bits, board, tag):
        try:
            self.results["formal"] = _generated(
                self.store, "formal", sources_key(FORMAL_SOURCES), "", "formal proofs",
                lambda: run_formal(self.scratch), measure=True)
        except UserError as error:  # not stored: the next run tries again
            print(f"  error: {error}", file=sys.stderr)
            self.results["formal"] = {"error": str(error)}

    def _random(self, model, bits, board, tag):
        args = self.args
        try:
            self.results["random"] = _generated(
                self.store, "random", sources_key(RANDOM_SOURCES),
                f"/n{args.random_models}-s{args.random_seed}", "random-model sweep",
                lambda: run_random(args.random_models, args.random_seed, self.scratch),
                measure=True)
        except UserError as error:  # not stored: the next run tries again
            print(f"  error: {error}", file=sys.stderr)
            self.results["random"] = {"error": str(error)}


def _failed(key, value):
    """Whether the result stored under ``key`` shows the hardware disagreeing with the golden
    model, a proof failing, or a run that did not happen."""
    kind = key.split("/")[0]
    if kind in ("rtl", "netlist"):
        return rtl_check(value)[0]
    if kind == "board":
        return not value.get("passed")
    if kind in ("formal", "random"):
        return "error" in value or bool(value["exit"])
    return False


@cli_main
def main(argv=None):
    args = _parser().parse_args(argv)
    models, order, boards = _checked(args)
    # The results folder is a store this command keeps adding to: it must be new, empty or
    # an earlier sim.bench's, and so must the page beside it.
    out = prepare_dir(args.out, "sim.bench", legacy=("results.json",))
    page = prepare_file(out.with_suffix(".md"), "sim.bench", option="--out")
    out.mkdir(parents=True, exist_ok=True)
    (out / STAMP).write_text(marker("sim.bench") + "\n")
    store = Store(out / "results.json", force=args.force, stored_only=args.stored_only)
    # Scratch files per results folder: two sweeps (a test's and the real one) never share.
    sweep = _Sweep(args, store, ROOT / "build" / "bench"
                   / hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:8])
    command = "python -m sim.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    steps = _steps(models, order, boards, args)
    for number, (kind, model, bits, board) in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {kind}" + (f" {model}" if model else "") +
              (f" {bits}-bit" if bits else "") +
              (f" on {board}" if board else ""), file=sys.stderr, flush=True)
        sweep.measure(kind, model, bits, board)
    results, bits_list = sweep.results, sorted(order)
    _plots(results, models, bits_list, boards, out)
    if args.compare_models:
        plot_methods(results, args.compare_models,
                     {model: results.get(f"float/{model}") for model in args.compare_models},
                     out / "methods.png")
    markdown = render_markdown(results, models, bits_list, boards, command,
                               args.netlist_rows, args.compare_models)
    write_file(page, markdown)
    print(markdown)
    print(f"wrote {page}, {out / 'results.json'}, {out / 'accuracy.png'}, "
          f"{out / 'hardware.png'}", file=sys.stderr)
    failed = [key for key, value in results.items() if value is not None and _failed(key, value)]
    if failed:
        print(f"error: the hardware disagrees with the golden model, a proof failed, or a run "
              f"did not happen: "
              f"{', '.join(failed)} (see {page})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
