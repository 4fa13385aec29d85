"""A fuzzing campaign over a range of seeds, in parallel worker processes.

Each seed is one case, deterministic from the seed alone: a generated program (checked with `progcheck`) or
a malformed input (`malformed` + `robust`). So a campaign splits across machines by seed ranges, and any
case replays from its seed. Workers take chunks of seeds from a shared counter and report every case on a
queue; the parent counts, saves failures (at most a few per signature) and watches the workers: a worker
that dies is a crash, one that stops reporting is a hang; either way the case it was on is saved and a new
worker carries on with the rest of its chunk.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .cases import Case, signature
from .robust import MALFORMED_SECONDS

CHUNK = 16
PROGRAM_FAILURES = ("mismatch", "crash", "timeout")
OBJECT_FAILURES = ("traceback", "timeout", "mismatch")


@dataclass
class CampaignConfig:
    start: int = 0
    end: int | None = None  # exclusive; None: until the time limit
    seconds: float | None = None
    workers: int = 2
    programs: bool = True
    objects: bool = True
    out: Path = Path("fuzz-failures")
    jit_every: int = 50  # every Nth program also runs on the JIT
    elf_every: int = 16  # every Nth program goes through the ELF writer and loader
    object_every: int = 11  # with both kinds: seed % N == N - 1 is a malformed object (1 in 11)
    case_seconds: float = 20.0  # CPU seconds per generated program
    huge_seconds: float = MALFORMED_SECONDS  # CPU seconds per malformed input (see robust.MALFORMED_SECONDS)
    saves_per_signature: int = 3
    case_fn: Callable[[int, "CampaignConfig"], tuple[str, str, Case | None]] | None = None  # tests: replaces run_case
    hang_grace: float = 60.0  # seconds past the case bound before a silent worker counts as hung


def kind_of(seed: int, cfg: CampaignConfig) -> str:
    if cfg.programs and cfg.objects:
        return "object" if seed % cfg.object_every == cfg.object_every - 1 else "program"
    return "program" if cfg.programs else "object"


def run_case(seed: int, cfg: CampaignConfig) -> tuple[str, str, Case | None]:
    """(kind, status, failure case or None) for one seed."""
    from .robust import CaseTimeout, time_limit

    if kind_of(seed, cfg) == "program":
        from .progcheck import check_seed

        jit = cfg.jit_every > 0 and seed % cfg.jit_every == 0
        elf = cfg.elf_every > 0 and seed % cfg.elf_every == 0
        try:
            with time_limit(cfg.case_seconds * (3 if jit else 1)):
                outcome = check_seed(seed, jit=jit, via_elf=elf)
        except CaseTimeout as exc:
            return "program", "timeout", _program_case(seed, "timeout", str(exc))
        status = outcome.status
        if status in PROGRAM_FAILURES:
            return "program", status, _program_case(seed, status, outcome.detail, outcome.spec, outcome.case)
        if status == "rejected":  # the generator only makes valid programs: a refusal is worth a look
            return "program", "rejected", _program_case(seed, "rejected", outcome.detail, outcome.spec)
        return "program", ("agree-jit" if jit else "agree"), None
    from .malformed import make
    from .robust import run_malformed

    m = make(seed)
    outcome = run_malformed(m, seconds=cfg.huge_seconds)
    if outcome.failed or outcome.status in ("internal", "multiline"):
        return m.kind, outcome.status, Case(m.kind, seed, outcome.status, m.data, outcome.detail,
                                            prog_type=m.prog_type, extra={"note": m.note})
    return m.kind, outcome.status, None


def _program_case(seed: int, status: str, detail: str, spec: str = "", case: Any = None) -> Case:
    from .programs import random_program

    program = random_program(seed)
    return Case("program", seed, status, program.to_elf(), detail, spec, case, program.prog_type)


def regenerate(seed: int, cfg: CampaignConfig, status: str, detail: str) -> Case:
    """The case of a seed whose worker died or hung (rebuilt from the seed, in the parent)."""
    if kind_of(seed, cfg) == "program":
        return _program_case(seed, status, detail)
    from .malformed import make

    m = make(seed)
    return Case(m.kind, seed, status, m.data, detail, prog_type=m.prog_type, extra={"note": m.note})


# -- workers ---------------------------------------------------------------------------------------------------
def _worker(wid: int, cfg: CampaignConfig, counter: Any, current: Any, chunk_end: Any, beat: Any, stop: Any,
            conn: Any, retry: tuple[int, int] | None) -> None:
    """Run chunks of seeds; every result goes to the parent at once on this worker's own pipe (a synchronous
    send: nothing is lost when the worker dies right after, and no lock is shared with other workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    while not stop.value:
        if retry is not None:
            start, end = retry
            retry = None
        else:
            with counter.get_lock():
                start = counter.value
                counter.value += CHUNK
            end = start + CHUNK if cfg.end is None else min(start + CHUNK, cfg.end)
        if start >= end:
            break
        chunk_end[wid] = end
        for seed in range(start, end):
            if stop.value:
                return
            current[wid] = seed
            beat[wid] = time.time()
            kind, status, failure = (cfg.case_fn or run_case)(seed, cfg)
            conn.send((wid, seed, kind, status, failure))
        current[wid] = -1
    conn.send((wid, -1, "", "done", None))


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    counts: Counter = field(default_factory=Counter)  # (kind, status) -> n
    signatures: Counter = field(default_factory=Counter)
    saved: list[str] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)
    worker_crashes: int = 0
    hangs: int = 0
    last: str = ""
    done_below: int = 0  # every seed below this one is finished: a stopped campaign resumes here
    _done_above: set[int] = field(default_factory=set)

    def seed_done(self, seed: int) -> None:
        self._done_above.add(seed)
        while self.done_below in self._done_above:
            self._done_above.discard(self.done_below)
            self.done_below += 1

    def programs(self) -> int:
        return sum(n for (k, _), n in self.counts.items() if k == "program")

    def objects(self) -> int:
        return sum(n for (k, _), n in self.counts.items() if k != "program")

    def failures(self) -> int:
        bad = sum(n for (k, s), n in self.counts.items()
                  if (k == "program" and s in PROGRAM_FAILURES) or (k != "program" and s in OBJECT_FAILURES))
        return bad + self.worker_crashes + self.hangs


def preload() -> None:
    """Import everything a case needs before the workers fork: every worker (and every replacement) then
    runs the code as it was when the campaign started, even while the tree is being edited."""
    import helpers.registry  # noqa: F401

    from .. import api, disasm, elf, engines, interp, pipeline, testrun, verifier  # noqa: F401
    from . import malformed, progcheck, robust  # noqa: F401

    engines.get_engine("jit")
    from ..kfunclib import default_library

    default_library()


class Campaign:
    def __init__(self, cfg: CampaignConfig, report: Callable[["Stats", bool], None] | None = None):
        preload()
        self.cfg = cfg
        self.stats = Stats(done_below=cfg.start)
        self.report = report or (lambda stats, final: None)
        ctx = mp.get_context("fork")
        self.ctx = ctx
        n = cfg.workers
        self.counter = ctx.Value("q", cfg.start)
        self.current = ctx.Array("q", [-1] * n)
        self.chunk_end = ctx.Array("q", [0] * n)
        self.beat = ctx.Array("d", [time.time()] * n)
        self.stop = ctx.Value("b", 0)
        self.conns: list[Any] = [None] * n
        self.procs: list[Any] = [None] * n
        self.finished = [False] * n

    def _spawn(self, wid: int, retry: tuple[int, int] | None = None) -> None:
        self.beat[wid] = time.time()
        if self.conns[wid] is not None:
            self._read(self.conns[wid])
            self.conns[wid].close()
        parent, child = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=_worker, args=(wid, self.cfg, self.counter, self.current, self.chunk_end,
                                                   self.beat, self.stop, child, retry), daemon=True)
        p.start()
        child.close()
        self.procs[wid] = p
        self.conns[wid] = parent

    def run(self) -> Stats:
        """Until the range is done, the time is up, or SIGINT/SIGTERM (both stop cleanly, with a summary;
        SIGINT is re-enabled because a shell starts background jobs with it ignored)."""
        def interrupt(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _run(self) -> Stats:
        for wid in range(self.cfg.workers):
            self._spawn(wid)
        last_report = 0.0
        try:
            while not all(self.finished):
                self._drain(timeout=0.2)
                self._watch()
                if self.cfg.seconds is not None and time.time() - self.stats.started > self.cfg.seconds:
                    self.stop.value = 1
                if time.time() - last_report > 0.5:
                    self.report(self.stats, False)
                    last_report = time.time()
        except KeyboardInterrupt:
            self.stop.value = 1
            self.stats.last = "interrupted"
        finally:
            self.stop.value = 1
            deadline = time.time() + 30
            for p in self.procs:
                if p is not None:
                    p.join(max(0.1, deadline - time.time()))
                    if p.is_alive():
                        p.kill()
            self._drain(timeout=0.1)
        self.report(self.stats, True)
        return self.stats

    def _drain(self, timeout: float) -> None:
        from multiprocessing.connection import wait

        for conn in wait([c for c in self.conns if c is not None and not c.closed], timeout):
            self._read(conn)

    def _read(self, conn: Any) -> None:
        try:
            while conn.poll():
                self._record(*conn.recv())
        except (EOFError, OSError):
            pass

    def _record(self, wid: int, seed: int, kind: str, status: str, failure: Case | None) -> None:
        if status == "done":
            self.finished[wid] = True
            return
        self.stats.seed_done(seed)
        self.stats.counts[(kind, "rejected" if status == "rejected" else status)] += 1
        if failure is None:
            return
        if status == "rejected":
            self.stats.rejections[failure.detail.split(":", 1)[-1].strip()[:80]] += 1
        self._save(failure)

    def _save(self, failure: Case) -> None:
        """Every failure gets a line in OUT/failures.log (seed, kind, status, target, signature), so any of
        them can be re-run from its seed; the first few of each signature are saved whole."""
        sig = signature(failure.kind, failure.status, failure.detail, failure.spec)
        self.stats.signatures[sig] += 1
        self.stats.last = f"seed {failure.seed}: {sig}"
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        with open(self.cfg.out / "failures.log", "a") as log:
            log.write(f"{failure.seed}\t{failure.kind}\t{failure.status}\t{failure.spec}\t{sig}\n")
        if self.stats.signatures[sig] <= self.cfg.saves_per_signature:
            self.stats.saved.append(str(failure.save(self.cfg.out)))

    def _watch(self) -> None:
        """Replace dead and hung workers; their current case is a failure."""
        now = time.time()
        for wid, p in enumerate(self.procs):
            if self.finished[wid] or p is None:
                continue
            seed = self.current[wid]
            bound = max(self.cfg.huge_seconds, self.cfg.case_seconds) + self.cfg.hang_grace
            if p.is_alive() and seed >= 0 and now - self.beat[wid] > bound:
                p.kill()
                p.join(5)
                self._lost(wid, seed, "hang", f"no result after {now - self.beat[wid]:.0f}s")
            elif not p.is_alive():
                if p.exitcode == 0:
                    self.finished[wid] = True
                    continue
                self._lost(wid, seed, "worker-crash", f"worker died with exit code {p.exitcode}")

    def _lost(self, wid: int, seed: int, status: str, detail: str) -> None:
        self._drain(timeout=0.05)
        if status == "hang":
            self.stats.hangs += 1
        else:
            self.stats.worker_crashes += 1
        retry = None
        if seed >= 0:
            case = regenerate(seed, self.cfg, status, detail)
            self.stats.seed_done(seed)
            self.stats.counts[(case.kind, status)] += 1
            self._save(case)
            retry = (seed + 1, self.chunk_end[wid])
        self.current[wid] = -1
        if not self.stop.value:
            self._spawn(wid, retry if retry and retry[0] < retry[1] else None)
        else:
            self.finished[wid] = True


# -- display ---------------------------------------------------------------------------------------------------
def summary_lines(stats: Stats, cfg: CampaignConfig) -> list[str]:
    elapsed = max(time.time() - stats.started, 1e-6)
    programs, objects = stats.programs(), stats.objects()
    by_status: dict[str, Counter] = {"program": Counter(), "object": Counter()}
    for (kind, status), n in stats.counts.items():
        by_status["program" if kind == "program" else "object"][status] += n
    lines = [f"elapsed {elapsed:.0f}s; {programs + objects} cases ({(programs + objects) / elapsed:.1f}/s); "
             f"seeds {cfg.start}..{stats.done_below - 1} all done"
             + (f" (resume: --seed-range {stats.done_below}:{cfg.end})" if cfg.end and stats.done_below < cfg.end
                else ""),
             f"programs {programs}: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status['program'].items())),
             f"objects {objects}: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status['object'].items())),
             f"worker crashes {stats.worker_crashes}, hangs {stats.hangs}, failures {stats.failures()}"]
    kinds = Counter()
    for (kind, _), n in stats.counts.items():
        if kind != "program":
            kinds[kind] += n
    if kinds:
        lines.append("object kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return lines


def text_reporter(cfg: CampaignConfig, every: float = 60.0, stream: Any = None) -> Callable[[Stats, bool], None]:
    """A status line every `every` seconds (for logs), and the full summary at the end."""
    stream = stream or sys.stderr
    last = [time.time()]

    def report(stats: Stats, final: bool) -> None:
        if final or time.time() - last[0] >= every:
            last[0] = time.time()
            print(" | ".join(summary_lines(stats, cfg)[:4]), file=stream, flush=True)

    return report


def live_reporter(cfg: CampaignConfig) -> tuple[Any, Callable[[Stats, bool], None]]:
    """A rich live panel on the terminal."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)

    def report(stats: Stats, final: bool) -> None:
        table = Table(title="bpfvm fuzz", show_header=False)
        for line in summary_lines(stats, cfg):
            table.add_row(line)
        top = stats.signatures.most_common(5)
        for sig, n in top:
            table.add_row(f"[red]{n} x {sig}")
        if stats.last:
            table.add_row(f"last: {stats.last}")
        live.update(table)

    return live, report
