"""Scalar transfer functions: ALU operations on (tnum, ranges), branch prediction and branch refinement.

These follow adjust_scalar_min_max_vals(), is_scalar_branch_taken() and regs_refine_cond_op() of the kernel.
Where the kernel gives up (division, unknown shift amounts) the result is an unknown scalar; where both
operands are constants the result is computed exactly. Everything here works on `Reg` objects in place.
"""

from __future__ import annotations

from .. import isa
from . import tnum as tn
from .bounds import (
    reg_const_value, reg_is_const, s32, s64, sync, update_reg32_bounds, update_reg_bounds, zext_32_to_64,
)
from .regs import (
    S32_MAX, S32_MIN, S64_MAX, S64_MIN, U32, U64, Reg, mark_32_unbounded, mark_64_unbounded, mark_known,
    mark_known32, mark_unbounded,
)


def _set_unknown_value(r: Reg) -> None:
    r.var = tn.UNKNOWN
    mark_unbounded(r)


# -- 64/32-bit range transfer functions --------------------------------------------------------------------

def _add(d: Reg, s: Reg) -> None:
    smin, smax = d.smin + s.smin, d.smax + s.smax
    if smin < S64_MIN or smax > S64_MAX:
        smin, smax = S64_MIN, S64_MAX
    umin, umax = d.umin + s.umin, d.umax + s.umax
    if umin > U64 or umax > U64:
        if (umin >> 64) == (umax >> 64) and umax - umin <= U64:
            umin, umax = umin & U64, umax & U64  # both ends wrapped once: still ordered
        else:
            umin, umax = 0, U64
    d.smin, d.smax, d.umin, d.umax = smin, smax, umin, umax


def _add32(d: Reg, s: Reg) -> None:
    smin, smax = d.s32min + s.s32min, d.s32max + s.s32max
    if smin < S32_MIN or smax > S32_MAX:
        smin, smax = S32_MIN, S32_MAX
    umin, umax = d.u32min + s.u32min, d.u32max + s.u32max
    if umin > U32 or umax > U32:
        if (umin >> 32) == (umax >> 32) and umax - umin <= U32:
            umin, umax = umin & U32, umax & U32
        else:
            umin, umax = 0, U32
    d.s32min, d.s32max, d.u32min, d.u32max = smin, smax, umin, umax


def _sub(d: Reg, s: Reg) -> None:
    smin, smax = d.smin - s.smax, d.smax - s.smin
    if smin < S64_MIN or smax > S64_MAX:
        smin, smax = S64_MIN, S64_MAX
    if d.umin < s.umax:
        umin, umax = 0, U64
    else:
        umin, umax = d.umin - s.umax, d.umax - s.umin
    d.smin, d.smax, d.umin, d.umax = smin, smax, umin, umax


def _sub32(d: Reg, s: Reg) -> None:
    smin, smax = d.s32min - s.s32max, d.s32max - s.s32min
    if smin < S32_MIN or smax > S32_MAX:
        smin, smax = S32_MIN, S32_MAX
    if d.u32min < s.u32max:
        umin, umax = 0, U32
    else:
        umin, umax = d.u32min - s.u32max, d.u32max - s.u32min
    d.s32min, d.s32max, d.u32min, d.u32max = smin, smax, umin, umax


def _mul(d: Reg, s: Reg) -> None:
    umin, umax = d.umin * s.umin, d.umax * s.umax
    if umax > U64:
        umin, umax = 0, U64
    prods = (d.smin * s.smin, d.smin * s.smax, d.smax * s.smin, d.smax * s.smax)
    smin, smax = min(prods), max(prods)
    if smin < S64_MIN or smax > S64_MAX:
        smin, smax = S64_MIN, S64_MAX
    d.smin, d.smax, d.umin, d.umax = smin, smax, umin, umax


def _mul32(d: Reg, s: Reg) -> None:
    umin, umax = d.u32min * s.u32min, d.u32max * s.u32max
    if umax > U32:
        umin, umax = 0, U32
    prods = (d.s32min * s.s32min, d.s32min * s.s32max, d.s32max * s.s32min, d.s32max * s.s32max)
    smin, smax = min(prods), max(prods)
    if smin < S32_MIN or smax > S32_MAX:
        smin, smax = S32_MIN, S32_MAX
    d.s32min, d.s32max, d.u32min, d.u32max = smin, smax, umin, umax


def _s_from_u64(d: Reg) -> None:
    if s64(d.umin) <= s64(d.umax):
        d.smin, d.smax = s64(d.umin), s64(d.umax)
    else:
        d.smin, d.smax = S64_MIN, S64_MAX


def _s_from_u32(d: Reg) -> None:
    if s32(d.u32min) <= s32(d.u32max):
        d.s32min, d.s32max = s32(d.u32min), s32(d.u32max)
    else:
        d.s32min, d.s32max = S32_MIN, S32_MAX


def _bitwise32(d: Reg, s: Reg, op: int) -> None:
    """32-bit ranges of and/or/xor once d.var holds the result tnum."""
    v, m = d.var.value & U32, d.var.mask & U32
    if not m:
        mark_known32(d, v)
        return
    if op == isa.AND:
        d.u32min, d.u32max = v, min(d.u32max, s.u32max)
    elif op == isa.OR:
        d.u32min, d.u32max = max(d.u32min, s.u32min), v | m
    else:
        d.u32min, d.u32max = v, v | m
    _s_from_u32(d)
    update_reg32_bounds(d)


def _bitwise64(d: Reg, s: Reg, op: int) -> None:
    v, m = d.var
    if not m:
        mark_known(d, v)
        return
    if op == isa.AND:
        d.umin, d.umax = v, min(d.umax, s.umax)
    elif op == isa.OR:
        d.umin, d.umax = max(d.umin, s.umin), v | m
    else:
        d.umin, d.umax = v, v | m
    _s_from_u64(d)
    update_reg_bounds(d)


def _lsh64(d: Reg, shift: int) -> None:
    if shift == 32 and d.s32max >= 0:
        smax = d.s32max << 32
    else:
        smax = S64_MAX
    if shift == 32 and d.s32min >= 0:
        smin = d.s32min << 32
    else:
        smin = S64_MIN
    if d.umax > (1 << (63 - shift)):
        umin, umax = 0, U64
    else:
        umin, umax = d.umin << shift, d.umax << shift
    d.smin, d.smax, d.umin, d.umax = smin, smax, umin, umax


def _lsh32(d: Reg, shift: int) -> None:
    d.s32min, d.s32max = S32_MIN, S32_MAX
    if shift > 31 or d.u32max > (1 << (31 - shift)):
        d.u32min, d.u32max = 0, U32
    else:
        d.u32min, d.u32max = d.u32min << shift, d.u32max << shift


def alu_scalar(op: int, d: Reg, s: Reg, is64: bool) -> None:
    """dst = dst OP src for two scalars (s is not modified). Shifts must have a constant in-range amount, and
    div/mod a non-zero constant divisor, for the result to be tracked; otherwise it is unknown."""
    bits = 64 if is64 else 32
    src_const = reg_is_const(s, not is64)
    if op in (isa.ADD, isa.SUB, isa.MUL):
        if op == isa.ADD:
            _add32(d, s)
            _add(d, s)
            d.var = tn.add(d.var, s.var)
        elif op == isa.SUB:
            _sub32(d, s)
            _sub(d, s)
            d.var = tn.sub(d.var, s.var)
        else:
            _mul32(d, s)
            _mul(d, s)
            d.var = tn.mul(d.var, s.var)
    elif op in (isa.AND, isa.OR, isa.XOR):
        fn = {isa.AND: tn.tand, isa.OR: tn.tor, isa.XOR: tn.txor}[op]
        d.var = fn(d.var, s.var)
        _bitwise32(d, s, op)
        if is64:
            _bitwise64(d, s, op)
    elif op in (isa.LSH, isa.RSH, isa.ARSH):
        amount = reg_const_value(s, not is64)
        if not src_const or amount >= bits:
            _set_unknown_value(d)
        elif not is64:
            sub = tn.subreg(d.var)
            if op == isa.LSH:
                _lsh32(d, amount)
                d.var = tn.subreg(tn.lshift(sub, amount))
            elif op == isa.RSH:
                d.s32min, d.s32max = S32_MIN, S32_MAX
                d.var = tn.rshift(sub, amount)
                d.u32min, d.u32max = d.u32min >> amount, d.u32max >> amount
            else:
                d.s32min, d.s32max = d.s32min >> amount, d.s32max >> amount
                d.var = tn.arshift(sub, amount, 32)
                d.u32min, d.u32max = 0, U32
            mark_64_unbounded(d)
            update_reg32_bounds(d)
        else:
            if op == isa.LSH:
                _lsh64(d, amount)
                _lsh32(d, amount)
                d.var = tn.lshift(d.var, amount)
            elif op == isa.RSH:
                d.smin, d.smax = S64_MIN, S64_MAX
                d.var = tn.rshift(d.var, amount)
                d.umin, d.umax = d.umin >> amount, d.umax >> amount
                mark_32_unbounded(d)
            else:
                d.smin, d.smax = d.smin >> amount, d.smax >> amount
                d.var = tn.arshift(d.var, amount, 64)
                d.umin, d.umax = 0, U64
                mark_32_unbounded(d)
            update_reg_bounds(d)
    elif op in (isa.DIV, isa.MOD):
        raise AssertionError("use alu_divmod")  # pragma: no cover
    else:  # pragma: no cover
        raise AssertionError(f"alu op {op:#x}")
    if not is64:
        zext_32_to_64(d)
    sync(d)


def alu_divmod(op: int, d: Reg, s: Reg, is64: bool, signed: bool) -> None:
    """Division and modulo give an unknown value, even for constants: the kernel tracks nothing here
    (is_safe_to_compute_dst_reg_range), and matching it keeps verdicts and branch facts the kernel's."""
    _set_unknown_value(d)
    if not is64:
        zext_32_to_64(d)
        sync(d)


def neg(d: Reg, is64: bool) -> None:
    old = d.copy()
    mark_known(d, 0)
    _sub32(d, old)
    _sub(d, old)
    d.var = tn.neg(old.var)
    if not is64:
        zext_32_to_64(d)
    sync(d)


def bswap(d: Reg, width: int, to_be: bool, is64: bool) -> None:
    """Byte swaps (`le16`/`be32`/`bswap64` ...) on a little-endian host: `le` truncates, the others swap."""
    mask = (1 << width) - 1
    if not is64 and not to_be:
        from .bounds import coerce_to_size

        coerce_to_size(d, width // 8)
        return
    if d.var.mask == 0:
        v = d.var.value & mask
        mark_known(d, int.from_bytes(v.to_bytes(width // 8, "little"), "big"))
        return
    # Each result byte comes from one source byte: swap value and mask bytewise.
    v = int.from_bytes((d.var.value & mask).to_bytes(width // 8, "little"), "big")
    m = int.from_bytes((d.var.mask & mask).to_bytes(width // 8, "little"), "big")
    d.var = tn.Tnum(v, m)
    mark_unbounded(d)
    sync(d)


# -- branches -----------------------------------------------------------------------------------------------

FLIP = {isa.JGT: isa.JLT, isa.JLT: isa.JGT, isa.JGE: isa.JLE, isa.JLE: isa.JGE, isa.JSGT: isa.JSLT,
        isa.JSLT: isa.JSGT, isa.JSGE: isa.JSLE, isa.JSLE: isa.JSGE, isa.JEQ: isa.JEQ, isa.JNE: isa.JNE,
        isa.JSET: isa.JSET}
JSET_REV = 0x1000  # "jset is false", the kernel's BPF_JSET | BPF_X trick
REV = {isa.JEQ: isa.JNE, isa.JNE: isa.JEQ, isa.JGT: isa.JLE, isa.JLE: isa.JGT, isa.JGE: isa.JLT,
       isa.JLT: isa.JGE, isa.JSGT: isa.JSLE, isa.JSLE: isa.JSGT, isa.JSGE: isa.JSLT, isa.JSLT: isa.JSGE,
       isa.JSET: JSET_REV, JSET_REV: isa.JSET}


def scalar_branch_taken(r1: Reg, r2: Reg, op: int, is32: bool) -> int:
    """1 if the condition always holds, 0 if it never does, -1 if it may go either way."""
    if is32:
        t1, t2 = tn.subreg(r1.var), tn.subreg(r2.var)
        umin1, umax1, smin1, smax1 = r1.u32min, r1.u32max, r1.s32min, r1.s32max
        umin2, umax2, smin2, smax2 = r2.u32min, r2.u32max, r2.s32min, r2.s32max
    else:
        t1, t2 = r1.var, r2.var
        umin1, umax1, smin1, smax1 = r1.umin, r1.umax, r1.smin, r1.smax
        umin2, umax2, smin2, smax2 = r2.umin, r2.umax, r2.smin, r2.smax
    if op in (isa.JEQ, isa.JNE):
        eq = op == isa.JEQ
        if t1.mask == 0 and t2.mask == 0:
            return int((t1.value == t2.value) == eq)
        if umin1 > umax2 or umax1 < umin2 or smin1 > smax2 or smax1 < smin2:
            return 0 if eq else 1
        if not is32:
            if r1.u32min > r2.u32max or r1.u32max < r2.u32min or r1.s32min > r2.s32max or r1.s32max < r2.s32min:
                return 0 if eq else 1
        # Known bits that differ.
        if (t1.value ^ t2.value) & ~(t1.mask | t2.mask):
            return 0 if eq else 1
        return -1
    if op == isa.JSET:
        if t2.mask:
            t1, t2 = t2, t1
        if t2.mask:
            return -1
        if (~t1.mask & t1.value) & t2.value:
            return 1
        if not ((t1.mask | t1.value) & t2.value):
            return 0
        return -1
    if op == isa.JGT:
        return 1 if umin1 > umax2 else 0 if umax1 <= umin2 else -1
    if op == isa.JSGT:
        return 1 if smin1 > smax2 else 0 if smax1 <= smin2 else -1
    if op == isa.JLT:
        return 1 if umax1 < umin2 else 0 if umin1 >= umax2 else -1
    if op == isa.JSLT:
        return 1 if smax1 < smin2 else 0 if smin1 >= smax2 else -1
    if op == isa.JGE:
        return 1 if umin1 >= umax2 else 0 if umax1 < umin2 else -1
    if op == isa.JSGE:
        return 1 if smin1 >= smax2 else 0 if smax1 < smin2 else -1
    if op == isa.JLE:
        return 1 if umax1 <= umin2 else 0 if umin1 > umax2 else -1
    if op == isa.JSLE:
        return 1 if smax1 <= smin2 else 0 if smin1 > smax2 else -1
    return -1


def refine(r1: Reg, r2: Reg, op: int, is32: bool) -> None:
    """Narrow two scalars given that `r1 op r2` holds (regs_refine_cond_op), then sync both."""
    if op in (isa.JGE, isa.JGT, isa.JSGE, isa.JSGT):
        op = FLIP[op]
        r1, r2 = r2, r1
    if op == isa.JEQ:
        if is32:
            r1.u32min = r2.u32min = max(r1.u32min, r2.u32min)
            r1.u32max = r2.u32max = min(r1.u32max, r2.u32max)
            r1.s32min = r2.s32min = max(r1.s32min, r2.s32min)
            r1.s32max = r2.s32max = min(r1.s32max, r2.s32max)
            t = tn.intersect(tn.subreg(r1.var), tn.subreg(r2.var))
            r1.var = tn.with_subreg(r1.var, t)
            r2.var = tn.with_subreg(r2.var, t)
        else:
            r1.umin = r2.umin = max(r1.umin, r2.umin)
            r1.umax = r2.umax = min(r1.umax, r2.umax)
            r1.smin = r2.smin = max(r1.smin, r2.smin)
            r1.smax = r2.smax = min(r1.smax, r2.smax)
            r1.var = r2.var = tn.intersect(r1.var, r2.var)
    elif op == isa.JNE:
        if not reg_is_const(r2, is32):
            r1, r2 = r2, r1
        if reg_is_const(r2, is32):
            val = reg_const_value(r2, is32)
            if is32:
                if r1.u32min == val:
                    r1.u32min += 1
                if r1.u32max == val:
                    r1.u32max -= 1
                if r1.s32min == s32(val):
                    r1.s32min += 1
                if r1.s32max == s32(val):
                    r1.s32max -= 1
            else:
                if r1.umin == val:
                    r1.umin += 1
                if r1.umax == val:
                    r1.umax -= 1
                if r1.smin == s64(val):
                    r1.smin += 1
                if r1.smax == s64(val):
                    r1.smax -= 1
    elif op == isa.JSET:
        if not reg_is_const(r2, is32):
            r1, r2 = r2, r1
        if reg_is_const(r2, is32):
            val = reg_const_value(r2, is32)
            if val and not (val & (val - 1)):
                if is32:
                    r1.var = tn.with_subreg(r1.var, tn.tor(tn.subreg(r1.var), tn.const(val)))
                else:
                    r1.var = tn.tor(r1.var, tn.const(val))
    elif op == JSET_REV:
        if not reg_is_const(r2, is32):
            r1, r2 = r2, r1
        if reg_is_const(r2, is32):
            val = reg_const_value(r2, is32)
            mark_unbounded(r1)
            if is32:
                r1.var = tn.with_subreg(r1.var, tn.tand(tn.subreg(r1.var), tn.const(~val & U32)))
            else:
                r1.var = tn.tand(r1.var, tn.const(~val & U64))
    elif op == isa.JLE:
        if is32:
            r1.u32max = min(r1.u32max, r2.u32max)
            r2.u32min = max(r1.u32min, r2.u32min)
        else:
            r1.umax = min(r1.umax, r2.umax)
            r2.umin = max(r1.umin, r2.umin)
    elif op == isa.JLT:
        if is32:
            r1.u32max = min(r1.u32max, r2.u32max - 1)
            r2.u32min = max(r1.u32min + 1, r2.u32min)
        else:
            r1.umax = min(r1.umax, r2.umax - 1)
            r2.umin = max(r1.umin + 1, r2.umin)
    elif op == isa.JSLE:
        if is32:
            r1.s32max = min(r1.s32max, r2.s32max)
            r2.s32min = max(r1.s32min, r2.s32min)
        else:
            r1.smax = min(r1.smax, r2.smax)
            r2.smin = max(r1.smin, r2.smin)
    elif op == isa.JSLT:
        if is32:
            r1.s32max = min(r1.s32max, r2.s32max - 1)
            r2.s32min = max(r1.s32min + 1, r2.s32min)
        else:
            r1.smax = min(r1.smax, r2.smax - 1)
            r2.smin = max(r1.smin + 1, r2.smin)


def refine_and_sync(r1: Reg, r2: Reg, op: int, is32: bool) -> bool:
    """Refine both registers; False if the condition cannot hold (the ranges became empty)."""
    from .bounds import is_empty

    refine(r1, r2, op, is32)
    for r in (r1, r2):
        if is_empty(r):
            return False
        sync(r)
        if is_empty(r):
            return False
    return True
