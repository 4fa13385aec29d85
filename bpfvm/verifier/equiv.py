"""State equivalence for pruning (states_equal / regsafe / stacksafe / refsafe).

`old` (a checkpoint whose paths were all verified) covers `cur` when every live register and stack slot of
old admits every value cur may hold. Three strengths, as in the kernel:
  NOT_EXACT     imprecise scalars of old match any scalar (precision tracking makes this sound);
  RANGE_WITHIN  every scalar is compared by its ranges (used for loop convergence and where precision
                marks may be incomplete);
  EXACT         the states are identical up to ids (infinite loop detection).
"""

from __future__ import annotations

from . import tnum as tn
from .regs import (
    KERNEL_VALUE, NOT_INIT, PKT_TYPES, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_STACK, SCALAR, Reg,
)
from .state import DYNPTR, INVALID, ITER, MISC, REG_SIZE, SPILL, ZERO, Frame, State

NOT_EXACT, RANGE_WITHIN, EXACT = 0, 1, 2
_EMPTY_TYPES = [INVALID] * REG_SIZE


class IdMap:
    """A one-to-one correspondence between ids of old and ids of cur (check_ids)."""

    __slots__ = ("fwd", "rev", "tmp")

    def __init__(self) -> None:
        self.fwd: dict[int, int] = {}
        self.rev: dict[int, int] = {}
        self.tmp = 1 << 40

    def check(self, old: int, cur: int) -> bool:
        if not old:
            return not cur
        if not cur:
            return False
        got = self.fwd.get(old)
        if got is not None:
            return got == cur
        if cur in self.rev:
            return False
        self.fwd[old] = cur
        self.rev[cur] = old
        return True

    def check_scalar(self, old: int, cur: int) -> bool:
        if not old:
            self.tmp += 1
            old = self.tmp
        if not cur:
            self.tmp += 1
            cur = self.tmp
        return self.check(old, cur)


def range_within(o: Reg, c: Reg) -> bool:
    return (o.umin <= c.umin and c.umax <= o.umax and o.smin <= c.smin and c.smax <= o.smax
            and o.u32min <= c.u32min and c.u32max <= o.u32max and o.s32min <= c.s32min and c.s32max <= o.s32max)


def _same_fields(o: Reg, c: Reg) -> bool:
    return (o.type == c.type and o.off == c.off and o.map == c.map and o.mem_size == c.mem_size
            and o.frameno == c.frameno and o.subprog == c.subprog and o.range == c.range
            and o.dyn_type == c.dyn_type and o.btf_name == c.btf_name and o.dyn_first == c.dyn_first
            and o.iter_kind == c.iter_kind and o.iter_state == c.iter_state and o.iter_depth == c.iter_depth
            and o.parent_id == c.parent_id)


def regs_exact(o: Reg, c: Reg, ids: IdMap) -> bool:
    return (_same_fields(o, c) and o.var == c.var and o.smin == c.smin and o.smax == c.smax and o.umin == c.umin
            and o.umax == c.umax and o.s32min == c.s32min and o.s32max == c.s32max and o.u32min == c.u32min
            and o.u32max == c.u32max and ids.check(o.id, c.id) and ids.check(o.ref_obj_id, c.ref_obj_id))


def regsafe(o: Reg, c: Reg, ids: IdMap, mode: int) -> bool:
    if o.type == NOT_INIT:
        return mode != EXACT or c.type == NOT_INIT
    if mode == EXACT:
        if o.type == SCALAR and c.type == SCALAR:
            return (o.var == c.var and range_within(o, c) and range_within(c, o) and ids.check_scalar(o.id, c.id))
        return regs_exact(o, c, ids)
    if o.type != c.type:
        return False
    if o.type == SCALAR:
        if not o.precise and mode == NOT_EXACT:
            return True
        return ids.check_scalar(o.id, c.id) and range_within(o, c) and tn.tin(o.var, c.var)
    if o.type == KERNEL_VALUE:
        return True
    base = o.type & 0xFF
    if base in (PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY, PTR_TO_MEM):
        return (o.off == c.off and o.map == c.map and o.mem_size == c.mem_size and range_within(o, c)
                and tn.tin(o.var, c.var) and ids.check(o.id, c.id) and ids.check(o.ref_obj_id, c.ref_obj_id))
    if base in PKT_TYPES:
        if o.range > c.range or o.off != c.off:
            return False
        return ids.check(o.id, c.id) and range_within(o, c) and tn.tin(o.var, c.var)
    if base == PTR_TO_STACK:
        return regs_exact(o, c, ids) and o.frameno == c.frameno
    return regs_exact(o, c, ids)


def _misc_like(kind: int, privileged: bool) -> bool:
    return kind in (MISC, ZERO) or (kind == INVALID and privileged)


def stacksafe(old: Frame, cur: Frame, ids: IdMap, mode: int, privileged: bool) -> bool:
    ncur = len(cur.stack)
    for spi, os_ in enumerate(old.stack):
        otypes = os_.types
        if spi < ncur:
            cs = cur.stack[spi]
            ctypes = cs.types
        else:
            cs = None
            ctypes = _EMPTY_TYPES
        if mode == EXACT:
            if otypes != ctypes:
                return False
            if otypes[REG_SIZE - 1] in (SPILL, DYNPTR, ITER) and cs is not None:
                if not regsafe(os_.reg, cs.reg, ids, EXACT):
                    return False
            continue
        last = otypes[REG_SIZE - 1]
        if last == SPILL:
            if cs is not None and ctypes == otypes:
                if not regsafe(os_.reg, cs.reg, ids, mode):
                    return False
                continue
            if not (mode == NOT_EXACT and os_.reg.type == SCALAR and not os_.reg.precise):
                return False
            # An imprecise spilled scalar reads like MISC: cur may hold anything there but a pointer.
            for k in range(REG_SIZE):
                ok, ck = otypes[k], ctypes[k]
                if ok == SPILL:
                    if ck == SPILL:
                        if cs is None or cs.reg.type != SCALAR:
                            return False
                    elif not _misc_like(ck, privileged):
                        return False
                elif not _byte_ok(ok, ck, privileged):
                    return False
            continue
        if last in (DYNPTR, ITER) or otypes[0] in (DYNPTR, ITER):
            if cs is None or ctypes != otypes:
                return False
            o, c = os_.reg, cs.reg
            if last == DYNPTR or otypes[0] == DYNPTR:
                if o.dyn_type != c.dyn_type or o.dyn_first != c.dyn_first or not ids.check(o.ref_obj_id,
                                                                                           c.ref_obj_id):
                    return False
            else:
                if o.iter_kind != c.iter_kind or o.iter_state != c.iter_state or not ids.check(o.ref_obj_id,
                                                                                               c.ref_obj_id):
                    return False
                if mode == EXACT and o.iter_depth != c.iter_depth:
                    return False
            continue
        for k in range(REG_SIZE):
            if not _byte_ok(otypes[k], ctypes[k], privileged):
                return False
    return True


def _byte_ok(ok: int, ck: int, privileged: bool) -> bool:
    if ok == INVALID:
        return True
    if ok == MISC:
        return privileged or ck in (MISC, ZERO)
    if ok == ZERO:
        return ck == ZERO
    return ok == ck


def refsafe(old: State, cur: State, ids: IdMap) -> bool:
    if len(old.refs) != len(cur.refs):
        return False
    for a, b in zip(old.refs, cur.refs):
        if a.kind != b.kind or a.ptr != b.ptr or not ids.check(a.id, b.id):
            return False
    return True


def states_equal(old: State, cur: State, mode: int, live: list[int], privileged: bool) -> bool:
    """Does `old` cover `cur`? `live` holds the live-register mask of each frame of old."""
    if len(old.frames) != len(cur.frames) or old.instance != cur.instance:
        return False
    for fo, fc in zip(old.frames, cur.frames):
        if fo.callsite != fc.callsite or fo.in_callback != fc.in_callback or fo.subprog != fc.subprog:
            return False
    ids = IdMap()
    for fi, (fo, fc) in enumerate(zip(old.frames, cur.frames)):
        mask = live[fi]
        oregs, cregs = fo.regs, fc.regs
        for r in range(10):
            if (mask >> r) & 1 and not regsafe(oregs[r], cregs[r], ids, mode):
                return False
        if not stacksafe(fo, fc, ids, mode, privileged):
            return False
    return refsafe(old, cur, ids)
