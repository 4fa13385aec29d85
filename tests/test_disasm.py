"""The disassembler against the strings of the kernel's kernel/bpf/disasm.c (print_bpf_insn) and bpftool.

Every expectation below is written by hand from the format strings of print_bpf_insn() ("%c%d %s %d",
"if %c%d %s 0x%x goto pc%+d", "*(%s *)(r%d %+d) = r%d", ...), from bpftool's print_imm() for the pseudo
`lddw` forms, and from the `__xlated(...)` / `__msg(...)` lines of the selftests in the seed patch set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bpfvm import isa
from bpfvm.asm import assemble, assemble_insns
from bpfvm.disasm import disasm, format_insn
from bpfvm.helper_ids import HELPER_NAMES, helper_id, helper_name
from bpfvm.isa import Insn, lddw_pair
from bpfvm.program import LineInfo, Program

SEED_NAME = "000_bc2a6e7f9b3c52bf.txt"  # the inlinable-kfuncs RFC: verifier_dead_code.c and friends


def I(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:  # noqa: E743
    return Insn(opcode, dst, src, off, imm)


# (instruction, text) for one-slot instructions; the opcode is given in hex as the kernel prints it.
ONE_SLOT: list[tuple[Insn, str]] = [
    # ALU64, immediate: "%c%d %s %d" with bpf_alu_string, signed decimal immediate
    (I(0x07, 1, imm=5), "r1 += 5"),
    (I(0x07, 10, imm=-8), "r10 += -8"),
    (I(0x17, 1, imm=-3), "r1 -= -3"),
    (I(0x27, 1, imm=2), "r1 *= 2"),
    (I(0x37, 1, imm=7), "r1 /= 7"),
    (I(0x37, 1, off=1, imm=-7), "r1 s/= -7"),
    (I(0x47, 1, imm=255), "r1 |= 255"),
    (I(0x57, 1, imm=-65536), "r1 &= -65536"),
    (I(0x67, 1, imm=63), "r1 <<= 63"),
    (I(0x77, 1, imm=32), "r1 >>= 32"),
    (I(0x87, 1), "r1 = -r1"),
    (I(0x97, 1, imm=10), "r1 %= 10"),
    (I(0x97, 1, off=1, imm=10), "r1 s%= 10"),
    (I(0xA7, 1, imm=-1), "r1 ^= -1"),
    (I(0xB7, 1, imm=1), "r1 = 1"),
    (I(0xB7, 0, imm=-2147483648), "r0 = -2147483648"),
    (I(0xB7, 9, imm=2147483647), "r9 = 2147483647"),
    (I(0xC7, 1, imm=3), "r1 s>>= 3"),
    (I(0xD7, 1, imm=16), "r1 = bswap16 r1"),
    (I(0xD7, 2, imm=32), "r2 = bswap32 r2"),
    (I(0xD7, 3, imm=64), "r3 = bswap64 r3"),
    # ALU64, register: "%c%d %s %s%c%d" with the movsx cast and s/=, s%=
    (I(0x0F, 1, 2), "r1 += r2"),
    (I(0x1F, 1, 2), "r1 -= r2"),
    (I(0x2F, 1, 2), "r1 *= r2"),
    (I(0x3F, 1, 2), "r1 /= r2"),
    (I(0x3F, 1, 2, off=1), "r1 s/= r2"),
    (I(0x4F, 1, 2), "r1 |= r2"),
    (I(0x5F, 1, 2), "r1 &= r2"),
    (I(0x6F, 1, 2), "r1 <<= r2"),
    (I(0x7F, 1, 2), "r1 >>= r2"),
    (I(0x9F, 1, 2), "r1 %= r2"),
    (I(0x9F, 1, 2, off=1), "r1 s%= r2"),
    (I(0xAF, 1, 2), "r1 ^= r2"),
    (I(0xBF, 1, 10), "r1 = r10"),
    (I(0xBF, 1, 2, off=8), "r1 = (s8)r2"),
    (I(0xBF, 1, 2, off=16), "r1 = (s16)r2"),
    (I(0xBF, 1, 2, off=32), "r1 = (s32)r2"),
    (I(0xCF, 1, 2), "r1 s>>= r2"),
    # the arena cast: "r%d = addr_space_cast(r%d, %u, %u)" of imm >> 16 and (u16)imm
    (I(0xBF, 1, 2, off=1, imm=1), "r1 = addr_space_cast(r2, 0, 1)"),
    (I(0xBF, 1, 2, off=1, imm=1 << 16), "r1 = addr_space_cast(r2, 1, 0)"),
    # the kernel-internal per-CPU mov (off -1)
    (I(0xBF, 1, 2, off=-1), "r1 = &(void __percpu *)(r2)"),
    # ALU32 ('w' registers); END prints 'r' and be/le
    (I(0x04, 1, imm=5), "w1 += 5"),
    (I(0x14, 1, imm=1), "w1 -= 1"),
    (I(0x24, 1, imm=3), "w1 *= 3"),
    (I(0x34, 1, imm=3), "w1 /= 3"),
    (I(0x34, 1, off=1, imm=3), "w1 s/= 3"),
    (I(0x44, 1, imm=8), "w1 |= 8"),
    (I(0x54, 1, imm=15), "w1 &= 15"),
    (I(0x64, 1, imm=31), "w1 <<= 31"),
    (I(0x74, 1, imm=1), "w1 >>= 1"),
    (I(0x84, 1), "w1 = -w1"),
    (I(0x94, 1, imm=3), "w1 %= 3"),
    (I(0x94, 1, off=1, imm=3), "w1 s%= 3"),
    (I(0xA4, 1, imm=6), "w1 ^= 6"),
    (I(0xB4, 2, imm=0), "w2 = 0"),
    (I(0xB4, 2, imm=-1), "w2 = -1"),
    (I(0xC4, 1, imm=2), "w1 s>>= 2"),
    (I(0xD4, 1, imm=16), "r1 = le16 r1"),
    (I(0xD4, 1, imm=64), "r1 = le64 r1"),
    (I(0xDC, 1, imm=16), "r1 = be16 r1"),
    (I(0xDC, 4, imm=32), "r4 = be32 r4"),
    (I(0x0C, 1, 2), "w1 += w2"),
    (I(0x1C, 1, 2), "w1 -= w2"),
    (I(0x2C, 1, 2), "w1 *= w2"),
    (I(0x3C, 1, 2), "w1 /= w2"),
    (I(0x3C, 1, 2, off=1), "w1 s/= w2"),
    (I(0x4C, 1, 2), "w1 |= w2"),
    (I(0x5C, 1, 2), "w1 &= w2"),
    (I(0x6C, 1, 2), "w1 <<= w2"),
    (I(0x7C, 1, 2), "w1 >>= w2"),
    (I(0x9C, 1, 2), "w1 %= w2"),
    (I(0x9C, 1, 2, off=1), "w1 s%= w2"),
    (I(0xAC, 1, 2), "w1 ^= w2"),
    (I(0xBC, 1, 2), "w1 = w2"),
    (I(0xBC, 1, 2, off=8), "w1 = (s8)w2"),
    (I(0xBC, 1, 2, off=16), "w1 = (s16)w2"),
    (I(0xCC, 1, 2), "w1 s>>= w2"),
    # LDX: "r%d = *(%s *)(r%d %+d)" with u* for MEM and s* for MEMSX
    (I(0x61, 0, 1, off=8), "r0 = *(u32 *)(r1 +8)"),
    (I(0x69, 0, 1, off=-2), "r0 = *(u16 *)(r1 -2)"),
    (I(0x71, 0, 1, off=0), "r0 = *(u8 *)(r1 +0)"),
    (I(0x79, 1, 10, off=-128), "r1 = *(u64 *)(r10 -128)"),
    (I(0x81, 1, 2, off=4), "r1 = *(s32 *)(r2 +4)"),
    (I(0x89, 1, 2, off=2), "r1 = *(s16 *)(r2 +2)"),
    (I(0x91, 1, 1, off=0), "r1 = *(s8 *)(r1 +0)"),
    (I(0x79, 1, 2, off=32767), "r1 = *(u64 *)(r2 +32767)"),
    (I(0x79, 1, 2, off=-32768), "r1 = *(u64 *)(r2 -32768)"),
    # ST: "*(%s *)(r%d %+d) = %d"
    (I(0x62, 1, off=4, imm=7), "*(u32 *)(r1 +4) = 7"),
    (I(0x6A, 10, off=-8, imm=65535), "*(u16 *)(r10 -8) = 65535"),
    (I(0x72, 1, off=0, imm=-1), "*(u8 *)(r1 +0) = -1"),
    (I(0x7A, 1, off=0, imm=42), "*(u64 *)(r1 +0) = 42"),
    # STX: "*(%s *)(r%d %+d) = r%d"
    (I(0x63, 1, 2, off=4), "*(u32 *)(r1 +4) = r2"),
    (I(0x6B, 1, 2, off=6), "*(u16 *)(r1 +6) = r2"),
    (I(0x73, 1, 2, off=7), "*(u8 *)(r1 +7) = r2"),
    (I(0x7B, 10, 1, off=-128), "*(u64 *)(r10 -128) = r1"),
    # atomics: "lock *(%s *)(r%d %+d) %s r%d", "r%d = atomic%s_fetch_%s((%s *)(r%d %+d), r%d)", ...
    (I(0xDB, 1, 2, off=0, imm=0x00), "lock *(u64 *)(r1 +0) += r2"),
    (I(0xDB, 1, 2, off=8, imm=0x40), "lock *(u64 *)(r1 +8) |= r2"),
    (I(0xC3, 1, 2, off=0, imm=0x50), "lock *(u32 *)(r1 +0) &= r2"),
    (I(0xC3, 1, 2, off=-4, imm=0xA0), "lock *(u32 *)(r1 -4) ^= r2"),
    (I(0xDB, 1, 2, off=0, imm=0x01), "r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)"),
    (I(0xDB, 1, 2, off=-8, imm=0x51), "r2 = atomic64_fetch_and((u64 *)(r1 -8), r2)"),
    (I(0xC3, 1, 3, off=0, imm=0x41), "r3 = atomic_fetch_or((u32 *)(r1 +0), r3)"),
    (I(0xC3, 1, 3, off=0, imm=0xA1), "r3 = atomic_fetch_xor((u32 *)(r1 +0), r3)"),
    (I(0xDB, 1, 2, off=0, imm=0xE1), "r2 = atomic64_xchg((u64 *)(r1 +0), r2)"),
    (I(0xC3, 1, 2, off=0, imm=0xE1), "r2 = atomic_xchg((u32 *)(r1 +0), r2)"),
    (I(0xDB, 1, 2, off=0, imm=0xF1), "r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)"),
    (I(0xC3, 1, 2, off=16, imm=0xF1), "r0 = atomic_cmpxchg((u32 *)(r1 +16), r0, r2)"),
    # load-acquire / store-release: "r%d = load_acquire((%s *)(r%d %+d))", "store_release((%s *)(r%d %+d), r%d)"
    (I(0xD3, 0, 1, off=0, imm=0x100), "r0 = load_acquire((u8 *)(r1 +0))"),
    (I(0xCB, 0, 1, off=2, imm=0x100), "r0 = load_acquire((u16 *)(r1 +2))"),
    (I(0xC3, 0, 1, off=4, imm=0x100), "r0 = load_acquire((u32 *)(r1 +4))"),
    (I(0xDB, 3, 1, off=-8, imm=0x100), "r3 = load_acquire((u64 *)(r1 -8))"),
    (I(0xD3, 1, 2, off=0, imm=0x110), "store_release((u8 *)(r1 +0), r2)"),
    (I(0xCB, 1, 2, off=0, imm=0x110), "store_release((u16 *)(r1 +0), r2)"),
    (I(0xC3, 1, 2, off=0, imm=0x110), "store_release((u32 *)(r1 +0), r2)"),
    (I(0xDB, 1, 2, off=8, imm=0x110), "store_release((u64 *)(r1 +8), r2)"),
    # legacy packet loads: "r0 = *(%s *)skb[%d]" and "r0 = *(%s *)skb[r%d + %d]"
    (I(0x20, imm=12), "r0 = *(u32 *)skb[12]"),
    (I(0x28, imm=12), "r0 = *(u16 *)skb[12]"),
    (I(0x30, imm=-1), "r0 = *(u8 *)skb[-1]"),
    (I(0x40, 0, 1, imm=4), "r0 = *(u32 *)skb[r1 + 4]"),
    (I(0x48, 0, 6, imm=0), "r0 = *(u16 *)skb[r6 + 0]"),
    (I(0x50, 0, 2, imm=-2), "r0 = *(u8 *)skb[r2 + -2]"),
    # unconditional jumps, may_goto, exit
    (I(0x05, off=0), "goto pc+0"),
    (I(0x05, off=-1), "goto pc-1"),
    (I(0x05, off=32767), "goto pc+32767"),
    (I(0x06, imm=70000), "gotol pc+70000"),
    (I(0x06, imm=-70000), "gotol pc-70000"),
    (I(0xE5, off=3), "may_goto pc+3"),
    (I(0x95), "exit"),
    (I(0x0D, 3), "gotox r3"),
    # calls: "call %s#%d" with the helper name, "call pc%s" for local calls, kernel-function for kfuncs
    (I(0x85, imm=7), "call bpf_get_prandom_u32#7"),
    (I(0x85, imm=1), "call bpf_map_lookup_elem#1"),
    (I(0x85, imm=0), "call bpf_unspec#0"),
    (I(0x85, imm=211), "call bpf_cgrp_storage_delete#211"),
    (I(0x85, imm=212), "call unknown#212"),
    (I(0x85, imm=-5), "call unknown#-5"),
    (I(0x85, src=1, imm=3), "call pc+3"),
    (I(0x85, src=1, imm=-10), "call pc-10"),
    (I(0x85, src=2, imm=0), "call kernel-function#0"),
    (I(0x85, src=2, imm=12345), "call kernel-function#12345"),
    (I(0x8D, 2), "callx r2"),
    # internal and malformed encodings print as the kernel does
    (I(0xC2), "nospec"),
    (I(0x00), "BUG_ld_00"),
    (I(0x21), "BUG_ldx_21"),
    (I(0x22), "BUG_st_22"),
    (I(0xA3), "BUG_a3"),
    (I(0xDB, 1, 2, imm=0x02), "BUG_db"),
    (I(0x96, 1), "if w1 exit 0x0 goto pc+0"),
    (I(0xE5, src=1), "if r0 (null) 0x0 goto pc+0"),
]

# Conditional jumps, all eleven ops in both classes: "if %c%d %s 0x%x goto pc%+d" and "... %c%d goto ...".
_JMP_SYMS = [(0x10, "=="), (0x20, ">"), (0x30, ">="), (0x40, "&"), (0x50, "!="), (0x60, "s>"),
             (0x70, "s>="), (0xA0, "<"), (0xB0, "<="), (0xC0, "s<"), (0xD0, "s<=")]
JUMPS: list[tuple[Insn, str]] = []
for _op, _sym in _JMP_SYMS:
    JUMPS += [
        (I(0x05 | _op, 1, imm=1, off=1), f"if r1 {_sym} 0x1 goto pc+1"),
        (I(0x0D | _op, 1, 2, off=-3), f"if r1 {_sym} r2 goto pc-3"),
        (I(0x06 | _op, 1, imm=-1, off=0), f"if w1 {_sym} 0xffffffff goto pc+0"),
        (I(0x0E | _op, 1, 2, off=-3), f"if w1 {_sym} w2 goto pc-3"),
    ]
JUMPS += [
    (I(0x55, 1, imm=1, off=1), "if r1 != 0x1 goto pc+1"),
    (I(0x25, 3, imm=0x7FFFFFFF, off=-32768), "if r3 > 0x7fffffff goto pc-32768"),
    (I(0x15, 0, imm=-2147483648, off=5), "if r0 == 0x80000000 goto pc+5"),
]


@pytest.mark.parametrize("insn, text", ONE_SLOT + JUMPS, ids=lambda v: v if isinstance(v, str) else None)
def test_every_opcode_prints_as_disasm_c(insn: Insn, text: str) -> None:
    assert format_insn([insn], 0) == text


def test_every_valid_one_slot_opcode_is_covered() -> None:
    """Each opcode that isa accepts (bar lddw) appears in the tables above."""
    covered = {insn.opcode for insn, _ in ONE_SLOT + JUMPS}
    for opcode in range(256):
        if opcode == isa.OP_LDDW:
            continue
        candidates = [Insn(opcode, 1, 2, 0, 0), Insn(opcode, 1, 0, 0, 16), Insn(opcode, 0, 0, 0, 0),
                      Insn(opcode, 1, 2, 0, 1), Insn(opcode, 0, 1, 0, 0)]
        if any(isa.check_insn(c) is None for c in candidates):
            assert opcode in covered, f"opcode {opcode:#04x} has no expected text"


LDDW: list[tuple[list[Insn], str]] = [
    # without a callback the kernel prints "0x%llx" of the 64-bit value
    (list(lddw_pair(1, 0x1122334455667788)), "r1 = 0x1122334455667788"),
    (list(lddw_pair(2, 0)), "r2 = 0x0"),
    (list(lddw_pair(3, -1)), "r3 = 0xffffffffffffffff"),
    (list(lddw_pair(0, 1)), "r0 = 0x1"),
    # bpftool's print_imm(): map[id:%u], map[id:%u][0]+%u, map[idx:%u]+%u, subprog[%+d]
    ([I(0x18, 1, 1, imm=5), I(0)], "r1 = map[id:5]"),
    ([I(0x18, 1, 2, imm=5), I(0, imm=16)], "r1 = map[id:5][0]+16"),
    ([I(0x18, 1, 6, imm=0), I(0, imm=8)], "r1 = map[idx:0]+8"),
    ([I(0x18, 2, 4, imm=3), I(0)], "r2 = subprog[+3]"),
    ([I(0x18, 2, 4, imm=-4), I(0)], "r2 = subprog[-4]"),
    # the two pseudo sources bpftool prints as bare numbers (see bpfvm.disasm)
    ([I(0x18, 1, 5, imm=2), I(0)], "r1 = map[idx:2]"),
    ([I(0x18, 1, 3, imm=77), I(0)], "r1 = btf_id[77]"),
    ([I(0x18, 1, 3, imm=77), I(0, imm=4)], "r1 = btf_id[77][fd:4]"),
]


@pytest.mark.parametrize("insns, text", LDDW, ids=[t for _, t in LDDW])
def test_lddw_forms(insns: list[Insn], text: str) -> None:
    assert format_insn(insns, 0) == text


def test_opcode_prefix_is_the_verifier_logs() -> None:
    insns = [I(0xB7, 1, imm=1), *lddw_pair(2, 7), I(0x85, imm=7), I(0x95)]
    assert disasm(insns, opcodes=True) == (
        "0: (b7) r1 = 1\n1: (18) r2 = 0x7\n3: (85) call bpf_get_prandom_u32#7\n4: (95) exit\n"
    )
    # print_bpf_insn prints BUG_ lines without the "(%02x) " prefix
    assert format_insn([I(0x00)], 0, opcodes=True) == "BUG_ld_00"


def test_indices_count_slots() -> None:
    insns = [*lddw_pair(1, 0x1122334455667788), *lddw_pair(2, 1), I(0x95)]
    assert disasm(insns) == "0: r1 = 0x1122334455667788\n2: r2 = 0x1\n4: exit\n"


def test_kfunc_and_map_names_when_asked() -> None:
    prog = Program(insns=[I(0x85, src=2, imm=1), I(0x18, 1, 5, imm=0), I(0), I(0x95)], kfuncs=["a", "bpf_b"])
    prog.maps = [type("M", (), {"name": "my_map"})()]
    assert disasm(prog) == "0: call kernel-function#1\n1: r1 = map[idx:0]\n3: exit\n"
    assert disasm(prog, kfunc_names=True, map_names=True) == "0: call bpf_b#1\n1: r1 = map[my_map]\n3: exit\n"
    assert format_insn(prog.insns, 0, kfunc_names={1: "x"}) == "call x#1"
    assert format_insn(prog.insns, 0, kfunc_names=["only"]) == "call kernel-function#1"


def test_call_ids_dropped_as_selftests_do() -> None:
    insns = [I(0x85, imm=7), I(0x85, src=2, imm=3), I(0x85, src=1, imm=2), I(0x95)]
    assert disasm(insns, call_ids=False) == (
        "0: call bpf_get_prandom_u32\n1: call kernel-function\n2: call pc+2\n3: exit\n"
    )


def test_source_lines_like_bpftool() -> None:
    prog = Program(
        insns=[I(0xB7, 0, imm=0), *lddw_pair(1, 5), I(0x07, 1, imm=1), I(0x95)],
        line_info=[LineInfo(0, "a.c", 3, 5, "    int x = 0;"), LineInfo(1, "a.c", 4, 5, "\tlong y = 5;"),
                   LineInfo(1, "a.c", 4, 9, "dup"), LineInfo(4, "a.c", 5, 5, "return x;")],
    )
    assert disasm(prog, source=True) == (
        "; int x = 0;\n0: r0 = 0\n; long y = 5;\n1: r1 = 0x5\n3: r1 += 1\n; return x;\n4: exit\n"
    )
    assert disasm(prog) == "0: r0 = 0\n1: r1 = 0x5\n3: r1 += 1\n4: exit\n"


def test_truncated_lddw_prints_the_low_half() -> None:
    assert disasm([I(0x18, 1, imm=3)]) == "0: r1 = 0x3\n"


def test_helper_table() -> None:
    assert len(HELPER_NAMES) == 212
    assert HELPER_NAMES[7] == "bpf_get_prandom_u32"
    assert helper_name(1) == "bpf_map_lookup_elem" and helper_name(212) is None
    assert HELPER_NAMES[0] == "bpf_unspec"
    assert HELPER_NAMES[12] == "bpf_tail_call"
    assert HELPER_NAMES[130] == "bpf_ringbuf_output"
    assert HELPER_NAMES[181] == "bpf_loop"
    assert HELPER_NAMES[209] == "bpf_user_ringbuf_drain"
    assert HELPER_NAMES[211] == "bpf_cgrp_storage_delete"
    assert helper_id("bpf_get_prandom_u32") == 7
    assert helper_id("get_prandom_u32") == 7
    assert helper_id("bpf_no_such_helper") is None
    assert len(set(HELPER_NAMES.values())) == 212


@pytest.mark.skipif(not Path("/usr/include/linux/bpf.h").exists(), reason="no uapi linux/bpf.h installed")
def test_helper_table_matches_installed_uapi_header() -> None:
    """The installed header's __BPF_FUNC_MAPPER lists helpers in id order (older ones lack the ids)."""
    text = Path("/usr/include/linux/bpf.h").read_text()
    body = text[text.index("__BPF_FUNC_MAPPER(FN"):]
    names = re.findall(r"FN\((\w+)(?:, (\d+), ##ctx)?\)", body.split("/* */")[0])
    assert names, "no helper list found"
    for i, (name, explicit) in enumerate(names):
        assert HELPER_NAMES[int(explicit) if explicit else i] == "bpf_" + name


# --- the seed: selftests with __xlated(...) and __msg(...) expectations ------------------------------


@pytest.fixture(scope="module")
def seed_tests(seeds_dir: Path) -> list[dict]:
    """Each selftest in the seed patch set: its annotations and the text of its `asm volatile` body."""
    path = seeds_dir / SEED_NAME
    if not path.exists():
        pytest.skip(f"seed {path} not present")
    text = path.read_text()
    tests = []
    for m in re.finditer(r'\+SEC\("[^"]*"\)\n(.*?)\n\+}\n', text, flags=re.S):
        block = m.group(1)
        body = block.split("asm volatile (", 1)[1].split("\t:", 1)[0] if "asm volatile" in block else ""
        asm_text = "\n".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
        name = re.search(r"__naked void (\w+)\(", block)
        tests.append({
            "name": name.group(1) if name else "?",
            "xlated": re.findall(r'__xlated\("([^"]*)"\)', block),
            "msgs": re.findall(r'__msg\("([^"]*)"\)', block),
            "asm": asm_text,
        })
    return tests


def _matches_in_order(dump: str, expected: list[str]) -> None:
    """test_loader's rule: each expectation is a substring found after the previous one."""
    pos = 0
    for exp in expected:
        found = dump.find(exp, pos)
        assert found >= 0, f"{exp!r} not found in order in:\n{dump}"
        pos = found + len(exp)


def test_seed_has_the_expected_tests(seed_tests: list[dict]) -> None:
    names = {t["name"] for t in seed_tests if t["xlated"]}
    assert {"cond_always_false", "cond_unknown", "clobbered_regs", "r10_escapes1"} <= names


def test_seed_xlated_lines_read_back_verbatim(seed_tests: list[dict]) -> None:
    """Every complete `__xlated("N: text")` line assembles, and prints back as exactly `text`."""
    checked = 0
    for t in seed_tests:
        for line in t["xlated"]:
            index, text = line.split(": ", 1)
            if text in ("call", "call kernel-function") or text.endswith("= "):
                continue  # written as prefixes in the seed; checked by the whole-program tests below
            insns = assemble_insns(line)
            assert format_insn(insns, 0, call_ids=False) == text, line
            checked += 1
    assert checked >= 50


def test_seed_cond_unknown_whole_program(seed_tests: list[dict]) -> None:
    """Nothing is dead in cond_unknown, so the xlated dump is its source, disassembled."""
    (t,) = [t for t in seed_tests if t["name"] == "cond_unknown"]
    prog = assemble(t["asm"])
    _matches_in_order(disasm(prog, call_ids=False), t["xlated"])
    assert disasm(prog).startswith("0: call bpf_get_prandom_u32#7\n")


def test_seed_kfunc_call_prefix_lines(seed_tests: list[dict]) -> None:
    """`0: call kernel-function` is what the xlated dump of an un-inlined kfunc call shows."""
    for name, kfunc in (("r10_escapes1", "bpf_test_inline_kfunc7"), ("r10_escapes2", "bpf_test_inline_kfunc8")):
        (t,) = [t for t in seed_tests if t["name"] == name]
        prog = assemble(t["asm"])
        assert prog.kfuncs == [kfunc]
        _matches_in_order(disasm(prog, call_ids=False), t["xlated"])


def test_seed_verifier_log_messages(seed_tests: list[dict]) -> None:
    """`__msg("1: (85) call bpf_test_inline_kfunc1")` and `before 0: (b7) r1 = 1` come from the
    verifier log, which prints the opcode and the kfunc's name."""
    (t,) = [t for t in seed_tests if t["name"] == "two_callsites_scalar_param"]
    prog = assemble(t["asm"])
    log = disasm(prog, opcodes=True, kfunc_names=True)
    insn_msgs = [re.sub(r"^.*before ", "", m) for m in t["msgs"] if re.search(r"\d+: \(", m)]
    assert insn_msgs == ["1: (85) call bpf_test_inline_kfunc1", "0: (b7) r1 = 1",
                         "3: (85) call bpf_test_inline_kfunc1", "2: (b7) r1 = 2"]
    for msg in insn_msgs:
        assert msg in log


def test_seed_param_kernel_value_body(seeds_dir: Path, seed_tests: list[dict]) -> None:
    """bpf_test_inline_kfunc3's body is in the seed both as its LLVM asm source and, inlined, as slots
    3 and 4 of param_kernel_value's xlated dump."""
    text = (seeds_dir / SEED_NAME).read_text()
    found = re.search(r"int bpf_test_inline_kfunc3\([^)]*\)\n\+\{\n\+\s*asm volatile \((.*?)\n\+\s*\);",
                      text, flags=re.S)
    body = found.group(1)
    source = "\n".join(re.findall(r'"([^"]*)"', body))
    (t,) = [t for t in seed_tests if t["name"] == "param_kernel_value"]
    inlined = [line.split(": ", 1)[1] for line in t["xlated"] if line.split(":")[0] in ("3", "4")]
    printed = [line.split(": ", 1)[1] for line in disasm(assemble(source)).splitlines()]
    assert printed[:2] == inlined == ["r1 = *(u64 *)(r1 +0)", "*(u64 *)(r1 +0) = 42"]
