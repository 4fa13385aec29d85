"""The RFC's dynptr_slice benchmark (patch 11) and its variants: baseline kfunc calls, inlined calls and pruned
inlined calls, per engine, next to the kernel and a C loop by hand. Workloads and figures: bench/workloads.py,
shared with `bpfvm bench` (same benchmark names, same extra_info).

Each test times its row's rounds with pytest-benchmark and, between them (untimed, in pedantic's setup), rounds
of the row it is compared with: mode none for an inline mode, JIT none for the kernel, JIT pruned for the C
loop. So every ratio comes from rounds taken side by side in this run. Results are checked (return values,
hits); timings never are. BPFVM_BENCH_ROUNDS and BPFVM_BENCH_ROUND_TIME shorten or lengthen the runs.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest

import workloads as wl
from bpfvm.kernel import kernel_unavailable_reason

ROUNDS = int(os.environ.get("BPFVM_BENCH_ROUNDS", "5"))
ROUND_SECONDS = float(os.environ.get("BPFVM_BENCH_ROUND_TIME", str(wl.DEFAULT_ROUND_SECONDS)))
CASES = [wl.case_id(w, e, m) for w in wl.WORKLOADS for e in wl.ENGINES for m in wl.MODES]


@functools.cache
def _object(workload: str) -> Any:
    """One loaded object per workload for the session: modes share it (and its verified, compiled programs)."""
    return wl.load_object(wl.WORKLOADS[workload])


@functools.cache
def _versions() -> dict[str, str]:
    return wl.versions()


def _vm(workload: str, engine: str, mode: str) -> wl.VmRunner:
    return wl.VmRunner(wl.WORKLOADS[workload], _object(workload), engine, mode)


def _measure(benchmark: Any, workload: wl.Workload, row: Any, partner: Any | None) -> dict[str, Any]:
    """Time `row` with pytest-benchmark, `partner` (if any) round by round in between; the row's extra_info."""
    series = wl.Series(row.engine, row.mode)
    series.retval = row.warmup()  # checked: a wrong return value or hits count raises BenchCheckError
    if (row.engine, row.mode) != wl.BY_HAND:  # the C loop returns its sum, checked against the packet's
        assert series.retval == workload.expect_retval
    series.calls_per_round = wl.calls_for(row, ROUND_SECONDS)
    rows = {(row.engine, row.mode): series}
    if partner is not None:
        other = wl.Series(partner.engine, partner.mode)
        other.retval = partner.warmup()
        other.calls_per_round = wl.calls_for(partner, ROUND_SECONDS)
        rows[(partner.engine, partner.mode)] = other

    def setup() -> None:
        if partner is not None:
            other.rounds.append(partner.round(other.calls_per_round))

    def one_round() -> None:
        series.rounds.append(row.round(series.calls_per_round))

    benchmark.pedantic(one_round, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    info = wl.extra_info(workload, series, wl.ratios(rows)[(row.engine, row.mode)])
    if partner is not None:
        info["compared_with"] = {"engine": partner.engine, "mode": partner.mode,
                                 "mcalls_per_s": rows[(partner.engine, partner.mode)].mcalls_per_s}
    info["versions"] = _versions()
    benchmark.extra_info.update(info)
    return info


@pytest.mark.parametrize("case", CASES)
def test_dynptr_slice(benchmark: Any, case: str) -> None:
    workload_name, engine, mode = case.rsplit("-", 2)
    workload = wl.WORKLOADS[workload_name]
    benchmark.group = workload_name
    partner = _vm(workload_name, engine, wl.BASELINE) if mode != wl.BASELINE else None
    info = _measure(benchmark, workload, _vm(workload_name, engine, mode), partner)
    assert info["retval"] == workload.expect_retval
    assert info["hits"] == wl.SLICES * wl.REPEAT * info["calls_per_round"] * info["rounds"]
    print(f"\n{case}: {info['mcalls_per_s']:.2f} M calls/s, x{info['ratio_to_baseline']:.2f} over {engine}/none")


@pytest.mark.kernel
@pytest.mark.parametrize("workload_name", list(wl.WORKLOADS))
def test_dynptr_slice_kernel(benchmark: Any, workload_name: str) -> None:
    reason = kernel_unavailable_reason()
    if reason is not None:
        pytest.skip(f"the kernel cannot run programs here: {reason}")
    workload = wl.WORKLOADS[workload_name]
    benchmark.group = workload_name
    kernel = wl.KernelRunner(workload)
    try:
        info = _measure(benchmark, workload, kernel, _vm(workload_name, "jit", "none"))
    finally:
        kernel.close()
    assert info["retval"] == workload.expect_retval
    print(f"\nkernel {workload_name}: {info['mcalls_per_s']:.2f} M calls/s, "
          f"JIT none x{info['jit_baseline_over_kernel']:.3f} of it")


@pytest.mark.parametrize("workload_name", list(wl.WORKLOADS))
def test_dynptr_slice_by_hand(benchmark: Any, workload_name: str) -> None:
    if wl.c_compiler() is None:
        pytest.skip("no C compiler (cc, gcc or clang) for the C loop by hand")
    workload = wl.WORKLOADS[workload_name]
    benchmark.group = workload_name
    info = _measure(benchmark, workload, wl.ByHandRunner(workload), _vm(workload_name, "jit", "pruned"))
    assert info["retval"] == wl.by_hand_sum(workload.packet)
    assert info["hits"] == wl.SLICES * wl.REPEAT * info["calls_per_round"] * info["rounds"]
    print(f"\nC by hand {workload_name}: {info['mcalls_per_s']:.2f} M calls/s, "
          f"x{info['by_hand_over_jit_pruned']:.2f} of JIT pruned")
