"""Verification time of generated programs of about 1k, 10k and 100k instructions (bpfvm.verifier.synth):
with the kernel's pruning, time must grow about linearly with the size. The figures (seconds, processed
instructions, instructions per second, time per 1k instructions) go to `extra_info`."""

from __future__ import annotations

import pytest

from bpfvm.verifier import verify
from bpfvm.verifier.synth import branchy_program

# blocks per size: about 6.3 slots per block
SIZES = {"1k": 160, "10k": 1600, "100k": 16000}
_PROGRAMS: dict[str, object] = {}


def _program(size: str):
    if size not in _PROGRAMS:
        _PROGRAMS[size] = branchy_program(SIZES[size], seed=7)
    return _PROGRAMS[size]


@pytest.mark.parametrize("size", list(SIZES))
def test_verify_speed(benchmark, size: str) -> None:
    prog = _program(size)
    rounds = 3 if size != "100k" else 1
    analysis = benchmark.pedantic(verify, args=(prog,), rounds=rounds, iterations=1)
    secs = benchmark.stats.stats.mean
    insns = len(prog.insns)
    benchmark.extra_info.update({
        "insns": insns,
        "processed": analysis.stats.processed,
        "total_states": analysis.stats.total_states,
        "seconds": round(secs, 3),
        "ms_per_1k_insns": round(1000 * secs / insns * 1000, 2),
        "processed_per_second": int(analysis.stats.processed / secs),
    })
    assert analysis.stats.processed < 2 * insns  # pruning keeps the work linear in the size
