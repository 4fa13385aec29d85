"""The benchmark dashboard end to end: `bpfvm bench dashboard` builds the page from two results files, headless
Chromium opens it from disk (no server, no network) and the DOM after its scripts ran must hold the SVG bars with
the figures, laid out with a size, the history of both runs and the machines and versions they came from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ROWS = {  # (engine, mode) -> (M calls/s, ratio to baseline) of the later run
    ("interp", "none"): (1.234, 1.0), ("interp", "plain"): (0.2345, 0.19), ("interp", "pruned"): (0.3456, 0.28),
    ("jit", "none"): (45.67, 1.0), ("jit", "plain"): (78.91, 1.73), ("jit", "pruned"): (116.9, 2.56),
    ("kernel", "jit"): (333.3, None), ("c", "O2"): (1414.0, None),
}


def _doc(when: str, node: str, scale: float) -> dict[str, Any]:
    """A results document as `bpfvm bench --json` writes it, with known figures."""
    benchmarks = []
    for (engine, mode), (mcalls, ratio) in ROWS.items():
        info: dict[str, Any] = {"workload": "slice", "engine": engine, "mode": mode, "object": "dynptr_slice.o",
                                "program": "dynptr_slice", "packet_bytes": 1000, "repeat": 64, "rounds": 3,
                                "mcalls_per_s": mcalls * scale, "ns_per_call": 1e3 / (mcalls * scale),
                                "retval": 0}
        if ratio is not None:
            info["ratio_to_baseline"] = ratio
        if engine == "kernel":
            info["jit_baseline_over_kernel"] = 45.67 / 333.3
        if engine == "c":
            info["by_hand_over_jit_pruned"] = 1414.0 / 116.9
        name = f"test_dynptr_slice[slice-{engine}-{mode}]"
        benchmarks.append({"group": "slice", "name": name, "fullname": f"bench/test_dynptr_slice.py::{name}",
                           "params": {}, "param": "", "extra_info": info, "options": {},
                           "stats": {"median": 0.05, "mean": 0.05, "rounds": 3}})
    return {"machine_info": {"node": node, "system": "Linux", "release": "6.1.0", "machine": "x86_64",
                             "python_implementation": "CPython", "python_version": "3.11.7",
                             "cpu": {"brand_raw": "Test CPU", "count": 2},
                             "versions": {"bpfvm": "0.1.0", "llvmlite": "0.44.0", "cc": "gcc 12.2.0"}},
            "commit_info": {"id": "0123456789abcdef", "dirty": False, "branch": "main"},
            "benchmarks": benchmarks, "datetime": when, "version": "5.2.3"}


def _browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return name
    pytest.skip("Chromium is not installed (scripts/test.sh installs the Debian package chromium as root)")


def _render(page: Path, tmp_path: Path) -> tuple[str, Path]:
    """The DOM after the page's scripts ran, and a screenshot, from headless Chromium."""
    shot = tmp_path / "shot.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", f"--screenshot={shot}",
           "--dump-dom", page.as_uri()]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("Chromium did not finish rendering within 120 s")
    except OSError as exc:
        pytest.skip(f"Chromium cannot run here: {exc}")
    if done.returncode != 0 or "<html" not in done.stdout:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        pytest.skip(f"Chromium cannot run here (exit {done.returncode}): {lines[-1] if lines else 'no output'}")
    return done.stdout, shot


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dashboard")
    (tmp / "old.json").write_text(json.dumps(_doc("2024-11-07T17:50:00+00:00", "old-box", 0.5)))
    (tmp / "new.json").write_text(json.dumps(_doc("2024-11-14T10:00:00+00:00", "new-box", 1.0)))
    done = subprocess.run([sys.executable, "-m", "bpfvm", "bench", "dashboard", str(tmp / "new.json"),
                           str(tmp / "old.json"), "--html", str(tmp / "dash.html")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return tmp / "dash.html"


def test_page_needs_nothing_from_the_network(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<svg" in text and "<script>" in text


def test_chromium_renders_bars_figures_history_and_versions(page: Path, tmp_path: Path) -> None:
    dom, shot = _render(page, tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000
    # the inline script ran after layout and found every bar drawn with a size
    expected = len(ROWS) + sum(1 for _, ratio in ROWS.values() if ratio is not None)
    assert re.search(rf'data-rendered-bars="{expected}"', dom), "bars missing or not laid out"
    assert re.search(rf'data-expected-bars="{expected}"', dom)
    throughput = dom[dom.index('class="chart throughput"'):]
    throughput = throughput[:throughput.index("</svg>")]
    for (engine, mode), (mcalls, _) in ROWS.items():
        bar = re.search(rf'<g class="bar" data-engine="{engine}" data-mode="{mode}" data-value="([^"]+)">(.*?)</g>',
                        throughput, re.S)
        assert bar is not None, (engine, mode)
        assert abs(float(bar.group(1)) - mcalls) < 1e-3 * mcalls
        assert re.search(r'<rect [^>]*width="(\d+\.\d)"', bar.group(2))
        figure = f"{mcalls:.0f}" if mcalls >= 100 else f"{mcalls:.1f}" if mcalls >= 10 else (
            f"{mcalls:.2f}" if mcalls >= 1 else f"{mcalls:.3f}")
        assert f'class="bar-value"' in bar.group(2) and f">{figure} M/s</text>" in bar.group(2)
    speedup = dom[dom.index('class="chart speedup"'):]
    assert 'data-engine="jit" data-mode="pruned" data-value="2.56"' in speedup[:speedup.index("</svg>")]
    # the targets, the history of both runs (one point per row and run) and where each run came from
    assert "x2.56 met" in dom and "missed" in dom
    history = dom[dom.index('class="chart history"'):]
    assert history[:history.index("</svg>")].count('class="point"') == 2 * len(ROWS)
    for text in ("old-box", "new-box", "Test CPU", "llvmlite: 0.44.0", "cc: gcc 12.2.0", "0123456789ab"):
        assert text in dom, text
