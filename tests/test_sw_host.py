"""The host side of the UART protocol: encoding, decoding, the Board driver and its CLI."""

import subprocess
import sys

import numpy as np
import pytest

from sw import host
from sw.errors import UserError
from sw.host import (
    CMD_BENCH,
    CMD_CLASSIFY,
    CYCLE_COUNT_BYTES,
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
    """

    def __init__(self, classify, pixels, width=4, noise=b"", corrupt=0, fail=(), latency=500,
                 interval=120):
        self.classify, self.pixels, self.width = classify, pixels, width
        self.noise, self.corrupt, self.fail = noise, corrupt, list(fail)
        self.latency, self.interval = latency, interval
        self.pending = bytearray()
        self.requests = 0
        self.benches = []
        self.closed = False

    def answer(self, request):
        body = request[2:-1]
        if request[:2] != REQUEST_MAGIC:
            return b""
        if crc8(body) != request[-1]:
            return encode_response(Status.CHECKSUM)
        if body[0] not in (CMD_CLASSIFY, CMD_BENCH):
            return encode_response(Status.COMMAND)
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

    def no_port(*args, **kwargs):
        raise AssertionError("the port was opened")
    monkeypatch.setattr(Board, "open", staticmethod(no_port))
    with pytest.raises(SystemExit) as info:
        host.main(["--port", "/dev/ttyFAKE", *arguments])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {message}")


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
