"""Simulate any stream-in, stream-out component on words, with cached builds.

The words are the integer payloads of an Amaranth ``ArrayLayout``: element ``k`` of a
transfer sits in bits ``[k * width, (k + 1) * width)``, two's complement when signed.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from sw.errors import UserError
from sw.paths import ROOT

from . import runner

__all__ = ["pack", "simulate_stream", "unpack"]


def pack(values, width, lanes):
    """Group the integers ``values`` into ``lanes``-element words of ``width``-bit fields."""
    values = [int(v) for v in np.asarray(values).reshape(-1)]
    if len(values) % lanes:
        raise ValueError(f"{len(values)} values do not fill whole words of {lanes} lanes")
    mask = (1 << width) - 1
    return [sum((values[start + lane] & mask) << (lane * width) for lane in range(lanes))
            for start in range(0, len(values), lanes)]


def unpack(words, width, lanes, is_signed):
    """The inverse of :func:`pack`: a flat ``int64`` array of every field of ``words``."""
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    fields = [(word >> (lane * width)) & mask for word in words for lane in range(lanes)]
    if is_signed:
        fields = [field - (1 << width) if field & sign else field for field in fields]
    return np.array(fields, dtype=np.int64)


def simulate_stream(verilog, toplevel, words, count, *, deadline, idle=0.0, stall=0.0,
                    seed=0, simulator="verilator", workdir=None, waves=False):
    """Send ``words`` into ``toplevel``'s ``i`` stream and receive ``count`` words from ``o``.

    Parameters
    ----------
    verilog : str
        The design, with ``clk``, ``rst`` and ``i__*``/``o__*`` stream ports.
    deadline : int
        Cycles after which the run fails.
    idle, stall : float
        Probabilities of an idle input cycle and of output backpressure in a cycle.

    Returns
    -------
    dict
        ``words`` (received payloads) and ``times`` (the cycle of each).
    """
    directory = runner.build(verilog, toplevel, simulator, waves=waves)
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nnfpga-sim-"))
    scratch.mkdir(parents=True, exist_ok=True)
    job, results_path = scratch / "words.json", scratch / "results.json"
    job.write_text(json.dumps({"words": [int(w) for w in words], "count": int(count)}))
    results_path.unlink(missing_ok=True)
    env = {
        "NNFPGA_WORDS": job, "NNFPGA_RESULTS": results_path, "NNFPGA_IDLE": idle,
        "NNFPGA_STALL": stall, "NNFPGA_SEED": seed, "NNFPGA_DEADLINE": deadline,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    runner.run(directory, toplevel, "sim.tb_stream", env, scratch / "run", simulator,
               seed=seed, waves=waves)
    if not results_path.is_file():
        log = scratch / "run" / "sim.log"
        raise UserError(f"the simulation of {toplevel} ended without results (see {log})")
    return json.loads(results_path.read_text())
