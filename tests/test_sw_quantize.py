"""Quantization to N-bit integers, exports, and the integer model against Keras."""

import json

import numpy as np
import pytest

from sw import golden
from sw.errors import UserError
from sw.keras_import import extract
from sw.qmodel import load_qmodel, save_qmodel, weight_range
from sw.quantize import QuantConfig, quantize, quantize_weights, rom_words, write_exports


@pytest.mark.parametrize("bits", range(1, 9))
def test_weights_fit_their_bits_per_channel(bits, rng):
    matrix = rng.normal(0, 0.1, size=(50, 6)) * np.array([1, 2, 4, 8, 0.5, 0.25])
    q, frac = quantize_weights(matrix, bits)
    lo, hi = weight_range(bits)
    assert q.min() >= lo and q.max() <= hi
    if bits == 1:
        assert set(np.unique(q)) <= {-1, 1}
    # Channels with larger weights get coarser scales (fewer fractional bits).
    assert frac[3] < frac[0] < frac[5]
    error = np.abs(q * 2.0 ** -frac - matrix).mean()
    assert error < np.abs(matrix).mean()


def test_rounding_modes(rng):
    matrix = rng.normal(0, 0.3, size=(200, 3))
    nearest, frac = quantize_weights(matrix, 6, per_channel=False)
    floor, _ = quantize_weights(matrix, 6, rounding="floor", per_channel=False)
    assert np.all(floor <= nearest) and np.any(floor < nearest)
    a, _ = quantize_weights(matrix, 6, rounding="stochastic", rng=np.random.default_rng(5))
    b, _ = quantize_weights(matrix, 6, rounding="stochastic", rng=np.random.default_rng(5))
    c, _ = quantize_weights(matrix, 6, rounding="stochastic", rng=np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Stochastic rounding is unbiased: its mean error is far below floor's.
    scaled = matrix * 2.0 ** frac[0]
    assert abs((a - scaled).mean()) < abs((floor - scaled).mean()) / 4


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match=r"out of range: must be an integer in 1\.\.16"):
        QuantConfig(weight_bits=17)
    with pytest.raises(UserError, match="activation bits 0"):
        QuantConfig(weight_bits=4, act_bits=0)
    with pytest.raises(UserError, match="unknown rounding 'up'"):
        QuantConfig(rounding="up")


def test_x256_preset_is_the_seed_scheme():
    config = QuantConfig(preset="x256", weight_bits=2)
    assert (config.weight_bits, config.act_bits, config.rounding) == (8, 8, "floor")
    assert config.fixed_weight_frac == 8


def _integer_model(keras, rng):
    """A small CNN whose weights are integers, so Keras computes integers too."""
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(6, activation="relu"),
        keras.layers.Dense(10, activation="softmax")])
    for layer in model.layers:
        if layer.get_weights():
            w, b = layer.get_weights()
            layer.set_weights([rng.integers(-1, 2, size=w.shape).astype("float32"),
                               rng.integers(-1, 2, size=b.shape).astype("float32")])
    return model


def test_golden_equals_keras_exactly_on_integer_weights(mnist_test, rng):
    """The seed's proof: with integer weights and binary pixels, every logit is equal."""
    import keras

    model = _integer_model(keras, rng)
    # Binary images (pixel 0 or 1) keep every activation a small integer.
    images = (mnist_test[0][:300] > 127).astype(np.uint8)
    fnet = extract(model, pixel_scale=1.0)
    qmodel = quantize(fnet, images, QuantConfig(weight_bits=8))
    classes, logits = golden.classify(qmodel, images)
    scale = 2.0 ** -(qmodel.output_layer.weight_frac[0] + qmodel.output_layer.in_frac)
    keras_logits = model.layers[-1].activation  # softmax is dropped by extract()
    model.layers[-1].activation = keras.activations.linear
    expected = model.predict(images[..., None].astype("float32"), verbose=0)
    model.layers[-1].activation = keras_logits
    assert np.array_equal(logits * scale, expected)
    assert np.array_equal(classes, np.argmax(expected, axis=1))


def test_export_round_trip(tmp_path, mnist_train):
    import keras

    model = _integer_model(keras, np.random.default_rng(3))
    qmodel = quantize(extract(model), mnist_train[0][:64], QuantConfig(weight_bits=3))
    files = write_exports(qmodel, tmp_path / "out", {qmodel.layers[0].name: (3, 9)})
    loaded = load_qmodel(tmp_path / "out" / "model.npz")
    images = mnist_train[0][:20]
    for a, b in zip(golden.run(qmodel, images), golden.run(loaded, images), strict=True):
        assert np.array_equal(a, b)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "nnfpga-qmodel" and manifest["version"] == 1
    assert [layer["kind"] for layer in manifest["layers"]] == [
        "conv2d", "maxpool2d", "conv2d", "flatten", "dense", "dense"]
    flat = (tmp_path / "out" / "flat_weights.txt").read_text().split()
    assert len(flat) == sum(layer.weight.size + layer.bias.size
                            for layer in qmodel.weight_layers)
    hexes = sorted(p.name for p in files if p.suffix == ".hex")
    assert f"{qmodel.layers[0].name}.pe2.hex" in hexes and len(hexes) == 3 + 3


@pytest.mark.parametrize(("bits", "dtype"), [(8, np.int8), (12, np.int16), (16, np.int16)])
def test_wide_weights_export_exactly(tmp_path, mnist_train, bits, dtype):
    """Weights of 9..16 bits (mixed precision: 16-bit first layer at 12-bit activations)
    are stored in two bytes, one byte up to 8 bits, and read back to the same network."""
    import keras

    model = _integer_model(keras, np.random.default_rng(5))
    config = QuantConfig(weight_bits=bits, layer_bits=(("first", 16, 12),))
    qmodel = quantize(extract(model), mnist_train[0][:64], config)
    assert [layer.weight_bits for layer in qmodel.weight_layers] == [16] + [bits] * 3
    assert qmodel.weight_layers[1].in_bits == 12
    lo, hi = weight_range(bits)
    last = qmodel.output_layer.weight
    assert last.min() >= lo and last.max() <= hi
    assert np.abs(last).max() > 127 or bits <= 8  # needs the second byte
    save_qmodel(qmodel, tmp_path / "m.npz")
    stored = np.load(tmp_path / "m.npz")
    assert stored["layer0.weight"].dtype == np.int16
    assert stored[f"layer{len(qmodel.layers) - 1}.weight"].dtype == dtype
    loaded = load_qmodel(tmp_path / "m.npz")
    images = mnist_train[0][:20]
    for a, b in zip(golden.run(qmodel, images), golden.run(loaded, images), strict=True):
        assert np.array_equal(a, b)


def test_corrupt_exports_are_user_errors(tmp_path, mnist_train):
    import keras

    model = _integer_model(keras, np.random.default_rng(4))
    qmodel = quantize(extract(model), mnist_train[0][:32], QuantConfig(weight_bits=4))
    path = tmp_path / "m.npz"
    save_qmodel(qmodel, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt quantized model"):
        load_qmodel(path)
    with pytest.raises(UserError, match="not found"):
        load_qmodel(tmp_path / "missing.npz")
    qmodel.layers[0].weight[0, 0, 0, 0] = 100  # outside 4 bits
    save_qmodel(qmodel, path)
    with pytest.raises(UserError, match="weights outside the 4-bit range"):
        load_qmodel(path)
    # A layer kind the manifest names that no layer class reads.
    qmodel.layers[0].weight[0, 0, 0, 0] = 1
    save_qmodel(qmodel, path)
    arrays = dict(np.load(path))
    manifest = json.loads(arrays["manifest"].tobytes())
    manifest["layers"][1]["kind"] = "lstm"
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(UserError, match="layer 1: unknown kind 'lstm'"):
        load_qmodel(path)
    manifest["layers"][1]["kind"] = "globalmaxpool2d"  # a pool kind that needs no size
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(UserError, match="globalmaxpool2d with size"):
        load_qmodel(path)


def test_rom_words_layout():
    matrix = np.arange(-12, 12).reshape(6, 4)  # 6 inputs, 4 outputs
    words = rom_words(matrix, 5, pe=2, simd=3)
    assert len(words) == 2 and len(words[0]) == 2 * 2  # NF * SF
    for p in range(2):
        for nf in range(2):
            for sf in range(2):
                word = words[p][nf * 2 + sf]
                for s in range(3):
                    lane = (word >> (5 * s)) & 31
                    lane -= 32 if lane >= 16 else 0
                    assert lane == matrix[sf * 3 + s, nf * 2 + p]
    wide = np.arange(-60, 68).reshape(32, 4)  # 32 lanes of 8 bits: 256-bit words
    word = rom_words(wide, 8, pe=1, simd=32)[0][1]
    assert [((word >> (8 * s)) & 255) - (256 if (word >> (8 * s)) & 128 else 0)
            for s in range(32)] == wide[:, 1].tolist()
    binary = rom_words(np.array([[1, -1], [-1, 1]]), 1, pe=1, simd=2)
    assert binary == [[0b01, 0b10]]
    with pytest.raises(UserError, match="PE 3 must divide 4 outputs"):
        rom_words(matrix, 5, pe=3)
