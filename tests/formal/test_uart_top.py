# amaranth: UnusedElaboratable=no
"""The board top's stream stages: FrameParser, ImageFeeder (with its buffer), ResponseSender.

``UARTTop`` itself has serial lines, not streams, at its edge; its stages are proven here
one by one on their own streams.
"""

import pytest
from amaranth.hdl import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.uart_top import FrameParser, ImageFeeder, ResponseSender
from sw.host import Status
from tests.formal.harness import RULES, Contract, StreamHarness, expect

pytestmark = pytest.mark.formal

PIXELS = 4
#: Jobs of at most this many images (the protocol allows 65,535): bounded counts.
MOST_REPEATS = 3


class BufferedFeeder(wiring.Component):
    """An :class:`ImageFeeder` reading a block RAM of the image, as in ``UARTTop``.

    Attributes
    ----------
    i : In(stream.Signature(unsigned(16)))
        Jobs: how many times to send the image.
    o : Out(stream.Signature(unsigned(8 * lanes)))
        The buffer's words.
    """

    def __init__(self, *, pixels, lanes):
        self._pixels, self._lanes = pixels, lanes
        self.feeder = ImageFeeder(pixels=pixels, lanes=lanes)
        super().__init__({
            "i": In(stream.Signature(self.feeder.i.payload.shape())),
            "o": Out(stream.Signature(unsigned(8 * lanes))),
        })

    @property
    def words(self):
        """Transfers per image."""
        return self._pixels // self._lanes

    def elaborate(self, platform):
        m = Module()
        m.submodules.feeder = feeder = self.feeder
        m.submodules.image = image = Memory(shape=unsigned(8 * self._lanes), depth=self.words,
                                            init=range(1, self.words + 1))
        wiring.connect(m, image.read_port(), feeder.read)
        wiring.connect(m, wiring.flipped(self.i), feeder.i)
        wiring.connect(m, feeder.o, wiring.flipped(self.o))
        return m


def feeder(checks=None, lanes=1, **options):
    """A job of ``N`` images enables ``N x words`` transfers, all of which may be owed;
    with ``o`` ready a word leaves in every cycle (it never waits a cycle)."""
    dut = BufferedFeeder(pixels=PIXELS, lanes=lanes)
    contract = Contract(enable=lambda jobs: jobs * dut.words, capacity=MOST_REPEATS * dut.words,
                        drain=1)
    return StreamHarness(dut, contract, checks=checks,
                         assumptions=[~dut.i.valid | (dut.i.payload >= 1) &
                                      (dut.i.payload <= MOST_REPEATS)], **options)


def parser(checks=None, **options):
    """The frame parser on free bytes (under the stream rules), framing errors and line
    activity."""
    dut = FrameParser(pixels=2, timeout_cycles=3)
    return StreamHarness(dut, checks=checks, free=[dut.error, dut.receiving], **options)


def sender(checks=None, **options):
    """The response sender: ``o.valid`` is ``i.valid`` (``i`` is taken with the last byte),
    so the input's rules carry over to ``o``."""
    dut = ResponseSender(classes=2, label_bits=1, logit_bits=4)
    return StreamHarness(dut, checks=checks, passthrough=True, **options)


@pytest.mark.parametrize("lanes", [1, 2])
def test_feeder_bmc(sby, lanes):
    expect(sby(feeder(lanes=lanes), mode="bmc", depth=20))


@pytest.mark.parametrize("lanes", [1, 2])
def test_feeder_rules_by_induction(sby, lanes):
    expect(sby(feeder(RULES, lanes=lanes), mode="prove", depth=4))


def test_feeder_cover(sby):
    # A job of two images and the start of the next job.
    expect(sby(feeder(cover_outputs=2 * PIXELS + 1), mode="cover", depth=20))


def test_parser_rules_by_induction(sby):
    expect(sby(parser(RULES), mode="prove", depth=4))


def test_parser_cover(sby):
    # A good request from free bytes: magic, command, length, pixels and the right CRC-8.
    harness = parser(cover_outputs=1, cover_when=lambda request: request.status == Status.OK)
    expect(sby(harness, mode="cover", depth=16))


def test_sender_rules_by_induction(sby):
    expect(sby(sender(RULES), mode="prove", depth=4))


def test_sender_cover(sby):
    # Ten bytes: longer than any response of two 1-byte logits without a count (nine), so
    # one response ends and the next begins.
    expect(sby(sender(cover_outputs=10), mode="cover", depth=14))
