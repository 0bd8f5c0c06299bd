"""AveragePooling2D, GlobalAveragePooling2D and GlobalMaxPooling2D from Keras to the golden model.

Real Keras models, saved as ``.keras`` and ``.h5`` and read back by
:func:`sw.models.load_float_net`, on real MNIST test images.
"""

import numpy as np
import pytest

from sw import golden
from sw.errors import UserError
from sw.keras_import import extract
from sw.models import load_float_net
from sw.qmodel import load_qmodel, save_qmodel
from sw.quantize import QuantConfig, quantize
from tests.keras_models import randomize_batch_norm

#: Each new layer alone and next to Conv2D, Dense, BatchNormalization and MaxPooling2D.
ARCHITECTURES = {
    "avgpool": lambda L: [L.AveragePooling2D(2), L.Flatten(), L.Dense(10)],
    "gap": lambda L: [L.Conv2D(16, 7, strides=7, activation="relu"),
                      L.GlobalAveragePooling2D(), L.Dense(10)],
    "gmp": lambda L: [L.Conv2D(8, 3, strides=2), L.BatchNormalization(), L.ReLU(),
                      L.Conv2D(16, 3, strides=2, activation="relu"), L.GlobalMaxPooling2D(),
                      L.Dense(10)],
    # 28 / 3 floors to 9, 7 / 2 to 3; the global average is over 3 x 3.
    "mixed": lambda L: [L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                        L.AveragePooling2D(3), L.Conv2D(16, 3, activation="relu"),
                        L.MaxPooling2D(2), L.GlobalAveragePooling2D(),
                        L.Dense(16, activation="relu"), L.Dense(10)],
    "keepdims": lambda L: [L.Conv2D(16, 3, strides=2, activation="relu"),
                           L.GlobalMaxPooling2D(keepdims=True), L.Flatten(), L.Dense(10)],
}


def _model(keras, name, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((28, 28, 1)), *ARCHITECTURES[name](keras.layers)],
                             name=name)
    return randomize_batch_norm(model, seed)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_golden_follows_keras(name, suffix, tmp_path, mnist_test, mnist_train):
    """The float import equals Keras; the 8-bit integer model stays close to it.

    The float forward pass (float64) must equal Keras (float32) to float32 precision. The
    golden logits, scaled by ``2**-(fw + fa_in)``, must be within 5 output LSBs of Keras',
    one output LSB being the most the logits move when every input of the output layer moves
    by one step of its fraction (``2**-fa_in * max_k sum_i |w_ik|``): post-training
    quantization to 8 bits rounds every weight and activation, and an average keeps its
    input's fraction, so each pooled value is off by up to about one step. These models
    measure 0.15-3.8 LSBs (the most where two layers' rounding adds up before a global
    maximum). The classes must agree on at least 97% of the images (measured 98.2-100%;
    these models are untrained, so some of their logits are close to a tie).
    """
    import keras

    path = tmp_path / f"{name}{suffix}"
    _model(keras, name).save(path)
    fnet = load_float_net(str(path))
    model = keras.models.load_model(path, compile=False)
    images = mnist_test[0][:1000]
    expected = model.predict(images[..., None].astype("float32") / 255, verbose=0)
    np.testing.assert_allclose(fnet.forward(images)[-1], expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())

    qmodel = quantize(fnet, mnist_train[0][:500], QuantConfig(weight_bits=8))
    kinds = [layer.kind for layer in qmodel.layers]
    assert {"avgpool2d", "globalavgpool2d", "globalmaxpool2d"} & set(kinds)
    classes, logits = golden.classify(qmodel, images)
    out = qmodel.output_layer
    scaled = logits * 2.0 ** -(out.weight_frac[0] + out.in_frac)
    weights = out.matrix * 2.0 ** -out.weight_frac[0]
    lsb = 2.0 ** -out.in_frac * np.abs(weights).sum(axis=0).max()
    assert np.abs(scaled - expected).max() <= 5 * lsb
    assert np.mean(classes == np.argmax(expected, axis=1)) >= 0.97


def _integer_model(keras, rng, body):
    """Integer weights and biases; the hidden layers' values stay in 0..7 on binary images,
    so their calibrated fraction is at least 4 bits and averages of 4 or 16 are exact."""
    model = keras.Sequential([keras.Input((28, 28, 1)), *body(keras.layers)])
    for layer in model.layers:
        if type(layer).__name__ == "Conv2D":
            # At most 6 weights of +-1 per filter: |sum| <= 6 on binary pixels, + bias 1.
            kernel, bias = layer.get_weights()
            weights, fan_in = np.zeros(kernel.shape, "float32"), kernel[..., 0].size
            for c in range(kernel.shape[-1]):
                picks = rng.choice(fan_in, size=min(6, fan_in), replace=False)
                weights[..., c].flat[picks] = rng.choice([-1, 1], size=len(picks))
            layer.set_weights([weights, np.ones_like(bias)])
        elif type(layer).__name__ == "Dense":
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.integers(-3, 4, kernel.shape).astype("float32"),
                               rng.integers(-8, 9, bias.shape).astype("float32")])
    return model


EXACT = {
    # 4 x 4 x 4 -> average 2 x 2 -> global average of 4.
    "avg_gap": lambda L: [L.Conv2D(4, 7, strides=7, activation="relu"),
                          L.AveragePooling2D(2), L.GlobalAveragePooling2D(), L.Dense(10)],
    # A global average of 16, kept as 1 x 1 x C and flattened.
    "gap16": lambda L: [L.Conv2D(4, 7, strides=7, activation="relu"),
                        L.GlobalAveragePooling2D(keepdims=True), L.Flatten(), L.Dense(10)],
    # 14 x 14 -> average 7 x 7 -> global maximum.
    "avg_gmp": lambda L: [L.Conv2D(4, 2, strides=2, activation="relu"), L.AveragePooling2D(2),
                          L.GlobalMaxPooling2D(), L.Dense(10)],
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_golden_equals_keras_exactly_when_averages_are_exact(name, mnist_test):
    """With integer weights, binary pixels and power-of-two windows every value is a small
    dyadic number that float32 holds exactly, and every integer average divides evenly:
    the golden logits are Keras' bit for bit."""
    import keras

    keras.utils.set_random_seed(1)
    model = _integer_model(keras, np.random.default_rng(1), EXACT[name])
    images = (mnist_test[0][:300] > 127).astype(np.uint8)
    qmodel = quantize(extract(model, pixel_scale=1.0), images, QuantConfig(weight_bits=8))
    hidden = [layer for layer in qmodel.weight_layers if not layer.is_output]
    assert all(layer.out_frac >= 4 for layer in hidden)
    classes, logits = golden.classify(qmodel, images)
    out = qmodel.output_layer
    expected = model.predict(images[..., None].astype("float32"), verbose=0)
    assert np.array_equal(logits * 2.0 ** -(out.weight_frac[0] + out.in_frac), expected)
    assert np.array_equal(classes, np.argmax(expected, axis=1))
    assert len(set(classes.tolist())) > 1  # not a constant function


def test_pool_layers_round_trip_through_the_export(tmp_path, mnist_test, mnist_train):
    import json

    import keras

    model = _model(keras, "mixed")
    body = ARCHITECTURES["keepdims"](keras.layers)
    body[1] = keras.layers.GlobalAveragePooling2D(keepdims=True)
    models = [model, keras.Sequential([keras.Input((28, 28, 1)), *body])]
    for index, source in enumerate(models):
        qmodel = quantize(extract(source), mnist_train[0][:200], QuantConfig(weight_bits=4))
        path = tmp_path / str(index) / "model.npz"
        save_qmodel(qmodel, path)
        loaded = load_qmodel(path)
        images = mnist_test[0][:50]
        for a, b in zip(golden.run(qmodel, images), golden.run(loaded, images), strict=True):
            assert np.array_equal(a, b)
        manifest = json.loads((path.parent / "manifest.json").read_text())
        pools = [layer for layer in manifest["layers"] if "pool" in layer["kind"]]
        assert pools and all(layer["bits"] == 4 for layer in pools)
    kinds = [layer.kind for layer in loaded.layers]
    assert kinds == ["conv2d", "globalavgpool2d", "flatten", "dense"]
    assert loaded.layers[1].out_shape == (1, 1, 16)


def test_corrupt_pool_manifest_is_refused(tmp_path, mnist_train):
    import keras

    qmodel = quantize(extract(_model(keras, "gap")), mnist_train[0][:50],
                      QuantConfig(weight_bits=4))
    pool = qmodel.layers[1]
    assert (pool.kind, pool.window, pool.count) == ("globalavgpool2d", (4, 4), 16)
    pool.out_shape = (4,)
    save_qmodel(qmodel, tmp_path / "m.npz")
    with pytest.raises(UserError, match=r"cannot turn \(4, 4, 16\) into \(4,\)"):
        load_qmodel(tmp_path / "m.npz")


@pytest.mark.parametrize(("body", "message"), [
    ("stride", r"layer 'bad' \(AveragePooling2D\): only square pools with stride = pool size "
               r"and valid padding are supported, not 2x2 stride 1x1 padding 'valid'"),
    ("rect", r"layer 'bad' \(AveragePooling2D\): only square pools .* not 2x3 stride 2x3"),
    ("same", r"layer 'bad' \(AveragePooling2D\): only square pools .* padding 'same'"),
    ("max_same", r"layer 'bad' \(MaxPooling2D\): only square pools .* padding 'same'"),
    ("relu_after_avg", r"layer 'bad' \(ReLU\): relu must follow a Conv2D or Dense layer"),
    ("channels_first", r"layer 'bad' \(GlobalAveragePooling2D\): only channels_last"),
])
def test_unsupported_pooling_is_named(body, message):
    import keras

    L = keras.layers
    layers = {
        "stride": [L.AveragePooling2D(2, strides=1, name="bad"), L.Flatten()],
        "rect": [L.AveragePooling2D((2, 3), name="bad"), L.Flatten()],
        "same": [L.AveragePooling2D(2, padding="same", name="bad"), L.Flatten()],
        "max_same": [L.MaxPooling2D(2, padding="same", name="bad"), L.Flatten()],
        "relu_after_avg": [L.Conv2D(4, 3), L.AveragePooling2D(2), L.ReLU(name="bad"),
                           L.Flatten()],
        "channels_first": [L.Conv2D(4, 3), L.GlobalAveragePooling2D(
            data_format="channels_first", name="bad")],
    }[body]
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers, L.Dense(10)])
    with pytest.raises(UserError, match=message):
        extract(model)


def test_relu_after_max_pooling_still_folds():
    """ReLU commutes with a (global) maximum, so it moves onto the convolution before it."""
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(4, 3), L.GlobalMaxPooling2D(),
                              L.ReLU(), L.Dense(10)])
    fnet = extract(model)
    assert fnet.layers[0].relu
    assert fnet.shapes() == [(26, 26, 4), (4,), (10,)]
