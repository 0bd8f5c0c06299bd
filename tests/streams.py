"""What Amaranth simulations of stream components need beside :mod:`sim.streams`.

The stream source and sink are :class:`sim.streams.StreamSource` and
:class:`sim.streams.StreamSink`, written once for every simulator; here are a testbench that
runs one of them on an Amaranth stream, a protocol checker for any stream of a design (one of
its internal streams too), a transfer log, a simulation run with a deadline, and ``pack`` /
``unpack`` of lane values. Payloads are handled as lists of integers, one per lane, so tests
compare plain Python values with the golden model's arrays.

Typical use::

    sim = Simulator(dut)
    source = StreamSource(rng, idle=0.3, encode=lambda v: pack(v, 8))
    sink = StreamSink(rng, stall=0.3, decode=lambda w: unpack(w, 2, 20, True))
    check_protocol(sim, dut.i, "i"); check_protocol(sim, dut.o, "o")
    sim.add_testbench(stream_bench(source.send, dut.i, vectors))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(expected)))
    run_simulation(sim, deadline_cycles=10_000)
    assert sink.received == expected
"""

from amaranth.hdl import Value

from sim import harness
from sim.streams import AmaranthPort, StreamRules

__all__ = ["check_protocol", "pack", "run_simulation", "stream_bench", "transfer_cycles", "unpack"]


def pack(values, bits):
    """Pack lane values (lane 0 in the low bits) into one integer, two's complement."""
    return harness.pack(values, bits, len(values))[0] if len(values) else 0


def unpack(word, lanes, bits, signed):
    """Split an integer into ``lanes`` values of ``bits`` bits (inverse of :func:`pack`)."""
    return harness.unpack([word], bits, lanes, signed).tolist()


def stream_bench(method, stream, argument):
    """An Amaranth testbench awaiting ``method(AmaranthPort(ctx, stream), argument)``.

    Parameters
    ----------
    method : callable
        :meth:`sim.streams.StreamSource.send` or :meth:`sim.streams.StreamSink.receive` of
        a source or sink.
    stream : amaranth.lib.stream.Interface
        The stream it drives or receives from.
    argument
        The items to send, or the number of payloads to receive.
    """
    async def bench(ctx):
        await method(AmaranthPort(ctx, stream), argument)
    return bench


def check_protocol(sim, stream, name):
    """Add a process that fails the simulation if ``stream`` breaks the stream rules.

    The rules are :class:`sim.streams.StreamRules` (a :class:`sim.streams.ProtocolError`
    fails the run). Returns a list that collects every transferred payload, so a test can
    also check that nothing was lost or duplicated.
    """
    transfers = []

    async def process(ctx):
        rules = StreamRules(name)
        payload = Value.cast(stream.payload)
        async for _, _, valid, ready, value in ctx.tick().sample(
                stream.valid, stream.ready, payload):
            if rules.step(valid, ready, value):
                transfers.append(value)
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
