"""The host side of the UART protocol: encoding, decoding, the Board driver and its CLI."""

import subprocess
import sys

import numpy as np
import pytest

from sw import host
from sw.errors import UserError
from sw.host import (
    CMD_CLASSIFY,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    Board,
    DeviceError,
    ProtocolError,
    Response,
    Status,
    crc8,
    decode_response,
    encode_request,
    encode_response,
    logit_bytes,
    response_length,
)


class FakeDevice:
    """The device side of the protocol in Python, behind ``write``/``read`` like a serial port.

    ``classify(pixels)`` returns ``(label, logits)``; ``noise`` bytes precede each response;
    ``corrupt`` responses in a row get one bit flipped; ``fail`` error statuses are answered
    first, in order.
    """

    def __init__(self, classify, pixels, width=4, noise=b"", corrupt=0, fail=()):
        self.classify, self.pixels, self.width = classify, pixels, width
        self.noise, self.corrupt, self.fail = noise, corrupt, list(fail)
        self.pending = bytearray()
        self.requests = 0
        self.closed = False

    def answer(self, request):
        body = request[2:-1]
        if request[:2] != REQUEST_MAGIC:
            return b""
        if crc8(body) != request[-1]:
            return encode_response(Status.CHECKSUM)
        if body[0] != CMD_CLASSIFY:
            return encode_response(Status.COMMAND)
        if int.from_bytes(body[1:3], "little") != self.pixels:
            return encode_response(Status.LENGTH)
        label, logits = self.classify(np.frombuffer(body[3:], np.uint8))
        return encode_response(Status.OK, label, logits, self.width)

    def write(self, data):
        self.requests += 1
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


def test_crc8_is_crc8_smbus():
    assert crc8(b"123456789") == 0xF4
    assert crc8(b"") == 0 and crc8(b"\x00") == 0 and crc8(b"\x01") == 0x07
    assert crc8(b"6789", crc8(b"12345")) == 0xF4


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
