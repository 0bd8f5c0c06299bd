"""One stream source and one stream sink (``valid``/``ready``/``payload``) for every simulator.

The stream behaviour is written once, here: :class:`StreamSource` idles a random number of
cycles before each transfer and holds ``valid`` and the payload until ``ready``;
:class:`StreamSink` applies random backpressure, records every payload and the cycle of its
transfer, and checks the stream rules (:class:`StreamRules`: ``valid`` held and the payload
stable until the transfer, no X/Z bits where the simulator has them).

What differs between simulators is only how a signal is read and written and how to wait for
a clock edge; a port adapter does that for one stream:

* :class:`AmaranthPort` in an Amaranth testbench (``async def bench(ctx)``);
* :class:`CocotbPort` in a cocotb test, for the ``<name>__valid/ready/payload`` ports of the
  Verilog (with :class:`CycleCounter` for the transfer cycles).

Typical use (Amaranth; cocotb awaits the same two coroutines with ``CocotbPort``\\ s)::

    source = StreamSource(rng, idle=0.3, encode=lambda v: pack(v, 8))
    sink = StreamSink(rng, stall=0.3, decode=lambda w: unpack(w, 2, 20, True))

    async def bench(ctx):
        await source.send(AmaranthPort(ctx, dut.i), vectors)
    ...
    assert sink.received == expected
"""

from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["AmaranthPort", "CocotbPort", "CycleCounter", "ProtocolError", "StreamRules",
           "StreamSink", "StreamSource"]

#: The signals of a stream port, as :meth:`drive` and :meth:`edge` of the ports name them.
ROLES = ("valid", "ready", "payload")


class ProtocolError(AssertionError):
    """A stream broke the stream rules (an :class:`AssertionError`, so it fails a test)."""


class StreamRules:
    """The stream rules of one stream, checked clock edge by clock edge.

    Once ``valid`` is high it must stay high, with the same payload, until ``ready`` is high
    too (a transfer); ``valid`` must be known, and so must the payload while ``valid`` is high.

    Parameters
    ----------
    name : str
        The stream's name in error messages.
    """

    def __init__(self, name):
        self.name = name
        #: The payload offered but not yet taken, or ``None``.
        self.pending = None

    def step(self, valid, ready, payload):
        """Check one clock edge's values (``None`` for a value with X/Z bits).

        Returns
        -------
        bool
            Whether a payload was transferred at this edge.

        Raises
        ------
        ProtocolError
            When the values at this edge break a rule.
        """
        name = self.name
        if valid is None:
            raise ProtocolError(f"{name}: valid has X/Z bits")
        if valid and payload is None:
            raise ProtocolError(f"{name}: payload has X/Z bits while valid")
        if self.pending is not None:
            if not valid:
                raise ProtocolError(f"{name}: valid dropped before the transfer")
            if payload != self.pending:
                raise ProtocolError(f"{name}: payload changed from {self.pending:#x} to "
                                    f"{payload:#x} before the transfer")
        self.pending = payload if valid and not ready else None
        return bool(valid and ready)


class StreamSource:
    """Sends items on a stream, idling a random number of cycles before each transfer.

    Parameters
    ----------
    rng : random.Random
        Draws the idle cycles (it may be shared with a sink).
    idle : float
        Probability of idling one more cycle before each transfer.
    encode : callable
        Turns one item into the integer payload (e.g. ``lambda v: pack(v, 8)``).
    """

    def __init__(self, rng, idle=0.0, encode=int):
        self.rng, self.idle, self.encode = rng, idle, encode
        #: Items transferred so far.
        self.sent = 0

    async def send(self, port, items):
        """Send ``items`` on ``port``, one transfer each, holding each until it is taken."""
        port.drive("valid", 0)
        for item in items:
            while self.rng.random() < self.idle:
                await port.edge()
            port.drive("valid", 1)
            port.drive("payload", self.encode(item))
            await port.edge(until="ready")
            self.sent += 1
            port.drive("valid", 0)


class StreamSink:
    """Receives payloads from a stream with random backpressure, checking the stream rules.

    Parameters
    ----------
    rng : random.Random
        Draws the stalls (it may be shared with a source).
    stall : float
        Probability of holding ``ready`` low in a cycle.
    decode : callable
        Turns the integer payload into the value stored in :attr:`received`.
    """

    def __init__(self, rng, stall=0.0, decode=int):
        self.rng, self.stall, self.decode = rng, stall, decode
        #: The decoded payloads, in order.
        self.received = []
        #: The cycle of each transfer, as the port counts (:attr:`AmaranthPort.cycle`,
        #: :attr:`CocotbPort.cycle`).
        self.times = []

    async def receive(self, port, count):
        """Receive until :attr:`received` holds ``count`` payloads; ``ready`` is low after.

        Raises
        ------
        ProtocolError
            When the stream breaks the rules (:class:`StreamRules`).
        """
        rules = StreamRules(port.name)
        while len(self.received) < count:
            ready = self.rng.random() >= self.stall
            port.drive("ready", int(ready))
            # Without stalls ready stays high and nothing is ever pending: the edges where
            # valid is low have nothing to check, and a port may sleep through them.
            valid, payload = await port.edge("valid", "payload",
                                             until=None if self.stall else "valid")
            if rules.step(valid, ready, payload):
                self.received.append(self.decode(payload))
                self.times.append(port.cycle)
        port.drive("ready", 0)


class AmaranthPort:
    """A stream of an Amaranth design, in an Amaranth testbench.

    Parameters
    ----------
    ctx : amaranth.sim.SimulatorContext
        The testbench's context.
    stream : amaranth.lib.stream.Interface
        The stream (its payload may be any shape or data layout: it is read as an integer).
    name : str, optional
        The name in error messages; by default the one of ``stream.valid`` without
        ``__valid`` (``o`` for a component's ``o`` port).
    """

    def __init__(self, ctx, stream, name=None):
        # Not at the top: the cocotb testbench imports this module in every simulation
        # process, where Amaranth would add 0.2 s to each run for nothing.
        from amaranth.hdl import Value

        self.ctx = ctx
        self.signals = {"valid": stream.valid, "ready": stream.ready,
                        "payload": Value.cast(stream.payload)}
        self.name = name or stream.valid.name.removesuffix("__valid")
        #: Clock edges since the port was made: the first one is 1.
        self.cycle = 0

    def drive(self, role, value):
        """Set ``valid``, ``ready`` or ``payload`` to the integer ``value``."""
        self.ctx.set(self.signals[role], value)

    async def edge(self, *roles, until=None):
        """Wait for the next clock edge (the next at which ``until`` is high, if given).

        Returns
        -------
        tuple of int
            The values of ``roles`` at that edge.
        """
        signals = [self.signals[role] for role in roles]
        if until is None:
            _, _, *values = await self.ctx.tick().sample(*signals)
            self.cycle += 1
            return tuple(values)
        # One trigger for all the edges, as ``tick().until()`` waits: cheaper than one each.
        async for _, _, *values, high in self.ctx.tick().sample(*signals, self.signals[until]):
            self.cycle += 1
            if high:
                return tuple(values)


class CycleCounter:
    """Clock cycles since :meth:`start`, read off the simulation time (no per-cycle wake-up).

    Parameters
    ----------
    clock : cocotb handle
        The clock (kept for reference).
    period_ns : float
        Its period.
    """

    def __init__(self, clock, period_ns=10):
        self.clock, self.period = clock, period_ns
        self.origin = 0

    def start(self):
        """Count from now (call it at a rising edge of the clock)."""
        self.origin = get_sim_time("ns")

    @property
    def cycle(self):
        """Whole clock periods since :meth:`start`."""
        return int((get_sim_time("ns") - self.origin) // self.period)


class CocotbPort:
    """The ``<name>__valid/ready/payload`` ports of a Verilog design, in a cocotb test.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    name : str
        The stream's name (``i``, ``o``).
    clock : cocotb handle
        Its clock; writes take effect before the next rising edge.
    counter : CycleCounter, optional
        Where :attr:`cycle` counts from; by default a counter started now.
    """

    def __init__(self, dut, name, clock, counter=None):
        self.name, self.clock = name, clock
        self.signals = {role: getattr(dut, f"{name}__{role}") for role in ROLES}
        if counter is None:
            counter = CycleCounter(clock)
            counter.start()
        self.counter = counter

    @property
    def cycle(self):
        """The clock edge last waited for, the first one after the counter's start being 0
        (the cycle of a transfer, as :mod:`sim.compiled` counts)."""
        return self.counter.cycle - 1

    def drive(self, role, value):
        """Set ``valid``, ``ready`` or ``payload`` to the integer ``value``."""
        self.signals[role].value = value

    def read(self, role):
        """The settled value of ``role`` as an integer, ``None`` if it has X/Z bits."""
        try:
            return int(self.signals[role].value)
        except ValueError:  # X/Z bits; far cheaper than asking ``is_resolvable`` each cycle
            return None

    async def edge(self, *roles, until=None):
        """Wait for the next rising clock edge (the next at which ``until`` is high, if given).

        Returns
        -------
        tuple of int or None
            The values of ``roles`` at that edge (``None`` where they have X/Z bits).
        """
        while True:
            await ReadOnly()
            if until is None or self.read(until):
                break
            # Sleep until it rises instead of waking every cycle: long pipelines hold ready
            # low for thousands of cycles per image.
            await RisingEdge(self.signals[until])
        values = tuple(self.read(role) for role in roles)
        await RisingEdge(self.clock)
        return values
