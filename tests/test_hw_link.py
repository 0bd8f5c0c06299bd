"""The UART link: divisors checked against the rate error, and the link-bound throughput."""

import subprocess
import sys

import pytest

from hw.boards import BOARDS
from hw.pll import pll_settings
from hw.uart_rx import uart_clock_filter, uart_divisor
from sw.host import link_images_per_second
from sw.paths import ROOT


@pytest.mark.parametrize(("clock_hz", "baud", "divisor"), [
    (25e6, 115200, 217), (12e6, 115200, 104), (95.833333e6, 3_000_000, 32),
    (29.625e6, 3_000_000, 10), (24e6, 3_000_000, 8), (48e6, 12_000_000, 4),
])
def test_divisor_and_its_error(clock_hz, baud, divisor):
    found, error = uart_divisor(clock_hz, baud)
    assert found == divisor
    assert error == pytest.approx(clock_hz / divisor / baud - 1)
    assert abs(error) <= 0.02


@pytest.mark.parametrize(("clock_hz", "baud", "message"), [
    (20e6, 3_500_000, r"3500000 baud from a 20 MHz clock is off by -4\.76% \(divisor 6\)"),
    (12e6, 6_000_000, r"6000000 baud needs at least 4 clock cycles per bit, but a 12 MHz "
                      r"clock gives 2\.00"),
    (30e6, 2_850_000, r"off by -4\.31%"),
])
def test_divisors_that_would_garble_the_line_are_refused(clock_hz, baud, message):
    with pytest.raises(ValueError, match=message):
        uart_divisor(clock_hz, baud)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_clock_is_chosen_so_the_default_rate_divides_well(board):
    """A plain search may land on 25 MHz, 8.33 cycles a bit at 3 Mbaud (4% off); the build's
    search only takes clocks the board's default rate divides within 2%."""
    board = BOARDS[board]
    oscillator = board.make_platform().default_clk_frequency / 1e6
    # The clocks builds use: ECP5 designs reach 80-130 MHz, iCE40 ones 20-60 MHz.
    for target in range(40, 126) if board.family == "ecp5" else range(20, 61):
        pll = pll_settings(board.family, oscillator, target, "at_most",
                           accept=uart_clock_filter(board.default_baud))
        _, error = uart_divisor(float(pll.output_mhz) * 1e6, board.default_baud)
        assert abs(error) <= 0.02 and pll.output_mhz <= target
        plain = pll_settings(board.family, oscillator, target, "at_most")
        assert target - float(pll.output_mhz) <= max(3, 0.1 * target) or plain == pll


def test_link_bound_images_per_second():
    # A 28 x 28 request is 790 bytes, a 10-logit 2-byte response 27: 8,170 bits per image.
    assert link_images_per_second(115200, 784, 10, 16) == pytest.approx(115200 / 8170)
    assert link_images_per_second(3_000_000, 784, 10, 16) == pytest.approx(367.2, abs=0.1)


def test_build_refuses_a_bad_baud_rate_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hw.build", "--model", "mlp", "--bits", "2",
                             "--baud", "0", "--out", str(tmp_path / "out")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --baud must be a positive rate, not 0"
