"""Disassembler printing the kernel's own syntax: the verifier log and `bpftool prog dump xlated`.

The text of every instruction follows `print_bpf_insn()` in the kernel's kernel/bpf/disasm.c, string for
string and number format for number format (ALU immediates in signed decimal, jump immediates as
`0x%x` of the unsigned 32-bit value, offsets with an explicit sign). Where that function defers to a
callback, this module does what `bpftool prog dump xlated` does:

    lddw src=1 (map fd)        r1 = map[id:N]
    lddw src=2 (map value)     r1 = map[id:N][0]+OFF
    lddw src=6 (map idx value) r1 = map[idx:N]+OFF
    lddw src=4 (subprog addr)  r1 = subprog[+N]

bpftool has no spelling of its own for src=3 (BTF id) and src=5 (map index): it prints the bare 64-bit
value, which would read back as a plain constant. So that `asm.assemble(disasm(p))` gives back `p`, they
are printed as `btf_id[N]` (`btf_id[N][fd:M]` with a module BTF fd) and `map[idx:N]`. Likewise the kernel
prints `callx` (opcode 0x8d, which it never sees) as `call bpf_unspec#0`; here it is `callx rN`, as LLVM
writes it. Every other string is the kernel's.

Indices count 8-byte slots, so the slot after a `lddw` at 0 is 2.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, Union

from . import isa
from .helper_ids import HELPER_NAMES
from .isa import Insn
from .program import Program

# Per-op strings of disasm.c's tables. A missing entry prints as "(null)", as glibc's printf does for
# the NULL a sparse C table yields.
_NULL = "(null)"
_ALU_STR = {
    isa.ADD: "+=", isa.SUB: "-=", isa.MUL: "*=", isa.DIV: "/=", isa.OR: "|=", isa.AND: "&=",
    isa.LSH: "<<=", isa.RSH: ">>=", isa.NEG: "neg", isa.MOD: "%=", isa.XOR: "^=", isa.MOV: "=",
    isa.ARSH: "s>>=", isa.END: "endian",
}
_ALU_SIGNED_STR = {isa.DIV: "s/=", isa.MOD: "s%="}
_MOVSX_STR = {8: "(s8)", 16: "(s16)", 32: "(s32)"}
_ATOMIC_ALU_STR = {isa.ADD: "add", isa.AND: "and", isa.OR: "or", isa.XOR: "xor"}
_JMP_STR = {
    isa.JA: "jmp", isa.JEQ: "==", isa.JGT: ">", isa.JLT: "<", isa.JGE: ">=", isa.JLE: "<=",
    isa.JSET: "&", isa.JNE: "!=", isa.JSGT: "s>", isa.JSLT: "s<", isa.JSGE: "s>=", isa.JSLE: "s<=",
    isa.CALL: "call", isa.EXIT: "exit",
}
_CLASS_STR = {isa.LD: "ld", isa.LDX: "ldx", isa.ST: "st", isa.STX: "stx", isa.ALU: "alu", isa.JMP: "jmp",
              isa.JMP32: "jmp32", isa.ALU64: "alu64"}

ADDR_SPACE_CAST_OFF = 1  # BPF_ADDR_SPACE_CAST: the `off` of an arena address-space cast
ADDR_PERCPU_OFF = -1  # the kernel-internal per-CPU address mov
NOSPEC_MODE = 0xC0  # BPF_ST | BPF_NOSPEC: a kernel-internal speculation barrier
JA_X = isa.JMP | isa.JA | isa.X  # 0x0d, `gotox rN` (indirect jump)
MAY_GOTO_SRC = 0

Names = Union[Sequence[str], Mapping[int, str], None]


def _u32(value: int) -> int:
    return value & isa.U32


def _size(opcode: int) -> str:
    return isa.SIZE_NAMES[isa.mem_size(opcode)]


def _mem(reg: int, off: int) -> str:
    """A memory operand as disasm.c writes it: `(r10 -8)`, `(r1 +0)`."""
    return f"(r{reg} {off:+d})"


def _reg(letter: str, reg: int) -> str:
    return f"{letter}{reg}"


def _name_of(names: Names, index: int) -> str | None:
    """Look `index` up in a list or a mapping of names; None when absent or empty."""
    if names is None:
        return None
    if isinstance(names, Mapping):
        found = names.get(index)
    elif 0 <= index < len(names):
        found = names[index]
    else:
        found = None
    return found or None


# --- ALU -------------------------------------------------------------------------------------------


def _alu_text(insn: Insn) -> str:
    opcode, dst, src, off, imm = insn
    cls, op = opcode & 0x07, opcode & 0xF0
    w = "w" if cls == isa.ALU else "r"
    if op == isa.END:
        if cls == isa.ALU64:
            return f"r{dst} = bswap{imm} r{dst}"
        return f"r{dst} = {'be' if opcode & isa.X else 'le'}{imm} r{dst}"
    if op == isa.NEG:
        return f"{w}{dst} = -{w}{dst}"
    if opcode == isa.ALU64 | isa.MOV | isa.X and off == ADDR_SPACE_CAST_OFF:
        return f"r{dst} = addr_space_cast(r{src}, {_u32(imm) >> 16}, {imm & 0xFFFF})"
    if opcode == isa.ALU64 | isa.MOV | isa.X and off == ADDR_PERCPU_OFF:
        return f"r{dst} = &(void __percpu *)(r{src})"
    if op in (isa.DIV, isa.MOD) and off == 1:
        sym = _ALU_SIGNED_STR[op]
    else:
        sym = _ALU_STR.get(op, _NULL)
    if opcode & isa.X:
        cast = _MOVSX_STR.get(off, "") if op == isa.MOV else ""
        return f"{w}{dst} {sym} {cast}{w}{src}"
    return f"{w}{dst} {sym} {imm}"


# --- loads and stores ------------------------------------------------------------------------------


def _stx_text(insn: Insn) -> str:
    opcode, dst, src, off, imm = insn
    mode, size = isa.mem_mode(opcode), _size(opcode)
    if mode == isa.MEM:
        return f"*({size} *){_mem(dst, off)} = r{src}"
    if mode != isa.ATOMIC:
        return f"BUG_{opcode:02x}"
    bits = "64" if isa.mem_size(opcode) == isa.DW else ""
    where = f"({size} *){_mem(dst, off)}"
    if imm in (isa.ATOMIC_ADD, isa.ATOMIC_AND, isa.ATOMIC_OR, isa.ATOMIC_XOR):
        return f"lock *{where} {_ALU_STR[imm & 0xF0]} r{src}"
    if imm in (isa.ATOMIC_ADD | isa.FETCH, isa.ATOMIC_AND | isa.FETCH, isa.ATOMIC_OR | isa.FETCH,
               isa.ATOMIC_XOR | isa.FETCH):
        return f"r{src} = atomic{bits}_fetch_{_ATOMIC_ALU_STR[imm & 0xF0]}({where}, r{src})"
    if imm == isa.ATOMIC_CMPXCHG:
        return f"r0 = atomic{bits}_cmpxchg({where}, r0, r{src})"
    if imm == isa.ATOMIC_XCHG:
        return f"r{src} = atomic{bits}_xchg({where}, r{src})"
    if imm == isa.ATOMIC_LOAD_ACQ:
        return f"r{dst} = load_acquire(({size} *){_mem(src, off)})"
    if imm == isa.ATOMIC_STORE_REL:
        return f"store_release({where}, r{src})"
    return f"BUG_{opcode:02x}"


def _st_text(insn: Insn) -> str:
    opcode, dst, _src, off, imm = insn
    if isa.mem_mode(opcode) == isa.MEM:
        return f"*({_size(opcode)} *){_mem(dst, off)} = {imm}"
    if isa.mem_mode(opcode) == NOSPEC_MODE:
        return "nospec"
    return f"BUG_st_{opcode:02x}"


def _ldx_text(insn: Insn) -> str:
    opcode, dst, src, off, _imm = insn
    mode, size = isa.mem_mode(opcode), isa.mem_size(opcode)
    if mode == isa.MEM:
        name = isa.SIZE_NAMES[size]
    elif mode == isa.MEMSX:
        name = isa.SIGNED_SIZE_NAMES.get(size, _NULL)
    else:
        return f"BUG_ldx_{opcode:02x}"
    return f"r{dst} = *({name} *){_mem(src, off)}"


def _lddw_operand(first: Insn, second: Insn | None, map_names: Names) -> str:
    """The right-hand side of `rN = ...` for a 64-bit immediate load, bpftool style."""
    lo, hi = first.imm, (second.imm if second is not None else 0)
    src = first.src
    if src == isa.PSEUDO_MAP_FD:
        return f"map[id:{_u32(lo)}]"
    if src == isa.PSEUDO_MAP_VALUE:
        return f"map[id:{_u32(lo)}][0]+{_u32(hi)}"
    if src in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_IDX_VALUE):
        name = _name_of(map_names, lo)
        base = f"map[{name}]" if name else f"map[idx:{_u32(lo)}]"
        return base if src == isa.PSEUDO_MAP_IDX else f"{base}+{_u32(hi)}"
    if src == isa.PSEUDO_FUNC:
        return f"subprog[{lo:+d}]"
    if src == isa.PSEUDO_BTF_ID:
        return f"btf_id[{_u32(lo)}]" + (f"[fd:{hi}]" if hi else "")
    return f"{_u32(lo) | (_u32(hi) << 32):#x}"


def _ld_text(insns: Sequence[Insn], i: int, map_names: Names) -> str:
    insn = insns[i]
    opcode, dst, src, _off, imm = insn
    mode = isa.mem_mode(opcode)
    if mode == isa.ABS:
        return f"r0 = *({_size(opcode)} *)skb[{imm}]"
    if mode == isa.IND:
        return f"r0 = *({_size(opcode)} *)skb[r{src} + {imm}]"
    if mode == isa.IMM and isa.mem_size(opcode) == isa.DW:
        second = insns[i + 1] if i + 1 < len(insns) else None
        return f"r{dst} = {_lddw_operand(insn, second, map_names)}"
    return f"BUG_ld_{opcode:02x}"


# --- jumps and calls -------------------------------------------------------------------------------


def _call_text(insn: Insn, kfunc_names: Names) -> str:
    src, imm = insn.src, insn.imm
    if insn.opcode == isa.OP_CALLX:
        return f"callx r{insn.dst}"
    if src == isa.PSEUDO_CALL:
        return f"call pc{imm:+d}"
    name = HELPER_NAMES.get(imm) if src == isa.PSEUDO_HELPER else None
    if name is None and src == isa.PSEUDO_KFUNC_CALL:
        name = _name_of(kfunc_names, imm) or "kernel-function"
    return f"call {name or 'unknown'}#{imm}"


def _jmp_text(insn: Insn, kfunc_names: Names) -> str:
    opcode, dst, src, off, imm = insn
    cls, op = opcode & 0x07, opcode & 0xF0
    if op == isa.CALL:
        return _call_text(insn, kfunc_names)
    if opcode == isa.OP_JA:
        return f"goto pc{off:+d}"
    if opcode == JA_X:
        return f"gotox r{dst}"
    if opcode == isa.OP_MAY_GOTO and src == MAY_GOTO_SRC:
        return f"may_goto pc{off:+d}"
    if opcode == isa.OP_JA32:
        return f"gotol pc{imm:+d}"
    if opcode == isa.OP_EXIT:
        return "exit"
    w = "w" if cls == isa.JMP32 else "r"
    sym = _JMP_STR.get(op, _NULL)
    if opcode & isa.X:
        return f"if {w}{dst} {sym} {w}{src} goto pc{off:+d}"
    return f"if {w}{dst} {sym} {_u32(imm):#x} goto pc{off:+d}"


# --- public API ------------------------------------------------------------------------------------


def insn_text(insns: Sequence[Insn], i: int, *, kfunc_names: Names = None, map_names: Names = None) -> str:
    """The kernel's text for slot `i`, without the `(xx) ` opcode prefix."""
    insn = insns[i]
    cls = insn.opcode & 0x07
    if cls in (isa.ALU, isa.ALU64):
        return _alu_text(insn)
    if cls == isa.STX:
        return _stx_text(insn)
    if cls == isa.ST:
        return _st_text(insn)
    if cls == isa.LDX:
        return _ldx_text(insn)
    if cls == isa.LD:
        return _ld_text(insns, i, map_names)
    return _jmp_text(insn, kfunc_names)


def format_insn(
    insns: Sequence[Insn],
    i: int,
    *,
    opcodes: bool = False,
    kfunc_names: Names = None,
    map_names: Names = None,
    call_ids: bool = True,
) -> str:
    """Slot `i` as the verifier log prints it: `(b7) r1 = 1` with `opcodes`, else `r1 = 1`.

    `kfunc_names` (list or mapping, by the call's imm) turns `call kernel-function#0` into `call name#0`;
    `map_names` (by imm) turns `map[idx:0]` into `map[name]`. `call_ids=False` drops the `#id` of calls,
    as the selftests' `__xlated` dumps do.
    """
    text = insn_text(insns, i, kfunc_names=kfunc_names, map_names=map_names)
    if not call_ids and text.startswith("call ") and "#" in text:
        text = text[: text.rindex("#")]
    if opcodes and not text.startswith("BUG_"):
        text = f"({insns[i].opcode:02x}) {text}"
    return text


def _resolve_names(choice: Any, program: Program | None, attr: str) -> Names:
    """`True` means: take the names from the program (its `kfuncs`, or its maps' `name`s)."""
    if choice is True:
        if program is None:
            return None
        items = getattr(program, attr)
        return [item if isinstance(item, str) else getattr(item, "name", "") for item in items]
    if choice is False:
        return None
    return choice


def _source_lines(program: Program | None, source: bool) -> dict[int, str]:
    """Slot -> `; text` of the first line-info record starting at that slot (bpftool prints only that)."""
    if not source or program is None:
        return {}
    lines: dict[int, str] = {}
    for li in program.line_info:
        lines.setdefault(li.insn, "; " + li.text.lstrip())
    return lines


def disasm(
    program_or_insns: Program | Iterable[Insn] | bytes,
    *,
    opcodes: bool = False,
    source: bool = False,
    kfunc_names: Names | bool = None,
    map_names: Names | bool = None,
    call_ids: bool = True,
) -> str:
    """The whole program (a Program, slots, or raw bytes), one `N: text` line per instruction (N counts
    slots), newline-terminated.

    `source=True` prints bpftool's `; <source line>` before the first slot of each line-info record.
    `kfunc_names=True` / `map_names=True` take the names from the Program.
    """
    program = program_or_insns if isinstance(program_or_insns, Program) else None
    if isinstance(program_or_insns, (bytes, bytearray, memoryview)):
        insns = isa.decode(program_or_insns, validate=False)
    else:
        insns = list(program.insns if program is not None else program_or_insns)
    kfuncs = _resolve_names(kfunc_names, program, "kfuncs")
    maps = _resolve_names(map_names, program, "maps")
    sources = _source_lines(program, source)
    out: list[str] = []
    i = 0
    while i < len(insns):
        if i in sources:
            out.append(sources[i])
        text = format_insn(insns, i, opcodes=opcodes, kfunc_names=kfuncs, map_names=maps, call_ids=call_ids)
        out.append(f"{i}: {text}")
        i += isa.insn_slots(insns[i])
    return "".join(line + "\n" for line in out)
