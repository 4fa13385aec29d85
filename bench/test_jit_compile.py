"""JIT compile time per 1,000 BPF instructions, and JIT vs interpreter throughput on the interpreter's loops."""

from __future__ import annotations

import importlib.util
import random
import time
from pathlib import Path

import pytest

from bpfvm import isa
from bpfvm.interp import Interpreter, Runtime
from bpfvm.isa import Insn
from bpfvm.memory import Memory
from bpfvm.program import Program
from bpfvm.ubpf_asm import assemble
from jit import engine as jit_engine
from jit.engine import JitEngine
from jit.lower import analyse


def _interp_bench() -> object:
    """The interpreter benchmark's module, for its loops (bench/ is not a package)."""
    path = Path(__file__).with_name("test_interp_throughput.py")
    spec = importlib.util.spec_from_file_location("_bpfvm_interp_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_LOOPS = _interp_bench()


def synthetic_program(n: int, seed: int = 1) -> Program:
    """`n` slots of compiler-like code: ALU on registers, short forward branches, stack and buffer accesses."""
    rnd = random.Random(seed)
    regs = [0, 2, 3, 4, 5, 6, 7, 8, 9]
    out = [Insn(isa.ALU64 | isa.MOV | isa.K, r, 0, 0, r) for r in regs]
    while len(out) < n - 1:
        k, d, s = rnd.random(), rnd.choice(regs), rnd.choice(regs)
        if k < 0.6:
            op = rnd.choice([isa.ADD, isa.SUB, isa.MUL, isa.OR, isa.AND, isa.XOR, isa.LSH, isa.RSH, isa.ARSH])
            out.append(Insn(rnd.choice([isa.ALU, isa.ALU64]) | op | isa.X, d, s))
        elif k < 0.75:
            room = max(n - 2 - len(out), 0)
            op = rnd.choice([isa.JEQ, isa.JGT, isa.JSGT, isa.JNE])
            out.append(Insn(isa.JMP | op | isa.K, d, 0, min(rnd.randint(0, 8), room), rnd.randint(-5, 5)))
        elif k < 0.85:
            out.append(Insn(isa.STX | isa.MEM | isa.DW, 10, s, -8 * rnd.randint(1, 16)))
        elif k < 0.95:
            out.append(Insn(isa.LDX | isa.MEM | isa.DW, d, 10, -8 * rnd.randint(1, 16)))
        else:
            out.append(Insn(isa.LDX | isa.MEM | isa.W, d, 1, 4 * rnd.randint(0, 7)))
    out.append(Insn(isa.OP_EXIT))
    return Program(out, name=f"synthetic{n}")


@pytest.mark.parametrize("n, rounds", [(1000, 3), (10_000, 1)])
def test_jit_compile_time_per_1k_insns(benchmark, n: int, rounds: int) -> None:
    program = synthetic_program(n)
    plan = analyse(program)
    opt = jit_engine.DEFAULT_OPT_LEVEL

    def compile_and_load() -> object:  # no caches: lowering, LLVM O2, code generation, loading
        return jit_engine._load_object(jit_engine.compile_object(program, plan, opt), opt)

    benchmark.pedantic(compile_and_load, rounds=rounds, iterations=1, warmup_rounds=0)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["insns"] = n
    benchmark.extra_info["seconds_per_1k_insns"] = mean / (n / 1000)
    print(f"\n{n} insns: {mean:.3f} s, {mean / (n / 1000):.3f} s per 1k insns")


def _bound(engine: str, text: str):
    memory = Memory()
    buf = memory.add("buf", 64, data=bytes(range(64)))
    program = Program(assemble(text))
    prepared = Interpreter(program) if engine == "interp" else JitEngine().prepare(program)
    return prepared.bind(Runtime(memory)), buf.start


@pytest.mark.parametrize("name", ["alu_branch", "memory"])
def test_jit_vs_interpreter_throughput(benchmark, name: str) -> None:
    text = _LOOPS.ALU_LOOP if name == "alu_branch" else _LOOPS.MEMORY_LOOP
    interp, addr = _bound("interp", text)
    best_interp = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        expected = interp(addr)
        best_interp = min(best_interp, time.perf_counter() - t0)
    jit, addr = _bound("jit", text)
    result = benchmark.pedantic(jit, args=(addr,), rounds=50, iterations=1, warmup_rounds=2)
    assert result == expected and jit.steps == interp.steps  # same loop, same answer, same count
    r0, ns = jit.run_repeat(addr, 20)  # the native run loop, without the Python call per run
    mean = benchmark.stats.stats.mean
    steps = jit.steps
    benchmark.extra_info.update(
        insns=steps, insns_per_sec=steps / mean, interp_insns_per_sec=steps / best_interp,
        speedup_vs_interp=best_interp / mean, run_repeat_insns_per_sec=steps * 20 / (ns / 1e9),
    )
    print(f"\n{name}: jit {steps / mean / 1e6:.0f} M insns/s, interp {steps / best_interp / 1e6:.1f} M insns/s, "
          f"x{best_interp / mean:.0f}; run_repeat {steps * 20 / (ns / 1e9) / 1e6:.0f} M insns/s")
