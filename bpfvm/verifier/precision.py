"""Precision tracking (mark_chain_precision / backtrack_insn / propagate_precision).

Scalars start imprecise: two states that differ only in imprecise scalars are equivalent for pruning. When a
safety decision depends on a scalar's value (a predicted branch, a pointer offset, a helper's size argument,
a return value range ...), the scalar and every value it was computed from are marked precise in the
checkpoints along the path, by walking the path's instruction history backwards. Anything the walk does not
understand falls back to marking every scalar precise, which is always sound.
"""

from __future__ import annotations

from .. import isa
from .errors import Fallback
from .protos import proto_for
from .regs import SCALAR
from .state import MAX_FRAMES, REG_SIZE, SPILL, State

ARGS = frozenset({1, 2, 3, 4, 5})
# Callback argument registers that are copies of the caller's registers, by helper name: callee -> caller.
CALLBACK_ARG_MAP = {"loop": {2: 3}, "for_each_map_elem": {4: 3}}


class Backtrack:
    __slots__ = ("regs", "stack")

    def __init__(self) -> None:
        self.regs: list[set[int]] = [set() for _ in range(MAX_FRAMES + 2)]
        self.stack: list[set[int]] = [set() for _ in range(MAX_FRAMES + 2)]

    def empty(self) -> bool:
        return not any(self.regs) and not any(self.stack)


class PrecisionMixin:
    def mark_precise(self, st: State, regno: int) -> None:
        """mark_chain_precision(env, regno) for a register of the current frame."""
        if st.frames[-1].regs[regno].type != SCALAR:
            return
        bt = Backtrack()
        bt.regs[len(st.frames) - 1].add(regno)
        self._backtrack(st, bt)

    def mark_precise_set(self, st: State, regs: dict[int, set[int]], stack: dict[int, set[int]]) -> None:
        bt = Backtrack()
        for f, rs in regs.items():
            bt.regs[f] |= rs
        for f, ss in stack.items():
            bt.stack[f] |= ss
        if not bt.empty():
            self._backtrack(st, bt)

    def _backtrack(self, st: State, bt: Backtrack) -> None:
        try:
            node = st
            next_frame = len(st.frames) - 1
            while True:
                hist = node.history
                for k in range(len(hist) - 1, -1, -1):
                    entry = hist[k]
                    nf = hist[k + 1][1] if k + 1 < len(hist) else next_frame
                    self._bt_insn(entry, nf, bt)
                    if bt.empty():
                        return
                parent = node.parent
                if parent is None:
                    return
                self._bt_mark(parent, bt)
                if bt.empty():
                    return
                next_frame = len(parent.frames) - 1
                node = parent
        except Fallback:
            self.mark_all_precise(st)

    @staticmethod
    def _bt_mark(cp: State, bt: Backtrack) -> None:
        nframes = len(cp.frames)
        for fi in range(len(bt.regs)):
            rs, ss = bt.regs[fi], bt.stack[fi]
            if not rs and not ss:
                continue
            if fi >= nframes:
                raise Fallback
            frame = cp.frames[fi]
            for r in list(rs):
                reg = frame.regs[r]
                if reg.type != SCALAR or reg.precise:
                    rs.discard(r)
                else:
                    reg.precise = True
            for spi in list(ss):
                if spi >= len(frame.stack) or frame.stack[spi].types[REG_SIZE - 1] != SPILL:
                    ss.discard(spi)
                    continue
                reg = frame.stack[spi].reg
                if reg.type != SCALAR or reg.precise:
                    ss.discard(spi)
                else:
                    reg.precise = True

    def _bt_insn(self, entry: tuple, next_frame: int, bt: Backtrack) -> None:
        idx, f, extra = entry
        insn = self.insns[idx]
        cls = insn.cls
        regs = bt.regs[f]
        if cls in (isa.ALU, isa.ALU64):
            d = insn.dst
            if d not in regs:
                return
            op = insn.opcode & 0xF0
            if op == isa.MOV:
                regs.discard(d)
                if insn.opcode & isa.X:
                    regs.add(insn.src)
            elif op not in (isa.NEG, isa.END) and insn.opcode & isa.X:
                regs.add(insn.src)
            return
        if cls == isa.LDX:
            d = insn.dst
            if d not in regs:
                return
            regs.discard(d)
            if extra and extra[0] == "stack":
                bt.stack[extra[1]].add(extra[2])
            return
        if cls in (isa.ST, isa.STX):
            if isa.mem_mode(insn.opcode) == isa.ATOMIC:
                if insn.imm == isa.ATOMIC_CMPXCHG:
                    loaded = 0
                elif insn.imm == isa.ATOMIC_LOAD_ACQ:
                    loaded = insn.dst
                else:
                    loaded = insn.src if insn.imm & isa.FETCH else -1
                if loaded in regs:
                    regs.discard(loaded)
                    # the fetched value is the old slot: a spilled scalar read back must be precise too (the
                    # kernel's backtrack_insn drops it here, a soundness bug bpfvm does not copy)
                    if extra and extra[0] == "stack":
                        bt.stack[extra[1]].add(extra[2])
                if insn.imm != isa.ATOMIC_LOAD_ACQ and insn.dst in regs:
                    raise Fallback
                return
            if insn.dst in regs:
                raise Fallback  # a scalar used as a memory base
            if extra and extra[0] == "stack":
                fr, spi = extra[1], extra[2]
                if spi in bt.stack[fr]:
                    bt.stack[fr].discard(spi)
                    if cls == isa.STX:
                        regs.add(insn.src)
            return
        if cls == isa.LD:
            if insn.opcode == isa.OP_LDDW:
                regs.discard(insn.dst)
            else:
                regs.discard(0)
                if regs & ARGS:
                    raise Fallback
            return
        # jumps
        if insn.opcode == isa.OP_EXIT:
            if next_frame == f - 1 and not (extra and extra[0] == "exit" and extra[1]):
                caller = bt.regs[f - 1]
                if 0 in caller:
                    caller.discard(0)
                    regs.add(0)
            return
        if insn.opcode == isa.OP_CALL:
            if next_frame == f + 1:
                callee, cstack = bt.regs[f + 1], bt.stack[f + 1]
                if cstack:
                    raise Fallback
                if insn.is_local_call():
                    if callee - ARGS:
                        raise Fallback
                    regs |= callee
                else:
                    p = proto_for(insn.imm) if insn.is_helper_call() else None
                    mapping = CALLBACK_ARG_MAP.get(p.name, {}) if p is not None else {}
                    for r in callee:
                        if r in mapping:
                            regs.add(mapping[r])
                callee.clear()
                return
            regs.discard(0)
            if regs & ARGS:
                raise Fallback
            return
        if insn.is_cond_jump() and insn.opcode != isa.OP_MAY_GOTO:
            if insn.opcode & isa.X and (insn.dst in regs or insn.src in regs):
                regs.add(insn.dst)
                regs.add(insn.src)
            if extra and extra[0] == "linked":
                linked = extra[1]
                hit = any((i in bt.regs[fr]) if kind == "r" else (i in bt.stack[fr]) for fr, kind, i in linked)
                if hit:
                    for fr, kind, i in linked:
                        (bt.regs[fr] if kind == "r" else bt.stack[fr]).add(i)

    def mark_all_precise(self, st: State) -> None:
        """The fallback: every scalar of the path's state and of all its checkpoints becomes precise."""
        node: State | None = st
        while node is not None:
            for _, _, _, r in node.all_regs():
                if r.type == SCALAR:
                    r.precise = True
            node = node.parent

    def propagate_precision(self, old: State, cur: State, live: list[int]) -> None:
        """After pruning `cur` against `old`: whatever old needed precise, cur needs too (in its ancestors)."""
        regs: dict[int, set[int]] = {}
        stack: dict[int, set[int]] = {}
        for fi, f in enumerate(old.frames):
            mask = live[fi]
            for r, reg in enumerate(f.regs):
                if reg.type == SCALAR and reg.precise and (mask >> r) & 1:
                    regs.setdefault(fi, set()).add(r)
            for spi, s in enumerate(f.stack):
                if s.types[REG_SIZE - 1] == SPILL and s.reg.type == SCALAR and s.reg.precise:
                    stack.setdefault(fi, set()).add(spi)
        self.mark_precise_set(cur, regs, stack)

    def mark_live_scalars_precise(self, st: State, live: list[int], checkpoint: bool = False) -> None:
        """Every live scalar of `st` (a path, or with `checkpoint` a checkpoint itself) becomes precise."""
        regs: dict[int, set[int]] = {}
        stack: dict[int, set[int]] = {}
        for fi, f in enumerate(st.frames):
            mask = live[fi]
            for r, reg in enumerate(f.regs):
                if reg.type == SCALAR and (mask >> r) & 1:
                    regs.setdefault(fi, set()).add(r)
            for spi, s in enumerate(f.stack):
                if s.types[REG_SIZE - 1] == SPILL and s.reg.type == SCALAR:
                    stack.setdefault(fi, set()).add(spi)
        if checkpoint:
            bt = Backtrack()
            for f, rs in regs.items():
                bt.regs[f] |= rs
            for f, ss in stack.items():
                bt.stack[f] |= ss
            try:
                self._bt_mark(st, bt)
            except Fallback:
                self.mark_all_precise(st)
                return
            if not bt.empty():
                self._backtrack(st, bt)
            return
        self.mark_precise_set(st, regs, stack)
