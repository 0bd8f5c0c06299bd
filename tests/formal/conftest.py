"""The ``sby`` fixture: runs a harness in a test's own directory and records what it took.

With ``-n 0`` the terminal summary lists every run (test, mode, depth, properties, verdict,
seconds): the table behind ``docs/results.md``'s formal section.
"""

import pytest

from tests.formal.harness import run_sby, sby_available

_RUNS = []


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
