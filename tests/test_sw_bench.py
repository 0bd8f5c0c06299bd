"""``python -m sw.bench``: a small real sweep, its page and JSON, and resuming it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sw.bench import Store, ceiling

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "sw.bench", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_small_sweep_writes_page_and_resumes(mnist_test, tmp_path):
    from sw.data import find_mnist

    out = tmp_path / "results"
    args = ["--models", "mlp", "--bits", "2,8", "--no-build", "--rtl-images", "0",
            "--data", str(find_mnist()), "--out", str(out)]
    first = _bench(*args)
    assert first.returncode == 0, first.stderr
    entries = json.loads((out / "results.json").read_text())["entries"]
    golden = {key.rsplit("/", 1)[0]: value for key, value in entries.items()
              if key.startswith("golden/")}
    assert set(golden) == {"golden/mlp/2/ptq", "golden/mlp/8/ptq"}
    assert all(value["images"] == 10000 for value in golden.values())
    assert golden["golden/mlp/8/ptq"]["accuracy"] > golden["golden/mlp/2/ptq"]["accuracy"] > 0.5
    page = (tmp_path / "results.md").read_text()
    assert "| mlp | 88.00 | 8 |" in page
    assert (out / "accuracy.png").stat().st_size > 1000
    second = _bench(*args)
    assert second.returncode == 0
    assert "golden accuracy (ptq): stored" in second.stderr
    assert json.loads((out / "results.json").read_text())["entries"] == entries


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, message in [(["--bits", "0"], "out of range"),
                          (["--boards", "nosuchboard"], "nosuchboard"),
                          (["--models", "nosuch"], "nosuch")]:
        done = _bench(*args, "--out", str(tmp_path / "r"))
        assert done.returncode == 2
        assert done.stderr.startswith("error:") and message in done.stderr
        assert "Traceback" not in done.stderr


def test_corrupt_store_is_an_error_and_ceiling(tmp_path):
    from sw.errors import UserError

    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Store(path)
    assert Store(path, force=True).entries == {}
    # 107 lanes at 100 MHz on LeNet-5's 281,640 MACs per image.
    assert ceiling(107, 100.0, 281_640) == pytest.approx(37_991.8, rel=1e-4)
