"""The host side of the UART protocol: encoding, decoding, the Board driver and its CLI."""

import subprocess
import sys
import time

import numpy as np
import pytest

from sw import host
from sw.errors import UserError
from sw.host import (
    CMD_BENCH,
    CMD_CLASSIFY,
    CMD_LOAD,
    CYCLE_COUNT_BYTES,
    MAX_LOAD_WORDS,
    MAX_REPEATS,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    BenchResult,
    Board,
    DeviceError,
    ProtocolError,
    Response,
    Status,
    bench_figures,
    crc8,
    decode_response,
    encode_bench_request,
    encode_load_request,
    encode_request,
    encode_response,
    logit_bytes,
    response_length,
)


class FakeDevice:
    """The device side of the protocol in Python, behind ``write``/``read`` like a serial port.

    ``classify(pixels)`` returns ``(label, logits)``; ``noise`` bytes precede each response;
    ``corrupt`` responses in a row get one bit flipped; ``fail`` error statuses are answered
    first, in order. A bench of ``N`` images counts ``latency + (N - 1) * interval`` cycles.
    With ``load_words`` the design has that many 16-bit words of weights to load: it answers
    classify and bench requests ``NOT_LOADED`` until a load succeeds, and a load request of
    the right size that fails (``fail`` included: in its data) leaves it not loaded; without,
    it refuses load requests.
    ``commands`` records the command byte of every request.
    """

    def __init__(self, classify, pixels, width=4, noise=b"", corrupt=0, fail=(), latency=500,
                 interval=120, load_words=None):
        self.classify, self.pixels, self.width = classify, pixels, width
        self.noise, self.corrupt, self.fail = noise, corrupt, list(fail)
        self.latency, self.interval = latency, interval
        self.load_words, self.loaded, self.loads = load_words, False, []
        self.pending = bytearray()
        self.requests = 0
        self.commands = []
        self.benches = []
        self.closed = False

    def answer(self, request):
        body = request[2:-1]
        if request[:2] != REQUEST_MAGIC:
            return b""
        if crc8(body) != request[-1]:
            return encode_response(Status.CHECKSUM)
        if body[0] == CMD_LOAD and self.load_words is not None:
            if int.from_bytes(body[1:3], "little") != self.load_words:
                return encode_response(Status.LENGTH)
            self.loads.append(bytes(body[3:]))
            self.loaded = True
            return encode_response(Status.OK, width=0)
        if body[0] not in (CMD_CLASSIFY, CMD_BENCH):
            return encode_response(Status.COMMAND)
        if self.load_words is not None and not self.loaded:
            return encode_response(Status.NOT_LOADED)
        if int.from_bytes(body[1:3], "little") != self.pixels:
            return encode_response(Status.LENGTH)
        if body[0] == CMD_CLASSIFY:
            label, logits = self.classify(np.frombuffer(body[3:], np.uint8))
            return encode_response(Status.OK, label, logits, self.width)
        repeats = int.from_bytes(body[3:5], "little")
        if repeats == 0:
            return encode_response(Status.REPEATS)
        self.benches.append(repeats)
        label, logits = self.classify(np.frombuffer(body[5:], np.uint8))
        cycles = self.latency + (repeats - 1) * self.interval
        return encode_response(Status.OK, label, logits, self.width, cycles=cycles)

    def write(self, data):
        self.requests += 1
        self.commands.append(bytes(data)[2])
        if bytes(data)[2:5] == bytes([CMD_LOAD, *(self.load_words or 0).to_bytes(2, "little")]):
            self.loaded = False  # the data overwrites the weights: only an OK load loads
        response = encode_response(self.fail.pop(0)) if self.fail else self.answer(bytes(data))
        if self.corrupt and response:
            self.corrupt -= 1
            response = response[:-2] + bytes([response[-2] ^ 0x10]) + response[-1:]
        self.pending += self.noise + response
        return len(data)

    def read(self, count):
        chunk = bytes(self.pending[:count])
        del self.pending[:count]
        return chunk

    def reset_input_buffer(self):
        self.pending.clear()

    def close(self):
        self.closed = True


def sums(pixels):
    """A toy classifier: logits are the pixel sums of 10 interleaved groups, minus 3000."""
    logits = [int(pixels[c::10].astype(np.int64).sum()) - 3000 for c in range(10)]
    return int(np.argmax(logits)), logits


def crc8_by_division(data):
    """CRC-8/SMBUS as the remainder of ``data * x^8`` divided by ``x^8 + x^2 + x + 1``."""
    remainder = int.from_bytes(bytes(data), "big") << 8
    for shift in range(remainder.bit_length() - 9, -1, -1):
        if remainder >> (shift + 8) & 1:
            remainder ^= 0x107 << shift
    return remainder


def test_crc8_is_crc8_smbus():
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0 and crc8(b"\x00") == 0 and crc8(b"\x01") == 0x07
    assert crc8(b"6789", crc8(b"12345")) == 0xF4
    for data in (b"123456789", b"\x00", b"\x80", bytes(range(256))):
        assert crc8(data) == crc8_by_division(data)


def test_examples_of_docs_protocol_md():
    """The wire format is pinned: these are the byte-for-byte examples in docs/protocol.md."""
    request = encode_request(np.array([[0, 128], [255, 7]], np.uint8))
    assert request == bytes.fromhex("a5 5a 01 04 00 00 80 ff 07 b2")
    logits = [-1520, 310, 2049, -7, 0, 12, -300000, 5, 44, 25000]
    assert encode_response(Status.OK, 9, logits, 3) == bytes.fromhex(
        "5a a5 00 09 0a 03 10 fa ff 36 01 00 01 08 00 f9 ff ff 00 00 00"
        "0c 00 00 20 6c fb 05 00 00 2c 00 00 a8 61 00 da")
    assert encode_response(Status.TIMEOUT) == bytes.fromhex("5a a5 02 00 00 00 2c")
    assert encode_request(np.zeros((28, 28), np.uint8))[:5] == bytes.fromhex("a5 5a 01 10 03")
    # The bench examples.
    assert encode_bench_request(np.array([[0, 128], [255, 7]], np.uint8), 5) == bytes.fromhex(
        "a5 5a 02 04 00 05 00 00 80 ff 07 fa")
    assert encode_bench_request(np.zeros((28, 28), np.uint8), 1000)[:7] == bytes.fromhex(
        "a5 5a 02 10 03 e8 03")
    assert 3000 + 999 * 2000 == 2_001_000 == 0x1E8868
    assert encode_response(Status.OK, 9, logits, 3, cycles=2_001_000) == bytes.fromhex(
        "5a a5 00 09 0a 03 10 fa ff 36 01 00 01 08 00 f9 ff ff 00 00 00"
        "0c 00 00 20 6c fb 05 00 00 2c 00 00 a8 61 00 68 88 1e 00 00 0a")
    assert encode_response(Status.REPEATS) == bytes.fromhex("5a a5 06 00 00 00 74")
    # The load examples.
    assert encode_load_request(bytes.fromhex("34 12 cd ab")) == bytes.fromhex(
        "a5 5a 03 02 00 34 12 cd ab ed")
    assert encode_load_request(bytes(12_004))[:5] == bytes.fromhex("a5 5a 03 72 17")
    assert 12_004 // 2 == 6002 == 0x1772
    assert encode_response(Status.OK, width=0) == bytes.fromhex("5a a5 00 00 00 00 00")
    assert encode_response(Status.NOT_LOADED) == bytes.fromhex("5a a5 07 00 00 00 62")


def test_encode_request_layout():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    request = encode_request(image)
    body = bytes([CMD_CLASSIFY, 6, 0, 0, 1, 2, 3, 4, 5])
    assert request == REQUEST_MAGIC + body + bytes([crc8(body)])
    # Colour images go in raster order, channels innermost (HWC).
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert encode_request(rgb)[5:-1] == bytes(range(12))
    mnist = np.full((28, 28), 7, np.uint8)
    request = encode_request(mnist)
    assert len(request) == 5 + 784 + 1 and request[3:5] == (784).to_bytes(2, "little")
    # Integer arrays with pixel values are accepted as they are.
    assert encode_request(image.astype(np.int64)) == encode_request(image)


@pytest.mark.parametrize("image,match", [
    (np.zeros((2, 2), np.float32), "uint8 pixels"),
    (np.array([[0, 256]]), "uint8 pixels"),
    (np.array([[-1, 0]]), "uint8 pixels"),
    (np.zeros((1, 2, 2, 1), np.uint8), "shape"),
    (np.zeros((0, 4), np.uint8), "0 pixels"),
    (np.zeros(70000, np.uint8), "70000 pixels"),
])
def test_encode_request_rejects(image, match):
    with pytest.raises(ValueError, match=match):
        encode_request(image)


@pytest.mark.parametrize("width", range(1, 9))
def test_response_round_trip(width):
    rng = np.random.default_rng(width)
    bound = 1 << (8 * width - 1)
    for classes in (1, 2, 10, 255):
        logits = [int(v) for v in rng.integers(-bound, bound, size=classes, dtype=np.int64)]
        logits[0] = -bound
        logits[-1] = bound - 1
        label = int(rng.integers(0, classes))
        data = encode_response(Status.OK, label, logits, width)
        assert len(data) == 7 + classes * width == response_length(data[:6])
        response = decode_response(data)
        assert response == Response(Status.OK, label, logits) and response.ok


def test_encode_bench_request_layout():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    request = encode_bench_request(image, 0x1234)
    body = bytes([CMD_BENCH, 6, 0, 0x34, 0x12, 0, 1, 2, 3, 4, 5])
    assert request == REQUEST_MAGIC + body + bytes([crc8(body)])
    # The pixels are those of the classify request, after the repeat count.
    assert request[7:-1] == encode_request(image)[5:-1]
    assert encode_bench_request(image, np.int64(MAX_REPEATS))[5:7] == b"\xff\xff"


@pytest.mark.parametrize("repeats,error,match", [
    (0, ValueError, r"repeats must be 1\.\.65535, not 0"),
    (MAX_REPEATS + 1, ValueError, "not 65536"),
    (-1, ValueError, "not -1"),
    (True, TypeError, "repeats must be an int"),
    (2.0, TypeError, "repeats must be an int"),
])
def test_encode_bench_request_rejects(repeats, error, match):
    with pytest.raises(error, match=match):
        encode_bench_request(np.zeros((2, 2), np.uint8), repeats)


def test_bench_response_round_trip():
    logits = [-(1 << 23), 5, (1 << 23) - 1]
    for cycles in (0, 1, 2_001_000, (1 << (8 * CYCLE_COUNT_BYTES)) - 1):
        data = encode_response(Status.OK, 2, logits, 3, cycles=cycles)
        assert len(data) == 7 + 3 * 3 + CYCLE_COUNT_BYTES == response_length(data, bench=True)
        assert decode_response(data, bench=True) == Response(Status.OK, 2, logits, cycles)
        # Read as a classify response, the count's bytes are extra: refused, not ignored.
        with pytest.raises(ProtocolError, match="length 21 bytes, its header says 16"):
            decode_response(data)
    # Error responses to bench requests carry no count.
    data = encode_response(Status.REPEATS, cycles=1234)
    assert data == encode_response(Status.REPEATS) and response_length(data, bench=True) == 7
    assert decode_response(data, bench=True) == Response(Status.REPEATS, 0, [], None)
    assert decode_response(encode_response(Status.OK, 1, [1], 1)).cycles is None
    with pytest.raises(ValueError, match="cycles must fit in 5 bytes"):
        encode_response(Status.OK, 0, [1], 1, cycles=1 << 40)


def test_encode_load_request_layout():
    data = bytes([0x01, 0x02, 0xFE, 0xFF, 0x00, 0x80])
    body = bytes([0x03, 3, 0]) + data
    expected = b"\xa5\x5a" + body + bytes([crc8_by_division(body)])
    assert CMD_LOAD == 0x03 and MAX_LOAD_WORDS == 0xFFFF
    assert encode_load_request(data) == expected
    # Any bytes-like object is sent as it is.
    for same in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert encode_load_request(same) == expected
    largest = encode_load_request(bytes(2 * MAX_LOAD_WORDS))
    assert largest[3:5] == b"\xff\xff" and len(largest) == 5 + 2 * MAX_LOAD_WORDS + 1
    assert encode_load_request(b"\x5a\xa5")[3:5] == b"\x01\x00"


@pytest.mark.parametrize("data,error,match", [
    (b"", ValueError, r"load image has 0 bytes; the protocol carries 2\.\.131070 "
                      r"\(1\.\.65535 16-bit words\)"),
    (b"\x01", ValueError, "load image has 1 bytes; the protocol carries"),
    (b"\x01\x02\x03", ValueError, "load image has 3 bytes, an odd number; it must be whole "
                                   "16-bit words"),
    (bytes(2 * MAX_LOAD_WORDS + 2), ValueError, "load image has 131072 bytes; the protocol"),
    (bytes(2 * MAX_LOAD_WORDS + 1), ValueError, "load image has 131071 bytes; the protocol"),
    (4, TypeError, "data must be bytes-like, not int"),
    ("abcd", TypeError, "data must be bytes-like, not str"),
])
def test_encode_load_request_rejects(data, error, match):
    with pytest.raises(error, match=match):
        encode_load_request(data)


def test_load_response_decodes():
    data = encode_response(Status.OK, width=0)
    assert data == RESPONSE_MAGIC + bytes(4) + bytes([crc8_by_division(bytes(4))])
    assert response_length(data[:6]) == 7
    for load in (True, False):
        response = decode_response(data, load=load)
        assert response == Response(Status.OK, 0, [], None) and response.ok
    # Error responses to a load are the usual ones.
    assert decode_response(encode_response(Status.LENGTH), load=True) == Response(
        Status.LENGTH, 0, [])
    # As the answer to a load, anything but the short OK response is a protocol error.
    for other in (encode_response(Status.OK, 3, [5, -5], 2), encode_response(Status.OK),
                  encode_response(Status.OK, 2, [], 0)):
        decode_response(other)
        with pytest.raises(ProtocolError, match="the answer to a load request has label"):
            decode_response(other, load=True)
    with pytest.raises(ValueError, match="a bench request or a load request, not both"):
        decode_response(data, bench=True, load=True)
    with pytest.raises(ValueError, match=r"width must be 1\.\.8 bytes per logit"):
        encode_response(Status.OK, 0, [1], 0)


def test_bench_figures():
    figures = bench_figures(3000, 2_001_000, 1000, clock_mhz=50.0)
    assert figures == {"latency": 3000, "cycles": 2_001_000, "repeats": 1000,
                       "interval": 2000.0, "per_image": 2001.0,
                       "images_per_second": 25_000.0, "latency_us": 60.0}
    single = bench_figures(3000, 3000, 1)
    assert single["interval"] is None and single["per_image"] == 3000.0
    assert "images_per_second" not in single
    assert bench_figures(3000, 3000, 1, clock_mhz=30.0)["images_per_second"] == 10_000.0


def test_error_responses():
    for status in Status:
        if status == Status.OK:
            continue
        data = encode_response(status, label=3, logits=[1, 2], width=4)
        assert data == RESPONSE_MAGIC + bytes([status, 0, 0, 0]) + bytes([crc8([status, 0, 0, 0])])
        response = decode_response(data)
        assert response == Response(status, 0, []) and not response.ok
        error = DeviceError(status)
        assert error.status == status and status.name in str(error)
    assert "UNKNOWN" in str(DeviceError(99))


def test_decode_detects_every_single_bit_error():
    data = encode_response(Status.OK, 4, [-5, 300, 70000, -(1 << 23)], 3)
    for index in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[index] ^= 1 << bit
            with pytest.raises(ProtocolError):
                decode_response(bytes(damaged))


def test_decode_rejects_bad_framing():
    data = encode_response(Status.OK, 1, [1, 2], 2)
    with pytest.raises(ProtocolError, match="does not start with 5a a5"):
        decode_response(b"\x00" + data[1:])
    with pytest.raises(ProtocolError, match="header says 11"):
        decode_response(data + b"\x00")
    with pytest.raises(ProtocolError, match="too short"):
        decode_response(data[:5])
    with pytest.raises(ProtocolError, match="checksum mismatch"):
        decode_response(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ValueError, match="6-byte response header"):
        response_length(data[:4])


def test_encode_response_rejects():
    with pytest.raises(ValueError, match="does not fit in 1 signed bytes"):
        encode_response(Status.OK, 0, [128], 1)
    with pytest.raises(ValueError, match=r"width must be 1\.\.8"):
        encode_response(Status.OK, 0, [1], 9)
    with pytest.raises(ValueError, match="label must fit"):
        encode_response(Status.OK, 256, [1], 1)
    with pytest.raises(ValueError, match="logit_bits must be a positive int"):
        logit_bytes(0)
    assert [logit_bytes(b) for b in (1, 8, 9, 16, 17, 26, 32, 33)] == [1, 1, 2, 2, 3, 4, 4, 5]


def test_protocol_errors_are_user_errors():
    assert issubclass(ProtocolError, UserError) and issubclass(DeviceError, ProtocolError)


def test_board_classifies_and_skips_noise():
    rng = np.random.default_rng(0)
    device = FakeDevice(sums, 784, width=3, noise=b"\x00\x5a\x11\xa5\x5a")
    with Board(device, timeout=0.5, pixels=784) as board:
        for _ in range(5):
            image = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            assert board.classify(image) == sums(image.reshape(-1))
    assert device.closed and device.requests == 5


def test_board_raises_on_error_responses_and_timeouts():
    image = np.zeros((28, 28), np.uint8)
    with pytest.raises(DeviceError, match="LENGTH") as info:
        Board(FakeDevice(sums, 100), timeout=0.5).classify(image)
    assert info.value.status == Status.LENGTH
    with pytest.raises(UserError, match="784 pixels; the board's network takes 100"):
        Board(FakeDevice(sums, 100), timeout=0.5, pixels=100).classify(image)
    with pytest.raises(ProtocolError, match="checksum mismatch"):
        Board(FakeDevice(sums, 784, corrupt=1), timeout=0.5).classify(image)
    with pytest.raises(DeviceError, match="FRAMING"):
        Board(FakeDevice(sums, 784, fail=[Status.FRAMING]), timeout=0.5).classify(image)

    class Silent(FakeDevice):
        def write(self, data):
            return len(data)
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.05 s"):
        Board(Silent(sums, 784), timeout=0.05).classify(image)
    with pytest.raises(ValueError, match="timeout must be positive"):
        Board(Silent(sums, 784), timeout=0)
    with pytest.raises(ValueError, match="retries must be a non-negative int"):
        Board(Silent(sums, 784), retries=-1)


class Chatter(FakeDevice):
    """A port that answers every read with bytes that never form a response.

    It gives up (failing the test) after ``limit`` reads, so a driver that ignores its
    deadline while bytes keep arriving fails instead of hanging the suite.
    """

    def __init__(self, noise, limit=2_000_000):
        super().__init__(sums, 784)
        self.noise_byte, self.reads, self.limit = noise, 0, limit

    def write(self, data):
        return len(data)

    def read(self, count):
        self.reads += 1
        if self.reads > self.limit:
            raise AssertionError("the driver kept reading past its deadline")
        return self.noise_byte * count


@pytest.mark.parametrize("noise", [b"\x00", RESPONSE_MAGIC[:1], RESPONSE_MAGIC + b"\x00"],
                         ids=["zeros", "magic-prefix", "magic-and-header"])
def test_board_timeout_holds_while_bytes_keep_arriving(noise):
    device = Chatter(noise)
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.05 s"):
        Board(device, timeout=0.05).classify(np.zeros((28, 28), np.uint8))
    assert device.reads > 1


def test_board_retries_damaged_exchanges_only():
    image = np.arange(784, dtype=np.int64).reshape(28, 28) % 256
    expected = sums(image.reshape(-1))
    device = FakeDevice(sums, 784, corrupt=1, fail=[Status.TIMEOUT, Status.CHECKSUM])
    assert Board(device, timeout=0.5, retries=3).classify(image) == expected
    assert device.requests == 3
    # A wrong image size is no transfer error: sending it again would not help.
    device = FakeDevice(sums, 784, fail=[Status.LENGTH])
    with pytest.raises(DeviceError, match="LENGTH"):
        Board(device, timeout=0.5, retries=3).classify(image)
    assert device.requests == 1


def test_board_benches():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    device = FakeDevice(sums, 784, width=3, noise=b"\x5a\x00", latency=900, interval=300)
    with Board(device, timeout=0.5, pixels=784) as board:
        assert board.bench(image, 1) == BenchResult(900, *sums(image.reshape(-1)))
        assert board.bench(image, 7, timeout=5.0) == BenchResult(900 + 6 * 300,
                                                                 *sums(image.reshape(-1)))
        assert board.classify(image) == sums(image.reshape(-1))
    assert device.benches == [1, 7]
    with pytest.raises(UserError, match="10 pixels; the board's network takes 784"):
        Board(device, pixels=784).bench(np.zeros(10, np.uint8), 2)
    with pytest.raises(DeviceError, match="REPEATS") as info:
        Board(FakeDevice(sums, 784, fail=[Status.REPEATS]), timeout=0.5, retries=2).bench(
            image, 3)
    assert info.value.status == Status.REPEATS and "N = 0" in str(info.value)

    class Silent(FakeDevice):
        def write(self, data):
            return len(data)
    # A bench waits for its own timeout, not the board's.
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.05 s"):
        Board(Silent(sums, 784), timeout=60).bench(image, 2, timeout=0.05)


def test_board_loads():
    image = np.arange(784, dtype=np.int64).reshape(28, 28) % 256
    weights = bytes(range(256)) * 3
    device = FakeDevice(sums, 784, width=3, noise=b"\x5a\x00", load_words=384)
    with Board(device, timeout=0.5, pixels=784) as board:
        with pytest.raises(DeviceError, match="NOT_LOADED") as info:
            board.classify(image)
        assert info.value.status == Status.NOT_LOADED == 7
        assert str(info.value) == ("board reported error 7 (NOT_LOADED): the board's weights "
                                   "are not loaded (not since configuration, or the last load "
                                   "failed): send them with --load BUILD/weights.bin")
        assert board.load(weights) is None
        assert board.classify(image) == sums(image.reshape(-1))
        assert board.bench(image, 2).cycles == 500 + 120
        assert board.load(bytearray(weights)) is None
    assert device.loads == [weights, weights]
    assert device.commands == [CMD_CLASSIFY, CMD_LOAD, CMD_CLASSIFY, CMD_BENCH, CMD_LOAD]


def test_board_load_errors():
    weights = bytes(8)
    # A load image of the wrong size: not retried, and the board is left not loaded.
    device = FakeDevice(sums, 784, load_words=5)
    board = Board(device, timeout=0.5, retries=3)
    with pytest.raises(DeviceError, match=r"error 5 \(LENGTH\): the load image's size is not "
                                          r"the one the board's design takes") as info:
        board.load(weights)
    assert info.value.status == Status.LENGTH and device.requests == 1 and not device.loaded
    # Refused in its header, it leaves a loaded board loaded.
    board.load(bytes(10))
    with pytest.raises(DeviceError, match="LENGTH"):
        board.load(weights)
    assert board.classify(np.zeros((28, 28), np.uint8)) == sums(np.zeros(784, np.uint8))
    # A design without weights to load does not know the command.
    with pytest.raises(DeviceError, match=r"error 4 \(COMMAND\): the board's design has no "
                                          r"weights to load") as info:
        Board(FakeDevice(sums, 784), timeout=0.5, retries=3).load(weights)
    assert info.value.status == Status.COMMAND
    # NOT_LOADED is permanent, whatever answers it.
    device = FakeDevice(sums, 784, load_words=4, fail=[Status.NOT_LOADED])
    with pytest.raises(DeviceError, match="NOT_LOADED") as info:
        Board(device, timeout=0.5, retries=3).load(weights)
    assert info.value.status == Status.NOT_LOADED and device.requests == 1
    with pytest.raises(ValueError, match="an odd number"):
        Board(FakeDevice(sums, 784, load_words=4)).load(b"\x00" * 7)


def test_board_load_retries_damaged_exchanges():
    weights = bytes(range(10))
    device = FakeDevice(sums, 784, load_words=5, corrupt=1, fail=[Status.CHECKSUM,
                                                                   Status.TIMEOUT])
    Board(device, timeout=0.5, retries=3).load(weights)
    assert device.requests == 3 and device.loads == [weights] and device.loaded
    device = FakeDevice(sums, 784, load_words=5, fail=[Status.CHECKSUM])
    with pytest.raises(DeviceError, match="CHECKSUM") as info:
        Board(device, timeout=0.5).load(weights)
    assert info.value.status == Status.CHECKSUM and not device.loaded
    # A failed load leaves the board not loaded: classify requests are refused until a
    # load succeeds.
    device = FakeDevice(sums, 784, load_words=5)
    board = Board(device, timeout=0.5)
    board.load(weights)
    device.fail = [Status.FRAMING]
    with pytest.raises(DeviceError, match="FRAMING"):
        board.load(weights)
    with pytest.raises(DeviceError, match="NOT_LOADED"):
        board.classify(np.zeros((28, 28), np.uint8))


class Line(FakeDevice):
    """A serial line at ``baud``: a response can be read only once the request is through."""

    def __init__(self, baud, **kwargs):
        super().__init__(sums, 784, **kwargs)
        self.line_baud, self.ready = baud, 0.0

    def write(self, data):
        self.ready = time.monotonic() + 10 * len(data) / self.line_baud
        return super().write(data)

    def read(self, count):
        if time.monotonic() < self.ready:
            time.sleep(0.001)
            return b""
        return super().read(count)


def test_board_load_deadline_allows_for_the_wire():
    weights = bytes(400)  # 406 bytes on the line: 0.203 s at 20,000 baud
    device = Line(20_000, load_words=200)
    board = Board(device, timeout=0.05, baud=20_000)
    assert board.baud == 20_000 and board.wire_seconds(406) == pytest.approx(0.203)
    start = time.monotonic()
    board.load(weights)
    assert time.monotonic() - start >= 0.2 and device.loads == [weights]
    # Without the rate, the 0.05 s are over before the request is.
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.05 s"):
        Board(Line(20_000, load_words=200), timeout=0.05).load(weights)

    class Silent(FakeDevice):
        def write(self, data):
            return len(data)
    # The message gives the whole deadline; a load's own timeout replaces the board's.
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.253 s"):
        Board(Silent(sums, 784), timeout=0.05, baud=20_000).load(weights)
    with pytest.raises(ProtocolError, match=r"no response from the board within 0\.233 s"):
        Board(Silent(sums, 784), timeout=60, baud=20_000).load(weights, timeout=0.03)


def test_board_knows_the_baud_rate():
    with Board.open("loop://", baud=9600, timeout=0.5) as board:
        assert board.baud == 9600 and board.wire_seconds(96) == 0.1

    class Port(FakeDevice):
        baudrate = 115200
    assert Board(Port(sums, 784)).baud == 115200
    assert Board(Port(sums, 784), baud=300).baud == 300
    assert Board(FakeDevice(sums, 784)).baud is None
    assert Board(FakeDevice(sums, 784)).wire_seconds(10**6) == 0.0
    for baud in (0, -9600, True, "fast"):
        with pytest.raises(ValueError, match="baud must be a positive number"):
            Board(FakeDevice(sums, 784), baud=baud)


def test_cli_without_port_is_one_line_error():
    result = subprocess.run([sys.executable, "-m", "sw.host", "--port", "/dev/nonexistent-tty",
                             "--images", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open serial port")


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "/dev/nonexistent-tty", "--images", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --images must be positive, not 0"


@pytest.mark.parametrize("arguments,message", [
    (["--bench", "0"], "--bench must be 1..65535, not 0"),
    (["--bench", "many"], "argument --bench: invalid int value: 'many'"),
    (["--bench", "5", "--clock-mhz", "fast"], "argument --clock-mhz: invalid float value"),
    (["--bench", "65536"], "--bench must be 1..65535, not 65536"),
    (["--bench", "5", "--clock-mhz", "0"], "--clock-mhz must be positive, not 0.0"),
    (["--bench", "5", "--clock-mhz", "-3"], "--clock-mhz must be positive, not -3.0"),
    (["--bench", "5", "--clock-mhz", "25", "--report", "report.json"],
     "give --clock-mhz or --report, not both"),
    (["--bench", "5", "--images", "10"],
     "--images and --bench exclude each other (--bench N times N classify requests itself)"),
    (["--clock-mhz", "25"], "--clock-mhz and --report go with --bench"),
    (["--report", "report.json"], "--clock-mhz and --report go with --bench"),
    (["--bench", "5", "--report", "missing.json"],
     "cannot read report 'missing.json': No such file or directory"),
    (["--bench", "5", "--report", "broken.json"], "report 'broken.json' is not JSON: "),
    (["--bench", "5", "--report", "verilog.json"],
     "report 'verilog.json' has no clock_mhz (only hw.build --target bitstream writes one); "
     "give --clock-mhz"),
])
def test_cli_bench_argument_errors(arguments, message, tmp_path, monkeypatch, capsys):
    """Each bad argument is one line and exit status 2, before any port is opened."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "verilog.json").write_text('{"cycles_per_image": 100}')

    _one_line_error_before_any_port(arguments, message, monkeypatch, capsys)


def test_cli_reports_accuracy(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([sums(x.reshape(-1))[0] for x in images], np.uint8)
    labels[0] = (labels[0] + 1) % 10  # one wrong answer
    np.savez(tmp_path / "mnist.npz", x_test=images, y_test=labels)
    opened = {}

    def fake_open(port, baud, timeout, **kwargs):
        opened.update(port=port, baud=baud)
        return Board(FakeDevice(sums, 784), timeout=timeout, **kwargs)
    monkeypatch.setattr(Board, "open", staticmethod(fake_open))
    host.main(["--port", "/dev/ttyFAKE", "--images", "4", "--data", str(tmp_path),
               "--baud", "9600"])
    out = capsys.readouterr().out
    assert opened == {"port": "/dev/ttyFAKE", "baud": 9600}
    assert out.startswith("accuracy: 75.00% (3/4 test images on /dev/ttyFAKE")


@pytest.mark.parametrize("clock", ["report", "option", "none"])
def test_cli_bench_reports_speeds(clock, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_test=images, y_test=np.zeros(3, np.uint8))
    (tmp_path / "report.json").write_text('{"clock_mhz": 50.0, "cycles_per_image": 2000}')
    device = FakeDevice(sums, 784, width=3, latency=3000, interval=2000)

    def fake_open(port, baud, timeout, **kwargs):
        return Board(device, timeout=timeout, **kwargs)
    monkeypatch.setattr(Board, "open", staticmethod(fake_open))
    extra = {"report": ["--report", str(tmp_path / "report.json")],
             "option": ["--clock-mhz", "50"], "none": []}[clock]
    host.main(["--port", "/dev/ttyFAKE", "--bench", "50", "--data", str(tmp_path), *extra])
    out = capsys.readouterr().out
    label = sums(images[0].reshape(-1))[0]
    assert device.benches == [1, 50]
    assert device.requests == 2 + 50  # two bench requests, then 50 classify requests
    assert out.startswith(f"bench on /dev/ttyFAKE: test image 0 (label {label}) run 50 "
                          f"times on chip\n")
    assert ("  count: 101000 cycles from the first pixel taken to result 50; latency "
            "(N = 1): 3000 cycles\n") in out
    predicted = "; predicted 2000" if clock == "report" else ""
    assert f"  cycles per image: 2000.0 = (count - latency) / (N - 1){predicted}\n" in out
    if clock == "none":
        assert "  images/s on chip: give --clock-mhz or --report\n" in out
    else:
        assert "  images/s on chip: 25000.0 at 50 MHz (latency 60.0 us)\n" in out
    assert "  end to end over the link: " in out and "(50 classify requests at 3000000" in out


def test_cli_bench_of_one_and_a_disagreeing_board(tmp_path, monkeypatch, capsys):
    images = np.zeros((1, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_test=images, y_test=np.zeros(1, np.uint8))
    device = FakeDevice(sums, 784, latency=777)
    monkeypatch.setattr(Board, "open", staticmethod(
        lambda port, baud, timeout, **kwargs: Board(device, timeout=timeout, **kwargs)))
    host.main(["--port", "P", "--bench", "1", "--data", str(tmp_path), "--clock-mhz", "7.77"])
    out = capsys.readouterr().out
    assert "  cycles per image: 777.0 = count / N (N = 1: the latency)\n" in out
    assert "  images/s on chip: 10000.0 at 7.77 MHz (latency 100.0 us)\n" in out

    # A bench whose result is not the classify result of the same image is a broken board.
    def other(pixels):
        label, logits = sums(pixels)
        return label, [value + 1 for value in logits]
    device = FakeDevice(sums, 784)
    original = device.answer

    def answer(request):
        if request[2] == CMD_CLASSIFY:
            device.classify = other
        return original(request)
    device.answer = answer
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "P", "--bench", "2", "--data", str(tmp_path)])
    assert info.value.code == 2
    assert "error: the bench result (label 0) differs from the classify result" in (
        capsys.readouterr().err)


def board_opener(device, monkeypatch):
    """Make ``Board.open`` open ``device``; returns the dict of what it was asked to open."""
    opened = {}

    def fake_open(port, baud, timeout, **kwargs):
        opened.update(port=port, baud=baud)
        return Board(device, timeout=timeout, baud=baud, **kwargs)
    monkeypatch.setattr(Board, "open", staticmethod(fake_open))
    return opened


def test_cli_loads_then_classifies(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([sums(x.reshape(-1))[0] for x in images], np.uint8)
    np.savez(tmp_path / "mnist.npz", x_test=images, y_test=labels)
    weights = rng.integers(0, 256, size=12_004, dtype=np.uint8).tobytes()
    (tmp_path / "weights.bin").write_bytes(weights)
    device = FakeDevice(sums, 784, load_words=6002)
    board_opener(device, monkeypatch)
    host.main(["--port", "P", "--load", str(tmp_path / "weights.bin"), "--images", "3",
               "--data", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"loaded 12,004 bytes of weights from {tmp_path}/weights.bin "
                               f"in 0.") and lines[0].endswith(" s")
    assert lines[1].startswith("accuracy: 100.00% (3/3 test images on P")
    assert device.loads == [weights]
    assert device.commands == [CMD_LOAD] + [CMD_CLASSIFY] * 3


def test_cli_load_alone(tmp_path, monkeypatch, capsys):
    (tmp_path / "weights.bin").write_bytes(b"\x01\x02\x03\x04")
    device = FakeDevice(sums, 784, load_words=2)
    opened = board_opener(device, monkeypatch)
    # No --data: nothing but the load may need the test set.
    host.main(["--port", "P", "--load", str(tmp_path / "weights.bin"), "--baud", "115200"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loaded 4 bytes of weights from ")
    assert device.commands == [CMD_LOAD] and device.loads == [b"\x01\x02\x03\x04"]
    assert opened == {"port": "P", "baud": 115200}


def test_cli_without_load_on_a_board_that_needs_one(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.zeros(2, np.uint8))
    (tmp_path / "weights.bin").write_bytes(bytes(6))
    device = FakeDevice(sums, 784, load_words=2)
    board_opener(device, monkeypatch)
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "P", "--images", "2", "--data", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err  # after tqdm's progress bar
    assert err.endswith("\nerror: board reported error 7 (NOT_LOADED): the board's weights "
                        "are not loaded (not since configuration, or the last load failed): "
                        "send them with --load BUILD/weights.bin\n")
    assert device.commands == [CMD_CLASSIFY]
    # A load image of the wrong size stops before any classify request.
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "P", "--images", "2", "--data", str(tmp_path),
                   "--load", str(tmp_path / "weights.bin")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: board reported error 5 (LENGTH): the load image's size")
    assert len(err.splitlines()) == 1 and device.commands == [CMD_CLASSIFY, CMD_LOAD]


@pytest.mark.parametrize("given", [False, True], ids=["from-report", "given"])
def test_cli_bench_loads_the_reports_weights(given, tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((1, 28, 28), np.uint8),
             y_test=np.zeros(1, np.uint8))
    build = tmp_path / "build"
    build.mkdir()
    (build / "report.json").write_text('{"clock_mhz": 24.0, "weights_file": "weights.bin"}')
    (build / "weights.bin").write_bytes(b"\x11\x22" * 3)
    (tmp_path / "other.bin").write_bytes(b"\x33\x44" * 3)
    device = FakeDevice(sums, 784, load_words=3)
    board_opener(device, monkeypatch)
    extra = ["--load", str(tmp_path / "other.bin")] if given else []
    host.main(["--port", "P", "--bench", "3", "--data", str(tmp_path),
               "--report", str(build / "report.json"), *extra])
    lines = capsys.readouterr().out.splitlines()
    if given:
        assert lines[0].startswith(f"loaded 6 bytes of weights from {tmp_path}/other.bin in ")
        assert device.loads == [b"\x33\x44" * 3]
    else:
        assert lines[0].startswith(f"loaded 6 bytes of weights from {build}/weights.bin (the "
                                   f"weights_file of {build}/report.json) in ")
        assert device.loads == [b"\x11\x22" * 3]
    assert lines[1].startswith("bench on P: test image 0")
    assert device.commands[:3] == [CMD_LOAD, CMD_BENCH, CMD_BENCH]
    assert device.benches == [1, 3]


@pytest.mark.parametrize("arguments,message", [
    (["--load", "missing.bin"], "cannot read weights file 'missing.bin': No such file or "
                                "directory"),
    (["--load", "."], "cannot read weights file '.': Is a directory"),
    (["--load", "odd.bin"], "weights file 'odd.bin': load image has 5 bytes, an odd number; "
                            "it must be whole 16-bit words"),
    (["--load", "empty.bin", "--images", "3"],
     "weights file 'empty.bin': load image has 0 bytes; the protocol carries 2..131070"),
    (["--bench", "5", "--report", "lost/report.json"],
     "cannot read weights file 'lost/nowhere.bin' (the weights_file of lost/report.json): "
     "No such file or directory"),
    (["--bench", "5", "--report", "number.json"],
     "report 'number.json' has a weights_file that is not a file name: 7"),
])
def test_cli_load_argument_errors(arguments, message, tmp_path, monkeypatch, capsys):
    """A load image that cannot be sent is one line and exit status 2, before any port."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd.bin").write_bytes(bytes(5))
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "lost").mkdir()
    (tmp_path / "lost" / "report.json").write_text(
        '{"clock_mhz": 24.0, "weights_file": "nowhere.bin"}')
    (tmp_path / "number.json").write_text('{"clock_mhz": 24.0, "weights_file": 7}')

    _one_line_error_before_any_port(arguments, message, monkeypatch, capsys)


def test_cli_load_of_a_missing_file_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sw.host", "--port", "/dev/nonexistent-tty",
                             "--load", str(tmp_path / "weights.bin")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: cannot read weights file '{tmp_path}/weights.bin': "
                             f"No such file or directory\n")


def _one_line_error_before_any_port(arguments, message, monkeypatch, capsys):
    """``sw.host`` with ``arguments`` exits 2 with the one line ``error: message...``, and
    opens no port."""
    def no_port(*args, **kwargs):
        raise AssertionError("the port was opened")
    monkeypatch.setattr(Board, "open", staticmethod(no_port))
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "/dev/ttyFAKE", *arguments])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {message}")
