"""``python -m hw.program``: load a bitstream onto a board with the board's usual tool.

Command line::

    python -m hw.program BITSTREAM --board ulx3s-85f [--flash]

``openFPGALoader`` (ULX3S), ``iceprog`` (iCEBreaker, iCE40-HX8K breakout; Debian
``fpga-icestorm``) and ``dfu-util`` (OrangeCrab's bootloader) are Debian packages. Without
``--flash`` the bitstream goes into the FPGA's configuration SRAM (lost at power-off); with
it, into the board's flash. The OrangeCrab's DFU bootloader can only write its flash. The
tools are found on ``PATH`` or through the variables amaranth-boards uses
(``OPENFPGALOADER``, ``ICEPROG``, ``DFU_UTIL``).
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sw.errors import UserError, cli_main

from .boards import BOARDS, get_board

__all__ = ["PROGRAMMERS", "main", "program", "program_command"]

#: Per programming tool: the environment variable naming it, the Debian package that has it,
#: the bitstream suffix it loads, and its arguments for SRAM and for flash.
PROGRAMMERS = {
    "openFPGALoader": {"env": "OPENFPGALOADER", "package": "openfpgaloader", "suffix": ".bit",
                       "sram": ["-b", "ulx3s", "-m"], "flash": ["-b", "ulx3s", "-f"]},
    "iceprog": {"env": "ICEPROG", "package": "fpga-icestorm", "suffix": ".bin",
                "sram": ["-S"], "flash": []},
    "dfu-util": {"env": "DFU_UTIL", "package": "dfu-util", "suffix": ".bit",
                 "sram": None, "flash": ["-d", "1209:5af0", "-a", "0", "-D"]},
}


def program_command(board, bitstream, flash=False):
    """The command that loads ``bitstream`` onto ``board`` (a :class:`hw.boards.Board`).

    Raises
    ------
    UserError
        The bitstream is missing or of the wrong kind for the board, the board cannot load
        SRAM, or the tool is not installed.
    """
    tool = PROGRAMMERS[board.programmer]
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise UserError(f"bitstream {str(bitstream)!r} not found")
    if bitstream.suffix != tool["suffix"]:
        raise UserError(f"{board.name} loads {tool['suffix']} bitstreams, not "
                        f"{str(bitstream)!r}")
    if not flash and tool["sram"] is None:
        raise UserError(f"{board.name}'s bootloader can only write its flash: pass --flash")
    executable = os.environ.get(tool["env"]) or shutil.which(board.programmer)
    if not executable or not shutil.which(executable):
        raise UserError(f"{board.programmer} not found: install it (apt-get install "
                        f"{tool['package']}) to program {board.name}; the bitstream is "
                        f"{str(bitstream)!r}")
    return [executable, *tool["flash" if flash else "sram"], str(bitstream)]


def program(board, bitstream, flash=False):
    """Run :func:`program_command`; a tool that fails is a one-line :class:`UserError`."""
    command = program_command(board, bitstream, flash)
    print(f"programming {board.name} ({'flash' if flash else 'SRAM'}): {' '.join(command)}",
          file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr + result.stdout).strip().splitlines() or ["no output"]
        reason = next((line.strip() for line in lines if any(
            word in line.lower() for word in ("not found", "no device", "unable", "fail",
                                              "can't", "cannot", "error"))), lines[-1].strip())
        raise UserError(f"programming {board.name} failed (is it connected and powered?): "
                        f"{board.programmer}: {reason}")
    return result


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.program",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("bitstream", help="the .bit (ECP5) or .bin (iCE40) hw.build made")
    parser.add_argument("--board", required=True, help=f"one of {', '.join(BOARDS)}")
    parser.add_argument("--flash", action="store_true",
                        help="write the board's flash (kept at power-off), not the FPGA's SRAM")
    args = parser.parse_args(argv)
    program(get_board(args.board), args.bitstream, args.flash)
    print(f"programmed {args.board}")


if __name__ == "__main__":
    main()
