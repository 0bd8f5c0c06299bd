"""A user's own CNN (BatchNormalization, 'same' padding, stride 2, Rescaling, global average
pooling), trained here on the offline data, through ``hw.build --target verilog`` and
``sim.regress`` with no mismatch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sw.paths import ROOT

pytestmark = pytest.mark.sim


def _train_user_cnn(path):
    import keras

    from sw.data import load_train

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    # Short training: a faster learning rate, and batch statistics that settle in time.
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)  # 7 x 7 x 16 -> 16, straight into Dense
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="user_bn_cnn")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images, labels = load_train(None)
    model.fit(images[..., None].astype("float32"), labels, epochs=6, batch_size=64, verbose=0)
    model.save(path)
    return model


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "user_bn_cnn.h5"
    _train_user_cnn(path)
    return path


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_user_cnn_builds_and_matches_in_rtl(user_model, tmp_path):
    out = tmp_path / "verilog"
    built = _run("hw.build", "--model", str(user_model), "--bits", "4", "--target",
                 "verilog", "--out", str(out))
    assert built.returncode == 0, built.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    # About 57% float; at 4 bits the global average keeps its input's 4-bit fraction
    # (docs/numerics.md), which costs this briefly trained model some accuracy.
    assert report["model"] == "user_bn_cnn" and report["accuracy"] > 0.4
    assert "module nnfpga_core" in (out / "core.v").read_text()
    regress = _run("sim.regress", "--model", str(user_model), "--bits", "4", "--images", "100",
                   "--json", str(tmp_path / "regress.json"))
    assert regress.returncode == 0, regress.stderr[-2000:]
    summary = json.loads((tmp_path / "regress.json").read_text())
    assert summary["images"] == 100 and summary["mismatches"] == 0
    assert np.isclose(summary["rtl_accuracy"], summary["golden_accuracy"])
    assert summary["cycles_per_image"] == report["cycles_per_image"]


def test_the_keras_example_runs_as_its_docstring_says(tmp_path):
    """``examples/user_cnn.py`` (Keras' "Simple MNIST convnet" as a user adapts it), one epoch
    instead of 15: it trains and saves a file that ``sw.quantize`` takes, and the 8-bit integer
    model classifies as the Keras model does (one epoch leaves BatchNormalization's moving
    statistics far from settled, so its accuracy says little; docs/quantization.md measures
    the full run, trained at 2 bits)."""
    import keras

    path = tmp_path / "user_cnn.keras"
    trained = _run("examples.user_cnn", "--out", str(path), "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert path.is_file() and f"saved {path}" in trained.stdout
    quantized = _run("sw.quantize", "--model", str(path), "--bits", "8", "--out",
                     str(tmp_path / "q"))
    assert quantized.returncode == 0, quantized.stderr[-2000:]
    from sw import golden
    from sw.data import find_mnist, load_test
    from sw.qmodel import load_qmodel

    qmodel = load_qmodel(tmp_path / "q" / "model.npz")
    assert [layer.kind for layer in qmodel.weight_layers] == ["conv2d", "conv2d", "dense"]
    images = load_test(find_mnist())[0][:500]
    classes, _ = golden.classify(qmodel, images.reshape(-1, 28, 28, 1))
    expected = np.argmax(keras.models.load_model(path).predict(
        images[..., None].astype("float32"), verbose=0), axis=1)
    assert np.mean(classes == expected) > 0.95
