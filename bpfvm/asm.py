"""Assembler for the BPF assembly of LLVM and the kernel selftests' inline asm, and for `disasm` output.

Both spellings of every instruction are accepted:

    r1 = 1;  w1 = w2;  r1 += -8;  r1 s/= r2;  r1 = (s8)r2;  r1 = -r1;  r1 = be16 r1;  r1 = bswap64 r1
    if r1 != 1 goto +1          if r1 != 0x1 goto pc+1          goto +0 / goto pc+0 / gotol +9 / may_goto +2
    *(u64 *)(r10 - 8) = r0      r0 = *(u32 *)(r1 +8)            r0 = *(s8 *)(r1 + 0)     *(u32 *)(r1 +4) = 7
    lock *(u64 *)(r1 + 0) += r2                                 r0 = *(u32 *)skb[12]     r0 = *(u8 *)skb[r1 + 4]
    r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)   (LLVM)        r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)  (kernel)
    r2 = xchg_64(r1 + 0, r2)   r0 = cmpxchg_64(r1 + 0, r0, r2)  r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)
    r0 = load_acquire((u64 *)(r1 + 0))          store_release((u64 *)(r1 + 0), r2)
    r1 = 0x1122334455667788 ll   r1 = map[id:3]   r1 = map[idx:0]+8   r1 = map[name]   r1 = name ll   r1 = subprog[+4]
    call 7   call bpf_get_prandom_u32   call bpf_get_prandom_u32#7   call pc+3   call label   call kfunc_name   callx r2
    exit

`;` separates statements (LLVM). On lines that start with an `N:` slot index (verifier log, `disasm`
output) what follows a `;` and does not assemble is a comment: the verifier's `0: (b7) r1 = 1 ; R1_w=1`.
`//`, `/* */`, a `#` after blank, and lines starting with `;` (bpftool's source lines) are comments.
A numeric `N:` at the start of a line is a local label when the text refers to it (`goto 1f`, `goto 2b`),
and a slot index otherwise. Named labels (`LBB0_3:`, `l0_%=:`) may precede a statement. `%[name]` is
replaced by `consts[name]`, or by `name` itself (`call %[bpf_get_prandom_u32]`).

`rN = <number>` without `ll` is a 32-bit move, as in LLVM, unless the number does not fit in 32 bits or
the line is in the kernel's syntax (an `N:` index or a `(18)` opcode prefix) and the number is written in
hex: the kernel prints `lddw` as `r1 = 0x1` and moves in decimal, so `0: r1 = 0x1` is a `lddw`.

`call NAME` is a local call when NAME is a label, a helper call when NAME is a uapi helper, and a kfunc
call otherwise: its imm is the index of NAME in the returned Program's `kfuncs`. `r1 = NAME ll` and
`r1 = map[NAME]` load a map by name: src PSEUDO_MAP_IDX and imm the index of NAME in `Program.maps`,
which holds the names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import isa
from .errors import AsmError
from .helper_ids import helper_id
from .isa import Insn
from .program import Program

# --- lexical pieces (each a regex fragment; groups are numbered by the handler that uses them) -------

_REG = r"([rw]\d+)"
_NUM = r"([+-]?\s*(?:0[xX][0-9a-fA-F]+|\d+))"
_UNUM = r"(0[xX][0-9a-fA-F]+|\d+)"
_DEREF = r"\*\s*\(\s*([us](?:8|16|32|64))\s*\*\s*\)"  # *(u64 *)
_CAST = r"\(\s*([us](?:8|16|32|64))\s*\*\s*\)"  # (u64 *)
_MEM = r"\(\s*(r\d+)\s*(?:([+-])\s*(0[xX][0-9a-fA-F]+|\d+))?\s*\)"  # (r10 -8) / (r1 + 0) / (r1)
_BARE_MEM = r"(r\d+)\s*(?:([+-])\s*(0[xX][0-9a-fA-F]+|\d+))?"  # r1 + 0, in LLVM's xchg/cmpxchg
_NAME = r"[A-Za-z_.$][\w.$]*(?:%=[\w.$]*)*"  # labels, incl. selftests' `l0_%=`

_SIZES = {"8": isa.B, "16": isa.H, "32": isa.W, "64": isa.DW}
_ALU_OPS = {
    "+=": isa.ADD, "-=": isa.SUB, "*=": isa.MUL, "/=": isa.DIV, "|=": isa.OR, "&=": isa.AND,
    "<<=": isa.LSH, ">>=": isa.RSH, "%=": isa.MOD, "^=": isa.XOR, "s>>=": isa.ARSH,
    "s/=": isa.DIV, "s%=": isa.MOD,
}
_JMP_OPS = {
    "==": isa.JEQ, "!=": isa.JNE, ">": isa.JGT, ">=": isa.JGE, "<": isa.JLT, "<=": isa.JLE, "&": isa.JSET,
    "s>": isa.JSGT, "s>=": isa.JSGE, "s<": isa.JSLT, "s<=": isa.JSLE,
}
_LOCK_OPS = {"+=": isa.ATOMIC_ADD, "&=": isa.ATOMIC_AND, "|=": isa.ATOMIC_OR, "^=": isa.ATOMIC_XOR}
_FETCH_OPS = {"add": isa.ATOMIC_ADD, "and": isa.ATOMIC_AND, "or": isa.ATOMIC_OR, "xor": isa.ATOMIC_XOR}
_KFUNC_UNKNOWN = "kernel-function"  # what the kernel prints for a kfunc it has no name for
_MAX_KFUNC_INDEX = 0xFFFF  # `call name#N` above this is a BTF id (verifier log), not a Program.kfuncs index


class _Bad(Exception):
    """A statement that does not assemble; the caller adds the line number and the text."""


# --- number and register parsing -------------------------------------------------------------------


def _int(text: str) -> int:
    """A decimal or 0x-hex integer with optional sign and inner blanks (`- 8`)."""
    s = re.sub(r"\s+", "", text)
    neg = s.startswith("-")
    s = s.lstrip("+-")
    value = int(s, 16) if s[:2].lower() == "0x" else int(s, 10)
    return -value if neg else value


def _is_hex(text: str) -> bool:
    return "0x" in text.lower()


def _imm32(text: str) -> int:
    """A 32-bit immediate: signed or unsigned spelling, stored signed as the kernel's `imm` is."""
    value = _int(text)
    if not -(1 << 31) <= value <= isa.U32:
        raise _Bad(f"immediate {text.strip()} does not fit in 32 bits")
    return isa.to_signed(value, 32)


def _u32(text: str, what: str) -> int:
    value = _int(text)
    if not 0 <= value <= isa.U32:
        raise _Bad(f"{what} {text.strip()} is not an unsigned 32-bit number")
    return isa.to_signed(value, 32)


def _off16(value: int, what: str = "offset") -> int:
    if not -(1 << 15) <= value < (1 << 15):
        raise _Bad(f"{what} {value} does not fit in 16 bits")
    return value


def _reg(text: str) -> tuple[str, int]:
    """`r3` -> ('r', 3); `w3` -> ('w', 3)."""
    num = int(text[1:])
    if num > isa.MAX_REG:
        raise _Bad(f"invalid register {text}")
    return text[0], num


def _rreg(text: str) -> int:
    letter, num = _reg(text)
    if letter != "r":
        raise _Bad(f"{text} must be a 64-bit register (r{num})")
    return num


def _same_width(a: str, b: str) -> None:
    if a[0] != b[0]:
        raise _Bad(f"mixes 32- and 64-bit registers ({a}, {b})")


def _mem(base: str, sign: str | None, num: str | None) -> tuple[int, int]:
    off = _int(num) if num else 0
    return _rreg(base), _off16(-off if sign == "-" else off)


def _usize(name: str) -> int:
    if name[0] != "u":
        raise _Bad(f"{name} is not allowed here (only u8, u16, u32, u64)")
    return _SIZES[name[1:]]


# --- parsed statements -----------------------------------------------------------------------------


@dataclass
class _Ref:
    """A jump/call target not yet resolved: a relative offset, a label, or a numeric label `1f`/`2b`."""

    rel: int | None = None
    label: str | None = None
    num: tuple[int, str] | None = None


@dataclass
class _Stmt:
    """One instruction: its slots, or how to build them once a target or a name is resolved."""

    lineno: int
    text: str
    event: int
    slots: int
    insns: list[Insn] | None = None
    ref: _Ref | None = None
    build: Callable[[int], list[Insn]] | None = None
    name: str | None = None  # `call NAME` / `rN = NAME ll`: label, helper, kfunc or map
    name_kind: str = ""
    dst: int = 0
    index: int | None = None  # explicit kfunc (`call name#N`) or map (`map[idx:N]`) index
    opcode: int | None = None  # the `(b7)` prefix, checked against the result
    slot: int = 0


def _ref(text: str) -> _Ref:
    t = text.strip()
    m = re.fullmatch(r"(?:pc)?\s*([+-])\s*" + _UNUM, t)
    if m:
        value = _int(m.group(2))
        return _Ref(rel=-value if m.group(1) == "-" else value)
    m = re.fullmatch(r"(\d+)([fb])", t)
    if m:
        return _Ref(num=(int(m.group(1)), m.group(2)))
    if re.fullmatch(r"\d+", t):
        return _Ref(rel=int(t))
    if re.fullmatch(_NAME, t):
        return _Ref(label=t)
    raise _Bad(f"invalid jump target {t!r}")


def _lddw(dst: int, src: int, lo: int, hi: int) -> list[Insn]:
    return [Insn(isa.OP_LDDW, dst, src, 0, lo), Insn(0, 0, 0, 0, hi)]


@dataclass
class _Ctx:
    """What the line says about the syntax: an `N:` index (kernel syntax) and an `(xx)` opcode prefix."""

    kernel_syntax: bool = False
    opcode: int | None = None


# Each handler gets the match and the context and returns a partly filled _Stmt.
_Handler = Callable[[re.Match, _Ctx], _Stmt]
_STMTS: list[tuple[re.Pattern, _Handler]] = []
_RHS: list[tuple[re.Pattern, Callable[[re.Match, str, _Ctx], _Stmt]]] = []


def _stmt(pattern: str) -> Callable[[_Handler], _Handler]:
    """Register a statement form; forms are tried in definition order, the first full match wins."""
    def deco(fn: _Handler) -> _Handler:
        _STMTS.append((re.compile(pattern), fn))
        return fn
    return deco


def _rhs(pattern: str) -> Callable[[Callable], Callable]:
    """Register a right-hand side of `rN = ...` (tried in definition order)."""
    def deco(fn: Callable) -> Callable:
        _RHS.append((re.compile(pattern), fn))
        return fn
    return deco


def _done(*insns: Insn) -> _Stmt:
    return _Stmt(0, "", 0, len(insns), insns=list(insns))


def _later(slots: int, ref: _Ref, build: Callable[[int], list[Insn]]) -> _Stmt:
    return _Stmt(0, "", 0, slots, ref=ref, build=build)


# --- statements that are not assignments -----------------------------------------------------------


@_stmt(r"exit")
def _exit(m: re.Match, ctx: _Ctx) -> _Stmt:
    return _done(Insn(isa.OP_EXIT))


@_stmt(rf"callx\s+{_REG}")
def _callx(m: re.Match, ctx: _Ctx) -> _Stmt:
    return _done(Insn(isa.OP_CALLX, _rreg(m.group(1))))


@_stmt(r"call\s+(.+)")
def _call(m: re.Match, ctx: _Ctx) -> _Stmt:
    target = m.group(1).strip()
    local = re.fullmatch(r"pc\s*([+-]\s*\d+)(?:#.*)?", target)
    if local:
        return _done(Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, _imm32(local.group(1))))
    if re.fullmatch(_NUM, target):
        return _done(Insn(isa.OP_CALL, 0, isa.PSEUDO_HELPER, 0, _imm32(target)))
    named = re.fullmatch(r"([\w.$-]+)#([+-]?\d+)", target)
    if named:
        return _named_call(named.group(1), _imm32(named.group(2)))
    if re.fullmatch(_NAME, target) or target == _KFUNC_UNKNOWN:
        return _Stmt(0, "", 0, 1, name=target, name_kind="call")
    raise _Bad(f"invalid call target {target!r}")


def _named_call(name: str, imm: int) -> _Stmt:
    """`call NAME#ID` as the verifier log prints it: a helper, `unknown` helper, or a kfunc."""
    if name == "unknown":
        return _done(Insn(isa.OP_CALL, 0, isa.PSEUDO_HELPER, 0, imm))
    hid = helper_id(name) if name.startswith("bpf_") else None
    if hid is not None:
        if hid != imm:
            raise _Bad(f"helper {name} has id {hid}, not {imm}")
        return _done(Insn(isa.OP_CALL, 0, isa.PSEUDO_HELPER, 0, imm))
    if imm < 0:
        raise _Bad(f"kfunc index {imm} is negative")
    if imm > _MAX_KFUNC_INDEX and name != _KFUNC_UNKNOWN:
        # A verifier log's `#N` is the kfunc's BTF id, not an index into Program.kfuncs: number by name.
        return _Stmt(0, "", 0, 1, name=name, name_kind="call")
    stmt = _Stmt(0, "", 0, 1, insns=[Insn(isa.OP_CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, imm)])
    stmt.name, stmt.name_kind, stmt.index = name, "kfunc", imm
    return stmt


@_stmt(rf"gotox\s+{_REG}")
def _gotox(m: re.Match, ctx: _Ctx) -> _Stmt:
    return _done(Insn(isa.JMP | isa.JA | isa.X, _rreg(m.group(1))))


@_stmt(r"(goto|gotol|may_goto)\s+(.+)")
def _goto(m: re.Match, ctx: _Ctx) -> _Stmt:
    kind, ref = m.group(1), _ref(m.group(2))
    if kind == "gotol":
        return _later(1, ref, lambda rel: [Insn(isa.OP_JA32, imm=_imm32(str(rel)))])
    opcode = isa.OP_JA if kind == "goto" else isa.OP_MAY_GOTO
    return _later(1, ref, lambda rel: [Insn(opcode, off=_off16(rel, "jump offset"))])


@_stmt(rf"if\s+{_REG}\s*(s>=|s<=|s>|s<|==|!=|>=|<=|>|<|&)\s*(?:{_REG}|{_NUM})\s+goto\s+(.+)")
def _if(m: re.Match, ctx: _Ctx) -> _Stmt:
    letter, dst = _reg(m.group(1))
    cls = isa.JMP if letter == "r" else isa.JMP32
    op = _JMP_OPS[m.group(2)]
    ref = _ref(m.group(5))
    if m.group(3):
        _same_width(m.group(1), m.group(3))
        src = _reg(m.group(3))[1]
        return _later(1, ref, lambda rel: [Insn(cls | op | isa.X, dst, src, _off16(rel, "jump offset"))])
    imm = _imm32(m.group(4))
    return _later(1, ref, lambda rel: [Insn(cls | op | isa.K, dst, 0, _off16(rel, "jump offset"), imm)])


@_stmt(rf"lock\s+{_DEREF}\s*{_MEM}\s*(\+=|&=|\|=|\^=)\s*{_REG}")
def _lock(m: re.Match, ctx: _Ctx) -> _Stmt:
    size = _usize(m.group(1))
    dst, off = _mem(m.group(2), m.group(3), m.group(4))
    src = _reg(m.group(6))[1]
    return _done(Insn(isa.STX | isa.ATOMIC | size, dst, src, off, _LOCK_OPS[m.group(5)]))


@_stmt(rf"store_release\s*\(\s*{_CAST}\s*{_MEM}\s*,\s*{_REG}\s*\)")
def _store_release(m: re.Match, ctx: _Ctx) -> _Stmt:
    size = _usize(m.group(1))
    dst, off = _mem(m.group(2), m.group(3), m.group(4))
    src = _reg(m.group(5))[1]
    return _done(Insn(isa.STX | isa.ATOMIC | size, dst, src, off, isa.ATOMIC_STORE_REL))


@_stmt(rf"{_DEREF}\s*{_MEM}\s*=\s*(?:{_REG}|{_NUM})")
def _store(m: re.Match, ctx: _Ctx) -> _Stmt:
    size = _usize(m.group(1))
    dst, off = _mem(m.group(2), m.group(3), m.group(4))
    if m.group(5):
        return _done(Insn(isa.STX | isa.MEM | size, dst, _reg(m.group(5))[1], off))
    return _done(Insn(isa.ST | isa.MEM | size, dst, 0, off, _imm32(m.group(6))))


@_stmt(rf"{_REG}\s*(s>>=|s/=|s%=|<<=|>>=|\+=|-=|\*=|/=|\|=|&=|%=|\^=)\s*(?:{_REG}|{_NUM})")
def _alu(m: re.Match, ctx: _Ctx) -> _Stmt:
    letter, dst = _reg(m.group(1))
    cls = isa.ALU64 if letter == "r" else isa.ALU
    sym = m.group(2)
    op, off = _ALU_OPS[sym], (1 if sym in ("s/=", "s%=") else 0)
    if m.group(3):
        _same_width(m.group(1), m.group(3))
        return _done(Insn(cls | op | isa.X, dst, _reg(m.group(3))[1], off))
    return _done(Insn(cls | op | isa.K, dst, 0, off, _imm32(m.group(4))))


@_stmt(rf"{_REG}\s*=\s*(.+)")
def _assign(m: re.Match, ctx: _Ctx) -> _Stmt:
    lhs, rhs = m.group(1), m.group(2).strip()
    for pattern, handler in _RHS:
        found = pattern.fullmatch(rhs)
        if found:
            return handler(found, lhs, ctx)
    raise _Bad("unknown instruction")


# --- right-hand sides of `rN = ...` ----------------------------------------------------------------


@_rhs(rf"{_DEREF}\s*{_MEM}")
def _load(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    name = m.group(1)
    src, off = _mem(m.group(2), m.group(3), m.group(4))
    if name[0] == "s" and name == "s64":
        raise _Bad("there is no sign-extending 64-bit load (use u64)")
    mode = isa.MEMSX if name[0] == "s" else isa.MEM
    return _done(Insn(isa.LDX | mode | _SIZES[name[1:]], _reg(lhs)[1], src, off))


@_rhs(rf"{_DEREF}\s*skb\s*\[\s*(?:{_REG}\s*(?:([+-])\s*{_NUM})?|{_NUM})\s*\]")
def _ld_skb(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    if _rreg(lhs) != 0:
        raise _Bad("packet loads (skb[...]) always load into r0")
    size = _usize(m.group(1))
    if m.group(2):
        imm = _int(m.group(4)) if m.group(4) else 0  # the kernel prints `skb[r1 + -2]`
        imm = _imm32(str(-imm if m.group(3) == "-" else imm))
        return _done(Insn(isa.LD | isa.IND | size, 0, _rreg(m.group(2)), 0, imm))
    return _done(Insn(isa.LD | isa.ABS | size, 0, 0, 0, _imm32(m.group(5))))


@_rhs(rf"load_acquire\s*\(\s*{_CAST}\s*{_MEM}\s*\)")
def _load_acquire(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = _usize(m.group(1))
    src, off = _mem(m.group(2), m.group(3), m.group(4))
    return _done(Insn(isa.STX | isa.ATOMIC | size, _reg(lhs)[1], src, off, isa.ATOMIC_LOAD_ACQ))


def _atomic_size(name: str, is64: bool) -> int:
    size = _usize(name)
    if size not in (isa.W, isa.DW):
        raise _Bad(f"atomic operations are 32 or 64 bit, not {name}")
    if is64 and size != isa.DW:
        raise _Bad(f"atomic64_* needs a u64 operand, not {name}")
    return size


def _same_reg(a: str, b: str, what: str) -> int:
    if _reg(a)[1] != _reg(b)[1]:
        raise _Bad(f"{what} returns the old value in its source register: {a} and {b} must be the same")
    return _reg(b)[1]


@_rhs(rf"atomic(64)?_fetch_(add|and|or|xor)\s*\(\s*{_CAST}\s*{_MEM}\s*,\s*{_REG}\s*\)")
def _fetch(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = _atomic_size(m.group(3), bool(m.group(1)))
    dst, off = _mem(m.group(4), m.group(5), m.group(6))
    src = _same_reg(lhs, m.group(7), "atomic_fetch_*")
    return _done(Insn(isa.STX | isa.ATOMIC | size, dst, src, off, _FETCH_OPS[m.group(2)] | isa.FETCH))


def _xchg_insn(lhs: str, size: int, mem: tuple[str, str | None, str | None], reg: str) -> _Stmt:
    dst, off = _mem(*mem)
    src = _same_reg(lhs, reg, "xchg")
    return _done(Insn(isa.STX | isa.ATOMIC | size, dst, src, off, isa.ATOMIC_XCHG))


@_rhs(rf"atomic(64)?_xchg\s*\(\s*{_CAST}\s*{_MEM}\s*,\s*{_REG}\s*\)")
def _xchg(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = _atomic_size(m.group(2), bool(m.group(1)))
    return _xchg_insn(lhs, size, (m.group(3), m.group(4), m.group(5)), m.group(6))


@_rhs(rf"(xchg_64|xchg32_32)\s*\(\s*{_BARE_MEM}\s*,\s*{_REG}\s*\)")
def _xchg_llvm(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = isa.DW if m.group(1) == "xchg_64" else isa.W
    return _xchg_insn(lhs, size, (m.group(2), m.group(3), m.group(4)), m.group(5))


def _cmpxchg_insn(lhs: str, size: int, mem: tuple[str, str | None, str | None], old: str, new: str) -> _Stmt:
    if _reg(lhs)[1] != 0 or _reg(old)[1] != 0:
        raise _Bad("cmpxchg compares with and returns in r0: write r0 = ...cmpxchg(..., r0, rN)")
    dst, off = _mem(*mem)
    return _done(Insn(isa.STX | isa.ATOMIC | size, dst, _reg(new)[1], off, isa.ATOMIC_CMPXCHG))


@_rhs(rf"atomic(64)?_cmpxchg\s*\(\s*{_CAST}\s*{_MEM}\s*,\s*{_REG}\s*,\s*{_REG}\s*\)")
def _cmpxchg(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = _atomic_size(m.group(2), bool(m.group(1)))
    return _cmpxchg_insn(lhs, size, (m.group(3), m.group(4), m.group(5)), m.group(6), m.group(7))


@_rhs(rf"(cmpxchg_64|cmpxchg32_32)\s*\(\s*{_BARE_MEM}\s*,\s*{_REG}\s*,\s*{_REG}\s*\)")
def _cmpxchg_llvm(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    size = isa.DW if m.group(1) == "cmpxchg_64" else isa.W
    return _cmpxchg_insn(lhs, size, (m.group(2), m.group(3), m.group(4)), m.group(5), m.group(6))


@_rhs(rf"-\s*{_REG}")
def _neg(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    if lhs != m.group(1):
        raise _Bad(f"negation works in place: write {lhs} = -{lhs}")
    letter, dst = _reg(lhs)
    return _done(Insn((isa.ALU64 if letter == "r" else isa.ALU) | isa.NEG, dst))


@_rhs(rf"(be|le|bswap)(16|32|64)\s+{_REG}")
def _endian(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    if _reg(lhs)[1] != _reg(m.group(3))[1]:
        raise _Bad(f"byte swaps work in place: write {lhs} = {m.group(1)}{m.group(2)} {lhs}")
    kind = m.group(1)
    if kind == "bswap":
        opcode = isa.ALU64 | isa.END
    else:
        opcode = isa.ALU | isa.END | (isa.TO_BE if kind == "be" else isa.TO_LE)
    return _done(Insn(opcode, _reg(lhs)[1], 0, 0, int(m.group(2))))


@_rhs(rf"\(\s*s(8|16|32)\s*\)\s*{_REG}")
def _movsx(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    _same_width(lhs, m.group(2))
    letter, dst = _reg(lhs)
    cls = isa.ALU64 if letter == "r" else isa.ALU
    return _done(Insn(cls | isa.MOV | isa.X, dst, _reg(m.group(2))[1], int(m.group(1))))


@_rhs(rf"addr_space_cast\s*\(\s*{_REG}\s*,\s*{_UNUM}\s*,\s*{_UNUM}\s*\)")
def _addr_space_cast(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    to_as, from_as = _int(m.group(2)), _int(m.group(3))
    if to_as > 0xFFFF or from_as > 0xFFFF:
        raise _Bad("address spaces are 16-bit numbers")
    imm = isa.to_signed((to_as << 16) | from_as, 32)
    return _done(Insn(isa.ALU64 | isa.MOV | isa.X, _rreg(lhs), _rreg(m.group(1)), 1, imm))


@_rhs(rf"&\s*\(\s*void\s+__percpu\s*\*\s*\)\s*\(\s*{_REG}\s*\)")
def _percpu(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    return _done(Insn(isa.ALU64 | isa.MOV | isa.X, _rreg(lhs), _rreg(m.group(1)), -1))


@_rhs(rf"map\s*\[\s*id\s*:\s*{_UNUM}\s*\]\s*\[\s*0\s*\]\s*\+\s*{_UNUM}")
def _map_value(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    lo, hi = _u32(m.group(1), "map id"), _u32(m.group(2), "offset")
    return _done(*_lddw(_rreg(lhs), isa.PSEUDO_MAP_VALUE, lo, hi))


@_rhs(rf"map\s*\[\s*id\s*:\s*{_UNUM}\s*\]")
def _map_fd(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    return _done(*_lddw(_rreg(lhs), isa.PSEUDO_MAP_FD, _u32(m.group(1), "map id"), 0))


@_rhs(rf"map\s*\[\s*idx\s*:\s*{_UNUM}\s*\](?:\s*\+\s*{_UNUM})?")
def _map_idx(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    lo = _u32(m.group(1), "map index")
    if m.group(2) is None:
        stmt = _done(*_lddw(_rreg(lhs), isa.PSEUDO_MAP_IDX, lo, 0))
    else:
        stmt = _done(*_lddw(_rreg(lhs), isa.PSEUDO_MAP_IDX_VALUE, lo, _u32(m.group(2), "offset")))
    stmt.name_kind, stmt.index = "map_idx", lo  # reserves the index against named maps
    return stmt


@_rhs(rf"map\s*\[\s*({_NAME})\s*\](?:\s*\+\s*{_UNUM})?")
def _map_named(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    dst = _rreg(lhs)
    if m.group(2) is None:
        src, hi = isa.PSEUDO_MAP_IDX, 0
    else:
        src, hi = isa.PSEUDO_MAP_IDX_VALUE, _u32(m.group(2), "offset")
    stmt = _Stmt(0, "", 0, 2, name=m.group(1), name_kind="map", dst=dst)
    stmt.build = lambda idx: _lddw(dst, src, idx, hi)
    return stmt


@_rhs(r"subprog\s*\[\s*([+-]?\s*\d+)\s*\]")
def _subprog(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    return _done(*_lddw(_rreg(lhs), isa.PSEUDO_FUNC, _imm32(m.group(1)), 0))


@_rhs(rf"btf_id\s*\[\s*{_UNUM}\s*\](?:\s*\[\s*fd\s*:\s*{_NUM}\s*\])?")
def _btf_id(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    hi = _imm32(m.group(2)) if m.group(2) else 0
    return _done(*_lddw(_rreg(lhs), isa.PSEUDO_BTF_ID, _u32(m.group(1), "BTF id"), hi))


def _imm64_pair(lhs: str, text: str) -> _Stmt:
    value = _int(text)
    if not -(1 << 63) <= value <= isa.U64:
        raise _Bad(f"immediate {text.strip()} does not fit in 64 bits")
    return _done(*isa.lddw_pair(_rreg(lhs), value))


@_rhs(rf"{_NUM}\s+ll")
def _imm64(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    return _imm64_pair(lhs, m.group(1))


@_rhs(rf"({_NAME})\s+ll")
def _name64(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    """`r1 = NAME ll`: the address of subprogram NAME when it is a label, else map NAME."""
    dst = _rreg(lhs)
    return _Stmt(0, "", 0, 2, name=m.group(1), name_kind="ll", dst=dst)


@_rhs(_REG)
def _mov_reg(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    _same_width(lhs, m.group(1))
    letter, dst = _reg(lhs)
    cls = isa.ALU64 if letter == "r" else isa.ALU
    return _done(Insn(cls | isa.MOV | isa.X, dst, _reg(m.group(1))[1]))


@_rhs(_NUM)
def _mov_imm(m: re.Match, lhs: str, ctx: _Ctx) -> _Stmt:
    text = m.group(1)
    letter, dst = _reg(lhs)
    if letter == "w" or ctx.opcode not in (None, isa.OP_LDDW):
        cls = isa.ALU64 if letter == "r" else isa.ALU
        return _done(Insn(cls | isa.MOV | isa.K, dst, 0, 0, _imm32(text)))
    value = _int(text)
    is_lddw = (ctx.opcode == isa.OP_LDDW or (ctx.kernel_syntax and _is_hex(text))
               or not -(1 << 31) <= value <= isa.U32)
    if is_lddw:
        return _imm64_pair(lhs, text)
    return _done(Insn(isa.ALU64 | isa.MOV | isa.K, dst, 0, 0, _imm32(text)))


# --- the two passes --------------------------------------------------------------------------------


def _strip_block_comments(text: str) -> str:
    """Blank out /* ... */ comments, keeping the line count so that errors name the right line."""
    def blank(m: re.Match) -> str:
        return "\n" * m.group().count("\n") + " "
    out = re.sub(r"/\*.*?\*/", blank, text, flags=re.DOTALL)
    if "/*" in out:
        lineno = out[: out.index("/*")].count("\n") + 1
        raise AsmError(f"line {lineno}: unterminated /* comment")
    return out


def _referenced_numeric_labels(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"(?<![\w.$])(\d+)[fb](?![\w.$])", text)}


_INDEX_RE = re.compile(r"\s*(\d+)\s*:\s+(?=\S)")
_LABEL_RE = re.compile(rf"\s*({_NAME}|\d+)\s*:(?!=)")
_OPCODE_RE = re.compile(r"\s*\(\s*([0-9a-fA-F]{2})\s*\)\s*")


@dataclass
class _Assembler:
    consts: Mapping[str, int]
    stmts: list[_Stmt] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    numeric: list[tuple[int, int, int]] = field(default_factory=list)  # (number, event, slot)
    events: int = 0
    slot: int = 0

    def feed(self, text: str) -> None:
        """First pass: split lines into statements, record labels, parse what needs no label."""
        text = _strip_block_comments(text)
        text = re.sub(r"%\[(\w+)\]", lambda m: str(self.consts.get(m.group(1), m.group(1))), text)
        referenced = _referenced_numeric_labels(text)
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = re.sub(r"(^|\s)#.*", "", raw.split("//", 1)[0])
            if line.strip().startswith(";"):
                continue
            index = _INDEX_RE.match(line)
            if index and int(index.group(1)) not in referenced:
                self._index_line(line[index.end():], lineno)
                continue
            for seg in line.split(";"):
                self._segment(seg, lineno, kernel_syntax=False)

    def _index_line(self, body: str, lineno: int) -> None:
        """`N: insn ; comment`: after the first `;`, what does not assemble is the verifier's state dump."""
        first, *rest = body.split(";")
        self._segment(first, lineno, kernel_syntax=True)
        for seg in rest:
            if not self._parses(seg):
                break
            self._segment(seg, lineno, kernel_syntax=False)

    def _parses(self, seg: str) -> bool:
        rest = seg
        while (m := _LABEL_RE.match(rest)) is not None:
            rest = rest[m.end():]
        if (m := _OPCODE_RE.match(rest)) is not None:
            rest = rest[m.end():]
        if not rest.strip():
            return not seg.strip()
        try:
            self._parse(rest.strip(), _Ctx())
        except _Bad:
            return False
        return True

    def _segment(self, seg: str, lineno: int, *, kernel_syntax: bool) -> None:
        rest = seg
        while True:
            m = _LABEL_RE.match(rest)
            if not m:
                break
            self._label(m.group(1), lineno, seg)
            rest = rest[m.end():]
        ctx = _Ctx(kernel_syntax=kernel_syntax)
        m = _OPCODE_RE.match(rest)
        if m:
            ctx.opcode, ctx.kernel_syntax = int(m.group(1), 16), True
            rest = rest[m.end():]
        body = rest.strip()
        if not body:
            if ctx.opcode is not None:
                raise AsmError(f"line {lineno}: opcode prefix without an instruction: {seg.strip()!r}")
            return
        try:
            stmt = self._parse(body, ctx)
        except _Bad as e:
            raise AsmError(f"line {lineno}: {e}: {body!r}") from None
        stmt.lineno, stmt.text, stmt.event, stmt.opcode, stmt.slot = lineno, body, self._event(), ctx.opcode, self.slot
        self.stmts.append(stmt)
        self.slot += stmt.slots

    def _event(self) -> int:
        self.events += 1
        return self.events

    def _label(self, name: str, lineno: int, seg: str) -> None:
        if name.isdigit():
            self.numeric.append((int(name), self._event(), self.slot))
            return
        if name in self.labels:
            raise AsmError(f"line {lineno}: label {name!r} defined twice: {seg.strip()!r}")
        self.labels[name] = self.slot

    @staticmethod
    def _parse(body: str, ctx: _Ctx) -> _Stmt:
        for pattern, handler in _STMTS:
            m = pattern.fullmatch(body)
            if m:
                return handler(m, ctx)
        raise _Bad("unknown instruction")

    # --- second pass ---

    def _target(self, stmt: _Stmt, ref: _Ref) -> int:
        """The offset from the slot after `stmt` to `ref`."""
        if ref.rel is not None:
            return ref.rel
        if ref.label is not None:
            if ref.label not in self.labels:
                raise _Bad(f"undefined label {ref.label!r}")
            return self.labels[ref.label] - (stmt.slot + 1)
        num, direction = ref.num  # type: ignore[misc]
        if direction == "b":
            found = [slot for n, ev, slot in self.numeric if n == num and ev < stmt.event]
            pick = found[-1] if found else None
        else:
            found = [slot for n, ev, slot in self.numeric if n == num and ev > stmt.event]
            pick = found[0] if found else None
        if pick is None:
            raise _Bad(f"no label {num}: {'before' if direction == 'b' else 'after'} this line")
        return pick - (stmt.slot + 1)

    def finish(self) -> Program:
        if not self.stmts:
            raise AsmError("line 1: no instructions")
        kfuncs = _IndexTable("kfunc")
        maps = _IndexTable("map")
        for stmt in self.stmts:  # explicit indices first, so that names fill the gaps
            if stmt.index is not None:
                table = kfuncs if stmt.name_kind == "kfunc" else maps
                self._guard(stmt, lambda: table.reserve(stmt.index, stmt.name))
        insns: list[Insn] = []
        for stmt in self.stmts:
            built = self._guard(stmt, lambda: self._build(stmt, kfuncs, maps))
            if stmt.opcode is not None and built[0].opcode != stmt.opcode:
                raise AsmError(f"line {stmt.lineno}: opcode prefix ({stmt.opcode:02x}) does not match the "
                               f"instruction, which is ({built[0].opcode:02x}): {stmt.text!r}")
            insns.extend(built)
        return Program(insns=insns, kfuncs=kfuncs.names(""), maps=maps.names(""))

    @staticmethod
    def _guard(stmt: _Stmt, fn: Callable[[], object]):
        try:
            return fn()
        except _Bad as e:
            raise AsmError(f"line {stmt.lineno}: {e}: {stmt.text!r}") from None

    def _build(self, stmt: _Stmt, kfuncs: "_IndexTable", maps: "_IndexTable") -> list[Insn]:
        if stmt.insns is not None:
            return stmt.insns
        if stmt.ref is not None:
            return stmt.build(self._target(stmt, stmt.ref))  # type: ignore[misc]
        name = stmt.name or ""
        if stmt.name_kind == "map":
            return stmt.build(maps.index_of(name))  # type: ignore[misc]
        if name in self.labels:
            rel = self.labels[name] - (stmt.slot + 1)
            if stmt.name_kind == "call":
                return [Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, rel)]
            return _lddw(stmt.dst, isa.PSEUDO_FUNC, rel, 0)
        if stmt.name_kind == "ll":
            return _lddw(stmt.dst, isa.PSEUDO_MAP_IDX, maps.index_of(name), 0)
        hid = helper_id(name) if name.startswith("bpf_") else None
        if hid is not None:
            return [Insn(isa.OP_CALL, 0, isa.PSEUDO_HELPER, 0, hid)]
        idx = kfuncs.new_unnamed() if name == _KFUNC_UNKNOWN else kfuncs.index_of(name)
        return [Insn(isa.OP_CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, idx)]


class _IndexTable:
    """Index -> name for kfuncs or maps: explicit indices (`#N`, `idx:N`) reserved first, names fill up."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.by_index: dict[int, str | None] = {}

    def reserve(self, index: int, name: str | None) -> None:
        if name == _KFUNC_UNKNOWN:
            name = None
        old = self.by_index.get(index)
        if old is not None and name is not None and old != name:
            raise _Bad(f"{self.what} index {index} is both {old!r} and {name!r}")
        if name is not None and name in self.by_index.values() and old != name:
            raise _Bad(f"{self.what} {name!r} has two indices")
        self.by_index[index] = name if name is not None else old

    def index_of(self, name: str) -> int:
        for index, known in self.by_index.items():
            if known == name:
                return index
        index = self._free()
        self.by_index[index] = name
        return index

    def new_unnamed(self) -> int:
        index = self._free()
        self.by_index[index] = None
        return index

    def _free(self) -> int:
        index = 0
        while index in self.by_index:
            index += 1
        return index

    def names(self, unknown: str) -> list[str]:
        """Names by index, up to the last named one; unnamed indices (`map[idx:N]`) add no entries."""
        size = max((i for i, name in self.by_index.items() if name is not None), default=-1) + 1
        return [self.by_index.get(i) or unknown for i in range(size)]


def assemble(text: str, *, consts: Mapping[str, int] | None = None) -> Program:
    """Assemble `text` into a Program whose `kfuncs` (and `maps`, for maps named in the text) are filled.

    `consts` gives the values of `%[name]` operands, as the selftests' `__imm_const` does.
    """
    asm = _Assembler(consts or {})
    asm.feed(text)
    return asm.finish()


def assemble_insns(text: str, *, consts: Mapping[str, int] | None = None) -> list[Insn]:
    """Assemble `text` into instruction slots (a `lddw` gives two)."""
    return assemble(text, consts=consts).insns
