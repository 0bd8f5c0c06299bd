"""Average and global pooling in generated Verilog on Verilator, against the golden model.

Each pooling layer alone (:func:`sim.layers.simulate_layer`, the hardware the whole core
builds) under random input idling and output backpressure, and a whole model with
``AveragePooling2D`` and ``GlobalAveragePooling2D`` feeding a dense layer, on real MNIST
images, bit-exact and at the predicted interval.
"""

import numpy as np
import pytest

from sim.core import simulate_core
from sim.layers import simulate_layer
from sw import golden
from sw.keras_import import extract
from sw.quantize import QuantConfig, quantize

pytestmark = pytest.mark.sim

#: Small models whose pooling layers see signed and unsigned inputs, 1..4 lanes, square and
#: global windows, odd sizes that floor, and a kept 1x1 image.
MODELS = {
    # relu -> unsigned average 3x3 of 10x10 (floors to 3x3); no relu -> signed global average.
    "avg": lambda L: [L.Conv2D(4, 3, activation="relu"), L.AveragePooling2D(3),
                      L.Conv2D(6, 2), L.GlobalAveragePooling2D(), L.Dense(5)],
    # signed average 2x2, then a global maximum kept as 1x1xC and flattened.
    "max": lambda L: [L.Conv2D(4, 3), L.AveragePooling2D(2), L.GlobalMaxPooling2D(keepdims=True),
                      L.Flatten(), L.Dense(5)],
}


def _quantized(name, bits, seed, image=(12, 12, 2)):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(image), *MODELS[name](keras.layers)])
    rng = np.random.default_rng(seed)
    qmodel = quantize(extract(model), rng.integers(0, 256, size=(64, *image)),
                      QuantConfig(weight_bits=bits))
    return qmodel, rng.integers(0, 256, size=(3, *image))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize(("name", "bits", "convs"), [
    ("avg", 8, [(2, 1), (3, 2)]), ("max", 2, [(4, 1)])])
def test_pooling_layer_rtl_equals_golden(name, bits, convs, which, tmp_path):
    """``convs``: (PE, SIMD) of the convolutions; a pool takes the PE before it as lanes.
    ``which``: the model's first or second pooling layer."""
    qmodel, images = _quantized(name, bits, seed=bits)
    fold = {layer.name: pe_simd for layer, pe_simd in zip(qmodel.weight_layers[:len(convs)],
                                                           convs, strict=True)}
    outputs = golden.run(qmodel, images)
    inputs = [images, *outputs[:-1]]
    index = [index for index, layer in enumerate(qmodel.layers) if "pool" in layer.kind][which]
    rtl = simulate_layer(qmodel, index, fold, inputs[index], idle=0.2, stall=0.4, seed=index,
                         workdir=tmp_path)
    assert rtl.tolist() == np.asarray(outputs[index]).tolist(), qmodel.layers[index].kind


def test_average_and_global_average_model_is_bit_exact(mnist_test, mnist_train, tmp_path):
    """Conv -> AveragePooling2D -> Conv -> GlobalAveragePooling2D -> Dense on MNIST."""
    import keras

    from hw.folding import DEVICES, auto_fold

    keras.utils.set_random_seed(3)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(4, 3, activation="relu"), L.AveragePooling2D(2),
        L.Conv2D(8, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(10)])
    qmodel = quantize(extract(model), mnist_train[0][:300], QuantConfig(weight_bits=4))
    assert [layer.kind for layer in qmodel.layers] == [
        "conv2d", "avgpool2d", "conv2d", "globalavgpool2d", "dense"]
    fold = auto_fold(qmodel, DEVICES["LFE5U-85F"])
    images = mnist_test[0][:4].reshape(4, 28, 28, 1)
    expected = golden.run(qmodel, images)[-1]
    result = simulate_core(qmodel, fold, images, workdir=tmp_path / "full")
    assert result["logits"] == expected.tolist()
    assert result["labels"] == golden.argmax(expected).tolist()
    assert result["interval"] == result["cycles_per_image_predicted"]
    stalled = simulate_core(qmodel, fold, images[:2], idle=0.3, stall=0.5, seed=1,
                            workdir=tmp_path / "stalled")
    assert stalled["logits"] == expected[:2].tolist() and not stalled["mismatches"]
