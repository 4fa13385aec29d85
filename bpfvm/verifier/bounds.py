"""Keeping a register's tnum and its six ranges consistent (reg_bounds_sync and its helpers in verifier.c).

Every transfer function ends with `sync(reg)`: the ranges learn from the tnum and from each other, then the
tnum learns from the ranges. Each step only removes values that no range or tnum allows, so it is sound.
"""

from __future__ import annotations

from . import tnum as tn
from .regs import S32_MAX, S32_MIN, S64_MAX, S64_MIN, U32, U64, Reg


def s64(v: int) -> int:
    v &= U64
    return v - (1 << 64) if v >> 63 else v


def s32(v: int) -> int:
    v &= U32
    return v - (1 << 32) if v >> 31 else v


def update_reg32_bounds(r: Reg) -> None:
    v, m = r.var.value & U32, r.var.mask & U32
    r.s32min = max(r.s32min, s32(v | (m & 0x80000000)))
    r.s32max = min(r.s32max, s32(v | (m & 0x7FFFFFFF)))
    r.u32min = max(r.u32min, v)
    r.u32max = min(r.u32max, v | m)


def update_reg64_bounds(r: Reg) -> None:
    v, m = r.var.value, r.var.mask
    r.smin = max(r.smin, s64(v | (m & (1 << 63))))
    r.smax = min(r.smax, s64(v | (m & S64_MAX)))
    r.umin = max(r.umin, v)
    r.umax = min(r.umax, v | m)


def update_reg_bounds(r: Reg) -> None:
    update_reg32_bounds(r)
    update_reg64_bounds(r)


def _deduce32(r: Reg) -> None:
    if (r.umin >> 32) == (r.umax >> 32):
        r.u32min = max(r.u32min, r.umin & U32)
        r.u32max = min(r.u32max, r.umax & U32)
        if s32(r.umin) <= s32(r.umax):
            r.s32min = max(r.s32min, s32(r.umin))
            r.s32max = min(r.s32max, s32(r.umax))
    if (r.smin >> 32) == (r.smax >> 32):
        if (r.smin & U32) <= (r.smax & U32):
            r.u32min = max(r.u32min, r.smin & U32)
            r.u32max = min(r.u32max, r.smax & U32)
        if s32(r.smin) <= s32(r.smax):
            r.s32min = max(r.s32min, s32(r.smin))
            r.s32max = min(r.s32max, s32(r.smax))
    if (((r.umin >> 32) + 1) & U32) == ((r.umax >> 32) & U32) and s32(r.umin) < 0 <= s32(r.umax):
        r.s32min = max(r.s32min, s32(r.umin))
        r.s32max = min(r.s32max, s32(r.umax))
    if (((r.smin >> 32) + 1) & U32) == ((r.smax >> 32) & U32) and s32(r.smin) < 0 <= s32(r.smax):
        r.s32min = max(r.s32min, s32(r.smin))
        r.s32max = min(r.s32max, s32(r.smax))
    if s32(r.u32min) <= s32(r.u32max):
        r.s32min = max(r.s32min, s32(r.u32min))
        r.s32max = min(r.s32max, s32(r.u32max))
    if (r.s32min & U32) <= (r.s32max & U32):
        r.u32min = max(r.s32min & U32, r.u32min)
        r.u32max = min(r.s32max & U32, r.u32max)


def _deduce64(r: Reg) -> None:
    if s64(r.umin) <= s64(r.umax):
        r.smin = max(r.smin, s64(r.umin))
        r.smax = min(r.smax, s64(r.umax))
    if (r.smin & U64) <= (r.smax & U64):
        r.umin = max(r.smin & U64, r.umin)
        r.umax = min(r.smax & U64, r.umax)
    else:
        if r.umax < (r.smin & U64):
            r.smin = s64(r.umin)
            r.umax = min(r.umax, r.smax & U64)
        elif (r.smax & U64) < r.umin:
            r.smax = s64(r.umax)
            r.umin = max(r.umin, r.smin & U64)


def _deduce_mixed(r: Reg) -> None:
    hi = ~U32 & U64
    r.umin = max(r.umin, (r.umin & hi) | r.u32min)
    r.umax = min(r.umax, (r.umax & hi) | r.u32max)
    r.smin = max(r.smin, s64((r.smin & hi) | r.u32min))
    r.smax = min(r.smax, s64((r.smax & hi) | r.u32max))
    if r.s32min >= 0 and r.smin >= S32_MIN and r.smax <= S32_MAX:
        r.smin, r.smax = r.s32min, r.s32max
        r.umin, r.umax = r.s32min, r.s32max
        r.var = tn.intersect(r.var, tn.trange(r.smin & U64, r.smax & U64))


def deduce_bounds(r: Reg) -> None:
    _deduce32(r)
    _deduce64(r)
    _deduce_mixed(r)


def bound_offset(r: Reg) -> None:
    var64 = tn.intersect(r.var, tn.trange(r.umin, r.umax))
    var32 = tn.intersect(tn.subreg(var64), tn.trange(r.u32min, r.u32max))
    r.var = tn.tor(tn.clear_subreg(var64), var32)


def sync(r: Reg) -> None:
    """reg_bounds_sync()."""
    v, m = r.var
    if m == 0:
        # A constant: the ranges collapse to it (when they admit it; otherwise the general path below
        # leaves them inconsistent, which is_empty() reports).
        v32 = v & U32
        sv = v - (1 << 64) if v >> 63 else v
        sv32 = v32 - (1 << 32) if v32 >> 31 else v32
        if r.umin <= v <= r.umax and r.smin <= sv <= r.smax and r.u32min <= v32 <= r.u32max \
                and r.s32min <= sv32 <= r.s32max:
            r.umin = r.umax = v
            r.smin = r.smax = sv
            r.u32min = r.u32max = v32
            r.s32min = r.s32max = sv32
            return
    elif m == U64 and r.umin == 0 and r.umax == U64 and r.smin == S64_MIN and r.smax == S64_MAX \
            and r.u32min == 0 and r.u32max == U32 and r.s32min == S32_MIN and r.s32max == S32_MAX:
        return  # fully unknown: nothing to learn
    update_reg_bounds(r)
    deduce_bounds(r)
    deduce_bounds(r)
    bound_offset(r)
    update_reg_bounds(r)


def is_empty(r: Reg) -> bool:
    """Do the bounds and the tnum admit no value at all (a branch that cannot be taken)?"""
    if r.umin > r.umax or r.smin > r.smax or r.u32min > r.u32max or r.s32min > r.s32max:
        return True
    v, m = r.var
    if v & m:
        return True
    # The tnum's extreme values must meet the unsigned range.
    if v > r.umax or (v | m) < r.umin:
        return True
    lo32, hi32 = v & U32, (v | m) & U32
    if lo32 > r.u32max or hi32 < r.u32min:
        return True
    return False


def assign_32_into_64(r: Reg) -> None:
    """__reg_assign_32_into_64(): the 64-bit ranges after a 32-bit result is zero-extended."""
    r.umin, r.umax = r.u32min, r.u32max
    if 0 <= r.s32min <= S32_MAX and 0 <= r.s32max <= S32_MAX:
        r.smin, r.smax = r.s32min, r.s32max
    else:
        r.smin, r.smax = 0, U32


def zext_32_to_64(r: Reg) -> None:
    r.var = tn.subreg(r.var)
    assign_32_into_64(r)


def coerce_to_size(r: Reg, size: int) -> None:
    """Keep the low `size` bytes, zero-extended (loads narrower than 8 bytes)."""
    if size >= 8:
        return
    r.var = tn.cast(r.var, size)
    mask = (1 << (size * 8)) - 1
    if (r.umin & ~mask) == (r.umax & ~mask):
        r.umin &= mask
        r.umax &= mask
    else:
        r.umin, r.umax = 0, mask
    r.smin, r.smax = r.umin, r.umax
    if size < 4:
        r.s32min, r.s32max, r.u32min, r.u32max = S32_MIN, S32_MAX, 0, U32
    elif size == 4:
        pass
    sync(r)


def coerce_to_size_sx(r: Reg, size: int) -> None:
    """Sign-extend the low `size` bytes to 64 bits (movsx and sign-extending loads). Sound, not the sharpest."""
    bits = size * 8
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if r.var.mask == 0:
        v = r.var.value & ((1 << bits) - 1)
        v = v - (1 << bits) if v >> (bits - 1) else v
        from .regs import mark_known

        mark_known(r, v)
        return
    if r.umax <= hi:
        return  # no value has its sign bit set: unchanged
    if lo <= r.smin and r.smax <= hi:
        return  # every value is already the sign extension of its low bits
    r.var = tn.UNKNOWN
    r.smin, r.smax = lo, hi
    r.umin, r.umax = 0, U64
    r.s32min, r.s32max = (lo, hi) if bits <= 32 else (S32_MIN, S32_MAX)
    r.u32min, r.u32max = 0, U32
    # The tnum of a sign-extended value: the low bits are unknown, the upper ones copies of the sign bit.
    sync(r)


def reg_const_value(r: Reg, is32: bool) -> int:
    return r.var.value & U32 if is32 else r.var.value


def reg_is_const(r: Reg, is32: bool) -> bool:
    return not (r.var.mask & U32) if is32 else r.var.mask == 0


__all__ = [
    "S64_MIN", "S64_MAX", "U64", "U32", "sync", "is_empty", "coerce_to_size", "coerce_to_size_sx",
    "zext_32_to_64", "s32", "s64",
]
