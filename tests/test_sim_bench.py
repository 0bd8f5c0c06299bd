"""``python -m sim.bench``: a small real sweep with an RTL regression, its page and JSON,
resuming it, and re-measuring when the design it measured changes."""

import json
import subprocess
import sys

import pytest

import sim.bench
from sim.bench import HARDWARE_SOURCES, Store, ceiling, hardware_fingerprint, rtl_check
from sw.paths import ROOT

#: The method comparison and the proofs beyond RTL (gate-level rows, formal runs, random
#: models) left out.
NO_PROOFS = ["--netlist", "", "--no-formal", "--random-models", "0", "--compare", ""]


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "sim.bench", *args], capture_output=True,
                          text=True, cwd=ROOT)


def _rtl_entries(out):
    entries = json.loads((out / "results.json").read_text())["entries"]
    return {key: value for key, value in entries.items() if key.startswith("rtl/")}


def _row(page, start):
    rows = [line for line in page.splitlines() if line.startswith(start)]
    assert len(rows) == 1, page
    return rows[0]


def test_small_sweep_writes_page_and_resumes(mnist_test, tmp_path, monkeypatch, capsys):
    from sw.data import find_mnist

    out = tmp_path / "results"
    common = ["--models", "mlp", "--no-build", "--data", str(find_mnist()), "--out", str(out),
              *NO_PROOFS]
    first = _bench(*common, "--bits", "2,8", "--rtl-images", "0")
    assert first.returncode == 0, first.stderr
    entries = json.loads((out / "results.json").read_text())["entries"]
    golden = {key.rsplit("/", 1)[0]: value for key, value in entries.items()
              if key.startswith("golden/")}
    assert set(golden) == {"golden/mlp/2/ptq", "golden/mlp/8/ptq"}
    assert all(value["images"] == 10000 for value in golden.values())
    assert golden["golden/mlp/8/ptq"]["accuracy"] > golden["golden/mlp/2/ptq"]["accuracy"] > 0.5
    page = (tmp_path / "results.md").read_text()
    assert "| mlp | 88.00 | 8 |" in page and "## RTL regression" not in page
    assert (out / "accuracy.png").stat().st_size > 1000

    # The RTL regression, with the default random input gaps and output stalls; the accuracy
    # measurements resume from the store.
    args = [*common, "--bits", "2", "--rtl-images", "50", "--jobs", "1"]
    second = _bench(*args)
    assert second.returncode == 0, second.stderr
    assert "golden accuracy (ptq): stored" in second.stderr
    [(key, rtl)] = _rtl_entries(out).items()
    design = rtl["design"]
    assert len(design) == 12
    assert key == f"rtl/mlp/2/ulx3s-85f/{key.split('/')[4]}/{design}/n50-i0.2-s0.2"
    assert (rtl["images"], rtl["mismatches"], rtl["idle"], rtl["stall"]) == (50, 0, 0.2, 0.2)
    assert rtl["rtl_accuracy"] == rtl["golden_accuracy"] > 0.5
    # Four pixels a transfer: 196 input words an image, and as many cycles predicted.
    assert (rtl["input_pixels"], rtl["input_words"]) == (4, 196)
    assert rtl["cycles_per_image_predicted"] == 196 and rtl["sim_images_per_second"] > 0
    page = (tmp_path / "results.md").read_text()
    row = _row(page, "| mlp | 2 | 50 | 20% / 20% | 0 |")
    assert f"`{design[:8]}` |" in row
    # The MLP is bound by its input: a source idle 20% of cycles stretches its interval,
    # which the page says rather than hiding.
    assert not rtl_check(rtl)[0]
    assert row.endswith("| ok |") == (rtl["cycles_per_image"] == 196)
    assert ("input-bound" in row) == (rtl["cycles_per_image"] != 196)

    # Resumed for the same design: nothing is measured again, even when the generator's source
    # changed elsewhere (the design keys are made again, and come out the same).
    stored = json.loads((out / "results.json").read_text())["entries"]
    monkeypatch.setattr(sim.bench, "hardware_fingerprint", lambda root=None: "0123456789ab")
    sim.bench.main(args)
    assert "RTL regression: stored" in capsys.readouterr().err
    entries = json.loads((out / "results.json").read_text())["entries"]
    assert {key: value for key, value in entries.items() if not key.startswith("design/")} == {
        key: value for key, value in stored.items() if not key.startswith("design/")}
    stored = entries

    # A changed design: --stored-only shows the old run, marked stale, and measures nothing.
    monkeypatch.setattr(sim.bench.DesignKeys, "rtl", lambda *_args: "feedfacecafe")
    sim.bench.main([*args, "--stored-only"])
    assert json.loads((out / "results.json").read_text())["entries"] == stored
    assert f"`{design[:8]}` (stale) |" in _row((tmp_path / "results.md").read_text(),
                                               "| mlp | 2 | 50 |")

    # ... and a sweep measures again, under a new key; a mismatch is shown and exits 1.
    def mismatching(*_args):
        return {**rtl, "mismatches": 1, "mismatched_images": [7], "rtl_accuracy": 0.5,
                "first_mismatch": {"image": 7, "layer": {"layer": "dense_1",
                                                         "position": {"channel": 3}}}}

    monkeypatch.setattr(sim.bench, "_rtl", mismatching)
    with pytest.raises(SystemExit) as exit_:
        sim.bench.main(args)
    assert exit_.value.code == 1
    assert "rtl/mlp/2" in capsys.readouterr().err
    rtl_entries = _rtl_entries(out)
    assert set(rtl_entries) == {key, key.replace(design, "feedfacecafe")}
    row = _row((tmp_path / "results.md").read_text(), "| mlp | 2 | 50 |")
    assert "| 1 |" in row and "**1 MISMATCH** (first: image 7, layer dense_1 channel 3)" in row


@pytest.mark.xdist_group("netlist")  # the gate-level tests build the same netlist harness
def test_proofs_beyond_rtl_on_the_page(mnist_test, tmp_path):
    """A gate-level row and a one-model random sweep, measured for real and on the page."""
    from sw.data import find_mnist

    out = tmp_path / "results"
    done = _bench("--models", "mlp", "--bits", "2", "--boards", "ulx3s-85f", "--no-build",
                  "--rtl-images", "0", "--board-bench", "", "--netlist", "mlp:2:ulx3s-85f:4",
                  "--no-formal", "--random-models", "1", "--compare", "", "--jobs", "1",
                  "--rtl-idle", "0", "--rtl-stall", "0", "--data", str(find_mnist()),
                  "--out", str(out))
    assert done.returncode == 0, done.stderr
    entries = json.loads((out / "results.json").read_text())["entries"]
    [netlist] = [value for key, value in entries.items() if key.startswith("netlist/")]
    assert (netlist["netlist"], netlist["images"], netlist["mismatches"]) == ("ecp5", 4, 0)
    assert sum(netlist["netlist_cells"].values()) > 100 and netlist["input_words"] == 196
    [swept] = [value for key, value in entries.items() if key.startswith("random/")]
    assert swept["exit"] == 0 and swept["passed"] == {"rtl": 1, "float": 1}
    page = (tmp_path / "results.md").read_text()
    row = _row(page, "| mlp | 2 | ecp5 (ulx3s-85f) | 4 | 0% / 0% | 0 |")
    assert "| 196 / 196 |" in row
    assert row.endswith("| ok |")
    assert "| golden model against Keras at 8 bits" in page and "## Formal" not in page


def test_formal_runs_are_listed(tmp_path):
    """One component's runs through pytest and sby, then the section with a mutant caught
    and a failed run, which the page must not hide."""
    from sim.bench_proofs import formal_section, run_formal

    measured = run_formal(tmp_path, select="test_fifo and (cover or test_bmc)")
    assert measured["exit"] == 0
    assert [(run["mode"], run["status"], run["outcome"]) for run in measured["runs"]] == \
        [("bmc", "PASS", "passed")] * 3 + [("cover", "PASS", "passed")]
    mutant = {"test": "test_mutants.py::test_fickle", "mode": "bmc", "depth": 12,
              "properties": ["o.stable"], "status": "FAIL", "failed": ["o.stable"],
              "seconds": 1.0, "outcome": "passed"}
    page = "\n".join(formal_section({**measured, "runs": [*measured["runs"], mutant]},
                                     lambda entry: "`key`"))
    assert "| fifo | bmc | 24 | 3 |" in page and "3 PASS" in page and "tests all passed" in page
    assert "1 mutants caught" in page and "(o.stable)" in page and "the 0 unmutated" in page
    broken = {**measured, "runs": [{**measured["runs"][0], "status": "FAIL",
                                    "outcome": "failed"}]}
    page = "\n".join(formal_section(broken, lambda entry: "`key`"))
    assert "**FAILED: test_fifo.py::test_bmc[1]**" in page and "1 FAIL" in page


def test_hardware_fingerprint_follows_the_generator_source(tmp_path):
    for name in ("hw/a.py", "sim/regress.py", "sim/core.py", "sw/golden.py", "sw/quantize.py",
                 "sim/bench.py", "sim/compiled_tb.cpp", "hw/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    before = hardware_fingerprint(tmp_path)
    assert hardware_fingerprint(tmp_path) == before
    for name in ("sim/bench.py", "hw/notes.txt", "sim/compiled_tb.cpp"):  # not the designs
        (tmp_path / name).write_text("changed")
    assert hardware_fingerprint(tmp_path) == before
    for name in ("hw/a.py", "sim/regress.py", "sw/golden.py"):
        (tmp_path / name).write_text("changed")
        assert hardware_fingerprint(tmp_path) != before
        before = hardware_fingerprint(tmp_path)
    (tmp_path / "hw/b.py").write_text("")  # a new generator file
    assert hardware_fingerprint(tmp_path) != before
    assert "hw/*.py" in HARDWARE_SOURCES


def test_rtl_check_never_hides_a_failure():
    ok = {"mismatches": 0, "rtl_accuracy": 0.9, "golden_accuracy": 0.9,
          "cycles_per_image": 2880.0, "cycles_per_image_predicted": 2880, "idle": 0.2,
          "input_words": 784}
    assert rtl_check(ok) == (False, "ok")
    slow = rtl_check({**ok, "cycles_per_image": 2900.0})
    assert slow == (False, "**measured ≠ predicted**")
    bound = rtl_check({**ok, "cycles_per_image": 980.0, "cycles_per_image_predicted": 784})
    assert bound == (False, "ok (input-bound: 784 words an image at a 80% input rate = 980 "
                            "cycles)")
    # Off the input bound by more than 1%: said, in bold.
    off = rtl_check({**ok, "cycles_per_image": 1000.0, "cycles_per_image_predicted": 784})
    assert off == (False, "**measured ≠ predicted**")
    failed, text = rtl_check({**ok, "mismatches": 3, "rtl_accuracy": 0.8})
    assert failed and "**3 MISMATCHES**" in text and "≠ golden" in text
    assert rtl_check({"error": "sim.regress crashed"}) == (
        True, "**FAILED**: sim.regress crashed")


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, message in [(["--bits", "0"], "out of range"),
                          (["--boards", "nosuchboard"], "nosuchboard"),
                          (["--models", "nosuch"], "nosuch"),
                          (["--rtl-idle", "1"], "--rtl-idle"),
                          (["--rtl-stall", "-0.1"], "--rtl-stall"),
                          (["--netlist", "mlp:2:ulx3s-85f"], "MODEL:BITS:BOARD:IMAGES"),
                          (["--netlist", "mlp:2:nosuchboard:4"], "nosuchboard"),
                          (["--netlist", "nosuch:2:ulx3s-85f:4"], "nosuch"),
                          (["--random-models", "-1"], "--random-models")]:
        done = _bench(*args, "--out", str(tmp_path / "r"))
        assert done.returncode == 2
        assert done.stderr.startswith("error:") and message in done.stderr
        assert "Traceback" not in done.stderr
    # A page's name for the folder: refused before anything is made (a folder named
    # results.md would have been created and the page's rename failed with a traceback).
    done = _bench("--out", str(tmp_path / "results.md"))
    assert done.returncode == 2 and "--out" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results.md").exists()


def test_corrupt_store_is_an_error_and_ceiling(tmp_path):
    from sw.errors import UserError

    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Store(path)
    assert Store(path, force=True).entries == {}
    # 107 lanes at 100 MHz on LeNet-5's 281,640 MACs per image.
    assert ceiling(107, 100.0, 281_640) == pytest.approx(37_991.8, rel=1e-4)


def test_methods_compared(mnist_train, mnist_test):
    """A measured cell, a trained method with no model (the command that trains one), and the
    section: each row's best in bold, the best per width, the mixed rows."""
    from sim.bench_methods import best_methods, measure_method, methods_section

    calibration, (images, labels) = mnist_train[0][:200], (mnist_test[0][:300],
                                                           mnist_test[1][:300])
    ptq = measure_method("tiny_cnn", 5, "ptq", calibration, images, labels)
    assert ptq["method"] == "post-training" and 0.8 < ptq["accuracy"] <= 1
    missing = measure_method("tiny_cnn", 5, "iterative", calibration, images, labels)
    assert missing == {"missing": "python -m sw.train --model tiny_cnn --method iterative "
                                  "--bits 5 --act-bits 5"}
    results = {"method/tiny_cnn/1/ptq": {"accuracy": 0.3},
               "method/tiny_cnn/1/dual-copy (QAT)": {"accuracy": 0.9},
               "method/tiny_cnn/1/iterative": missing,
               "mixed/tiny_cnn/1/first=8/1/dual-copy (QAT)": {"accuracy": 0.92}}
    assert best_methods(results, ["tiny_cnn"]) == {1: [("dual-copy (QAT)", 0.9)]}
    page = "\n".join(methods_section(results, ["tiny_cnn"], {"tiny_cnn": {"accuracy": 0.96}}))
    assert "| 1 | 30.00 | – | – | – | not trained | **90.00** |" in page
    assert "W1A1 dual-copy (QAT) (90.00%)" in page
    assert "| tiny_cnn | W1A1 | `first=8/1` | – | 92.00 |" in page
