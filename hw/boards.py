"""The supported boards (amaranth-boards platforms) and the top level put on them."""

from dataclasses import dataclass

from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable, Module
from amaranth_boards.ice40_hx8k_b_evn import ICE40HX8KBEVNPlatform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import (
    OrangeCrabR0_2_25FPlatform,
    OrangeCrabR0_2_85FPlatform,
)
from amaranth_boards.resources import UARTResource
from amaranth_boards.ulx3s import ULX3S_25F_Platform, ULX3S_45F_Platform, ULX3S_85F_Platform

from sw.errors import UserError

from .pll_domain import PLLDomain
from .uart_rx import uart_divisor
from .uart_top import UARTTop

__all__ = ["BOARDS", "Board", "BoardTop", "get_board"]


@dataclass(frozen=True)
class Board:
    """A board we build for: its platform class, FPGA, and how it is programmed."""

    name: str
    platform: type
    device: str
    programmer: str
    #: Extra pins: OrangeCrab has no UART on its USB port, so it uses Feather pins 0 (RX), 1 (TX).
    uart_on_feather: bool = False
    #: iCE40: the oscillator is wired to the PLL's dedicated input pad (``SB_PLL40_PAD``).
    pll_pad: bool = False
    #: The fastest rate the board's USB-UART carries reliably: FTDI FT231X (ULX3S, 3 Mbaud
    #: maximum by its datasheet) and FT2232H (iCEBreaker, HX8K breakout; 12 Mbaud, but 3 Mbaud
    #: keeps the divisor usable at iCE40 clocks). OrangeCrab's Feather pins take whatever
    #: adapter the user wires up: the conservative 115200.
    default_baud: int = 3_000_000

    @property
    def family(self):
        """``"ice40"`` or ``"ecp5"``: which PLL and toolchain the board's FPGA needs."""
        return "ice40" if self.device.startswith("iCE40") else "ecp5"

    def make_platform(self):
        platform = self.platform()
        if self.uart_on_feather:
            platform.add_resources([UARTResource(0, rx="0", tx="1", conn=("io", 0))])
        return platform


BOARDS = {board.name: board for board in [
    Board("icebreaker", ICEBreakerPlatform, "iCE40UP5K", "iceprog", pll_pad=True),
    Board("ice40-hx8k", ICE40HX8KBEVNPlatform, "iCE40HX8K", "iceprog"),
    Board("ulx3s-25f", ULX3S_25F_Platform, "LFE5U-25F", "openFPGALoader"),
    Board("ulx3s-45f", ULX3S_45F_Platform, "LFE5U-45F", "openFPGALoader"),
    Board("ulx3s-85f", ULX3S_85F_Platform, "LFE5U-85F", "openFPGALoader"),
    Board("orangecrab-25f", OrangeCrabR0_2_25FPlatform, "LFE5U-25F", "dfu-util", True,
          default_baud=115200),
    Board("orangecrab-85f", OrangeCrabR0_2_85FPlatform, "LFE5U-85F", "dfu-util", True,
          default_baud=115200),
]}


def get_board(name):
    """Look a board up by name, or raise a one-line error listing the known ones."""
    if name not in BOARDS:
        raise UserError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


class BoardTop(Elaboratable):
    """The accelerator behind the UART protocol of ``docs/protocol.md``, with LEDs.

    Parameters
    ----------
    core : hw.network.Accelerator
    baud : int
        UART speed.
    pll : hw.pll.PLLSettings, optional
        Clock the design from the FPGA's PLL with these settings; without it, from the
        board's oscillator.
    pll_pad : bool
        iCE40: the oscillator pin is the PLL's dedicated pad (see :class:`Board`).
    """

    def __init__(self, core, baud=115200, *, pll=None, pll_pad=False):
        self.core = core
        self.baud = baud
        self.pll = pll
        self.pll_pad = pll_pad

    def elaborate(self, platform):
        m = Module()
        if self.pll is None:
            clock = platform.default_clk_frequency
        else:
            m.submodules.clock = PLLDomain(self.pll, pad=self.pll_pad)
            clock = float(self.pll.output_mhz) * 1e6
        # A frame stalled for 50 ms is abandoned, so the device resynchronizes.
        divisor, _ = uart_divisor(clock, self.baud)
        m.submodules.uart = top = UARTTop(self.core, divisor=divisor,
                                          timeout_cycles=int(clock * 0.05))
        pins = platform.request("uart", 0)
        m.d.comb += [top.rx.eq(pins.rx.i), pins.tx.o.eq(top.tx)]
        leds = []
        for index in range(8):
            try:
                leds.append(platform.request("led", index).o)
            except ResourceError:
                break
        if not leds:
            rgb = platform.request("rgb_led", 0)
            leds = [rgb.r.o, rgb.g.o, rgb.b.o]
        m.d.comb += [led.eq(top.last_label[bit]) for bit, led in enumerate(leds)
                     if bit < len(top.last_label)]
        return m
