"""The results page's proofs beyond RTL simulation: gate-level regressions, the formal stream
proofs and the random-model sweep, each run as its own command and summarized for
:mod:`sim.bench`.

- Gate-level rows (``--netlist``): ``python -m sim.regress --netlist FAMILY`` on a core
  synthesized by Yosys for the board's family, simulated with the vendor cell models, every
  logit compared with the golden model (:mod:`sim.netlist`).
- Formal proofs: the ``formal`` tests (``tests/formal``: SymbiYosys on every stream
  component under the stream rules), their runs recorded through ``NNFPGA_FORMAL_JSON``.
- Random models: the ``slow`` sweeps of ``tests/test_random_models.py`` (drawn Keras models
  through the RTL, and the golden model against Keras at 8 bits), the models that passed
  recorded through ``NNFPGA_RANDOM_LOG``.
"""

import json
import os
import subprocess
import sys
from collections import Counter

from hw.boards import get_board
from hw.folding import DEVICES
from sw.errors import UserError
from sw.paths import ROOT
from sw.qmodel import MAX_BITS

from .design_keys import source_hash

__all__ = ["FORMAL_SOURCES", "NETLIST_ROWS", "RANDOM_SOURCES", "family_of", "formal_section",
           "netlist_rows", "netlist_section", "random_section", "run_formal",
           "run_netlist", "run_project", "run_random", "sources_key"]

#: The gate-level rows of the results page: ``MODEL:BITS:BOARD:IMAGES``, the netlist of the
#: board's FPGA family (#16's rows: mlp W2A2 and tiny_cnn W4A4 on both families, LeNet-5
#: W4A4 on ECP5 on every test image).
NETLIST_ROWS = ("mlp:2:icebreaker:1000,mlp:2:ulx3s-85f:1000,tiny_cnn:4:icebreaker:1000,"
                "tiny_cnn:4:ulx3s-85f:1000,lenet5:4:ulx3s-85f:10000")
#: What the formal runs depend on: the components and the property harness.
FORMAL_SOURCES = ("hw/*.py", "tests/formal/*.py")
#: What the random-model sweep depends on: the whole flow and the sweep itself.
RANDOM_SOURCES = ("hw/*.py", "sw/*.py", "sim/compiled.py", "sim/compiled_tb.cpp",
                  "sim/core.py", "tests/test_random_models.py")
#: The formal and random-model runs' sby/Verilator time limit (a hung tool fails the step).
TIMEOUT_SECONDS = 4 * 3600


def run_project(command, log, env=None):
    """Run ``python -m COMMAND...`` in the project, its output into ``log``.

    Returns
    -------
    tuple
        ``(exit code, last error line)``: the last ``error:`` line, or a crash's exception
        line, or ``None``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as file:
        try:
            done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, stdout=file,
                                  stderr=subprocess.STDOUT, timeout=TIMEOUT_SECONDS,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        except subprocess.TimeoutExpired:
            return -1, f"timed out after {TIMEOUT_SECONDS} s"
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if not errors and done.returncode and lines and "Traceback" in "".join(lines):
        errors = lines[-1:]  # a crash: its exception line
    return done.returncode, errors[-1] if errors else None


def sources_key(patterns):
    """A hash of the project files matching the glob ``patterns``."""
    paths = {path.relative_to(ROOT).as_posix() for pattern in patterns
             for path in ROOT.glob(pattern)}
    return source_hash(paths)


# --- gate-level rows --------------------------------------------------------------------------

def netlist_rows(text):
    """``[(model, bits, board, images)]`` from ``--netlist`` (``''``: none).

    Raises
    ------
    UserError
        A row that is not ``MODEL:BITS:BOARD:IMAGES`` with bits 1..16, a known board and a
        positive image count.
    """
    rows = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":")
        if len(fields) != 4 or not fields[1].isdigit() or not fields[3].isdigit() or \
                not 1 <= int(fields[1]) <= MAX_BITS or int(fields[3]) < 1:
            raise UserError(f"--netlist row {item!r} is not MODEL:BITS:BOARD:IMAGES (bits "
                            f"1..{MAX_BITS}, images >= 1)")
        get_board(fields[2])
        rows.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
    return rows


def family_of(board):
    """The FPGA family whose netlist a board's row simulates."""
    return DEVICES[get_board(board).device].family


def run_netlist(model, bits, board, images, idle, stall, data, jobs, scratch):
    """``python -m sim.regress --netlist`` for ``board``'s family; its summary.

    A run that found mismatches is a measurement (its summary says so); one that could not
    run raises :class:`UserError`.
    """
    family = family_of(board)
    out = scratch / f"netlist-{model}-{bits}b-{board}.json"
    out.unlink(missing_ok=True)  # the bench's own scratch file: a stale one must not be read
    code, error = run_project(
        ["sim.regress", "--model", model, "--bits", str(bits), "--board", board, "--netlist",
         family, "--images", str(images), "--jobs", str(jobs), "--idle", str(idle), "--stall",
         str(stall), "--json", str(out), *(["--data", data] if data else [])],
        out.with_suffix(".log"))
    if not out.is_file():
        raise UserError(f"sim.regress --netlist {family} {model} {bits}b failed: "
                        f"{error or f'exit {code}'} (see {out.with_suffix('.log')})")
    summary = json.loads(out.read_text())
    keys = ("images", "mismatches", "mismatched_images", "rtl_accuracy", "golden_accuracy",
            "cycles_per_image", "cycles_per_image_predicted", "sim_images_per_second",
            "seconds", "build_seconds", "jobs", "method", "idle", "stall", "netlist",
            "netlist_cells", "synthesis_seconds", "first_mismatch")
    return {**{key: summary[key] for key in keys if key in summary},
            "input_pixels": summary["fold"]["pixels"]}


def netlist_section(results, rows, design_cell, check):
    """The gate-level section: one line per ``rows`` entry measured (``results`` keyed
    ``netlist/MODEL/BITS/BOARD``); ``design_cell(entry)`` writes the design column and
    ``check(entry)`` (:func:`sim.bench.rtl_check`) the verdict."""
    lines = []
    for model, bits, board, _ in rows:
        entry = results.get(f"netlist/{model}/{bits}/{board}")
        if entry is None:
            continue
        verdict = check(entry)[1]
        if "error" in entry:
            lines.append(f"| {model} | {bits} | {family_of(board)} ({board}) | {verdict} "
                         f"||||||||||")
            continue
        cells = sum(entry["netlist_cells"].values())
        lines.append(
            f"| {model} | {bits} | {entry['netlist']} ({board}) | {entry['images']:,} | "
            f"{entry['idle']:.0%} / {entry['stall']:.0%} | {entry['mismatches']} | "
            f"{100 * entry['rtl_accuracy']:.2f} | {100 * entry['golden_accuracy']:.2f} | "
            f"{entry['cycles_per_image']:g} / {entry['cycles_per_image_predicted']} | "
            f"{cells:,} | {entry['synthesis_seconds']:.0f} | "
            f"{entry['sim_images_per_second']:,.1f} | {entry['seconds']:.0f} | "
            f"{design_cell(entry)} | {verdict} |")
    if not lines:
        return []
    return ["## Gate-level regression (synthesized netlists)", "",
            "The core synthesized as the builds synthesize it (`synth_ice40 -dsp` / "
            "`synth_ecp5` after the builds' own script, `write_verilog`), simulated with "
            "Yosys' cell models (and `sim/ecp5_cells.v` for ECP5's DP16KD and MULT18X18D) in "
            "the RTL regression's compiled harness, every logit compared with the golden "
            "model's: `python -m sim.regress --netlist FAMILY --board BOARD`. The fold is the "
            "board's; the input is idle and the output stalled on random cycles as in the RTL "
            "rows. Cells: the netlist's; synthesis s: Yosys; sim images/s and s: the "
            "simulation alone.", "",
            "| model | bits | netlist (board's fold) | images | idle / stall | mismatches | "
            "netlist % | golden % | cycles/image measured / predicted | cells | synthesis s | "
            "sim images/s | sim s | design | check |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *lines, ""]


# --- formal proofs ----------------------------------------------------------------------------

def run_formal(scratch, select=None):
    """The ``formal`` tests (``tests/formal``, one process; ``select``: a ``pytest -k``
    expression), each sby run recorded.

    Returns
    -------
    dict
        ``runs`` (test, mode, depth, properties, sby's status, failed properties, seconds,
        the test's outcome) and ``exit`` (pytest's exit status).
    """
    out = scratch / "formal.json"
    out.unlink(missing_ok=True)
    code, error = run_project(["pytest", "tests/formal", "-m", "formal", "-n", "0", "-q",
                               "-p", "no:cacheprovider", *(["-k", select] if select else [])],
                              scratch / "formal.log",
                              env={"NNFPGA_FORMAL_JSON": str(out)})
    if not out.is_file():
        raise UserError(f"the formal tests did not run: {error or f'exit {code}'} "
                        f"(see {scratch / 'formal.log'})")
    return {**json.loads(out.read_text()), "exit": code}


def _component(test):
    """The component a formal test file proves (``test_uart_top.py::...`` -> ``uart_top``)."""
    return test.split("::")[0].removeprefix("test_").removesuffix(".py")


def formal_section(entry, design_cell):
    """The formal section: each component's runs (mutants apart), then the mutants caught."""
    if entry is None:
        return []
    if "error" in entry:
        return ["## Formal stream proofs", "", f"**FAILED**: {entry['error']}", ""]
    runs = entry["runs"]
    by_component = {}
    for run in runs:
        by_component.setdefault(_component(run["test"]), []).append(run)
    mutants = by_component.pop("mutants", [])
    lines = []
    for component, group in by_component.items():
        for (mode, depth), found in _grouped(group).items():
            properties = sorted({p for run in found for p in run["properties"]})
            statuses = Counter(run["status"] for run in found)
            lines.append(f"| {component} | {mode} | {depth} | {len(found)} | "
                         f"{', '.join(properties)} | "
                         f"{', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))} | "
                         f"{sum(run['seconds'] for run in found):.0f} |")
    caught = [run for run in mutants if run["status"] == "FAIL" and run["outcome"] == "passed"]
    # The unmutated wrappers, run the same way: they must pass.
    controls = [run for run in mutants if run["status"] == "PASS" and run["outcome"] == "passed"]
    proved = sum(run["mode"] == "prove" and run["status"] == "PASS" for run in runs)
    failed = [run["test"] for run in runs if run["outcome"] != "passed"]
    return ["## Formal stream proofs", "",
            "SymbiYosys (`yowasp-sby`, Yices 2) on every stream component in the property "
            "harness of `tests/formal/harness.py`, the stream rules assumed on its input: "
            "`o.hold` (valid held until taken), `o.stable` (payload stable while waiting), "
            "`reset.idle`, the transfer counts (`count.no_creation`: nothing made up or sent "
            "twice; `count.bounded`; `count.drain`: nothing lost or stuck once the input "
            "stops), `order` (the n-th out is the n-th in) and covers. bmc: bounded from reset "
            "to the depth; prove: k-induction of that length (holds in every cycle); cover: a "
            "trace reaching the outputs. Run by `pytest tests/formal -m formal -n 0` "
            f"(part of the default suite): {len(runs)} sby runs, {proved} proofs by "
            f"induction, {sum(run['seconds'] for run in runs):,.0f} s of sby; tests "
            + ("all passed" if not failed else f"**FAILED: {', '.join(failed)}**")
            + f"; design: {design_cell(entry)}.", "",
            "| component | mode | depth | runs | properties | sby result | s |",
            "|---|---|---|---|---|---|---|", *lines, "",
            f"Deliberately broken components (`tests/formal/test_mutants.py`): {len(caught)} "
            f"mutants caught, each run failing with a counterexample of the property it breaks: "
            + "; ".join(f"`{run['test'].split('::')[1]}` ({', '.join(run['failed']) or 'cover'})"
                        for run in caught)
            + f"; the {len(controls)} unmutated wrappers pass the same runs"
            + (f"; {len(mutants) - len(caught) - len(controls)} mutant runs did not behave as "
               f"their tests expect" if len(caught) + len(controls) < len(mutants) else "")
            + ".", ""]


def _grouped(runs):
    groups = {}
    for run in runs:
        groups.setdefault((run["mode"], run["depth"]), []).append(run)
    return groups


# --- random models ----------------------------------------------------------------------------

def run_random(count, seed, scratch):
    """The random-model sweeps: ``count`` drawn models from ``seed`` through the RTL, and as
    many at 8 bits against Keras (``pytest -m slow tests/test_random_models.py``).

    Returns
    -------
    dict
        ``drawn`` (per check: models asked for), ``passed`` (per check: models that passed),
        ``bits`` and ``kinds`` (how often each weight width and layer kind passed through the
        RTL), ``exit`` and, on a failure, ``failure`` (the end of pytest's report).
    """
    out = scratch / "random.jsonl"
    out.unlink(missing_ok=True)
    log = scratch / "random.log"
    code, error = run_project(["pytest", "tests/test_random_models.py", "-m", "slow", "-n", "0",
                               "-q", "-p", "no:cacheprovider", "-k", "sweep"], log,
                              env={"NNFPGA_RANDOM_LOG": str(out), "NNFPGA_RANDOM_MODELS":
                                   str(count), "NNFPGA_RANDOM_SEED": str(seed)})
    passes = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if code not in (0, 1) or (code and not passes and error):
        raise UserError(f"the random-model sweep did not run: {error or f'exit {code}'} "
                        f"(see {log})")
    rtl = [entry for entry in passes if entry["check"] == "rtl"]
    result = {"drawn": count, "seed": seed, "exit": code,
              "passed": dict(Counter(entry["check"] for entry in passes)),
              "bits": dict(sorted(Counter(f"W{e['weight_bits']}A{e['act_bits']}"
                                          for e in rtl).items())),
              "kinds": dict(Counter(kind for e in rtl for kind in e["kinds"]).most_common())}
    if code:
        result["failure"] = "\n".join(log.read_text().splitlines()[-40:])
    return result


def _widths_order(item):
    """``("W10A4", n)`` in numeric order of the weight, then the activation width."""
    weight, act = item[0][1:].split("A")
    return int(weight), int(act)


def random_section(entry, design_cell):
    """The random-model section: drawn, passed, what the passing models held."""
    if entry is None:
        return []
    if "error" in entry:
        return ["## Random models", "", f"**FAILED**: {entry['error']}", ""]
    passed = entry["passed"]
    verdict = ("all passed" if not entry["exit"] else
               "**FAILED** (the sweep stopped at a failing model; see the note below)")
    lines = ["## Random models", "",
             "Keras models drawn by hypothesis from the supported layers (`Rescaling`; "
             "`Conv2D` kernels 1-5, strides 1-2, `valid`/`same`, 1-16 filters; max/average/"
             "global pooling; `BatchNormalization` with random statistics; ReLU three ways; "
             "`Flatten`/`Reshape`; `Dropout`; `Dense`), random weights, 1..16 bits (half of the "
             "draws beyond 8): "
             f"`NNFPGA_RANDOM_MODELS={entry['drawn']} NNFPGA_RANDOM_SEED={entry['seed']} "
             "pytest -m slow tests/test_random_models.py -k sweep`; design: "
             f"{design_cell(entry)}.", "",
             "| check | drawn | passed | result |", "|---|---|---|---|",
             f"| RTL of the generated core (4 real test images each, random fold, every logit "
             f"= golden, interval = predicted) | {entry['drawn']} | {passed.get('rtl', 0)} | "
             f"{verdict} |",
             f"| golden model against Keras at 8 bits (200 test images each, median logit "
             f"error <= 0.25) | {entry['drawn']} | {passed.get('float', 0)} | {verdict} |", "",
             "Bit widths of the RTL draws: " + ", ".join(
                 f"{bits} {n}" for bits, n in sorted(entry["bits"].items(), key=_widths_order))
             + "; layers in them: " + ", ".join(
                 f"{kind} {n}" for kind, n in sorted(entry["kinds"].items(),
                                                     key=lambda item: (-item[1], item[0])))
             + ".", ""]
    if entry.get("failure"):
        lines += ["```", entry["failure"], "```", ""]
    return lines
