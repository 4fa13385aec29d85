"""Subcommands of differential testing and fuzzing: diff, fuzz."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli import main
from .errors import BpfvmError


@main.command()
@click.argument("path", metavar="PROG.o", type=click.Path(path_type=Path))
@click.option("--prog", "prog_name", metavar="NAME", help="Program to compare (default: the first).")
@click.option("--type", "prog_type", metavar="TYPE", help="Program type for sections bpfvm cannot infer.")
@click.option("--a", "spec_a", default="interp,raw", show_default=True, metavar="SPEC",
              help="First target: ENGINE[,MODE] (engine interp or jit; mode none, plain, pruned, or raw for the "
                   "unverified, unrewritten program on the interpreter) or kernel.")
@click.option("--b", "spec_b", default="jit,pruned", show_default=True, metavar="SPEC", help="Second target.")
@click.option("--inputs", "count", default=100, show_default=True, type=click.IntRange(1, 10**6),
              help="Generated inputs to run.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the input generator.")
@click.option("--shrink-runs", default=400, show_default=True, type=click.IntRange(0),
              help="Budget of runs for minimising a mismatching input (0: report it as found).")
def diff(path: Path, prog_name: str | None, prog_type: str | None, spec_a: str, spec_b: str, count: int,
         seed: int, shrink_runs: int) -> None:
    """Run PROG.o on two targets with generated inputs and compare everything observable: return value,
    packet and context out, every map, helper output.

    Every input starts from a fresh object (new maps and helper state). On a mismatch, prints the smallest
    input found that still differs, both results side by side and both xlated listings, and exits 1.
    """
    from .difftest.compare import side_by_side
    from .difftest.observe import ObjectSource
    from .difftest.session import DiffSession
    from .difftest.spec import parse_spec

    a, b = parse_spec(spec_a), parse_spec(spec_b)
    if not path.exists():
        raise BpfvmError(f"{path}: no such file")
    if path.is_dir():
        raise BpfvmError(f"{path}: is a directory, not an object file")
    source = ObjectSource(path=str(path), prog_type=prog_type)
    objfile = source.parsed()
    if not objfile.programs:
        raise BpfvmError(f"{path}: the object holds no programs")
    name = prog_name or next(iter(objfile.programs))
    if name not in objfile.programs:
        raise BpfvmError(f"no program {name!r} in {path} (programs: {', '.join(objfile.programs)})")
    session = DiffSession(source, name, a, b)
    try:
        summary = session.run(count, seed, shrink=shrink_runs > 0, max_shrink_runs=max(shrink_runs, 1))
        verdicts = summary.verdicts
        if verdicts is not None and (verdicts.a or verdicts.b):
            if not verdicts.differ:
                raise BpfvmError(f"both targets refuse {name}: {verdicts.a}")
            click.echo(f"VERDICT MISMATCH for {name}:")
            click.echo(f"  {a}: {verdicts.a or 'accepts'}")
            click.echo(f"  {b}: {verdicts.b or 'accepts'}")
            sys.exit(1)
        m = summary.mismatch
        if m is None:
            seen = ", ".join(f"{v}x{n}" for v, n in summary.retvals.most_common(5))
            errors = ", ".join(f"{e}x{n}" for e, n in summary.errors.most_common())
            click.echo(f"{summary.inputs} inputs: {a} and {b} agree on {name} "
                       f"(return values {seen or 'none'}{'; errors ' + errors if errors else ''})")
            return
        fields = ", ".join(d.field for d in m.diffs)
        click.echo(f"MISMATCH on input {m.index} of {count} (seed {seed}): {a} and {b} differ in {fields}")
        shrunk = f" (after {m.shrink_runs} minimising runs)" if m.shrink_runs else ""
        click.echo(f"\nsmallest input found{shrunk}:")
        click.echo("  " + m.case.describe().replace("\n", "\n  "))
        click.echo("\nresults:")
        click.echo(side_by_side(m.a, m.b, str(a), str(b), kernel=session.kernel))
        listing_a, listing_b = session.listings()
        click.echo(f"\nxlated ({a}):")
        click.echo(listing_a, nl=False)
        click.echo(f"\nxlated ({b}):")
        click.echo(listing_b, nl=False)
        sys.exit(1)
    finally:
        session.close()


def _duration(text: str | None) -> float | None:
    """`90`, `90s`, `15m`, `2h` -> seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1:].lower() in units:
            return float(text[:-1]) * units[text[-1].lower()]
        return float(text)
    except ValueError:
        raise BpfvmError(f"--time {text!r}: give seconds, or a number with s, m or h") from None


def _seed_range(text: str | None, seed: int) -> tuple[int, int | None]:
    if text is None:
        return seed, None
    parts = text.split(":")
    try:
        start, end = int(parts[0]), (int(parts[1]) if len(parts) > 1 and parts[1] else None)
    except (ValueError, IndexError):
        raise BpfvmError(f"--seed-range {text!r}: give A:B (B exclusive, may be empty)") from None
    if len(parts) != 2 or (end is not None and end <= start) or start < 0:
        raise BpfvmError(f"--seed-range {text!r}: give A:B with 0 <= A < B")
    return start, end


@main.command()
@click.option("--time", "time_text", metavar="T", help="Stop after T (seconds, or 30m, 2h). Default: run the "
              "seed range, or 60s when there is no range.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 256), help="Worker processes.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="First seed.")
@click.option("--seed-range", metavar="A:B", help="Run seeds A..B-1 (split a campaign across machines).")
@click.option("--programs", "only_programs", is_flag=True, help="Only generated programs (differential checks).")
@click.option("--objects", "only_objects", is_flag=True,
              help="Only malformed inputs (objects, BTF, huge programs, assembler text, instruction bytes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("fuzz-failures"),
              show_default=True, help="Where failures are saved as reproducible cases.")
@click.option("--jit-every", default=50, show_default=True, type=click.IntRange(0),
              help="Compare the JIT too on every Nth program (0: never).")
@click.option("--status-every", default=60.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds between status lines when stderr is not a terminal.")
@click.option("--replay", "replay_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Replay one saved case directory instead of running a campaign.")
def fuzz(time_text: str | None, workers: int, seed: int, seed_range: str | None, only_programs: bool,
         only_objects: bool, out: Path, jit_every: int, status_every: float, replay_dir: Path | None) -> None:
    """A fuzzing campaign: generated programs compared across rewrites and engines (the unverified program
    on the interpreter is the reference), and malformed inputs that must end in one-line errors, in bounded
    time, without crashing the process. Every failure is saved under --out with its seed and bytes.
    Exits 1 if anything failed."""
    from .difftest import campaign as cp
    from .difftest.cases import load, replay

    if replay_dir is not None:
        ok, message = replay(load(replay_dir))
        click.echo(f"{replay_dir}: {'passes' if ok else 'FAILS'}: {message}")
        sys.exit(0 if ok else 1)
    start, end = _seed_range(seed_range, seed)
    seconds = _duration(time_text)
    if seconds is None and end is None:
        seconds = 60.0
    programs, objects = (only_programs or not only_objects), (only_objects or not only_programs)
    cfg = cp.CampaignConfig(start=start, end=end, seconds=seconds, workers=workers, programs=programs,
                            objects=objects, out=out, jit_every=jit_every)
    if sys.stderr.isatty():
        live, report = cp.live_reporter(cfg)
        with live:
            stats = cp.Campaign(cfg, report).run()
    else:
        stats = cp.Campaign(cfg, cp.text_reporter(cfg, status_every)).run()
    for line in cp.summary_lines(stats, cfg):
        click.echo(line)
    for reason, n in stats.rejections.most_common(5):
        click.echo(f"rejected {n}x: {reason}")
    for sig, n in stats.signatures.most_common():
        click.echo(f"failure {n}x: {sig}")
    if stats.saved:
        click.echo(f"saved {len(stats.saved)} cases under {out}/")
    sys.exit(1 if stats.failures() else 0)
