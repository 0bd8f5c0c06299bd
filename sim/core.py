"""Simulate a generated accelerator core on images and collect its answers and timing."""

import numpy as np
from amaranth.back import verilog

from hw.multiplier import DSP_WIDTHS
from hw.network import Accelerator
from sw.golden import argmax, classify

from .harness import pack, simulate_stream

__all__ = ["TOPLEVEL", "core_verilog", "decode_output", "simulate_core"]

TOPLEVEL = "nnfpga_core"


def core_verilog(qmodel, fold, dsp_width=DSP_WIDTHS["ecp5"]):
    """Verilog of the accelerator for ``qmodel`` folded by ``fold`` for a device whose hard
    multipliers take ``dsp_width`` bits, and the core itself: the core ``hw.build`` writes as
    ``core.v``, loaded weights preloaded (as after a load request: a harness drives no load
    port)."""
    core = Accelerator(qmodel, fold, dsp_width, preload=True)
    return verilog.convert(core, name=TOPLEVEL), core


def decode_output(word, label_bits, classes, logit_bits):
    """Split the core's output payload into ``(label, logits)`` (StructLayout order)."""
    label = word & ((1 << label_bits) - 1)
    logits, mask = [], (1 << logit_bits) - 1
    for index in range(classes):
        value = (word >> (label_bits + index * logit_bits)) & mask
        logits.append(value - (1 << logit_bits) if value >> (logit_bits - 1) else value)
    return label, logits


def simulate_core(qmodel, fold, images, *, idle=0.0, stall=0.0, seed=0,
                  simulator="verilator", workdir=None, waves=False):
    """Run ``images`` through the RTL of the core and compare with the golden model.

    Returns
    -------
    dict
        ``labels``, ``logits``, ``times`` (cycle of each answer), ``mismatches`` (indices of
        images whose logits or label differ from the golden model), ``passed``, and
        ``interval`` (the measured steady-state cycles per image, or ``None`` for fewer
        than three images).
    """
    verilog, core = core_verilog(qmodel, fold)
    images = np.asarray(images, dtype=np.uint8)
    slack = 4 * (1 + idle + stall) / max(1e-3, 1 - max(idle, stall))
    deadline = int((len(images) + 4) * core.cycles_per_image * slack + 20 * core.pixels + 10000)
    words = pack(images, qmodel.input_bits, core.input_lanes)
    received = simulate_stream(verilog, TOPLEVEL, words, len(images),
                               deadline=deadline, idle=idle, stall=stall, seed=seed,
                               simulator=simulator, workdir=workdir, waves=waves)
    decoded = [decode_output(word, core.label_bits, core.classes, core.logit_bits)
               for word in received["words"]]
    labels = [label for label, _ in decoded]
    logits = [values for _, values in decoded]
    expected = classify(qmodel, images)[1]
    mismatches = [index for index in range(len(images))
                  if logits[index] != expected[index].tolist()
                  or labels[index] != int(argmax(expected[index]))]
    times = received["times"]
    # The first answers include the pipeline filling up; the steady state is what follows.
    steady = np.diff(times[len(times) // 2:]) if len(times) >= 3 else []
    return {"labels": labels, "logits": logits, "times": times, "mismatches": mismatches,
            "passed": not mismatches,
            "interval": float(np.median(steady)) if len(steady) else None,
            "cycles_per_image_predicted": core.cycles_per_image}
