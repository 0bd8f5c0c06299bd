"""Programming boards: the right tool and arguments, and one-line errors without a board."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.boards import BOARDS
from hw.program import program_command
from sw.errors import UserError
from tests.conftest import data_required

ROOT = Path(__file__).resolve().parent.parent

#: What each board's SRAM and flash loads run (the tool, then its arguments).
EXPECTED = {
    "ulx3s-85f": ("openFPGALoader", ["-b", "ulx3s", "-m"], ["-b", "ulx3s", "-f"], ".bit"),
    "ulx3s-25f": ("openFPGALoader", ["-b", "ulx3s", "-m"], ["-b", "ulx3s", "-f"], ".bit"),
    "icebreaker": ("iceprog", ["-S"], [], ".bin"),
    "ice40-hx8k": ("iceprog", ["-S"], [], ".bin"),
    "orangecrab-85f": ("dfu-util", None, ["-d", "1209:5af0", "-a", "0", "-D"], ".bit"),
}


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Stand-in programmers on PATH that record their arguments and exit 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    for tool in ("openFPGALoader", "iceprog", "dfu-util"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> {log}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for variable in ("OPENFPGALOADER", "ICEPROG", "DFU_UTIL"):
        monkeypatch.delenv(variable, raising=False)
    return log


@pytest.mark.parametrize("board", sorted(EXPECTED))
@pytest.mark.parametrize("flash", [False, True])
def test_each_board_runs_its_tool_with_the_right_arguments(board, flash, stand_in, tmp_path):
    tool, sram, flash_args, suffix = EXPECTED[board]
    bitstream = tmp_path / f"top{suffix}"
    bitstream.write_bytes(b"\xff" * 16)
    command = [sys.executable, "-m", "hw.program", str(bitstream), "--board", board]
    result = subprocess.run(command + (["--flash"] if flash else []), cwd=ROOT,
                            capture_output=True, text=True, env=os.environ)
    if not flash and sram is None:
        assert result.returncode == 2
        assert "error: orangecrab-85f's bootloader can only write its flash: pass --flash" in \
            result.stderr
        assert not stand_in.exists()
        return
    assert result.returncode == 0, result.stderr
    assert stand_in.read_text().split() == [tool, *(flash_args if flash else sram),
                                            str(bitstream)]


def test_missing_tool_wrong_file_and_missing_file_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no programmer anywhere
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(b"x")
    with pytest.raises(UserError, match=r"openFPGALoader not found: install it \(apt-get install "
                                        r"openfpgaloader\) to program ulx3s-85f"):
        program_command(BOARDS["ulx3s-85f"], bitstream)
    with pytest.raises(UserError, match=r"icebreaker loads \.bin bitstreams"):
        program_command(BOARDS["icebreaker"], bitstream)
    with pytest.raises(UserError, match=r"bitstream '/nonexistent/top\.bit' not found"):
        program_command(BOARDS["ulx3s-85f"], "/nonexistent/top.bit")


@pytest.mark.parametrize(("board", "suffix"), [("ulx3s-85f", ".bit"), ("icebreaker", ".bin")])
def test_real_tool_without_a_board_says_so_in_one_line(board, suffix, tmp_path, request):
    """``.ci/run`` installs openFPGALoader and iceprog; with no board they must fail cleanly."""
    tool = BOARDS[board].programmer
    if shutil.which(tool) is None:
        message = f"{tool} is not installed (apt-get install openfpgaloader fpga-icestorm)"
        if data_required(request.config):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    bitstream = tmp_path / f"top{suffix}"
    bitstream.write_bytes(b"\xff" * 64)
    result = subprocess.run([sys.executable, "-m", "hw.program", str(bitstream), "--board",
                             board], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: programming {board} failed (is it connected and powered?): {tool}: ")
    assert "Traceback" not in result.stderr
