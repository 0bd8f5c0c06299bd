# amaranth: UnusedElaboratable=no
"""UART receiver, transmitter and the frame protocol of UARTTop, simulated at the bit level.

UARTTop runs around a small stand-in core with the accelerator's ports, and is driven by a
bit-level UART model with ``sw.host``'s own ``encode_request``/``decode_response``, so the
protocol in ``docs/protocol.md`` is checked end to end, errors and recovery included.
"""

import random
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.uart_rx import UARTReceiver
from hw.uart_top import CYCLE_COUNT_BITS, BenchTimer, ImageFeeder, UARTTop
from hw.uart_tx import UARTTransmitter
from sim.streams import AmaranthPort, StreamSink, StreamSource
from sw.host import (
    CMD_BENCH,
    CMD_CLASSIFY,
    REQUEST_MAGIC,
    Status,
    crc8,
    decode_response,
    encode_bench_request,
    encode_request,
    encode_response,
    logit_bytes,
    response_length,
)
from sw.qmodel import signed_bits
from tests.streams import check_protocol, run_simulation, stream_bench

pytestmark = pytest.mark.hw


class StandInCore(wiring.Component):
    """A small core with the accelerator's ports: per-class sums of ``pixel - offset``.

    Pixel ``n`` of an image adds ``pixel - offset`` to logit ``n % classes``; the label is the
    argmax, lowest index on a tie. ``i.ready`` drops one cycle in three, and the result takes
    ``classes`` cycles, so the device around it must cope with a core that stalls.
    """

    def __init__(self, *, pixels, classes, offset=100):
        self._pixels, self._classes, self.offset = pixels, classes, offset
        per_class = -(-pixels // classes)
        self._logit_bits = signed_bits(-offset * per_class, (255 - offset) * per_class)
        self._label_bits = max(1, (classes - 1).bit_length())
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(8), 1))),
            "o": Out(stream.Signature(data.StructLayout({
                "label": unsigned(self._label_bits),
                "logits": data.ArrayLayout(signed(self._logit_bits), classes),
            }))),
        })

    pixels = property(lambda self: self._pixels)
    classes = property(lambda self: self._classes)
    logit_bits = property(lambda self: self._logit_bits)
    label_bits = property(lambda self: self._label_bits)

    def model(self, image):
        """The label and logits this core computes for ``image``."""
        flat = np.asarray(image, np.int64).reshape(-1) - self.offset
        logits = [int(flat[c::self._classes].sum()) for c in range(self._classes)]
        return int(np.argmax(logits)), logits

    def elaborate(self, platform):
        m = Module()
        classes = self._classes
        sums = Array(Signal(signed(self._logit_bits), name=f"sum_{c}") for c in range(classes))
        lane = Signal(range(classes))
        count = Signal(range(self._pixels))
        phase = Signal(range(3))
        best = Signal(signed(self._logit_bits))
        best_index = Signal(self._label_bits)
        k = Signal(range(classes + 1))
        m.d.sync += phase.eq(phase + 1)
        with m.If(phase == 2):
            m.d.sync += phase.eq(0)
        for c in range(classes):
            m.d.comb += self.o.payload.logits[c].eq(sums[c])
        m.d.comb += self.o.payload.label.eq(best_index)
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(phase != 0)
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += [sums[lane].eq(sums[lane] + self.i.payload[0] - self.offset),
                                 lane.eq(lane + 1), count.eq(count + 1)]
                    with m.If(lane == classes - 1):
                        m.d.sync += lane.eq(0)
                    with m.If(count == self._pixels - 1):
                        m.d.sync += [count.eq(0), lane.eq(0), best.eq(sums[0]),
                                     best_index.eq(0), k.eq(1)]
                        m.next = "ARGMAX"
            with m.State("ARGMAX"):
                with m.If(k == classes):
                    m.next = "OUTPUT"
                with m.Else():
                    with m.If(sums[k] > best):
                        m.d.sync += [best.eq(sums[k]), best_index.eq(k)]
                    m.d.sync += k.eq(k + 1)
            with m.State("OUTPUT"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.d.sync += [sums[c].eq(0) for c in range(classes)]
                    m.next = "LOAD"
        return m


def char_bits(byte, stop=1):
    """Line levels of one 8N1 character: start, 8 data bits LSB first, stop."""
    return [0, *((byte >> n) & 1 for n in range(8)), stop]


async def send_bytes(ctx, line, divisor, payload, *, rng=None, max_gap=0, bad_stop=(),
                     hold_low=0):
    """Drive ``line`` with ``payload`` as 8N1 characters, with random idle gaps between them.

    Characters whose index is in ``bad_stop`` get a low stop bit (a framing error); a
    ``hold_low`` cycles long break follows the last one.
    """
    for n, byte in enumerate(payload):
        for level in char_bits(byte, stop=0 if n in bad_stop else 1):
            ctx.set(line, level)
            await ctx.tick().repeat(divisor)
        ctx.set(line, 1)
        if rng is not None and max_gap:
            gap = rng.randrange(max_gap + 1)
            if gap:
                await ctx.tick().repeat(gap)
    if hold_low:
        ctx.set(line, 0)
        await ctx.tick().repeat(hold_low)
        ctx.set(line, 1)


def line_decoder(sim, line, divisor, received):
    """Add a process decoding the 8N1 characters on ``line`` (sampled mid-bit) into a list.

    It fails the simulation on a start bit shorter than half a bit or a low stop bit.
    """
    half = divisor // 2

    async def process(ctx):
        since = None  # cycles since the start bit's falling edge; None while idle
        value = 0
        async for _, _, level in ctx.tick().sample(line):
            if since is None:
                if not level:
                    since, value = 0, 0
                continue
            since += 1
            if since < half or (since - half) % divisor:
                continue
            bit = (since - half) // divisor
            if bit == 0:
                assert not level, "start bit shorter than half a bit"
            elif bit <= 8:
                value |= level << (bit - 1)
            else:
                assert level, f"low stop bit after {value:#04x}"
                received.append(value)
                since = None
    sim.add_process(process)


def pulse_counter(sim, signal):
    """Count cycles in which ``signal`` is high."""
    counts = [0]

    async def process(ctx):
        async for _, _, value in ctx.tick().sample(signal):
            counts[0] += value
    sim.add_process(process)
    return counts


# --- Transmitter and receiver ---------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 5, 7, 8])
def test_loopback_random_bytes(divisor):
    rng = random.Random(divisor)
    payload = [rng.randrange(256) for _ in range(40)] + [0x00, 0xFF, 0x55, 0xAA]
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor=divisor)
    m.submodules.rx = rx = UARTReceiver(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    source = StreamSource(rng, idle=0.3)
    sink = StreamSink(rng)
    sent = check_protocol(sim, tx.i, "tx.i")
    got = check_protocol(sim, rx.o, "rx.o")
    errors, overruns = pulse_counter(sim, rx.error), pulse_counter(sim, rx.overrun)
    sim.add_testbench(stream_bench(source.send, tx.i, payload))
    sim.add_testbench(stream_bench(sink.receive, rx.o, len(payload)))
    run_simulation(sim, len(payload) * 10 * divisor * 3 + 200)
    assert sink.received == payload and sent == payload and got == payload
    assert errors == [0] and overruns == [0]


@pytest.mark.parametrize("tx_divisor", [24, 26])
def test_loopback_baud_mismatch(tx_divisor):
    """Back-to-back characters from a transmitter 4 % off the receiver's rate still arrive."""
    rng = random.Random(tx_divisor)
    payload = [rng.randrange(256) for _ in range(12)] + [0xFF, 0x00]
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(divisor=tx_divisor)
    m.submodules.rx = rx = UARTReceiver(divisor=25)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sink = StreamSink(rng)
    errors = pulse_counter(sim, rx.error)
    sim.add_testbench(stream_bench(StreamSource(rng).send, tx.i, payload))
    sim.add_testbench(stream_bench(sink.receive, rx.o, len(payload)))
    run_simulation(sim, len(payload) * 10 * 26 + 500)
    assert sink.received == payload and errors == [0]


@pytest.mark.parametrize("divisor", [4, 6])
def test_transmitter_exact_waveform(divisor):
    """With ``i.valid`` held high the line carries every bit for exactly ``divisor`` cycles."""
    rng = random.Random(divisor)
    payload = [rng.randrange(256) for _ in range(8)]
    dut = UARTTransmitter(divisor=divisor)
    sim = Simulator(dut)
    trace = []

    async def recorder(ctx):
        async for _, _, level in ctx.tick().sample(dut.tx):
            trace.append(level)
    sim.add_process(recorder)
    source = StreamSource(rng)

    async def bench(ctx):
        await source.send(AmaranthPort(ctx, dut.i), payload)
        await ctx.tick().repeat(10 * divisor + 5)
    sim.add_testbench(bench)
    run_simulation(sim, 10 * divisor * (len(payload) + 2) + 50)
    start = trace.index(0)
    expected = [level for byte in payload for level in char_bits(byte) for _ in range(divisor)]
    assert all(trace[:start])
    assert trace[start:start + len(expected)] == expected
    assert all(trace[start + len(expected):])


@pytest.mark.parametrize("divisor", [4, 7])
def test_receiver_glitches_framing_error_and_break(divisor):
    rng = random.Random(divisor)
    dut = UARTReceiver(divisor=divisor)
    sim = Simulator(dut)
    errors = pulse_counter(sim, dut.error)
    sink = StreamSink(rng)
    good = [rng.randrange(256) for _ in range(6)]
    marks = {}

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        # Low pulses up to half a bit long are not start bits.
        for width in range(1, divisor // 2 + 1):
            ctx.set(dut.rx, 0)
            await ctx.tick().repeat(width)
            ctx.set(dut.rx, 1)
            await ctx.tick().repeat(divisor)
        await send_bytes(ctx, dut.rx, divisor, good[:2])
        marks["before_error"] = errors[0]
        # A low stop bit: one error pulse, no character.
        await send_bytes(ctx, dut.rx, divisor, [0x5A], bad_stop={0})
        await ctx.tick().repeat(2 * divisor)
        marks["after_error"] = errors[0]
        await send_bytes(ctx, dut.rx, divisor, good[2:4], rng=rng, max_gap=divisor)
        # A break (line low for three characters): a single error pulse.
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(30 * divisor)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(divisor)
        marks["after_break"] = errors[0]
        await send_bytes(ctx, dut.rx, divisor, good[4:])
        await ctx.tick().repeat(2 * divisor)
    sim.add_testbench(bench)
    sim.add_testbench(stream_bench(sink.receive, dut.o, len(good)))
    check_protocol(sim, dut.o, "o")
    run_simulation(sim, 200 * divisor)
    assert sink.received == good
    assert marks == {"before_error": 0, "after_error": 1, "after_break": 2}
    assert errors == [2]


@pytest.mark.parametrize("divisor", [5, 6])
def test_receiver_overrun_and_latency(divisor):
    dut = UARTReceiver(divisor=divisor)
    sim = Simulator(dut)
    overruns = pulse_counter(sim, dut.overrun)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2)
        ctx.set(dut.o.ready, 0)
        # Cycles are counted from the clock edge that first sees the start bit.
        await send_bytes(ctx, dut.rx, divisor, [0x3C])
        cycles = 10 * divisor
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        seen["latency"] = cycles
        await send_bytes(ctx, dut.rx, divisor, [0xC3])  # arrives while 0x3C still waits
        await ctx.tick().repeat(divisor)
        seen["kept"] = ctx.get(dut.o.payload)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        seen["after"] = ctx.get(dut.o.valid)
    sim.add_testbench(bench)
    check_protocol(sim, dut.o, "o")
    run_simulation(sim, 40 * divisor)
    assert seen == {"latency": 3 + divisor // 2 + 9 * divisor, "kept": 0x3C, "after": 0}
    assert overruns == [1]


def test_parameter_errors():
    with pytest.raises(ValueError, match="divisor must be at least 4"):
        UARTReceiver(divisor=3)
    with pytest.raises(TypeError, match="divisor must be an int"):
        UARTTransmitter(divisor=4.0)
    core = StandInCore(pixels=16, classes=4)
    with pytest.raises(ValueError, match="timeout_cycles must be at least 80"):
        UARTTop(core, divisor=4, timeout_cycles=79)
    with pytest.raises(TypeError, match="core must have stream port 'o'"):
        UARTTop(UARTTransmitter(divisor=4), divisor=4, timeout_cycles=100)
    with pytest.raises(TypeError, match="must expose a 'pixels' property"):
        UARTTop(SimpleNamespace(i=None, o=None), divisor=4, timeout_cycles=100)
    with pytest.raises(ValueError, match=r"core.classes is 300; .* 1..255"):
        UARTTop(StandInCore(pixels=300, classes=300), divisor=4, timeout_cycles=100)


# --- The whole protocol ---------------------------------------------------------------------

DIVISOR = 4
TIMEOUT = 120


def bad_crc(request):
    return request[:-1] + bytes([request[-1] ^ 0x01])


def reframe(image, command=CMD_CLASSIFY):
    """A request for ``image`` with a valid CRC but any command byte."""
    flat = bytes(np.asarray(image, np.uint8).reshape(-1))
    body = bytes([command]) + len(flat).to_bytes(2, "little") + flat
    return REQUEST_MAGIC + body + bytes([crc8(body)])


def bench_frame(image, repeats):
    """A bench request with a valid CRC and any repeat count (0 included)."""
    flat = bytes(np.asarray(image, np.uint8).reshape(-1))
    body = (bytes([CMD_BENCH]) + len(flat).to_bytes(2, "little") + repeats.to_bytes(2, "little")
            + flat)
    return REQUEST_MAGIC + body + bytes([crc8(body)])


def core_activity(sim, core):
    """Record, per cycle: core input transfer, input starved, output valid, output transfer.

    The input is *starved* in a cycle in which the core is ready and no pixel is offered.
    """
    log = []

    async def process(ctx):
        async for _, _, i_valid, i_ready, o_valid, o_ready in ctx.tick().sample(
                core.i.valid, core.i.ready, core.o.valid, core.o.ready):
            log.append((i_valid and i_ready, i_ready and not i_valid, o_valid,
                        o_valid and o_ready))
    sim.add_process(process)
    return log


def result_appearances(log):
    """The cycle in which each result of the core appeared on its output (``valid`` rose)."""
    cycles, waiting = [], False
    for cycle, (_, _, valid, taken) in enumerate(log):
        if valid and not waiting:
            cycles.append(cycle)
            waiting = True
        if taken:
            waiting = False
    return cycles


def run_device(core, steps, seed=0, activity=None):
    """Send each step's bytes to a UARTTop around ``core``; return what came back per step.

    A step is ``(name, payload, send_options, expect_response)``; after it the testbench
    waits for one whole response (or, where none is expected, for twice the timeout). A
    list passed as ``activity`` collects :func:`core_activity`'s log.
    """
    rng = random.Random(seed)
    dut = UARTTop(core, divisor=DIVISOR, timeout_cycles=TIMEOUT)
    sim = Simulator(dut)
    received = []
    line_decoder(sim, dut.tx, DIVISOR, received)
    pixels_in = check_protocol(sim, core.i, "core.i")
    results = check_protocol(sim, core.o, "core.o")
    log = core_activity(sim, core)
    replies = []

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        for name, payload, options, expect in steps:
            start = len(received)
            await send_bytes(ctx, dut.rx, DIVISOR, payload, rng=rng, **options)
            if not expect:
                await ctx.tick().repeat(2 * TIMEOUT + 20 * DIVISOR)
                replies.append((name, bytes(received[start:]), None, None))
                continue
            waited = 0
            bench = payload[2:3] == bytes([CMD_BENCH])
            while len(received) < start + 6 or len(received) < start + response_length(
                    bytes(received[start:start + 6]), bench=bench):
                await ctx.tick().repeat(DIVISOR)
                waited += DIVISOR
                assert waited < 4 * TIMEOUT + 600 * DIVISOR, f"{name}: no response"
            await ctx.tick().repeat(2 * DIVISOR)  # the stop bit, then status registers
            replies.append((name, bytes(received[start:]), ctx.get(dut.status),
                            ctx.get(dut.last_label)))
    sim.add_testbench(bench)
    total = sum(len(payload) for _, payload, _, _ in steps)
    run_simulation(sim, total * 12 * DIVISOR + len(steps) * (6 * TIMEOUT + 700 * DIVISOR))
    if activity is not None:
        activity.extend(log)
    return dut, replies, pixels_in, results


@pytest.mark.parametrize("pixels,classes", [(16, 4), (12, 3), (9, 1)])
def test_device_answers_frames(pixels, classes):
    np_rng = np.random.default_rng(pixels)
    core = StandInCore(pixels=pixels, classes=classes)
    images = [np_rng.integers(0, 256, size=pixels, dtype=np.uint8) for _ in range(3)]
    images.append(np.full(pixels, 255, np.uint8))  # extreme logits: sign extension, ties
    images.append(np.zeros(pixels, np.uint8))
    steps = [(f"image {n}", encode_request(image), {"max_gap": 2 * DIVISOR}, True)
             for n, image in enumerate(images)]
    dut, replies, pixels_in, results = run_device(core, steps)
    width = logit_bytes(core.logit_bits)
    assert dut.response_bytes == 7 + classes * width
    for image, (name, reply, status, last_label) in zip(images, replies, strict=True):
        label, logits = core.model(image)
        assert reply == encode_response(Status.OK, label, logits, width), name
        response = decode_response(reply)
        assert response.ok and (response.label, response.logits) == (label, logits)
        assert status == Status.OK and last_label == label
    assert len(pixels_in) == pixels * len(images) and len(results) == len(images)
    assert [p for p in pixels_in] == [int(p) for image in images for p in image]


def test_device_recovers_from_every_error():
    pixels, classes = 16, 4
    core = StandInCore(pixels=pixels, classes=classes)
    np_rng = np.random.default_rng(7)
    rng = random.Random(7)
    image = [np_rng.integers(0, 256, size=(4, 4), dtype=np.uint8) for _ in range(9)]
    request = [encode_request(x) for x in image]
    garbage = bytes(rng.choice([b for b in range(256) if b != REQUEST_MAGIC[0]])
                    for _ in range(20))
    garbage = garbage[:7] + b"\xa5\xa5\x13" + garbage[7:] + b"\xa5"  # magic halves only
    steps = [
        ("valid", request[0], {}, True),
        ("garbage", garbage, {"bad_stop": {3, 15}}, False),
        ("after garbage", request[1], {}, True),
        ("unknown command", reframe(image[2], command=0x07), {}, True),
        ("after command", request[2], {}, True),
        ("wrong length", reframe(image[3].reshape(-1)[:12]), {}, True),
        ("after length", request[3], {}, True),
        ("bad checksum", bad_crc(request[4]), {}, True),
        ("after checksum", request[4], {}, True),
        ("truncated", request[5][:12], {}, True),
        ("after truncation", request[5], {}, True),
        ("framing error", request[6], {"bad_stop": {9}}, True),
        ("after framing", request[6], {}, True),
        ("break", request[7][:9], {"hold_low": 40 * DIVISOR}, True),
        ("after break", request[7], {}, True),
        ("header only", reframe(image[8])[:5], {}, True),
        ("after header", request[8], {}, True),
    ]
    codes = {"unknown command": Status.COMMAND, "wrong length": Status.LENGTH,
             "bad checksum": Status.CHECKSUM, "truncated": Status.TIMEOUT,
             "framing error": Status.FRAMING, "break": Status.FRAMING,
             "header only": Status.TIMEOUT}
    _, replies, pixels_in, results = run_device(core, steps, seed=7)
    width = logit_bytes(core.logit_bits)
    answered = iter(image)
    for name, reply, status, _ in replies:
        if name == "garbage":
            assert reply == b"", "garbage without a request magic must get no answer"
        elif name in codes:
            assert reply == encode_response(codes[name]), name
            response = decode_response(reply)
            assert not response.ok and response.status == codes[name] == status
        else:
            label, logits = core.model(next(answered))
            assert reply == encode_response(Status.OK, label, logits, width), name
            assert status == Status.OK
    # The core only ever saw whole images: those of the valid requests.
    assert len(results) == 9 and len(pixels_in) == 9 * pixels


# --- Bench requests -------------------------------------------------------------------------

@pytest.mark.parametrize("repeats", [1, 2, 5])
def test_bench_runs_the_image_n_times_and_counts_cycles(repeats):
    """The count is the cycles from the first pixel taken to the N-th result, exactly.

    The testbench measures the same span on the core's own ports; the stand-in core drops
    ``i.ready`` one cycle in three and stops taking pixels while it computes, and the
    board must still offer a pixel in every cycle the core is ready, across images.
    """
    pixels, classes = 12, 3
    core = StandInCore(pixels=pixels, classes=classes)
    np_rng = np.random.default_rng(repeats)
    image, after = (np_rng.integers(0, 256, size=pixels, dtype=np.uint8) for _ in range(2))
    steps = [("classify", encode_request(image), {}, True),
             ("bench", encode_bench_request(image, repeats), {"max_gap": 2 * DIVISOR}, True),
             ("after", encode_request(after), {}, True)]
    log = []
    dut, replies, pixels_in, results = run_device(core, steps, seed=repeats, activity=log)
    width = logit_bytes(core.logit_bits)
    label, logits = core.model(image)

    taken = [cycle for cycle, entry in enumerate(log) if entry[0]]
    bench_pixels = taken[pixels:pixels * (1 + repeats)]
    first, final = bench_pixels[0], result_appearances(log)[repeats]
    starved = sum(entry[1] for entry in log[first:bench_pixels[-1]])
    assert starved == 0, f"the core was ready without a pixel in {starved} cycles"
    assert final > bench_pixels[-1]
    assert replies[1][1] == encode_response(Status.OK, label, logits, width,
                                            cycles=final - first)
    assert dut.bench_response_bytes == len(replies[1][1]) == dut.response_bytes + 5
    response = decode_response(replies[1][1], bench=True)
    assert (response.label, response.logits, response.cycles) == (label, logits, final - first)
    assert replies[1][2] == Status.OK and replies[1][3] == label
    # The classify before and after are answered as ever, without a count.
    assert replies[0][1] == encode_response(Status.OK, label, logits, width)
    assert replies[2][1] == encode_response(Status.OK, *core.model(after), width)
    flat = [int(p) for p in image]
    assert pixels_in == flat * (1 + repeats) + [int(p) for p in after]
    assert len(results) == repeats + 2


def test_bench_request_errors():
    """Bad bench requests get exact error statuses, feed the core nothing, and are recovered."""
    pixels, classes = 12, 3
    core = StandInCore(pixels=pixels, classes=classes)
    np_rng = np.random.default_rng(5)
    image = [np_rng.integers(0, 256, size=pixels, dtype=np.uint8) for _ in range(9)]
    good = [encode_request(x) for x in image]
    steps = [
        ("repeats 0", bench_frame(image[0], 0), {}, True),
        ("after repeats 0", good[0], {}, True),
        ("bad checksum", bad_crc(encode_bench_request(image[1], 3)), {}, True),
        ("after checksum", good[1], {}, True),
        ("wrong length", bench_frame(image[2][:-1], 3), {}, True),
        # The pixel count is checked first: its error wins over N = 0.
        ("wrong length and repeats 0", bench_frame(image[3][:-1], 0), {}, True),
        ("after length", good[3], {}, True),
        ("header only", bench_frame(image[4], 2)[:7], {}, True),
        ("after header", good[4], {}, True),
        ("framing error", encode_bench_request(image[5], 2), {"bad_stop": {6}}, True),
        ("after framing", good[5], {}, True),
        ("unknown command", reframe(image[6], command=0x03), {}, True),
        ("bench after errors", encode_bench_request(image[7], 2), {}, True),
        ("largest count", bench_frame(image[8], 0xFFFF)[:7], {}, True),
    ]
    codes = {"repeats 0": Status.REPEATS, "bad checksum": Status.CHECKSUM,
             "wrong length": Status.LENGTH, "wrong length and repeats 0": Status.LENGTH,
             "header only": Status.TIMEOUT, "framing error": Status.FRAMING,
             "unknown command": Status.COMMAND, "largest count": Status.TIMEOUT}
    _, replies, pixels_in, results = run_device(core, steps, seed=5)
    width = logit_bytes(core.logit_bits)
    for (name, reply, status, _), (_, payload, _, _) in zip(replies, steps, strict=True):
        if name in codes:
            assert reply == encode_response(codes[name]), name
            assert decode_response(reply, bench=True).status == codes[name] == status, name
        elif name.startswith("after"):
            index = [x.tobytes() for x in image].index(payload[5:-1])
            assert reply == encode_response(Status.OK, *core.model(image[index]), width), name
        else:
            response = decode_response(reply, bench=True)
            assert (response.label, response.logits) == core.model(image[7])
            assert response.cycles > 0
    # Only the good requests reached the core: five classify requests and one bench of 2.
    assert len(pixels_in) == 7 * pixels and len(results) == 7


def test_bench_timer_counts_and_saturates():
    dut = BenchTimer()
    sim = Simulator(dut)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await ctx.tick().repeat(3)
        seen["before start"] = ctx.get(dut.count)
        ctx.set(dut.start, 1)  # the first input transfer
        await ctx.tick()
        await ctx.tick().repeat(6)  # later transfers do not restart it
        ctx.set(dut.start, 0)
        ctx.set(dut.stop, 1)  # 7 cycles after the start
        await ctx.tick()
        await ctx.tick().repeat(4)  # the last result stays on the output: no more counting
        seen["stopped"] = ctx.get(dut.count)
        ctx.set(dut.stop, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen["cleared"] = ctx.get(dut.count)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.count, (1 << CYCLE_COUNT_BITS) - 3)  # a very long run, near the top
        await ctx.tick().repeat(5)
        seen["saturated"] = ctx.get(dut.count)
    sim.add_testbench(bench)
    run_simulation(sim, 100)
    assert seen == {"before start": 0, "stopped": 7, "cleared": 0,
                    "saturated": (1 << CYCLE_COUNT_BITS) - 1}


@pytest.mark.parametrize("pixels,repeats,stall", [(5, 4, 0.0), (5, 3, 0.4), (1, 6, 0.3)])
def test_feeder_streams_images_back_to_back(pixels, repeats, stall):
    """Under backpressure every pixel comes in order and ``valid`` never drops mid-run."""
    rng = random.Random(pixels * 10 + repeats)
    image = [rng.randrange(256) for _ in range(pixels)]
    m = Module()
    m.submodules.feeder = feeder = ImageFeeder(pixels=pixels)
    m.submodules.buffer = buffer = Memory(shape=unsigned(8), depth=pixels, init=image)
    wiring.connect(m, feeder.read, buffer.read_port())
    sim = Simulator(m)
    sent = check_protocol(sim, feeder.o, "o")
    jobs = check_protocol(sim, feeder.i, "i")
    sink = StreamSink(rng, stall=stall)
    valid_log = []

    async def monitor(ctx):
        async for _, _, valid in ctx.tick().sample(feeder.o.valid):
            valid_log.append(valid)
    sim.add_process(monitor)

    async def bench(ctx):
        for count in (repeats, 1):
            ctx.set(feeder.i.payload, count)
            ctx.set(feeder.i.valid, 1)
            await ctx.tick().until(feeder.i.ready)
            ctx.set(feeder.i.valid, 0)
            await ctx.tick().until(~feeder.o.valid & feeder.i.ready)
    sim.add_testbench(bench)
    sim.add_testbench(stream_bench(sink.receive, feeder.o, pixels * (repeats + 1)))
    run_simulation(sim, 100 * pixels * (repeats + 1))
    assert sink.received == sent == image * (repeats + 1)
    assert jobs == [repeats, 1]
    # One unbroken stretch of valid per job: the first image's pixels to the last one's.
    stretches = "".join("1" if v else "0" for v in valid_log).strip("0").split("0")
    assert len([s for s in stretches if s]) == 2


@pytest.mark.synth
def test_device_synthesizes_for_ice40():
    from hw.toolchain import synthesize

    core = StandInCore(pixels=784, classes=10)
    report = synthesize(UARTTop(core, divisor=104, timeout_cycles=12_000_000 // 20), "ice40")
    # The 784-byte image buffer is block RAM (two 512 x 8 SB_RAM40_4K), not flip-flops.
    assert report["brams"] == 2
    assert 0 < report["ffs"] < 600 and 0 < report["luts"] < 2000
