"""Assembler for the uBPF dialect that the BPF conformance suite's `-- asm` sections are written in.

    mov %r0, 1          add32 %r1, %r2        ldxdw %r0, [%r1+8]     lock fetch add [%r10-8], %r1
    jne %r0, 15, fail   call local func1      lddw %r1, 0x1122334455667788

Every mistake raises `AsmError` naming the line.
"""

from __future__ import annotations

import re

from . import isa
from .errors import AsmError
from .isa import Insn

_ALU_OPS = {
    "add": isa.ADD, "sub": isa.SUB, "mul": isa.MUL, "div": isa.DIV, "or": isa.OR, "and": isa.AND,
    "lsh": isa.LSH, "rsh": isa.RSH, "neg": isa.NEG, "mod": isa.MOD, "xor": isa.XOR, "mov": isa.MOV,
    "arsh": isa.ARSH, "sdiv": isa.DIV, "smod": isa.MOD,
}
_JMP_OPS = {
    "jeq": isa.JEQ, "jgt": isa.JGT, "jge": isa.JGE, "jset": isa.JSET, "jne": isa.JNE, "jsgt": isa.JSGT,
    "jsge": isa.JSGE, "jlt": isa.JLT, "jle": isa.JLE, "jslt": isa.JSLT, "jsle": isa.JSLE,
}
_SIZES = {"b": isa.B, "h": isa.H, "w": isa.W, "dw": isa.DW}
_MOVSX = {"movsx864": (isa.ALU64, 8), "movsx1664": (isa.ALU64, 16), "movsx3264": (isa.ALU64, 32),
          "movsx832": (isa.ALU, 8), "movsx1632": (isa.ALU, 16)}
_ATOMIC = {"add": isa.ATOMIC_ADD, "and": isa.ATOMIC_AND, "or": isa.ATOMIC_OR, "xor": isa.ATOMIC_XOR}
_MEM_RE = re.compile(r"^\[\s*%r(\d+)\s*(?:([+-])\s*(0x[0-9a-fA-F]+|\d+))?\s*\]$")
_LABEL_RE = re.compile(r"^([A-Za-z_.][\w.]*)\s*:$")


def _tokenize(line: str) -> list[str]:
    # Operands are separated by commas and/or spaces; memory operands [..] are kept whole.
    tokens: list[str] = []
    for part in re.findall(r"\[[^\]]*\]|[^\s,]+", line):
        tokens.append(part)
    return tokens


def _reg(tok: str, lineno: int) -> int:
    m = re.fullmatch(r"%r(\d+)", tok)
    if not m or int(m.group(1)) > 10:
        raise AsmError(f"line {lineno}: Invalid register {tok!r}")
    return int(m.group(1))


def _imm32(tok: str, lineno: int) -> int:
    try:
        value = int(tok, 0)
    except ValueError:
        raise AsmError(f"line {lineno}: invalid immediate {tok!r}") from None
    if tok.lower().lstrip("-").startswith("0x"):
        if not (-(1 << 31) <= value <= 0xFFFFFFFF):
            raise AsmError(f"line {lineno}: immediate {tok} does not fit in 32 bits")
    elif not (-(1 << 31) <= value < (1 << 31)):
        raise AsmError(f"line {lineno}: immediate {tok} does not fit in a signed 32-bit field")
    return isa.to_signed(value, 32)


def _mem(tok: str, lineno: int) -> tuple[int, int]:
    m = _MEM_RE.match(tok)
    if not m:
        raise AsmError(f"line {lineno}: invalid memory operand {tok!r} (expected [%rN+off])")
    reg = int(m.group(1))
    if reg > 10:
        raise AsmError(f"line {lineno}: Invalid register %r{reg}")
    off = int(m.group(3), 0) if m.group(3) else 0
    if m.group(2) == "-":
        off = -off
    if not (-(1 << 15) <= off < (1 << 15)):
        raise AsmError(f"line {lineno}: offset {off} does not fit in 16 bits")
    return reg, off


def _count(tokens: list[str], n: int, mnemonic: str, lineno: int) -> None:
    if len(tokens) != n:
        raise AsmError(f"line {lineno}: Invalid number of operands for {mnemonic}")


def assemble(text: str) -> list[Insn]:
    """Assemble a `-- asm` section into instruction slots."""
    lines = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append((lineno, line))
    # First pass: label positions in slots.
    labels: dict[str, int] = {}
    pending: list[tuple[int, str, list[str]]] = []
    pc = 0
    for lineno, line in lines:
        m = _LABEL_RE.match(line)
        if m:
            labels[m.group(1)] = pc
            continue
        tokens = _tokenize(line)
        if not tokens:
            raise AsmError(f"line {lineno}: no mnemonic in '{line}'")
        mnemonic = tokens[0].lower()
        if mnemonic == "exit" and "exit" not in labels:
            labels["exit"] = pc
        pending.append((lineno, mnemonic, tokens[1:]))
        pc += 2 if mnemonic == "lddw" else 1
    if not pending:
        raise AsmError("no instructions")
    out: list[Insn] = []
    for lineno, mnemonic, ops in pending:
        out.extend(_one(mnemonic, ops, len(out), labels, lineno))
    return out


def _target(tok: str, pc: int, labels: dict[str, int], lineno: int) -> int:
    if re.fullmatch(r"[+-]?\d+", tok):
        return int(tok)
    if tok not in labels:
        raise AsmError(f"line {lineno}: unknown label {tok!r}")
    return labels[tok] - (pc + 1)


def _one(mnemonic: str, ops: list[str], pc: int, labels: dict[str, int], lineno: int) -> list[Insn]:
    if mnemonic == "exit":
        _count(ops, 0, mnemonic, lineno)
        return [Insn(isa.OP_EXIT)]
    if mnemonic == "lddw":
        _count(ops, 2, mnemonic, lineno)
        try:
            value = int(ops[1], 0)
        except ValueError:
            raise AsmError(f"line {lineno}: invalid immediate {ops[1]!r}") from None
        if not (-(1 << 63) <= value < (1 << 64)):
            raise AsmError(f"line {lineno}: immediate {ops[1]} does not fit in 64 bits")
        return list(isa.lddw_pair(_reg(ops[0], lineno), value))
    if mnemonic == "call":
        return [_call(ops, pc, labels, lineno)]
    if mnemonic == "lock":
        return [_lock(ops, lineno)]
    if mnemonic in ("ja", "ja32"):
        _count(ops, 1, mnemonic, lineno)
        off = _target(ops[0], pc, labels, lineno)
        if mnemonic == "ja32":
            return [Insn(isa.OP_JA32, imm=off)]
        return [Insn(isa.OP_JA, off=_off16(off, lineno))]
    if mnemonic in _MOVSX:
        _count(ops, 2, mnemonic, lineno)
        cls, bits = _MOVSX[mnemonic]
        return [Insn(cls | isa.MOV | isa.X, _reg(ops[0], lineno), _reg(ops[1], lineno), bits)]
    m = re.fullmatch(r"(le|be|swap|bswap)(16|32|64)", mnemonic)
    if m:
        _count(ops, 1, mnemonic, lineno)
        kind = m.group(1)
        opcode = (isa.ALU64 | isa.END) if kind in ("swap", "bswap") else (isa.ALU | isa.END | (isa.TO_BE if kind == "be" else isa.TO_LE))
        return [Insn(opcode, _reg(ops[0], lineno), imm=int(m.group(2)))]
    m = re.fullmatch(r"ldx(s?)(b|h|w|dw)", mnemonic)
    if m:
        _count(ops, 2, mnemonic, lineno)
        mode = isa.MEMSX if m.group(1) else isa.MEM
        if mode == isa.MEMSX and m.group(2) == "dw":
            raise AsmError(f"line {lineno}: invalid mnemonic {mnemonic!r}")
        src, off = _mem(ops[1], lineno)
        return [Insn(isa.LDX | mode | _SIZES[m.group(2)], _reg(ops[0], lineno), src, off)]
    m = re.fullmatch(r"st(x?)(b|h|w|dw)", mnemonic)
    if m:
        _count(ops, 2, mnemonic, lineno)
        dst, off = _mem(ops[0], lineno)
        if m.group(1):
            return [Insn(isa.STX | isa.MEM | _SIZES[m.group(2)], dst, _reg(ops[1], lineno), off)]
        return [Insn(isa.ST | isa.MEM | _SIZES[m.group(2)], dst, 0, off, _imm32(ops[1], lineno))]
    m = re.fullmatch(r"ld(abs|ind)(b|h|w)", mnemonic)
    if m:
        if m.group(1) == "abs":
            _count(ops, 1, mnemonic, lineno)
            return [Insn(isa.LD | isa.ABS | _SIZES[m.group(2)], imm=_imm32(ops[0], lineno))]
        _count(ops, 2, mnemonic, lineno)
        return [Insn(isa.LD | isa.IND | _SIZES[m.group(2)], 0, _reg(ops[0], lineno), imm=_imm32(ops[1], lineno))]
    m = re.fullmatch(r"([a-z]+?)(32|64)?", mnemonic)
    if m and m.group(1) in _ALU_OPS:
        return [_alu(m.group(1), m.group(2), ops, lineno)]
    if m and m.group(1) in _JMP_OPS:
        _count(ops, 3, mnemonic, lineno)
        cls = isa.JMP32 if m.group(2) == "32" else isa.JMP
        dst = _reg(ops[0], lineno)
        off = _off16(_target(ops[2], pc, labels, lineno), lineno)
        if ops[1].startswith("%"):
            return [Insn(cls | _JMP_OPS[m.group(1)] | isa.X, dst, _reg(ops[1], lineno), off)]
        return [Insn(cls | _JMP_OPS[m.group(1)] | isa.K, dst, 0, off, _imm32(ops[1], lineno))]
    raise AsmError(f"line {lineno}: invalid mnemonic {mnemonic!r}")


def _off16(off: int, lineno: int) -> int:
    if not (-(1 << 15) <= off < (1 << 15)):
        raise AsmError(f"line {lineno}: jump offset {off} does not fit in 16 bits")
    return off


def _alu(name: str, width: str | None, ops: list[str], lineno: int) -> Insn:
    cls = isa.ALU if width == "32" else isa.ALU64
    op = _ALU_OPS[name]
    signed = 1 if name in ("sdiv", "smod") else 0
    if name == "neg":
        _count(ops, 1, name, lineno)
        return Insn(cls | isa.NEG, _reg(ops[0], lineno))
    _count(ops, 2, name, lineno)
    dst = _reg(ops[0], lineno)
    if ops[1].startswith("%"):
        return Insn(cls | op | isa.X, dst, _reg(ops[1], lineno), signed)
    return Insn(cls | op | isa.K, dst, 0, signed, _imm32(ops[1], lineno))


def _call(ops: list[str], pc: int, labels: dict[str, int], lineno: int) -> Insn:
    if len(ops) == 1 and ops[0].startswith("%"):
        return Insn(isa.OP_CALLX, _reg(ops[0], lineno))
    if len(ops) == 1:
        return Insn(isa.OP_CALL, imm=_imm32(ops[0], lineno))
    _count(ops, 2, "call", lineno)
    kind = ops[0].lower()
    if kind == "helper":
        return Insn(isa.OP_CALL, imm=_imm32(ops[1], lineno))
    if kind == "local":
        return Insn(isa.OP_CALL, src=isa.PSEUDO_CALL, imm=_target(ops[1], pc, labels, lineno))
    if kind == "runtime":
        return Insn(isa.OP_CALL, src=isa.PSEUDO_KFUNC_CALL, imm=_imm32(ops[1], lineno))
    raise AsmError(f"line {lineno}: invalid call kind {ops[0]!r}")


def _lock(ops: list[str], lineno: int) -> Insn:
    fetch = bool(ops) and ops[0].lower() == "fetch"
    if fetch:
        ops = ops[1:]
    if len(ops) != 3:
        raise AsmError(f"line {lineno}: Invalid number of operands for lock")
    name = ops[0].lower()
    dst, off = _mem(ops[1], lineno)
    src = _reg(ops[2], lineno)
    size = isa.W if name.endswith("32") else isa.DW
    base = name[:-2] if name.endswith("32") else name
    if base == "xchg":
        imm = isa.ATOMIC_XCHG
    elif base == "cmpxchg":
        imm = isa.ATOMIC_CMPXCHG
    elif base in _ATOMIC:
        imm = _ATOMIC[base] | (isa.FETCH if fetch else 0)
    else:
        raise AsmError(f"line {lineno}: invalid atomic operation {ops[0]!r}")
    return Insn(isa.STX | isa.ATOMIC | size, dst, src, off, imm)
