"""``python -m hw.build``: real builds, reports, and one-line errors that leave nothing behind."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT_KEYS = {"board", "model", "weight_bits", "act_bits", "luts", "luts_available", "ffs",
               "brams", "brams_available", "dsps", "fmax_mhz", "clock_mhz", "cycles_per_image",
               "images_per_second", "mac_efficiency", "bitstream"}


def _build(*args):
    return subprocess.run([sys.executable, "-m", "hw.build", *args], cwd=ROOT,
                          capture_output=True, text=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--board", "arty"], "unknown board 'arty'; known boards: icebreaker"),
    (["--bits", "9"], "--bits '9' is out of range"),
    (["--bits", "4", "--act-bits", "0"], "--act-bits '0' is out of range"),
    (["--model", "nothing.keras"], "model file 'nothing.keras' not found"),
    (["--model", "resnet50"], "unknown model 'resnet50'"),
    (["--fold", "missing.json"], "fold file 'missing.json' not found"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "out"
    result = _build(*args, "--out", str(out))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not any(tmp_path.iterdir())


def test_fold_file_is_checked_against_the_model(tmp_path):
    fold = tmp_path / "fold.json"
    fold.write_text(json.dumps({"dense": [3, 1]}))
    result = _build("--model", "mlp", "--bits", "2", "--fold", str(fold), "--target",
                    "verilog", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "layer 'dense': PE 3 must divide its 10 output channels" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.synth
def test_mlp_bitstream_for_icebreaker(tmp_path):
    out = tmp_path / "mlp"
    result = _build("--model", "mlp", "--bits", "2", "--board", "icebreaker", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert (report["board"], report["model"], report["weight_bits"]) == ("icebreaker", "mlp", 2)
    assert Path(report["bitstream"]).is_file() and Path(report["bitstream"]).stat().st_size > 0
    assert 0 < report["luts"] <= report["luts_available"] == 5280
    assert report["fmax_mhz"] > 0 and report["cycles_per_image"] == 784
    assert report["images_per_second"] == pytest.approx(
        min(report["clock_mhz"], report["fmax_mhz"]) * 1e6 / 784)
    assert 0 < report["mac_efficiency"] <= 1
    assert (out / "core.v").is_file() and (out / "export" / "model.npz").is_file()
    assert "| dense | dense |" in (out / "report.md").read_text()
