"""Each layer's generated Verilog alone, on Verilator, against the golden layer functions.

A layer's RTL (:class:`hw.layer_core.LayerCore`, built by the same code as the whole core)
gets the golden model's input to that layer and must return the golden layer's output bit
for bit, under random input idling and output backpressure; then a deliberately wrong layer
is found by :func:`sim.layers.first_differing_layer`, as ``sim.regress`` reports a mismatch.
"""

import copy
import random

import numpy as np
import pytest

from hw.network import simd_unit
from sim.layers import first_differing_layer, simulate_layer
from sw import golden
from sw.keras_import import extract
from sw.quantize import QuantConfig, quantize

pytestmark = pytest.mark.sim


def _model(seed, bits):
    """A small CNN with a same-padded stride-2 conv, a valid conv, pooling and dense layers."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((12, 12, 2)),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(6, 2, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(8), layers.Dense(5)])
    rng = np.random.default_rng(seed)
    qmodel = quantize(extract(model), rng.integers(0, 256, size=(64, 12, 12, 2)),
                      QuantConfig(weight_bits=bits))
    choice, fold = random.Random(seed), {}
    for layer in qmodel.weight_layers:
        unit = simd_unit(layer)
        pe = choice.choice([d for d in range(1, layer.channels + 1) if layer.channels % d == 0])
        simd = choice.choice([d for d in range(1, min(unit, 8) + 1) if unit % d == 0])
        fold[layer.name] = (pe, simd)
    return qmodel, fold, rng.integers(0, 256, size=(2, 12, 12, 2))


@pytest.mark.parametrize(("bits", "seed"), [(8, 0), (3, 1), (1, 2)])
def test_every_layer_rtl_equals_golden_layer(bits, seed, tmp_path):
    qmodel, fold, images = _model(seed, bits)
    outputs = golden.run(qmodel, images)
    inputs = [images, *outputs[:-1]]
    checked = 0
    for index, layer in enumerate(qmodel.layers):
        if layer.kind == "flatten":
            continue
        rtl = simulate_layer(qmodel, index, fold, inputs[index], idle=0.2, stall=0.3,
                             seed=index, workdir=tmp_path / str(index))
        assert rtl.tolist() == np.asarray(outputs[index]).tolist(), layer.name
        checked += 1
    assert checked == 5


def test_first_differing_layer_names_the_wrong_layer(tmp_path):
    qmodel, fold, images = _model(0, 8)
    assert first_differing_layer(qmodel, fold, images[0], workdir=tmp_path / "good") is None
    faulty = copy.deepcopy(qmodel)
    dense = faulty.layers[4]
    # Two output steps towards zero from where the golden model has channel 2: never clamped.
    value = golden.run(qmodel, images[:1])[4].reshape(-1)[2]
    dense.bias[2] += (-2 if value > 0 else 2) << max(0, int(dense.shift[2]))
    found = first_differing_layer(qmodel, fold, images[0], rtl_model=faulty,
                                  workdir=tmp_path / "bad")
    assert found is not None
    assert (found["index"], found["layer"], found["kind"]) == (4, dense.name, "dense")
    assert found["element"] == 2 and found["rtl"] != found["golden"]
