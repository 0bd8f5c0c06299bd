"""MNIST loading and the command lines' handling of bad input."""

import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from sw.data import load_idx, load_test, shared_test_set
from sw.errors import UserError
from sw.paths import ROOT


def test_shared_test_set_is_the_published_one(mnist_test):
    directory = shared_test_set()
    if directory is None:  # a user's own copy, found elsewhere: nothing to check it against
        pytest.skip("../shared/datasets/mnist is not here; the test set came from elsewhere")
    for line in (directory / "MD5SUMS").read_text().split("\n"):
        if line.strip():
            digest, name = line.split()
            assert hashlib.md5((directory / name.lstrip("*")).read_bytes()).hexdigest() == digest
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]


def _write_idx(path, array, dtype_code=0x08):
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(">u1").tobytes())


def test_idx_plain_gzip_npz_and_corrupt(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    x, y = load_test(tmp_path)
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    gz = tmp_path / "gz"
    gz.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (gz / f"{name}.gz").write_bytes(gzip.compress((tmp_path / name).read_bytes()))
    assert np.array_equal(load_test(gz)[0], images)
    np.savez(tmp_path / "mnist.npz", x_test=images, y_test=labels, x_train=images,
             y_train=labels)
    assert np.array_equal(load_test(tmp_path / "mnist.npz")[1], labels)
    truncated = tmp_path / "short-idx3-ubyte"
    truncated.write_bytes((tmp_path / "t10k-images-idx3-ubyte").read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated or oversized IDX file"):
        load_idx(truncated)
    with pytest.raises(UserError, match="no MNIST test set"):
        load_test(ROOT / "docs")


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**__import__("os").environ, "NNFPGA_OFFLINE": "1"})


@pytest.mark.parametrize(("args", "message"), [
    (["sw.quantize", "--bits", "17", "--out", "x"], "--bits '17' is out of range"),
    (["sw.quantize", "--bits", "four", "--out", "x"], "--bits 'four' is not an integer"),
    (["sw.quantize", "--model", "vgg16", "--out", "x"], "unknown model 'vgg16'"),
    (["sw.evaluate", "--model", "nothere.keras"], "model file 'nothere.keras' not found"),
    (["sw.evaluate", "--bits", "8,0"], "--bits entry '0' is out of range"),
    (["sw.evaluate", "--data", "docs"], "no MNIST test set"),
])
def test_cli_errors_are_one_line(args, message):
    result = _run(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_quantize_cli_writes_exports(tmp_path):
    result = _run("sw.quantize", "--model", "tiny_cnn", "--bits", "4", "--out",
                  str(tmp_path / "q"), "--calibration", "200")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["weight_bits"] == 4 and manifest["macs_per_image"] == 63360
    assert (tmp_path / "q" / "flat_weights.txt").is_file()
    assert len(list((tmp_path / "q").glob("*.hex"))) == 2
