"""The ``sby`` fixture: runs a harness in a test's own directory and records what it took.

With ``-n 0`` the terminal summary lists every run (test, mode, depth, properties, verdict,
seconds), and with ``NNFPGA_FORMAL_JSON=FILE`` the same runs, each with its test's outcome,
are written to ``FILE`` as JSON: ``python -m sim.bench`` puts that table on
``docs/results.md``.
"""

import json
import os

import pytest

from tests.formal.harness import run_sby, sby_available

#: Where the runs go as JSON (``sim.bench`` sets it).
JSON_ENV = "NNFPGA_FORMAL_JSON"

_RUNS = []
_OUTCOMES = {}


@pytest.fixture
def sby(tmp_path, request):
    """``sby(harness, mode=..., depth=...)`` -> :class:`~tests.formal.harness.FormalResult`.

    Fails the test when the tools are missing: they are locked dependencies (``uv sync``).
    """
    missing = sby_available()
    if missing:
        pytest.fail(missing, pytrace=False)

    def run(harness, *, mode, depth, name=None):
        name = name or mode
        result = run_sby(harness, mode=mode, depth=depth, workdir=tmp_path, name=name)
        checks = getattr(harness, "checks", ())
        if mode == "cover":
            checks = (f"cover: {harness.cover_outputs} output transfers",)
        test = request.node.nodeid.removeprefix("tests/formal/")
        _RUNS.append((test, mode, depth, checks, result))
        return result

    return run


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.nodeid.removeprefix("tests/formal/")] = report.outcome


def pytest_sessionfinish(session):
    path = os.environ.get(JSON_ENV)
    if path:
        runs = [{"test": test, "mode": mode, "depth": depth, "properties": list(checks),
                 "status": result.status, "failed": sorted(result.failed),
                 "seconds": round(result.seconds, 2), "outcome": _OUTCOMES.get(test, "unknown")}
                for test, mode, depth, checks, result in _RUNS]
        with open(path, "w") as file:
            json.dump({"runs": runs}, file, indent=1)


def pytest_terminal_summary(terminalreporter):
    if not _RUNS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("formal runs")
    write("| test | mode | depth | properties | result | s |")
    write("|---|---|---|---|---|---|")
    for test, mode, depth, checks, result in _RUNS:
        failed = f" ({', '.join(result.failed)})" if result.failed else ""
        write(f"| `{test}` | {mode} | {depth} | {', '.join(checks)} | {result.status}{failed} "
              f"| {result.seconds:.1f} |")
    write(f"total sby time: {sum(run[-1].seconds for run in _RUNS):.0f} s in {len(_RUNS)} runs")
