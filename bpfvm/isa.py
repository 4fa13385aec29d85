"""The eBPF instruction set (RFC 9669, ISA v1-v4): constants, the instruction record, decode and encode.

An instruction is an immutable `Insn` holding the raw fields of one 8-byte slot. `lddw` occupies two slots,
exactly as in the kernel, so that instruction indices and jump offsets mean the same thing here as in a
verifier log or in `bpftool prog dump xlated`.
"""

from __future__ import annotations

import struct
from typing import Iterable, NamedTuple

from .errors import LoadError

# Instruction classes (low three bits of the opcode).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)

# ALU operations (high four bits).
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
NEG, MOD, XOR, MOV, ARSH, END = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0

# Source operand bit: K = immediate, X = register. For END it selects the byte order.
K, X = 0x00, 0x08
TO_LE, TO_BE = 0x00, 0x08

# Jump operations.
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
CALL, EXIT, JLT, JLE, JSLT, JSLE, JCOND = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0

# Load/store sizes and modes.
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0

SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
SIZE_NAMES = {W: "u32", H: "u16", B: "u8", DW: "u64"}
SIGNED_SIZE_NAMES = {W: "s32", H: "s16", B: "s8"}

# Atomic operations (imm field of an ATOMIC store).
FETCH = 0x01
ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR = 0x00, 0x40, 0x50, 0xA0
ATOMIC_XCHG = 0xE0 | FETCH
ATOMIC_CMPXCHG = 0xF0 | FETCH
ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL = 0x100, 0x110
ATOMIC_OPS = frozenset(
    {ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR}
    | {op | FETCH for op in (ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR)}
    | {ATOMIC_XCHG, ATOMIC_CMPXCHG, ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL}
)

# Pseudo source kinds of `lddw` (src field).
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = 1, 2, 3, 4, 5, 6
# Call kinds (src field of BPF_CALL).
PSEUDO_HELPER, PSEUDO_CALL, PSEUDO_KFUNC_CALL = 0, 1, 2

# Frequently used whole opcodes.
OP_LDDW = LD | IMM | DW  # 0x18
OP_CALL = JMP | CALL  # 0x85
OP_CALLX = JMP | CALL | X  # 0x8d
OP_EXIT = JMP | EXIT  # 0x95
OP_JA = JMP | JA  # 0x05
OP_JA32 = JMP32 | JA  # 0x06
OP_MAY_GOTO = JMP | JCOND  # 0xe5

MAX_REG = 10
FRAME_POINTER = 10

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


def op_class(opcode: int) -> int:
    return opcode & 0x07


def alu_op(opcode: int) -> int:
    return opcode & 0xF0


def jmp_op(opcode: int) -> int:
    return opcode & 0xF0


def mem_size(opcode: int) -> int:
    return opcode & 0x18


def mem_mode(opcode: int) -> int:
    return opcode & 0xE0


def is_alu(opcode: int) -> bool:
    return op_class(opcode) in (ALU, ALU64)


def is_jmp(opcode: int) -> bool:
    return op_class(opcode) in (JMP, JMP32)


def to_signed(value: int, bits: int) -> int:
    """Interpret the low `bits` bits of `value` as a two's-complement number."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Insn(NamedTuple):
    """One 8-byte instruction slot. `off` and `imm` are kept signed, as the kernel's struct bpf_insn has them."""

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    def is_lddw(self) -> bool:
        return self.opcode == OP_LDDW

    def is_exit(self) -> bool:
        return self.opcode == OP_EXIT

    def is_call(self) -> bool:
        return self.opcode == OP_CALL

    def is_helper_call(self) -> bool:
        return self.opcode == OP_CALL and self.src == PSEUDO_HELPER

    def is_local_call(self) -> bool:
        return self.opcode == OP_CALL and self.src == PSEUDO_CALL

    def is_kfunc_call(self) -> bool:
        return self.opcode == OP_CALL and self.src == PSEUDO_KFUNC_CALL

    def is_cond_jump(self) -> bool:
        """A two-way branch: a conditional jump or `may_goto`."""
        if self.cls not in (JMP, JMP32):
            return False
        op = self.opcode & 0xF0
        return op not in (JA, CALL, EXIT)

    def is_uncond_jump(self) -> bool:
        return self.opcode in (OP_JA, OP_JA32)

    def jump_offset(self) -> int:
        """The relative target of a jump, counted from the next slot (`gotol`/`ja32` keep it in imm)."""
        return self.imm if self.opcode == OP_JA32 else self.off

    def pack(self) -> bytes:
        return _INSN_STRUCT.pack(
            self.opcode, (self.src << 4) | self.dst, self.off, self.imm
        )

    def with_(self, **changes: int) -> "Insn":
        return self._replace(**changes)


_INSN_STRUCT = struct.Struct("<BBhi")
INSN_SIZE = 8


def lddw_pair(dst: int, value: int, src: int = 0) -> tuple[Insn, Insn]:
    """The two slots of `lddw dst, value`."""
    value &= U64
    return (
        Insn(OP_LDDW, dst, src, 0, to_signed(value, 32)),
        Insn(0, 0, 0, 0, to_signed(value >> 32, 32)),
    )


def lddw_value(first: Insn, second: Insn) -> int:
    """The 64-bit immediate of a `lddw` pair, unsigned."""
    return (first.imm & U32) | ((second.imm & U32) << 32)


class DecodeError(LoadError):
    """A byte string that is not a valid program. The message names the slot and the field."""


def decode(data: bytes | bytearray | memoryview, *, validate: bool = True) -> list[Insn]:
    """Split raw program bytes into instruction slots, validating every reserved field by default."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty program: no instructions")
    if len(data) % INSN_SIZE:
        raise DecodeError(
            f"program length {len(data)} is not a multiple of {INSN_SIZE} bytes "
            f"({len(data) // INSN_SIZE} whole instructions and {len(data) % INSN_SIZE} stray bytes)"
        )
    insns = []
    for opcode, regs, off, imm in _INSN_STRUCT.iter_unpack(data):
        insns.append(Insn(opcode, regs & 0x0F, regs >> 4, off, imm))
    if validate:
        validate_program(insns)
    return insns


def encode(insns: Iterable[Insn]) -> bytes:
    return b"".join(insn.pack() for insn in insns)


def validate_program(insns: list[Insn]) -> None:
    """Check every slot's opcode and reserved fields; raise DecodeError naming the first bad one."""
    i = 0
    n = len(insns)
    while i < n:
        insn = insns[i]
        problem = check_insn(insn)
        if problem:
            raise DecodeError(f"insn {i}: {problem}")
        if insn.opcode == OP_LDDW:
            if i + 1 >= n:
                raise DecodeError(f"insn {i}: lddw is missing its second slot (program truncated)")
            nxt = insns[i + 1]
            for field in ("opcode", "dst", "src", "off"):
                if getattr(nxt, field):
                    raise DecodeError(
                        f"insn {i + 1}: second slot of lddw: reserved field '{field}' must be 0 "
                        f"(is {getattr(nxt, field):#x})"
                    )
            i += 2
            continue
        i += 1


def _reserved(name: str, field: str, value: int) -> str:
    return f"{name}: reserved field '{field}' must be 0 (is {value:#x})"


def check_insn(insn: Insn) -> str | None:
    """Return why `insn` is not a valid first slot of an instruction, or None if it is."""
    opcode, dst, src, off, imm = insn
    cls = opcode & 0x07
    if dst > MAX_REG:
        return f"opcode {opcode:#04x}: invalid dst register r{dst}"
    if src > MAX_REG and not (cls == LD and opcode == OP_LDDW):
        return f"opcode {opcode:#04x}: invalid src register r{src}"
    if cls in (ALU, ALU64):
        return _check_alu(insn)
    if cls in (JMP, JMP32):
        return _check_jmp(insn)
    if cls == LD:
        if opcode == OP_LDDW:
            if src > PSEUDO_MAP_IDX_VALUE:
                return f"lddw: unknown pseudo source kind src={src}"
            if off:
                return _reserved("lddw", "off", off)
            return None
        mode, size = mem_mode(opcode), mem_size(opcode)
        if mode in (ABS, IND) and size != DW:
            name = "ld_abs" if mode == ABS else "ld_ind"
            if dst:
                return _reserved(name, "dst", dst)
            if off:
                return _reserved(name, "off", off)
            if mode == ABS and src:
                return _reserved(name, "src", src)
            return None
        return f"unknown opcode {opcode:#04x}"
    if cls == LDX:
        mode, size = mem_mode(opcode), mem_size(opcode)
        if mode == MEM or (mode == MEMSX and size != DW):
            if imm:
                return _reserved("ldx", "imm", imm)
            return None
        return f"unknown opcode {opcode:#04x}"
    if cls == ST:
        if mem_mode(opcode) != MEM:
            return f"unknown opcode {opcode:#04x}"
        if src:
            return _reserved("st", "src", src)
        return None
    # STX
    mode, size = mem_mode(opcode), mem_size(opcode)
    if mode == MEM:
        if imm:
            return _reserved("stx", "imm", imm)
        return None
    if mode == ATOMIC:
        if imm in (ATOMIC_LOAD_ACQ, ATOMIC_STORE_REL):
            return None
        if size not in (W, DW):
            return f"unknown opcode {opcode:#04x} (atomics are 32 or 64 bit)"
        if imm not in ATOMIC_OPS:
            return f"atomic: unknown operation imm={imm:#x}"
        return None
    return f"unknown opcode {opcode:#04x}"


def _check_alu(insn: Insn) -> str | None:
    opcode, dst, src, off, imm = insn
    op, is64, srcx = opcode & 0xF0, (opcode & 0x07) == ALU64, opcode & X
    name = ALU_NAMES.get(op)
    if name is None:
        return f"unknown opcode {opcode:#04x}"
    if op == END:
        if is64 and srcx:
            return f"unknown opcode {opcode:#04x}"
        if src:
            return _reserved("bswap" if is64 else ("be" if srcx else "le"), "src", src)
        if off:
            return _reserved("byte swap", "off", off)
        if imm not in (16, 32, 64):
            return f"byte swap: invalid width imm={imm} (must be 16, 32 or 64)"
        return None
    if op == NEG:
        if srcx:
            return f"unknown opcode {opcode:#04x} (neg takes no source register)"
        if src:
            return _reserved("neg", "src", src)
        if off:
            return _reserved("neg", "off", off)
        if imm:
            return _reserved("neg", "imm", imm)
        return None
    if srcx:
        if imm:
            return _reserved(name, "imm", imm)
        allowed_off = {0}
        if op in (DIV, MOD):
            allowed_off = {0, 1}
        elif op == MOV:
            allowed_off = {0, 8, 16, 32} if is64 else {0, 8, 16}
        if off not in allowed_off:
            if allowed_off == {0}:
                return _reserved(name, "off", off)
            return f"{name}: invalid offset {off} (allowed: {sorted(allowed_off)})"
        return None
    if src:
        return _reserved(name, "src", src)
    allowed_off = {0, 1} if op in (DIV, MOD) else {0}
    if off not in allowed_off:
        if allowed_off == {0}:
            return _reserved(name, "off", off)
        return f"{name}: invalid offset {off} (allowed: [0, 1])"
    return None


def _check_jmp(insn: Insn) -> str | None:
    opcode, dst, src, off, imm = insn
    op, is32, srcx = opcode & 0xF0, (opcode & 0x07) == JMP32, opcode & X
    if op == JA:
        name = "ja32" if is32 else "ja"
        if srcx:
            return f"unknown opcode {opcode:#04x}"
        if dst:
            return _reserved(name, "dst", dst)
        if src:
            return _reserved(name, "src", src)
        if is32 and off:
            return _reserved(name, "off", off)
        if not is32 and imm:
            return _reserved(name, "imm", imm)
        return None
    if op == CALL:
        if is32:
            return f"unknown opcode {opcode:#04x}"
        if srcx:
            if src:
                return _reserved("callx", "src", src)
            if off:
                return _reserved("callx", "off", off)
            if imm:
                return _reserved("callx", "imm", imm)
            return None
        if dst:
            return _reserved("call", "dst", dst)
        if off:
            return _reserved("call", "off", off)
        if src > PSEUDO_KFUNC_CALL:
            return f"call: unknown call kind src={src}"
        return None
    if op == EXIT:
        if is32 or srcx:
            return f"unknown opcode {opcode:#04x}"
        for field, value in (("dst", dst), ("src", src), ("off", off), ("imm", imm)):
            if value:
                return _reserved("exit", field, value)
        return None
    if op == JCOND:
        if is32 or srcx:
            return f"unknown opcode {opcode:#04x}"
        for field, value in (("dst", dst), ("src", src), ("imm", imm)):
            if value:
                return _reserved("may_goto", field, value)
        return None
    name = JMP_NAMES.get(op)
    if name is None:
        return f"unknown opcode {opcode:#04x}"
    if srcx and imm:
        return _reserved(name, "imm", imm)
    if not srcx and src:
        return _reserved(name, "src", src)
    return None


ALU_NAMES = {
    ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh", RSH: "rsh",
    NEG: "neg", MOD: "mod", XOR: "xor", MOV: "mov", ARSH: "arsh", END: "end",
}
JMP_NAMES = {
    JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset", JNE: "jne", JSGT: "jsgt", JSGE: "jsge",
    JLT: "jlt", JLE: "jle", JSLT: "jslt", JSLE: "jsle",
}


def insn_slots(insn: Insn) -> int:
    """How many slots the instruction starting with `insn` occupies."""
    return 2 if insn.opcode == OP_LDDW else 1


def instruction_starts(insns: list[Insn] | tuple[Insn, ...]) -> list[bool]:
    """For each slot, whether an instruction starts there (False for the second slot of a lddw)."""
    flags = [False] * len(insns)
    i = 0
    while i < len(insns):
        flags[i] = True
        i += 2 if insns[i].opcode == OP_LDDW else 1
    return flags


def writes_frame_pointer(insn: Insn) -> bool:
    """Whether `insn` assigns r10, which the kernel forbids ("frame pointer is read only") and which every
    engine's in-frame stack fast path relies on."""
    cls = insn.opcode & 0x07
    if cls in (ALU, ALU64, LDX) or insn.opcode == OP_LDDW:
        return insn.dst == FRAME_POINTER
    if cls == STX and mem_mode(insn.opcode) == ATOMIC:
        if insn.imm == ATOMIC_LOAD_ACQ:
            return insn.dst == FRAME_POINTER
        if insn.imm not in (ATOMIC_STORE_REL, ATOMIC_CMPXCHG) and insn.imm & FETCH:
            return insn.src == FRAME_POINTER  # fetch and xchg write the old value into src
    return False


def block_leaders(insns: list[Insn], starts: list[int]) -> set[int]:
    """First slots of basic blocks: subprogram starts, jump targets and the slots after jumps and exits.
    (Targets may be out of range; callers check.)"""
    leaders = set(starts)
    n = len(insns)
    i = 0
    while i < n:
        insn = insns[i]
        if insn.opcode & 0x07 in (JMP, JMP32):
            op = insn.opcode & 0xF0
            if op not in (CALL, EXIT):
                leaders.add(i + 1 + insn.jump_offset())
            if op != CALL and i + 1 < n:
                leaders.add(i + 1)
        i += insn_slots(insn)
    return leaders
