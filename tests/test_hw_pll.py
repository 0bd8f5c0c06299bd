"""PLL divider search, checked against the vendor-independent tools that ship with nextpnr."""

import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from hw.pll import ecp5_pll, ice40_pll, pll_settings

BIN = Path(sys.executable).parent


def _tool(name):
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is part of the nextpnr wheels and must be installed"
    return path


#: Requests whose best setting ties with another (same error, VCO equally far from 600 MHz):
#: ecppll breaks those ties by float rounding; the frequency is the same either way.
_ECP5_TIES = {133}


@pytest.mark.parametrize("target", [10.5, 20, 24, 30, 33.3, 40, 48, 50, 60, 64, 70, 75, 80,
                                    83.33, 90, 100, 110, 125, 133, 150, 200])
def test_ecp5_search_matches_ecppll(target):
    out = subprocess.run([_tool("yowasp-ecppll"), "-i", "25", "-o", str(target)],
                         capture_output=True, text=True, check=True).stdout
    tool = [int(x) for x in re.findall(r"(?:Refclk|Feedback|clkout0) divisor: (\d+)", out)]
    frequency = float(re.search(r"clkout0 frequency: ([\d.]+) MHz", out).group(1))
    mine = ecp5_pll(25, target)
    assert float(mine.output_mhz) == pytest.approx(frequency, abs=1e-3)
    if target not in _ECP5_TIES:
        assert tool == [mine.dividers[k] for k in ("clki_div", "clkfb_div", "clkop_div")]
    assert mine.output_mhz == Fraction(25) * mine.dividers["clkfb_div"] / mine.dividers[
        "clki_div"]
    assert 400 <= mine.vco_mhz <= 800 and mine.pfd_mhz >= Fraction(3125, 1000)


@pytest.mark.parametrize("target", [17, 18, 20, 24, 25, 30, 33, 36, 40, 42, 48, 50, 60, 66,
                                    75, 90, 100, 120])
def test_ice40_search_matches_icepll(target):
    out = subprocess.run([_tool("yowasp-icepll"), "-i", "12", "-o", str(target)],
                         capture_output=True, text=True, check=True).stdout
    tool = [int(x) for x in re.findall(r"(?:DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out)]
    mine = ice40_pll(12, target)
    assert tool == [mine.dividers[k] for k in ("divr", "divf", "divq", "filter_range")]
    assert mine.output_mhz == Fraction(12) * (mine.dividers["divf"] + 1) / (
        mine.dividers["divr"] + 1) / 2 ** mine.dividers["divq"]


@pytest.mark.parametrize(("family", "oscillator"), [("ecp5", 25), ("ecp5", 48), ("ice40", 12)])
@pytest.mark.parametrize("target", [24.5, 31, 47.9, 60, 81.7, 99.99])
def test_at_most_never_exceeds_the_request(family, oscillator, target):
    settings = pll_settings(family, oscillator, target, "at_most")
    assert settings.output_mhz <= Fraction(target).limit_denominator(10**6)
    nearest = pll_settings(family, oscillator, target, "nearest")
    assert abs(nearest.output_mhz - Fraction(target).limit_denominator(10**6)) <= abs(
        settings.output_mhz - Fraction(target).limit_denominator(10**6))


def test_bad_requests_are_clear():
    with pytest.raises(ValueError, match="no iCE40 PLL setting makes a clock at or below "
                                         "5 MHz from 12 MHz"):
        ice40_pll(12, 5, "at_most")
    with pytest.raises(ValueError, match="target_mhz must be a positive frequency"):
        ecp5_pll(25, -3)
    with pytest.raises(ValueError, match="mode must be one of nearest, at_most"):
        ecp5_pll(25, 50, "fastest")
    with pytest.raises(ValueError, match="family must be one of ecp5, ice40"):
        pll_settings("xilinx", 25, 50)
