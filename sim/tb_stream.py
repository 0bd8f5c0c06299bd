"""cocotb testbench for any core with one input and one output stream (``i`` and ``o``).

It sends words, receives a given number of words, checks that nothing further comes out,
and writes what it received; the caller compares (see :func:`sim.harness.simulate_stream`).
Configuration arrives through the environment: ``NNFPGA_WORDS`` (a JSON file with ``words``,
the input payloads as integers, and ``count``, the outputs to expect), ``NNFPGA_RESULTS``
(where the JSON results go), ``NNFPGA_IDLE``, ``NNFPGA_STALL``, ``NNFPGA_SEED`` and
``NNFPGA_DEADLINE`` (cycles).
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout

from sim.streams import CocotbPort, CycleCounter, StreamSink, StreamSource

__all__ = ["stream_words"]


@cocotb.test()
async def stream_words(dut):
    with open(os.environ["NNFPGA_WORDS"]) as file:
        job = json.load(file)
    idle = float(os.environ.get("NNFPGA_IDLE", "0"))
    stall = float(os.environ.get("NNFPGA_STALL", "0"))
    seed = int(os.environ.get("NNFPGA_SEED", "0"))
    deadline = int(os.environ.get("NNFPGA_DEADLINE", "10000000"))

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
    # Separate generators, so the input's idle pattern does not depend on the output's.
    source = StreamSource(random.Random(seed), idle=idle)
    sink = StreamSink(random.Random(seed + 1), stall=stall)
    cocotb.start_soon(source.send(CocotbPort(dut, "i", dut.clk, counter), job["words"]))
    await with_timeout(sink.receive(CocotbPort(dut, "o", dut.clk, counter), job["count"]),
                       deadline * 10, "ns")
    # Nothing may be left over: no further output once every expected word is in.
    for _ in range(200):
        dut.o__ready.value = 1
        await ReadOnly()
        assert not dut.o__valid.value, "the core produced an output nobody asked for"
        await RisingEdge(dut.clk)
    with open(os.environ["NNFPGA_RESULTS"], "w") as file:
        json.dump({"words": sink.received, "times": sink.times}, file)
