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
from ..patcher import remove_runs
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
    starts = isa.instruction_starts(program.insns)
    for i, insn in enumerate(program.insns):
        if not insn.is_cond_jump() or not starts[i]:
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
    remove_runs(program, runs, retarget=True)
    return sum(count for _, count in runs)


def remove_nops(program: Program, analysis=None) -> int:
    """Remove `goto +0` and `may_goto +0`; returns the number removed.

    The kernel's scan, slot by slot: removing a no-op retargets the jumps over it (so one may become a new
    no-op), and after a `may_goto +0` the scan steps back to the slot before it. Simulated on the original
    slots (which are removed so far, and so where each jump lands now), then removed in one patch."""
    _facts(program, analysis)
    insns = program.insns
    n = len(insns)
    starts = isa.instruction_starts(insns)
    gone = _RemovedSlots(n)
    p = 0  # the original slot under the scan
    while p < n:
        insn = insns[p]
        is_ja = insn.opcode == isa.OP_JA and insn[1:3] == (0, 0) and insn.imm == 0
        is_may_goto = insn.opcode == isa.OP_MAY_GOTO and insn[1:3] == (0, 0) and insn.imm == 0
        if starts[p] and (is_ja or is_may_goto) and gone.landing(p + 1 + insn.off) == gone.after(p):
            before = gone.before(p)
            gone.remove(p)
            p = before if is_may_goto and before is not None else gone.after(p)
            continue
        p = gone.after(p)
    remove_runs(program, [(slot, 1) for slot in gone.removed], retarget=True)
    return len(gone.removed)


class _RemovedSlots:
    """Which of `n` slots are removed so far: the live neighbours of a slot, and where a jump to a slot
    lands (itself, or the first live slot after it) -- all in about log(n) per step."""

    def __init__(self, n: int):
        self.n = n
        self.removed: list[int] = []
        self._dead = [False] * (n + 1)
        self._next = list(range(n + 1))  # union-find "next live slot at or after"

    def landing(self, t: int) -> int:
        """The first live slot at or after `t` (n past the end)."""
        t = min(max(t, 0), self.n)
        root = t
        while self._next[root] != root:
            root = self._next[root]
        while self._next[t] != root:
            self._next[t], t = root, self._next[t]
        return root

    def after(self, p: int) -> int:
        return self.landing(p + 1)

    def before(self, p: int) -> int | None:
        q = p - 1
        while q >= 0 and self._dead[q]:
            q -= 1
        return q if q >= 0 else None

    def remove(self, p: int) -> None:
        self._dead[p] = True
        self._next[p] = p + 1
        self.removed.append(p)


def eliminate_dead_code(program: Program, analysis=None) -> Program:
    """All three passes, in the kernel's order."""
    hard_wire_dead_branches(program, analysis)
    remove_dead_code(program)
    remove_nops(program)
    return program
