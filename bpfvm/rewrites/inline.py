"""Inlining of inlinable kfunc calls (RFC patches 03 and 07).

`instantiate` runs before verification: for every call of an inlinable kfunc it appends a copy of the body as
a hidden subprogram (an *instance*) for the verifier to visit in a distilled context, so that each instance's
branches are judged with that call site's arguments. `inline_calls` runs after verification and the dead-code
passes: it copies a body over its call site (the pruned instance, or the library body when nothing was
pruned), with the callee-saved registers the body writes spilled and filled around it below the caller's
stack, r10-relative offsets shifted by the caller's stack depth, and `exit` turned into a jump to the end.
A body whose r10 escapes (stored, or used as an ALU source) cannot move into another frame and stays a call.
`remove_instances` drops the instance subprograms once their bodies are in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import isa
from ..interp import FRAME_SIZE
from ..isa import Insn
from ..kfunclib import KfuncLibrary, scan_regs_usage
from ..patcher import Edit, remove_runs, replace_many
from ..program import FuncInfo, LineInfo, Program

INSTANCE_KEY = "kfunc_instance_name"  # aux of a call slot: the name of its instance subprogram
INSTANCE_MARK = "@instance"


@dataclass(frozen=True)
class InlineDecision:
    """What happened at one call site, for `--log-level 2` and tests."""

    slot: int
    kfunc: str
    inlined: bool
    reason: str = ""

    def message(self) -> str:
        if self.inlined:
            return f"inlining kfunc {self.kfunc} at insn {self.slot}"
        return f"can't inline kfunc {self.kfunc} at insn {self.slot}, {self.reason}"


def inlinable_call_sites(program: Program, library: KfuncLibrary) -> list[int]:
    """Slots of kfunc calls whose kfunc the library can inline."""
    return [
        i for i, insn in enumerate(program.insns)
        if insn.is_kfunc_call() and 0 <= insn.imm < len(program.kfuncs) and program.kfuncs[insn.imm] in library
        and not _is_second_slot(program.insns, i)
    ]


def _is_second_slot(insns: list[Insn], i: int) -> bool:
    return i > 0 and insns[i - 1].opcode == isa.OP_LDDW and insns[i].opcode == 0


def _kfunc_index(program: Program, name: str) -> int:
    if name not in program.kfuncs:
        program.kfuncs.append(name)
    return program.kfuncs.index(name)


def _body_for_program(program: Program, body: tuple[Insn, ...] | list[Insn], calls: tuple[str, ...]) -> list[Insn]:
    """The library body with its kernel-internal calls renumbered into the program's kfunc table."""
    out = []
    for insn in body:
        if insn.is_kfunc_call():
            insn = insn._replace(imm=_kfunc_index(program, calls[insn.imm]))
        out.append(insn)
    return out


def instantiate(program: Program, library: KfuncLibrary) -> dict[int, int]:
    """Append one instance per inlinable call site; returns {call slot: instance start} for the verifier."""
    instances: dict[int, int] = {}
    for k, slot in enumerate(inlinable_call_sites(program, library)):
        name = program.kfuncs[program.insns[slot].imm]
        kfunc = library[name]
        start = len(program.insns)
        instance = f"{name}{INSTANCE_MARK}{k}"
        program.insns.extend(_body_for_program(program, kfunc.insns, kfunc.calls))
        program.funcs.append(FuncInfo(start, instance))
        program.line_info.append(LineInfo(start, kfunc.library, 0, 0, f"inlinable kfunc {name}"))
        program.aux.setdefault(slot, {})[INSTANCE_KEY] = instance
        instances[slot] = start
    return instances


def instance_bounds(program: Program) -> dict[str, tuple[int, int]]:
    """Current [start, end) of every instance subprogram, by name (they move as rewrites edit the program)."""
    starts = program.subprog_starts()
    ends = dict(zip(starts, starts[1:] + [len(program.insns)]))
    return {f.name: (f.insn, ends[f.insn]) for f in program.funcs if INSTANCE_MARK in f.name and f.insn in ends}


def remove_instances(program: Program) -> None:
    """Delete every instance subprogram (they are never run: their bodies were copied or left as calls)."""
    remove_runs(program, [(start, end - start) for start, end in instance_bounds(program).values()])
    program.funcs = [f for f in program.funcs if INSTANCE_MARK not in f.name]


def _subprog_of(starts: list[int], slot: int) -> int:
    owner = starts[0]
    for s in starts:
        if s <= slot:
            owner = s
    return owner


def scanned_stack_depth(program: Program, start: int, end: int) -> int:
    """A subprogram's stack depth from its r10-relative accesses, rounded to 8 (for unverified programs)."""
    lowest = 0
    for insn in program.insns[start:end]:
        if insn.cls in (isa.ST, isa.STX) and insn.dst == isa.FRAME_POINTER:
            lowest = min(lowest, insn.off)
        elif insn.cls == isa.LDX and insn.src == isa.FRAME_POINTER:
            lowest = min(lowest, insn.off)
        elif insn.cls in (isa.ALU, isa.ALU64) and insn.opcode & isa.X and insn.src == isa.FRAME_POINTER:
            return FRAME_SIZE  # the frame pointer escapes into arithmetic: assume the whole frame is used
    return (-lowest + 7) // 8 * 8


def inline_calls(
    program: Program,
    bodies: dict[int, list[Insn]],
    stack_depth: dict[int, int] | None = None,
) -> list[InlineDecision]:
    """Copy `bodies[slot]` over each call slot. `stack_depth` maps subprogram starts to verified depths
    (scanned when missing). Returns a decision per call site; updates nothing else but the program."""
    decisions: list[InlineDecision] = []
    starts = program.subprog_starts()
    bounds = dict(zip(starts, starts[1:] + [len(program.insns)]))
    # Depth of each subprogram before any body is added; each body goes below its caller's own stack.
    depth = {
        s: (stack_depth or {}).get(s, scanned_stack_depth(program, s, bounds[s])) for s in starts
    }
    plan: list[tuple[int, list[Insn]]] = []
    for slot in sorted(bodies):
        name = program.kfuncs[program.insns[slot].imm]
        body = bodies[slot]
        usage = scan_regs_usage(body)
        if usage.r10_escapes:
            decisions.append(InlineDecision(slot, name, False, "r10 escapes"))
            continue
        base = -depth[_subprog_of(starts, slot)]
        saved = usage.callee_saved
        off = base - 8 * len(saved)
        stack_off = off if isa.FRAME_POINTER in usage.used_regs else 0
        if -(off + usage.lowest_stack_off) > FRAME_SIZE:
            decisions.append(InlineDecision(slot, name, False, f"the body needs {-(off + usage.lowest_stack_off)} "
                                                               f"bytes of stack, more than {FRAME_SIZE}"))
            continue
        plan.append((slot, _expand(body, saved, base, stack_off)))
        decisions.append(InlineDecision(slot, name, True))
    replace_many(program, [Edit(slot, 1, new, [{"inlined": True} for _ in new]) for slot, new in plan])
    return decisions


def _expand(body: list[Insn], saved: list[int], base: int, stack_off: int) -> list[Insn]:
    """[spills] body [fills], with exits jumping past the body and r10 offsets moved below the caller."""
    spills, fills = [], []
    off = base
    for reg in saved:
        off -= 8
        spills.append(Insn(isa.STX | isa.MEM | isa.DW, isa.FRAME_POINTER, reg, off))
        fills.insert(0, Insn(isa.LDX | isa.MEM | isa.DW, reg, isa.FRAME_POINTER, off))
    end = len(body)  # the first fill (or the slot after the body) relative to the body's start
    out = list(spills)
    for i, insn in enumerate(body):
        if insn.opcode == isa.OP_EXIT:
            rel = end - i - 1
            insn = Insn(isa.OP_JA, off=rel) if rel <= 0x7FFF else Insn(isa.OP_JA32, imm=rel)
        elif insn.cls in (isa.ST, isa.STX) and insn.dst == isa.FRAME_POINTER and stack_off:
            insn = insn._replace(off=insn.off + stack_off)
        elif insn.cls == isa.LDX and insn.src == isa.FRAME_POINTER and stack_off:
            insn = insn._replace(off=insn.off + stack_off)
        out.append(insn)
    return out + fills
