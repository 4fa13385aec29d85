"""`bpfvm bench`: a tiny run prints the table and writes pytest-benchmark JSON and the dashboard; `--compare` and
`bpfvm bench compare` flag an injected regression (exit 1 with --fail-on-regression); bad flags give one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BPFVM = [sys.executable, "-m", "bpfvm"]
TINY = ["--rounds", "1", "--round-time", "0.001", "--no-kernel"]
STATS_FIELDS = {"min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "iqr_outliers",
                "stddev_outliers", "outliers", "ld15iqr", "hd15iqr", "ops", "total", "iterations"}


def bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*BPFVM, "bench", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run of the RFC workload on both engines in every mode (and the C loop), from outside the repo."""
    out = tmp_path_factory.mktemp("bench")
    done = bench("--workloads", "slice", *TINY, "--json", str(out / "run.json"), "--html", str(out / "run.html"),
                 cwd=out)
    assert done.returncode == 0, done.stderr
    return {"dir": out, "stdout": done.stdout, "stderr": done.stderr,
            "json": json.loads((out / "run.json").read_text()), "html": (out / "run.html").read_text()}


def test_tiny_run_prints_the_table(tiny_run: dict[str, Any]) -> None:
    out = tiny_run["stdout"]
    for text in ("M calls/s", "ns/call", "ratio to baseline", "interp", "jit", "none", "plain", "pruned",
                 "C by hand", "x1.00", "targets"):
        assert text in out, text
    assert "Traceback" not in tiny_run["stderr"]


def test_tiny_run_writes_pytest_benchmark_json(tiny_run: dict[str, Any]) -> None:
    doc = tiny_run["json"]
    assert set(doc) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert {"node", "machine", "python_version", "release", "system", "cpu"} <= set(doc["machine_info"])
    assert {"id", "dirty", "branch", "project"} <= set(doc["commit_info"])
    rows = {(b["extra_info"]["engine"], b["extra_info"]["mode"]): b for b in doc["benchmarks"]}
    assert set(rows) == {(e, m) for e in ("interp", "jit") for m in ("none", "plain", "pruned")} | {("c", "O2")}
    for bench_ in doc["benchmarks"]:
        assert STATS_FIELDS <= set(bench_["stats"]) and bench_["stats"]["rounds"] == 1
        assert {"group", "name", "fullname", "params", "param", "extra_info", "options"} <= set(bench_)
        info = bench_["extra_info"]
        assert info["mcalls_per_s"] > 0 and info["ns_per_call"] > 0 and info["workload"] == "slice"
        assert info["hits"] == 100 * 64 * info["calls_per_round"]
    pruned = rows[("jit", "pruned")]
    assert pruned["name"] == "test_dynptr_slice[slice-jit-pruned]"  # the same names as `pytest bench/`
    assert pruned["fullname"] == "bench/test_dynptr_slice.py::test_dynptr_slice[slice-jit-pruned]"
    assert rows[("jit", "none")]["extra_info"]["ratio_to_baseline"] == 1.0
    assert pruned["extra_info"]["ratio_to_baseline"] > 0
    assert rows[("c", "O2")]["extra_info"]["by_hand_over_jit_pruned"] > 0
    assert rows[("jit", "none")]["extra_info"]["retval"] == 0


def test_tiny_run_writes_the_dashboard(tiny_run: dict[str, Any]) -> None:
    page = tiny_run["html"]
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and 'class="bar"' in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    pruned = next(b for b in tiny_run["json"]["benchmarks"] if b["extra_info"]["mode"] == "pruned"
                  and b["extra_info"]["engine"] == "jit")
    assert f'data-value="{pruned["extra_info"]["mcalls_per_s"]:.6g}"' in page


def _slowed(doc: dict[str, Any], key: tuple[str, str], factor: float) -> dict[str, Any]:
    """A copy of `doc` as an earlier run in which the row `key` was `factor` times faster."""
    old = json.loads(json.dumps(doc))
    for bench_ in old["benchmarks"]:
        info = bench_["extra_info"]
        if (info["engine"], info["mode"]) == key:
            info["mcalls_per_s"] *= factor
    return old


def test_compare_flags_an_injected_regression(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    new = tmp_path / "new.json"
    new.write_text(json.dumps(tiny_run["json"]))
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_slowed(tiny_run["json"], ("jit", "pruned"), 2.0)))
    done = bench("compare", str(old), str(new), "--fail-on-regression", "10%")
    assert done.returncode == 1, done.stdout + done.stderr
    flagged = [line for line in done.stdout.splitlines() if "REGRESSION" in line]
    assert len(flagged) == 1 and "slice-jit-pruned" in flagged[0] and "-50.0%" in flagged[0]
    assert "1 past the failure threshold 10%" in done.stdout
    # flagged but not failing without --fail-on-regression; past 60% it is no regression at all
    assert bench("compare", str(old), str(new)).returncode == 0
    relaxed = bench("compare", str(old), str(new), "--fail-on-regression", "60%", "--threshold", "60%")
    assert relaxed.returncode == 0 and "REGRESSION" not in relaxed.stdout
    same = bench("compare", str(new), str(new), "--fail-on-regression", "10%")
    assert same.returncode == 0 and "0 slower" in same.stdout


def test_bench_compare_fails_a_live_run_on_regression(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_slowed(tiny_run["json"], ("jit", "none"), 50.0)))
    done = bench("--workloads", "slice", "--engines", "jit", "--modes", "none", "--no-by-hand", *TINY,
                 "--compare", str(old), "--fail-on-regression", "10%", "--html", str(tmp_path / "both.html"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "REGRESSION" in done.stdout and "slice-jit-none" in done.stdout
    assert (tmp_path / "both.html").read_text().count('class="chart history"') == 1


def test_dashboard_subcommand_builds_from_several_runs(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    earlier = _slowed(tiny_run["json"], ("jit", "pruned"), 0.5)
    earlier["datetime"] = "2024-11-07T17:50:00+00:00"
    first.write_text(json.dumps(earlier))
    second.write_text(json.dumps(tiny_run["json"]))
    done = bench("dashboard", str(second), str(first), "--html", str(tmp_path / "d.html"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "d.html").read_text()
    assert "2 runs" in page and page.count('class="point"') >= 2 * 7


@pytest.mark.parametrize("args", [
    ["--engines", "gpu"],
    ["--modes", "fast"],
    ["--workloads", "nope"],
    ["--engines", ""],
    ["--rounds", "0"],
    ["--rounds", "abc"],
    ["--round-time", "-1"],
    ["--bogus"],
    ["--threshold", "ten"],
    ["--fail-on-regression", "10%"],
    ["--compare", "missing.json"],
    ["--compare", "README.md"],
    ["--json", "/nonexistent-dir/out.json"],
    ["nosuchcommand"],
    ["--rounds", "2", "dashboard", "x.json", "--html", "x.html"],
    ["dashboard"],
    ["dashboard", "README.md"],
    ["dashboard", "missing.json", "--html", "out.html"],
    ["dashboard", "examples", "--html", "out.html"],
    ["compare", "README.md"],
    ["compare", "README.md", "pyproject.toml"],
    ["compare", "a.json", "b.json", "--fail-on-regression", "150%"],
])
def test_bad_flags_give_one_line(args: list[str], tmp_path: Path) -> None:
    done = bench(*args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpfvm: error: "), done.stderr
    assert "Traceback" not in done.stderr and not done.stdout.strip()


@pytest.mark.kernel
def test_kernel_row_and_the_xdp_example(tmp_path: Path) -> None:
    """The kernel accepts examples/dynptr_slice_xdp.o and agrees with the JIT (results are checked per row)."""
    from bpfvm.kernel import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason is not None:
        pytest.skip(f"the kernel cannot run programs here: {reason}")
    done = bench("--workloads", "xdp_slice,xdp_sum", "--engines", "jit", "--modes", "none,pruned", "--kernel",
                 "--no-by-hand", "--rounds", "1", "--round-time", "0.001", "--json", str(tmp_path / "k.json"))
    assert done.returncode == 0, done.stderr
    rows = {(b["extra_info"]["workload"], b["extra_info"]["engine"]): b["extra_info"]
            for b in json.loads((tmp_path / "k.json").read_text())["benchmarks"]}
    assert rows[("xdp_slice", "kernel")]["retval"] == 2  # XDP_PASS
    assert rows[("xdp_sum", "kernel")]["retval"] == rows[("xdp_sum", "jit")]["retval"] == rows[("xdp_sum", "jit")][
        "expected_retval"]
    assert rows[("xdp_sum", "kernel")]["jit_baseline_over_kernel"] > 0
    assert "JIT none / kernel" in done.stdout
