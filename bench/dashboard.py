"""A static HTML dashboard from benchmark results (`bpfvm bench --json` or `pytest bench/ --benchmark-json`).

One self-contained file: inline SVG charts drawn here (no network, no CDN, no server), so it opens from disk in
any browser. It shows the latest run's M calls/s per workload, engine and inline mode (bars, log scale, the
kernel and the C loop by hand as reference rows), the speedup over the baseline (mode none) measured in that
run, the project's targets, the history of every run given, and the machine and versions each run came from.
A few lines of inline script only check, once the page is laid out, that every bar has a size, and record the
count on <body data-rendered-bars> (the end-to-end test reads it).

Loaded by path from the CLI (bench/ is not a package): stdlib only, no imports from bench/.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# (engine, mode) -> colour; engine rows first in this order, then the references
COLOURS = {
    ("interp", "none"): "#9aa5b1", ("interp", "plain"): "#627d98", ("interp", "pruned"): "#334e68",
    ("jit", "none"): "#f7c28a", ("jit", "plain"): "#f0923c", ("jit", "pruned"): "#c65d00",
    ("kernel", "jit"): "#2f9e44", ("c", "O2"): "#7048e8",
}
ROW_ORDER = list(COLOURS)
TARGETS = (  # (extra_info key, on row, label, comparison, bound)
    ("jit_baseline_over_kernel", ("kernel", "jit"), "JIT baseline / kernel", ">=", 3.0),
    ("ratio_to_baseline", ("jit", "pruned"), "JIT pruned / JIT baseline", ">=", 1.5),
    ("by_hand_over_jit_pruned", ("c", "O2"), "C by hand / JIT pruned", "<=", 1.3),
)
E = html.escape


@dataclass
class Run:
    """One results file."""

    label: str
    doc: dict[str, Any]

    @property
    def when(self) -> str:
        return str(self.doc.get("datetime") or "")

    def rows(self) -> list[dict[str, Any]]:
        """Benchmarks with a M calls/s figure (this harness's rows)."""
        return [b for b in self.doc["benchmarks"] if isinstance((b.get("extra_info") or {}).get("mcalls_per_s"),
                                                                (int, float))]

    def others(self) -> list[dict[str, Any]]:
        return [b for b in self.doc["benchmarks"] if b not in self.rows()]

    def by_workload(self) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
        out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        for bench in self.rows():
            info = bench["extra_info"]
            out.setdefault(str(info.get("workload")), {})[(str(info.get("engine")), str(info.get("mode")))] = info
        return out


def _row_label(key: tuple[str, str]) -> str:
    engine, mode = key
    if engine == "kernel":
        return "kernel (its JIT)"
    if engine == "c":
        return f"C by hand (-{mode})"
    return f"{engine} / {mode}"


def _ordered(keys: Any) -> list[tuple[str, str]]:
    return sorted(keys, key=lambda k: (ROW_ORDER.index(k) if k in ROW_ORDER else len(ROW_ORDER), k))


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# -- charts -----------------------------------------------------------------------------------------------------------
def _log_domain(values: list[float]) -> tuple[float, float]:
    positive = [v for v in values if v > 0] or [1.0]
    lo = 10 ** math.floor(math.log10(min(positive)))
    hi = 10 ** math.ceil(math.log10(max(positive)))
    return lo, hi if hi > lo else lo * 10


def bar_chart(workload: str, rows: list[tuple[tuple[str, str], float, str]], *, unit: str, log: bool,
              css_class: str, reference: float | None = None) -> str:
    """Horizontal bars, one per row (key, value, tooltip), the value printed at the end of each bar."""
    label_w, plot_w, value_w, bar_h, gap, top = 150, 460, 110, 18, 6, 8
    height = top + len(rows) * (bar_h + gap) + 26
    width = label_w + plot_w + value_w
    values = [v for _, v, _ in rows] + ([reference] if reference else [])
    if log:
        lo, hi = _log_domain(values)
        scale = lambda v: plot_w * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = [lo * 10 ** i for i in range(round(math.log10(hi / lo)) + 1)]
    else:
        hi = max(values + [1e-9]) * 1.1
        scale = lambda v: plot_w * max(v, 0) / hi
        step = 10 ** math.floor(math.log10(hi)) if hi > 0 else 1
        step = step / 2 if hi / step < 4 else step
        ticks = [i * step for i in range(int(hi / step) + 1)]
    out = [f'<svg class="chart {css_class}" data-workload="{E(workload)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    axis_y = top + len(rows) * (bar_h + gap)
    for t in ticks:
        x = label_w + scale(t)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" />')
        out.append(f'<text class="tick" x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{_fmt(t)}</text>')
    if reference is not None:
        x = label_w + scale(reference)
        out.append(f'<line class="reference" x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" />')
    out.append(f'<text class="unit" x="{label_w + plot_w}" y="{height - 1}" text-anchor="end">'
               f'{E(unit)}{" (log scale)" if log else ""}</text>')
    for i, (key, value, tip) in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = max(scale(value), 2.0)
        colour = COLOURS.get(key, "#888")
        out.append(
            f'<g class="bar" data-engine="{E(key[0])}" data-mode="{E(key[1])}" data-value="{value:.6g}">'
            f'<title>{E(tip)}</title>'
            f'<text class="bar-label" x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{E(_row_label(key))}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}" />'
            f'<text class="bar-value" x="{label_w + w + 5:.1f}" y="{y + bar_h - 5}">{_fmt(value)} {E(unit)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def history_chart(workload: str, runs: list[Run]) -> str:
    """M calls/s of every row over the runs (oldest left), log scale, one line per engine and mode."""
    left, plot_w, plot_h, top, legend_w = 60, 520, 220, 12, 190
    width, height = left + plot_w + legend_w, top + plot_h + 40
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for i, run in enumerate(runs):
        for key, info in run.by_workload().get(workload, {}).items():
            series.setdefault(key, []).append((i, float(info["mcalls_per_s"])))
    values = [v for points in series.values() for _, v in points]
    lo, hi = _log_domain(values)
    n = max(len(runs) - 1, 1)
    xof = lambda i: left + (plot_w * i / n if len(runs) > 1 else plot_w / 2)
    yof = lambda v: top + plot_h - plot_h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = [f'<svg class="chart history" data-workload="{E(workload)}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg">']
    t = lo
    while t <= hi * 1.0001:
        out.append(f'<line class="grid" x1="{left}" y1="{yof(t):.1f}" x2="{left + plot_w}" y2="{yof(t):.1f}" />'
                   f'<text class="tick" x="{left - 6}" y="{yof(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        t *= 10
    for i, run in enumerate(runs):
        out.append(f'<text class="tick" x="{xof(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f'{E(_short_date(run.when) or str(i + 1))}</text>')
    out.append(f'<text class="unit" x="{left}" y="{height - 4}">M calls/s (log scale) per run, oldest first</text>')
    for j, key in enumerate(_ordered(series)):
        colour = COLOURS.get(key, "#888")
        points = series[key]
        path = " ".join(f"{xof(i):.1f},{yof(v):.1f}" for i, v in points)
        out.append(f'<g class="series" data-engine="{E(key[0])}" data-mode="{E(key[1])}">'
                   f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" />')
        for i, v in points:
            out.append(f'<circle class="point" cx="{xof(i):.1f}" cy="{yof(v):.1f}" r="3.5" fill="{colour}" '
                       f'data-value="{v:.6g}"><title>{E(_row_label(key))}, {E(runs[i].label)}: '
                       f'{_fmt(v)} M calls/s</title></circle>')
        ly = top + 6 + j * 18
        out.append(f'<rect x="{left + plot_w + 16}" y="{ly}" width="12" height="12" fill="{colour}" />'
                   f'<text class="legend" x="{left + plot_w + 34}" y="{ly + 10}">{E(_row_label(key))}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _short_date(when: str) -> str:
    try:
        return datetime.fromisoformat(when).strftime("%m-%d %H:%M")
    except ValueError:
        return when[:16]


# -- sections ---------------------------------------------------------------------------------------------------------
def _workload_section(name: str, rows: dict[tuple[str, str], dict[str, Any]]) -> str:
    keys = _ordered(rows)
    bars = [(k, float(rows[k]["mcalls_per_s"]),
             f"{_row_label(k)}: {_fmt(float(rows[k]['mcalls_per_s']))} M calls/s, "
             f"{float(rows[k].get('ns_per_call', 0)):.2f} ns per call") for k in keys]
    speedups = [(k, float(rows[k]["ratio_to_baseline"]), f"{_row_label(k)}: x{rows[k]['ratio_to_baseline']:.2f} "
                 f"over {k[0]} / none") for k in keys if "ratio_to_baseline" in rows[k]]
    first = rows[keys[0]]
    parts = [f'<section class="workload" id="w-{E(name)}"><h3>{E(name)}</h3>',
             f'<p class="what">{E(str(first.get("object", "")))}: {E(str(first.get("program", "")))}, '
             f'{E(str(first.get("packet_bytes", "")))}-byte packet'
             + (f', {E(str(first["skb_linear"]))} linear bytes' if first.get("skb_linear") else "")
             + f', repeat {E(str(first.get("repeat", "")))}</p>',
             '<div class="charts"><figure><figcaption>Million bpf_dynptr_slice calls per second</figcaption>',
             bar_chart(name, bars, unit="M/s", log=True, css_class="throughput"), "</figure>"]
    if speedups:
        parts += ['<figure><figcaption>Speedup over the baseline (mode none, same engine, same run)</figcaption>',
                  bar_chart(name, speedups, unit="x", log=False, css_class="speedup", reference=1.0), "</figure>"]
    parts.append("</div>")
    parts.append(_figures_table(rows, keys))
    parts.append("</section>")
    return "".join(parts)


def _figures_table(rows: dict[tuple[str, str], dict[str, Any]], keys: list[tuple[str, str]]) -> str:
    out = ['<table class="figures"><thead><tr><th>row</th><th>M calls/s</th><th>best</th><th>ns/call</th>'
           '<th>ratio to baseline</th><th>other ratios</th><th>rounds</th><th>retval</th></tr></thead><tbody>']
    for k in keys:
        info = rows[k]
        others = []
        if "jit_baseline_over_kernel" in info:
            others.append(f"JIT none / kernel x{info['jit_baseline_over_kernel']:.3f}")
        if "by_hand_over_jit_pruned" in info:
            others.append(f"C / JIT pruned x{info['by_hand_over_jit_pruned']:.2f}")
        if info.get("note"):
            others.append(str(info["note"]))
        ratio = f"x{info['ratio_to_baseline']:.2f}" if "ratio_to_baseline" in info else ""
        out.append(f'<tr data-engine="{E(k[0])}" data-mode="{E(k[1])}"><td>{E(_row_label(k))}</td>'
                   f'<td class="num">{_fmt(float(info["mcalls_per_s"]))}</td>'
                   f'<td class="num">{_fmt(float(info.get("mcalls_per_s_best", info["mcalls_per_s"])))}</td>'
                   f'<td class="num">{float(info.get("ns_per_call", 0)):.2f}</td><td class="num">{ratio}</td>'
                   f'<td>{E("; ".join(others))}</td><td class="num">{E(str(info.get("rounds", "")))}</td>'
                   f'<td class="num">{E(str(info.get("retval", "")))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _targets_section(run: Run) -> str:
    out = ['<table class="targets"><thead><tr><th>workload</th>'
           + "".join(f"<th>{E(label)} (target {op} {bound:g})</th>" for _, _, label, op, bound in TARGETS)
           + "</tr></thead><tbody>"]
    for name, rows in run.by_workload().items():
        cells = []
        for key, row, _, op, bound in TARGETS:
            value = (rows.get(row) or {}).get(key)
            if not isinstance(value, (int, float)):
                cells.append('<td class="na">not measured</td>')
                continue
            met = value >= bound if op == ">=" else value <= bound
            cells.append(f'<td class="{"met" if met else "missed"}">x{value:.2f} {"met" if met else "missed"}</td>')
        out.append(f"<tr><td>{E(name)}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _runs_table(runs: list[Run]) -> str:
    out = ['<table class="runs"><thead><tr><th>#</th><th>date (UTC)</th><th>file</th><th>commit</th><th>machine</th>'
           '<th>CPU</th><th>Python</th><th>versions</th></tr></thead><tbody>']
    for i, run in enumerate(runs, 1):
        machine = run.doc.get("machine_info") or {}
        commit = run.doc.get("commit_info") or {}
        versions = machine.get("versions") or {}
        if not versions:
            for bench in run.rows():
                versions = bench["extra_info"].get("versions") or {}
                if versions:
                    break
        cid = str(commit.get("id") or "unversioned")
        commit_text = f"{cid[:12]}{' (dirty)' if commit.get('dirty') else ''} on {commit.get('branch', '?')}"
        cpu = machine.get("cpu") or {}
        out.append(
            f"<tr><td>{i}</td><td>{E(run.when[:19].replace('T', ' '))}</td><td>{E(run.label)}</td>"
            f"<td>{E(commit_text)}</td><td>{E(str(machine.get('node', '')))} ({E(str(machine.get('system', '')))} "
            f"{E(str(machine.get('release', '')))}, {E(str(machine.get('machine', '')))})</td>"
            f"<td>{E(str(cpu.get('brand_raw', '')))} x{E(str(cpu.get('count', '?')))}</td>"
            f"<td>{E(str(machine.get('python_implementation', '')))} {E(str(machine.get('python_version', '')))}</td>"
            f"<td>{E(', '.join(f'{k}: {v}' for k, v in versions.items()))}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _others_table(run: Run) -> str:
    others = run.others()
    if not others:
        return ""
    out = ['<h2>Other benchmarks of the latest run</h2><table class="others"><thead><tr><th>name</th>'
           '<th>median (s)</th><th>rounds</th></tr></thead><tbody>']
    for bench in others:
        st = bench.get("stats") or {}
        out.append(f"<tr><td>{E(str(bench.get('fullname') or bench.get('name')))}</td>"
                   f"<td class=\"num\">{float(st.get('median', 0)):.6g}</td><td class=\"num\">{st.get('rounds', '')}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2933;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d9e2ec}h3{font-size:16px;margin:18px 0 4px}
.what{color:#52606d;margin:0 0 8px}.charts{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}
figcaption{font-weight:600;margin-bottom:4px}
svg text{font:11px system-ui,sans-serif;fill:#1f2933}svg .grid{stroke:#e4e7eb}svg .reference{stroke:#d64545;stroke-dasharray:4 3}
svg .unit{fill:#7b8794}table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d9e2ec;padding:3px 8px;text-align:left}
th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}td.met{background:#e3f9e5}
td.missed{background:#ffe3e3}td.na{color:#9aa5b1}
"""

SCRIPT = """
(function () {
  var bars = document.querySelectorAll('svg.chart g.bar rect');
  var drawn = 0;
  bars.forEach(function (r) { var b = r.getBBox(); if (b.width > 0 && b.height > 0) drawn++; });
  document.body.setAttribute('data-rendered-bars', String(drawn));
  document.body.setAttribute('data-expected-bars', String(bars.length));
})();
"""


def render(runs: list[Run], *, title: str = "bpfvm dynptr_slice benchmarks") -> str:
    """The whole page from runs in any order (they are sorted by date)."""
    if not runs:
        raise ValueError("no results to show")
    runs = sorted(runs, key=lambda r: r.when)
    latest = runs[-1]
    workloads = latest.by_workload()
    history_names = list(dict.fromkeys(name for run in runs for name in run.by_workload()))
    body = [f"<h1>{E(title)}</h1>",
            f'<p>{len(runs)} run{"s" if len(runs) != 1 else ""}; latest {E(latest.when[:19].replace("T", " "))} UTC '
            f"({E(latest.label)}). Figures are million slice calls per second from the programs' hits counters "
            "and the time measured around the repeat loops; ratios compare rounds of the same run.</p>",
            "<h2>Latest run</h2>"]
    if workloads:
        body += [_workload_section(name, rows) for name, rows in workloads.items()]
        body += ["<h2>Targets (latest run)</h2>", _targets_section(latest)]
    else:
        body.append("<p>The latest run has no dynptr_slice rows.</p>")
    if history_names:
        body.append("<h2>History</h2>")
        for name in history_names:
            body += [f'<section class="history" id="h-{E(name)}"><h3>{E(name)}</h3>', history_chart(name, runs),
                     "</section>"]
    body += ["<h2>Runs: machines and versions</h2>", _runs_table(runs), _others_table(latest)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{E(title)}</title><style>{STYLE}</style></head><body>"
            + "".join(body) + f"<script>{SCRIPT}</script></body></html>\n")
