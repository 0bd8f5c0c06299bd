"""The ``sync`` clock domain of a board top, made by the FPGA's PLL from the board oscillator.

ECP5 uses ``EHXPLLL`` fed from the oscillator's input buffer, with ``CLKOP`` as its own
feedback. iCE40 uses ``SB_PLL40_PAD`` when the oscillator is wired to the PLL's dedicated
pad (the iCEBreaker's pin 35), else ``SB_PLL40_CORE`` behind the input buffer. The domain is
held in reset until the PLL locks and, on iCE40, for 15 us more: its block RAMs read zeros for
about 3 us after configuration (Amaranth's own default domain waits likewise).
"""

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .pll import PLLSettings

__all__ = ["PLLDomain"]

#: Extra reset time after lock on iCE40 (block RAM start-up), as a time.
_ICE40_BRAM_SETTLE_S = 15e-6


def _mhz(value):
    return f"{float(value):.6f}".rstrip("0").rstrip(".")


class PLLDomain(Elaboratable):
    """Drive the ``sync`` domain from a PLL.

    Parameters
    ----------
    settings : PLLSettings
        From :func:`hw.pll.pll_settings` for the board's oscillator.
    pad : bool
        iCE40 only: the oscillator pin is the PLL's dedicated input pad.

    Attributes
    ----------
    locked : Signal
        The PLL's lock output (for status LEDs or tests).
    """

    def __init__(self, settings, *, pad=False):
        if not isinstance(settings, PLLSettings):
            raise TypeError(f"settings must be PLLSettings, not {settings!r}")
        self.settings = settings
        self.pad = bool(pad)
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.pll_raw = raw = ClockDomain("pll_raw", reset_less=True)
        clock_hz = float(self.settings.output_mhz) * 1e6
        # No add_clock_constraint: nextpnr derives the PLL output's frequency from the PLL's
        # parameters (and names the net itself), and checks timing against it.
        pin = platform.request(platform.default_clk, dir="-")
        if self.settings.family == "ecp5":
            m.submodules.clk_buf = buffer = io.Buffer("i", pin)
            m.submodules.pll = self._ehxplll(buffer.i, raw.clk)
        else:
            if self.pad:
                source = pin.io
            else:
                m.submodules.clk_buf = buffer = io.Buffer("i", pin)
                source = buffer.i
            m.submodules.pll = self._sb_pll40(source, raw.clk)
        m.d.comb += sync.clk.eq(raw.clk)
        hold = Signal(init=1)
        if self.settings.family == "ice40":
            settle = int(_ICE40_BRAM_SETTLE_S * clock_hz) + 1
            timer = Signal(range(settle + 1), init=0)
            m.d.pll_raw += hold.eq(timer != settle)
            with m.If(~self.locked):
                m.d.pll_raw += timer.eq(0)
            with m.Elif(timer != settle):
                m.d.pll_raw += timer.eq(timer + 1)
        else:
            m.d.comb += hold.eq(0)
        m.submodules.reset_sync = ResetSynchronizer(~self.locked | hold, domain="sync")
        return m

    def _ehxplll(self, clock_in, clock_out):
        divider = self.settings.dividers
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=_mhz(self.settings.input_mhz),
            a_FREQUENCY_PIN_CLKOP=_mhz(self.settings.output_mhz),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=divider["clki_div"], p_CLKFB_DIV=divider["clkfb_div"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=divider["clkop_div"],
            p_CLKOP_CPHASE=divider["clkop_div"] - 1, p_CLKOP_FPHASE=0,
            i_RST=0, i_STDBY=0, i_CLKI=clock_in, i_CLKFB=clock_out, i_PHASESEL0=0,
            i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0,
            i_ENCLKOP=0, o_CLKOP=clock_out, o_LOCK=self.locked)

    def _sb_pll40(self, clock_in, clock_out):
        divider = self.settings.dividers
        return Instance(
            "SB_PLL40_PAD" if self.pad else "SB_PLL40_CORE",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=divider["divr"], p_DIVF=divider["divf"],
            p_DIVQ=divider["divq"], p_FILTER_RANGE=divider["filter_range"],
            **({"i_PACKAGEPIN": clock_in} if self.pad else {"i_REFERENCECLK": clock_in}),
            i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clock_out, o_LOCK=self.locked)
