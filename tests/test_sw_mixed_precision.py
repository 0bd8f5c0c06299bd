"""Mixed precision per layer (``--layer-bits``): parsed strictly, carried through the
quantizer into each layer's widths, the golden model, the generated RTL (bit-exact) and the
build report."""

import json

import numpy as np
import pytest

from hw.build import main as build_main
from hw.folding import DEVICES, auto_fold
from sim import compiled
from sw.data import find_mnist, load_test, load_train
from sw.errors import UserError
from sw.golden import classify
from sw.quantize import QuantConfig, parse_layer_bits, quantize_model


def test_parse_layer_bits():
    assert parse_layer_bits("conv2d=8, dense_2=8/4") == (("conv2d", 8, 8), ("dense_2", 8, 4))
    assert parse_layer_bits("") == () and parse_layer_bits(None) == ()
    for bad, message in (("conv2d", "expected LAYER=BITS"), ("conv2d=17", "out of range"),
                         ("=4", "expected LAYER=BITS"), ("a=2,a=3", "names a layer twice"),
                         ("a=2/x", "not an integer")):
        with pytest.raises(UserError, match=message):
            parse_layer_bits(bad)


@pytest.fixture(scope="module")
def mixed(mnist_test):
    """tiny_cnn at 2 bits with its first layer at 8 (as FINN keeps it wide)."""
    calibration = load_train(str(find_mnist()))[0][:1000]
    config = QuantConfig(weight_bits=2, layer_bits=parse_layer_bits("first=8/8"))
    return quantize_model("tiny_cnn", config, calibration)


def test_each_layer_gets_its_widths(mixed):
    qmodel, method = mixed
    assert method == "post-training"  # no trained model has mixed widths
    conv, dense = qmodel.weight_layers
    assert (conv.weight_bits, conv.out_bits, dense.weight_bits) == (8, 8, 2)
    assert int(np.abs(conv.weight).max()) > 2  # really 8-bit codes, not the network's 2
    # The pool passes the 8-bit activations on to the dense layer.
    assert dense.in_bits == 8


def test_unknown_layers_and_trained_methods_are_refused(mnist_test):
    calibration = load_train(str(find_mnist()))[0][:64]
    with pytest.raises(UserError, match=r"has no weight layer 'dense_9'.*conv2d, dense"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=2, layer_bits=(("dense_9", 8, 8),)),
                       calibration)
    # A trained method needs a model trained at these widths, and says how to train one.
    with pytest.raises(UserError, match=r"no QAT model of tiny_cnn at W2A2, first W8A8 "
                                        r"\(tiny_cnn-w2a2-first=8.keras .*--qat --bits 2 "
                                        r"--act-bits 2 --layer-bits first=8/8"):
        quantize_model("tiny_cnn", QuantConfig(weight_bits=2, layer_bits=(("first", 8, 8),)),
                       calibration, "dual-copy")


def test_training_at_mixed_widths(mnist_train, mnist_test, tmp_path, capsys):
    """``sw.train --qat --bits 1 --layer-bits first=8`` on a user's file: the trained network
    is the integer model at those widths, found again by every command at the same widths
    (and only at them)."""
    import keras

    from sw.evaluate import main as evaluate_main
    from sw.qat import integer_layers
    from sw.train import main as train_main

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                      keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                      keras.layers.MaxPooling2D(2, name="pool"),
                      keras.layers.Flatten(name="flat"), keras.layers.Dense(10, name="out")],
                     name="small").save(tmp_path / "small.keras")
    train_main(["--model", str(tmp_path / "small.keras"), "--qat", "--bits", "1",
                "--layer-bits", "first=8", "--epochs", "1", "--calibration", "64",
                "--data", str(find_mnist())])
    trained = tmp_path / "small-w1a1-first=8.keras"
    assert str(trained) in capsys.readouterr().out
    sidecar = json.loads(trained.with_name("small-w1a1-first=8.quant.json").read_text())
    assert sidecar["layer_bits"] == [["first", 8, 8]] and sidecar["weight_bits"] == 1
    images = mnist_train[0][:64]
    config = QuantConfig(weight_bits=1, layer_bits=parse_layer_bits("first=8"))
    qmodel, method = quantize_model(str(tmp_path / "small.keras"), config, images)
    assert method == "QAT" and qmodel.config["qat_model"] == trained.name
    conv, out = qmodel.weight_layers
    assert (conv.weight_bits, conv.out_bits, out.weight_bits, out.in_bits) == (8, 8, 1, 8)
    assert len(np.unique(conv.weight)) > 2 and set(np.unique(out.weight)) <= {-1, 1}
    # The same file at one width throughout has no trained model: post-training.
    assert quantize_model(str(tmp_path / "small.keras"), QuantConfig(weight_bits=1),
                          images)[1] == "post-training"
    # sw.evaluate takes the same widths and finds the same model.
    capsys.readouterr()
    evaluate_main(["--model", str(tmp_path / "small.keras"), "--bits", "1", "--layer-bits",
                   "first=8", "--images", "100", "--data", str(find_mnist())])
    [row] = [line.split() for line in capsys.readouterr().out.splitlines()
             if line.split()[:1] == ["1"]]
    assert row[-1] == "QAT"
    # What sw.train verified on saving: the file's integers are the trained network's.
    from sw.keras_import import extract, load_keras_model
    from sw.qat import fake_quant_model

    fnet = extract(load_keras_model(trained), name="small")
    rebuilt = fake_quant_model(fnet, sidecar["layers"], 1, 1, layer_bits=config.layer_bits)
    for (q, b), layer in zip(integer_layers(rebuilt), qmodel.weight_layers, strict=True):
        assert np.array_equal(q, layer.weight) and np.array_equal(b, layer.bias)


def test_mixed_widths_are_more_accurate_and_bit_exact_in_rtl(mixed, mnist_test):
    qmodel, _ = mixed
    images, labels = load_test(str(find_mnist()))
    calibration = load_train(str(find_mnist()))[0][:1000]
    uniform, _ = quantize_model("tiny_cnn", QuantConfig(weight_bits=2), calibration, "ptq")
    shape = (len(images), *qmodel.input_shape)
    mixed_accuracy = np.mean(classify(qmodel, images.reshape(shape))[0] == labels)
    uniform_accuracy = np.mean(classify(uniform, images.reshape(shape))[0] == labels)
    assert mixed_accuracy > uniform_accuracy + 0.1  # measured 86.37% against 64.29%
    fold = auto_fold(qmodel, DEVICES["LFE5U-85F"])
    result = compiled.simulate_core(qmodel, fold, images[:24], idle=0.2, stall=0.2, seed=3)
    assert result["passed"] and not result["mismatches"]


@pytest.mark.parametrize(("model", "bits", "layer_bits"), [
    ("tiny_cnn", 16, ()), ("tiny_cnn", 12, (("last", 16, 16),)),
    ("lenet5", 4, (("first", 16, 12),))])
def test_16_bit_layers_are_bit_exact_in_rtl(mnist_test, model, bits, layer_bits):
    """Weights and activations of 9..16 bits, the whole network or one layer: on the ECP5's
    hard multipliers (every lane of a wide layer), every logit the golden model's, with the
    input idle and the output stalled."""
    images = load_test(str(find_mnist()))[0][:60]
    calibration = load_train(str(find_mnist()))[0][:500]
    config = QuantConfig(weight_bits=bits, layer_bits=layer_bits)
    qmodel, _ = quantize_model(model, config, calibration, "ptq")
    assert max(layer.weight_bits for layer in qmodel.weight_layers) == 16
    fold = auto_fold(qmodel, DEVICES["LFE5U-85F"])
    wide = [layer.name for layer in qmodel.weight_layers
            if max(layer.weight_bits, layer.in_bits) > 8]
    assert wide and all(fold[name].multiplier == "dsp" and fold[name].hard_lanes is None
                        for name in wide)
    result = compiled.simulate_core(qmodel, fold, images, idle=0.2, stall=0.2, seed=4)
    assert result["passed"] and not result["mismatches"]
    assert result["logits"] == classify(qmodel, images.reshape(-1, *qmodel.input_shape))[
        1].tolist()


def test_build_reports_each_layers_widths(mnist_test, tmp_path):
    build_main(["--model", "tiny_cnn", "--bits", "2", "--layer-bits", "first=8", "--target",
                "verilog", "--data", str(find_mnist()), "--out", str(tmp_path / "b")])
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["layer_bits"] == {"conv2d": [8, 8], "dense": [2, None]}
    assert "conv2d 8/8, dense 2/logits" in (tmp_path / "b" / "report.md").read_text()
