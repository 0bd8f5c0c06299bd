"""Simulate the board top (UART protocol around the accelerator) driven by the host driver."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from hw.network import Accelerator
from hw.uart_top import UARTTop
from sw.errors import UserError
from sw.host import MAX_REPEATS
from sw.paths import ROOT
from sw.qmodel import save_qmodel

from . import runner

__all__ = ["FAULTS", "TOPLEVEL", "simulate_uart_top", "uart_top_verilog"]

TOPLEVEL = "nnfpga_uart_top"

#: Damaged exchanges the testbench can put between classifications (``sim.tb_uart``):
#: ``garbage`` (between requests: bytes without a request magic, a character with a low stop
#: bit, a glitch and a lone first magic byte; all ignored), ``magic`` (a request with a bad
#: second magic byte: ignored),
#: ``command`` / ``length`` (header errors), ``truncated`` (the first half of a request:
#: timeout), ``framing`` (a low stop bit mid-request), ``checksum`` (a pixel bit flipped on
#: the way), ``retry`` (a framing error that ``Board(retries=1)`` recovers from) and
#: ``repeats`` (a bench request with a repeat count of 0).
FAULTS = ("garbage", "magic", "command", "length", "truncated", "framing", "checksum", "retry",
          "repeats")


def default_timeout(divisor):
    """The device idle timeout used unless given: four characters."""
    return 40 * divisor


def uart_top_verilog(qmodel, fold, *, divisor, timeout_cycles):
    """Verilog of ``UARTTop(Accelerator(qmodel, fold))``, and the top itself."""
    top = UARTTop(Accelerator(qmodel, fold), divisor=divisor, timeout_cycles=timeout_cycles)
    return verilog.convert(top, name=TOPLEVEL), top


def simulate_uart_top(qmodel, fold, images, *, divisor=4, timeout_cycles=None, faults=FAULTS,
                      bench=(), seed=0, simulator="verilator", workdir=None, waves=False):
    """Classify ``images`` on the RTL of the board top through ``sw.host.Board``.

    The top is ``UARTTop(Accelerator(qmodel, fold), divisor=divisor,
    timeout_cycles=timeout_cycles)``; ``sim.tb_uart`` drives its ``rx``/``tx`` pins with a
    bit-level UART model under the host driver. Image 0 is classified first; then each of
    ``faults`` (see :data:`FAULTS`) is followed by the classification of the next image
    (wrapping around), and every remaining image is classified. Last, image 0 is sent in a
    bench request (``Board.bench``) for each repeat count in ``bench``.

    Returns
    -------
    dict
        ``labels`` and ``logits`` (the board's answer for every image), ``mismatches``
        (indices of images answered differently from the golden model, a bench's last
        result included), ``faults`` (one ``{"fault", "expected", "got"}`` per fault: an
        error status, ``"silent"`` or ``"answer"``), ``bench`` (one ``{"repeats", "cycles",
        "label", "logits"}`` per bench request), ``problems`` (every other check that
        failed: status pins, leftover bytes, the byte-exact transcript of responses),
        ``cycles`` (simulated clock cycles), ``cycles_per_image`` (the core's predicted
        interval) and ``passed``.
    """
    faults = tuple(faults)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    bench = tuple(int(repeats) for repeats in bench)
    if not all(1 <= repeats <= MAX_REPEATS for repeats in bench):
        raise ValueError(f"bench repeat counts must be 1..{MAX_REPEATS}, not {bench}")
    images = np.asarray(images, dtype=np.uint8)
    if len(images) < 1:
        raise ValueError("need at least one image")
    if timeout_cycles is None:
        timeout_cycles = default_timeout(divisor)
    verilog, top = uart_top_verilog(qmodel, fold, divisor=divisor, timeout_cycles=timeout_cycles)
    if images[0].size != top.pixels:
        raise ValueError(f"images have {images[0].size} pixels; the network takes {top.pixels}")
    directory = runner.build(verilog, TOPLEVEL, simulator, waves=waves)
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nnfpga-uart-"))
    scratch.mkdir(parents=True, exist_ok=True)
    save_qmodel(qmodel, scratch / "model.npz")
    np.savez(scratch / "images.npz", images=images)
    results_path = scratch / "results.json"
    results_path.unlink(missing_ok=True)
    env = {
        "NNFPGA_QMODEL": scratch / "model.npz", "NNFPGA_IMAGES": scratch / "images.npz",
        "NNFPGA_FOLD": json.dumps(top.core.fold.to_json()),
        "NNFPGA_DIVISOR": divisor, "NNFPGA_TIMEOUT": timeout_cycles,
        "NNFPGA_FAULTS": ",".join(faults), "NNFPGA_BENCH": ",".join(map(str, bench)),
        "NNFPGA_SEED": seed,
        "NNFPGA_RESULTS": results_path,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    runner.run(directory, TOPLEVEL, "sim.tb_uart", env, scratch / "run", simulator, seed=seed,
               waves=waves)
    if not results_path.is_file():
        log = scratch / "run" / "sim.log"
        raise UserError(f"the UART simulation of {qmodel.name} ended without results "
                        f"(see {log})")
    results = json.loads(results_path.read_text())
    results["cycles_per_image"] = top.core.cycles_per_image
    expected = [fault["expected"] for fault in results["faults"]]
    got = [fault["got"] for fault in results["faults"]]
    results["passed"] = not results["mismatches"] and not results["problems"] and expected == got
    return results
