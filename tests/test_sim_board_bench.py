"""``python -m sim.board_bench``: the count check and its command line's errors (the bench
requests themselves run on the board top's RTL in ``tests/test_sim_uart.py``)."""

import pytest

from sim.board_bench import check_counts
from tests.cli import assert_one_error, run_command


def test_exact_counts_pass():
    assert check_counts({1: 670, 2: 1246, 100: 670 + 99 * 576}, 576) == []


def test_a_count_off_by_one_cycle_is_named():
    problems = check_counts({1: 670, 2: 1247, 100: 670 + 99 * 576}, 576)
    assert problems == ["N=2: 1247 cycles, expected 1246"]


def test_a_latency_below_the_interval_is_named():
    assert check_counts({1: 500, 3: 1652}, 576) == ["latency 500 below the interval 576"]


@pytest.mark.parametrize(("args", "message"), [
    (["--repeats", "2,5"], "--repeats must include 1"),
    (["--repeats", "1,x"], "--repeats must be comma-separated counts"),
    (["--clock", "0"], "--clock must be positive"),
])
def test_bad_arguments_are_one_line(args, message):
    assert_one_error(run_command("sim.board_bench", *args), message)
