"""Host driver for the board's UART protocol (``docs/protocol.md``) and its command line.

The pure functions (:func:`encode_request`, :func:`encode_bench_request`,
:func:`encode_load_request`, :func:`decode_response`, ...) hold the protocol; :class:`Board`
runs it over anything with ``write(bytes)`` and ``read(n)``: a pyserial port in real use, a
simulated UART in tests. Command line::

    python -m sw.host --port /dev/ttyUSB1 --images 100 [--data DIR] [--baud 115200]
    python -m sw.host --port /dev/ttyUSB1 --bench 1000 [--report build/.../report.json]
    python -m sw.host --port /dev/ttyUSB1 --load build/.../weights.bin [--images 100]
"""

import argparse
import enum
import json
import os
import sys
import time
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .data import load_test
from .errors import UserError, cli_main

__all__ = [
    "BENCH_HEADER_BYTES",
    "CMD_BENCH",
    "CMD_CLASSIFY",
    "CMD_LOAD",
    "CYCLE_COUNT_BYTES",
    "DEFAULT_BAUD",
    "MAX_LOAD_WORDS",
    "MAX_PIXELS",
    "MAX_REPEATS",
    "REQUEST_HEADER_BYTES",
    "REQUEST_MAGIC",
    "RESPONSE_HEADER_BYTES",
    "RESPONSE_MAGIC",
    "BenchResult",
    "Board",
    "DeviceError",
    "ProtocolError",
    "Response",
    "Status",
    "bench_figures",
    "crc8",
    "decode_response",
    "encode_bench_request",
    "encode_load_request",
    "encode_request",
    "encode_response",
    "link_images_per_second",
    "logit_bytes",
    "main",
    "response_length",
]

#: First two bytes of every request.
REQUEST_MAGIC = b"\xa5\x5a"
#: First two bytes of every response (the request's, swapped: an echo is never a response).
RESPONSE_MAGIC = b"\x5a\xa5"
#: Command: classify the image that follows.
CMD_CLASSIFY = 0x01
#: Command: run the image that follows through the network ``N`` times back to back and
#: answer with the last result and the clock cycles it took.
CMD_BENCH = 0x02
#: Command: the ``N`` 16-bit words that follow are the weights the bitstream could not hold
#: (``weights.bin`` of the build); a design that has such weights needs them once after
#: configuration.
CMD_LOAD = 0x03
#: Magic (2), command (1), pixel count (2, little-endian).
REQUEST_HEADER_BYTES = 5
#: A bench request's header: the classify header and the repeat count ``N`` (2 bytes).
BENCH_HEADER_BYTES = REQUEST_HEADER_BYTES + 2
#: Largest repeat count ``N`` of a bench request (its 16-bit field).
MAX_REPEATS = 0xFFFF
#: Bytes of the cycle count in a bench result: the board's counter has 40 bits, 3 hours at
#: 100 MHz, and stops at ``2**40 - 1`` (which therefore means "at least that many").
CYCLE_COUNT_BYTES = 5
#: Magic (2), status, label, logit count, bytes per logit.
RESPONSE_HEADER_BYTES = 6
#: Largest image the 16-bit pixel count can announce.
MAX_PIXELS = 0xFFFF
#: Largest load request, in 16-bit words (its 16-bit count ``N``).
MAX_LOAD_WORDS = 0xFFFF
#: The rate the ULX3S and iCEBreaker bitstreams use by default (``hw.boards``); OrangeCrab
#: bitstreams use 115200.
DEFAULT_BAUD = 3_000_000


class Status(enum.IntEnum):
    """Status byte of a response; anything but ``OK`` is an error response."""

    OK = 0
    #: A character of the request had a low stop bit (wrong baud rate, noise, a break).
    FRAMING = 1
    #: The line went idle for longer than the device's timeout in the middle of a request.
    TIMEOUT = 2
    #: The request's CRC-8 did not match its bytes.
    CHECKSUM = 3
    #: Unknown command byte.
    COMMAND = 4
    #: The request's pixel count is not the number of pixels the network takes.
    LENGTH = 5
    #: A bench request's repeat count ``N`` is 0.
    REPEATS = 6
    #: A classify or bench request reached a board whose weights have not been loaded since
    #: configuration (or whose last load request failed): send a load request first.
    NOT_LOADED = 7


_STATUS_TEXT = {
    Status.FRAMING: "framing error on the serial line (wrong baud rate or noise?)",
    Status.TIMEOUT: "the request stopped part-way (idle gap longer than the device's timeout)",
    Status.CHECKSUM: "the request's checksum did not match (corrupted on the line?)",
    Status.COMMAND: "unknown command (host and bitstream speak different protocols?)",
    Status.LENGTH: "the image size is not the one the network on the board takes",
    Status.REPEATS: "a bench request must repeat the image at least once (N = 0)",
    Status.NOT_LOADED: "the board's weights are not loaded (not since configuration, or the "
                       "last load failed): send them with --load BUILD/weights.bin",
}
#: What the statuses that mean something else for a load request say.
_LOAD_STATUS_TEXT = {
    Status.COMMAND: "the board's design has no weights to load (its bitstream holds them all), "
                    "or host and bitstream speak different protocols",
    Status.LENGTH: "the load image's size is not the one the board's design takes "
                   "(weights.bin of another build?)",
}

#: Statuses that come from a damaged transfer: sending the same request again may work.
_TRANSIENT = frozenset({Status.FRAMING, Status.TIMEOUT, Status.CHECKSUM})
#: Bench results at or above this count hit the top of the board's counter (it saturates).
_COUNT_LIMIT = (1 << (8 * CYCLE_COUNT_BYTES)) - 1


class ProtocolError(UserError):
    """No valid answer from the board: a timeout, a damaged response, or an error response."""


class DeviceError(ProtocolError):
    """The board answered with an error response; ``status`` holds its status code.

    ``text``, if given, replaces the status's usual explanation in the message.
    """

    def __init__(self, status, text=None):
        self.status = int(status)
        try:
            name, usual = Status(self.status).name, _STATUS_TEXT[Status(self.status)]
        except (ValueError, KeyError):
            name, usual = "UNKNOWN", "status code not in this driver's protocol"
        super().__init__(f"board reported error {self.status} ({name}): {text or usual}")


class Response(NamedTuple):
    """One decoded response: ``status`` (a :class:`Status` value), ``label``, ``logits``.

    ``cycles`` is a bench result's cycle count, ``None`` in other responses. The answer to a
    good load request is ``Response(Status.OK, 0, [])``.
    """

    status: int
    label: int
    logits: list
    cycles: int | None = None

    @property
    def ok(self):
        """True for a result, false for an error response."""
        return self.status == Status.OK


class BenchResult(NamedTuple):
    """What :meth:`Board.bench` returns.

    ``cycles`` counts the board's clock cycles from the cycle the core took the first pixel
    of the first image to the cycle its result for the ``N``-th image appeared: one image's
    latency plus ``N - 1`` image intervals. ``label`` and ``logits`` are the last result.
    """

    cycles: int
    label: int
    logits: list


def crc8(data, crc=0):
    """CRC-8 with polynomial ``x^8 + x^2 + x + 1`` (0x07), no reflection, no final XOR.

    This is CRC-8/SMBUS: ``crc8(b"123456789") == 0xF4``. ``crc`` continues a running CRC.
    """
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def logit_bytes(logit_bits):
    """Bytes per logit in a response: the fewest whole bytes holding ``logit_bits`` bits."""
    if isinstance(logit_bits, bool) or not isinstance(logit_bits, int) or logit_bits < 1:
        raise ValueError(f"logit_bits must be a positive int, not {logit_bits!r}")
    return (logit_bits + 7) // 8


def _pixel_bytes(image):
    """The pixels of ``image`` in raster order, checked; see :func:`encode_request`."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        integers = array.dtype.kind in "iu"
        if not integers or (array.size and (array.min() < 0 or array.max() > 255)):
            raise ValueError(f"image must hold uint8 pixels (0..255), not {array.dtype} values")
        array = array.astype(np.uint8)
    if array.ndim not in (1, 2, 3):
        raise ValueError(f"image must have shape (H, W), (H, W, C) or (pixels,), "
                         f"not {array.shape}")
    pixels = array.size
    if not 1 <= pixels <= MAX_PIXELS:
        raise ValueError(f"image has {pixels} pixels; the protocol carries 1..{MAX_PIXELS}")
    return array.tobytes(order="C")


def _frame(body):
    return REQUEST_MAGIC + body + bytes([crc8(body)])


def encode_request(image):
    """Build the classify request for one image.

    Parameters
    ----------
    image : array_like of uint8, shape (H, W), (H, W, C) or (pixels,)
        Sent in raster order (``image.reshape(-1)``: row by row, channels innermost).

    Returns
    -------
    bytes
        ``A5 5A 01``, the pixel count (16-bit little-endian), the pixels, and the CRC-8 of
        every byte after the magic.
    """
    pixels = _pixel_bytes(image)
    return _frame(bytes([CMD_CLASSIFY]) + len(pixels).to_bytes(2, "little") + pixels)


def encode_bench_request(image, repeats):
    """Build the bench request: run ``image`` through the network ``repeats`` times.

    Parameters
    ----------
    image : array_like of uint8
        As for :func:`encode_request`.
    repeats : int
        ``N``, 1..:data:`MAX_REPEATS`: how many times the board streams the image into the
        network, back to back. (The protocol's field can carry 0; the board answers it with
        :attr:`Status.REPEATS`, and this function refuses it.)

    Returns
    -------
    bytes
        ``A5 5A 02``, the pixel count and ``N`` (16-bit little-endian each), the pixels, and
        the CRC-8 of every byte after the magic.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer):
        raise TypeError(f"repeats must be an int, not {repeats!r}")
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must be 1..{MAX_REPEATS}, not {repeats}")
    pixels = _pixel_bytes(image)
    return _frame(bytes([CMD_BENCH]) + len(pixels).to_bytes(2, "little")
                  + int(repeats).to_bytes(2, "little") + pixels)


def encode_load_request(data):
    """Build the load request that sends the weights the bitstream does not hold.

    Parameters
    ----------
    data : bytes-like
        The load image, ``weights.bin`` of the build, sent as it is: ``N`` 16-bit words,
        1..:data:`MAX_LOAD_WORDS`, so an even number of bytes, 2..``2 * MAX_LOAD_WORDS``.

    Returns
    -------
    bytes
        ``A5 5A 03``, ``N`` (16-bit little-endian, the number of words, half the bytes), the
        data, and the CRC-8 of every byte after the magic.
    """
    try:
        payload = memoryview(data).tobytes()
    except TypeError:
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
    if not 2 <= len(payload) <= 2 * MAX_LOAD_WORDS:
        raise ValueError(f"load image has {len(payload)} bytes; the protocol carries "
                         f"2..{2 * MAX_LOAD_WORDS} (1..{MAX_LOAD_WORDS} 16-bit words)")
    if len(payload) % 2:
        raise ValueError(f"load image has {len(payload)} bytes, an odd number; it must be "
                         f"whole 16-bit words")
    return _frame(bytes([CMD_LOAD]) + (len(payload) // 2).to_bytes(2, "little") + payload)


def encode_response(status, label=0, logits=(), width=4, cycles=None):
    """Build a response as the device sends it (for device models and tests).

    Parameters
    ----------
    status : int
        0 for a result; an error response (non-zero) carries no label, logits or count.
    label : int
    logits : sequence of int
        Signed; each is sent as ``width`` bytes, little-endian two's complement.
    width : int
        Bytes per logit, 1..8; 0 without logits: ``encode_response(Status.OK, width=0)`` is
        the answer to a good load request.
    cycles : int, optional
        A bench result's cycle count (:data:`CYCLE_COUNT_BYTES` bytes after the logits);
        ``None`` for a classify result.
    """
    status, label = int(status), int(label)
    if not 0 <= status <= 255:
        raise ValueError(f"status must fit in one byte, not {status}")
    logits = [int(value) for value in logits]
    if status != Status.OK:
        label, logits, width = 0, [], 0
    elif not 1 <= width <= 8 and (width != 0 or logits):
        raise ValueError(f"width must be 1..8 bytes per logit (or 0 without logits), "
                         f"not {width}")
    if not 0 <= label <= 255:
        raise ValueError(f"label must fit in one byte, not {label}")
    if len(logits) > 255:
        raise ValueError(f"a response carries at most 255 logits, not {len(logits)}")
    body = bytes([status, label, len(logits), width])
    for value in logits:
        if not -(1 << (8 * width - 1)) <= value < 1 << (8 * width - 1):
            raise ValueError(f"logit {value} does not fit in {width} signed bytes")
        body += value.to_bytes(width, "little", signed=True)
    if cycles is not None and status == Status.OK:
        if not 0 <= cycles <= _COUNT_LIMIT:
            raise ValueError(f"cycles must fit in {CYCLE_COUNT_BYTES} bytes, not {cycles}")
        body += int(cycles).to_bytes(CYCLE_COUNT_BYTES, "little")
    return RESPONSE_MAGIC + body + bytes([crc8(body)])


def link_images_per_second(baud, pixels, classes, logit_bits):
    """Images/s the UART carries, stop and wait: one request and its response per image.

    Every character is 10 bits on the line (8N1); the board's own compute time is not counted.
    """
    request = REQUEST_HEADER_BYTES + pixels + 1
    response = RESPONSE_HEADER_BYTES + classes * logit_bytes(logit_bits) + 1
    return baud / (10 * (request + response))


def response_length(prefix, *, bench=False):
    """Total length of the response whose first 6 (or more) bytes are ``prefix``.

    ``bench`` says the response answers a bench request: a result then carries the cycle
    count too (an error response never does).
    """
    prefix = bytes(prefix)
    if len(prefix) < RESPONSE_HEADER_BYTES:
        raise ValueError(f"need the {RESPONSE_HEADER_BYTES}-byte response header, "
                         f"got {len(prefix)} bytes")
    if prefix[:2] != RESPONSE_MAGIC:
        raise ProtocolError(f"response does not start with {RESPONSE_MAGIC.hex(' ')}: "
                            f"{prefix[:2].hex(' ')}")
    count = CYCLE_COUNT_BYTES if bench and prefix[2] == Status.OK else 0
    return RESPONSE_HEADER_BYTES + prefix[4] * prefix[5] + count + 1


def decode_response(data, *, bench=False, load=False):
    """Decode exactly one response.

    Parameters
    ----------
    data : bytes-like
    bench : bool
        The response answers a bench request: a result ends with the cycle count.
    load : bool
        The response answers a load request: a result is the 7 bytes
        ``5A A5 00 00 00 00 00`` (status OK, label, ``K`` and ``W`` 0, CRC), nothing else.

    Returns
    -------
    Response
        Also for error responses (``response.ok`` false); :class:`Board` raises for those.

    Raises
    ------
    ProtocolError
        Bad magic, wrong length, a CRC mismatch, or a load result that is not the one above.
    """
    if bench and load:
        raise ValueError("a response answers a bench request or a load request, not both")
    data = bytes(data)
    if len(data) < RESPONSE_HEADER_BYTES + 1:
        raise ProtocolError(f"response too short: {len(data)} bytes")
    length = response_length(data, bench=bench)
    if len(data) != length:
        raise ProtocolError(f"response length {len(data)} bytes, its header says {length}")
    body = data[2:-1]
    if crc8(body) != data[-1]:
        raise ProtocolError(f"response checksum mismatch: got {data[-1]:#04x}, "
                            f"computed {crc8(body):#04x}")
    status, label, count, width = body[:4]
    if load and status == Status.OK and (label, count, width) != (0, 0, 0):
        raise ProtocolError(f"the answer to a load request has label {label}, {count} logits "
                            f"of {width} bytes; a load result has none (0, 0, 0)")
    logits = [int.from_bytes(body[4 + k * width:4 + (k + 1) * width], "little", signed=True)
              for k in range(count)]
    cycles = None
    if bench and status == Status.OK:
        cycles = int.from_bytes(body[4 + count * width:], "little")
    return Response(status, label, logits, cycles)


def bench_figures(latency, cycles, repeats, clock_mhz=None):
    """What two bench results say about the core's speed.

    Parameters
    ----------
    latency : int
        The count of a bench request with ``N = 1``: cycles from the first pixel taken to
        the result.
    cycles : int
        The count of a bench request with ``N = repeats``.
    repeats : int
    clock_mhz : float, optional
        The board's core clock.

    Returns
    -------
    dict
        ``latency``, ``cycles``, ``repeats``; ``interval``, the cycles per image in steady
        state, ``(cycles - latency) / (repeats - 1)`` (``None`` for ``repeats == 1``);
        ``per_image``, ``cycles / repeats`` (the latency amortized, an upper bound on the
        interval); with ``clock_mhz``, ``images_per_second`` from ``interval`` (from
        ``per_image`` when there is no interval) and ``latency_us``.
    """
    interval = (cycles - latency) / (repeats - 1) if repeats > 1 else None
    figures = {"latency": latency, "cycles": cycles, "repeats": repeats,
               "interval": interval, "per_image": cycles / repeats}
    if clock_mhz is not None:
        steady = interval if interval else figures["per_image"]
        figures["images_per_second"] = clock_mhz * 1e6 / steady
        figures["latency_us"] = latency / clock_mhz
    return figures


class Board:
    """A board running the accelerator behind the UART protocol.

    Parameters
    ----------
    port : file-like
        Has ``write(bytes)`` and ``read(n)`` (returning at most ``n`` bytes, fewer or none on
        its own timeout), like ``serial.Serial``; ``reset_input_buffer()`` and ``flush()``
        are used where present.
    timeout : float
        Seconds to wait for a whole response after sending a request. Error responses come
        only after the device's own idle timeout, so keep this well above it.
    retries : int
        Times a request is sent again after a damaged exchange (framing, timeout or
        checksum errors on either side, or no answer).
    pixels : int, optional
        Pixels per image the board takes; when given, images are checked before sending.
    baud : float, optional
        The line's baud rate (default: the port's ``baudrate``, if it has one). A long request
        (:meth:`load`) takes ``10 / baud`` seconds per byte on the line, which its deadline
        adds to ``timeout``; without a rate, nothing is added.

    Examples
    --------
    >>> with Board.open("/dev/ttyUSB1") as board:              # doctest: +SKIP
    ...     board.load(open("build/lenet5-up5k/weights.bin", "rb").read())
    ...     label, logits = board.classify(image)
    """

    def __init__(self, port, *, timeout=2.0, retries=0, pixels=None, baud=None):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        if baud is None:
            baud = getattr(port, "baudrate", None)
        if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int | float)
                                 or not baud > 0):
            raise ValueError(f"baud must be a positive number, not {baud!r}")
        self.port, self.timeout, self.retries, self.pixels = port, timeout, retries, pixels
        self.baud = baud

    @classmethod
    def open(cls, port, baud=DEFAULT_BAUD, timeout=2.0, **kwargs):
        """Open serial port ``port`` (pyserial) at ``baud``, 8N1; a :class:`UserError` if not."""
        import serial  # pyserial: only a real board needs it

        try:
            device = serial.serial_for_url(port, baudrate=baud, bytesize=8, parity="N",
                                           stopbits=1, timeout=min(timeout, 0.1))
        except (serial.SerialException, ValueError, OSError) as error:
            raise UserError(f"cannot open serial port {port!r}: {error}") from None
        return cls(device, timeout=timeout, baud=baud, **kwargs)

    def wire_seconds(self, count):
        """Seconds ``count`` bytes take on the line (8N1: 10 bits each); 0 without a baud rate."""
        return 10 * count / self.baud if self.baud else 0.0

    def close(self):
        """Close the underlying port (if it can be closed)."""
        close = getattr(self.port, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _read_exact(self, count, deadline, timeout=None):
        # The deadline is checked on every read, not only on silent ones: a port that keeps
        # sending bytes that never form a response must not hold the caller forever.
        data = b""
        while len(data) < count:
            if time.monotonic() > deadline:
                raise ProtocolError(f"no response from the board within "
                                    f"{timeout or self.timeout} s (is the bitstream loaded "
                                    f"and the baud rate right?)")
            data += self.port.read(count - len(data))
        return data

    def read_response(self, *, bench=False, load=False, timeout=None):
        """Read one response, skipping any bytes before its magic; see :func:`decode_response`.

        ``bench`` and ``load`` say which request it answers; ``timeout`` (seconds) replaces
        the board's own for this response.
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        window = b""
        while window != RESPONSE_MAGIC:
            window = (window + self._read_exact(1, deadline, timeout))[-2:]
        header = RESPONSE_MAGIC + self._read_exact(RESPONSE_HEADER_BYTES - 2, deadline, timeout)
        rest = self._read_exact(response_length(header, bench=bench) - RESPONSE_HEADER_BYTES,
                                deadline, timeout)
        return decode_response(header + rest, bench=bench, load=load)

    def request(self, data, *, bench=False, load=False, timeout=None):
        """Send one encoded request and return its :class:`Response` (raising on errors).

        ``bench`` (``load``) says ``data`` is a bench (load) request; ``timeout`` replaces the
        board's own.
        """
        for attempt in range(self.retries + 1):
            reset = getattr(self.port, "reset_input_buffer", None)
            if reset is not None:
                reset()  # a stale or stray response must not answer this request
            self.port.write(data)
            flush = getattr(self.port, "flush", None)
            if flush is not None:
                flush()
            try:
                response = self.read_response(bench=bench, load=load, timeout=timeout)
                if not response.ok:
                    raise DeviceError(response.status)
                return response
            except DeviceError as error:
                if error.status not in _TRANSIENT or attempt == self.retries:
                    raise
            except ProtocolError:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def _check_pixels(self, image):
        if self.pixels is not None and np.asarray(image).size != self.pixels:
            raise UserError(f"image has {np.asarray(image).size} pixels; the board's network "
                            f"takes {self.pixels}")

    def classify(self, image):
        """Classify one image on the board.

        Parameters
        ----------
        image : ndarray of uint8, shape (H, W) or (H, W, C)

        Returns
        -------
        label : int
        logits : list of int
        """
        data = encode_request(image)
        self._check_pixels(image)
        response = self.request(data)
        return response.label, response.logits

    def bench(self, image, repeats, *, timeout=None):
        """Run ``image`` through the board's network ``repeats`` times and time it on chip.

        Parameters
        ----------
        image : ndarray of uint8, shape (H, W) or (H, W, C)
        repeats : int
            ``N``, 1..:data:`MAX_REPEATS`. The image crosses the link once; the board
            streams it into the network ``N`` times back to back.
        timeout : float, optional
            Seconds to wait for the response, instead of the board's ``timeout``: the
            board answers only after all ``N`` images, so give a large ``N`` time.

        Returns
        -------
        BenchResult
            ``cycles`` is one image's latency plus ``N - 1`` image intervals, in the core's
            clock cycles (``docs/protocol.md``); ``label`` and ``logits`` are the last result.
        """
        data = encode_bench_request(image, repeats)
        self._check_pixels(image)
        response = self.request(data, bench=True, timeout=timeout)
        return BenchResult(response.cycles, response.label, response.logits)

    def load(self, data, *, timeout=None):
        """Send the weights the bitstream does not hold: once after configuration.

        Parameters
        ----------
        data : bytes-like
            The load image (``weights.bin`` of the build), sent as it is; see
            :func:`encode_load_request`.
        timeout : float, optional
            Seconds to wait for the response once the request is on the line, instead of
            the board's ``timeout``. The time the request itself takes at :attr:`baud` is
            added (:meth:`wire_seconds`).

        Raises
        ------
        DeviceError
            The board refused the load: ``LENGTH`` (the image is not the size its design
            takes), ``COMMAND`` (its design has no weights to load), or a damaged transfer
            after the retries. A failed load leaves the board not loaded.
        ProtocolError
            No valid answer.
        """
        data = encode_load_request(data)
        seconds = max(round((timeout or self.timeout) + self.wire_seconds(len(data)), 3),
                      0.001)
        try:
            self.request(data, load=True, timeout=seconds)
        except DeviceError as error:
            text = _LOAD_STATUS_TEXT.get(error.status)
            if text is None:
                raise
            raise DeviceError(error.status, text) from None


def _read_report(path):
    """A build report's ``clock_mhz``, predicted ``cycles_per_image`` and ``weights_file``.

    The last two are ``None`` when the report has none; ``weights_file`` is made a path
    relative to the working directory (the report names it relative to its own directory).
    """
    try:
        with open(path) as file:
            report = json.load(file)
    except OSError as error:
        raise UserError(f"cannot read report {path!r}: {error.strerror}") from None
    except ValueError as error:
        raise UserError(f"report {path!r} is not JSON: {error}") from None
    clock = report.get("clock_mhz") if isinstance(report, dict) else None
    if isinstance(clock, bool) or not isinstance(clock, int | float) or not clock > 0:
        raise UserError(f"report {path!r} has no clock_mhz (only hw.build --target bitstream "
                        f"writes one); give --clock-mhz")
    predicted = report.get("cycles_per_image")
    weights = report.get("weights_file")
    if weights is not None:
        if not isinstance(weights, str) or not weights:
            raise UserError(f"report {path!r} has a weights_file that is not a file name: "
                            f"{weights!r}")
        weights = os.path.join(os.path.dirname(path), weights)
    return float(clock), predicted if isinstance(predicted, int) else None, weights


def _read_weights(path, origin=""):
    """The bytes of load image ``path``, checked (:func:`encode_load_request`).

    ``origin`` says where the name came from, for the error message.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise UserError(f"cannot read weights file {path!r}{origin}: "
                        f"{error.strerror or error}") from None
    try:
        encode_load_request(data)
    except ValueError as error:
        raise UserError(f"weights file {path!r}{origin}: {error}") from None
    return data


def _check_arguments(args):
    if args.images is not None and args.images < 1:
        raise UserError(f"--images must be positive, not {args.images}")
    if args.baud < 1:
        raise UserError(f"--baud must be positive, not {args.baud}")
    if not args.timeout > 0:
        raise UserError(f"--timeout must be positive, not {args.timeout}")
    if args.retries < 0:
        raise UserError(f"--retries must be non-negative, not {args.retries}")
    if args.bench is None:
        if args.clock_mhz is not None or args.report is not None:
            raise UserError("--clock-mhz and --report go with --bench")
        return
    if args.images is not None:
        raise UserError("--images and --bench exclude each other (--bench N times N "
                        "classify requests itself)")
    if not 1 <= args.bench <= MAX_REPEATS:
        raise UserError(f"--bench must be 1..{MAX_REPEATS}, not {args.bench}")
    if args.clock_mhz is not None and args.report is not None:
        raise UserError("give --clock-mhz or --report, not both")
    if args.clock_mhz is not None and not args.clock_mhz > 0:
        raise UserError(f"--clock-mhz must be positive, not {args.clock_mhz}")


def _load(board, data, path, origin):
    start = time.monotonic()
    board.load(data)
    print(f"loaded {len(data):,} bytes of weights from {path}{origin} in "
          f"{time.monotonic() - start:.2f} s")


def _accuracy(board, args):
    images, labels = load_test(args.data)
    images, labels = images[:args.images], labels[:args.images]
    correct = 0
    start = time.monotonic()
    for image, label in tqdm(zip(images, labels, strict=True), total=len(images),
                             desc="classifying", file=sys.stderr):
        predicted, _ = board.classify(image)
        correct += int(predicted == label)
    elapsed = time.monotonic() - start
    print(f"accuracy: {100 * correct / len(images):.2f}% ({correct}/{len(images)} test images "
          f"on {args.port}, {len(images) / elapsed:.1f} images/s)")


def _bench(board, args, clock_mhz, predicted):
    image = load_test(args.data)[0][0]
    repeats = args.bench
    latency = board.bench(image, 1).cycles
    # The board answers after all N images: wait for N latencies (an upper bound, as the
    # interval never exceeds the latency) at the clock, or at 1 MHz when it is unknown.
    seconds = repeats * latency / ((clock_mhz or 1.0) * 1e6)
    result = board.bench(image, repeats, timeout=args.timeout + 2 * seconds)
    start = time.monotonic()
    for _ in tqdm(range(repeats), desc="classifying", file=sys.stderr):
        label, logits = board.classify(image)
    elapsed = time.monotonic() - start
    if (label, logits) != (result.label, result.logits):
        raise ProtocolError(f"the bench result (label {result.label}) differs from the "
                            f"classify result (label {label}) for the same image")
    if result.cycles >= _COUNT_LIMIT:
        raise ProtocolError(f"the board's cycle counter overflowed: use a smaller --bench "
                            f"than {repeats}")
    figures = bench_figures(latency, result.cycles, repeats, clock_mhz)
    print(f"bench on {args.port}: test image 0 (label {label}) run {repeats} times on chip")
    print(f"  count: {result.cycles} cycles from the first pixel taken to result {repeats}; "
          f"latency (N = 1): {latency} cycles")
    if figures["interval"] is not None:
        how = f"{figures['interval']:.1f} = (count - latency) / (N - 1)"
    else:
        how = f"{figures['per_image']:.1f} = count / N (N = 1: the latency)"
    if predicted is not None:
        how += f"; predicted {predicted}"
    print(f"  cycles per image: {how}")
    if clock_mhz is None:
        print("  images/s on chip: give --clock-mhz or --report")
    else:
        print(f"  images/s on chip: {figures['images_per_second']:.1f} at {clock_mhz:g} MHz "
              f"(latency {figures['latency_us']:.1f} us)")
    print(f"  end to end over the link: {repeats / elapsed:.1f} images/s ({repeats} classify "
          f"requests at {args.baud} baud, stop and wait)")


class _ArgumentParser(argparse.ArgumentParser):
    """Reports a malformed command line as one ``error:`` line (exit status 2), no usage."""

    def error(self, message):
        raise UserError(message)


@cli_main
def main(argv=None):
    parser = _ArgumentParser(prog="python -m sw.host",
                                     description="Classify MNIST test images on a board "
                                                 "over its UART and report the accuracy, or "
                                                 "measure its speed (--bench); first send it "
                                                 "the weights its bitstream does not hold "
                                                 "(--load).")
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    parser.add_argument("--images", type=int, default=None,
                        help="test images to classify (default 100)")
    parser.add_argument("--bench", type=int, default=None, metavar="N",
                        help=f"instead: run test image 0 N times (1..{MAX_REPEATS}) on chip, "
                             f"then classify it N times over the link, and print both speeds")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="the board's core clock, for --bench's images/s")
    parser.add_argument("--report", default=None,
                        help="hw.build's report.json, for --bench: its clock_mhz (and its "
                             "weights_file, loaded first unless --load is given)")
    parser.add_argument("--load", default=None, metavar="FILE",
                        help="first send the board this load image (a build's weights.bin, "
                             "once after configuration); alone, only that")
    parser.add_argument("--data", default=None, help="directory with the MNIST test set "
                                                     "(IDX files or mnist.npz)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"baud rate (default {DEFAULT_BAUD}, as hw.build makes ULX3S and "
                             f"iCEBreaker bitstreams; OrangeCrab: 115200)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for each response")
    parser.add_argument("--retries", type=int, default=1,
                        help="resends after a damaged exchange")
    args = parser.parse_args(argv)
    _check_arguments(args)
    clock_mhz, predicted, weights, origin = args.clock_mhz, None, args.load, ""
    if args.report is not None:
        clock_mhz, predicted, reported = _read_report(args.report)
        if weights is None and reported is not None:
            weights, origin = reported, f" (the weights_file of {args.report})"
    data = None if weights is None else _read_weights(weights, origin)
    with Board.open(args.port, baud=args.baud, timeout=args.timeout,
                    retries=args.retries) as board:
        if data is not None:
            _load(board, data, weights, origin)
        if args.bench is not None:
            _bench(board, args, clock_mhz, predicted)
        elif args.images is not None or args.load is None:
            args.images = 100 if args.images is None else args.images
            _accuracy(board, args)


if __name__ == "__main__":
    main()
