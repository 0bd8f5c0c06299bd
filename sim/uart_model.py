"""A bit-level UART for cocotb testbenches and a serial port over it for blocking host code.

:class:`UARTDriver` sends 8N1 characters (or any line levels) on a device's ``rx`` pin,
:class:`UARTMonitor` decodes the device's ``tx`` pin by sampling mid-bit, and
:class:`SimSerial` joins both into a port with pyserial's ``write``, ``read``, ``flush``,
``reset_input_buffer`` and ``in_waiting``, so the same host code that drives a board's serial
port (``sw.host.Board``) drives the simulated device. The host code runs in a thread started
with :func:`cocotb.task.bridge`; each port call reaches back into the simulation through
:func:`cocotb.task.resume` (cocotb 2's names for ``external`` and ``function``), so simulated
time only passes while the host waits on the port, as it would wait on a real one.
"""

from cocotb.queue import Queue
from cocotb.simtime import get_sim_time
from cocotb.task import resume
from cocotb.triggers import Event, FallingEdge, RisingEdge, Timer, select

__all__ = ["SimSerial", "SimulationDeadlineError", "UARTDriver", "UARTMonitor",
           "character_levels"]


def character_levels(byte, *, stop=1):
    """Line levels of one 8N1 character: start bit, 8 data bits LSB first, stop bit.

    Parameters
    ----------
    byte : int
        0..255.
    stop : int
        Level of the stop bit; 0 makes a framing error.

    Returns
    -------
    list of int
    """
    if not 0 <= byte <= 255:
        raise ValueError(f"a character carries a byte 0..255, not {byte}")
    return [0, *((byte >> bit) & 1 for bit in range(8)), int(bool(stop))]


class _ClockTiming:
    """Clock-period arithmetic shared by the driver and the monitor."""

    def __init__(self, clock, divisor):
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 2:
            raise ValueError(f"divisor must be an int >= 2 (clock cycles per bit), "
                             f"not {divisor!r}")
        self.clock, self.divisor = clock, divisor

    def cycles(self, count):
        """A trigger ``count`` clock periods from now (one timer, not one callback a cycle)."""
        return Timer(self.clock.period * count, self.clock.unit)


class UARTDriver(_ClockTiming):
    """Drives a device's UART input ``line`` at ``divisor`` clock cycles per bit.

    Parameters
    ----------
    clock : cocotb.clock.Clock
        The device's clock (its period times ``divisor`` is one bit).
    line : cocotb handle
        The device's ``rx`` pin; driven high (idle) from the start.
    divisor : int
        Clock cycles per bit.

    Notes
    -----
    Queued items go out back to back, with no idle time between characters, as a UART with
    a full FIFO sends them. Levels change on the clock's falling edge, half a cycle away
    from the device's sampling edge, so every bit lasts exactly ``divisor`` rising edges.
    Start :meth:`run` once with ``cocotb.start_soon``.
    """

    def __init__(self, clock, line, divisor):
        super().__init__(clock, divisor)
        self.line = line
        self.line.value = 1
        self._queue = Queue()
        self._pending = 0  # queued items not yet completely on the line
        self._idle = Event()
        self._idle.set()
        self.sent = bytearray()  # every character queued with send(), in order

    @property
    def idle(self):
        """True when everything queued has been sent and the line is high."""
        return self._pending == 0

    def send(self, data, *, framing_errors=()):
        """Queue ``data`` as 8N1 characters; returns at once.

        Parameters
        ----------
        data : bytes-like
        framing_errors : collection of int
            Indices into ``data`` of characters to send with a low stop bit.
        """
        data = bytes(data)
        broken = set(framing_errors)
        for index, byte in enumerate(data):
            self.send_levels(character_levels(byte, stop=index not in broken))
        self.sent += data

    def send_levels(self, levels):
        """Queue raw line ``levels`` (0/1), each held for one bit time; returns at once.

        The line goes back high afterwards unless more is queued, so a level list can make
        any fault: a low stop bit, a glitch shorter than a bit (use :meth:`send_pulse`), a
        break (many zeros).
        """
        levels = [int(bool(level)) for level in levels]
        if levels:
            self._pending += 1
            self._idle.clear()
            self._queue.put_nowait(("bits", levels))

    def send_pulse(self, cycles):
        """Queue a low pulse of ``cycles`` clock cycles (a glitch when shorter than a bit)."""
        if cycles < 1:
            raise ValueError(f"a pulse lasts at least one cycle, not {cycles}")
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(("pulse", cycles))

    async def wait_idle(self):
        """Wait until everything queued is on the line (the last stop bit included)."""
        while not self.idle:
            await self._idle.wait()

    async def run(self):
        """Send queued items forever (start with ``cocotb.start_soon``)."""
        aligned = False  # at a falling clock edge, right after the previous item
        while True:
            if self._queue.empty():
                self.line.value = 1
                aligned = False
            kind, item = await self._queue.get()
            if not aligned:
                await FallingEdge(self.clock.signal)
            if kind == "pulse":
                self.line.value = 0
                await self.cycles(item)
            else:
                for level in item:
                    self.line.value = level
                    await self.cycles(self.divisor)
            self.line.value = 1
            aligned = True
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()


class UARTMonitor(_ClockTiming):
    """Decodes 8N1 characters on a device's UART output ``line``, sampling mid-bit.

    Parameters
    ----------
    clock : cocotb.clock.Clock
    line : cocotb handle
        The device's ``tx`` pin.
    divisor : int
        Clock cycles per bit.

    Attributes
    ----------
    buffer : bytearray
        Received bytes not yet taken by a reader (:class:`SimSerial` reads from here).
    transcript : bytearray
        Every byte ever received, in order.
    framing_errors : int
        Characters whose stop bit was low (none are kept).
    glitches : int
        Falling edges that were high again at the middle of the start bit.
    """

    def __init__(self, clock, line, divisor):
        super().__init__(clock, divisor)
        self.line = line
        self.buffer, self.transcript = bytearray(), bytearray()
        self.framing_errors = self.glitches = 0
        self.arrived = Event()
        self._receiving = False

    @property
    def receiving(self):
        """True from a start bit's falling edge to the middle of its stop bit."""
        return self._receiving

    async def run(self):
        """Receive forever (start with ``cocotb.start_soon``)."""
        half = self.divisor // 2
        while True:
            if int(self.line.value):
                await FallingEdge(self.line)
            self._receiving = True
            await self.cycles(half)
            if int(self.line.value):
                self.glitches += 1
                self._receiving = False
                continue
            byte = 0
            for bit in range(8):
                await self.cycles(self.divisor)
                byte |= int(self.line.value) << bit
            await self.cycles(self.divisor)
            self._receiving = False
            if int(self.line.value):
                self.buffer.append(byte)
                self.transcript.append(byte)
                self.arrived.set()
            else:
                self.framing_errors += 1
                await RisingEdge(self.line)


class SimulationDeadlineError(AssertionError):
    """The simulated host ran past its deadline (a hang); raised through the host code."""


class SimSerial:
    """A serial port, as pyserial's ``Serial``, on a simulated UART; for host code in a thread.

    Every method except :attr:`in_waiting` must be called from a thread started with
    :func:`cocotb.task.bridge`: it runs its part in the simulation through
    :func:`cocotb.task.resume` and blocks the thread meanwhile.

    Parameters
    ----------
    driver : UARTDriver
        Carries what is written to the device.
    monitor : UARTMonitor
        Holds what the device sent.
    timeout_cycles : int
        :meth:`read` returns what it has after this many clock cycles (pyserial's
        ``timeout``, in simulated time).
    deadline_cycles : int, optional
        Simulated cycles from creation after which any call raises
        :class:`SimulationDeadlineError`, so a host that retries forever ends the test.
    """

    def __init__(self, driver, monitor, *, timeout_cycles, deadline_cycles=None):
        if timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be positive, not {timeout_cycles}")
        self.driver, self.monitor = driver, monitor
        self.timeout_cycles = timeout_cycles
        self._deadline_cycles = deadline_cycles
        self._start = get_sim_time(driver.clock.unit)
        self._framing_errors = ()
        self.timeouts = 0  # reads that ended on the timeout, short of their count

    # -- the blocking, pyserial-like interface (call from a bridge thread) --

    @property
    def in_waiting(self):
        """Bytes received and not read yet."""
        return len(self.monitor.buffer)

    def write(self, data):
        """Queue ``data`` for the line and return its length (at once, as an OS buffer does)."""
        return resume(self._write)(bytes(data))

    def flush(self):
        """Block until every written byte is on the line (pyserial's ``flush``)."""
        resume(self._flush)()

    def read(self, size=1):
        """Up to ``size`` bytes: blocks until ``size`` arrived or :attr:`timeout_cycles` passed."""
        return resume(self._read)(size)

    def reset_input_buffer(self):
        """Discard every received byte not read yet."""
        resume(self._reset_input_buffer)()

    def close(self):
        """Nothing to release; here for ``Board.close``."""

    # -- test hooks (call from a bridge thread) --

    def inject_framing_error(self, *indices):
        """Send the characters at ``indices`` of the *next* :meth:`write` with a low stop bit."""
        self._framing_errors = tuple(indices)

    def write_levels(self, levels):
        """Queue raw line levels, one bit time each (see :meth:`UARTDriver.send_levels`)."""
        resume(self._write_levels)(list(levels))

    def write_pulse(self, cycles):
        """Queue a low pulse of ``cycles`` clock cycles (see :meth:`UARTDriver.send_pulse`)."""
        resume(self._write_pulse)(cycles)

    def wait_cycles(self, cycles):
        """Let ``cycles`` clock cycles of simulated time pass."""
        resume(self._wait_cycles)(cycles)

    def call(self, function, *args):
        """Run async ``function(*args)`` in the simulation and return its result."""
        return resume(function)(*args)

    # -- their simulation sides --

    def _check_deadline(self):
        if self._deadline_cycles is None:
            return
        now = get_sim_time(self.driver.clock.unit)
        if now - self._start > self._deadline_cycles * self.driver.clock.period:
            raise SimulationDeadlineError(f"the host was still talking to the device after "
                                          f"{self._deadline_cycles} simulated cycles")

    async def _write(self, data):
        self._check_deadline()
        errors, self._framing_errors = self._framing_errors, ()
        self.driver.send(data, framing_errors=errors)
        return len(data)

    async def _write_levels(self, levels):
        self._check_deadline()
        self.driver.send_levels(levels)

    async def _write_pulse(self, cycles):
        self._check_deadline()
        self.driver.send_pulse(cycles)

    async def _flush(self):
        self._check_deadline()
        await self.driver.wait_idle()

    async def _wait_cycles(self, cycles):
        self._check_deadline()
        await self.driver.cycles(cycles)

    async def _arrival(self, size):
        while len(self.monitor.buffer) < size:
            self.monitor.arrived.clear()
            await self.monitor.arrived.wait()

    async def _read(self, size):
        self._check_deadline()
        if len(self.monitor.buffer) < size:
            # One timeout for the whole call, as pyserial's ``timeout``.
            index, _ = await select(self._arrival(size), self.driver.cycles(self.timeout_cycles))
            self.timeouts += index
        data = bytes(self.monitor.buffer[:size])
        del self.monitor.buffer[:size]
        return data

    async def _reset_input_buffer(self):
        self._check_deadline()
        self.monitor.buffer.clear()
