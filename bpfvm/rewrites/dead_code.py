"""Dead code passes after verification, in the kernel's order (bpf_check(), privileged programs):

  hard_wire_dead_branches   opt_hard_wire_dead_code_branches() with RFC patch 01: a conditional jump the
                            verifier only ever saw taken becomes `goto off`, one only ever seen falling
                            through becomes `goto +0`;
  remove_dead_code          opt_remove_dead_code(): every run of slots no path reached is removed;
  remove_nops               opt_remove_nops(): `goto +0` and `may_goto +0` are removed.

The seed's `verifier_dead_code.c` listings show all three (`goto pc+0` does not survive). Each pass takes the
program and, optionally, the Analysis of that same program: if given, its facts are first merged into
`program.aux` (Analysis.apply, a no-op when already done); the passes then read and keep `program.aux`.
"""

from __future__ import annotations

from .. import isa
from ..isa import Insn
from ..patcher import remove
from ..program import Program

JA_0 = Insn(isa.OP_JA, 0, 0, 0, 0)
MAY_GOTO_0 = Insn(isa.OP_MAY_GOTO, 0, 0, 0, 0)


def _facts(program: Program, analysis) -> dict:
    if analysis is not None:
        analysis.apply(program)
    return program.aux


def hard_wire_dead_branches(program: Program, analysis=None) -> int:
    """Replace one-way conditional jumps by gotos; returns how many were rewritten."""
    aux = _facts(program, analysis)
    count = 0
    for i, insn in enumerate(program.insns):
        if not insn.is_cond_jump() or (i > 0 and program.insns[i - 1].opcode == isa.OP_LDDW
                                       and _second_slot(program, i)):
            continue
        facts = aux.get(i, {})
        t, f = facts.get("true_branch_taken"), facts.get("false_branch_taken")
        if t is None or f is None:
            continue
        if t and not f:
            program.insns[i] = Insn(isa.OP_JA, 0, 0, insn.off, 0)
        elif f and not t:
            program.insns[i] = JA_0
        else:
            continue
        count += 1
    return count


def _second_slot(program: Program, i: int) -> bool:
    j = 0
    while j < i:
        j += 2 if program.insns[j].opcode == isa.OP_LDDW else 1
    return j != i


def remove_dead_code(program: Program, analysis=None) -> int:
    """Remove every maximal run of unseen slots; returns the number of slots removed.

    A dead instruction may jump into another dead run (e.g. a dead subprogram called only from dead code), in
    either direction, so removal retargets such jumps; they disappear with their own run. Live code never
    targets dead code once one-way branches are hard-wired."""
    aux = _facts(program, analysis)
    runs: list[tuple[int, int]] = []
    i = 0
    n = len(program.insns)
    while i < n:
        j = 0
        while i + j < n and aux.get(i + j, {}).get("seen") is False:
            j += 1
        if j:
            runs.append((i, j))
            i += j
        else:
            i += 1
    for start, count in reversed(runs):
        remove(program, start, count, retarget=True)
    return sum(count for _, count in runs)


def remove_nops(program: Program, analysis=None) -> int:
    """Remove `goto +0` and `may_goto +0`; returns the number removed."""
    _facts(program, analysis)
    removed = 0
    i = 0
    while i < len(program.insns):
        insn = program.insns[i]
        is_may_goto_0 = insn == MAY_GOTO_0
        if (insn == JA_0 or is_may_goto_0) and not _second_slot(program, i):
            remove(program, i, 1, retarget=True)  # a jump to a no-op lands on what follows it
            removed += 1
            i -= 2 if (is_may_goto_0 and i > 0) else 1
            i = max(i, -1)
        i += 1
    return removed


def eliminate_dead_code(program: Program, analysis=None) -> Program:
    """All three passes, in the kernel's order."""
    hard_wire_dead_branches(program, analysis)
    remove_dead_code(program)
    remove_nops(program)
    return program
