"""The llvmlite JIT: the interpreter's results on every program, memory safety, limits, helpers and caching.

Expected values come from the interpreter (the semantic reference), from the conformance suite, or from the
interpreter tests' hand-checked values. Differential runs use one `Memory` for both engines, so addresses (and
fault messages naming them) are identical.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from bpfvm import isa
from bpfvm.conformance import CONFORMANCE_HELPERS, iter_data_files, run_file
from bpfvm.engines import engine_names, get_engine
from bpfvm.errors import (
    BpfvmError, CallDepthExceeded, HelperError, LoadError, MemoryFault, VMFault,
)
from bpfvm.interp import FUNC_PTR_BASE, Interpreter, ProgramExit, Runtime, TailCall
from bpfvm.isa import Insn
from bpfvm.memory import Memory
from bpfvm.program import FuncInfo, Program
from bpfvm.ubpf_asm import assemble

from jit import engine as jit_engine
from jit.engine import JitEngine, NativeHelper

REPO = Path(__file__).resolve().parents[1]
M64 = (1 << 64) - 1


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write to the user's cache (the caching test sets its own directory)."""
    monkeypatch.setenv("BPFVM_JIT_DISK_CACHE", "0")


# -- running a program on both engines ------------------------------------------------------------------------
def _outcome(bound: Any, args: tuple[int, ...]) -> tuple:
    try:
        return ("ok", bound(*args))
    except TailCall as exc:
        return ("tail", exc.target)
    except BpfvmError as exc:
        return ("error", type(exc).__name__, str(exc))


def run_both(
    program: Program | list[Insn] | str,
    mem: bytes = b"",
    *,
    helpers: dict[int, Callable[..., int]] | None = None,
    kfuncs: dict[str, Callable[..., int]] | None = None,
    insn_limit: int = 10_000_000,
    setup: Callable[[Runtime], None] | None = None,
    args: tuple[int, ...] | None = None,
) -> tuple:
    """Run on the interpreter and the JIT with the same memory; assert identical outcome, steps and memory."""
    if isinstance(program, str):
        program = assemble(program)
    if isinstance(program, list):
        program = Program(list(program))
    memory = Memory()
    runtime = Runtime(memory, helpers={**CONFORMANCE_HELPERS, **(helpers or {})}, kfuncs=kfuncs,
                      insn_limit=insn_limit)
    region = memory.add("mem", max(len(mem), 1), data=mem)
    if setup is not None:
        setup(runtime)
    if args is None:
        args = (region.start, len(mem)) if mem else ()
    results = []
    for engine in ("interp", "jit"):
        region.write(0, mem)
        runtime.stack.write(0, bytes(runtime.stack.size))
        runtime.output.clear()
        try:
            bound = get_engine(engine).prepare(program, verified=False).bind(runtime)
        except BpfvmError as exc:
            results.append((("load", type(exc).__name__, str(exc)), 0, b"", []))
            continue
        outcome = _outcome(bound, args)
        results.append((outcome, bound.steps, region.read(), list(runtime.output)))
    interp, jit = results
    assert jit == interp
    return interp[0]


def result_of(outcome: tuple) -> int:
    if outcome[0] == "ok":
        return outcome[1]
    raise AssertionError(f"program failed: {outcome}")


# -- registration and the conformance suite ---------------------------------------------------------------------
def test_engine_is_registered() -> None:
    assert "jit" in engine_names()
    assert isinstance(get_engine("jit"), JitEngine)


def test_every_conformance_test_passes_on_the_jit(conformance_dir: Path) -> None:
    files = list(iter_data_files(conformance_dir / "tests"))
    assert len(files) == 313
    failures = [(o.path, o.reason) for o in (run_file(f, "jit") for f in files) if o.status != "passed"]
    assert failures == []


def test_cli_conformance_on_the_jit(conformance_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bpfvm", "conformance", str(conformance_dir / "tests"), "--engine", "jit", "-q"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "BPFVM_JIT_DISK_CACHE": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "313 passed, 0 failed, 0 skipped"


def test_conformance_programs_agree_step_for_step(conformance_dir: Path) -> None:
    """Beyond r0: the instruction count and the final memory of every suite program match the interpreter."""
    from bpfvm.conformance import parse_data

    for path in list(iter_data_files(conformance_dir / "tests"))[::3]:
        test = parse_data(path.read_text(errors="replace"), str(path))
        if test.insns is None:
            continue
        run_both(test.insns, test.mem)


# -- the interpreter's own edge cases, re-run on the JIT ------------------------------------------------------
def _load_interp_tests() -> Any:
    spec = importlib.util.spec_from_file_location("_bpfvm_test_interp", Path(__file__).with_name("test_interp.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TI = _load_interp_tests()


def _interp_cases() -> list:
    """Every test function of test_interp.py with its parametrize values (fixture-using ones are skipped)."""
    cases = []
    for name, fn in vars(_TI).items():
        if not (name.startswith("test_") and callable(fn)):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        argnames: list[str] = []
        values: list = [()]
        if marks:
            raw = marks[0].args[0]
            argnames = [a.strip() for a in raw.split(",")] if isinstance(raw, str) else list(raw)
            values = [getattr(v, "values", v) for v in marks[0].args[1]]
            values = [v if len(argnames) > 1 else (v,) for v in values]
        if set(inspect.signature(fn).parameters) - set(argnames):
            cases.append(pytest.param(fn, (), id=name, marks=pytest.mark.skip(reason="needs fixtures")))
            continue
        cases += [pytest.param(fn, tuple(v), id=f"{name}[{k}]" if marks else name) for k, v in enumerate(values)]
    return cases


def _differential_run_insns(insns: list[Insn], mem: bytes = b"", *, engine: str = "", helpers=None,
                            insn_limit: int = 10_000_000) -> int:
    """`run_insns` for the interpreter tests: both engines must agree; then the JIT's result or error counts."""
    from bpfvm.conformance import run_insns

    isa.validate_program(insns)
    outcome = run_both(insns, mem, helpers=helpers, insn_limit=insn_limit)
    if outcome[0] == "ok":
        return outcome[1]
    return run_insns(insns, mem, engine="jit", helpers=helpers, insn_limit=insn_limit)  # raises the JIT's error


@pytest.mark.parametrize("fn, params", _interp_cases())
def test_interpreter_edge_cases_hold_on_the_jit(fn: Callable, params: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test of tests/test_interp.py, with every run made on both engines and compared."""
    monkeypatch.setattr(_TI, "run_insns", _differential_run_insns)
    monkeypatch.setattr(_TI, "Interpreter", lambda program: JitEngine().prepare(program))
    fn(*params)


# -- instruction counting, limits, call depth -----------------------------------------------------------------
def test_steps_match_the_interpreter_and_reset_per_run() -> None:
    program = Program(assemble("mov %r0, 3\nsub %r0, 1\njne %r0, 0, -2\nexit"))
    bound = JitEngine().prepare(program).bind(Runtime(Memory()))
    assert bound() == 0
    assert bound.steps == 1 + 3 * 2 + 1
    assert bound() == 0 and bound.steps == 8


def test_instruction_limit_names_the_block_and_counts_like_the_interpreter() -> None:
    text = "mov %r0, 0\nloop:\nadd %r0, 1\nadd %r0, 1\nja loop\nexit"
    outcome = run_both(text, insn_limit=1000)
    assert outcome[0] == "error" and outcome[1] == "InstructionLimitExceeded"
    assert outcome[2] == "insn 1: instruction limit of 1000 exceeded (runaway program?)"


def test_may_goto_budget_is_the_interpreters() -> None:
    insns = [
        Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, 0),
        Insn(isa.OP_MAY_GOTO, off=2),
        Insn(isa.ALU64 | isa.ADD | isa.K, 0, 0, 0, 1),
        Insn(isa.OP_JA, off=-3),
        Insn(isa.OP_EXIT),
    ]
    assert result_of(run_both(insns, insn_limit=100_000_000)) == 8 * 1024 * 1024


def _call_chain(depth: int, via_callx: bool = False) -> list[Insn]:
    """Frame k calls frame k+1 (a local call or callx through a function pointer); the last returns 42."""
    insns: list[Insn] = []
    for _ in range(depth - 1):
        if via_callx:  # lddw r6, <next frame>; callx r6; exit -- the next frame starts 4 slots on
            insns += [*isa.lddw_pair(6, 0, isa.PSEUDO_FUNC), Insn(isa.OP_CALLX, 6), Insn(isa.OP_EXIT)]
            insns[-4] = insns[-4].with_(imm=3)
        else:  # call <next frame>; exit
            insns += [Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, 1), Insn(isa.OP_EXIT)]
    return insns + [Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, 42), Insn(isa.OP_EXIT)]


@pytest.mark.parametrize("via_callx", [False, True])
def test_call_depth_limit_of_eight_frames(via_callx: bool) -> None:
    assert result_of(run_both(_call_chain(8, via_callx))) == 42
    outcome = run_both(_call_chain(9, via_callx))
    assert outcome[1] == "CallDepthExceeded" and "the call stack of 9 frames is too deep" in outcome[2]


def test_frames_are_512_bytes_apart_on_the_runtime_stack() -> None:
    # r0 = caller's r10 - callee's r10, computed through a pointer the callee gets in r1
    text = """
        mov %r1, %r10
        call local f
        exit
    f:
        mov %r0, %r1
        sub %r0, %r10
        exit
    """
    assert result_of(run_both(text)) == 512


def test_callee_sees_caller_stack_through_a_pointer() -> None:
    text = """
        stdw [%r10-8], 77
        mov %r1, %r10
        add %r1, -8
        call local f
        exit
    f:
        ldxdw %r0, [%r1]
        stdw [%r1], 5
        exit
    """
    assert result_of(run_both(text)) == 77


def test_falling_off_a_subprogram_is_a_fault_naming_the_last_slot() -> None:
    text = "call local f\nexit\nf:\nmov %r0, 1"
    outcome = run_both(text)
    assert outcome[1:] == ("VMFault", "insn 2: fell off the end of the subprogram")


# -- helpers, kfuncs, callbacks through the trampoline -----------------------------------------------------------
def test_helper_gets_registers_and_runtime_and_result_is_masked() -> None:
    seen = []

    def helper(runtime: Runtime, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        seen.append((type(runtime).__name__, r1, r2, r3, r4, r5))
        return -2

    text = "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, -1\ncall 77\nexit"
    assert result_of(run_both(text, helpers={77: helper})) == (-2) & M64
    assert seen == [("Runtime", 1, 2, 3, 4, M64)] * 2


def test_helper_does_not_clobber_argument_registers() -> None:
    text = "mov %r1, 10\ncall 77\nadd %r0, %r1\nexit"
    assert result_of(run_both(text, helpers={77: lambda rt, *a: 5})) == 15


def test_helper_errors_and_program_exit_and_tail_calls() -> None:
    def failing(*_a: int) -> int:
        raise HelperError("bad argument", 3)

    def stop(*_a: int) -> int:
        raise ProgramExit(-5)

    def tail(*_a: int) -> int:
        raise TailCall("next-program")

    assert run_both("mov %r0, 1\ncall 77\nexit", helpers={77: failing})[1:] == ("HelperError", "insn 3: bad argument")
    assert run_both("call 77\nmov %r0, 1\nexit", helpers={77: stop}) == ("ok", (-5) & M64)
    assert run_both("call 77\nexit", helpers={77: tail}) == ("tail", "next-program")
    assert run_both("call 99\nexit")[1:] == ("HelperError", "call to unknown helper #99")


def test_python_exceptions_from_helpers_propagate_unchanged() -> None:
    def broken(*_a: int) -> int:
        raise KeyError("oops")

    bound = JitEngine().prepare(Program(assemble("call 77\nexit"))).bind(Runtime(Memory(), helpers={77: broken}))
    with pytest.raises(KeyError, match="oops"):
        bound()
    bound.runtime.helpers[77] = lambda *_a: 3
    assert JitEngine().prepare(Program(assemble("call 77\nexit"))).bind(bound.runtime)() == 3
    with pytest.raises(KeyError, match="oops"):  # the first runnable stays usable, with its own binding
        bound()


def test_kfunc_calls() -> None:
    insns = [Insn(isa.ALU64 | isa.MOV | isa.K, 1, 0, 0, 20), Insn(isa.OP_CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, 1),
             Insn(isa.OP_EXIT)]
    program = Program(insns, kfuncs=["bpf_other", "bpf_double"])
    assert result_of(run_both(program, kfuncs={"bpf_double": lambda rt, r1, *_: r1 * 2})) == 40
    assert run_both(program)[1:] == ("HelperError", "call to unknown kfunc bpf_double")
    bad = Program(insns, kfuncs=["only_one"])
    assert run_both(bad)[0] == "load"


def test_callx_to_a_helper_id_and_to_garbage() -> None:
    insns = [Insn(isa.ALU64 | isa.MOV | isa.K, 1, 0, 0, 9), Insn(isa.ALU64 | isa.MOV | isa.K, 2, 0, 0, 5),
             Insn(isa.OP_CALLX, 2), Insn(isa.OP_EXIT)]
    assert result_of(run_both(insns)) == 9  # conformance helper 5 returns r1
    insns[1] = Insn(isa.ALU64 | isa.MOV | isa.K, 2, 0, 0, 1234)
    assert run_both(insns)[1:] == ("HelperError", "insn 2: callx to unknown helper #1234")
    wrong = [*isa.lddw_pair(2, FUNC_PTR_BASE + 8 * 3 + 4), Insn(isa.OP_CALLX, 2), Insn(isa.OP_EXIT)]
    outcome = run_both(wrong)
    assert outcome[1] == "VMFault" and "which is not a function of this program" in outcome[2]


def _bpf_loop(runtime: Runtime, count: int, fn: int, ctx: int, _flags: int, _r5: int) -> int:
    """bpf_loop (helper 181) in Python: calls the BPF callback `fn(i, ctx)` until it returns non-zero."""
    for i in range(count):
        if runtime.call_function(fn, i, ctx):
            return i + 1
    return count


CALLBACK_PROGRAM = """
    stdw [%r10-8], 0
    mov %r1, 10
    lddw %r2, 0
    mov %r3, %r10
    add %r3, -8
    mov %r4, 0
    call 181
    ldxdw %r1, [%r10-8]
    lsh %r0, 32
    or %r0, %r1
    exit
cb:
    ldxdw %r3, [%r2]
    add %r3, %r1
    stxdw [%r2], %r3
    stdw [%r10-8], 1
    mov %r0, 0
    jne %r1, 6, +1
    mov %r0, 1
    exit
"""


def _callback_program() -> list[Insn]:
    insns = assemble(CALLBACK_PROGRAM)
    # make `lddw %r2, 0` a function pointer to `cb` (slot 12)
    k = next(i for i, x in enumerate(insns) if x.opcode == isa.OP_LDDW)
    insns[k] = insns[k].with_(src=isa.PSEUDO_FUNC, imm=12 - (k + 1))
    return insns


def test_callbacks_from_helpers_run_in_their_own_frame() -> None:
    outcome = run_both(_callback_program(), helpers={181: _bpf_loop})
    assert result_of(outcome) == (7 << 32) | sum(range(7))


def test_callback_faults_cross_the_helper() -> None:
    insns = _callback_program()
    insns[12] = Insn(isa.LDX | isa.MEM | isa.DW, 3, 0, 0, 0)  # the callback reads *(u64 *)0
    outcome = run_both(insns, helpers={181: _bpf_loop})
    assert outcome[1] == "MemoryFault"
    assert outcome[2].startswith("insn 12: invalid memory access: read of 8 bytes at 0x0")


def test_runaway_callback_hits_the_shared_instruction_limit() -> None:
    def forever(runtime: Runtime, _c: int, fn: int, ctx: int, *_a: int) -> int:
        while True:
            runtime.call_function(fn, 0, ctx)

    outcome = run_both(_callback_program(), helpers={181: forever}, insn_limit=5000)
    assert outcome[1] == "InstructionLimitExceeded"


def test_recursive_callbacks_stop_at_the_frame_limit() -> None:
    def recurse(runtime: Runtime, _c: int, fn: int, *_a: int) -> int:
        return runtime.call_function(fn, 0, 0)

    # main passes helper 181 a callback that passes helper 181 itself again, until frames run out
    insns = [
        *isa.lddw_pair(2, 0, isa.PSEUDO_FUNC), Insn(isa.OP_CALL, imm=181), Insn(isa.OP_EXIT),
        *isa.lddw_pair(2, 0, isa.PSEUDO_FUNC), Insn(isa.OP_CALL, imm=181), Insn(isa.OP_EXIT),
    ]
    insns[0] = insns[0].with_(imm=4 - 1)
    insns[4] = insns[4].with_(imm=-1)  # the callback at slot 4 points at itself
    outcome = run_both(insns, helpers={181: recurse})
    assert outcome[1] == "CallDepthExceeded"


# -- maps, function pointers, LD_ABS ---------------------------------------------------------------------------
class _ArrayMap:
    def __init__(self, memory: Memory, size: int):
        self.region = memory.add("map", size)

    def value_address(self, offset: int) -> int:
        return self.region.start + offset


def test_map_pointers_and_values_resolve_to_the_runtimes_values() -> None:
    spec = object()
    insns = [
        *isa.lddw_pair(1, 0, isa.PSEUDO_MAP_IDX), *isa.lddw_pair(2, 0, isa.PSEUDO_MAP_IDX_VALUE),
        Insn(isa.ST | isa.MEM | isa.DW, 2, 0, 0, 99), Insn(isa.LDX | isa.MEM | isa.DW, 0, 2, 0, 0),
        Insn(isa.ALU64 | isa.ADD | isa.X, 0, 1), Insn(isa.OP_EXIT),
    ]
    insns[3] = insns[3].with_(imm=16)  # value offset 16
    program = Program(insns, maps=[spec])

    def setup(runtime: Runtime) -> None:
        runtime.add_map(spec, _ArrayMap(runtime.memory, 64))

    outcome = run_both(program, setup=setup)
    assert outcome[0] == "ok" and outcome[1] > 99
    assert run_both(Program(insns))[1:] == ("LoadError", "lddw references map #0, but the program has 0 maps")


def test_btf_variable_load_is_a_run_time_fault() -> None:
    insns = [Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, 1), Insn(isa.JMP | isa.JEQ | isa.K, 0, 0, 2, 1),
             *isa.lddw_pair(0, 0, isa.PSEUDO_BTF_ID), Insn(isa.OP_EXIT)]
    insns[2] = insns[2].with_(imm=1234)
    assert run_both(insns) == ("ok", 1)
    insns[1] = insns[1].with_(imm=2)
    assert run_both(insns)[1:] == ("VMFault", "insn 2: lddw of kernel variable btf_id 1234 is not supported")


def test_ld_abs_and_ld_ind_go_through_the_runtime_callback() -> None:
    calls = []

    def ld_abs(ctx: int, offset: int, size: int, pc: int) -> int:
        calls.append((ctx, offset, size, pc))
        if offset == 1000:
            raise ProgramExit(7)
        return offset * 2 + size

    def setup(runtime: Runtime) -> None:
        runtime.ld_abs_fn = ld_abs

    insns = [Insn(isa.ALU64 | isa.MOV | isa.K, 6, 0, 0, 55), Insn(isa.ALU64 | isa.MOV | isa.K, 7, 0, 0, 3),
             Insn(isa.LD | isa.ABS | isa.H, 0, 0, 0, 12), Insn(isa.ALU64 | isa.MOV | isa.X, 8, 0),
             Insn(isa.LD | isa.IND | isa.W, 0, 7, 0, -1), Insn(isa.ALU64 | isa.ADD | isa.X, 0, 8),
             Insn(isa.OP_EXIT)]
    assert run_both(insns, setup=setup) == ("ok", (12 * 2 + 2) + (2 * 2 + 4))
    assert calls == [(55, 12, 2, 2), (55, 2, 4, 4)] * 2
    insns[2] = insns[2].with_(imm=1000)
    assert run_both(insns, setup=setup) == ("ok", 7)
    assert run_both(insns)[1:] == (
        "VMFault", "insn 2: BPF_LD_ABS/BPF_LD_IND need a socket buffer, and this run has none")


# -- regions: hooks, read-only, table changes -----------------------------------------------------------------
class _CtxHook:
    """A context whose 4-byte field at offset 0 reads as a 64-bit pointer (like __sk_buff.data)."""

    def __init__(self) -> None:
        self.stores: list[tuple[int, int, int]] = []

    def load(self, offset: int, size: int, pc: int) -> int:
        if offset == 0 and size == 4:
            return 0x1122_3344_5566_7788
        if offset == 8:
            raise MemoryFault(f"invalid ctx access off={offset} size={size}", pc)
        return 0x80 + offset

    def store(self, offset: int, size: int, value: int, pc: int) -> None:
        self.stores.append((offset, size, value))


def test_hooked_context_loads_and_stores_take_the_slow_path() -> None:
    from bpfvm.memory import allocate

    hook = _CtxHook()
    memory = Memory()
    cdata = allocate(16)
    ctx = memory.add_cdata("ctx", cdata, 16, hook=hook)
    runtime = Runtime(memory)
    program = Program(assemble("ldxw %r0, [%r1]\nldxsb %r2, [%r1+4]\nadd %r0, %r2\nstw [%r1+12], 9\nexit"))
    results = []
    for engine in ("interp", "jit"):
        bound = get_engine(engine).prepare(program, verified=False).bind(runtime)
        results.append((_outcome(bound, (ctx.start,)), bound.steps))
    assert results[0] == results[1]
    assert results[0][0] == ("ok", (0x1122_3344_5566_7788 + (0x84 - 0x100)) & M64)
    assert hook.stores == [(12, 4, 9), (12, 4, 9)]
    program = Program(assemble("ldxdw %r0, [%r1+8]\nexit"))
    for engine in ("interp", "jit"):
        bound = get_engine(engine).prepare(program, verified=False).bind(runtime)
        with pytest.raises(MemoryFault, match="insn 0: invalid ctx access off=8 size=8"):
            bound(ctx.start)


def test_read_only_regions_refuse_writes_and_atomics_on_the_jit() -> None:
    memory = Memory()
    ro = memory.add("ro", 8, data=b"\x2a" + b"\0" * 7, writable=False)
    runtime = Runtime(memory)
    for text, pc in (("ldxb %r0, [%r1]\nstb [%r1], 1\nexit", 1), ("mov %r2, 1\nlock add [%r1], %r2\nexit", 1),
                     ("mov %r0, 0\nmov %r2, 1\nlock cmpxchg [%r1], %r2\nexit", 2)):
        bound = JitEngine().prepare(Program(assemble(text))).bind(runtime)
        with pytest.raises(MemoryFault, match=f"insn {pc}: .*read-only region ro"):
            bound(ro.start)
    assert ro.read() == b"\x2a" + b"\0" * 7


def test_site_cache_never_outlives_a_removed_region() -> None:
    memory = Memory()
    keep = memory.add("a", 64)
    gone = memory.add("b", 64, data=b"\x07" * 64)
    runtime = Runtime(memory)
    bound = JitEngine().prepare(Program(assemble("ldxdw %r0, [%r1+8]\nexit"))).bind(runtime)
    assert bound(gone.start) == 0x0707070707070707
    memory.remove(gone)
    with pytest.raises(MemoryFault, match="insn 0: invalid memory access: read of 8 bytes"):
        bound(gone.start)
    assert bound(keep.start) == 0


def test_regions_added_during_a_run_are_visible_and_many_regions_work() -> None:
    memory = Memory()
    runtime = Runtime(memory)
    extra: list = []

    def grow(rt: Runtime, *_a: int) -> int:
        for k in range(40):  # past the table's initial capacity of 16: the table is reallocated
            extra.append(rt.memory.add(f"r{k}", 16, data=bytes([k]) * 16))
        return extra[-1].start

    bound = JitEngine().prepare(Program(assemble("call 77\nldxb %r0, [%r0+15]\nexit"))).bind(
        Runtime(memory, helpers={77: grow}))
    assert bound() == 39
    del runtime


# -- native helpers ---------------------------------------------------------------------------------------------
def _native_double_helper() -> tuple[Any, int, Any]:
    """A native helper built with LLVM: fails (fault word 1) when r1 == 13, else returns r1 * 2 + *env."""
    import llvmlite.binding as llvm
    from cffi import FFI

    jit_engine._init_llvm()
    module = llvm.parse_assembly("""
        define i64 @double(ptr %env, i64 %r1, i64 %r2, i64 %r3, i64 %r4, i64 %r5) {
          %bad = icmp eq i64 %r1, 13
          br i1 %bad, label %fail, label %ok
        fail:
          %f = getelementptr i64, ptr %env, i64 1
          store i32 1, ptr %f
          ret i64 0
        ok:
          %k = load i64, ptr %env
          %d = mul i64 %r1, 2
          %r = add i64 %d, %k
          ret i64 %r
        }""")
    engine = llvm.create_mcjit_compiler(module, jit_engine._target_machine(2))
    engine.finalize_object()
    ffi = FFI()
    env = ffi.new("uint64_t[2]", [1000, 0])
    return engine, engine.get_function_address("double"), (ffi, env)


def test_native_helpers_are_called_directly_with_their_fault_protocol() -> None:
    engine, address, (ffi, env) = _native_double_helper()
    env_addr = int(ffi.cast("uintptr_t", env))
    calls = []

    def helper(_rt: Runtime, r1: int, *_a: int) -> int:
        calls.append(r1)
        if r1 == 13:
            raise HelperError("thirteen", None)
        return r1 * 2 + env[0]

    helper.native = NativeHelper(address, env_addr, env_addr + 8, lambda pc: HelperError("thirteen", pc))
    memory = Memory()
    runtime = Runtime(memory, helpers={50: helper})
    program = Program(assemble("call 50\nexit"))
    bound = JitEngine().prepare(program).bind(runtime)
    assert bound(21) == 1042
    assert calls == []  # no Python on the path
    with pytest.raises(HelperError, match="insn 0: thirteen"):
        bound(13)
    assert Interpreter(program).bind(runtime)(21) == 1042
    del engine


# -- run_repeat, call_pointer ---------------------------------------------------------------------------------
def test_run_repeat_runs_natively_and_reports_time() -> None:
    memory = Memory()
    counter = memory.add("c", 8)
    text = "ldxdw %r0, [%r1]\nadd %r0, 1\nstxdw [%r1], %r0\nexit"
    bound = JitEngine().prepare(Program(assemble(text))).bind(Runtime(memory))
    r0, elapsed = bound.run_repeat(counter.start, 1000)
    assert r0 == 1000 and int.from_bytes(counter.read(), "little") == 1000
    assert elapsed > 0 and bound.steps == 4
    with pytest.raises(BpfvmError, match="repeat must be at least 1"):
        bound.run_repeat(counter.start, 0)


def test_run_repeat_handles_program_exit_and_raises_faults() -> None:
    runs = []

    def sometimes_exit(_rt: Runtime, r1: int, *_a: int) -> int:
        runs.append(r1)
        if len(runs) % 3 == 0:
            raise ProgramExit(100 + len(runs))
        return 1

    bound = JitEngine().prepare(Program(assemble("call 77\nexit"))).bind(
        Runtime(Memory(), helpers={77: sometimes_exit}))
    r0, _ = bound.run_repeat(5, 9)
    assert len(runs) == 9 and r0 == 109  # runs 3, 6 and 9 ended through ProgramExit; the loop went on
    assert bound.repeat_done == 9
    faulty = JitEngine().prepare(Program(assemble("ldxdw %r0, [%r1]\nexit"))).bind(Runtime(Memory()))
    with pytest.raises(MemoryFault, match="insn 0"):
        faulty.run_repeat(0, 5)
    assert faulty.repeat_done == 0

    def tail_on_fourth(_rt: Runtime, *_a: int) -> int:
        runs.append(0)
        if len(runs) == 4:
            raise TailCall("next")
        return 0

    runs.clear()
    tailing = JitEngine().prepare(Program(assemble("call 78\nexit"))).bind(
        Runtime(Memory(), helpers={78: tail_on_fourth}))
    with pytest.raises(TailCall):
        tailing.run_repeat(0, 10)
    assert tailing.repeat_done == 3  # the driver performs the tail call, then goes on with the rest


def test_call_pointer_validates_like_the_interpreter() -> None:
    insns = [Insn(isa.OP_EXIT), Insn(isa.ALU64 | isa.MOV | isa.X, 0, 1), Insn(isa.OP_EXIT)]
    program = Program(insns, funcs=[FuncInfo(1, "f")])  # a second subprogram at slot 1
    runtime = Runtime(Memory())
    for bound in (Interpreter(program).bind(runtime), JitEngine().prepare(program).bind(runtime)):
        bound()
        assert bound.call_pointer(FUNC_PTR_BASE + 8, (33,), runtime.stack.end, 0, -1) == 33
        with pytest.raises(VMFault, match="which is not a function of this program"):
            bound.call_pointer(FUNC_PTR_BASE + 16, (), runtime.stack.end, 0, -1)
        with pytest.raises(CallDepthExceeded):
            bound.call_pointer(FUNC_PTR_BASE + 8, (), runtime.stack.end, 7, -1)


# -- memory safety: faults, never crashes (in a subprocess, where a crash cannot take pytest down) -----------
SAFETY_SCRIPT = r'''
import json, sys
from bpfvm.engines import InterpreterEngine
from bpfvm.errors import BpfvmError
from bpfvm.interp import Interpreter, Runtime
from bpfvm.memory import Memory
from bpfvm.program import Program
from bpfvm.ubpf_asm import assemble
from jit.engine import JitEngine

memory = Memory()
ro = memory.add("ro", 16, data=bytes(range(16)), writable=False)
mem = memory.add("mem", 32, data=bytes(range(32)))
runtime = Runtime(memory)
stack = runtime.stack
OPS = {
    "load": "ldx{s} %r0, [%r1]\nexit",
    "loadsx": "ldxs{s} %r0, [%r1]\nexit",
    "store": "mov %r2, -1\nstx{s} [%r1], %r2\nexit",
    "storeimm": "st{s} [%r1], 7\nexit",
    "atomic": "mov %r2, 3\nlock add{a} [%r1], %r2\nexit",
    "fetch": "mov %r2, 3\nlock fetch xor{a} [%r1], %r2\nmov %r0, %r2\nexit",
    "cmpxchg": "mov %r0, 0\nmov %r2, 3\nlock cmpxchg{a} [%r1], %r2\nexit",
}
SIZES = {"b": 1, "h": 2, "w": 4, "dw": 8}
bound = {}
for op, text in OPS.items():
    for s, n in SIZES.items():
        if op == "loadsx" and n == 8 or op in ("atomic", "fetch", "cmpxchg") and n < 4:
            continue
        program = Program(assemble(text.format(s=s, a="32" if n == 4 else "")))
        bound[op, n] = (Interpreter(program).bind(runtime), JitEngine().prepare(program).bind(runtime))

def addresses(n):
    yield "mem.start", mem.start
    yield "mem.end-n", mem.end - n
    yield "mem.start+3", mem.start + 3
    yield "mem.end", mem.end
    yield "mem.end-n+1", mem.end - n + 1
    yield "mem.start-1", mem.start - 1
    yield "mem.start-n", mem.start - n
    yield "ro.start", ro.start
    yield "ro.end-1", ro.end - 1
    yield "stack.end", stack.end
    yield "stack.start-1", stack.start - 1
    yield "stack.end-n+1", stack.end - n + 1
    yield "zero", 0
    yield "one", 1
    yield "minus1", (1 << 64) - 1
    yield "minus-n", (1 << 64) - n
    yield "page", 0x1000
    yield "far", mem.start + (1 << 32)
    yield "high", 1 << 63
    yield "kernel", 0xFFFF_8880_0000_0000

results = []
for (op, n), pair in bound.items():
    for name, addr in addresses(n):
        mem.write(0, bytes(range(32)))
        out = []
        for b in pair:
            mem.write(0, bytes(range(32)))
            try:
                out.append(["ok", b(addr), mem.read().hex()])
            except BpfvmError as exc:
                out.append([type(exc).__name__, str(exc), mem.read().hex()])
        results.append([op, n, name, out[0], out[1]])

# a program that moves r10 is refused before it runs, by both engines (the kernel: frame pointer is read only)
moved = Program(assemble("mov %r10, %r1\nldxdw %r0, [%r10-8]\nstdw [%r10-16], 1\nexit"))
for engine in (JitEngine(), InterpreterEngine()):
    try:
        engine.prepare(moved, verified=False)
        results.append(["moved-r10", 8, type(engine).__name__, ["accepted"], None])
    except BpfvmError as exc:
        results.append(["moved-r10", 8, type(engine).__name__, [type(exc).__name__, str(exc)], None])
print(json.dumps(results))
'''


def test_out_of_region_accesses_fault_exactly_like_the_interpreter_and_never_crash() -> None:
    done = subprocess.run([sys.executable, "-c", SAFETY_SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "BPFVM_JIT_DISK_CACHE": "0"}, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    results = json.loads(done.stdout)
    inside = {"mem.start", "mem.end-n", "mem.start+3"}
    outside = {"zero", "one", "minus1", "minus-n", "page", "far", "high", "kernel", "mem.end", "mem.start-1",
               "mem.start-n", "stack.end", "stack.start-1", "stack.end-n+1"}
    faults = 0
    for op, size, where, interp, jit in results:
        if op == "moved-r10":
            continue
        assert jit == interp, (op, size, where)
        faults += interp[0] == "MemoryFault"
        if where in inside:
            assert interp[0] == "ok", (op, size, where, interp)
        if where in outside or (where == "mem.end-n+1" and size > 1):
            assert interp[0] == "MemoryFault", (op, size, where, interp)
            assert interp[1].startswith("insn "), interp
    assert faults > 300
    # a program that writes r10 is refused at load by both engines, with the kernel's words
    moved = {engine: outcome for op, _, engine, outcome, _ in results if op == "moved-r10"}
    assert moved == {name: ["LoadError", "insn 0: frame pointer is read only"]
                     for name in ("JitEngine", "InterpreterEngine")}


# -- random programs: the JIT and the interpreter agree on everything -----------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_REGS = st.integers(0, 9)
_IMMS = st.one_of(st.sampled_from([0, 1, -1, 2, 7, 31, 32, 33, 63, 64, -(1 << 31), (1 << 31) - 1, 0x80, 0xFFFF]),
                  st.integers(-(1 << 31), (1 << 31) - 1))
_ALU_OPS = [isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.NEG, isa.MOD, isa.XOR,
            isa.MOV, isa.ARSH, isa.END]
_JMP_OPS = [isa.JEQ, isa.JGT, isa.JGE, isa.JSET, isa.JNE, isa.JSGT, isa.JSGE, isa.JLT, isa.JLE, isa.JSLT, isa.JSLE]


@st.composite
def _alu(draw) -> Insn:
    op, cls = draw(st.sampled_from(_ALU_OPS)), draw(st.sampled_from([isa.ALU, isa.ALU64]))
    dst, src, imm, x = draw(_REGS), draw(_REGS), draw(_IMMS), draw(st.booleans())
    if op == isa.END:
        order = draw(st.sampled_from([isa.TO_LE, isa.TO_BE])) if cls == isa.ALU else 0
        return Insn(cls | op | order, dst, 0, 0, draw(st.sampled_from([16, 32, 64])))
    if op == isa.NEG:
        return Insn(cls | op, dst)
    off = 0
    if op in (isa.DIV, isa.MOD):
        off = draw(st.sampled_from([0, 1]))
    elif op == isa.MOV and x:
        off = draw(st.sampled_from([0, 8, 16, 32] if cls == isa.ALU64 else [0, 8, 16]))
    return Insn(cls | op | isa.X, dst, src, off) if x else Insn(cls | op, dst, 0, off, imm)


@st.composite
def _jump(draw) -> Insn:
    op, cls, x = draw(st.sampled_from(_JMP_OPS)), draw(st.sampled_from([isa.JMP, isa.JMP32])), draw(st.booleans())
    off = draw(st.integers(-6, 6))
    if draw(st.integers(0, 9)) == 0:
        return Insn(isa.OP_MAY_GOTO, off=off)
    if x:
        return Insn(cls | op | isa.X, draw(_REGS), draw(_REGS), off)
    return Insn(cls | op, draw(_REGS), 0, off, draw(_IMMS))


@st.composite
def _memory(draw) -> Insn:
    size = draw(st.sampled_from([isa.B, isa.H, isa.W, isa.DW]))
    base = draw(st.sampled_from([1, 10, 10, 6]))
    off = draw(st.sampled_from([-520, -512, -16, -8, -4, -1, 0, 4, 8, 12, 28, 30, 31, 32]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        mode = isa.MEMSX if size != isa.DW and draw(st.booleans()) else isa.MEM
        return Insn(isa.LDX | size | mode, draw(_REGS), base, off)
    if kind == 1:
        return Insn(isa.STX | size | isa.MEM, base, draw(_REGS), off)
    if kind == 2:
        return Insn(isa.ST | size | isa.MEM, base, 0, off, draw(_IMMS))
    op = draw(st.sampled_from(sorted(isa.ATOMIC_OPS - {isa.ATOMIC_LOAD_ACQ, isa.ATOMIC_STORE_REL})))
    return Insn(isa.STX | draw(st.sampled_from([isa.W, isa.DW])) | isa.ATOMIC, base, draw(_REGS), off, op)


@st.composite
def _program(draw) -> list[Insn]:
    insns: list[Insn] = []
    for r in (0, 2, 3, 4, 5, 7, 8, 9):
        insns += isa.lddw_pair(r, draw(st.integers(0, (1 << 64) - 1)))
    insns.append(Insn(isa.ALU64 | isa.MOV | isa.X, 6, 1))  # r6 = r1 (the buffer) as a second base
    body = draw(st.lists(st.one_of(_alu(), _alu(), _jump(), _memory()), min_size=1, max_size=30))
    start = len(insns)
    for k, insn in enumerate(body):
        if insn.cls in (isa.JMP, isa.JMP32):  # keep jump targets inside the body or on the final exit
            target = min(max(start + k + 1 + insn.off, start), start + len(body))
            insn = insn.with_(off=target - (start + k + 1))
        insns.append(insn)
    return insns + [Insn(isa.OP_EXIT)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_program(), st.binary(min_size=32, max_size=32))
def test_random_programs_agree_with_the_interpreter(insns: list[Insn], mem: bytes) -> None:
    isa.validate_program(insns)
    run_both(insns, mem, insn_limit=20_000)


# -- compiled-code caches -----------------------------------------------------------------------------------
def test_memory_and_disk_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPFVM_JIT_DISK_CACHE", "1")
    monkeypatch.setenv("BPFVM_CACHE", str(tmp_path))
    monkeypatch.setattr(jit_engine, "_memory_cache", type(jit_engine._memory_cache)())
    program = Program(assemble("mov %r0, 123\nexit"))
    first = JitEngine().prepare(program)
    assert first.code.source == "compiled"
    files = list((tmp_path / "jit").glob("*.o"))
    assert len(files) == 1
    assert JitEngine().prepare(Program(assemble("mov %r0, 123\nexit"))).code.source == "memory"
    assert JitEngine(opt_level=3).prepare(program).code.source == "compiled"  # options are part of the key
    jit_engine._memory_cache.clear()
    again = JitEngine().prepare(program)
    assert again.code.source == "disk" and again.bind(Runtime(Memory()))() == 123
    jit_engine._memory_cache.clear()
    files[0].write_bytes(files[0].read_bytes()[:-10])  # a truncated file is ignored and replaced
    rebuilt = JitEngine().prepare(program)
    assert rebuilt.code.source == "compiled" and rebuilt.bind(Runtime(Memory()))() == 123
    other = JitEngine().prepare(Program(assemble("mov %r0, 124\nexit")))
    assert other.code.source == "compiled" and other.bind(Runtime(Memory()))() == 124


def test_bad_options_and_programs_are_one_line_errors() -> None:
    with pytest.raises(BpfvmError, match="optimisation level"):
        JitEngine(opt_level=7)
    with pytest.raises(LoadError, match="program has no instructions"):
        JitEngine().prepare(Program([]))
    with pytest.raises(LoadError, match="insn 0: jump out of range to insn 7"):
        JitEngine().prepare(Program([Insn(isa.OP_JA, off=6), Insn(isa.OP_EXIT)]))
    with pytest.raises(LoadError, match="invalid helper id"):
        JitEngine().prepare(Program([Insn(isa.OP_CALL, imm=-3), Insn(isa.OP_EXIT)]))


def test_proved_safe_accesses_skip_the_guard() -> None:
    memory = Memory()
    buf = memory.add("buf", 16, data=b"\x05" + b"\0" * 15)
    program = Program(assemble("ldxb %r0, [%r1]\nexit"))
    program.aux[0] = {"proved_safe": True}
    bound = JitEngine().prepare(program).bind(Runtime(memory))
    assert bound(buf.start) == 5
    assert jit_engine.emit_ir(program, jit_engine.analyse(program)).count("call i64 @bpfvm_ld_slow(") == 0
    program.aux.clear()
    assert jit_engine.emit_ir(program, jit_engine.analyse(program)).count("call i64 @bpfvm_ld_slow(") == 1


# -- the built-in helpers of helpers.registry, called natively ------------------------------------------------
def test_builtin_plain_helpers_are_called_natively_with_identical_results() -> None:
    registry = pytest.importorskip("helpers.registry")
    from helpers.maps import create_map
    from bpfvm.program import MapSpec

    spec = MapSpec("hash", 1, 4, 8, 16)
    text = """
        mov %r6, 0
    loop:
        stxw [%r10-4], %r6
        call 7
        stxdw [%r10-16], %r0
        lddw %r1, 0
        mov %r2, %r10
        add %r2, -4
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 2
        add %r6, 1
        jlt %r6, 40, loop
        stw [%r10-4], 3
        lddw %r1, 0
        mov %r2, %r10
        add %r2, -4
        call 1
        ldxdw %r0, [%r0]
        exit
    """
    insns = [x.with_(src=isa.PSEUDO_MAP_IDX) if x.opcode == isa.OP_LDDW else x for x in assemble(text)]
    program = Program(insns, maps=[spec])
    results = []
    for engine in ("interp", "jit"):
        memory = Memory()
        runtime = Runtime(memory)
        runtime.add_map(spec, create_map(spec, memory))
        registry.attach(runtime, options={"seed": 7})
        bound = get_engine(engine).prepare(program, verified=False).bind(runtime)
        results.append((bound(), bound.steps, sorted(runtime.maps[0].items())))
        if engine == "jit":
            assert bound.native_calls == [("helper", 1), ("helper", 2), ("helper", 7)]
    assert results[0] == results[1]
    # a native helper's fault becomes the registry's exception, as on the interpreter
    bad = Program([*isa.lddw_pair(1, 0, isa.PSEUDO_MAP_IDX), Insn(isa.ALU64 | isa.MOV | isa.K, 2, 0, 0, 16),
                   Insn(isa.OP_CALL, imm=1), Insn(isa.OP_EXIT)], maps=[spec])
    errors = []
    for engine in ("interp", "jit"):
        memory = Memory()
        runtime = Runtime(memory)
        runtime.add_map(spec, create_map(spec, memory))
        registry.attach(runtime)
        bound = get_engine(engine).prepare(bad, verified=False).bind(runtime)
        with pytest.raises(BpfvmError) as info:
            bound()
        errors.append((type(info.value).__name__, str(info.value)))
    assert errors[0] == errors[1] and errors[0][0] == "MemoryFault"


@pytest.mark.parametrize("offset, size", [(-8, 8), (-512, 8), (-513, 8), (-4, 8), (0, 1), (-1, 2), (-520, 16)])
@pytest.mark.parametrize("write", [False, True])
def test_frame_window_guard_agrees_with_the_interpreter_at_its_edges(offset: int, size: int, write: bool) -> None:
    """Accesses through a copy of r10 take the guard's frame-window fast path when inside [r10-512, r10); at and
    past its edges (the top of the stack, the frame below) they must fault or succeed exactly as the
    interpreter does, never touching memory outside the stack."""
    width = {1: "b", 2: "h", 8: "dw", 16: "dw"}[size]
    access = (f"stx{width} [%r1{offset:+d}], %r2" if write else f"ldx{width} %r0, [%r1{offset:+d}]")
    text = f"""
        mov %r1, %r10
        mov %r2, 7
        mov %r0, 0
        {access}
        exit
    """
    outcome = run_both(text)
    if offset + size > 0:
        assert outcome[0] == "error" and outcome[1] == "MemoryFault"


def test_pointer_reloaded_from_a_spill_slot_is_checked_not_trusted() -> None:
    """A spilled frame pointer overwritten through another pointer before its reload: the reloaded value
    points outside the stack, and the access through it faults on both engines."""
    text = """
        mov %r1, %r10
        add %r1, -16
        stxdw [%r10-8], %r1
        mov %r3, %r10
        add %r3, -8
        lddw %r4, 0x1000
        stxdw [%r3], %r4
        ldxdw %r5, [%r10-8]
        ldxdw %r0, [%r5]
        exit
    """
    outcome = run_both(text)
    assert outcome[0] == "error" and outcome[1] == "MemoryFault"


def test_huge_subprograms_compile_in_the_cheap_tier_with_the_same_results() -> None:
    """Past LARGE_FUNCTION_SLOTS one subprogram is compiled at O1 with fast code generation (compile time per
    slot stays flat); its results, steps and memory must still be the interpreter's."""
    from jit.lower import analyse

    body = []
    for k in range(jit_engine.LARGE_FUNCTION_SLOTS // 3 + 10):
        body += [f"add %r0, {k % 7 + 1}", f"stxdw [%r10-{8 * (k % 8 + 1)}], %r0", f"ldxdw %r2, [%r10-{8 * (k % 5 + 1)}]"]
    text = "mov %r0, 0\n" + "\n".join(body) + "\nadd %r0, %r2\nexit"
    program = Program(assemble(text))
    assert jit_engine.effective_levels(analyse(program), 2) == (1, 0)
    assert jit_engine.effective_levels(analyse(Program(assemble("mov %r0, 1\nexit"))), 2) == (2, 2)
    run_both(program)
