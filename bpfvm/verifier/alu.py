"""ALU instructions (check_alu_op / adjust_reg_min_max_vals): moves with scalar ids, scalar arithmetic,
pointer arithmetic with its restrictions, and KERNEL_VALUE propagation (RFC patch 06)."""

from __future__ import annotations

from .. import isa
from ..isa import Insn
from . import bounds
from . import tnum as tn
from .regs import (
    CONST_PTR_TO_MAP, KERNEL_VALUE, MAYBE_NULL, PKT_TYPES, PTR_TO_CTX, PTR_TO_FUNC, PTR_TO_MAP_KEY,
    PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_STACK, SCALAR, S64_MAX, S64_MIN,
    U64, Reg, mark_32_unbounded, set_const, set_kernel_value, set_unknown, type_str,
)
from .scalar import alu_divmod, alu_scalar, bswap, neg
from .state import State

ALU_STR = {isa.ADD: "+=", isa.SUB: "-=", isa.MUL: "*=", isa.DIV: "/=", isa.OR: "|=", isa.AND: "&=",
           isa.LSH: "<<=", isa.RSH: ">>=", isa.NEG: "neg", isa.MOD: "%=", isa.XOR: "^=", isa.MOV: "=",
           isa.ARSH: "s>>=", isa.END: "endian"}
ARITH_PTR_TYPES = frozenset({PTR_TO_CTX, PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY, PTR_TO_STACK, PTR_TO_PACKET_META,
                             PTR_TO_PACKET, PTR_TO_MEM, PTR_TO_FUNC})
MAX_PACKET_OFF = 0xFFFF
MAX_VAR_OFF = 1 << 29


class AluMixin:
    def check_alu(self, st: State, insn: Insn) -> None:
        op = insn.opcode & 0xF0
        is64 = insn.cls == isa.ALU64
        regs = st.frames[-1].regs
        if op in (isa.NEG, isa.END):
            d = self.read_reg(st, insn.dst)
            self.write_reg(st, insn.dst)
            if d.type == KERNEL_VALUE:
                return
            if d.type != SCALAR:
                if not self.opts.privileged:
                    raise self.reject(f"R{insn.dst} pointer arithmetic prohibited")
                set_unknown(d)
                return
            d.id = 0
            if op == isa.NEG:
                neg(d, is64)
            else:
                bswap(d, insn.imm, bool(insn.opcode & isa.TO_BE), is64)
            return
        if op == isa.MOV:
            self._mov(st, insn, is64)
            return
        srcx = bool(insn.opcode & isa.X)
        if srcx:
            self.read_reg(st, insn.src)
        self.read_reg(st, insn.dst)
        if op in (isa.DIV, isa.MOD) and not srcx and insn.imm == 0:
            raise self.reject("div by zero")
        if op in (isa.LSH, isa.RSH, isa.ARSH) and not srcx:
            size = 64 if is64 else 32
            if insn.imm < 0 or insn.imm >= size:
                raise self.reject(f"invalid shift {insn.imm}")
        self.write_reg(st, insn.dst)
        d = regs[insn.dst]
        if srcx:
            s = regs[insn.src]
            if s.type == KERNEL_VALUE or d.type == KERNEL_VALUE:
                set_kernel_value(s)
                set_kernel_value(d)
                return
        else:
            if d.type == KERNEL_VALUE:
                return
            s = Reg()
            set_const(s, insn.imm)  # sign-extended, as __mark_reg_known(&off_reg, insn->imm)
        if s.type != SCALAR:
            if d.type != SCALAR:
                if op == isa.SUB and self.opts.privileged:
                    set_unknown(d)
                    return
                raise self.reject(f"R{insn.dst} pointer {ALU_STR[op]} pointer prohibited")
            self.mark_precise(st, insn.dst)
            self._ptr_arith(st, insn, s, d, d, is64, op)
            return
        if d.type != SCALAR:
            if srcx:
                self.mark_precise(st, insn.src)
            self._ptr_arith(st, insn, d, s, d, is64, op)
            return
        if srcx and d.precise:
            self.mark_precise(st, insn.src)
        d.id = 0
        if op in (isa.DIV, isa.MOD):
            alu_divmod(op, d, s, is64, insn.off == 1)
        else:
            alu_scalar(op, d, s, is64)

    # -- mov ---------------------------------------------------------------------------------------------
    def _mov(self, st: State, insn: Insn, is64: bool) -> None:
        if insn.opcode & isa.X:
            s = self.read_reg(st, insn.src)
            d = self.write_reg(st, insn.dst)
            if is64:
                if insn.off == 0:
                    if s.type == SCALAR and not s.id and s.var.mask:
                        s.id = self.new_id()
                    d.assign(s)
                    return
                if s.type == SCALAR:
                    no_sext = s.umax < (1 << (insn.off - 1))
                    if no_sext and not s.id and s.var.mask:
                        s.id = self.new_id()
                    d.assign(s)
                    if not no_sext:
                        d.id = 0
                    bounds.coerce_to_size_sx(d, insn.off >> 3)
                elif s.type == KERNEL_VALUE:
                    set_kernel_value(d)
                else:
                    if not self.opts.privileged:
                        raise self.reject(f"R{insn.src} sign-extension part of pointer")
                    set_unknown(d)
                return
            # 32-bit moves
            if s.type == SCALAR:
                if insn.off == 0:
                    is_u32 = s.smin >= 0 and s.umax <= 0xFFFFFFFF
                    if is_u32 and not s.id and s.var.mask:
                        s.id = self.new_id()
                    d.assign(s)
                    if not is_u32:
                        d.id = 0
                else:
                    no_sext = s.umax < (1 << (insn.off - 1))
                    if no_sext and not s.id and s.var.mask:
                        s.id = self.new_id()
                    d.assign(s)
                    if not no_sext:
                        d.id = 0
                    bounds.coerce_to_size_sx(d, insn.off >> 3)
            elif s.type == KERNEL_VALUE:
                set_kernel_value(d)
                return
            else:
                if not self.opts.privileged:
                    raise self.reject(f"R{insn.src} partial copy of pointer")
                set_unknown(d)
            bounds.zext_32_to_64(d)
            bounds.sync(d)
            return
        d = self.write_reg(st, insn.dst)
        set_const(d, insn.imm if is64 else insn.imm & 0xFFFFFFFF)

    # -- pointer arithmetic (adjust_ptr_min_max_vals) -------------------------------------------------------
    def _ptr_arith(self, st: State, insn: Insn, ptr: Reg, off_reg: Reg, dst: Reg, is64: bool, op: int) -> None:
        dno = insn.dst
        if not is64:
            if op == isa.SUB and self.opts.privileged:
                set_unknown(dst)
                return
            raise self.reject(f"R{dno} 32-bit pointer arithmetic prohibited")
        if ptr.type & MAYBE_NULL:
            raise self.reject(f"R{dno} pointer arithmetic on {type_str(ptr.type)} prohibited, null-check it first")
        known = off_reg.var.mask == 0
        smin_val = off_reg.smin
        base = ptr.type & 0xFF
        if base == CONST_PTR_TO_MAP and known and smin_val == 0 and op == isa.ADD:
            pass
        elif base not in ARITH_PTR_TYPES:
            raise self.reject(f"R{dno} pointer arithmetic on {type_str(ptr.type)} prohibited")
        if op in (isa.AND, isa.OR, isa.XOR):
            raise self.reject(f"R{dno} bitwise operator {ALU_STR[op]} on pointer prohibited")
        if op not in (isa.ADD, isa.SUB):
            raise self.reject(f"R{dno} pointer arithmetic with {ALU_STR[op]} operator prohibited")
        if op == isa.SUB and dst is off_reg:
            raise self.reject(f"R{dno} tried to subtract pointer from scalar")
        if op == isa.SUB and base == PTR_TO_STACK:
            raise self.reject(f"R{dno} subtraction from stack pointer prohibited")
        self._sane_offset(off_reg, ptr, dno)
        self._sane_offset(ptr, ptr, dno)
        res = ptr.copy()
        mark_32_unbounded(res)
        if known:
            delta = smin_val if op == isa.ADD else -smin_val
            new_off = ptr.off + delta
            if -(1 << 31) <= new_off < (1 << 31):
                res.off = new_off
                self._finish_ptr(res, dno, base)
                dst.assign(res)
                return
        # A new variable offset.
        if op == isa.ADD:
            smin, smax = ptr.smin + off_reg.smin, ptr.smax + off_reg.smax
            umin, umax = ptr.umin + off_reg.umin, ptr.umax + off_reg.umax
            res.var = tn.add(ptr.var, off_reg.var)
        else:
            smin, smax = ptr.smin - off_reg.smax, ptr.smax - off_reg.smin
            if ptr.umin < off_reg.umax:
                umin, umax = 0, U64
            else:
                umin, umax = ptr.umin - off_reg.umax, ptr.umax - off_reg.umin
            res.var = tn.sub(ptr.var, off_reg.var)
        if smin < S64_MIN or smax > S64_MAX:
            smin, smax = S64_MIN, S64_MAX
        if umax > U64:
            umin, umax = 0, U64
        res.smin, res.smax, res.umin, res.umax = smin, smax, umin, umax
        if base in PKT_TYPES:
            res.id = self.new_id()
            if op == isa.ADD or off_reg.smin < 0:
                res.range = 0
        self._finish_ptr(res, dno, base)
        dst.assign(res)

    def _finish_ptr(self, res: Reg, dno: int, base: int) -> None:
        self._sane_offset(res, res, dno)
        bounds.sync(res)
        mark_32_unbounded(res)

    def _sane_offset(self, reg: Reg, ptr: Reg, dno: int) -> None:
        """check_reg_sane_offset(): keep pointer offsets far from overflow."""
        known = reg.var.mask == 0
        val = bounds.s64(reg.var.value)
        smin = reg.smin
        ptype = type_str(ptr.type)
        if known and (val >= MAX_VAR_OFF or val <= -MAX_VAR_OFF):
            raise self.reject(f"math between {ptype} pointer and {val} is not allowed")
        if reg.off >= MAX_VAR_OFF or reg.off <= -MAX_VAR_OFF:
            raise self.reject(f"{ptype} pointer offset {reg.off} is not allowed")
        if smin == S64_MIN:
            raise self.reject(f"math between {ptype} pointer and register with unbounded min value is not allowed")
        if smin <= -MAX_VAR_OFF or smin >= MAX_VAR_OFF:
            raise self.reject(f"value {smin} makes {ptype} pointer be out of bounds")
