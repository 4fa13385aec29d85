"""Run one malformed input through what a user would run it through (loader, verifier, interpreter;
assemblers; decoder) and classify what happened. The rule: bad input ends in a one-line `BpfvmError`, never
another exception, and within a time bound (`time_limit`, enforced on CPU time with SIGVTALRM in this process; a hang in
native code is caught by the campaign's watchdog, which kills the worker)."""

from __future__ import annotations

import signal
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import BpfvmError
from .malformed import Malformed

INSN_LIMIT = 200_000
PACKET = bytes(range(64))


class CaseTimeout(BaseException):
    """The case ran past its time bound (a BaseException, so no `except Exception` in bpfvm swallows it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout after `seconds` of this process's CPU time (CPU, not wall-clock: on a shared machine
    a case must not time out because others are busy)."""
    def expire(_signum: int, _frame: object) -> None:
        raise CaseTimeout(f"no result after {seconds:g}s of CPU time")

    old = signal.signal(signal.SIGVTALRM, expire)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


@dataclass
class RobustOutcome:
    """refused / accepted: fine. internal: a one-line error that admits an unexpected internal exception.
    multiline: an error message of several lines. traceback: an exception that is not a BpfvmError.
    timeout: no answer within the bound. mismatch: a random program the verifier accepted ran differently
    verified and unverified."""

    status: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("traceback", "timeout", "mismatch")


# CPU seconds a malformed input may take: enough for the verifier to reach its own bound (the kernel's 1M
# processed instructions, ~25 s of Python here) and still refuse in one line
MALFORMED_SECONDS = 60.0


def run_malformed(m: Malformed, *, seconds: float = MALFORMED_SECONDS) -> RobustOutcome:
    try:
        with time_limit(seconds):
            return _run(m)
    except CaseTimeout as exc:
        return RobustOutcome("timeout", str(exc))
    except BpfvmError as exc:
        text = str(exc)
        if len(text.strip().splitlines()) > 1:
            return RobustOutcome("multiline", text[:2000])
        if "internal " in text:
            return RobustOutcome("internal", text)
        return RobustOutcome("refused", text)
    except Exception as exc:  # noqa: BLE001 - exactly what this fuzzer looks for
        return RobustOutcome("traceback", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-10)}")


def _run(m: Malformed) -> RobustOutcome:
    if m.kind in ("elf", "btf", "huge"):
        from ..elf import load_object

        obj = load_object(m.data)
        for program in list(obj.programs.values())[:3]:
            _exercise(program, obj)
        return RobustOutcome("accepted", f"{len(obj.programs)} programs")
    if m.kind == "asm":
        from ..asm import assemble

        program = assemble(m.data.decode("utf-8", "replace"))
        program.prog_type = "socket_filter"
        _exercise(program, None, maps_ok=False)
        return RobustOutcome("accepted", f"{len(program)} insns")
    if m.kind == "ubpf":
        from .. import ubpf_asm

        insns = ubpf_asm.assemble(m.data.decode("utf-8", "replace"))
        return RobustOutcome("accepted", f"{len(insns)} insns")
    from .. import isa
    from ..program import Program

    program = Program(isa.decode(m.data), prog_type=m.prog_type)
    result = _exercise(program, None, maps_ok=False)
    return result or RobustOutcome("accepted", f"{len(program)} insns")


def _exercise(program, objfile, *, maps_ok: bool = True) -> RobustOutcome | None:
    """Verify the program; run it unverified on the interpreter (which checks every access) and, if the
    verifier accepted it, verified too: the two runs must agree."""
    from .compare import compare
    from .inputs import RunCase
    from .observe import BpfvmTarget, ObjectSource, Rejected
    from .spec import Spec

    if program.maps and not maps_ok:
        return None
    if objfile is None:
        from ..elf import ObjectFile

        objfile = ObjectFile(programs={program.name: program}, maps=list(program.maps))
    source = ObjectSource(objfile=objfile)
    options = {"seed": 1, "ktime": 0, "insn_limit": INSN_LIMIT}
    case = RunCase(PACKET if program.prog_type in ("socket_filter", "sched_cls", "xdp") else None,
                   ctx=bytes(96) if program.prog_type == "raw_tracepoint" else None)
    raw = BpfvmTarget(source, program.name, Spec("interp", "raw"), options)
    verified = BpfvmTarget(source, program.name, Spec("interp", "none"), options)
    try:
        verified.check()
    except Rejected:
        try:
            raw.run(case)
        except Rejected:
            pass
        return None
    a, b = raw.run(case), verified.run(case)
    diffs = compare(a, b)
    if diffs and not (a.error == "InstructionLimitExceeded" or b.error == "InstructionLimitExceeded"):
        return RobustOutcome("mismatch", f"verified program differs unverified/verified in "
                                         f"{', '.join(d.field for d in diffs)}: {diffs[0]}")
    return None
