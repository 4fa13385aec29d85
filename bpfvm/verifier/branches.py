"""Conditional jumps (check_cond_jmp_op): branch prediction with precision marks, refinement of both
successors, linked scalars, null checks of maybe-null pointers, packet range from comparisons with
pkt_end, and `may_goto`. The branch facts of RFC patch 01 are recorded here."""

from __future__ import annotations

from .. import isa
from ..isa import Insn
from .regs import (
    CONST_PTR_TO_MAP, KERNEL_VALUE, MAYBE_NULL, PKT_TYPES, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM,
    PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_PACKET_META, SCALAR, Reg, set_const,
)
from .scalar import FLIP, REV, refine_and_sync, scalar_branch_taken
from .state import REG_SIZE, SPILL, State

MAX_PACKET_OFF = 0xFFFF


def reg_not_null(r: Reg) -> bool:
    if r.type & MAYBE_NULL:
        return False
    return (r.type & 0xFF) in (PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY, PTR_TO_MEM, CONST_PTR_TO_MAP)


def is_pointer(r: Reg) -> bool:
    return r.type not in (SCALAR, KERNEL_VALUE)


def branch_taken(r1: Reg, r2: Reg, op: int, is32: bool) -> int:
    """is_branch_taken(): 1 always, 0 never, -1 unknown."""
    if r1.type in PKT_TYPES | {PTR_TO_PACKET_END} and r2.type in PKT_TYPES | {PTR_TO_PACKET_END}:
        return -1
    if is_pointer(r1) or is_pointer(r2):
        if not (r2.type == SCALAR and (r2.var.mask & (0xFFFFFFFF if is32 else -1)) == 0):
            op = FLIP.get(op, op)
            r1, r2 = r2, r1
        if not (r2.type == SCALAR and (r2.var.mask & (0xFFFFFFFF if is32 else (1 << 64) - 1)) == 0):
            return -1
        if not is_pointer(r1) or not reg_not_null(r1):
            return -1
        val = r2.var.value & (0xFFFFFFFF if is32 else (1 << 64) - 1)
        if val != 0:
            return -1
        return 0 if op == isa.JEQ else 1 if op == isa.JNE else -1
    if r1.type == KERNEL_VALUE or r2.type == KERNEL_VALUE:
        return -1
    return scalar_branch_taken(r1, r2, op, is32)


class BranchMixin:
    def check_cond_jmp(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        aux = self.aux[i]
        if insn.opcode == isa.OP_MAY_GOTO:
            self._may_goto(st, insn)
            return
        op = insn.opcode & 0xF0
        is32 = insn.cls == isa.JMP32
        srcx = bool(insn.opcode & isa.X)
        regs = st.frames[-1].regs
        dst = self.read_reg(st, insn.dst)
        if srcx:
            src = self.read_reg(st, insn.src)
        else:
            src = Reg()
            set_const(src, insn.imm)
        target = i + 1 + insn.off
        both_scalar = dst.type == SCALAR and src.type == SCALAR
        pred = branch_taken(dst, src, op, is32)
        refined = None
        if pred < 0 and both_scalar:
            t1, t2, f1, f2 = dst.copy(), src.copy(), dst.copy(), src.copy()
            ok_true = refine_and_sync(t1, t2, op, is32)
            ok_false = refine_and_sync(f1, f2, REV[op], is32)
            if not ok_true and ok_false:
                pred = 0
            elif ok_true and not ok_false:
                pred = 1
            elif not ok_true and not ok_false:
                pred = 0  # the state admits no value at all; follow one side
            else:
                refined = (t1, t2, f1, f2)
        if pred >= 0:
            if dst.type == SCALAR:
                self.mark_precise(st, insn.dst)
            if srcx and src.type == SCALAR:
                self.mark_precise(st, insn.src)
            if pred == 1:
                aux.true_taken = True
                self.record(st)
                st.insn = target
            else:
                aux.false_taken = True
                self.record(st)
                st.insn = i + 1
            return
        aux.true_taken = aux.false_taken = True
        linked = self._collect_linked(st, dst, src if srcx else None)
        self.record(st, ("linked", linked) if linked else None)
        other = self.push(st, target)
        oregs = other.frames[-1].regs
        if refined is not None:
            t1, t2, f1, f2 = refined
            oregs[insn.dst].assign(t1)
            regs[insn.dst].assign(f1)
            if srcx:
                oregs[insn.src].assign(t2)
                regs[insn.src].assign(f2)
                if t2.id:
                    self._sync_linked(other, oregs[insn.src])
                    self._sync_linked(st, regs[insn.src])
            if t1.id:
                self._sync_linked(other, oregs[insn.dst])
                self._sync_linked(st, regs[insn.dst])
        elif (not is32 and not srcx and insn.imm == 0 and op in (isa.JEQ, isa.JNE)
              and dst.type & MAYBE_NULL):
            # The branch where the pointer is NULL, and the one where it is not.
            self._mark_ptr_or_null(other, insn.dst, op == isa.JEQ)
            self._mark_ptr_or_null(st, insn.dst, op == isa.JNE)
        elif srcx and not is32:
            self._match_pkt_pointers(op, dst, src, st, other)
        st.insn = i + 1

    # -- linked scalars --------------------------------------------------------------------------------------
    def _collect_linked(self, st: State, dst: Reg, src: Reg | None) -> list[tuple[int, str, int]]:
        ids = {r.id for r in (dst, src) if r is not None and r.type == SCALAR and r.id}
        if not ids:
            return []
        out = []
        for fi, kind, idx, r in st.all_regs():
            if r.type == SCALAR and r.id in ids:
                out.append((fi, kind, idx))
        return out if len(out) > 1 else []

    @staticmethod
    def _sync_linked(st: State, known: Reg) -> None:
        rid = known.id
        for f in st.frames:
            for r in f.regs:
                if r is not known and r.type == SCALAR and r.id == rid:
                    r.assign(known)
            for s in f.stack:
                if s.types[REG_SIZE - 1] == SPILL and s.reg.type == SCALAR and s.reg.id == rid:
                    s.reg.assign(known)

    # -- null checks -------------------------------------------------------------------------------------------
    def _mark_ptr_or_null(self, st: State, regno: int, is_null: bool) -> None:
        reg = st.frames[-1].regs[regno]
        rid = reg.id
        if reg.ref_obj_id and reg.ref_obj_id == rid and is_null:
            st.refs = [r for r in st.refs if r.id != rid]
        if not rid:
            return
        for _, _, _, r in list(st.all_regs()):
            if r.type & MAYBE_NULL and r.id == rid:
                if is_null:
                    set_const(r, 0)
                else:
                    self._mark_not_null(r)

    def _mark_not_null(self, r: Reg) -> None:
        if (r.type & 0xFF) == PTR_TO_MAP_VALUE and r.map >= 0:
            spec = self.maps[r.map]
            inner = getattr(spec, "inner", None)
            if inner is not None:
                r.type = CONST_PTR_TO_MAP
                r.map = self.map_index(inner)
                r.id = 0
                return
        r.type &= ~MAYBE_NULL
        if (r.type & 0xFF) != PTR_TO_MAP_VALUE or r.map < 0 or getattr(self.maps[r.map], "spin_lock_off",
                                                                             None) is None:
            r.id = 0  # a value with a spin lock keeps its id: the id names the lock

    # -- packet pointers ------------------------------------------------------------------------------------
    def _match_pkt_pointers(self, op: int, dst: Reg, src: Reg, this: State, other: State) -> None:
        def init_pkt(r: Reg) -> bool:
            return r.type == PTR_TO_PACKET and r.off == 0 and r.var.mask == 0 and r.var.value == 0

        fwd = (dst.type == PTR_TO_PACKET and src.type == PTR_TO_PACKET_END) or \
              (dst.type == PTR_TO_PACKET_META and init_pkt(src))
        rev = (dst.type == PTR_TO_PACKET_END and src.type == PTR_TO_PACKET) or \
              (init_pkt(dst) and src.type == PTR_TO_PACKET_META)
        if op == isa.JGT:
            if fwd:
                self._good_pkt(this, dst, False)  # pkt' <= end
            elif rev:
                self._good_pkt(other, src, True)  # end > pkt'
        elif op == isa.JLT:
            if fwd:
                self._good_pkt(other, dst, True)  # pkt' < end
            elif rev:
                self._good_pkt(this, src, False)  # end >= pkt'
        elif op == isa.JGE:
            if fwd:
                self._good_pkt(this, dst, True)  # pkt' < end
            elif rev:
                self._good_pkt(other, src, False)  # end >= pkt'
        elif op == isa.JLE:
            if fwd:
                self._good_pkt(other, dst, False)  # pkt' <= end
            elif rev:
                self._good_pkt(this, src, True)  # end > pkt'

    @staticmethod
    def _good_pkt(st: State, ptr: Reg, strict: bool) -> None:
        """find_good_pkt_pointers(): every pointer of this packet family may access `ptr.off` bytes."""
        if ptr.off < 0 or (ptr.off == 0 and strict):
            return
        if ptr.umax > MAX_PACKET_OFF or ptr.umax + ptr.off > MAX_PACKET_OFF:
            return
        new_range = ptr.off + 1 if strict else ptr.off  # pkt' < end: one more byte is in the packet
        for f in st.frames:
            for r in f.regs:
                if r.type == ptr.type and r.id == ptr.id and r.range < new_range:
                    r.range = new_range
            for s in f.stack:
                r = s.reg
                if s.types[REG_SIZE - 1] == SPILL and r.type == ptr.type and r.id == ptr.id and r.range < new_range:
                    r.range = new_range

    # -- may_goto ----------------------------------------------------------------------------------------------
    def _may_goto(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        aux = self.aux[i]
        aux.true_taken = aux.false_taken = True
        prev = self.find_prev_entry(st, i)
        self.record(st)
        body = self.push(st, i + 1)
        body.may_goto_depth += 1
        if prev is not None:
            self.widen_imprecise(prev, body)
        st.insn = i + 1 + insn.off
