"""Benchmark results as pytest-benchmark writes them (`pytest --benchmark-json`), and comparisons between runs.

The CLI writes the same top-level schema (machine_info, commit_info, benchmarks[] with stats and extra_info,
datetime, version) with the same benchmark names as `pytest bench/`, so dashboards and `--compare` read either.
Stats are over the wall-clock time of each round, as pytest-benchmark times them; the figures that matter
(M calls/s from the native timings, ratios) are in extra_info.

Loaded by path from the CLI (bench/ is not a package): stdlib only, no imports from bench/.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "5.2.3"  # the pytest-benchmark release whose JSON layout this follows
MAIN_FIGURE = "mcalls_per_s"


class ResultsError(Exception):
    """A results file that cannot be read or is not a benchmark result: one line, for the CLI."""


# -- stats, as pytest_benchmark.stats.Stats computes them -----------------------------------------------------------
def _quartiles(data: list[float]) -> tuple[float, float]:
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])


def stats(data: list[float], iterations: int = 1) -> dict[str, Any]:
    """The `stats` object of a benchmark from its per-round times in seconds."""
    if not data:
        raise ValueError("no rounds")
    ordered = sorted(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if len(data) > 1 else 0
    q1, q3 = _quartiles(ordered)
    iqr = q3 - q1
    if len(data) == 1:
        ld15, hd15 = data[0], data[0]
    else:
        ld15 = ordered[bisect_left(ordered, q1 - 1.5 * iqr)]
        pos = bisect_right(ordered, q3 + 1.5 * iqr)
        hd15 = ordered[-1] if pos == len(ordered) else ordered[pos]
    sd_out = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    iqr_out = sum(1 for v in data if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr)
    total = sum(data)
    return {
        "min": ordered[0], "max": ordered[-1], "mean": mean, "stddev": stddev, "rounds": len(data),
        "median": statistics.median(data), "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out,
        "stddev_outliers": sd_out, "outliers": f"{sd_out};{iqr_out}", "ld15iqr": ld15, "hd15iqr": hd15,
        "ops": len(data) / total if total else 0, "total": total, "data": list(data), "iterations": iterations,
    }


# -- the document -----------------------------------------------------------------------------------------------------
def _cpu() -> dict[str, Any]:
    brand = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                brand = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"brand_raw": brand or platform.processor(), "count": os.cpu_count(),
            "arch_string_raw": platform.machine()}


def machine_info(versions: dict[str, str] | None = None) -> dict[str, Any]:
    """pytest-benchmark's machine_info fields, plus `versions` (bpfvm, llvmlite, compiler, kernel ...)."""
    info: dict[str, Any] = {
        "node": platform.node(), "processor": platform.processor(), "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(), "python_build": list(platform.python_build()),
        "release": platform.release(), "system": platform.system(), "cpu": _cpu(),
    }
    if versions:
        info["versions"] = dict(versions)
    return info


def _git(root: Path, *args: str) -> str | None:
    """Read-only git queries (no optional locks, so not even the index's stat cache is written)."""
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_info(root: Path) -> dict[str, Any]:
    """pytest-benchmark's commit_info: the commit the working tree is on and whether it has changes."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"id": "unversioned", "time": None, "author_time": None, "dirty": False,
                "project": root.name, "branch": "(unknown)"}
    times = (_git(root, "log", "-1", "--format=%cI %aI") or " ").split(" ")
    return {
        "id": commit, "time": times[0] or None, "author_time": times[1] if len(times) > 1 else None,
        "dirty": bool(_git(root, "status", "--porcelain", "--untracked-files=no")),
        "project": root.name, "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "(unknown)",
    }


def benchmark(*, group: str, name: str, fullname: str, params: dict[str, Any], extra_info: dict[str, Any],
              wall_s: list[float], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry of benchmarks[], as pytest-benchmark writes it."""
    return {
        "group": group, "name": name, "fullname": fullname, "params": params,
        "param": "-".join(str(v) for v in params.values()), "extra_info": extra_info,
        "options": options or {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(wall_s),
                               "max_time": 0, "min_time": 0, "warmup": True},
        "stats": stats(wall_s),
    }


def document(benchmarks: list[dict[str, Any]], *, root: Path,
             versions: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "machine_info": machine_info(versions), "commit_info": commit_info(root), "benchmarks": benchmarks,
        "datetime": datetime.now(timezone.utc).isoformat(), "version": SCHEMA_VERSION,
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror}") from None


def read(path: Path) -> dict[str, Any]:
    """A results file from `bpfvm bench --json` or `pytest --benchmark-json`; one-line errors otherwise."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ResultsError(f"{path}: is a directory, not a results file") from None
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a text file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ResultsError(f"{path}: not a benchmark result (no benchmarks list; "
                           "write one with bpfvm bench --json or pytest --benchmark-json)")
    for i, bench in enumerate(doc["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("stats"), dict) or "name" not in bench:
            raise ResultsError(f"{path}: benchmarks[{i}] has no name or stats")
    return doc


# -- comparison -------------------------------------------------------------------------------------------------------
def row_key(bench: dict[str, Any]) -> str:
    """Rows match across files by workload/engine/mode, else by pytest's full name."""
    info = bench.get("extra_info") or {}
    if all(k in info for k in ("workload", "engine", "mode")):
        return f"{info['workload']}-{info['engine']}-{info['mode']}"
    return str(bench.get("fullname") or bench.get("name"))


@dataclass
class Change:
    """One row present in both runs. `change` is the relative gain (throughput up, or time down)."""

    key: str
    figure: str
    old: float
    new: float
    higher_is_better: bool

    @property
    def change(self) -> float:
        if self.higher_is_better:
            return self.new / self.old - 1 if self.old else 0.0
        return self.old / self.new - 1 if self.new else 0.0

    def regressed(self, threshold: float) -> bool:
        """Worse by more than `threshold` (0.10 = 10%): throughput fell below (1 - threshold) of the old."""
        return self.change < -threshold


def _figure(bench: dict[str, Any]) -> tuple[str, float, bool] | None:
    info = bench.get("extra_info") or {}
    value = info.get(MAIN_FIGURE)
    if isinstance(value, (int, float)) and value > 0:
        return MAIN_FIGURE, float(value), True
    median = (bench.get("stats") or {}).get("median")
    if isinstance(median, (int, float)) and median > 0:
        return "median_s", float(median), False
    return None


def compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[Change], list[str], list[str]]:
    """Changes of rows in both runs (M calls/s where rows have it, else the median round time), and the keys
    only in the old run and only in the new one."""
    old_rows = {row_key(b): b for b in old["benchmarks"]}
    new_rows = {row_key(b): b for b in new["benchmarks"]}
    changes = []
    for key, bench in new_rows.items():
        if key not in old_rows:
            continue
        a, b = _figure(old_rows[key]), _figure(bench)
        if a is None or b is None or a[0] != b[0]:
            continue
        changes.append(Change(key, a[0], a[1], b[1], a[2]))
    gone = [k for k in old_rows if k not in new_rows]
    added = [k for k in new_rows if k not in old_rows]
    return changes, gone, added


def parse_percent(text: str) -> float:
    """`10%` or `10` -> 0.10. Raises ValueError with a message fit for one line."""
    raw = text.strip()
    number = raw[:-1] if raw.endswith("%") else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a percentage (e.g. 10%)") from None
    if not 0 <= value < 100:
        raise ValueError(f"{text!r}: give a percentage from 0% to 99%")
    return value / 100
