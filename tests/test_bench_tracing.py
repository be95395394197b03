"""``bench/tracing_overhead.py`` keeps measuring what it claims: its baseline build has no
tracing code left and still runs, and each build's child reports one figure per window.

The baseline is this tree with the tracing commit reverse-applied and the leftover forms
taken out by pattern; a new form of instrumentation in a hot-path file would make it
fail (or, worse, measure tracing on both sides), so the build is checked here."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("patch") is None or not (ROOT / ".git").exists(),
    reason="the baseline build needs the `patch` tool and the project's git history",
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tracing_overhead", ROOT / "bench" / "tracing_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def baseline(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    into: Path = bench.baseline_tree(bench.default_tracing_commit(), tmp_path_factory.mktemp("b"))
    return into


def test_the_baseline_build_has_no_tracing_left_in_its_hot_path_files(
    bench: ModuleType, baseline: Path
) -> None:
    for path in bench.INSTRUMENTED:
        text = (baseline / path).read_text()
        assert "_tracing" not in text, path
    # the instrumented tree does have it: the build took something out
    assert any("_tracing" in (ROOT / path).read_text() for path in bench.INSTRUMENTED)


def test_a_leftover_if_else_keeps_its_else_branch_one_level_out(bench: ModuleType) -> None:
    source = (
        "def f():\n"
        "    if _tracing.active is not None:\n"
        "        traced()\n"
        "        more()\n"
        "    else:\n"
        "        plain()\n"
        "        done()\n"
        "    after()\n"
    )
    out = bench._LEFTOVER_IF_ELSE.sub(bench._else_only, source)
    assert out == "def f():\n    plain()\n    done()\n    after()\n"
    block = "    if _tracing.active is not None:\n        traced()\n    after()\n"
    assert bench._LEFTOVER_BLOCK.sub("", block) == "    after()\n"
    assert bench._LEFTOVER.sub(r"\1", "x = a if _tracing.active is None else b") == "x = a"


@pytest.mark.slow
def test_each_build_runs_and_reports_a_figure_per_window(bench: ModuleType, baseline: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from _common import mock_process
    finally:
        sys.path.remove(str(ROOT / "bench"))
    with mock_process() as url:
        for mode, tree in (("baseline", baseline), ("off", ROOT), ("on", ROOT)):
            figures = bench.run_child(mode, url, 40, 2, tree)
            assert len(figures["cpu_us_per_call"]) == 2
            assert all(v > 0 for v in figures["cpu_us_per_call"] + figures["calls_per_s"])
            assert Path(figures["module"]).is_relative_to(tree), (mode, figures["module"])


@pytest.mark.slow
def test_served_children_take_turns_one_window_per_build_per_round(
    bench: ModuleType, baseline: Path
) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from _common import mock_process
    finally:
        sys.path.remove(str(ROOT / "bench"))
    trees = {"baseline": baseline, "off": ROOT, "on": ROOT}
    with mock_process() as url:
        rounds = bench.interleaved(trees, url, 30, 3, 1)
    assert len(rounds) == 3
    for done in rounds:
        assert set(done) == set(trees)
        assert all(w["cpu_us_per_call"] > 0 and w["calls_per_s"] > 0 for w in done.values())
        assert Path(done["baseline"]["module"]).is_relative_to(baseline)
    # the order is reversed every other round (drift cancels out)
    assert list(rounds[0]) == ["baseline", "off", "on"]
    assert list(rounds[1]) == ["on", "off", "baseline"]


def test_a_served_child_that_dies_is_an_error_not_a_hang(bench: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="on child ended"):
        bench.ServedChild("on", "http://127.0.0.1:9", 10, ROOT)  # nothing listens there


def test_the_child_refuses_a_wrong_argument_count() -> None:
    command = [sys.executable, str(ROOT / "bench" / "tracing_overhead.py"), "--child", "on"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--child" in done.stderr
    assert done.stdout == ""  # nothing measured


def test_the_cache_simulation_takes_this_hosts_l2_from_sysfs(
    bench: ModuleType, tmp_path: Path
) -> None:
    for index, level, size in (("index0", "1", "32K"), ("index2", "2", "512K")):
        folder = tmp_path / index
        folder.mkdir()
        (folder / "level").write_text(level + "\n")
        (folder / "size").write_text(size + "\n")
        (folder / "ways_of_associativity").write_text("16\n")
        (folder / "coherency_line_size").write_text("64\n")
    assert bench.l2_geometry(tmp_path) == "524288,16,64"
    assert bench.l2_geometry(tmp_path / "missing") == "1048576,8,64"


def test_cachegrind_counts_are_read_off_its_summary(bench: ModuleType) -> None:
    summary = (
        "==7== I   refs:      1,234,567\n"
        "==7== I1  misses:        9,999\n"
        "==7== LLi misses:          12\n"
        "==7== D   refs:        555,555\n"
        "==7== LLd misses:       4,321  (      3,000 rd   +       1,321 wr)\n"
    )
    assert bench.cachegrind_counts(summary) == {"instructions": 1234567, "l2_data_misses": 4321}
    assert bench.cachegrind_counts("valgrind: no such file") == {}
    assert bench.cachegrind_counts("==7== I   refs:      12\n") == {}  # both, or none
    assert bench.callgrind_count("==7== Collected : 4321\n") == {"instructions": 4321}
