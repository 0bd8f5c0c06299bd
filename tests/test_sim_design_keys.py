"""``sim.design_keys``: the keys of stored measurements follow the designs they measured, and
are made as the measuring commands make their designs."""

from types import SimpleNamespace

import sim.design_keys
from hw.build import main as build_main
from sim.design_keys import DesignKeys, core_hash, plan_hash
from sw.data import find_mnist


def test_keys_are_reproducible_and_follow_the_design(mnist_test):
    data = str(find_mnist())
    keys, again = DesignKeys(data), DesignKeys(data)
    design = keys.design("mlp", 2, "icebreaker")
    assert set(design) == {"core", "board"}
    assert again.design("mlp", 2, "icebreaker") == design
    for kind in ("rtl", "build", "board_bench"):
        assert getattr(again, kind)("mlp", 2, "icebreaker") == \
            getattr(keys, kind)("mlp", 2, "icebreaker")
    # Other bits: other weights, another core and board; another board: another fold.
    assert keys.design("mlp", 4, "icebreaker")["core"] != design["core"]
    assert keys.design("mlp", 2, "ulx3s-85f")["board"] != design["board"]
    # A remembered design is taken as it is (the bench's store hands them back).
    fresh = DesignKeys(data)
    fresh.remember("mlp", 2, "icebreaker", {**design, "core": "0" * 12})
    assert fresh.rtl("mlp", 2, "icebreaker") != keys.rtl("mlp", 2, "icebreaker")
    assert fresh.build("mlp", 2, "icebreaker") == keys.build("mlp", 2, "icebreaker")


def test_keys_follow_the_code_that_measures(mnist_test, monkeypatch):
    keys = DesignKeys(str(find_mnist()))
    before = {kind: getattr(keys, kind)("mlp", 2, "ulx3s-85f")
              for kind in ("rtl", "build", "board_bench")}
    # The harness changed: RTL regressions are measured again, builds are not.
    monkeypatch.setattr(sim.design_keys, "RTL_SOURCES",
                        (*sim.design_keys.RTL_SOURCES, "sim/bench.py"))
    assert keys.rtl("mlp", 2, "ulx3s-85f") != before["rtl"]
    assert keys.build("mlp", 2, "ulx3s-85f") == before["build"]
    monkeypatch.setattr(sim.design_keys, "BUILD_SOURCES",
                        (*sim.design_keys.BUILD_SOURCES, "sim/bench.py"))
    assert keys.build("mlp", 2, "ulx3s-85f") != before["build"]
    assert keys.board_bench("mlp", 2, "ulx3s-85f") == before["board_bench"]


def test_the_build_writes_the_core_keyed(mnist_test, tmp_path):
    """``hw.build``'s ``core.v`` for the iCEBreaker (its own multiplier width) is the core
    the bench keys the build by: the bench checks this after every build, and so does this."""
    data = str(find_mnist())
    build_main(["--model", "mlp", "--bits", "2", "--board", "icebreaker", "--target",
                "verilog", "--data", data, "--out", str(tmp_path / "b")])
    built = core_hash((tmp_path / "b" / "core.v").read_text())
    design = DesignKeys(data).design("mlp", 2, "icebreaker")
    assert built == design["core"]


def test_source_locations_do_not_change_a_design():
    """Moving code (another line, another checkout) keeps the key; changing a cell does not."""
    verilog = '(* src = "/a/hw/pool.py:12" *)\nmodule top(clk);\n  (* src = "x.py:3" *)\n  reg a;\n'
    moved = verilog.replace("/a/hw/pool.py:12", "/b/hw/pool.py:40").replace("x.py:3", "y.py:9")
    assert core_hash(moved) == core_hash(verilog)
    assert core_hash(verilog.replace("reg a", "reg b")) != core_hash(verilog)

    files = {"top.il": 'module \\top\n  attribute \\src "/a/hw/pool.py:12"\n  wire \\a\nend\n',
             "top.pcf": "set_io clk 35\n"}
    moved = {**files, "top.il": files["top.il"].replace(":12", ":40")}
    changed = {**files, "top.pcf": "set_io clk 36\n"}
    assert plan_hash(SimpleNamespace(files=moved)) == plan_hash(SimpleNamespace(files=files))
    assert plan_hash(SimpleNamespace(files=changed)) != plan_hash(SimpleNamespace(files=files))
