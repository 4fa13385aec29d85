"""The dynptr_slice benchmark workloads, defined once for `pytest bench/` and `bpfvm bench`.

A workload is one program of `examples/` on one packet. Every row of the benchmark (an engine in an inline
mode, the kernel, the C loop by hand) is a `Runner`: a round is `calls` test runs of `REPEAT` program runs, and
its figure is what the RFC's benchmark reports, slice calls counted by the program's `hits` counter divided by
the time measured around the repeat loops (natively for the JIT, by the kernel for the kernel, by the C loop
itself). Rows of one workload are measured round-robin (`Group`) so that ratios compare rounds taken side by
side in one run, never figures from different runs.

This file is loaded by path from the CLI (bench/ is not a package), so it imports nothing from bench/.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from bpfvm.errors import BpfvmError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BY_HAND_SOURCE = Path(__file__).resolve().parent / "dynptr_slice_by_hand.c"

REPEAT = 64           # program runs per test run, as the RFC's producer thread asks
PACKET_SIZE = 1000    # bytes, as the RFC's data_in
SLICES = 100          # bpf_dynptr_slice calls per program run (the `hits` the program adds)
ENGINES = ("interp", "jit")
MODES = ("none", "plain", "pruned")
BASELINE = "none"
KERNEL = ("kernel", "jit")      # (engine, mode) of the kernel's row: it has no inline modes
BY_HAND = ("c", "O2")           # (engine, mode) of the hand-written C loop
DEFAULT_ROUND_SECONDS = 0.05    # a round lasts about this long (wall clock), at least one test run


class BenchCheckError(BpfvmError):
    """A run gave a wrong result (return value or hits): the figures would mean nothing."""


def zero_packet() -> bytes:
    """The RFC's packet: 1000 zero bytes."""
    return bytes(PACKET_SIZE)


def pattern_packet() -> bytes:
    """1000 bytes whose first 100 sum to a value no failed slice (0x100 each) can fake."""
    return bytes((i * 7 + 3) & 0xFF for i in range(PACKET_SIZE))


def by_hand_sum(packet: bytes) -> int:
    """The hand-computed result of the sum programs: the first SLICES bytes of the packet added up."""
    return sum(packet[:SLICES])


@dataclass(frozen=True)
class Workload:
    """One program of examples/ on one packet, and what its runs must return."""

    name: str
    obj: str
    prog: str
    packet: bytes
    expect_retval: int
    description: str
    skb_linear: int | None = None
    kernel_note: str = ""

    @property
    def path(self) -> Path:
        return EXAMPLES / self.obj

    def run_options(self) -> dict[str, Any]:
        return {"skb_linear": self.skb_linear} if self.skb_linear is not None else {}


def _workloads() -> dict[str, Workload]:
    zeros, pattern = zero_packet(), pattern_packet()
    total = by_hand_sum(pattern)
    items = [
        Workload("slice", "dynptr_slice.o", "dynptr_slice", zeros, 0,
                 "RFC patch 11 exactly: tc, 100 unused one-byte slices of a linear 1000-byte skb"),
        Workload("sum", "dynptr_slice_sum.o", "dynptr_slice_sum", pattern, total,
                 "tc, every slice used: returns the sum of the first 100 bytes"),
        Workload("sum_nonlinear", "dynptr_slice_sum.o", "dynptr_slice_sum_buf", pattern, total,
                 "tc, skb with 50 linear bytes: slices past them are copied through a stack buffer",
                 skb_linear=50, kernel_note="the kernel's test run builds a linear skb"),
        Workload("xdp_slice", "dynptr_slice_xdp.o", "dynptr_slice_xdp", zeros, 2,
                 "XDP, bpf_dynptr_from_xdp, 100 unused one-byte slices (returns XDP_PASS)"),
        Workload("xdp_sum", "dynptr_slice_xdp.o", "dynptr_slice_xdp_sum", pattern, total,
                 "XDP, every slice used: returns the sum of the first 100 bytes"),
    ]
    return {w.name: w for w in items}


WORKLOADS = _workloads()


def case_id(workload: str, engine: str, mode: str) -> str:
    """The benchmark's parameter id, the same in pytest and in the CLI's JSON: `slice-jit-pruned`."""
    return f"{workload}-{engine}-{mode}"


# -- rounds and rows ----------------------------------------------------------------------------------------------
@dataclass
class Round:
    """One round of a row: slice calls counted by `hits`, the time measured around the repeat loops, and the
    wall-clock time of the whole round (what pytest-benchmark times)."""

    hits: int
    native_ns: float
    wall_s: float

    @property
    def mcalls_per_s(self) -> float:
        return self.hits / self.native_ns * 1e3 if self.native_ns > 0 else float("inf")


@dataclass
class Series:
    """The rounds of one row."""

    engine: str
    mode: str
    calls_per_round: int = 1
    rounds: list[Round] = field(default_factory=list)
    retval: int | None = None

    def rates(self) -> list[float]:
        return [r.mcalls_per_s for r in self.rounds]

    @property
    def mcalls_per_s(self) -> float:
        """The median round: robust to the odd round another process disturbed."""
        return statistics.median(self.rates())


def ratio(top: Series, bottom: Series) -> float:
    """Median over rounds of top's M calls/s over bottom's, round by round (both measured in one group)."""
    pairs = list(zip(top.rates(), bottom.rates()))
    if not pairs:
        raise BpfvmError("no rounds to compare")
    return statistics.median(a / b for a, b in pairs)


class Runner(Protocol):
    engine: str
    mode: str

    def warmup(self) -> int: ...

    def round(self, calls: int) -> Round: ...

    def close(self) -> None: ...


def _check(workload: Workload, who: str, retval: int, hits: int, runs: int) -> None:
    if retval != workload.expect_retval:
        raise BenchCheckError(f"{workload.name} on {who}: returned {retval}, expected {workload.expect_retval}")
    if hits != SLICES * runs:
        raise BenchCheckError(f"{workload.name} on {who}: hits grew by {hits} in {runs} runs, "
                              f"expected {SLICES * runs}")


def _timed_round(workload: Workload, who: str, hits_now: Callable[[], int],
                 run_once: Callable[[], tuple[int, float]], calls: int) -> tuple[Round, int]:
    """`calls` test runs of REPEAT each: the round (hits, the runs' own ns, wall time) and the last retval,
    checked against what the workload must return and count."""
    before = hits_now()
    native = 0.0
    retval = 0
    start = time.perf_counter()
    for _ in range(calls):
        retval, ns = run_once()
        native += ns
    wall = time.perf_counter() - start
    hits = hits_now() - before
    _check(workload, who, retval, hits, calls * REPEAT)
    return Round(hits, native, wall), retval


def _hits_of(bss: bytes) -> int:
    return int.from_bytes(bss[:8], "little")


class VmRunner:
    """A workload on a bpfvm engine in an inline mode; the object (and its `hits`) is shared by all modes."""

    def __init__(self, workload: Workload, obj: Any, engine: str, mode: str):
        self.workload, self.obj, self.engine, self.mode = workload, obj, engine, mode
        self.handle = obj.program(workload.prog)

    def _hits(self) -> int:
        return _hits_of(self.obj.map(".bss")[0])

    def _run(self) -> Any:
        return self.handle.run(self.workload.packet, repeat=REPEAT, engine=self.engine, inline=self.mode,
                               **self.workload.run_options())

    def warmup(self) -> int:
        """One checked test run (it verifies, inlines and compiles); returns its retval."""
        self.round(1)
        return self._last_retval

    def round(self, calls: int) -> Round:
        def run_once() -> tuple[int, float]:
            result = self._run()
            return result.retval, result.duration_ns * result.repeat

        found, self._last_retval = _timed_round(self.workload, f"{self.engine}/{self.mode}", self._hits, run_once,
                                                calls)
        return found

    def close(self) -> None:
        pass


class KernelRunner:
    """The workload in the running kernel (BPF_PROG_TEST_RUN through bpftool): the reference row."""

    engine, mode = KERNEL

    def __init__(self, workload: Workload):
        from bpfvm.kernel import KernelObject

        self.workload = workload
        self.kernel = KernelObject(workload.path)

    def _hits(self) -> int:
        values = list(self.kernel.map_dump(".bss").values())
        return _hits_of(values[0]) if values else 0

    def warmup(self) -> int:
        self.round(1)
        return self._last_retval

    def round(self, calls: int) -> Round:
        def run_once() -> tuple[int, float]:
            result = self.kernel.run(self.workload.prog, data_in=self.workload.packet, repeat=REPEAT)
            return result.retval, result.duration_ns * REPEAT  # the kernel reports the average per run, in ns

        found, self._last_retval = _timed_round(self.workload, "the kernel", self._hits, run_once, calls)
        return found

    def close(self) -> None:
        self.kernel.close()


def c_compiler() -> str | None:
    """The machine's C compiler: $CC, else cc, gcc or clang."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def c_compiler_version() -> str:
    cc = c_compiler()
    if cc is None:
        return "none"
    done = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True)
    return (done.stdout.splitlines() or ["unknown"])[0].strip()


class ByHandRunner:
    """The same 100 one-byte reads written by hand in C (dynptr_slice_by_hand.c, -O2), timed around its own
    repeat loop: the reference for the JIT's pruned mode."""

    engine, mode = BY_HAND

    def __init__(self, workload: Workload):
        self.workload = workload
        self._lib = _compile_by_hand()
        self._fn = self._lib.bpfvm_by_hand_slices
        self._fn.restype = ctypes.c_uint64
        self._fn.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                             ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint32)]
        self._packet = ctypes.create_string_buffer(workload.packet, len(workload.packet))
        self._hits = ctypes.c_uint64(0)
        self._sum = ctypes.c_uint32(0)

    def warmup(self) -> int:
        self.round(1)
        return self._sum.value

    def round(self, calls: int) -> Round:
        before = self._hits.value
        native = 0.0
        start = time.perf_counter()
        for _ in range(calls):
            native += self._fn(self._packet, len(self.workload.packet), REPEAT, ctypes.byref(self._hits),
                               ctypes.byref(self._sum))
        wall = time.perf_counter() - start
        expected = by_hand_sum(self.workload.packet)
        if self._sum.value != expected:
            raise BenchCheckError(f"the C loop summed {self._sum.value}, expected {expected}")
        hits = self._hits.value - before
        if hits != SLICES * REPEAT * calls:
            raise BenchCheckError(f"the C loop counted {hits} hits, expected {SLICES * REPEAT * calls}")
        return Round(hits, native, wall)

    def close(self) -> None:
        pass


_BY_HAND_LIB: Any = None


def _compile_by_hand() -> Any:
    """Compile the C loop once per process with the machine's compiler at -O2 and load it with ctypes."""
    global _BY_HAND_LIB
    if _BY_HAND_LIB is not None:
        return _BY_HAND_LIB
    cc = c_compiler()
    if cc is None:
        raise BpfvmError("no C compiler (cc, gcc or clang) for the by-hand C loop")
    with tempfile.TemporaryDirectory(prefix="bpfvm-bench-") as tmp:
        lib = Path(tmp) / "by_hand.so"
        done = subprocess.run([*cc.split(), "-O2", "-shared", "-fPIC", "-o", str(lib), str(BY_HAND_SOURCE)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise BpfvmError(f"{cc} could not compile {BY_HAND_SOURCE.name}: {lines[-1] if lines else done.returncode}")
        _BY_HAND_LIB = ctypes.CDLL(str(lib))  # the mapping outlives the deleted file
    return _BY_HAND_LIB


# -- groups: the rows of one workload, measured round-robin ------------------------------------------------------
def load_object(workload: Workload) -> Any:
    from bpfvm.api import load

    if not workload.path.exists():
        raise BpfvmError(f"{workload.path}: no such object (examples/build.sh builds it)")
    return load(workload.path)


def vm_runners(workload: Workload, engines: tuple[str, ...], modes: tuple[str, ...]) -> list[VmRunner]:
    obj = load_object(workload)
    return [VmRunner(workload, obj, engine, mode) for engine in engines for mode in modes]


def calls_for(runner: Runner, round_seconds: float) -> int:
    """Test runs per round so that a round lasts about `round_seconds` (the fastest of three test runs decides:
    a probe another process slowed down would make every round too short)."""
    wall = min(runner.round(1).wall_s for _ in range(3))
    return max(1, min(10_000, round(round_seconds / max(wall, 1e-6))))


class Group:
    """The rows of one workload: each warmed up and checked, then measured round by round in turn."""

    def __init__(self, workload: Workload, runners: list[Runner], rounds: int,
                 round_seconds: float = DEFAULT_ROUND_SECONDS):
        self.workload = workload
        self.runners = runners
        self.rounds = rounds
        self.round_seconds = round_seconds
        self.series: dict[tuple[str, str], Series] = {(r.engine, r.mode): Series(r.engine, r.mode)
                                                     for r in runners}

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        """(description, step) pairs: a progress bar advances once per step."""
        out: list[tuple[str, Callable[[], None]]] = []
        for runner in self.runners:
            out.append((f"{self.workload.name} {runner.engine}/{runner.mode} warm-up",
                        lambda r=runner: self._prepare(r)))
        for i in range(self.rounds):
            for runner in self.runners:
                out.append((f"{self.workload.name} round {i + 1}/{self.rounds}",
                            lambda r=runner: self._measure(r)))
        return out

    def _prepare(self, runner: Runner) -> None:
        series = self.series[(runner.engine, runner.mode)]
        series.retval = runner.warmup()
        series.calls_per_round = calls_for(runner, self.round_seconds)

    def _measure(self, runner: Runner) -> None:
        series = self.series[(runner.engine, runner.mode)]
        series.rounds.append(runner.round(series.calls_per_round))

    def run(self) -> dict[tuple[str, str], Series]:
        for _, step in self.steps():
            step()
        return self.series

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


# -- figures --------------------------------------------------------------------------------------------------------
def ratios(series: dict[tuple[str, str], Series]) -> dict[tuple[str, str], dict[str, float]]:
    """Every ratio a row reports, from rounds of this group only:
    engine rows: `ratio_to_baseline` (this mode over mode none on the same engine);
    the kernel's row: `jit_baseline_over_kernel` (JIT none over the kernel);
    the C row: `by_hand_over_jit_pruned` (the C loop over JIT pruned)."""
    out: dict[tuple[str, str], dict[str, float]] = {key: {} for key in series}
    for (engine, mode), s in series.items():
        base = series.get((engine, BASELINE))
        if engine in ENGINES and base is not None and s.rounds:
            out[(engine, mode)]["ratio_to_baseline"] = ratio(s, base)
    jit_none, jit_pruned = series.get(("jit", "none")), series.get(("jit", "pruned"))
    if KERNEL in series and jit_none is not None:
        out[KERNEL]["jit_baseline_over_kernel"] = ratio(jit_none, series[KERNEL])
    if BY_HAND in series and jit_pruned is not None:
        out[BY_HAND]["by_hand_over_jit_pruned"] = ratio(series[BY_HAND], jit_pruned)
    return out


def extra_info(workload: Workload, s: Series, row_ratios: dict[str, float]) -> dict[str, Any]:
    """What a benchmark row carries in `extra_info`, the same from pytest and from the CLI."""
    rates = s.rates()
    hits = sum(r.hits for r in s.rounds)
    native = sum(r.native_ns for r in s.rounds)
    mcalls = statistics.median(rates)
    info: dict[str, Any] = {
        "workload": workload.name, "engine": s.engine, "mode": s.mode,
        "object": workload.obj, "program": workload.prog, "packet_bytes": len(workload.packet),
        "skb_linear": workload.skb_linear, "repeat": REPEAT, "slices_per_run": SLICES,
        "rounds": len(rates), "calls_per_round": s.calls_per_round, "hits": hits,
        "retval": s.retval, "expected_retval": workload.expect_retval,
        "mcalls_per_s": mcalls, "mcalls_per_s_best": max(rates), "mcalls_per_s_overall": hits / native * 1e3,
        "ns_per_call": 1e3 / mcalls, "ns_per_run": 1e3 / mcalls * SLICES,
        "rounds_mcalls_per_s": rates,
    }
    if s.engine == KERNEL[0] and workload.kernel_note:
        info["note"] = workload.kernel_note
    info.update(row_ratios)
    return info


def versions() -> dict[str, str]:
    """Versions a run depends on, for the dashboard's "machine and versions" table."""
    import platform
    from importlib import metadata

    out = {"kernel": platform.release(), "cc": c_compiler_version()}
    for dist in ("bpfvm", "llvmlite", "cffi"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import llvmlite.binding as llvm

        out["llvm"] = ".".join(map(str, llvm.llvm_version_info))
    except Exception:  # noqa: BLE001 - a missing LLVM only leaves the field out
        pass
    jit_sysctl = Path("/proc/sys/net/core/bpf_jit_enable")
    if jit_sysctl.exists():
        out["kernel_bpf_jit_enable"] = jit_sysctl.read_text().strip()
    return out


def benchmark_id(workload: str, engine: str, mode: str) -> tuple[str, str, dict[str, str]]:
    """(name, fullname, params) of a row, exactly as `pytest bench/` names it, so results of either compare."""
    module = "bench/test_dynptr_slice.py"
    if (engine, mode) == KERNEL:
        name, params = f"test_dynptr_slice_kernel[{workload}]", {"workload": workload}
    elif (engine, mode) == BY_HAND:
        name, params = f"test_dynptr_slice_by_hand[{workload}]", {"workload": workload}
    else:
        name, params = f"test_dynptr_slice[{case_id(workload, engine, mode)}]", {"case": case_id(workload, engine, mode)}
    return name, f"{module}::{name}", params
