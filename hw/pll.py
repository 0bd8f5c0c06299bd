"""PLL settings for a requested core clock: ECP5 ``EHXPLLL`` and iCE40 ``SB_PLL40``.

The dividers are searched within the ranges the primitives document (the same ranges and
preferences as Project Trellis' ``ecppll`` and IceStorm's ``icepll``, which ship with the
nextpnr wheels as ``yowasp-ecppll``/``yowasp-icepll`` and check this module in its tests):

- ECP5 ``EHXPLLL``, feedback from ``CLKOP``: ``f_out = f_in * CLKFB_DIV / CLKI_DIV`` with the
  phase detector ``f_in / CLKI_DIV`` in 3.125..400 MHz and the VCO ``f_out * CLKOP_DIV`` in
  400..800 MHz; among equally good settings the VCO nearest 600 MHz.
- iCE40 ``SB_PLL40_*`` in ``SIMPLE`` feedback: ``f_out = f_in * (DIVF + 1) / (DIVR + 1) /
  2**DIVQ`` with the phase detector in 10..133 MHz and the VCO in 533..1066 MHz; the loop
  filter range follows the phase detector frequency.

``mode="nearest"`` picks the output closest to the request, as the tools do; ``"at_most"``
(what a build uses) the closest one not above it, so a clock chosen below a design's Fmax
stays below it.
"""

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["MODES", "PLLSettings", "ecp5_pll", "ice40_pll", "pll_settings"]

MODES = ("nearest", "at_most")
#: EHXPLLL ranges (MHz) and divider limits.
_ECP5 = {"pfd": (Fraction(3125, 1000), 400), "vco": (400, 800), "out": (10, 400),
         "clki_div": 128, "clkfb_div": 80, "clkop_div": 128, "vco_preferred": 600}
#: SB_PLL40 ranges (MHz) and divider limits (SIMPLE feedback).
_ICE40 = {"pfd": (10, 133), "vco": (533, 1066), "out": (16, 275), "divr": 16, "divf": 128,
          "divq": range(1, 7)}
#: Loop filter range by phase detector frequency: (upper bound, FILTER_RANGE) (icepll's table).
_ICE40_FILTER = ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5))


@dataclass(frozen=True)
class PLLSettings:
    """One PLL configuration and the exact clock it makes.

    Attributes
    ----------
    family : {"ecp5", "ice40"}
    input_mhz, output_mhz, vco_mhz, pfd_mhz : Fraction
        Exact frequencies (``float()`` them for display).
    dividers : dict
        ECP5: ``clki_div``, ``clkfb_div``, ``clkop_div``; iCE40: ``divr``, ``divf``,
        ``divq``, ``filter_range``.
    """

    family: str
    input_mhz: Fraction
    output_mhz: Fraction
    vco_mhz: Fraction
    pfd_mhz: Fraction
    dividers: dict


def _check(input_mhz, target_mhz, mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    for name, value in (("input_mhz", input_mhz), ("target_mhz", target_mhz)):
        if isinstance(value, bool) or not isinstance(value, int | float | Fraction) or \
                not value > 0:
            raise ValueError(f"{name} must be a positive frequency in MHz, not {value!r}")
    return Fraction(input_mhz).limit_denominator(10**6), Fraction(target_mhz).limit_denominator(
        10**6)


def _better(candidate, best, target, mode, accept, vco_preferred=None):
    """Whether ``candidate`` ``(f_out, f_vco)`` beats ``best`` for ``target``."""
    if mode == "at_most" and candidate[0] > target:
        return False
    if accept is not None and not accept(candidate[0]):
        return False
    if best is None:
        return True
    error, best_error = abs(candidate[0] - target), abs(best[0] - target)
    if error != best_error or vco_preferred is None:
        return error < best_error
    return abs(candidate[1] - vco_preferred) < abs(best[1] - vco_preferred)


def _none_found(family, input_mhz, target_mhz, mode):
    word = "at or below" if mode == "at_most" else "near"
    return ValueError(f"no {family} PLL setting makes a clock {word} {float(target_mhz):g} MHz "
                      f"from {float(input_mhz):g} MHz")


def ecp5_pll(input_mhz, target_mhz, mode="nearest", accept=None):
    """``EHXPLLL`` dividers for ``target_mhz`` from an ``input_mhz`` oscillator.

    ``accept``, a predicate on output frequencies (MHz), excludes outputs it rejects (a UART
    that must divide the clock to its baud rate, for example).

    Returns
    -------
    PLLSettings

    Raises
    ------
    ValueError
        A bad argument, or no setting within the documented ranges.
    """
    f_in, target = _check(input_mhz, target_mhz, mode)
    best, found = None, None
    pfd_low, pfd_high = _ECP5["pfd"]
    vco_low, vco_high = _ECP5["vco"]
    for clki_div in range(1, _ECP5["clki_div"] + 1):
        pfd = f_in / clki_div
        if not pfd_low <= pfd <= pfd_high:
            continue
        for clkfb_div in range(1, _ECP5["clkfb_div"] + 1):
            f_out = pfd * clkfb_div
            if not _ECP5["out"][0] <= f_out <= _ECP5["out"][1]:
                continue
            for clkop_div in range(1, _ECP5["clkop_div"] + 1):
                vco = f_out * clkop_div
                if vco < vco_low:
                    continue
                if vco > vco_high:
                    break
                if _better((f_out, vco), best, target, mode, accept, _ECP5["vco_preferred"]):
                    best = (f_out, vco)
                    found = PLLSettings("ecp5", f_in, f_out, vco, pfd, {
                        "clki_div": clki_div, "clkfb_div": clkfb_div, "clkop_div": clkop_div})
    if found is None:
        raise _none_found("ECP5", f_in, target, mode)
    return found


def ice40_pll(input_mhz, target_mhz, mode="nearest", accept=None):
    """``SB_PLL40`` dividers (``SIMPLE`` feedback) for ``target_mhz`` from ``input_mhz``.

    ``accept`` as for :func:`ecp5_pll`.

    Returns
    -------
    PLLSettings

    Raises
    ------
    ValueError
        A bad argument, or no setting within the documented ranges.
    """
    f_in, target = _check(input_mhz, target_mhz, mode)
    best, found = None, None
    for divr in range(_ICE40["divr"]):
        pfd = f_in / (divr + 1)
        if not _ICE40["pfd"][0] <= pfd <= _ICE40["pfd"][1]:
            continue
        for divf in range(_ICE40["divf"]):
            vco = pfd * (divf + 1)
            if not _ICE40["vco"][0] <= vco <= _ICE40["vco"][1]:
                continue
            for divq in _ICE40["divq"]:
                f_out = vco / 2**divq
                if not _ICE40["out"][0] <= f_out <= _ICE40["out"][1]:
                    continue
                if _better((f_out, vco), best, target, mode, accept):
                    best = (f_out, vco)
                    filter_range = next((value for bound, value in _ICE40_FILTER if pfd < bound),
                                        6)
                    found = PLLSettings("ice40", f_in, f_out, vco, pfd, {
                        "divr": divr, "divf": divf, "divq": divq, "filter_range": filter_range})
    if found is None:
        raise _none_found("iCE40", f_in, target, mode)
    return found


def pll_settings(family, input_mhz, target_mhz, mode="at_most", accept=None):
    """The PLL settings of ``family`` (``"ecp5"`` or ``"ice40"``) for ``target_mhz``."""
    searches = {"ecp5": ecp5_pll, "ice40": ice40_pll}
    if family not in searches:
        raise ValueError(f"family must be one of {', '.join(searches)}, not {family!r}")
    return searches[family](input_mhz, target_mhz, mode, accept)
