"""The compiled C++ Verilator harness (:mod:`sim.compiled`) and ``sim.regress`` built on it.

The harness must agree with the golden model and with the cocotb testbench bit for bit, its
idle and stall patterns must really slow the streams down, it must catch a design that
breaks the stream rules, and ``sim.regress --from-build`` must simulate the very ``core.v``
that ``hw.build`` wrote: one weight changed in that file is a mismatch, explained down to
the layer, channel and position by tapping every layer's output inside the same Verilog.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog as amaranth_verilog

from sim import compiled
from sim.core import simulate_core as simulate_core_cocotb
from sw import golden
from tests.test_sim_layers import _model as small_cnn
from tests.test_sim_network import _quantized

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parent.parent

#: A registered stream stage (the pattern of Amaranth's stream docs) with a 100-bit output,
#: so the harness' wide-word (VlWide) path carries each byte at both ends of the word.
STAGE = """
module stage(clk, rst, i__payload, i__valid, i__ready, o__payload, o__valid, o__ready);
  input clk; input rst;
  input [7:0] i__payload; input i__valid; output i__ready;
  output reg [99:0] o__payload; output reg o__valid; input o__ready;
  assign i__ready = ~o__valid | o__ready;
  always @(posedge clk)
    if (rst) o__valid <= 1'b0;
    else if (i__valid & i__ready) begin
      o__valid <= 1'b1;
      o__payload <= {i__payload, 84'h0, i__payload};
    end else if (o__ready) o__valid <= 1'b0;
endmodule
"""

#: Breaks the stream rules: a counter on ``o.payload`` that keeps counting while not taken.
RUNAWAY = """
module runaway(clk, rst, i__payload, i__valid, i__ready, o__payload, o__valid, o__ready);
  input clk; input rst;
  input [7:0] i__payload; input i__valid; output i__ready;
  output reg [7:0] o__payload; output o__valid; input o__ready;
  assign i__ready = 1'b1;
  assign o__valid = ~rst;
  always @(posedge clk) o__payload <= rst ? 8'd0 : o__payload + 8'd1;
endmodule
"""


def _expected_stage(words):
    return [(word << 92) | word for word in words]


def test_core_equals_golden_under_idle_and_stall(mnist_test, tmp_path):
    qmodel, fold = _quantized("tiny_cnn", 2)
    images = mnist_test[0][:40].reshape(40, *qmodel.input_shape)
    expected = golden.run(qmodel, images)[-1]
    stalled = compiled.simulate_core(qmodel, fold, images, idle=0.3, stall=0.3, seed=7,
                                     workdir=tmp_path / "stalled")
    assert stalled["logits"] == expected.tolist()
    assert stalled["labels"] == golden.argmax(expected).tolist()
    assert stalled["mismatches"] == [] and stalled["passed"]
    full = compiled.simulate_core(qmodel, fold, images[:8], workdir=tmp_path / "full")
    assert full["logits"] == expected[:8].tolist()
    assert full["interval"] == full["cycles_per_image_predicted"]


def test_constant_first_layer_on_the_up5k_fold(mnist_test, tmp_path):
    """tiny_cnn W4A4 folded for the UP5K: its first layer's weights are constants (adder
    trees, no ROM); 200 images under idle and stall equal the golden model, and at full rate
    the interval is the predicted 784 cycles."""
    from hw.folding import DEVICES, auto_fold

    qmodel = _quantized("tiny_cnn", 4)[0]
    fold = auto_fold(qmodel, DEVICES["iCE40UP5K"])
    assert fold["conv2d"].multiplier == "constant"
    images = mnist_test[0][:200].reshape(200, *qmodel.input_shape)
    expected = golden.run(qmodel, images)[-1]
    stalled = compiled.simulate_core(qmodel, fold, images, idle=0.2, stall=0.2, seed=3,
                                     workdir=tmp_path / "stalled")
    assert stalled["logits"] == expected.tolist() and stalled["passed"]
    full = compiled.simulate_core(qmodel, fold, images[:6], workdir=tmp_path / "full")
    assert full["logits"] == expected[:6].tolist()
    assert full["interval"] == full["cycles_per_image_predicted"] == 784


def test_lenet5_w2_up5k_fold_with_loaded_weights(mnist_test, tmp_path):
    """LeNet-5 W2A2 folded for the UP5K keeps weights in SPRAM: the core's Verilog as
    ``sim.regress`` and ``hw.build`` make it (``core_verilog``: those RAMs preloaded, as after
    a load request) answers 40 images as the golden model does, under idle and stall, at the
    predicted interval at full rate."""
    from hw.folding import DEVICES, auto_fold
    from sim.core import core_verilog

    qmodel = _quantized("lenet5", 2)[0]
    fold = auto_fold(qmodel, DEVICES["iCE40UP5K"])
    assert "dense" in fold.loaded
    verilog, _ = core_verilog(qmodel, fold, 16)
    core = compiled.CompiledCore(qmodel, fold, verilog)
    images = mnist_test[0][:40].reshape(40, *qmodel.input_shape)
    stalled = core.run(images, idle=0.2, stall=0.2, seed=5, workdir=tmp_path / "stalled")
    assert stalled["logits"] == golden.run(qmodel, images)[-1].tolist() and stalled["passed"]
    full = core.run(images[:4], workdir=tmp_path / "full")
    assert full["interval"] == full["cycles_per_image_predicted"] <= 12000


def test_compiled_and_cocotb_harnesses_agree(mnist_test, tmp_path):
    qmodel, fold = _quantized("tiny_cnn", 2)
    images = mnist_test[0][:3].reshape(3, *qmodel.input_shape)
    fast = compiled.simulate_core(qmodel, fold, images)
    slow = simulate_core_cocotb(qmodel, fold, images, workdir=tmp_path)
    assert fast["logits"] == slow["logits"]
    assert fast["labels"] == slow["labels"]
    assert fast["logits"] == golden.run(qmodel, images)[-1].tolist()


def test_wide_words_and_stall_and_idle_patterns():
    words = list(range(256)) * 2
    runs = {}
    for idle, stall in ((0, 0), (0, 0.5), (0, 0.8), (0.5, 0)):
        result = compiled.simulate_words(STAGE, words, len(words), 8, 100, idle=idle,
                                         stall=stall, seed=3, toplevel="stage", deadline=10000)
        assert result["words"] == _expected_stage(words)
        runs[idle, stall] = np.mean(np.diff(result["times"]))
    # One output a cycle at full rate; a stall probability p makes it ~1 / (1 - p) cycles.
    assert runs[0, 0] == 1
    assert 1.8 < runs[0, 0.5] < 2.2
    assert 4.3 < runs[0, 0.8] < 5.7
    assert 1.8 < runs[0.5, 0] < 2.2


def test_core_slows_down_with_input_idling(mnist_test):
    # At 90% idle the input sets the pace: its 784 / pixels words take ten times as many
    # cycles, far more than the core's own interval (four pixels a word: 1,960 against 576).
    qmodel, fold = _quantized("tiny_cnn", 2)
    images = mnist_test[0][:12].reshape(12, *qmodel.input_shape)
    result = compiled.simulate_core(qmodel, fold, images, idle=0.9, seed=1)
    assert not result["mismatches"]
    words = 784 // fold.pixels
    assert result["cycles_per_image_predicted"] < 0.5 * words / 0.1
    assert 0.9 * words / 0.1 < result["interval"] < 1.1 * words / 0.1


def test_stream_rule_violation_is_reported():
    with pytest.raises(compiled.SimulationError, match=r"^compiled simulation failed \(stream "
                       r"rule broken\): o\.payload changed while o\.valid was high and "
                       r"o\.ready low, at cycle \d+$") as info:
        compiled.simulate_words(RUNAWAY, [1, 2, 3], 3, stall=0.5, seed=1, toplevel="runaway",
                                deadline=1000)
    assert info.value.code == 4


def test_deadline_and_extra_output_are_reported():
    with pytest.raises(compiled.SimulationError, match=r"\(deadline\): deadline of 50 cycles "
                       r"passed with 3 of 4 outputs received and 3 of 3 inputs sent$"):
        compiled.simulate_words(STAGE, [1, 2, 3], 4, toplevel="stage", deadline=50)
    with pytest.raises(compiled.SimulationError, match=r"\(unexpected output\): the core "
                       r"produced an output nobody asked for at cycle \d+ \(2 expected\)$"):
        compiled.simulate_words(STAGE, [1, 2, 3], 2, toplevel="stage", deadline=50)
    with pytest.raises(ValueError, match="out_width 64 differs from the Verilog's 100 bits"):
        compiled.simulate_words(STAGE, [1], 1, 8, 64, toplevel="stage", deadline=50)


def test_concurrent_builds_of_one_design_share_the_result():
    # A new hash: a comment makes the text differ from every earlier build.
    verilog = f"// {uuid.uuid4()}\n{STAGE}"
    with ThreadPoolExecutor(2) as pool:
        harnesses = list(pool.map(lambda _: compiled.build(verilog, "stage"), range(2)))
    assert harnesses[0] == harnesses[1] and harnesses[0].binary.is_file()
    start = time.monotonic()
    assert compiled.build(verilog, "stage") == harnesses[0]
    assert time.monotonic() - start < 1  # cached: no Verilator run
    leftovers = list(harnesses[0].binary.parent.parent.glob(
        f".compiled-{harnesses[0].binary.parent.name.rsplit('-', 1)[1]}-*"))
    assert leftovers == []
    result = harnesses[0].run([5, 6], 2, deadline=100)
    assert result["words"] == _expected_stage([5, 6])
    shutil.rmtree(harnesses[0].binary.parent)  # a build no one else will ask for


def test_taps_find_the_wrong_layer_channel_and_position():
    qmodel, fold, images = small_cnn(0, 8)
    assert compiled.first_differing_layer(qmodel, fold, images[0]) is None
    faulty = copy.deepcopy(qmodel)
    conv = faulty.layers[1]  # the valid 2x2 conv: 6 output channels
    # Shift channel 3's bias far enough to change every unclamped output of that channel.
    conv.bias[3] += 4 << max(0, int(conv.shift[3]))
    verilog = amaranth_verilog.convert(compiled.accelerator(faulty, fold), name="nnfpga_core")
    found = compiled.first_differing_layer(qmodel, fold, images[0], verilog=verilog)
    assert (found["index"], found["layer"], found["kind"]) == (1, conv.name, "conv2d")
    _, width, channels = conv.out_shape
    position = found["position"]
    assert position["channel"] == 3
    assert found["element"] == (position["y"] * width + position["x"]) * channels + 3
    assert found["rtl"] != found["golden"] and found["transfers"][0] == found["transfers"][1]
    assert "channel 3" in compiled.describe_difference(found)


def _regress(*args):
    return subprocess.run([sys.executable, "-m", "sim.regress", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("build")
    out = scratch / "tiny_cnn"
    # A fold whose first layer keeps its weights in ROMs (two output folds), which the test
    # below changes; the automatic fold builds them in as constants.
    fold = scratch / "fold.json"
    fold.write_text(json.dumps({"conv2d": [2, 5], "dense": [2, 4]}))
    built = subprocess.run([sys.executable, "-m", "hw.build", "--model", "tiny_cnn", "--bits",
                            "2", "--target", "verilog", "--fold", str(fold), "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    return out


def test_from_build_simulates_the_written_verilog(tiny_build, mnist_test, tmp_path):
    from sw.data import shared_test_set

    data = shared_test_set()
    good = _regress("--from-build", tiny_build, "--images", 20, "--data", data, "--jobs", 2,
                    "--idle", 0.2, "--stall", 0.2, "--json", tmp_path / "good.json")
    assert good.returncode == 0, good.stderr[-2000:]
    summary = json.loads((tmp_path / "good.json").read_text())
    assert summary["mismatches"] == 0 and summary["images"] == 20
    assert summary["harness"] == "compiled" and summary["from_build"] == str(tiny_build)

    # One weight changed in core.v only: the first word of PE 0's ROM of the first conv.
    bad = tmp_path / "bad"
    shutil.copytree(tiny_build, bad)
    source = (bad / "core.v").read_text()
    rom = source.index("module \\nnfpga_core.l0_conv2d_mac.rom0 ")
    word = re.compile(r"memory\[0\] = (\d+)'h([0-9a-f]+);").search(source, rom)
    flipped = format(int(word.group(2), 16) ^ 1, f"0{len(word.group(2))}x")
    (bad / "core.v").write_text(source[:word.start(2)] + flipped + source[word.end(2):])
    result = _regress("--from-build", bad, "--images", 20, "--data", data, "--jobs", 2)
    assert result.returncode == 1, result.stderr[-2000:]
    mismatches = int(re.search(r"^mismatches\s+(\d+)$", result.stdout, re.MULTILINE).group(1))
    assert mismatches > 0
    assert re.search(r"^first mismatch: image \d+;", result.stderr, re.MULTILINE)
    # PE 0's first ROM word holds weights of output channel 0 (output fold 0).
    assert re.search(r"first differing layer: #0 conv2d \(conv2d\), output element \d+ "
                     r"\(y \d+, x \d+, channel 0\)", result.stderr), result.stderr[-2000:]


def test_from_build_refuses_conflicting_options(tiny_build):
    for args, message in [
        (["--bits", "4"], "error: --bits 4 conflicts with --from-build {}, built at 2 bits"),
        (["--model", "lenet5"], "error: --model lenet5 conflicts with --from-build {}, which "
                                "holds tiny_cnn"),
        (["--fold", "auto"], "error: --fold does not apply with --from-build: the build's fold "
                             "and model are used"),
    ]:
        result = _regress("--from-build", tiny_build, *args)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == message.format(tiny_build)
    missing = _regress("--from-build", tiny_build / "nowhere")
    assert missing.returncode == 2
    assert "has no core.v: write it with python -m hw.build --target verilog" in missing.stderr
