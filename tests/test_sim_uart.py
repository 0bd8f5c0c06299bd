"""The board top (UART + accelerator) in Verilator, driven bit by bit by the real host driver.

``sw.host.Board`` classifies images over a simulated serial line into the Verilog of
``UARTTop(Accelerator(...))``: every label and logit must equal the golden model's, and after
garbage, bad headers, truncated, garbled and corrupted requests the device must answer as
``docs/protocol.md`` says and then classify the next image correctly.
"""

import numpy as np
import pytest

from sim.uart import FAULTS, simulate_uart_top
from sw import golden
from sw.keras_import import extract
from sw.quantize import QuantConfig, quantize
from tests.test_hw_network import small_model

pytestmark = [pytest.mark.sim, pytest.mark.xdist_group("verilator")]


def check(results, qmodel, images, faults):
    labels, logits = golden.classify(qmodel, images)
    assert results["mismatches"] == []
    assert results["labels"] == labels.tolist()
    assert results["logits"] == logits.tolist()
    assert [fault["fault"] for fault in results["faults"]] == list(faults)
    for fault in results["faults"]:
        assert fault["got"] == fault["expected"], fault
    assert results["problems"] == []
    assert results["passed"]


def test_uart_top_small_network_with_every_fault(tmp_path, rng):
    import keras

    qmodel = quantize(extract(small_model(keras, 11, image=8)),
                      rng.integers(0, 256, size=(64, 8, 8)), QuantConfig(weight_bits=4))
    images = rng.integers(0, 256, size=(len(FAULTS) + 1, 8, 8), dtype=np.uint8)
    fold = {qmodel.weight_layers[0].name: (3, 1)}
    results = simulate_uart_top(qmodel, fold, images, divisor=4, timeout_cycles=160,
                                workdir=tmp_path)
    check(results, qmodel, images, FAULTS)


# About 15 s with a cached build, but building this design's Verilator model takes a minute
# or more (about 105 s in all on two busy cores), so it is opt-in.
@pytest.mark.slow
def test_uart_top_tiny_cnn_on_mnist(tmp_path, mnist_test):
    from sw.data import load_train
    from sw.models import load_float_net

    calibration = load_train(None)[0][:200]
    qmodel = quantize(load_float_net("tiny_cnn"), calibration, QuantConfig(weight_bits=4))
    images = mnist_test[0][:2]
    faults = ("framing",)
    results = simulate_uart_top(qmodel, {"conv2d": (4, 1)}, images, divisor=4,
                                timeout_cycles=200, faults=faults, workdir=tmp_path)
    check(results, qmodel, images, faults)
