"""cocotb testbench of the board top (``nnfpga_uart_top``) driven by the real host driver.

``sw.host.Board``, the code that talks to a board's serial port, runs in a bridge thread on a
:class:`sim.uart_model.SimSerial` whose bytes travel bit by bit over the top's ``rx`` and
``tx`` pins. It classifies images (every label and logit must equal ``sw.golden.classify``)
with damaged exchanges in between (:data:`sim.uart.FAULTS`), each answered as
``docs/protocol.md`` says and followed by a correct classification; then it sends bench
requests for image 0 (``Board.bench``) and records their cycle counts, whose last results
must equal the golden model's too. At the end the byte stream the device sent must be
exactly the expected responses, with nothing left over.

Configuration arrives through the environment (see :func:`sim.uart.simulate_uart_top`):
``NNFPGA_QMODEL`` (quantized model ``.npz``), ``NNFPGA_IMAGES`` (``.npz`` with ``images``),
``NNFPGA_FOLD`` (JSON as ``hw.network.Fold.to_json`` writes it), ``NNFPGA_DIVISOR``,
``NNFPGA_TIMEOUT`` (the device's idle timeout in cycles), ``NNFPGA_FAULTS``
(comma-separated), ``NNFPGA_BENCH`` (comma-separated repeat counts), ``NNFPGA_SEED`` and
``NNFPGA_RESULTS`` (where the JSON results go).
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge
from cocotb.triggers import ClockCycles

from hw.network import Accelerator, fold_from_json
from sim.uart import FAULTS
from sim.uart_model import SimSerial, UARTDriver, UARTMonitor, character_levels
from sw.golden import classify
from sw.host import (
    CMD_BENCH,
    REQUEST_MAGIC,
    Board,
    DeviceError,
    Status,
    crc8,
    encode_load_request,
    encode_request,
    encode_response,
    logit_bytes,
)
from sw.qmodel import load_qmodel

__all__ = ["HostSession", "uart_top_classifies_and_recovers"]

#: Clock period of the simulation, ns.
PERIOD_NS = 10
#: Wall-clock seconds ``Board`` waits; simulated deadlines end a hang long before.
HOST_TIMEOUT_S = 600.0

#: What each fault must produce: an error response's status, or no response at all.
EXPECTED = {
    "garbage": "silent", "magic": "silent", "command": int(Status.COMMAND),
    "length": int(Status.LENGTH), "truncated": int(Status.TIMEOUT),
    "framing": int(Status.FRAMING), "checksum": int(Status.CHECKSUM), "retry": "answer",
    "repeats": int(Status.REPEATS),
}
#: A command byte no board knows.
UNKNOWN_COMMAND = 0x7F


class HostSession:
    """The host side, run in a bridge thread: classifications and faults through ``Board``.

    Parameters
    ----------
    port : SimSerial
    images : ndarray of uint8, shape (N, H, W[, C])
    labels, logits : ndarray
        The golden model's answers for ``images``.
    width : int
        Bytes per logit in a response.
    quiet_cycles : int
        How long to watch the line after a fault that must get no response.
    peek : async callable
        Returns the top's ``(status, last_label)`` pins.
    seed : int
    """

    def __init__(self, port, images, labels, logits, *, width, quiet_cycles, peek, seed,
                 load_image=b""):
        self.port, self.images, self.width = port, images, width
        self.load_image = load_image
        self.divisor = port.driver.divisor
        self.golden_labels, self.golden_logits = labels, logits
        self.quiet_cycles, self.peek = quiet_cycles, peek
        self.rng = random.Random(seed)
        self.board = Board(port, timeout=HOST_TIMEOUT_S, pixels=images[0].size)
        self.labels = [None] * len(images)
        self.logits = [None] * len(images)
        self.mismatches = set()
        self.faults, self.problems = [], []
        self.benches = []  # one {"repeats", "cycles", "label", "logits"} per bench request
        self.responses = []  # the responses the device must send, in order
        self.status = 0  # what the status pin must show

    def _expect_answer(self, index):
        self.responses.append(encode_response(Status.OK, int(self.golden_labels[index]),
                                              self.golden_logits[index].tolist(), self.width))
        self.status = int(Status.OK)

    def _check_pins(self, when, label=None):
        status, last_label = self.port.call(self.peek)
        if status != self.status:
            self.problems.append(f"{when}: status pin {status}, expected {self.status}")
        if label is not None and last_label != label:
            self.problems.append(f"{when}: last_label pin {last_label}, expected {label}")

    def classify(self, index, board=None):
        """Classify image ``index`` and compare with the golden model."""
        label, logits = (board or self.board).classify(self.images[index])
        self.labels[index], self.logits[index] = label, logits
        if label != self.golden_labels[index] or logits != self.golden_logits[index].tolist():
            self.mismatches.add(index)
        self._expect_answer(index)
        self._check_pins(f"after image {index}", label)

    def _quiet(self):
        self.port.flush()
        self.port.wait_cycles(self.quiet_cycles)
        return "silent" if self.port.in_waiting == 0 else f"{self.port.in_waiting} bytes"

    def _request(self, data):
        try:
            self.board.request(data)
        except DeviceError as error:
            return error.status
        return "answer"

    def fault(self, name, index):
        """Damage an exchange as ``name`` says, using image ``index``; record the outcome."""
        image = self.images[index]
        request = encode_request(image)
        if name == "garbage":
            garbage = bytes(self.rng.choice([b for b in range(256) if b != REQUEST_MAGIC[0]])
                            for _ in range(23))
            self.port.write(garbage)
            # A framing error and a glitch (shorter than half a bit) between requests are
            # ignored too, even a broken first magic byte.
            self.port.write_levels([*character_levels(REQUEST_MAGIC[0], stop=0), 1])
            self.port.write_pulse(max(1, self.divisor // 2 - 1))
            self.port.write_levels([1])
            # A lone first magic byte starts nothing either (the next request follows it).
            self.port.write(REQUEST_MAGIC[:1])
            got = self._quiet()
        elif name == "magic":
            # No pixel may be a first magic byte, so nothing later can start a request.
            clean = np.where(image == REQUEST_MAGIC[0], REQUEST_MAGIC[0] - 1, image)
            self.port.write(REQUEST_MAGIC[:1] + b"\x00" + encode_request(clean)[2:])
            got = self._quiet()
        elif name == "command":
            body = bytes([UNKNOWN_COMMAND]) + request[3:-1]
            got = self._request(REQUEST_MAGIC + body + bytes([crc8(body)]))
        elif name == "repeats":
            # A bench request with N = 0, which encode_bench_request refuses to build.
            body = bytes([CMD_BENCH]) + request[3:5] + bytes(2) + request[5:-1]
            got = self._request(REQUEST_MAGIC + body + bytes([crc8(body)]))
        elif name == "length":
            got = self._request(encode_request(image.reshape(-1)[:-1]))
        elif name == "truncated":
            got = self._request(request[:len(request) // 2])
        elif name == "framing":
            self.port.inject_framing_error(len(request) // 2)
            got = self._request(request)
        elif name == "checksum":
            damaged = bytearray(request)
            damaged[5 + (len(damaged) - 6) // 2] ^= 0x10  # a pixel bit flipped on the line
            got = self._request(bytes(damaged))
        elif name == "retry":
            self.port.inject_framing_error(7)
            self.responses.append(encode_response(Status.FRAMING))
            before = len(self.mismatches)
            self.classify(index, Board(self.port, timeout=HOST_TIMEOUT_S, retries=1))
            got = "answer" if len(self.mismatches) == before else "wrong answer"
        else:
            raise ValueError(f"unknown fault {name!r}")
        if isinstance(EXPECTED[name], int):
            self.responses.append(encode_response(EXPECTED[name]))
            self.status = EXPECTED[name]
        self.faults.append({"fault": name, "expected": EXPECTED[name], "got": got})
        self._check_pins(f"after fault {name!r}")

    def bench(self, repeats):
        """Bench image 0 ``repeats`` times; its last result must be the golden model's."""
        cycles, label, logits = self.board.bench(self.images[0], repeats)
        self.benches.append({"repeats": repeats, "cycles": cycles, "label": label,
                             "logits": logits})
        if label != self.golden_labels[0] or logits != self.golden_logits[0].tolist():
            self.mismatches.add(0)
        self.responses.append(encode_response(Status.OK, int(self.golden_labels[0]),
                                              self.golden_logits[0].tolist(), self.width,
                                              cycles=cycles))
        self.status = int(Status.OK)
        self._check_pins(f"after bench of {repeats}", label)

    def _refused(self, when):
        """Image 0 before the weights are whole: refused with ``NOT_LOADED``."""
        got = self._request(encode_request(self.images[0]))
        self.responses.append(encode_response(Status.NOT_LOADED))
        self.status = int(Status.NOT_LOADED)
        self.faults.append({"fault": f"classify {when}", "expected": int(Status.NOT_LOADED),
                            "got": got})
        self._check_pins(f"classify {when}")

    def load(self):
        """A core with loaded weights: refused before a load and after a damaged one (whose
        words were written all the same), then loaded with the good image."""
        self._refused("before the load")
        damaged = bytearray(encode_load_request(self.load_image))
        damaged[len(damaged) // 2] ^= 0x01
        try:
            self.board.request(bytes(damaged), load=True)
            got = "answer"
        except DeviceError as error:
            got = error.status
        self.responses.append(encode_response(Status.CHECKSUM))
        self.faults.append({"fault": "damaged load", "expected": int(Status.CHECKSUM),
                            "got": got})
        self._refused("after a damaged load")
        self.board.load(self.load_image)
        self.responses.append(encode_response(Status.OK, width=0))
        self.status = int(Status.OK)
        self._check_pins("after the load")

    def run(self, faults, benches=()):
        """With loaded weights :meth:`load` first; image 0, then each fault followed by the
        next image, the remaining images, and the bench requests of image 0."""
        if self.load_image:
            self.load()
        self.classify(0)
        for step in range(1, max(len(self.images), len(faults) + 1)):
            index = step % len(self.images)
            if step <= len(faults):
                self.fault(faults[step - 1], index)
            self.classify(index)
        for repeats in benches:
            self.bench(repeats)
        self.port.flush()
        self.port.wait_cycles(self.quiet_cycles)


def _budget(core, character, timeout, images, faults, benches):
    """``(read_timeout, quiet, deadline)`` in cycles for a session with the core: the host's
    read timeout, the quiet line that ends a frame, and the whole run's deadline."""
    # Cycles from the last request byte to the whole response, generously: every stage's
    # full pass one after another, plus the response's characters.
    latency = 2 * sum(stage.cycles for stage in core.stages) + 1000
    # A bench answers after N images: N latencies bound it, as no interval exceeds one.
    latency *= max([1, *benches])
    response_cycles = character * (12 + core.classes * logit_bytes(core.logit_bits))
    request_cycles = character * (8 + core.pixels)
    read_timeout = 2 * (timeout + latency + response_cycles)
    quiet = 2 * timeout + response_cycles + 4 * character
    steps = max(images, len(faults) + 1) + len(faults) + len(benches)
    # A load: four requests, two of them the whole load image.
    load = character * 2 * core.load_words * 2 + 4 * (request_cycles + read_timeout + quiet)
    return (read_timeout, quiet,
            4 * steps * (request_cycles + read_timeout + quiet) + 10000 + 2 * load)


def _leftovers(dut, driver, monitor, port, expected_transcript):
    """Problems at the end of a session: nothing may be left over (no byte unread, no stray
    or broken character, the line idle) and the device sent exactly the expected bytes."""
    problems = []
    if monitor.buffer:
        problems.append(f"{len(monitor.buffer)} bytes left unread: {monitor.buffer.hex(' ')}")
    if monitor.framing_errors or monitor.glitches:
        problems.append(f"tx had {monitor.framing_errors} framing errors and "
                        f"{monitor.glitches} glitches")
    if not driver.idle or monitor.receiving or not int(dut.tx.value):
        problems.append("the line is not idle at the end")
    if bytes(monitor.transcript) != expected_transcript:
        problems.append(f"the device sent {len(monitor.transcript)} bytes "
                        f"{bytes(monitor.transcript).hex()}, expected "
                        f"{len(expected_transcript)} bytes {expected_transcript.hex()}")
    if port.timeouts:
        problems.append(f"{port.timeouts} reads timed out")
    return problems


@cocotb.test()
async def uart_top_classifies_and_recovers(dut):
    qmodel = load_qmodel(os.environ["NNFPGA_QMODEL"])
    with np.load(os.environ["NNFPGA_IMAGES"], allow_pickle=False) as npz:
        images = npz["images"]
    fold = fold_from_json(json.loads(os.environ.get("NNFPGA_FOLD", "{}")))
    divisor = int(os.environ["NNFPGA_DIVISOR"])
    timeout = int(os.environ["NNFPGA_TIMEOUT"])
    faults = [name for name in os.environ.get("NNFPGA_FAULTS", "").split(",") if name]
    benches = [int(n) for n in os.environ.get("NNFPGA_BENCH", "").split(",") if n]
    seed = int(os.environ.get("NNFPGA_SEED", "0"))
    unknown = sorted(set(faults) - set(FAULTS))
    assert not unknown, f"unknown faults {unknown}"

    core = Accelerator(qmodel, fold)
    width = logit_bytes(core.logit_bits)
    golden_labels, golden_logits = classify(qmodel, images)
    character = 10 * divisor
    read_timeout, quiet, deadline = _budget(core, character, timeout, len(images), faults,
                                            benches)

    clock = Clock(dut.clk, PERIOD_NS, unit="ns")
    clock.start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    driver = UARTDriver(clock, dut.rx, divisor)
    monitor = UARTMonitor(clock, dut.tx, divisor)
    cocotb.start_soon(driver.run())
    cocotb.start_soon(monitor.run())
    port = SimSerial(driver, monitor, timeout_cycles=read_timeout, deadline_cycles=deadline)

    async def peek():
        return int(dut.status.value), int(dut.last_label.value)

    session = HostSession(port, images, golden_labels, golden_logits, width=width,
                          quiet_cycles=quiet, peek=peek, seed=seed,
                          load_image=core.load_image())
    problems = session.problems
    try:
        await bridge(session.run)(faults, benches)
    except Exception as error:  # reported with the results; the checks below still run
        problems.append(f"the host stopped: {type(error).__name__}: {error}")

    await ClockCycles(dut.clk, 2 * character)
    problems += _leftovers(dut, driver, monitor, port, b"".join(session.responses))

    results = {
        "labels": session.labels, "logits": session.logits,
        "mismatches": sorted(session.mismatches), "faults": session.faults,
        "bench": session.benches, "problems": problems,
        "cycles": int(get_sim_time("ns") // PERIOD_NS),
    }
    with open(os.environ["NNFPGA_RESULTS"], "w") as file:
        json.dump(results, file)
    assert not session.mismatches, f"images {sorted(session.mismatches)} differ from golden"
    wrong = [fault for fault in session.faults if fault["expected"] != fault["got"]]
    assert not wrong, f"faults answered wrongly: {wrong}"
    assert not problems, "; ".join(problems)
