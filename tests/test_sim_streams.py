"""The one stream source and sink (:mod:`sim.streams`) catch broken designs in both simulators.

The rules themselves (:class:`sim.streams.StreamRules`) are checked on plain values; then one
broken Amaranth design, whose output payload keeps changing while it waits for ``ready``,
must fail its run in Amaranth's simulator and, as Verilog, in cocotb on Verilator, and a
correct one must pass both with the same payloads.
"""

import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sim.harness import simulate_stream
from sim.streams import ProtocolError, StreamRules, StreamSink, StreamSource
from tests.streams import run_simulation, stream_bench


class Runaway(wiring.Component):
    """Breaks the stream rules: ``o.payload`` counts on while ``o.valid`` waits for ready."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.i.ready.eq(1), self.o.valid.eq(1)]
        m.d.sync += self.o.payload.eq(self.o.payload + 1)
        return m


class Stage(wiring.Component):
    """A correct registered stage: ``o`` is ``i`` plus one, a cycle later."""

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload + 1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


def test_rules_accept_held_payloads_and_name_each_breach():
    rules = StreamRules("o")
    # Offered, held for two stalled edges, taken; an idle edge; taken at once.
    steps = [(1, 0, 5), (1, 0, 5), (1, 1, 5), (0, 0, None), (1, 1, 7)]
    assert [rules.step(*values) for values in steps] == [False, False, True, False, True]
    for steps, message in [
        ([(1, 0, 5), (1, 0, 6)], "o: payload changed from 0x5 to 0x6 before the transfer"),
        ([(1, 0, 5), (0, 1, 5)], "o: valid dropped before the transfer"),
        ([(1, 1, None)], "o: payload has X/Z bits while valid"),
        ([(None, 1, 0)], "o: valid has X/Z bits"),
    ]:
        rules = StreamRules("o")
        with pytest.raises(ProtocolError, match=f"^{message}$"):
            for values in steps:
                rules.step(*values)


def _amaranth_run(dut, words, stall):
    rng = random.Random(1)
    sink = StreamSink(rng, stall=stall)
    sim = Simulator(dut)
    sim.add_testbench(stream_bench(StreamSource(rng, idle=0.3).send, dut.i, words))
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(words)))
    run_simulation(sim, 100 * len(words))
    return sink.received


@pytest.mark.hw
def test_amaranth_sink_catches_a_payload_changing_under_backpressure():
    assert _amaranth_run(Stage(), list(range(20)), stall=0.5) == list(range(1, 21))
    with pytest.raises(ProtocolError, match=r"^o: payload changed from 0x\w+ to 0x\w+ before "
                                            r"the transfer$"):
        _amaranth_run(Runaway(), [1, 2, 3], stall=0.5)


@pytest.mark.sim
def test_cocotb_sink_catches_a_payload_changing_under_backpressure(tmp_path):
    words = list(range(20))
    stage = verilog.convert(Stage(), name="stage")
    result = simulate_stream(stage, "stage", words, len(words), deadline=1000, idle=0.3,
                             stall=0.5, seed=1, workdir=tmp_path / "stage")
    assert result["words"] == list(range(1, 21))
    runaway = verilog.convert(Runaway(), name="runaway")
    # Under pytest cocotb's runner exits on a failed cocotb test (elsewhere the missing
    # results are a UserError); the reason is in the simulation's log.
    with pytest.raises(SystemExit):
        simulate_stream(runaway, "runaway", [1, 2, 3], 3, deadline=1000, stall=0.5, seed=1,
                        workdir=tmp_path / "runaway")
    log = (tmp_path / "runaway" / "run" / "sim.log").read_text()
    assert "ProtocolError: o: payload changed from 0x" in log
