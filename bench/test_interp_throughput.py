"""Interpreter throughput in BPF instructions per second (target: at least 5 million in CPython)."""

from __future__ import annotations

import pytest

from bpfvm.interp import Interpreter, Runtime
from bpfvm.memory import Memory
from bpfvm.program import Program
from bpfvm.ubpf_asm import assemble

# A loop of ALU operations and branches: about 1M instructions per run.
ALU_LOOP = """
    mov %r0, 0
    mov %r1, 100000
    mov %r2, 7
loop:
    add %r0, %r1
    xor %r0, %r2
    lsh %r2, 1
    and %r2, 0xff
    sub %r1, 1
    jgt %r1, 0, loop
    exit
"""

# A loop that reads and writes the stack and a memory buffer on every iteration.
MEMORY_LOOP = """
    mov %r0, 0
    mov %r3, 50000
    stdw [%r10-8], 0
loop:
    ldxdw %r4, [%r10-8]
    add %r4, %r3
    stxdw [%r10-8], %r4
    ldxw %r5, [%r1+0]
    add %r0, %r5
    stxw [%r1+4], %r0
    sub %r3, 1
    jne %r3, 0, loop
    ldxdw %r0, [%r10-8]
    exit
"""


def _bound(text: str):
    memory = Memory()
    buf = memory.add("buf", 64, data=bytes(range(64)))
    runnable = Interpreter(Program(assemble(text))).bind(Runtime(memory))
    return runnable, buf.start


@pytest.mark.parametrize("name, text", [("alu_branch", ALU_LOOP), ("memory", MEMORY_LOOP)])
def test_interpreter_insns_per_second(benchmark, name: str, text: str) -> None:
    runnable, addr = _bound(text)
    result = benchmark.pedantic(runnable, args=(addr,), rounds=5, iterations=1, warmup_rounds=1)
    steps = runnable.steps
    assert steps > 300_000 and result is not None
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["insns"] = steps
    benchmark.extra_info["insns_per_sec"] = steps / mean
    print(f"\n{name}: {steps} insns, {steps / mean / 1e6:.2f} M insns/s")
