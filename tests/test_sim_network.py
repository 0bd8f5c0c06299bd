"""Each seed model through its generated Verilog on Verilator, against the golden model.

Real MNIST test images go through the RTL core folded as ``hw.build`` folds it for the
ULX3S-85F; every logit and label must equal the golden model's, at full rate (where the
measured cycles per image must equal the schedule's prediction) and under random input
idling and output backpressure. Two of them also run on Icarus Verilog, a 4-state simulator
where anything read before it is written shows up as X.
"""

import functools
import shutil

import numpy as np
import pytest

from sim.core import simulate_core
from sw import golden

pytestmark = pytest.mark.sim


@functools.cache
def _quantized(model, bits):
    from hw.folding import DEVICES, auto_fold
    from sw.data import load_train
    from sw.models import load_float_net
    from sw.quantize import QuantConfig, quantize

    qmodel = quantize(load_float_net(model), load_train(None)[0][:500],
                      QuantConfig(weight_bits=bits))
    return qmodel, auto_fold(qmodel, DEVICES["LFE5U-85F"])


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("model", ["lenet5", "tiny_cnn", "mlp", "mlp64"])
def test_seed_model_rtl_is_bit_exact(model, bits, mnist_test, tmp_path):
    qmodel, fold = _quantized(model, bits)
    images = mnist_test[0][:4].reshape(4, *qmodel.input_shape)
    result = simulate_core(qmodel, fold, images, workdir=tmp_path / "full")
    expected = golden.run(qmodel, images)[-1]
    assert result["logits"] == expected.tolist()
    assert result["labels"] == golden.argmax(expected).tolist()
    assert result["interval"] == result["cycles_per_image_predicted"]
    if bits == 4:
        stalled = simulate_core(qmodel, fold, images[:2], idle=0.3, stall=0.5, seed=bits,
                                workdir=tmp_path / "stalled")
        assert stalled["logits"] == expected[:2].tolist()
        assert not stalled["mismatches"]


@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog (iverilog) is not installed")
@pytest.mark.parametrize(("model", "bits"), [("mlp", 2), ("tiny_cnn", 4)])
def test_seed_model_rtl_is_bit_exact_on_icarus(model, bits, mnist_test, tmp_path):
    # The testbench's sink fails on an X or Z bit in a valid output payload.
    qmodel, fold = _quantized(model, bits)
    images = mnist_test[0][:2].reshape(2, *qmodel.input_shape)
    result = simulate_core(qmodel, fold, images, idle=0.2, stall=0.3, seed=bits,
                           simulator="icarus", workdir=tmp_path)
    expected = golden.run(qmodel, images)[-1]
    assert result["logits"] == expected.tolist()
    assert result["labels"] == golden.argmax(expected).tolist()
    assert not result["mismatches"]


def test_regress_command_reports_zero_mismatches(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "sim.regress", "--model", "tiny_cnn", "--bits", "2",
         "--images", "6", "--jobs", "1", "--json", str(tmp_path / "r.json")],
        cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["images"] == 6 and summary["mismatches"] == 0
    assert summary["cycles_per_image"] == summary["cycles_per_image_predicted"]
    assert set(summary) >= {"model", "weight_bits", "act_bits", "rtl_accuracy",
                            "golden_accuracy", "sim_images_per_second"}
    assert np.isclose(summary["rtl_accuracy"], summary["golden_accuracy"])
