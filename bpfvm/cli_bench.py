"""Subcommands of the benchmark harness: bench (and its dashboard and compare).

    bpfvm bench [--engines interp,jit] [--modes none,plain,pruned] [--workloads slice,sum,...] [--kernel/--no-kernel]
                [--json FILE] [--html FILE] [--compare OLD.json [--fail-on-regression 10%]] [--rounds N]
    bpfvm bench dashboard RUN.json... --html out.html
    bpfvm bench compare OLD.json NEW.json [--fail-on-regression 10%]

The workloads, the measuring, the JSON layout and the dashboard live in bench/ (workloads.py, results.py,
dashboard.py), shared with `pytest bench/`; bench/ is not an installed package, so they are loaded by path from
the source checkout this module belongs to.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from .cli import main
from .errors import BpfvmError

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
DEFAULT_THRESHOLD = "10%"


def _bench_module(name: str) -> ModuleType:
    """bench/<name>.py, loaded once under a private name."""
    modname = f"_bpfvm_bench_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        raise BpfvmError(f"{path} is missing: bpfvm bench runs from a source checkout with its bench/ directory")
    spec = importlib.util.spec_from_file_location(modname, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


def _read_results(path: Path) -> dict[str, Any]:
    results = _bench_module("results")
    try:
        return results.read(path)
    except results.ResultsError as exc:
        raise BpfvmError(str(exc)) from None


def _write_text(path: Path, text: str, what: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise BpfvmError(f"cannot write {what} {path}: {exc.strerror}") from None


def _percent(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return _bench_module("results").parse_percent(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _choices(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list of names, each one of `allowed` ("all" for every one)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == ["all"]:
        return allowed
    if not items:
        raise click.BadParameter(f"give at least one of {', '.join(allowed)}", param_hint=f"--{what}")
    for item in items:
        if item not in allowed:
            raise click.BadParameter(f"unknown {what[:-1]} {item!r} (choose from {', '.join(allowed)})",
                                     param_hint=f"--{what}")
    return tuple(dict.fromkeys(items))


class _OneLine:
    """Usage errors (bad flags, bad values, unknown subcommands) as one line on stderr, exit status 2."""

    def _usage_error(self, exc: click.UsageError) -> None:
        click.echo(f"bpfvm: error: {exc.format_message()} (see bpfvm bench --help)", err=True)
        sys.exit(2)

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[misc]
        except click.UsageError as exc:
            self._usage_error(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.UsageError as exc:
            self._usage_error(exc)
            raise


class _BenchGroup(_OneLine, click.Group):
    pass


class _BenchCommand(_OneLine, click.Command):
    pass


@main.group("bench", cls=_BenchGroup, invoke_without_command=True)
@click.option("--engines", default="interp,jit", show_default=True, help="Engines, comma-separated.")
@click.option("--modes", default="none,plain,pruned", show_default=True, help="Inline modes, comma-separated.")
@click.option("--workloads", default="all", show_default=True,
              help="Workloads, comma-separated: slice, sum, sum_nonlinear, xdp_slice, xdp_sum (or all).")
@click.option("--kernel/--no-kernel", default=None,
              help="Add the kernel's row (BPF_PROG_TEST_RUN). Default: when the kernel can run programs here.")
@click.option("--by-hand/--no-by-hand", default=True, show_default=True,
              help="Add the row of the C loop written by hand (compiled with the machine's cc -O2).")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1, 1000), help="Rounds per row.")
@click.option("--round-time", default=0.05, show_default=True, type=click.FloatRange(0.0001, 60),
              metavar="SECONDS", help="About how long one round of a row lasts.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results as pytest-benchmark JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the dashboard of this run (with --compare: of both runs).")
@click.option("--compare", "compare_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An earlier results file to compare with; rows slower past --threshold are flagged.")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, metavar="PCT",
              help="Flag rows whose M calls/s fell by more than PCT.")
@click.option("--fail-on-regression", "fail_pct", metavar="PCT",
              help="With --compare: exit 1 when a row's M calls/s fell by more than PCT (e.g. 10%).")
@click.pass_context
def bench(ctx: click.Context, engines: str, modes: str, workloads: str, kernel: bool | None, by_hand: bool,
          rounds: int, round_time: float, json_path: Path | None, html_path: Path | None,
          compare_path: Path | None, threshold: str, fail_pct: str | None) -> None:
    """Benchmark kfunc calls, inlined calls and pruned inlined calls (the RFC's dynptr_slice benchmark).

    Every workload runs on every engine in every inline mode, next to the kernel (when it can run programs
    here) and a C loop written by hand; prints M slice calls/s, ns per call and the ratio to the baseline (mode
    none) per engine, all from one run.

    \b
    Examples:
      bpfvm bench --engines jit --json run.json --html run.html
      bpfvm bench --compare old.json --fail-on-regression 10%
      bpfvm bench dashboard old.json new.json --html history.html
    """
    if ctx.invoked_subcommand is not None:
        given = [p.name for p in ctx.command.params
                 if ctx.get_parameter_source(p.name) not in (click.core.ParameterSource.DEFAULT, None)]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} belongs to bpfvm bench itself, "
                                   f"not to bpfvm bench {ctx.invoked_subcommand}")
        return
    wl = _bench_module("workloads")
    plan_engines = _choices(engines, wl.ENGINES, "engines")
    plan_modes = _choices(modes, wl.MODES, "modes")
    plan_workloads = _choices(workloads, tuple(wl.WORKLOADS), "workloads")
    flag_at = _percent(threshold, "--threshold")
    fail_at = _percent(fail_pct, "--fail-on-regression")
    if fail_at is not None and compare_path is None:
        raise click.UsageError("--fail-on-regression needs --compare OLD.json")
    old = _read_results(compare_path) if compare_path is not None else None  # a bad file fails before the run
    for path in (json_path, html_path):
        if path is not None and not path.parent.is_dir():
            raise BpfvmError(f"cannot write {path}: no directory {path.parent}")
    with_kernel = _kernel_wanted(kernel)
    from .engines import get_engine

    for engine in plan_engines:
        get_engine(engine)

    doc, table = _run(wl, plan_workloads, plan_engines, plan_modes, with_kernel, by_hand, rounds, round_time)
    _print_summary(table)
    if json_path is not None:
        _write_text(json_path, _json_text(doc), "JSON results")
        click.echo(f"wrote {json_path}")
    if html_path is not None:
        dash = _bench_module("dashboard")
        runs = ([dash.Run(str(compare_path), old)] if old is not None else []) + [dash.Run("this run", doc)]
        _write_text(html_path, dash.render(runs), "dashboard")
        click.echo(f"wrote {html_path}")
    if old is not None:
        failed = _print_comparison(old, doc, flag_at or 0.0, fail_at)
        if failed:
            sys.exit(1)


def _kernel_wanted(flag: bool | None) -> bool:
    """--kernel insists (and fails when the kernel cannot run programs), --no-kernel skips, the default asks."""
    if flag is False:
        return False
    from .kernel import kernel_unavailable_reason

    reason = kernel_unavailable_reason()
    if reason is None:
        return True
    if flag:
        raise BpfvmError(f"--kernel: the kernel cannot run programs here: {reason}")
    click.echo(f"note: no kernel row: {reason}", err=True)
    return False


def _run(wl: ModuleType, workloads: tuple[str, ...], engines: tuple[str, ...], modes: tuple[str, ...],
         with_kernel: bool, by_hand: bool, rounds: int, round_time: float) -> tuple[dict[str, Any], list[dict]]:
    """Measure every workload (its rows round-robin), with a progress bar; the results document and the rows."""
    from .progress import progress_iter

    results = _bench_module("results")
    groups = []
    try:
        for name in workloads:
            workload = wl.WORKLOADS[name]
            runners: list[Any] = wl.vm_runners(workload, engines, modes)
            if with_kernel:
                runners.append(wl.KernelRunner(workload))
            if by_hand:
                runners.append(wl.ByHandRunner(workload))
            groups.append(wl.Group(workload, runners, rounds, round_time))
        steps = [step for group in groups for _, step in group.steps()]
        for step in progress_iter(steps, "bench"):
            step()
    finally:
        for group in groups:
            group.close()
    versions = wl.versions()
    benchmarks, table = [], []
    for group in groups:
        ratios = wl.ratios(group.series)
        for key, series in group.series.items():
            info = wl.extra_info(group.workload, series, ratios[key])
            name, fullname, params = wl.benchmark_id(group.workload.name, *key)
            benchmarks.append(results.benchmark(group=group.workload.name, name=name, fullname=fullname,
                                                params=params, extra_info=info,
                                                wall_s=[r.wall_s for r in series.rounds]))
            table.append(info)
    return results.document(benchmarks, root=wl.ROOT, versions=versions), table


def _json_text(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2) + "\n"


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 132, highlight=False)


def _label(engine: str, mode: str) -> tuple[str, str]:
    if engine == "kernel":
        return "kernel", "(its JIT)"
    if engine == "c":
        return "C by hand", f"-{mode}"
    return engine, mode


def _print_summary(rows: list[dict[str, Any]]) -> None:
    """The figures per workload, engine and mode, then the project's targets per workload."""
    from rich.table import Table

    table = Table(title="dynptr_slice: million bpf_dynptr_slice calls per second (median round)")
    for column, justify in (("workload", "left"), ("engine", "left"), ("mode", "left"), ("M calls/s", "right"),
                            ("ns/call", "right"), ("ratio to baseline", "right"), ("note", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    previous = None
    for info in rows:
        engine, mode = _label(info["engine"], info["mode"])
        notes = []
        if "jit_baseline_over_kernel" in info:
            notes.append(f"JIT none / kernel x{info['jit_baseline_over_kernel']:.3f}")
        if "by_hand_over_jit_pruned" in info:
            notes.append(f"C / JIT pruned x{info['by_hand_over_jit_pruned']:.2f}")
        if info.get("note"):
            notes.append(info["note"])
        ratio = info.get("ratio_to_baseline")
        table.add_row(info["workload"] if info["workload"] != previous else "", engine, mode,
                      f"{info['mcalls_per_s']:.2f}", f"{info['ns_per_call']:.2f}",
                      f"x{ratio:.2f}" if ratio is not None else "", "; ".join(notes),
                      end_section=False)
        previous = info["workload"]
    console = _console()
    console.print(table)
    targets = _targets(rows)
    if targets:
        t = Table(title="targets (ratios within this run)")
        for column in ("workload", "JIT none / kernel >= 3", "pruned / JIT none >= 1.5", "C / JIT pruned <= 1.3"):
            t.add_column(column)
        for name, cells in targets.items():
            t.add_row(name, *cells)
        console.print(t)


def _targets(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    by_workload: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for info in rows:
        by_workload.setdefault(info["workload"], {})[(info["engine"], info["mode"])] = info
    checks = ((("kernel", "jit"), "jit_baseline_over_kernel", 3.0, True),
              (("jit", "pruned"), "ratio_to_baseline", 1.5, True),
              (("c", "O2"), "by_hand_over_jit_pruned", 1.3, False))
    out = {}
    for name, found in by_workload.items():
        cells = []
        for row, key, bound, at_least in checks:
            value = (found.get(row) or {}).get(key)
            if value is None:
                cells.append("not measured")
            else:
                met = value >= bound if at_least else value <= bound
                cells.append(f"x{value:.2f} {'met' if met else 'MISSED'}")
        if any(c != "not measured" for c in cells):
            out[name] = cells
    return out


def _print_comparison(old: dict[str, Any], new: dict[str, Any], flag_at: float, fail_at: float | None) -> bool:
    """A table of rows in both runs; True when a row fell past `fail_at`."""
    from rich.table import Table

    results = _bench_module("results")
    changes, gone, added = results.compare(old, new)
    table = Table(title=f"comparison with the earlier run (flagged: slower by more than {flag_at:.0%})")
    for column in ("row", "figure", "old", "new", "change", ""):
        table.add_column(column, justify="left" if column in ("row", "figure", "") else "right")
    flagged = failed = 0
    for c in changes:
        flag = c.regressed(flag_at)
        fail = fail_at is not None and c.regressed(fail_at)
        flagged += flag
        failed += fail
        table.add_row(c.key, c.figure, f"{c.old:.4g}", f"{c.new:.4g}", f"{c.change:+.1%}",
                      "REGRESSION" if flag else "")
    console = _console()
    console.print(table)
    for keys, where in ((gone, "only in the earlier run"), (added, "only in the later run")):
        if keys:
            shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
            console.print(f"{len(keys)} rows {where}: {shown}")
    summary = f"{len(changes)} rows compared, {flagged} slower by more than {flag_at:.0%}"
    if fail_at is not None:
        summary += f"; {failed} past the failure threshold {fail_at:.0%}"
    console.print(summary)
    if not changes:
        console.print("note: no row of the earlier run matches this one")
    return failed > 0


@bench.command("dashboard", cls=_BenchCommand)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN.json...")
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the page.")
@click.option("--title", default="bpfvm dynptr_slice benchmarks", show_default=True, help="Page title.")
def dashboard_command(runs: tuple[Path, ...], html_path: Path, title: str) -> None:
    """Build the static HTML dashboard from one or more results files (history: oldest to newest)."""
    dash = _bench_module("dashboard")
    if not html_path.parent.is_dir():
        raise BpfvmError(f"cannot write {html_path}: no directory {html_path.parent}")
    docs = [dash.Run(str(path), _read_results(path)) for path in runs]
    _write_text(html_path, dash.render(docs, title=title), "dashboard")
    click.echo(f"wrote {html_path} from {len(docs)} run{'s' if len(docs) != 1 else ''}")


@bench.command("compare", cls=_BenchCommand)
@click.argument("old_path", type=click.Path(path_type=Path), metavar="OLD.json")
@click.argument("new_path", type=click.Path(path_type=Path), metavar="NEW.json")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, metavar="PCT",
              help="Flag rows whose M calls/s fell by more than PCT.")
@click.option("--fail-on-regression", "fail_pct", metavar="PCT",
              help="Exit 1 when a row's M calls/s fell by more than PCT (e.g. 10%).")
def compare_command(old_path: Path, new_path: Path, threshold: str, fail_pct: str | None) -> None:
    """Compare two results files without running anything."""
    flag_at = _percent(threshold, "--threshold")
    fail_at = _percent(fail_pct, "--fail-on-regression")
    old, new = _read_results(old_path), _read_results(new_path)
    if _print_comparison(old, new, flag_at or 0.0, fail_at):
        sys.exit(1)
