"""Stream drivers, monitors and a protocol checker for Amaranth simulations, written once.

Payloads are handled as lists of integers, one per lane (see :func:`pack` / :func:`unpack`),
so tests compare plain Python values with the golden model's arrays.

Typical use::

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    source = StreamSource(dut.i, lanes=4, bits=8, signed=False, rng=rng, idle=0.3)
    sink = StreamSink(dut.o, lanes=2, bits=20, signed=True, rng=rng, stall=0.3)
    check_protocol(sim, dut.i, "i"); check_protocol(sim, dut.o, "o")
    sim.add_testbench(source.run(vectors))
    sim.add_testbench(sink.run(len(expected)))
    sim.run()
    assert sink.received == expected
"""

from amaranth.hdl import Value

from sim import harness

__all__ = ["StreamSink", "StreamSource", "check_protocol", "pack", "run_simulation",
           "transfer_cycles", "unpack"]


def pack(values, bits):
    """Pack lane values (lane 0 in the low bits) into one integer, two's complement."""
    return harness.pack(values, bits, len(values))[0] if len(values) else 0


def unpack(word, lanes, bits, signed):
    """Split an integer into ``lanes`` values of ``bits`` bits (inverse of :func:`pack`)."""
    return harness.unpack([word], bits, lanes, signed).tolist()


class StreamSource:
    """Drives a stream with a list of payloads, idling randomly between transfers.

    Parameters
    ----------
    stream : stream.Interface
        The DUT's input (its ``valid``/``payload`` are driven here).
    encode : callable
        Turns one item into the integer payload (e.g. ``lambda v: pack(v, 8)``).
    rng : random.Random
    idle : float
        Probability of idling one cycle before each transfer.
    """

    def __init__(self, stream, encode, rng, idle=0.0):
        self.stream, self.encode, self.rng, self.idle = stream, encode, rng, idle
        self.sent = 0
        self.cycles = 0

    def run(self, items):
        async def testbench(ctx):
            payload = Value.cast(self.stream.payload)
            for item in items:
                while self.rng.random() < self.idle:
                    await ctx.tick()
                ctx.set(self.stream.valid, 1)
                ctx.set(payload, self.encode(item))
                await ctx.tick().until(self.stream.ready)
                self.sent += 1
                ctx.set(self.stream.valid, 0)
        return testbench


class StreamSink:
    """Receives ``count`` payloads from a stream, stalling randomly (backpressure).

    Parameters
    ----------
    stream : stream.Interface
        The DUT's output (its ``ready`` is driven here).
    decode : callable
        Turns the integer payload into the value stored in :attr:`received`.
    rng : random.Random
    stall : float
        Probability of holding ``ready`` low for a cycle before each transfer.
    """

    def __init__(self, stream, decode, rng, stall=0.0):
        self.stream, self.decode, self.rng, self.stall = stream, decode, rng, stall
        self.received = []
        #: Cycle (counted from the start of the testbench) of each transfer.
        self.times = []

    def run(self, count):
        async def testbench(ctx):
            payload = Value.cast(self.stream.payload)
            cycle = 0
            for _ in range(count):
                while self.rng.random() < self.stall:
                    ctx.set(self.stream.ready, 0)
                    await ctx.tick()
                    cycle += 1
                ctx.set(self.stream.ready, 1)
                while True:
                    _, _, valid, value = await ctx.tick().sample(self.stream.valid, payload)
                    cycle += 1
                    if valid:
                        break
                self.received.append(self.decode(value))
                self.times.append(cycle)
            ctx.set(self.stream.ready, 0)
        return testbench


class ProtocolError(AssertionError):
    pass


def check_protocol(sim, stream, name):
    """Add a process that fails the simulation if ``stream`` breaks the stream rules.

    Once ``valid`` is high it must stay high, with the same ``payload``, until ``ready`` is
    high too (a transfer). Returns a list that collects every transferred payload, so a test
    can also check that nothing was lost or duplicated.
    """
    transfers = []

    async def process(ctx):
        payload = Value.cast(stream.payload)
        pending = None
        async for _, _, valid, ready, value in ctx.tick().sample(
                stream.valid, stream.ready, payload):
            if pending is not None:
                if not valid:
                    raise ProtocolError(f"{name}: valid dropped before the transfer")
                if value != pending:
                    raise ProtocolError(f"{name}: payload changed from {pending:#x} to "
                                        f"{value:#x} before the transfer")
            if valid and ready:
                transfers.append(value)
                pending = None
            elif valid:
                pending = value
    sim.add_process(process)
    return transfers


def transfer_cycles(sim, stream):
    """Cycle numbers (from 0) at which ``stream`` transfers."""
    cycles = []

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(stream.valid, stream.ready):
            if valid and ready:
                cycles.append(cycle)
            cycle += 1
    sim.add_process(monitor)
    return cycles


def run_simulation(sim, deadline_cycles, period=1e-6):
    """Add a clock and run ``sim`` until its testbenches finish; fail past a deadline.

    A deadlocked design (nothing transfers) therefore fails instead of hanging the test.
    """
    sim.add_clock(period)

    async def watchdog(ctx):
        # A plain delay, not ``tick().repeat()``: closing a process suspended inside that
        # async generator at the end of the run warns "aclose(): asynchronous generator is
        # already running" (a PytestUnraisableExceptionWarning per test).
        await ctx.delay(deadline_cycles * period)
        raise TimeoutError(f"simulation did not finish within {deadline_cycles} cycles")
    sim.add_process(watchdog)
    sim.run()
