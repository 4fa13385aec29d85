"""Malformed inputs for robustness fuzzing, each a deterministic function of a seed: mutated ELF objects
(truncation, bit flips, interesting bytes, absurd section and header fields), objects with corrupt or cyclic
BTF, huge programs, random assembler text (both dialects) and random instruction bytes."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import isa
from .btfwriter import KIND_ARRAY, KIND_CONST, KIND_FUNC, KIND_FUNC_PROTO, KIND_PTR, KIND_STRUCT, KIND_TYPEDEF
from .btfwriter import KIND_VAR, BtfBuilder
from .elfwriter import ElfFunc, write_object
from .programs import random_program

REPO = Path(__file__).resolve().parents[2]
SEED_OBJECTS = ("examples/xdp_counter.o", "examples/dynptr_slice.o", "examples/dynptr_slice_sum.o",
                "helpers/inlinable/kfuncs.o", "tests/kfuncs/test_inlinable_kfuncs.o")
KIND_WEIGHTS = (("elf", 30), ("btf", 10), ("asm", 10), ("ubpf", 10), ("insns", 39.8), ("huge", 0.2))
KINDS = tuple(k for k, _ in KIND_WEIGHTS)
# bpfvm's dead-code passes are quadratic on branchy programs (about 4 s of CPU at 4096 instructions, 65 s at
# 16384), so big ones are rare: each costs a worker its whole time bound
HUGE_SIZES = ((4096, 90), (16384, 8), (65536, 1.5), (1_000_001, 0.5))
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
_SHDR = struct.Struct("<IIQQQQIIQQ")


@dataclass
class Malformed:
    kind: str  # "elf", "btf", "huge" (object bytes), "asm", "ubpf" (text), "insns" (raw program bytes)
    data: bytes
    note: str  # what was done to it
    prog_type: str = "sched_cls"  # for "insns": the type the program is verified as


@lru_cache(maxsize=None)
def seed_objects() -> tuple[bytes, ...]:
    """Real objects to mutate (those present in the checkout)."""
    return tuple((REPO / p).read_bytes() for p in SEED_OBJECTS if (REPO / p).exists())


def base_object(rng: random.Random) -> bytes:
    objects = seed_objects()
    if objects and rng.random() < 0.5:
        return rng.choice(objects)
    return random_program(rng.randrange(1 << 30)).to_elf()


def make(seed: int, kind: str | None = None) -> Malformed:
    rng = random.Random(seed)
    kind = kind or _weighted(rng, KIND_WEIGHTS)
    if kind == "elf":
        return mutate_elf(rng, base_object(rng))
    if kind == "btf":
        return bad_btf(rng)
    if kind == "huge":
        return huge_program(rng)
    if kind in ("asm", "ubpf"):
        return Malformed(kind, random_text(rng, kind).encode(), "random text")
    return random_insns(rng)


def _weighted(rng: random.Random, options: tuple) -> object:
    return rng.choices([v for v, _ in options], [w for _, w in options])[0]


# -- ELF ---------------------------------------------------------------------------------------------------------
def mutate_elf(rng: random.Random, data: bytes) -> Malformed:
    blob = bytearray(data)
    how = rng.choice(["truncate", "flip", "bytes", "section", "header", "mixed"])
    notes = []
    for step in ([how] if how != "mixed" else rng.sample(["truncate", "flip", "bytes", "section", "header"], 2)):
        if step == "truncate" and blob:
            cut = rng.randrange(len(blob))
            del blob[cut:]
            notes.append(f"truncated at {cut}")
        elif step == "flip" and blob:
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(blob))
                blob[pos] ^= 1 << rng.randrange(8)
            notes.append("bit flips")
        elif step == "bytes" and blob:
            for _ in range(rng.randint(1, 8)):
                blob[rng.randrange(len(blob))] = rng.choice(INTERESTING)
            notes.append("bytes overwritten")
        elif step == "section":
            notes.append(_absurd_section(rng, blob))
        elif step == "header" and len(blob) >= 64:
            field, fmt, off = rng.choice([("e_shoff", "<Q", 40), ("e_shnum", "<H", 60), ("e_shstrndx", "<H", 62),
                                          ("e_shentsize", "<H", 58), ("e_machine", "<H", 18), ("e_type", "<H", 16)])
            value = rng.choice([0, 1, 0xFFFF, 0x7FFF, len(blob), 1 << 40, (1 << 64) - 1])
            size = struct.calcsize(fmt)
            struct.pack_into(fmt, blob, off, value & ((1 << (8 * size)) - 1))
            notes.append(f"{field}={value:#x}")
    return Malformed("elf", bytes(blob), "; ".join(notes))


def _absurd_section(rng: random.Random, blob: bytearray) -> str:
    if len(blob) < 64:
        return "too short for sections"
    shoff, shnum = struct.unpack_from("<Q", blob, 40)[0], struct.unpack_from("<H", blob, 60)[0]
    if not shnum or shoff + shnum * 64 > len(blob):
        return "no section table"
    index = rng.randrange(shnum)
    fields = list(_SHDR.unpack_from(blob, shoff + 64 * index))
    which = rng.choice([1, 4, 5, 6, 7, 9, 0])  # type, offset, size, link, info, entsize, name
    value = rng.choice([0, 1, 7, 0xFFFFFFFF, 0x7FFFFFFF, len(blob), 1 << 32, 1 << 62, (1 << 64) - 1])
    limit = 0xFFFFFFFF if which in (0, 1, 6, 7) else (1 << 64) - 1
    fields[which] = value & limit
    _SHDR.pack_into(blob, shoff + 64 * index, *fields)
    return f"section {index} field {which} = {value:#x}"


# -- BTF ---------------------------------------------------------------------------------------------------------
def bad_btf(rng: random.Random) -> Malformed:
    """An object whose map declaration refers into a cyclic or corrupt type graph."""
    b = BtfBuilder()
    how = rng.choice(["ptr_cycle", "typedef_cycle", "struct_self", "array_self", "proto_cycle", "bad_ids", "corrupt"])
    int_t = b.int_("int", 4, signed=True)
    nxt = 2  # the id the next type gets
    if how == "ptr_cycle":
        b.raw("", KIND_PTR, 0, nxt + 1)
        b.raw("", KIND_PTR, 0, nxt)
        target = nxt
    elif how == "typedef_cycle":
        b.raw("t0", KIND_TYPEDEF, 0, nxt + 1)
        b.raw("t1", KIND_CONST, 0, nxt)
        target = nxt
    elif how == "struct_self":
        target = b.struct("loop", 16, [("type", nxt, 0), ("max_entries", nxt, 64)])
    elif how == "array_self":
        target = b.raw("", KIND_ARRAY, 0, 0, struct.pack("<III", nxt, int_t, 4))
    elif how == "proto_cycle":
        b.raw("", KIND_FUNC_PROTO, 1, nxt, struct.pack("<II", 0, nxt))
        target = b.func("bpf_dynptr_size", nxt, 2)
    else:
        target = b.raw("", rng.choice([KIND_PTR, KIND_STRUCT, KIND_VAR, KIND_FUNC, 31]), rng.randrange(4),
                       rng.choice([0, 999, 0x7FFFFFFF, 0xFFFFFFFF]))
    var = b.var("m0", target)
    b.datasec(".maps", 32, [(var, 0, 32)])
    btf = bytearray(b.encode())
    if how == "corrupt":
        for _ in range(rng.randint(1, 6)):
            btf[rng.randrange(len(btf))] = rng.randrange(256)
        if rng.random() < 0.5:
            struct.pack_into("<I", btf, rng.choice([8, 12, 16, 20]), rng.choice([0xFFFFFFF0, 1 << 31, 3]))
    code = isa.encode([isa.Insn(isa.ALU64 | isa.MOV, 0, 0, 0, 0), isa.Insn(isa.OP_EXIT)])
    obj = write_object([ElfFunc("prog", code, "tc", True)], [("m0", {"type": 2, "max_entries": 1})], [])
    return Malformed("btf", _replace_section(obj, ".BTF", bytes(btf)), how)


def _replace_section(obj: bytes, name: str, data: bytes) -> bytes:
    """Append `data` to the object and point section `name` at it."""
    blob = bytearray(obj)
    shoff = struct.unpack_from("<Q", blob, 40)[0]
    shnum, shstrndx = struct.unpack_from("<HH", blob, 60)
    strtab = _SHDR.unpack_from(blob, shoff + 64 * shstrndx)
    names = bytes(blob[strtab[4]:strtab[4] + strtab[5]])
    for i in range(shnum):
        fields = list(_SHDR.unpack_from(blob, shoff + 64 * i))
        if names[fields[0]:].split(b"\0", 1)[0] == name.encode():
            fields[4], fields[5] = len(blob), len(data)
            _SHDR.pack_into(blob, shoff + 64 * i, *fields)
            return bytes(blob + data)
    return obj


# -- huge programs -----------------------------------------------------------------------------------------------
def huge_program(rng: random.Random, n: int | None = None, style: str | None = None) -> Malformed:
    """Thousands of instructions up to over the kernel's 1M limit: straight-line, branchy, or with a call."""
    n = n or _weighted(rng, HUGE_SIZES)
    style = style or rng.choice(["straight", "branches", "calls"])
    insns = [isa.Insn(isa.ALU64 | isa.MOV, 0, 0, 0, 0)]
    while len(insns) < n:
        if style == "branches" and rng.random() < 0.3:
            insns.append(isa.Insn(isa.JMP | isa.JGT, 0, 0, 1, rng.randrange(100)))
        insns.append(isa.Insn(isa.ALU64 | isa.ADD, 0, 0, 0, 1))
    if style == "calls":
        insns[1:3] = [isa.Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, 1), isa.Insn(isa.OP_EXIT)]
    insns.append(isa.Insn(isa.OP_EXIT))
    obj = write_object([ElfFunc("prog", isa.encode(insns), "socket", True)], [], [])
    return Malformed("huge", obj, f"{len(insns)} insns, {style}")


# -- text --------------------------------------------------------------------------------------------------------
ASM_WORDS = ("r0", "r1", "r10", "w2", "r11", "=", "+=", "s>>=", "*", "(u64", "*)", "(r10", "-8)", "goto", "+1",
             "pc-3", "if", ">", "s<=", "call", "bpf_map_lookup_elem", "exit", "lock", "ll", "map[idx:0]", "0x7fffffff",
             "-2147483649", "99999999999999999999", ";", "\n", ":", "l0:", "goto l0", "%[x]", "be16", "bswap64",
             "atomic_fetch_add((u64", "*)(r1", "+0),", "may_goto", "gotol", "callx", "skb[", "]", "/*", "*/", "//")
UBPF_WORDS = ("mov", "mov32", "add", "ldxdw", "stxw", "stdw", "lddw", "ja", "jeq", "jsgt32", "call", "exit", "neg",
              "le16", "be64", "r0", "r1", "r10", "r11", ",", "[r1+8]", "[r10-512]", "+1", "-1", "0x80000000",
              "lock", "xadd", "label:", "label", "\n", "#", "99999999999999999999")


def random_text(rng: random.Random, dialect: str) -> str:
    """Random tokens, or a real program's listing with characters mutated."""
    words = ASM_WORDS if dialect == "asm" else UBPF_WORDS
    if dialect == "asm" and rng.random() < 0.5:
        from ..disasm import disasm

        text = list(disasm(random_program(rng.randrange(1 << 30)).to_program()))
        for _ in range(rng.randint(1, 10)):
            pos = rng.randrange(len(text))
            text[pos] = rng.choice(["", "x", "9", "-", "(", ")", "\n", " ", "r", "+", "*", "\0", "\u00e9"])
        return "".join(text)
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 120)))


# -- instruction bytes -------------------------------------------------------------------------------------------
def _valid_opcodes() -> tuple[int, ...]:
    ops = []
    for op in range(256):
        for imm in (0, 16, 1):
            if isa.check_insn(isa.Insn(op, 0, 0, 0, imm)) is None:
                ops.append(op)
                break
    return tuple(ops)


VALID_OPCODES = _valid_opcodes()


def random_insns(rng: random.Random) -> Malformed:
    """Random bytes, or random instructions over valid opcodes with random fields (more of them decode)."""
    n = rng.choice([1, 2, 3, 8, 32, 100])
    if rng.random() < 0.3:
        data = rng.randbytes(8 * n + rng.choice([0, 0, 0, 3]))
    else:
        insns = []
        for _ in range(n):
            op = rng.choice(VALID_OPCODES)
            insn = isa.Insn(op, rng.randrange(11), rng.randrange(11), rng.choice([0, 1, -1, 2, -8, 8, 100]),
                            rng.choice([0, 1, -1, 8, 16, 32, 64, 7, rng.getrandbits(31)]))
            insns.append(repair(insn) if rng.random() < 0.9 else insn)
        insns.append(isa.Insn(isa.OP_EXIT))
        data = isa.encode(insns)
    prog_type = rng.choice(["socket_filter", "sched_cls", "xdp", "raw_tracepoint"])
    return Malformed("insns", data, f"{len(data)} bytes", prog_type)


def repair(insn: isa.Insn) -> isa.Insn:
    """Zero the fields the decoder says must be zero, so random instructions mostly decode."""
    for field in ("src", "imm", "off", "src", "dst"):
        if isa.check_insn(insn) is None:
            break
        insn = insn._replace(**{field: 0})
    if insn.opcode == isa.OP_LDDW:
        insn = insn._replace(src=0)
    return insn
