"""Simulate a generated accelerator core on images and collect its answers and timing."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from sw.errors import UserError
from sw.qmodel import save_qmodel

from . import runner

__all__ = ["TOPLEVEL", "core_verilog", "simulate_core"]

TOPLEVEL = "nnfpga_core"
ROOT = Path(__file__).resolve().parent.parent


def core_verilog(qmodel, fold):
    """Verilog of the accelerator for ``qmodel`` folded by ``fold``, and the core itself."""
    from amaranth.back import verilog

    from hw.network import Accelerator

    core = Accelerator(qmodel, fold)
    return verilog.convert(core, name=TOPLEVEL), core


def simulate_core(qmodel, fold, images, *, idle=0.0, stall=0.0, seed=0,
                  simulator="verilator", workdir=None, waves=False):
    """Run ``images`` through the RTL of the core; returns the testbench's results.

    Returns
    -------
    dict
        ``labels``, ``logits``, ``times`` (cycle of each answer), ``mismatches`` (indices of
        images whose logits or label differ from the golden model), ``passed``, and
        ``interval`` (the measured steady-state cycles per image, or ``None`` for fewer
        than three images).
    """
    verilog, core = core_verilog(qmodel, fold)
    directory = runner.build(verilog, TOPLEVEL, simulator, waves=waves)
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nnfpga-sim-"))
    scratch.mkdir(parents=True, exist_ok=True)
    save_qmodel(qmodel, scratch / "model.npz")
    np.savez(scratch / "images.npz", images=np.asarray(images, dtype=np.uint8))
    results_path = scratch / "results.json"
    results_path.unlink(missing_ok=True)
    slack = 4 * (1 + idle + stall) / max(1e-3, 1 - max(idle, stall))
    deadline = int((len(images) + 4) * core.cycles_per_image * slack + 20 * core.pixels + 10000)
    env = {
        "NNFPGA_QMODEL": scratch / "model.npz", "NNFPGA_IMAGES": scratch / "images.npz",
        "NNFPGA_RESULTS": results_path, "NNFPGA_IDLE": idle, "NNFPGA_STALL": stall,
        "NNFPGA_SEED": seed, "NNFPGA_DEADLINE": deadline,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    runner.run(directory, TOPLEVEL, "sim.tb_core", env, scratch / "run", simulator, seed=seed,
               waves=waves)
    if not results_path.is_file():
        log = scratch / "run" / "sim.log"
        raise UserError(f"the simulation of {qmodel.name} ended without results (see {log})")
    results = json.loads(results_path.read_text())
    times = results["times"]
    # The first answers include the pipeline filling up; the steady state is what follows.
    steady = np.diff(times[len(times) // 2:]) if len(times) >= 3 else []
    results["interval"] = float(np.median(steady)) if len(steady) else None
    results["passed"] = not results["mismatches"]
    results["cycles_per_image_predicted"] = core.cycles_per_image
    return results
