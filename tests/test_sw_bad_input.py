"""Bad input a user may bring: data out of range, useless options, damaged model files."""

import os
import re

import numpy as np
import pytest

from sw.data import load_test
from sw.errors import UserError
from tests.cli import assert_one_error, run_command


def _npz(path, images, labels=None):
    labels = np.arange(len(images)) % 10 if labels is None else labels
    np.savez(path, x_test=images, y_test=labels, x_train=images, y_train=labels)
    return path


@pytest.fixture
def pixels(rng):
    return rng.integers(0, 256, size=(6, 28, 28)).astype(np.uint8)


def test_images_in_zero_one_are_scaled_and_said(tmp_path, pixels, capsys):
    images, _ = load_test(_npz(tmp_path / "unit.npz", pixels.astype(np.float32) / 255))
    assert images.dtype == np.uint8 and np.array_equal(images, pixels)
    assert "float32 images in [0, 1]; scaled to pixels 0..255" in capsys.readouterr().err
    whole, _ = load_test(_npz(tmp_path / "whole.npz", pixels.astype(np.float64)))
    assert np.array_equal(whole, pixels)  # whole-number floats 0..255 are pixels as they are
    wide, _ = load_test(_npz(tmp_path / "wide.npz", pixels.astype(np.int16)))
    assert np.array_equal(wide, pixels)


@pytest.mark.parametrize(("images", "message"), [
    (np.full((2, 28, 28), 300, np.int16), "int16 images with values 300..300; expected 8-bit "
                                          "pixels 0..255 (or floats in [0, 1])"),
    (np.full((2, 28, 28), -1, np.int8), "int8 images with values -1..-1"),
    (np.full((2, 28, 28), 2.5, np.float32), "float32 images with values 2.5..2.5"),
    (np.full((2, 28, 28), np.nan, np.float32), "images contain NaN or infinite values"),
    (np.zeros((0, 28, 28), np.uint8), "no images"),
])
def test_images_that_would_wrap_are_refused(tmp_path, images, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_test(_npz(tmp_path / "bad.npz", images, np.zeros(len(images), np.uint8)))


def test_labels_are_checked(tmp_path, pixels):
    with pytest.raises(UserError, match=r"labels must be whole numbers 0\.\.255"):
        load_test(_npz(tmp_path / "bad.npz", pixels, np.full(len(pixels), -3)))


def test_out_of_range_data_is_one_line_in_the_commands(tmp_path):
    data = _npz(tmp_path / "mnist.npz", np.full((4, 28, 28), 1000, np.int32))
    result = run_command("sw.evaluate", "--model", "mlp", "--bits", "2", "--data", str(data))
    assert_one_error(result, "int32 images with values 1000..1000")


@pytest.mark.parametrize("command", [
    ["sw.quantize", "--model", "mlp", "--bits", "2", "--out", "{tmp}/q"],
    ["hw.build", "--model", "mlp", "--bits", "2", "--target", "verilog", "--out", "{tmp}/b"],
])
@pytest.mark.parametrize("count", ["0", "-5"])
def test_calibration_must_be_positive(command, count, tmp_path):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in command]
    assert_one_error(run_command(*args, "--calibration", count),
               f"--calibration must be a positive number of images, not {count}")
    assert not any(tmp_path.iterdir())


def test_build_with_unusable_data_fails_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    build = ["hw.build", "--model", "mlp", "--bits", "2", "--target", "verilog", "--out",
             str(out)]
    assert_one_error(run_command(*build, "--data", str(empty)),
                     f"no MNIST test set (t10k-*-idx*-ubyte[.gz] or mnist.npz) in '{empty}'")
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(os.urandom(3000))
    assert_one_error(run_command(*build, "--data", str(corrupt)),
                     f"cannot read '{corrupt}': not a .npz archive")
    assert not out.exists()


@pytest.mark.parametrize(("suffix", "message"), [
    (".keras", "is not a Keras archive (a .keras file is a zip archive; this one is not"),
    (".h5", "is not an HDF5 file"),
])
def test_damaged_model_files_say_what_is_wrong(tmp_path, suffix, message):
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(os.urandom(5000))
    assert_one_error(run_command("sw.evaluate", "--model", str(junk), "--bits", "4"),
               f"model file '{junk}' {message}")
