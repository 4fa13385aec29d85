"""Control-flow checks before the main pass (the kernel's check_subprogs/check_cfg) and static facts the main
pass uses: subprogram bounds, prune points, and which registers are live before each instruction
(compute_live_registers, used to ignore dead registers when comparing states).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import isa
from ..isa import Insn
from .errors import Reject
from .protos import proto_for

ALL_ARGS = 0b111110  # r1-r5
CALLER_SAVED = 0b111111  # r0-r5


@dataclass
class Cfg:
    starts: list[int]  # subprogram starts, sorted
    subprog_of: list[int]  # slot -> index into starts
    insn_start: list[bool]  # slot begins an instruction (False for the second slot of lddw)
    prune: set[int] = field(default_factory=set)
    force_checkpoint: set[int] = field(default_factory=set)
    live: list[int] = field(default_factory=list)  # bitmask of r0-r9 live before each slot
    reachable: list[bool] = field(default_factory=list)

    def subprog_end(self, k: int) -> int:
        return self.starts[k + 1] if k + 1 < len(self.starts) else len(self.subprog_of)


def _insn_starts(insns: list[Insn]) -> list[bool]:
    flags = [False] * len(insns)
    i = 0
    while i < len(insns):
        flags[i] = True
        i += 2 if insns[i].opcode == isa.OP_LDDW else 1
    return flags


def _successors(insns: list[Insn], i: int) -> list[int]:
    insn = insns[i]
    cls = insn.cls
    if cls in (isa.JMP, isa.JMP32):
        op = insn.opcode & 0xF0
        if insn.opcode == isa.OP_EXIT:
            return []
        if insn.opcode in (isa.OP_JA, isa.OP_JA32):
            return [i + 1 + insn.jump_offset()]
        if op == isa.CALL:
            return [i + 1]
        return [i + 1, i + 1 + insn.off]
    if insn.opcode == isa.OP_LDDW:
        return [i + 2]
    return [i + 1]


def build(insns: list[Insn], extra_starts: list[int], kfunc_params: dict[int, int], *, privileged: bool,
          instance_calls: dict[int, int]) -> Cfg:
    """Check the program's structure and return its CFG facts. `kfunc_params` gives the number of
    parameters of kfunc calls by slot (for liveness); `instance_calls` maps kfunc call slots to the hidden
    subprogram (instance) each one also reaches."""
    n = len(insns)
    starts_set = {0, *extra_starts}
    for i, insn in enumerate(insns):
        if insn.is_local_call() or (insn.opcode == isa.OP_LDDW and insn.src == isa.PSEUDO_FUNC):
            t = i + 1 + insn.imm
            if t < 0 or t >= n:
                raise Reject(i, "call to invalid destination")
            starts_set.add(t)
    starts = sorted(starts_set)
    for s in starts:
        if s < 0 or s >= n:
            raise Reject(s, "call to invalid destination")
    insn_start = _insn_starts(insns)
    subprog_of = [0] * n
    k = 0
    for i in range(n):
        while k + 1 < len(starts) and starts[k + 1] <= i:
            k += 1
        subprog_of[i] = k
    # check_subprogs: jumps stay inside their subprogram; each subprogram ends in exit or goto.
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n
        for i in range(s, end):
            insn = insns[i]
            if not insn_start[i]:
                continue
            if insn.cls in (isa.JMP, isa.JMP32) and insn.opcode & 0xF0 not in (isa.CALL, isa.EXIT):
                t = i + 1 + insn.jump_offset()
                if t < s or t >= end:
                    raise Reject(i, f"jump out of range from insn {i} to {t}")
        last = end - 1
        li = insns[last]
        if not insn_start[last] or li.opcode not in (isa.OP_EXIT, isa.OP_JA, isa.OP_JA32):
            raise Reject(last, "last insn is not an exit or jmp")
    cfg = Cfg(starts, subprog_of, insn_start)
    _dfs(cfg, insns, privileged, instance_calls)
    cfg.live = _liveness(cfg, insns, kfunc_params)
    return cfg


def _dfs(cfg: Cfg, insns: list[Insn], privileged: bool, instance_calls: dict[int, int]) -> None:
    """check_cfg(): every slot reachable from insn 0; back-edges only for privileged programs."""
    n = len(insns)
    state = [0] * n  # 0 unseen, 1 on stack, 2 done
    prune, force = cfg.prune, cfg.force_checkpoint
    roots = [0]
    while roots:
        root = roots.pop()
        if state[root]:
            continue
        stack: list[tuple[int, list[int]]] = []
        state[root] = 1
        stack.append((root, []))
        succ_cache: dict[int, list[int]] = {}

        def succs(t: int) -> list[int]:
            got = succ_cache.get(t)
            if got is None:
                got = _visit(t)
                succ_cache[t] = got
            return got

        def _visit(t: int) -> list[int]:
            insn = insns[t]
            out = _successors(insns, t)
            if insn.is_call():
                prune.add(t + 1)
                if insn.is_local_call():
                    prune.add(t)
                    roots.append(t + 1 + insn.imm)
                elif insn.is_kfunc_call() and t in instance_calls:
                    prune.add(t)
                    roots.append(instance_calls[t])
                elif insn.is_helper_call():
                    p = proto_for(insn.imm)
                    if p is not None and p.callback is not None:
                        # the callback is walked again each time it returns here, until a state repeats:
                        # every visit must leave a checkpoint to compare with (mark_force_checkpoint)
                        prune.add(t)
                        force.add(t)
            elif insn.opcode == isa.OP_CALLX:
                prune.add(t + 1)
            elif insn.opcode in (isa.OP_JA, isa.OP_JA32):
                prune.add(out[0])
            elif insn.opcode == isa.OP_MAY_GOTO:
                prune.add(t)
                prune.add(out[1])
                force.add(t)
            elif insn.is_cond_jump():
                prune.add(t)
                prune.add(out[1])  # branch targets are prune points too (push_insn with BRANCH)
            elif insn.opcode == isa.OP_LDDW and insn.src == isa.PSEUDO_FUNC:
                roots.append(t + 1 + insn.imm)
            return out

        idx = {root: 0}
        while stack:
            t, _ = stack[-1]
            ss = succs(t)
            i = idx[t]
            if i < len(ss):
                idx[t] = i + 1
                w = ss[i]
                if w < 0 or w >= n:
                    raise Reject(t, f"jump out of range from insn {t} to {w}")
                if state[w] == 0:
                    state[w] = 1
                    idx[w] = 0
                    stack.append((w, []))
                elif state[w] == 1 and not privileged:
                    raise Reject(t, f"back-edge from insn {t} to {w}")
            else:
                state[t] = 2
                stack.pop()
    cfg.reachable = [s == 2 for s in state]
    i = 0
    while i < n:
        if not state[i]:
            raise Reject(i, f"unreachable insn {i}")
        if insns[i].opcode == isa.OP_LDDW:
            if state[i + 1]:
                raise Reject(i + 1, "jump into the middle of ldimm64 insn")
            i += 2
            continue
        i += 1


def _use_def(insn: Insn, kfunc_nargs: int | None) -> tuple[int, int]:
    cls = insn.cls
    d, s = 1 << insn.dst, 1 << insn.src
    if cls in (isa.ALU, isa.ALU64):
        op = insn.opcode & 0xF0
        src = s if insn.opcode & isa.X and op not in (isa.NEG, isa.END) else 0
        if op == isa.MOV:
            return src, d
        return d | src, d
    if cls == isa.LDX:
        return s, d
    if cls == isa.ST:
        return d, 0
    if cls == isa.STX:
        if isa.mem_mode(insn.opcode) == isa.ATOMIC:
            if insn.imm == isa.ATOMIC_CMPXCHG:
                return d | s | 1, 1
            if insn.imm == isa.ATOMIC_LOAD_ACQ:
                return s, d
            if insn.imm & isa.FETCH:
                return d | s, s
        return d | s, 0
    if cls == isa.LD:
        if insn.opcode == isa.OP_LDDW:
            return 0, d
        use = 1 << 6
        if isa.mem_mode(insn.opcode) == isa.IND:
            use |= s
        return use, CALLER_SAVED
    # jumps
    if insn.opcode == isa.OP_EXIT:
        return 1, 0
    if insn.opcode == isa.OP_CALL:
        if insn.is_helper_call():
            p = proto_for(insn.imm)
            nargs = len(p.args) if p is not None else 5
        elif insn.is_kfunc_call():
            nargs = 5 if kfunc_nargs is None else kfunc_nargs
        else:
            nargs = 5
        return ((1 << (nargs + 1)) - 2) & ALL_ARGS, CALLER_SAVED
    if insn.opcode == isa.OP_CALLX:
        return d | ALL_ARGS, CALLER_SAVED
    if insn.opcode in (isa.OP_JA, isa.OP_JA32, isa.OP_MAY_GOTO):
        return 0, 0
    return d | (s if insn.opcode & isa.X else 0), 0


def _liveness(cfg: Cfg, insns: list[Insn], kfunc_params: dict[int, int]) -> list[int]:
    n = len(insns)
    use = [0] * n
    dfn = [0] * n
    succ: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        if not cfg.insn_start[i]:
            continue
        use[i], dfn[i] = _use_def(insns[i], kfunc_params.get(i))
        succ[i] = [w for w in _successors(insns, i) if 0 <= w < n]
    live = [0] * n
    changed = True
    order = [i for i in range(n - 1, -1, -1) if cfg.insn_start[i]]
    while changed:
        changed = False
        for i in order:
            out = 0
            for w in succ[i]:
                out |= live[w]
            new = use[i] | (out & ~dfn[i])
            if new != live[i]:
                live[i] = new
                changed = True
    return live
