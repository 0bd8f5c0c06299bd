"""Running the project's commands as a user would, and checking their one-line errors."""

import os
import subprocess
import sys

from sw.paths import ROOT

__all__ = ["ROOT", "assert_one_error", "run_command"]


def run_command(*args):
    """``python -m ARGS`` from the project root, offline; the finished process."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "NNFPGA_OFFLINE": "1"})


def assert_one_error(result, message):
    """Exit status 2 and exactly one ``error:`` line, containing ``message``; no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
