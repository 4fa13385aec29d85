"""Soundness of the scalar domain, checked against the instruction semantics on concrete values.

For random abstract values (a tnum and six ranges, kept in sync) and a concrete member of each, every ALU
result, every branch refinement and every branch prediction must still admit what the real instruction
computes. These properties are what the JIT relies on when it drops run-time guards.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfvm import isa
from bpfvm.interp import _sdiv, _smod
from bpfvm.verifier import tnum as tn
from bpfvm.verifier.bounds import is_empty, s32, s64, sync
from bpfvm.verifier.regs import Reg, mark_known, mark_unbounded
from bpfvm.verifier.scalar import (
    REV, alu_divmod, alu_scalar, bswap, neg, refine_and_sync, scalar_branch_taken,
)

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

interesting = st.one_of(
    st.integers(0, U64),
    st.integers(0, 300),
    st.integers(U64 - 300, U64),
    st.integers((1 << 31) - 100, (1 << 31) + 100),
    st.integers(U32 - 100, U32 + 100),
    st.integers((1 << 63) - 100, (1 << 63) + 100),
)


@st.composite
def abstract(draw):
    """(reg, x): an abstract scalar and a concrete value it admits."""
    x = draw(interesting)
    mask = draw(st.one_of(st.just(0), st.integers(0, U64), st.integers(0, 0xFF), st.integers(0, U32),
                          st.just(U64)))
    r = Reg()
    r.type = 1
    r.var = tn.Tnum(x & ~mask & U64, mask)
    mark_unbounded(r)
    # Tighten some ranges around x.
    if draw(st.booleans()):
        lo = draw(st.integers(0, x))
        hi = draw(st.integers(x, U64))
        r.umin, r.umax = lo, hi
    if draw(st.booleans()):
        sx = s64(x)
        r.smin = draw(st.integers(-(1 << 63), sx))
        r.smax = draw(st.integers(sx, (1 << 63) - 1))
    if draw(st.booleans()):
        lo32 = x & U32
        r.u32min = draw(st.integers(0, lo32))
        r.u32max = draw(st.integers(lo32, U32))
    sync(r)
    assert not is_empty(r)
    return r, x


def admits(r: Reg, x: int) -> bool:
    x &= U64
    return (tn.tin(r.var, tn.const(x)) and r.umin <= x <= r.umax and r.smin <= s64(x) <= r.smax
            and r.u32min <= (x & U32) <= r.u32max and r.s32min <= s32(x) <= r.s32max)


@given(abstract())
def test_generator_and_sync_keep_the_value(rx) -> None:
    r, x = rx
    assert admits(r, x)


def concrete_alu(op: int, a: int, b: int, is64: bool) -> int:
    bits = 64 if is64 else 32
    m = (1 << bits) - 1
    a &= m
    b &= m
    if op == isa.ADD:
        r = a + b
    elif op == isa.SUB:
        r = a - b
    elif op == isa.MUL:
        r = a * b
    elif op == isa.AND:
        r = a & b
    elif op == isa.OR:
        r = a | b
    elif op == isa.XOR:
        r = a ^ b
    elif op == isa.LSH:
        r = a << b
    elif op == isa.RSH:
        r = a >> b
    elif op == isa.ARSH:
        r = (a - (1 << bits) if a >> (bits - 1) else a) >> b
    else:
        raise AssertionError(op)
    return r & m


OPS = [isa.ADD, isa.SUB, isa.MUL, isa.AND, isa.OR, isa.XOR, isa.LSH, isa.RSH, isa.ARSH]


@settings(max_examples=3000)
@given(abstract(), abstract(), st.sampled_from(OPS), st.booleans())
def test_alu_is_sound(d, s, op, is64) -> None:
    (dr, x), (sr, y) = d, s
    if op in (isa.LSH, isa.RSH, isa.ARSH):
        bits = 64 if is64 else 32
        y %= bits
        mark_known(sr, y)
    out = dr.copy()
    alu_scalar(op, out, sr, is64)
    assert admits(out, concrete_alu(op, x, y, is64)), (op, is64, x, y, out)


@settings(max_examples=1000)
@given(abstract(), abstract(), st.sampled_from([isa.DIV, isa.MOD]), st.booleans(), st.booleans())
def test_divmod_is_sound(d, s, op, is64, signed) -> None:
    (dr, x), (sr, y) = d, s
    bits = 64 if is64 else 32
    m = (1 << bits) - 1
    a, b = x & m, y & m
    if signed:
        want = _sdiv(a, b, bits) if op == isa.DIV else _smod(a, b, bits)
    elif op == isa.DIV:
        want = a // b if b else 0
    else:
        want = a % b if b else a
    out = dr.copy()
    alu_divmod(op, out, sr, is64, signed)
    assert admits(out, want)


@given(abstract(), st.booleans())
def test_neg_is_sound(d, is64) -> None:
    r, x = d
    out = r.copy()
    neg(out, is64)
    assert admits(out, (-x) & (U64 if is64 else U32))


@given(abstract(), st.sampled_from([16, 32, 64]), st.booleans(), st.booleans())
def test_byte_swaps_are_sound(d, width, to_be, is64) -> None:
    r, x = d
    if is64 and not to_be:
        to_be = True  # bswap64 family
    out = r.copy()
    bswap(out, width, to_be, is64)
    v = x & ((1 << width) - 1)
    want = v if (not is64 and not to_be) else int.from_bytes(v.to_bytes(width // 8, "little"), "big")
    assert admits(out, want)


JUMPS = [isa.JEQ, isa.JNE, isa.JGT, isa.JGE, isa.JLT, isa.JLE, isa.JSGT, isa.JSGE, isa.JSLT, isa.JSLE, isa.JSET]


def holds(op: int, a: int, b: int, is32: bool) -> bool:
    m = U32 if is32 else U64
    a &= m
    b &= m
    sa = s32(a) if is32 else s64(a)
    sb = s32(b) if is32 else s64(b)
    return {
        isa.JEQ: a == b, isa.JNE: a != b, isa.JGT: a > b, isa.JGE: a >= b, isa.JLT: a < b, isa.JLE: a <= b,
        isa.JSGT: sa > sb, isa.JSGE: sa >= sb, isa.JSLT: sa < sb, isa.JSLE: sa <= sb, isa.JSET: bool(a & b),
    }[op]


@settings(max_examples=3000)
@given(abstract(), abstract(), st.sampled_from(JUMPS), st.booleans())
def test_branch_prediction_and_refinement_are_sound(d, s, op, is32) -> None:
    (r1, x), (r2, y) = d, s
    truth = holds(op, x, y, is32)
    pred = scalar_branch_taken(r1, r2, op, is32)
    if pred >= 0:
        assert bool(pred) == truth, (op, is32, x, y)
    a, b = r1.copy(), r2.copy()
    ok = refine_and_sync(a, b, op if truth else REV[op], is32)
    assert ok, (op, truth, x, y)
    assert admits(a, x) and admits(b, y), (op, truth, is32, x, y, a, b)


@given(abstract(), abstract())
def test_equal_refinement_makes_constants(d, s) -> None:
    (r1, x), _ = d, s
    c = Reg()
    c.type = 1
    mark_known(c, x)
    a = r1.copy()
    assert refine_and_sync(a, c.copy(), isa.JEQ, False)
    assert a.var == tn.const(x)


def test_tnum_basics() -> None:
    assert tn.trange(0, 7) == tn.Tnum(0, 7)
    assert tn.trange(8, 15) == tn.Tnum(8, 7)
    assert tn.add(tn.const(2), tn.Tnum(0, 1)) == tn.Tnum(2, 1)
    assert tn.add(tn.const(3), tn.Tnum(0, 1)) == tn.Tnum(0, 7)  # {3, 4}: the carry makes three bits unknown
    assert tn.tin(tn.Tnum(0, 0xFF), tn.const(0x7F))
    assert not tn.tin(tn.const(1), tn.Tnum(0, 1))
    assert tn.mul(tn.const(6), tn.const(7)) == tn.const(42)
    assert tn.arshift(tn.const(0x80000000), 4, 32) == tn.const(0xF8000000)
