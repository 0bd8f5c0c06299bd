"""cocotb drivers and monitors for Amaranth stream ports (``<name>__payload/valid/ready``).

Written once and used by every testbench: a source with idle insertion, a sink with
backpressure that checks the stream rules (``valid`` held and ``payload`` stable until the
transfer), and a cycle counter so tests can measure throughput.
"""

import random

from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["CycleCounter", "StreamSink", "StreamSource"]


class CycleCounter:
    """Clock cycles since :meth:`start`, read off the simulation time (no per-cycle wake-up)."""

    def __init__(self, clock, period_ns=10):
        self.clock, self.period = clock, period_ns
        self.origin = 0

    def start(self):
        self.origin = get_sim_time("ns")

    @property
    def cycle(self):
        return int((get_sim_time("ns") - self.origin) // self.period)


class StreamSource:
    """Drives ``<name>__valid/payload``, idling before a transfer with probability ``idle``."""

    def __init__(self, dut, name, clock, idle=0.0, seed=0):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.clock, self.idle = clock, idle
        self.rng = random.Random(seed)
        self.valid.value = 0

    async def send(self, words):
        for word in words:
            while self.rng.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clock)
            self.valid.value = 1
            self.payload.value = word
            while True:
                await ReadOnly()
                if self.ready.value:
                    await RisingEdge(self.clock)
                    break
                # Sleep until the core can take data instead of polling every cycle: long
                # pipelines hold ready low for thousands of cycles per image.
                await RisingEdge(self.ready)
        self.valid.value = 0


class StreamSink:
    """Receives from ``<name>__*`` with random backpressure, checking the stream rules.

    Parameters
    ----------
    stall : float
        Probability of holding ``ready`` low in a cycle.
    counter : CycleCounter, optional
        When given, :attr:`times` records the cycle of every transfer.
    """

    def __init__(self, dut, name, clock, stall=0.0, seed=1, counter=None):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.name, self.clock, self.stall, self.counter = name, clock, stall, counter
        self.rng = random.Random(seed)
        self.received, self.times = [], []
        self.ready.value = 0

    async def receive(self, count):
        pending = None
        while len(self.received) < count:
            self.ready.value = int(self.rng.random() >= self.stall)
            await ReadOnly()
            valid, ready = bool(self.valid.value), bool(self.ready.value)
            if not valid and ready and not self.stall:
                await RisingEdge(self.valid)  # nothing to check until the next answer
                continue
            if valid:
                raw = self.payload.value
                assert raw.is_resolvable, f"{self.name}: payload has X/Z bits while valid: {raw}"
            value = int(self.payload.value) if valid else None
            if pending is not None:
                assert valid, f"{self.name}: valid dropped before the transfer"
                assert value == pending, f"{self.name}: payload changed before the transfer"
            if valid and ready:
                self.received.append(value)
                if self.counter is not None:
                    self.times.append(self.counter.cycle)
                pending = None
            else:
                pending = value if valid else None
            await RisingEdge(self.clock)
        self.ready.value = 0
