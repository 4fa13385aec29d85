"""BPF_PROG_TEST_RUN in userspace: context in, program run `repeat` times, return value, packet and context out.

As in the kernel, the same context serves every repeat (packet writes persist), the duration is the average
per run measured around the whole loop, and the return value is reported as the kernel's 32-bit `retval`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .errors import BpfvmError, VMFault
from .interp import MAX_TAIL_CALLS, Runtime, TailCall
from .progtypes import RunInput, get_prog_type
from .program import Program


@dataclass
class RunResult:
    """What a test run returns. `retval` is r0 truncated to 32 bits, as the kernel reports it."""

    retval: int
    r0: int
    data_out: bytes
    ctx_out: bytes
    duration_ns: float
    repeat: int
    insns: int = 0
    tail_calls: int = 0
    output: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "retval": self.retval, "r0": self.r0, "duration_ns": self.duration_ns, "repeat": self.repeat,
            "insns": self.insns, "tail_calls": self.tail_calls,
            "data_out": self.data_out.hex(), "ctx_out": self.ctx_out.hex(), "output": list(self.output),
        }


RunnableFor = Callable[[Program], Any]


def test_run(
    program: Program,
    runtime: Runtime,
    runnable_for: RunnableFor,
    run_input: RunInput,
    *,
    repeat: int = 1,
) -> RunResult:
    """Run `program` like BPF_PROG_TEST_RUN. `runnable_for(p)` gives p bound to `runtime` (tail-call targets too)."""
    if repeat < 1:
        raise BpfvmError(f"repeat must be at least 1, not {repeat}")
    prog_type = get_prog_type(program.prog_type)
    if repeat > 1 and not prog_type.supports_repeat:
        raise BpfvmError(f"{prog_type.name} programs run once per test run (the kernel refuses repeat)")
    runnable = runnable_for(program)  # verification and compile errors come before input errors
    # a program whose context accesses were converted (every verified one) gets the model in r1
    if not run_input.ctx_converted and getattr(getattr(runnable, "program", None), "ctx_converted", False):
        run_input = replace(run_input, ctx_converted=True)
    context = prog_type.make_context(runtime.memory, runtime, run_input)
    try:
        first_output = len(runtime.output)
        r0, tail_calls, insns, elapsed = _run_repeat(runtime, runnable, runnable_for, context.address, repeat)
        data_out, ctx_out = context.finish()
    finally:
        context.release()
    return RunResult(
        retval=r0 & 0xFFFFFFFF, r0=r0, data_out=data_out, ctx_out=ctx_out, duration_ns=elapsed / repeat,
        repeat=repeat, insns=insns, tail_calls=tail_calls, output=runtime.output[first_output:],
    )


def _run_repeat(runtime: Runtime, runnable: Any, runnable_for: RunnableFor, ctx: int,
                repeat: int) -> tuple[int, int, int, float]:
    """`repeat` runs timed around the whole loop, in native code when the engine has a native loop (the JIT).
    Returns r0, tail calls and instructions of the last run, and the elapsed nanoseconds."""
    clock = time.perf_counter_ns
    native_loop = getattr(runnable, "run_repeat", None)
    r0 = tail_calls = insns = 0
    elapsed = 0
    done = 0
    while done < repeat:
        start = clock()
        if native_loop is not None:
            runtime.tail_calls = 0
            try:
                r0, ns = native_loop(ctx, repeat - done)
                return r0, 0, runnable.steps, elapsed + ns
            except TailCall as jump:
                # runs before this one finished natively; finish this one by following its tail calls
                done += runnable.repeat_done
                r0, tail_calls, insns = _follow(runtime, runnable_for, ctx, jump, runnable.steps)
        else:
            r0, tail_calls, insns = _run_once(runtime, runnable, runnable_for, ctx)
        elapsed += clock() - start
        done += 1
    return r0, tail_calls, insns, elapsed


def _run_once(runtime: Runtime, runnable: Any, runnable_for: RunnableFor, ctx: int) -> tuple[int, int, int]:
    """One program run, following tail calls (at most 33, after which bpf_tail_call fails as in the kernel)."""
    runtime.tail_calls = 0
    try:
        r0 = runnable(ctx)
        return r0, 0, runnable.steps
    except TailCall as jump:
        return _follow(runtime, runnable_for, ctx, jump, runnable.steps)


def _follow(runtime: Runtime, runnable_for: RunnableFor, ctx: int, jump: TailCall, insns: int) -> tuple[int, int, int]:
    """Run tail-call targets until one returns."""
    tail_calls = 0
    while True:
        # bpf_tail_call leaves the kernel's count before this jump (attempts included) in runtime.tail_calls
        tail_calls = runtime.tail_calls = runtime.tail_calls + 1
        if tail_calls > MAX_TAIL_CALLS:  # the helper checks the limit; this guards a broken helper
            raise VMFault(f"more than {MAX_TAIL_CALLS} tail calls")
        current = runnable_for(jump.target)
        try:
            r0 = current(ctx)
            return r0, tail_calls, insns + current.steps
        except TailCall as next_jump:
            insns += current.steps
            jump = next_jump
