"""Tristate numbers: what is known about each bit of a 64-bit value (the kernel's kernel/bpf/tnum.c).

A tnum is a pair `(value, mask)`: bits set in `mask` are unknown, the others equal the bits of `value`
(and `value & mask == 0`). Plain tuples keep copying registers cheap.
"""

from __future__ import annotations

from typing import NamedTuple

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


class Tnum(NamedTuple):
    value: int
    mask: int

    def __str__(self) -> str:
        return f"({self.value:#x}; {self.mask:#x})"


UNKNOWN = Tnum(0, U64)
ZERO = Tnum(0, 0)


def const(value: int) -> Tnum:
    return Tnum(value & U64, 0)


def is_const(a: Tnum) -> bool:
    return a.mask == 0


def is_unknown(a: Tnum) -> bool:
    return a.mask == U64


def trange(lo: int, hi: int) -> Tnum:
    """The smallest tnum that holds every value of the unsigned range [lo, hi]."""
    chi = lo ^ hi
    bits = chi.bit_length()
    if bits > 63:
        return UNKNOWN
    delta = (1 << bits) - 1
    return Tnum(lo & ~delta & U64, delta)


def lshift(a: Tnum, shift: int) -> Tnum:
    return Tnum((a.value << shift) & U64, (a.mask << shift) & U64)


def rshift(a: Tnum, shift: int) -> Tnum:
    return Tnum(a.value >> shift, a.mask >> shift)


def _s(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


def arshift(a: Tnum, shift: int, bits: int) -> Tnum:
    """Arithmetic shift of the low `bits` (32 or 64) bits; the result is zero-extended to 64 bits."""
    m = (1 << bits) - 1
    return Tnum((_s(a.value & m, bits) >> shift) & m, (_s(a.mask & m, bits) >> shift) & m)


def add(a: Tnum, b: Tnum) -> Tnum:
    sm = (a.mask + b.mask) & U64
    sv = (a.value + b.value) & U64
    sigma = (sm + sv) & U64
    chi = sigma ^ sv
    mu = chi | a.mask | b.mask
    return Tnum(sv & ~mu & U64, mu)


def sub(a: Tnum, b: Tnum) -> Tnum:
    dv = (a.value - b.value) & U64
    alpha = (dv + a.mask) & U64
    beta = (dv - b.mask) & U64
    chi = alpha ^ beta
    mu = chi | a.mask | b.mask
    return Tnum(dv & ~mu & U64, mu)


def neg(a: Tnum) -> Tnum:
    return sub(ZERO, a)


def tand(a: Tnum, b: Tnum) -> Tnum:
    alpha = a.value | a.mask
    beta = b.value | b.mask
    v = a.value & b.value
    return Tnum(v, alpha & beta & ~v & U64)


def tor(a: Tnum, b: Tnum) -> Tnum:
    v = a.value | b.value
    mu = a.mask | b.mask
    return Tnum(v, mu & ~v & U64)


def txor(a: Tnum, b: Tnum) -> Tnum:
    v = a.value ^ b.value
    mu = a.mask | b.mask
    return Tnum(v & ~mu & U64, mu)


def mul(a: Tnum, b: Tnum) -> Tnum:
    """Multiplication as the kernel's tnum_mul: exact on known bits, sound on the unknown ones."""
    acc = Tnum((a.value * b.value) & U64, 0)
    # hma(acc, a.mask, b.mask | b.value)
    value, mask = a.mask, b.mask | b.value
    while mask:
        if mask & 1:
            acc = add(acc, Tnum(0, value))
        mask >>= 1
        value = (value << 1) & U64
    value, mask = b.mask, a.value
    while mask:
        if mask & 1:
            acc = add(acc, Tnum(0, value))
        mask >>= 1
        value = (value << 1) & U64
    return acc


def intersect(a: Tnum, b: Tnum) -> Tnum:
    v = a.value | b.value
    mu = a.mask & b.mask
    return Tnum(v & ~mu & U64, mu)


def cast(a: Tnum, size: int) -> Tnum:
    """Keep the low `size` bytes (zero extension)."""
    m = (1 << (size * 8)) - 1
    return Tnum(a.value & m, a.mask & m)


def is_aligned(a: Tnum, size: int) -> bool:
    if not size:
        return True
    return not ((a.value | a.mask) & (size - 1))


def tin(a: Tnum, b: Tnum) -> bool:
    """Is every value of b also a value of a?"""
    if b.mask & ~a.mask:
        return False
    return a.value == (b.value & ~a.mask)


def subreg(a: Tnum) -> Tnum:
    return cast(a, 4)


def clear_subreg(a: Tnum) -> Tnum:
    return lshift(rshift(a, 32), 32)


def with_subreg(reg: Tnum, sub: Tnum) -> Tnum:
    return tor(clear_subreg(reg), subreg(sub))


def const_subreg(a: Tnum, value: int) -> Tnum:
    return with_subreg(a, const(value & U32))


def subreg_is_const(a: Tnum) -> bool:
    return not (a.mask & U32)


def sbin(a: Tnum) -> str:
    return "".join("x" if a.mask >> i & 1 else str(a.value >> i & 1) for i in range(63, -1, -1))
