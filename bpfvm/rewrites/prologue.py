"""convert_ctx_accesses, second half: a program type's prologue and epilogue (the kernel's gen_prologue and
gen_epilogue), injected after verification.

  prologue   runs before the program's first instruction (jumps to slot 0 reach it too, as in the kernel);
  epilogue   runs at every exit of the main function: the first exit becomes the epilogue (which ends with
             `exit`), later exits jump back to it. The context pointer is saved at program entry in a stack
             slot below the main function's verified stack, `ctx_stack_off = -(depth + 8)`, for the epilogue.

Both are trusted code: the kernel never verifies them, and neither does this pipeline as part of the program
(they may touch the internal model directly and do what programs may not). Their kfunc calls are still
instantiated and verified in their call sites' context, so that `--inline pruned` prunes them like any other
call: each snippet is wrapped in a *stub*, a small program of the same type that reaches the snippet in the
state the program leaves it in (`prologue_stub`: the program's entry state; `epilogue_stub`: r1 saved at
ctx_stack_off, r1-r5 clobbered by a helper call, r0 any value within the type's return range), and the stub
goes through the whole pipeline (pipeline._snippet). When a stub cannot be verified (the snippet does what
the type's rules forbid, or the program jumps back to its first slot), it is handled as the kernel handles
all pro/epilogue code: unverified, its kfunc calls inlined whole.
`splice` then puts the processed snippet into the program, with the stub's facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import isa
from ..errors import BpfvmError
from ..interp import FRAME_SIZE
from ..isa import Insn
from ..patcher import insert_before, replace
from ..program import Program
from .inline import INSTANCE_KEY

HELPER_GET_PRANDOM_U32 = 7  # clobbers r1-r5 in the epilogue stub, as the program's code before an exit may
EXIT = Insn(isa.OP_EXIT)
_INSTANCE_FACTS = (INSTANCE_KEY, "kfunc_instance")  # the stub's instances mean nothing in the program


@dataclass
class Piece:
    """A processed snippet: its instructions, their facts, and the kfunc names its calls' imm index."""

    insns: list[Insn]
    aux: list[dict[str, Any] | None]
    kfuncs: list[str]
    verified: bool
    decisions: list[Any] = field(default_factory=list)


def ctx_stack_offset(main_depth: int) -> int:
    """Where the epilogue finds the context: the 8 bytes below the main function's stack."""
    return -((main_depth + 7) // 8 * 8 + 8)


def check_ctx_slot(main_depth: int) -> None:
    """Refuse an epilogue whose context slot would lie outside the frame (the kernel grows its frame; ours
    hold FRAME_SIZE bytes)."""
    if -ctx_stack_offset(main_depth) > FRAME_SIZE:
        raise BpfvmError(f"the epilogue needs 8 bytes of stack below the program's {main_depth}, "
                         f"more than the {FRAME_SIZE} a frame holds")


def ctx_save(ctx_stack_off: int) -> Insn:
    return Insn(isa.STX | isa.MEM | isa.DW, isa.FRAME_POINTER, 1, ctx_stack_off)


def check_snippet(snippet: Any, what: str, type_name: str, *, ends_with_exit: bool) -> list[Insn]:
    """The snippet's instructions, refused in one line if they could not stand alone inside a program."""
    insns = list(snippet.insns)
    where = f"{type_name} {what}"
    if not insns:
        raise BpfvmError(f"{where}: no instructions")
    isa.validate_program(insns)
    limit = len(insns) if ends_with_exit else len(insns) + 1
    i = 0
    while i < len(insns):
        insn = insns[i]
        if insn.opcode == isa.OP_LDDW and insn.src not in (0, isa.PSEUDO_BTF_ID):
            raise BpfvmError(f"{where}: insn {i}: may not reference maps or functions")
        if insn.is_local_call() or insn.opcode == isa.OP_CALLX:
            raise BpfvmError(f"{where}: insn {i}: may not call BPF functions")
        if insn.is_kfunc_call() and not 0 <= insn.imm < len(snippet.kfuncs):
            raise BpfvmError(f"{where}: insn {i}: kfunc call #{insn.imm} names none of its kfuncs")
        if insn.cls in (isa.JMP, isa.JMP32) and insn.opcode & 0xF0 not in (isa.CALL, isa.EXIT):
            target = i + 1 + insn.jump_offset()
            if not 0 <= target < limit:
                raise BpfvmError(f"{where}: insn {i}: jumps outside the {what}")
        i += isa.insn_slots(insn)
    if ends_with_exit and insns[-1].opcode != isa.OP_EXIT:
        raise BpfvmError(f"{where}: must end with exit")
    return insns


def _stub(program: Program, insns: list[Insn], kfuncs: tuple[str, ...], what: str) -> Program:
    return Program(insns=insns, name=f"{program.name}@{what}", prog_type=program.prog_type,
                   attach_type=program.attach_type, section=program.section, kfuncs=list(kfuncs),
                   license=program.license)


def prologue_tail(r0: int = 0) -> list[Insn]:
    """What the prologue stub ends with where the program would start: `r0 = r0; exit` (an allowed return)."""
    return [Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, r0), EXIT]


def prologue_stub(program: Program, snippet: Any, tail: list[Insn]) -> Program:
    """The prologue followed by `tail`: verified from the program's own entry state."""
    insns = check_snippet(snippet, "prologue", program.prog_type, ends_with_exit=False)
    return _stub(program, insns + tail, snippet.kfuncs, "prologue")


def epilogue_header(ctx_stack_off: int, ret_range: tuple[int, int] | None, length: int) -> list[Insn]:
    """What every exit of the program looks like to an epilogue of `length` slots: the context saved, r1-r5
    clobbered, r0 any value the program may return (a privileged read of stack the program never wrote is an
    unknown scalar; values outside the type's return range leave for `epilogue_tail`)."""
    out = [ctx_save(ctx_stack_off), Insn(isa.OP_CALL, imm=HELPER_GET_PRANDOM_U32),
           Insn(isa.LDX | isa.MEM | isa.DW, 0, isa.FRAME_POINTER, ctx_stack_off - 8)]
    if _encodable(ret_range):
        for k, (op, bound) in enumerate(((isa.JSLT, ret_range[0]), (isa.JSGT, ret_range[1]))):
            out.append(Insn(isa.JMP | op | isa.K, 0, 0, (1 - k) + length, bound))
    return out


def epilogue_tail(ret_range: tuple[int, int] | None) -> list[Insn]:
    return prologue_tail(ret_range[0]) if _encodable(ret_range) else []


def _encodable(ret_range: tuple[int, int] | None) -> bool:
    return ret_range is not None and all(-(1 << 31) <= v < (1 << 31) for v in ret_range)


def epilogue_stub(program: Program, snippet: Any, ctx_stack_off: int, ret_range: tuple[int, int] | None
                  ) -> tuple[Program, int, int]:
    """The stub, and how many of its slots come before and after the epilogue."""
    insns = check_snippet(snippet, "epilogue", program.prog_type, ends_with_exit=True)
    head, tail = epilogue_header(ctx_stack_off, ret_range, len(insns)), epilogue_tail(ret_range)
    return _stub(program, head + insns + tail, snippet.kfuncs, "epilogue"), len(head), len(tail)


def piece_of(stub: Program, prefix: int, suffix: int, verified: bool, decisions: list[Any]) -> Piece:
    """The processed snippet inside a processed stub: all but its first `prefix` and last `suffix` slots."""
    end = len(stub.insns) - suffix
    facts = [{k: v for k, v in stub.aux[i].items() if k not in _INSTANCE_FACTS} if i in stub.aux else None
             for i in range(prefix, end)]
    return Piece(list(stub.insns[prefix:end]), facts, list(stub.kfuncs), verified, decisions)


def _renumbered(program: Program, piece: Piece) -> list[Insn]:
    out = []
    for insn in piece.insns:
        if insn.is_kfunc_call():
            name = piece.kfuncs[insn.imm]
            if name not in program.kfuncs:
                program.kfuncs.append(name)
            insn = insn._replace(imm=program.kfuncs.index(name))
        out.append(insn)
    return out


def _main_exits(program: Program) -> list[int]:
    starts = program.subprog_starts()
    end = starts[1] if len(starts) > 1 else len(program.insns)
    exits, i = [], 0
    while i < end:
        if program.insns[i].opcode == isa.OP_EXIT:
            exits.append(i)
        i += isa.insn_slots(program.insns[i])
    return exits


def splice(program: Program, prologue: Piece | None, epilogue: Piece | None, ctx_stack_off: int) -> None:
    """Put the processed prologue and epilogue into the program, in place (the kernel's order of patches)."""
    if epilogue is not None:
        exits = _main_exits(program)
        if exits:
            first = exits[0]
            body = _renumbered(program, epilogue)
            replace(program, first, 1, body, aux=epilogue.aux)
            delta = len(body) - 1
            for slot in exits[1:]:
                slot += delta
                rel = first - slot - 1
                jump = Insn(isa.OP_JA, off=rel) if rel >= -(1 << 15) else Insn(isa.OP_JA32, imm=rel)
                replace(program, slot, 1, [jump], aux=[{"seen": True}])
    head: list[Insn] = []
    facts: list[dict[str, Any] | None] = []
    if prologue is not None:
        head += _renumbered(program, prologue)
        facts += prologue.aux
    if epilogue is not None:
        head.append(ctx_save(ctx_stack_off))
        facts.append({"seen": True, "proved_safe": True, "mem_region": "stack"})
    if head:
        insert_before(program, 0, head, aux=facts)
