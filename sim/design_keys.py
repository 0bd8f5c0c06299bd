"""What a stored measurement of generated hardware depends on, as a hash.

An RTL regression measures the core's Verilog against the golden model (a gate-level one, the
netlist Yosys makes of it); a build measures the
board's whole design (the board top's RTLIL around that core, its constraints and the
Yosys/nextpnr scripts, Amaranth's ``BuildPlan``) through the place-and-route flow and its
clock search. Their results stay true as long as what they measured is unchanged, whatever
else in the generator's source changed: so ``sim.bench`` keys them by a hash of the
generated design itself plus the few source files that measure it (:data:`RTL_SOURCES`,
:data:`NETLIST_SOURCES`, :data:`BUILD_SOURCES`, :data:`BOARD_SOURCES`), not by a hash of the
whole generator. A refactoring that leaves every design's Verilog identical keeps every
measurement; one that changes a design re-measures that design only.

The designs are made exactly as the measuring commands make them: the quantized model and
fold of ``sim.regress`` (:func:`sim.regress.from_model`, the same function), the core's
Verilog of :func:`sim.core.core_verilog`, and for builds the plan ``hw.build``'s first
place-and-route run executes (:func:`hw.build.board_plan` at :data:`hw.build.AUTO_START_MHZ`).
A build also checks that the ``core.v`` it wrote is the one keyed (:func:`core_hash`).
"""

import hashlib
import re
from argparse import Namespace

from hw.boards import get_board
from hw.build import AUTO_START_MHZ, board_plan
from hw.folding import DEVICES
from hw.multiplier import DSP_WIDTHS
from hw.network import Accelerator
from hw.pll import pll_settings
from hw.uart_rx import uart_clock_filter
from sw.errors import UserError
from sw.paths import ROOT

from .regress import from_model

__all__ = ["BOARD_SOURCES", "BUILD_SOURCES", "NETLIST_SOURCES", "RTL_SOURCES", "DesignKeys",
           "core_hash", "plan_hash", "source_hash"]

#: What an RTL regression's result depends on besides the core's Verilog: the harness that
#: drives and times it, and the golden model it is compared with.
RTL_SOURCES = ("sim/compiled.py", "sim/compiled_tb.cpp", "sw/golden.py", "sw/qmodel.py")
#: What a gate-level regression depends on besides the core's Verilog: the RTL regression's
#: harness and golden model, the synthesis script and the cell models it is simulated with.
NETLIST_SOURCES = (*RTL_SOURCES, "sim/netlist.py", "sim/ecp5_cells.v", "hw/toolchain.py")
#: What a build's report depends on besides its design: the toolchain flow and its clock
#: search, and the resource estimate reported beside nextpnr's figures.
BUILD_SOURCES = ("hw/build.py", "hw/toolchain.py", "hw/folding.py")
#: What a board-top bench depends on besides the board's design: its simulation, the
#: simulated serial line and the host driver.
BOARD_SOURCES = ("sim/board_bench.py", "sim/tb_uart.py", "sim/uart.py", "sim/uart_model.py",
                 "sw/host.py")


def _digest(*parts):
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part if isinstance(part, bytes) else part.encode()) + b"\0")
    return digest.hexdigest()[:12]


def source_hash(paths, read=None):
    """A hash of the project files ``paths`` (relative to the project folder).

    ``read(path)`` gives a file's bytes (default: the checkout's; a caller may read another
    commit's).
    """
    read = read or (lambda path: (ROOT / path).read_bytes())
    return _digest(*(part for path in sorted(paths) for part in (path, read(path))))


#: Source-location attributes: where in Python a cell was made (file paths and line numbers),
#: not what it is. A design hash leaves them out, so moving code keeps the design's key.
_SOURCE_LOCATIONS = re.compile(r'\(\* src = "[^"]*" \*\)|^ *attribute \\src "[^"]*"\n',
                               re.MULTILINE)


def _without_locations(text):
    return _SOURCE_LOCATIONS.sub("", text)


def core_hash(verilog):
    """The hash of a core's Verilog text without its source locations, as
    :class:`DesignKeys` keys it."""
    return _digest(_without_locations(verilog))


def plan_hash(plan):
    """The hash of an Amaranth ``BuildPlan``'s files (the RTLIL, constraints and scripts),
    without the RTLIL's source locations."""
    parts = []
    for name in sorted(plan.files):
        content = plan.files[name]
        parts += [name, _without_locations(content) if isinstance(content, str) else content]
    return _digest(*parts)


class DesignKeys:
    """The keys of one model's designs, made once per (model, bits, board) and remembered.

    Parameters
    ----------
    data : str or None
        ``--data`` as the measuring commands get it (their calibration images come from it).
    """

    def __init__(self, data=None):
        self.data = data
        self._designs = {}

    def design(self, model, bits, board):
        """``{"core", "board"}``: hashes of the core's Verilog as ``sim.regress`` makes it for
        ``board`` (``hw.build`` writes the same ``core.v``: the bench checks it), and of the
        board's build plan for ``hw.build``'s first place-and-route run; each the hash of the
        refusal when no fold fits the board."""
        if (model, bits, board) not in self._designs:
            try:
                verilog, qmodel, fold, _ = from_model(Namespace(
                    model=model, bits=str(bits), act_bits=None, board=board, fold=None,
                    method=None, data=self.data))
            except UserError as error:  # no fold fits: the refusal is what a build measures
                refusal = _digest("refused", str(error))
                self._designs[model, bits, board] = dict.fromkeys(("core", "board"), refusal)
                return self._designs[model, bits, board]
            spec = get_board(board)
            family = DEVICES[spec.device].family
            core = Accelerator(qmodel, fold, DSP_WIDTHS[family])
            oscillator_mhz = spec.make_platform().default_clk_frequency / 1e6
            pll = pll_settings(family, oscillator_mhz, AUTO_START_MHZ[family], "at_most",
                               accept=uart_clock_filter(spec.default_baud))
            plan = board_plan(spec, core, pll, spec.default_baud)
            self._designs[model, bits, board] = {"core": core_hash(verilog),
                                                 "board": plan_hash(plan)}
        return self._designs[model, bits, board]

    def remember(self, model, bits, board, design):
        """Take ``design`` (a :meth:`design` made earlier, for the same generator source)."""
        self._designs[model, bits, board] = dict(design)

    def rtl(self, model, bits, board):
        """The key of an RTL regression of ``model`` at ``bits`` folded for ``board``."""
        return _digest(self.design(model, bits, board)["core"], source_hash(RTL_SOURCES))

    def netlist(self, model, bits, board):
        """The key of a gate-level regression (``sim.regress --netlist``) of ``model`` at
        ``bits`` folded for ``board``, synthesized for the board's family."""
        return _digest(self.design(model, bits, board)["core"], source_hash(NETLIST_SOURCES))

    def build(self, model, bits, board):
        """The key of ``hw.build``'s build of ``model`` at ``bits`` for ``board``."""
        return _digest(self.design(model, bits, board)["board"], source_hash(BUILD_SOURCES))

    def board_bench(self, model, bits, board):
        """The key of ``sim.board_bench`` on ``model`` at ``bits`` for ``board``."""
        return _digest(self.design(model, bits, board)["board"], source_hash(BOARD_SOURCES))
