"""A compiled C++ Verilator harness for stream cores: hundreds of times faster than cocotb.

:func:`build` compiles a core's Verilog with ``sim/compiled_tb.cpp`` (a plain C++ testbench:
no VPI, no Python per cycle) into one executable, cached under ``build/sim/`` by a hash of
everything that goes into it. :class:`Harness` runs it on words: input idling and output
backpressure from a seeded generator, the stream rules checked in C++ on the output (and on
tapped inner streams), a cycle deadline, and a one-line :class:`SimulationError` on failure.

On top of that, :class:`CompiledCore` runs images through the accelerator core and compares
every logit with the golden model (as :func:`sim.core.simulate_core` does with cocotb), and
:func:`first_differing_layer` builds the *same* Verilog with every layer's output stream
tapped and names the first layer, channel and position whose RTL output differs from the
golden model on one image: a fault that exists only in a given ``core.v`` shows up there.
"""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from amaranth.back import verilog as amaranth_verilog
from amaranth.hdl import Elaboratable, Shape

from hw.network import Accelerator, layer_stages
from sw.errors import UserError
from sw.golden import argmax, classify, run

from . import runner
from .core import TOPLEVEL, decode_output
from .harness import unpack

__all__ = ["SOURCE", "TAP_TOPLEVEL", "VERILATOR_FLAGS", "CompiledCore", "Harness",
           "SimulationError", "accelerator", "build", "compare_outputs", "core_deadline",
           "describe_difference", "first_differing_layer", "input_words", "layer_taps",
           "port_width",
           "simulate_core", "simulate_words", "tap_verilog"]

SOURCE = Path(__file__).resolve().parent / "compiled_tb.cpp"
TAP_TOPLEVEL = "nnfpga_tap"
#: Speed over everything: no public signals, X resolved the fastest way (2-state anyway).
VERILATOR_FLAGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal",
                   "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC"]
#: Verilator's own default (-Os) makes the model slower; -O2 is what the 350k cycles/s used.
MAKE_FLAGS = "OPT_FAST=-O2"
_EXIT_REASONS = {1: "bad arguments or files", 3: "deadline", 4: "stream rule broken",
                 5: "unexpected output"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class SimulationError(UserError):
    """The compiled harness failed: a deadline passed or the design broke a stream rule.

    Attributes
    ----------
    code : int
        The harness' exit status (3 deadline, 4 stream rule, 5 unexpected output).
    """

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def _described(component):
    """``component``, marked as built only to be asked about (no "never used" warning).

    Amaranth warns about every component that is created but never elaborated; the
    accelerator and its stages are created here also to read widths and predictions off
    them while the Verilog comes from elsewhere (a ``core.v`` as given). Sub-components made
    in their constructors (the accelerator's argmax) are marked too.
    """
    component._MustUse__silence = True
    for value in vars(component).values():
        if isinstance(value, Elaboratable):
            _described(value)
    return component


# --- the Verilog text ------------------------------------------------------------------------

def _module_text(verilog, module):
    """The text of ``module`` (plain or escaped name) in ``verilog``, or ``None``."""
    name = module if _IDENTIFIER.fullmatch(module) else f"\\{module} "
    match = re.search(rf"^module\s+{re.escape(name)}\s*\(", verilog, re.MULTILINE)
    if match is None:
        return None
    end = verilog.find("\nendmodule", match.end())
    return verilog[match.start():end if end >= 0 else len(verilog)]


def port_width(verilog, module, port):
    """Width of ``port`` of ``module`` as declared in ``verilog``, or ``None`` if absent."""
    text = _module_text(verilog, module)
    if text is None:
        return None
    match = re.search(rf"(?<![\w$])(?:input|output)\s+(?:(?:wire|reg|signed)\s+)*"
                      rf"(?:\[(\d+):(\d+)\]\s*)?{re.escape(port)}(?![\w$])", text)
    if match is None:
        return None
    return abs(int(match.group(1)) - int(match.group(2))) + 1 if match.group(1) else 1


def _stream_widths(verilog, module, names):
    """``{stream name: payload width}`` for ``names``, failing in one line on a missing one."""
    widths = {}
    for name in names:
        widths[name] = port_width(verilog, module, f"{name}__payload")
        if widths[name] is None:
            raise UserError(f"module {module} has no {name}__payload port")
    return widths


# --- building ---------------------------------------------------------------------------------

def _config_header(in_width, out_width, taps):
    lines = ["// Written by sim/compiled.py for this build.",
             f"#define NNFPGA_IN_BITS {in_width}", f"#define NNFPGA_OUT_BITS {out_width}",
             "#define NNFPGA_TAPS(X) " + " ".join(f"X({name}, {width})"
                                                   for name, width in taps.items())]
    return "\n".join(lines) + "\n"


def _run_verilator(directory, toplevel):
    """Compile ``directory``'s ``core.v`` and testbench; returns ``(returncode, log path)``."""
    root = Path(os.environ["VERILATOR_ROOT"])
    command = [str(root / "bin" / "verilator"), "--cc", "--exe", "--build",
               "-j", str(min(2, os.cpu_count() or 1)), *VERILATOR_FLAGS,
               "--top-module", toplevel, "--prefix", "Vtop", "-Mdir", "obj",
               "-MAKEFLAGS", MAKE_FLAGS, "core.v", "compiled_tb.cpp"]
    log = directory / "build.log"
    with open(log, "w") as file:
        result = subprocess.run(command, cwd=directory, stdout=file, stderr=subprocess.STDOUT)
    return result.returncode, log


def _first_error(log):
    lines = log.read_text(errors="replace").splitlines()
    return next((line.strip() for line in lines if "%Error" in line or "error:" in line),
                lines[-1].strip() if lines else "no output")


@dataclass(frozen=True)
class Harness:
    """A built compiled harness: the executable and its ports' widths.

    Attributes
    ----------
    binary : Path
    in_width, out_width : int
        Bits of ``i__payload`` and ``o__payload``.
    taps : dict
        ``{tap name: payload width}`` of the tapped inner streams (empty for a plain core).
    """

    binary: Path
    in_width: int
    out_width: int
    taps: dict

    def run(self, words, count, *, deadline, idle=0.0, stall=0.0, seed=0, drain=200,
            workdir=None):
        """Send ``words`` into ``i`` and receive ``count`` words from ``o``.

        Parameters
        ----------
        words : sequence of int or ndarray
            Input payloads, each in ``0 .. 2**in_width - 1``.
        deadline : int
            Cycles (from the end of reset) after which the run fails.
        idle, stall : float
            Probabilities of an idle input cycle between words and of ``o.ready`` low.
        seed : int
            Seeds both pseudo-random patterns.
        drain : int
            Cycles after the last expected output in which no further output may come.
        workdir : path, optional
            Where the binary files go (a temporary directory, removed, by default).

        Returns
        -------
        dict
            ``words`` (list of int), ``times`` (``int64`` array: the cycle of each output)
            and ``taps`` (``{name: list of int}``, every transfer on each tapped stream).

        Raises
        ------
        SimulationError
            On a deadline, a stream rule broken, or an output nobody asked for.
        """
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="nnfpga-compiled-") as scratch:
                return self.run(words, count, deadline=deadline, idle=idle, stall=stall,
                                seed=seed, drain=drain, workdir=scratch)
        scratch = Path(workdir)
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "in.bin").write_bytes(_encode(words, self.in_width))
        command = [str(self.binary), "--in", "in.bin", "--count", str(int(count)),
                   "--out", "out.bin", "--times", "times.bin", "--idle", repr(float(idle)),
                   "--stall", repr(float(stall)), "--seed", str(int(seed)),
                   "--deadline", str(int(deadline)), "--drain", str(int(drain))]
        if self.taps:
            command += ["--taps", "."]
        result = subprocess.run(command, cwd=scratch, capture_output=True, text=True)
        if result.returncode:
            raise _failure(result)
        return {"words": _decode((scratch / "out.bin").read_bytes(), self.out_width),
                "times": np.fromfile(scratch / "times.bin", dtype="<u8").astype(np.int64),
                "taps": {name: _decode((scratch / f"{name}.bin").read_bytes(), width)
                         for name, width in self.taps.items()}}


def _failure(result):
    line = next((line for line in result.stderr.splitlines() if line.startswith("nnfpga_tb:")),
                None)
    if line is not None:
        message = line.removeprefix("nnfpga_tb:").strip()
    elif result.returncode < 0:
        message = f"killed by signal {-result.returncode}"
    else:
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
    reason = _EXIT_REASONS.get(result.returncode, f"exit {result.returncode}")
    return SimulationError(f"compiled simulation failed ({reason}): {message}", result.returncode)


def _encode(words, width):
    """Little-endian words of ``ceil(width / 8)`` bytes each."""
    size = (width + 7) // 8
    if isinstance(words, np.ndarray) and size <= 8:
        if words.size and (words.min() < 0 or (width < 64 and words.max() >> width)):
            raise ValueError(f"input words must fit {width} unsigned bits")
        raw = np.ascontiguousarray(words.reshape(-1), dtype="<u8").view(np.uint8)
        return raw.reshape(-1, 8)[:, :size].tobytes()
    out = bytearray()
    for word in words:
        word = int(word)
        if word < 0 or word >> width:
            raise ValueError(f"input word {word} does not fit {width} unsigned bits")
        out += word.to_bytes(size, "little")
    return bytes(out)


def _decode(data, width):
    size = (width + 7) // 8
    return [int.from_bytes(data[start:start + size], "little")
            for start in range(0, len(data), size)]


def build(verilog, toplevel=TOPLEVEL, taps=()):
    """Compile ``verilog`` with the C++ testbench; returns the :class:`Harness`.

    The build is cached under ``build/sim/`` by a hash of the Verilog, ``toplevel``, the
    taps, Verilator's version and flags, and the testbench source: a second call with the
    same Verilog returns at once. Each build happens in its own temporary directory that is
    renamed into place when done, so processes building the same design at once do not
    disturb each other (the first rename wins; the others use it).

    Parameters
    ----------
    verilog : str
        Source text; ``toplevel`` has ``clk``, ``rst`` and ``i__*``/``o__*`` stream ports.
    taps : sequence of str
        Names of further output streams of ``toplevel`` (``<name>__valid/ready/payload``) to
        record and check.

    Raises
    ------
    UserError
        If a port is missing or Verilator fails (naming its first error and its log).
    """
    widths = _stream_widths(verilog, toplevel, ["i", "o", *taps])
    tap_widths = {name: widths[name] for name in taps}
    header = _config_header(widths["i"], widths["o"], tap_widths)
    runner.prepare_environment("verilator")
    key = json.dumps([verilog, toplevel, header, VERILATOR_FLAGS, MAKE_FLAGS,
                      version("verilator"), SOURCE.read_text()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    final = runner.CACHE / f"compiled-{toplevel}-{digest}"
    harness = Harness(final / "nnfpga_tb", widths["i"], widths["o"], tap_widths)
    if harness.binary.is_file():
        return harness
    runner.CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".compiled-{digest}-", dir=runner.CACHE))
    try:
        (scratch / "core.v").write_text(verilog)
        (scratch / "nnfpga_config.h").write_text(header)
        shutil.copy(SOURCE, scratch / "compiled_tb.cpp")
        code, log = _run_verilator(scratch, toplevel)
        if code:
            kept = runner.CACHE / f"compiled-{toplevel}-{digest}.log"
            shutil.copy(log, kept)
            raise UserError(f"Verilator could not build the compiled harness: "
                            f"{_first_error(log)} (see {kept})")
        (scratch / "obj" / "Vtop").rename(scratch / "nnfpga_tb")
        shutil.rmtree(scratch / "obj")  # tens of MB of objects nobody reads again
        try:
            scratch.rename(final)
        except OSError:
            if not harness.binary.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return harness


def simulate_words(verilog, words, count, in_width=None, out_width=None, *, deadline,
                   idle=0.0, stall=0.0, seed=0, toplevel=TOPLEVEL, workdir=None):
    """Build ``verilog`` (cached) and run ``words`` through it; see :meth:`Harness.run`.

    ``in_width``/``out_width``, when given, must equal the widths of ``i__payload`` and
    ``o__payload`` in the Verilog (a check that the caller packs words as the core expects).

    Returns
    -------
    dict
        ``words`` (received payloads, list of int) and ``times`` (list of int, the cycle of
        each, counted from the end of reset).
    """
    harness = build(verilog, toplevel)
    for name, given, actual in (("in_width", in_width, harness.in_width),
                                ("out_width", out_width, harness.out_width)):
        if given is not None and given != actual:
            raise ValueError(f"{name} {given} differs from the Verilog's {actual} bits")
    result = harness.run(words, count, deadline=deadline, idle=idle, stall=stall, seed=seed,
                         workdir=workdir)
    return {"words": result["words"], "times": result["times"].tolist()}


# --- the accelerator core ---------------------------------------------------------------------

def accelerator(qmodel, fold):
    """:class:`hw.network.Accelerator` for its widths and predictions (and the harness's
    Verilog), loaded weights preloaded: the harness drives no load port."""
    return _described(Accelerator(qmodel, fold, preload=True))


def input_words(images, core):
    """``images`` (bytes, any shape) as the core's input payloads: ``core.input_lanes``
    bytes a word, the first in the low bits (``uint64``)."""
    lanes, bits = core.input_lanes, core.qmodel.input_bits
    pixels = np.asarray(images, dtype=np.uint64).reshape(-1, lanes)
    shifts = np.arange(lanes, dtype=np.uint64) * np.uint64(bits)
    return (pixels << shifts).sum(axis=1, dtype=np.uint64)


def core_deadline(core, images, idle=0.0, stall=0.0):
    """Generous cycles for ``images`` images through ``core`` (as :mod:`sim.core` allows)."""
    slack = 4 * (1 + idle + stall) / max(1e-3, 1 - max(idle, stall))
    return int((images + 4) * core.cycles_per_image * slack + 20 * core.pixels + 10000)


class CompiledCore:
    """The accelerator core's Verilog built into the compiled harness, ready for images.

    Parameters
    ----------
    qmodel : sw.qmodel.QModel
    fold : dict
        ``{weight layer name: (pe, simd)}``.
    verilog : str, optional
        The core's Verilog (e.g. a ``core.v`` written by ``hw.build``); generated from
        ``qmodel`` and ``fold`` when not given.

    Raises
    ------
    UserError
        If the Verilog's stream ports do not fit the model (another model's ``core.v``).
    """

    def __init__(self, qmodel, fold, verilog=None):
        self.qmodel = qmodel
        self.core = accelerator(qmodel, fold)
        self.fold = self.core.fold
        self.verilog = verilog if verilog is not None else amaranth_verilog.convert(
            self.core, name=TOPLEVEL)
        self.harness = build(self.verilog)
        need = self.core.label_bits + self.core.classes * self.core.logit_bits
        in_width = qmodel.input_bits * self.core.input_lanes
        if (self.harness.in_width, self.harness.out_width) != (in_width, need):
            raise UserError(f"the Verilog's streams (i {self.harness.in_width} bits, o "
                            f"{self.harness.out_width} bits) do not fit {qmodel.name} folded "
                            f"as given (i {in_width}, o {need} bits)")

    def run(self, images, *, idle=0.0, stall=0.0, seed=0, workdir=None):
        """Run ``images`` and compare with the golden model; see :func:`simulate_core`."""
        images = np.asarray(images, dtype=np.uint8).reshape(-1, *self.qmodel.input_shape)
        received = self.harness.run(input_words(images, self.core), len(images), idle=idle,
                                    stall=stall,
                                    seed=seed, workdir=workdir,
                                    deadline=core_deadline(self.core, len(images), idle, stall))
        return compare_outputs(self.qmodel, self.core, images, received["words"],
                               received["times"])


def compare_outputs(qmodel, core, images, words, times):
    """Decode the core's output ``words`` for ``images`` and compare with the golden model.

    Parameters
    ----------
    core : hw.network.Accelerator
        Gives the output layout (label and logit widths) and the predicted interval.
    words, times : sequence of int
        Output payloads and the cycle of each, from either harness.

    Returns
    -------
    dict
        As :func:`simulate_core`.
    """
    decoded = [decode_output(word, core.label_bits, core.classes, core.logit_bits)
               for word in words]
    labels = [label for label, _ in decoded]
    logits = np.array([values for _, values in decoded], dtype=np.int64).reshape(
        len(images), core.classes)
    expected = classify(qmodel, images)[1]
    wrong = np.any(logits != expected, axis=1) | (np.array(labels) != argmax(expected))
    times = np.asarray(times, dtype=np.int64)
    # The first answers include the pipeline filling up; the steady state is what follows.
    steady = np.diff(times[len(times) // 2:]) if len(times) >= 3 else []
    return {"labels": labels, "logits": logits.tolist(), "times": times.tolist(),
            "mismatches": np.flatnonzero(wrong).tolist(), "passed": not wrong.any(),
            "interval": float(np.median(steady)) if len(steady) else None,
            "cycles_per_image_predicted": core.cycles_per_image}


def simulate_core(qmodel, fold, images, *, idle=0.0, stall=0.0, seed=0, verilog=None,
                  workdir=None):
    """Run ``images`` through the core's RTL in the compiled harness, against the golden model.

    The compiled twin of :func:`sim.core.simulate_core`, with the same result.

    Returns
    -------
    dict
        ``labels``, ``logits``, ``times`` (cycle of each answer), ``mismatches`` (indices of
        images whose logits or label differ from the golden model), ``passed``, ``interval``
        (median steady-state cycles between answers, ``None`` for fewer than three images)
        and ``cycles_per_image_predicted``.
    """
    return CompiledCore(qmodel, fold, verilog).run(images, idle=idle, stall=stall, seed=seed,
                                                   workdir=workdir)


# --- tapping every layer's output -------------------------------------------------------------

@dataclass(frozen=True)
class _Tap:
    name: str  # the tap's port prefix in the wrapper
    index: int  # the layer in qmodel.layers
    stage: str  # the core's submodule whose ``o`` is the layer's output
    width: int
    lanes: int
    signed: bool


def layer_taps(qmodel, fold, verilog):
    """The output stream of every layer with hardware, as found in ``verilog``.

    A layer's output is the ``o`` stream of its last stage (:func:`hw.network.layer_stages`
    names them, and the core's Verilog has one submodule per stage under that name). Its
    payload is an ``ArrayLayout`` of ``lanes`` elements; the transfers of one image carry the
    layer's output tensor in ``(y, x, c)`` order, ``lanes`` consecutive channels a transfer.

    Raises
    ------
    UserError
        If ``verilog`` has no such stage or its width differs (not this model and fold).
    """
    taps = []
    for index in range(len(qmodel.layers)):
        stages = layer_stages(qmodel, fold, index)
        if not stages:
            continue  # Flatten: no hardware, the stream is already in (y, x, c) order
        for _, stage in stages:
            _described(stage)
        stage_name, stage = stages[-1]
        layout = stage.o.payload.shape()
        element = Shape.cast(layout.elem_shape)
        width = port_width(verilog, f"{TOPLEVEL}.{stage_name}", "o__payload")
        if width != element.width * layout.length:
            raise UserError(f"the Verilog has no stage {stage_name} with a "
                            f"{element.width * layout.length}-bit output: it is not "
                            f"{qmodel.name} folded as given")
        taps.append(_Tap(f"tap{index}", index, stage_name, width, layout.length,
                         element.signed))
    return taps


def tap_verilog(taps, in_width, out_width):
    """A wrapper module (:data:`TAP_TOPLEVEL`) around the core that exposes ``taps``' streams.

    Hierarchical references read each stage's ``o`` ports inside the unchanged core, so the
    tapped build simulates exactly the given Verilog.
    """
    def vector(width):
        return f"[{width - 1}:0] " if width > 1 else ""

    ports = ["clk", "rst", "i__payload", "i__valid", "i__ready", "o__payload", "o__valid",
             "o__ready"] + [f"{tap.name}__{part}" for tap in taps
                            for part in ("valid", "ready", "payload")]
    lines = [f"module {TAP_TOPLEVEL}({', '.join(ports)});",
             "  input clk;", "  input rst;", f"  input {vector(in_width)}i__payload;",
             "  input i__valid;", "  output i__ready;", f"  output {vector(out_width)}o__payload;",
             "  output o__valid;", "  input o__ready;"]
    for tap in taps:
        lines += [f"  output {tap.name}__valid;", f"  output {tap.name}__ready;",
                  f"  output {vector(tap.width)}{tap.name}__payload;"]
    lines.append(f"  {TOPLEVEL} core (.clk(clk), .rst(rst), .i__payload(i__payload), "
                 ".i__valid(i__valid), .i__ready(i__ready), .o__payload(o__payload), "
                 ".o__valid(o__valid), .o__ready(o__ready));")
    for tap in taps:
        for part in ("valid", "ready", "payload"):
            lines.append(f"  assign {tap.name}__{part} = core.{tap.stage}.o__{part};")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _position(shape, element):
    """``{"y", "x", "channel"}`` (or fewer axes) of flat ``element`` of an HWC tensor."""
    names = {3: ("y", "x", "channel"), 2: ("x", "channel"), 1: ("channel",)}.get(len(shape))
    coordinates = np.unravel_index(element, shape)
    if names is None:
        return {f"axis{axis}": int(value) for axis, value in enumerate(coordinates)}
    return {name: int(value) for name, value in zip(names, coordinates, strict=True)}


def first_differing_layer(qmodel, fold, image, *, verilog=None, workdir=None):
    """Name the first layer whose output in the core's RTL differs from the golden model.

    Every layer's output stream inside the core (``verilog`` as given, or generated) is
    recorded while ``image`` runs through the whole core, then compared with
    :func:`sw.golden.run`'s output of that layer. Unlike :func:`sim.layers.first_differing_layer`
    (each layer regenerated and simulated alone), this sees a fault that exists only in the
    given Verilog; an upstream fault makes every later layer differ too, so the first
    differing layer is the one to look at.

    Returns
    -------
    dict or None
        ``None`` when every layer's output matches; else ``index``, ``layer`` (name),
        ``kind``, ``element`` (flat index in the layer's ``(y, x, c)`` output), ``position``
        (``{"y", "x", "channel"}``, or ``{"channel"}`` for a dense layer), ``rtl`` and
        ``golden`` (the two values there), ``differing`` (how many elements differ of
        ``elements``) and ``transfers`` (received, expected): a count that differs means
        the stream itself went wrong and the values are compared only as far as they go.
    """
    image = np.asarray(image, dtype=np.uint8).reshape(1, *qmodel.input_shape)
    core = accelerator(qmodel, fold)
    if verilog is None:
        verilog = amaranth_verilog.convert(core, name=TOPLEVEL)
    in_width = port_width(verilog, TOPLEVEL, "i__payload")
    out_width = port_width(verilog, TOPLEVEL, "o__payload")
    if in_width is None or out_width is None:
        raise UserError(f"the Verilog has no module {TOPLEVEL} with i/o streams")
    taps = layer_taps(qmodel, core.fold, verilog)
    harness = build(verilog + tap_verilog(taps, in_width, out_width), TAP_TOPLEVEL,
                    [tap.name for tap in taps])
    received = harness.run(input_words(image, core), 1, deadline=core_deadline(core, 1),
                           workdir=workdir)
    outputs = run(qmodel, image)
    for tap in taps:
        layer = qmodel.layers[tap.index]
        golden = np.asarray(outputs[tap.index]).reshape(-1)
        words = received["taps"][tap.name]
        rtl = unpack(words, tap.width // tap.lanes, tap.lanes, tap.signed)
        common = min(len(rtl), len(golden))
        differ = np.flatnonzero(rtl[:common] != golden[:common])
        if len(differ) or len(rtl) != len(golden):
            element = int(differ[0]) if len(differ) else common
            shape = tuple(layer.out_shape)
            return {"index": tap.index, "layer": layer.name, "kind": layer.kind,
                    "element": element,
                    "position": _position(shape, min(element, math.prod(shape) - 1)),
                    "rtl": int(rtl[element]) if element < len(rtl) else None,
                    "golden": int(golden[element]) if element < len(golden) else None,
                    "differing": len(differ), "elements": len(golden),
                    "transfers": (len(words), len(golden) // tap.lanes)}
    return None


def describe_difference(found):
    """One line for :func:`first_differing_layer`'s result (``None``: every layer matches)."""
    if found is None:
        return ("every layer's output equals the golden model: the fault is after the last "
                "layer (argmax) or in the label/logit output")
    where = ", ".join(f"{name} {value}" for name, value in found["position"].items())
    line = (f"first differing layer: #{found['index']} {found['layer']} ({found['kind']}), "
            f"output element {found['element']} ({where}): RTL {found['rtl']}, golden "
            f"{found['golden']} ({found['differing']} of {found['elements']} elements differ)")
    got, expected = found["transfers"]
    if got != expected:
        line += f"; {got} output transfers instead of {expected}"
    return line
