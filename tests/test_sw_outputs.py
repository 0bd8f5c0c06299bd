"""Nothing lost: every command writes only where it may, and says so in one line otherwise."""

import json
import os
import stat

import pytest

from sw.errors import UserError
from sw.outputs import (
    STAMP,
    marker,
    prepare_dir,
    prepare_file,
    replace_dir,
    write_file,
    write_json,
)
from tests.cli import assert_one_error, run_command


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def foreign(tmp_path):
    """A user's folder holding a file of theirs, with unusual permissions."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work\n")
    folder.chmod(0o751)
    return folder


def _untouched(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert (folder / "thesis.txt").read_text() == "four years of work\n"
    assert _mode(folder) == 0o751


def test_prepare_dir_refuses_a_folder_of_other_files(foreign):
    with pytest.raises(UserError, match=f"--out '{foreign}' exists and holds files hw.build "
                                        f"did not write; choose another folder or pass --force"):
        prepare_dir(foreign, "hw.build")
    _untouched(foreign)
    assert prepare_dir(foreign, "hw.build", force=True) == foreign
    _untouched(foreign)


def test_prepare_dir_accepts_new_empty_stamped_and_legacy_folders(tmp_path):
    assert prepare_dir(tmp_path / "new" / "deeper", "hw.build") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    prepare_dir(tmp_path / "empty", "hw.build")
    stamped = tmp_path / "stamped"
    stamped.mkdir()
    (stamped / STAMP).write_text(marker("hw.build") + "\n")
    (stamped / "core.v").write_text("module x; endmodule\n")
    prepare_dir(stamped, "hw.build")
    with pytest.raises(UserError, match=r"holds files sw\.quantize did not write"):
        prepare_dir(stamped, "sw.quantize")  # another command's output is not this one's
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "report.json").write_text("{}")
    (legacy / "core.v").write_text("")
    prepare_dir(legacy, "hw.build", legacy=("report.json", "core.v"))
    with pytest.raises(UserError, match="did not write"):
        prepare_dir(legacy, "hw.build", legacy=("report.json", "core.v", "fold.json"))


def test_prepare_refuses_impossible_paths(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot write --out '{blocker}/out': '{blocker}' is "
                                        f"a file, not a folder"):
        prepare_dir(blocker / "out", "hw.build")
    with pytest.raises(UserError, match=f"--out '{blocker}' is a file, not a folder"):
        prepare_dir(blocker, "hw.build")
    with pytest.raises(UserError, match=f"--json '{tmp_path}' is a folder, not a file"):
        prepare_file(tmp_path, "sw.evaluate")
    with pytest.raises(UserError, match=r"cannot write --json '/proc/nnfpga/x.json': '/proc' "
                                        r"is not writable"):
        prepare_file("/proc/nnfpga/x.json", "sw.evaluate")
    assert blocker.read_text() == "x"


def test_replace_dir_keeps_the_folders_mode_and_leaves_it_alone_on_failure(tmp_path):
    out = tmp_path / "out"
    with replace_dir(out, "hw.build") as scratch:
        (scratch / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first" and (out / STAMP).is_file()
    assert _mode(out) == 0o777 & ~_umask()
    out.chmod(0o750)
    with pytest.raises(RuntimeError), replace_dir(out, "hw.build") as scratch:
        (scratch / "b.txt").write_text("half")
        raise RuntimeError("the build failed")
    assert sorted(p.name for p in out.iterdir()) == [STAMP, "a.txt"]
    with replace_dir(prepare_dir(out, "hw.build"), "hw.build") as scratch:
        (scratch / "b.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == [STAMP, "b.txt"]
    assert _mode(out) == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch left beside it


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_files_are_replaced_only_when_ours(tmp_path):
    theirs = tmp_path / "results.json"
    theirs.write_text('{"mine": 1}')
    with pytest.raises(UserError, match=f"--json '{theirs}' exists and was not written by "
                                        f"sw.evaluate; choose another file or pass --force"):
        prepare_file(theirs, "sw.evaluate")
    assert theirs.read_text() == '{"mine": 1}'
    ours = tmp_path / "ours.json"
    write_json(ours, {"accuracy": 0.9}, "sw.evaluate")
    ours.chmod(0o640)
    assert json.loads(ours.read_text()) == {"generator": "nnfpga sw.evaluate", "accuracy": 0.9}
    prepare_file(ours, "sw.evaluate")
    write_json(ours, {"accuracy": 0.8}, "sw.evaluate")
    assert json.loads(ours.read_text())["accuracy"] == 0.8 and _mode(ours) == 0o640
    with pytest.raises(UserError, match=r"was not written by sim\.regress"):
        prepare_file(ours, "sim.regress")
    empty = tmp_path / "empty.png"
    empty.touch()
    prepare_file(empty, "sw.evaluate")
    write_file(empty, b"\x89PNG")
    assert empty.read_bytes() == b"\x89PNG"


#: Each writing command with its output option, pointed at a placeholder ``{out}``.
WRITERS = {
    "hw.build": ["hw.build", "--model", "mlp", "--bits", "2", "--target", "verilog", "--out"],
    "sw.quantize": ["sw.quantize", "--model", "mlp", "--bits", "2", "--out"],
    "sw.evaluate --json": ["sw.evaluate", "--model", "mlp", "--bits", "2", "--json"],
    "sw.evaluate --plot": ["sw.evaluate", "--model", "mlp", "--bits", "2", "--plot"],
    "sim.bench": ["sim.bench", "--models", "mlp", "--bits", "2", "--no-build", "--rtl-images",
                 "0", "--out"],
    "sim.regress --json": ["sim.regress", "--model", "mlp", "--bits", "2", "--images", "2",
                           "--json"],
}
FOLDER_WRITERS = ("hw.build", "sw.quantize", "sim.bench")


@pytest.mark.parametrize("writer", WRITERS)
def test_every_command_refuses_to_overwrite_what_it_did_not_write(writer, foreign):
    target = foreign if writer in FOLDER_WRITERS else foreign / "thesis.txt"
    if writer == "sim.bench":  # the bench writes OUT/ and OUT.md: both are checked
        assert_one_error(run_command(*WRITERS[writer], str(foreign)),
                         f"'{foreign}' exists and holds files sim.bench did not write")
    else:
        assert_one_error(run_command(*WRITERS[writer], str(target)), f"'{target}' exists and ")
    _untouched(foreign)


@pytest.mark.parametrize("writer", WRITERS)
def test_every_command_refuses_a_path_under_a_file_before_working(writer, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_error(run_command(*WRITERS[writer], str(blocker / "sub" / "out")),
               f"'{blocker}' is a file, not a folder")
    assert blocker.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_a_build_replaces_its_own_earlier_output_and_keeps_the_mode(tmp_path, foreign):
    out = tmp_path / "build"
    out.mkdir()
    out.chmod(0o755)
    first = run_command(*WRITERS["hw.build"], str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    assert (out / "core.v").is_file() and (out / "report.json").is_file()
    assert _mode(out) == 0o755
    (out / "core.v").write_text("stale")
    out.chmod(0o750)
    again = run_command(*WRITERS["hw.build"], str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "core.v").read_text() != "stale" and _mode(out) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "mine"]
    forced = run_command(*WRITERS["hw.build"], str(foreign), "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert not (foreign / "thesis.txt").exists() and (foreign / "core.v").is_file()
    assert _mode(foreign) == 0o751
