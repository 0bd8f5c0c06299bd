"""cocotb testbench of a generated accelerator core (``nnfpga_core``) against the golden model.

Configuration arrives through the environment (see :func:`sim.core.simulate_core`):
``NNFPGA_QMODEL`` (the quantized model ``.npz``), ``NNFPGA_IMAGES`` (an ``.npz`` with
``images``), ``NNFPGA_RESULTS`` (where the JSON results go), ``NNFPGA_IDLE``,
``NNFPGA_STALL``, ``NNFPGA_SEED`` and ``NNFPGA_DEADLINE`` (cycles).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from sim.streams import CycleCounter, StreamSink, StreamSource
from sw.golden import argmax, run
from sw.qmodel import load_qmodel

__all__ = ["classify_images", "decode_output"]


def decode_output(word, label_bits, classes, logit_bits):
    """Split the core's output payload into ``(label, logits)`` (StructLayout order)."""
    label = word & ((1 << label_bits) - 1)
    logits, mask = [], (1 << logit_bits) - 1
    for index in range(classes):
        value = (word >> (label_bits + index * logit_bits)) & mask
        logits.append(value - (1 << logit_bits) if value >> (logit_bits - 1) else value)
    return label, logits


@cocotb.test()
async def classify_images(dut):
    qmodel = load_qmodel(os.environ["NNFPGA_QMODEL"])
    with np.load(os.environ["NNFPGA_IMAGES"], allow_pickle=False) as npz:
        images = npz["images"]
    idle = float(os.environ.get("NNFPGA_IDLE", "0"))
    stall = float(os.environ.get("NNFPGA_STALL", "0"))
    seed = int(os.environ.get("NNFPGA_SEED", "0"))
    deadline = int(os.environ.get("NNFPGA_DEADLINE", "10000000"))
    classes = qmodel.classes
    logit_bits = qmodel.output_layer.acc_bits
    label_bits = max(1, (classes - 1).bit_length())

    # Low first: a clock that starts high rises from X at time 0, and every register would
    # sample logic that 4-state simulators have not evaluated yet.
    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    counter = CycleCounter(dut.clk)
    counter.start()
    source = StreamSource(dut, "i", dut.clk, idle=idle, seed=seed)
    sink = StreamSink(dut, "o", dut.clk, stall=stall, seed=seed + 1, counter=counter)
    cocotb.start_soon(source.send(int(v) for v in images.reshape(-1)))
    await with_timeout(sink.receive(len(images)), deadline * 10, "ns")
    # Nothing may be left over: no further output once every image is answered.
    for _ in range(200):
        dut.o__ready.value = 1
        await ReadOnly()
        assert not dut.o__valid.value, "the core produced an output nobody asked for"
        await RisingEdge(dut.clk)

    decoded = [decode_output(word, label_bits, classes, logit_bits) for word in sink.received]
    labels = [label for label, _ in decoded]
    logits = np.array([values for _, values in decoded], dtype=np.int64)
    expected = run(qmodel, images)[-1]
    mismatches = [index for index in range(len(images))
                  if not np.array_equal(logits[index], expected[index])
                  or labels[index] != int(argmax(expected[index]))]
    results = {"labels": labels, "logits": logits.tolist(), "times": sink.times,
               "mismatches": mismatches}
    with open(os.environ["NNFPGA_RESULTS"], "w") as file:
        json.dump(results, file)
    assert not mismatches, f"{len(mismatches)} images differ from the golden model"
