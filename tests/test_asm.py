"""The assembler: LLVM / selftests syntax, the kernel's verifier-log syntax, labels, errors, round trips,
and (with clang-19 installed) the encodings LLVM itself produces for the same text."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bpfvm import isa
from bpfvm.asm import assemble, assemble_insns
from bpfvm.disasm import disasm
from bpfvm.errors import AsmError
from bpfvm.isa import Insn, lddw_pair
from bpfvm.program import LineInfo, Program


def I(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Insn:  # noqa: E743
    return Insn(opcode, dst, src, off, imm)


# LLVM syntax -> the encoding llvm-mc-19 (-triple bpfel -mcpu=v4) gives for it, written out as fields.
LLVM: list[tuple[str, list[Insn]]] = [
    ("r1 = 1", [I(0xB7, 1, imm=1)]),
    ("r1 = 0x1", [I(0xB7, 1, imm=1)]),
    ("r1 = 0xffffffff", [I(0xB7, 1, imm=-1)]),
    ("w1 = 0x80000000", [I(0xB4, 1, imm=-2147483648)]),
    ("r1 = -1", [I(0xB7, 1, imm=-1)]),
    ("w1 = w2", [I(0xBC, 1, 2)]),
    ("r1 = r10", [I(0xBF, 1, 10)]),
    ("r1 += -8", [I(0x07, 1, imm=-8)]),
    ("r1 s/= r2", [I(0x3F, 1, 2, off=1)]),
    ("r1 s%= 3", [I(0x97, 1, off=1, imm=3)]),
    ("r1 s>>= 3", [I(0xC7, 1, imm=3)]),
    ("w1 s>>= w3", [I(0xCC, 1, 3)]),
    ("r1 = -r1", [I(0x87, 1)]),
    ("w1 = -w1", [I(0x84, 1)]),
    ("r1 = (s8)r2", [I(0xBF, 1, 2, off=8)]),
    ("r1 = (s32)r2", [I(0xBF, 1, 2, off=32)]),
    ("w1 = (s16)w2", [I(0xBC, 1, 2, off=16)]),
    ("r1 = be16 r1", [I(0xDC, 1, imm=16)]),
    ("r1 = le16 r1", [I(0xD4, 1, imm=16)]),
    ("r1 = bswap64 r1", [I(0xD7, 1, imm=64)]),
    ("r1 = addr_space_cast(r2, 0, 1)", [I(0xBF, 1, 2, off=1, imm=1)]),
    ("if r1 != 1 goto +1", [I(0x55, 1, off=1, imm=1)]),
    ("if r1 > 0xffffffff goto +1", [I(0x25, 1, off=1, imm=-1)]),
    ("if r1 == 4294967295 goto +1", [I(0x15, 1, off=1, imm=-1)]),
    ("if w1 > w2 goto -3", [I(0x2E, 1, 2, off=-3)]),
    ("if w1 s< -3 goto +1", [I(0xC6, 1, off=1, imm=-3)]),
    ("if r1 & 3 goto +1", [I(0x45, 1, off=1, imm=3)]),
    ("goto +0", [I(0x05)]),
    ("gotol -5", [I(0x06, imm=-5)]),
    ("may_goto +3", [I(0xE5, off=3)]),
    ("*(u64 *)(r10 - 8) = r0", [I(0x7B, 10, 0, off=-8)]),
    ("*(u32 *)(r1 + 0) = w2", [I(0x63, 1, 2)]),
    ("*(u8 *)(r1 + 0) = w2", [I(0x73, 1, 2)]),
    ("*(u32 *)(r1 + 4) = 7", [I(0x62, 1, off=4, imm=7)]),
    ("*(u64 *)(r10 - 8) = -1", [I(0x7A, 10, off=-8, imm=-1)]),
    ("*(u16 *)(r10 - 8) = 0xffff", [I(0x6A, 10, off=-8, imm=0xFFFF)]),
    ("r0 = *(u32 *)(r1 + 8)", [I(0x61, 0, 1, off=8)]),
    ("w0 = *(u8 *)(r1 + 0)", [I(0x71, 0, 1)]),
    ("r1 = *(s8 *)(r1 + 0)", [I(0x91, 1, 1)]),
    ("r0 = *(u8 *)skb[12]", [I(0x30, imm=12)]),
    ("r0 = *(u32 *)skb[-1]", [I(0x20, imm=-1)]),
    ("r0 = *(u16 *)skb[r1]", [I(0x48, 0, 1)]),
    ("lock *(u64 *)(r1 + 0) += r2", [I(0xDB, 1, 2)]),
    ("lock *(u32 *)(r1 + 0) += w2", [I(0xC3, 1, 2)]),
    ("lock *(u64 *)(r1 + 0) &= r2", [I(0xDB, 1, 2, imm=0x50)]),
    ("lock *(u32 *)(r1 + 0) ^= w2", [I(0xC3, 1, 2, imm=0xA0)]),
    ("r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)", [I(0xDB, 1, 2, imm=0x01)]),
    ("w2 = atomic_fetch_add((u32 *)(r1 + 0), w2)", [I(0xC3, 1, 2, imm=0x01)]),
    ("r2 = atomic_fetch_xor((u64 *)(r1 - 8), r2)", [I(0xDB, 1, 2, off=-8, imm=0xA1)]),
    ("r2 = xchg_64(r1 + 0, r2)", [I(0xDB, 1, 2, imm=0xE1)]),
    ("w2 = xchg32_32(r1 + 0, w2)", [I(0xC3, 1, 2, imm=0xE1)]),
    ("r0 = cmpxchg_64(r1 + 0, r0, r2)", [I(0xDB, 1, 2, imm=0xF1)]),
    ("w0 = cmpxchg32_32(r1 + 0, w0, w2)", [I(0xC3, 1, 2, imm=0xF1)]),
    ("r1 = 0x1 ll", list(lddw_pair(1, 1))),
    ("r1 = -1 ll", list(lddw_pair(1, -1))),
    ("r1 = 0x80000000 ll", list(lddw_pair(1, 0x80000000))),
    ("call 7", [I(0x85, imm=7)]),
    ("call -1", [I(0x85, imm=-1)]),
    ("callx r2", [I(0x8D, 2)]),
    ("exit", [I(0x95)]),
]


@pytest.mark.parametrize("text, insns", LLVM, ids=[t for t, _ in LLVM])
def test_llvm_syntax(text: str, insns: list[Insn]) -> None:
    assert assemble_insns(text) == insns
    assert assemble_insns(text + ";") == insns


# The kernel's syntax (verifier log, bpftool xlated, this package's disasm), as print_bpf_insn writes it.
KERNEL: list[tuple[str, list[Insn]]] = [
    ("0: r1 = 1", [I(0xB7, 1, imm=1)]),
    ("0: r1 = 0x1", list(lddw_pair(1, 1))),  # the kernel prints lddw in hex, moves in decimal
    ("0: (18) r1 = 0x1122334455667788", list(lddw_pair(1, 0x1122334455667788))),
    ("r1 = 0x1122334455667788", list(lddw_pair(1, 0x1122334455667788))),  # does not fit a move
    ("(18) r1 = 0x1", list(lddw_pair(1, 1))),
    ("(b7) r1 = 0x1", [I(0xB7, 1, imm=1)]),
    ("3: if r1 != 0x1 goto pc+1", [I(0x55, 1, off=1, imm=1)]),
    ("if w1 > w2 goto pc-3", [I(0x2E, 1, 2, off=-3)]),
    ("if w1 == 0xffffffff goto pc+0", [I(0x16, 1, imm=-1)]),
    ("goto pc+0", [I(0x05)]),
    ("gotol pc+70000", [I(0x06, imm=70000)]),
    ("may_goto pc-2", [I(0xE5, off=-2)]),
    ("gotox r3", [I(0x0D, 3)]),
    ("*(u64 *)(r10 -128) = r1", [I(0x7B, 10, 1, off=-128)]),
    ("r1 = *(u32 *)(r1 +8)", [I(0x61, 1, 1, off=8)]),
    ("r1 = *(s8 *)(r1 +0)", [I(0x91, 1, 1)]),
    ("*(u32 *)(r1 +4) = 7", [I(0x62, 1, off=4, imm=7)]),
    ("lock *(u64 *)(r1 +0) += r2", [I(0xDB, 1, 2)]),
    ("lock *(u64 *)(r1 +0) |= r2", [I(0xDB, 1, 2, imm=0x40)]),
    ("r2 = atomic64_fetch_add((u64 *)(r1 +0), r2)", [I(0xDB, 1, 2, imm=0x01)]),
    ("r3 = atomic_fetch_and((u32 *)(r1 -4), r3)", [I(0xC3, 1, 3, off=-4, imm=0x51)]),
    ("r0 = atomic_cmpxchg((u32 *)(r1 +0), r0, r2)", [I(0xC3, 1, 2, imm=0xF1)]),
    ("r0 = atomic64_cmpxchg((u64 *)(r1 +0), r0, r2)", [I(0xDB, 1, 2, imm=0xF1)]),
    ("r2 = atomic64_xchg((u64 *)(r1 +0), r2)", [I(0xDB, 1, 2, imm=0xE1)]),
    ("r0 = load_acquire((u64 *)(r1 +0))", [I(0xDB, 0, 1, imm=0x100)]),
    ("w0 = load_acquire((u8 *)(r1 + 0))", [I(0xD3, 0, 1, imm=0x100)]),
    ("store_release((u64 *)(r1 +0), r2)", [I(0xDB, 1, 2, imm=0x110)]),
    ("store_release((u16 *)(r1 + 2), w2)", [I(0xCB, 1, 2, off=2, imm=0x110)]),
    ("r0 = *(u32 *)skb[12]", [I(0x20, imm=12)]),
    ("r0 = *(u16 *)skb[r1 + 4]", [I(0x48, 0, 1, imm=4)]),
    ("r0 = *(u8 *)skb[r2 + -2]", [I(0x50, 0, 2, imm=-2)]),
    ("r1 = map[id:5]", [I(0x18, 1, 1, imm=5), I(0)]),
    ("r1 = map[id:5][0]+16", [I(0x18, 1, 2, imm=5), I(0, imm=16)]),
    ("r1 = map[idx:2]", [I(0x18, 1, 5, imm=2), I(0)]),
    ("r1 = map[idx:0]+8", [I(0x18, 1, 6, imm=0), I(0, imm=8)]),
    ("r2 = subprog[+3]", [I(0x18, 2, 4, imm=3), I(0)]),
    ("r1 = btf_id[77][fd:4]", [I(0x18, 1, 3, imm=77), I(0, imm=4)]),
    ("call bpf_get_prandom_u32#7", [I(0x85, imm=7)]),
    ("call bpf_get_prandom_u32", [I(0x85, imm=7)]),
    ("call unknown#212", [I(0x85, imm=212)]),
    ("call pc+3", [I(0x85, src=1, imm=3)]),
    ("call pc-10", [I(0x85, src=1, imm=-10)]),
    ("call kernel-function#4", [I(0x85, src=2, imm=4)]),
    ("r1 = &(void __percpu *)(r2)", [I(0xBF, 1, 2, off=-1)]),
    ("0: (95) exit", [I(0x95)]),
]


@pytest.mark.parametrize("text, insns", KERNEL, ids=[t for t, _ in KERNEL])
def test_kernel_syntax(text: str, insns: list[Insn]) -> None:
    assert assemble_insns(text) == insns


def test_verifier_log_lines_with_state_comments() -> None:
    log = (
        "0: (b7) r1 = 1                        ; R1_w=1\n"
        "1: (85) call bpf_get_prandom_u32#7    ; R0_w=scalar()\n"
        "2: (bf) r1 = r0                       ; R0_w=scalar(id=1) R1_w=scalar(id=1)\n"
        "; return x;\n"
        "3: (95) exit\n"
    )
    assert assemble_insns(log) == [I(0xB7, 1, imm=1), I(0x85, imm=7), I(0xBF, 1, 0), I(0x95)]


def test_selftest_inline_asm_concatenated() -> None:
    """C string literals concatenate into one line of `;`-separated statements."""
    text = "r1 = 1;r0 = 42;if r1 != 1 goto +1;r0 = 24;exit;"
    assert assemble_insns(text) == [I(0xB7, 1, imm=1), I(0xB7, 0, imm=42), I(0x55, 1, off=1, imm=1),
                                    I(0xB7, 0, imm=24), I(0x95)]


def test_numeric_local_labels_from_the_seed() -> None:
    """bpf_test_inline_kfunc5's body in the seed, with its %[...] constants supplied."""
    text = """
       r1 = *(u32 *)(r1 + 8);
       r1 &= %[INV_RDONLY_BIT];
       r1 >>= %[TYPE_SHIFT];
       if r1 != %[BPF_DYNPTR_TYPE_SKB] goto 1f;
       r0 = 1;
       goto 3f;
    1: if r1 != %[BPF_DYNPTR_TYPE_XDP] goto 2f;
       r0 = 2;
       goto 3f;
    2: r0 = 3;
    3: exit;
    """
    consts = {"INV_RDONLY_BIT": -2147483649 & 0xFFFFFFFF, "TYPE_SHIFT": 28,
              "BPF_DYNPTR_TYPE_SKB": 3, "BPF_DYNPTR_TYPE_XDP": 4}
    insns = assemble_insns(text, consts=consts)
    assert insns == [
        I(0x61, 1, 1, off=8), I(0x57, 1, imm=0x7FFFFFFF), I(0x77, 1, imm=28),
        I(0x55, 1, off=2, imm=3),  # -> slot 6 ("1:")
        I(0xB7, 0, imm=1), I(0x05, off=4),  # -> slot 10 ("3:")
        I(0x55, 1, off=2, imm=4),  # -> slot 9 ("2:")
        I(0xB7, 0, imm=2), I(0x05, off=1),
        I(0xB7, 0, imm=3), I(0x95),
    ]


def test_numeric_labels_pick_nearest_definition() -> None:
    text = "1: r0 = 0\n goto 1f\n 1: r0 = 1\n goto 1b\n goto 1b\n 1: exit\n"
    assert assemble_insns(text) == [I(0xB7), I(0x05, off=0), I(0xB7, 0, imm=1), I(0x05, off=-2),
                                    I(0x05, off=-3), I(0x95)]


def test_named_labels_selftest_and_llvm_style() -> None:
    text = """
        r0 = 0;
    l0_%=:
        r0 += 1;
        if r0 < 10 goto l0_%=;
        goto LBB0_2
    LBB0_2: exit
    """
    assert assemble_insns(text) == [I(0xB7), I(0x07, 0, imm=1), I(0xA5, 0, off=-2, imm=10),
                                    I(0x05, off=0), I(0x95)]


def test_lddw_counts_two_slots_for_labels() -> None:
    text = "goto end\nr1 = 0x1122334455667788 ll\nend:\nexit"
    insns = assemble_insns(text)
    assert insns[0] == I(0x05, off=2) and len(insns) == 4


def test_local_call_and_callback_address_by_label() -> None:
    text = "call sub\nr1 = sub ll\nexit\nsub:\nr0 = 1\nexit\n"
    insns = assemble_insns(text)
    assert insns[0] == I(0x85, src=1, imm=3)  # LLVM resolves `call label` to a pc-relative call
    assert insns[1:3] == [I(0x18, 1, 4, imm=2), I(0)]  # PSEUDO_FUNC, relative to the next slot


def test_kfuncs_are_numbered_by_first_use() -> None:
    prog = assemble("call bpf_foo\ncall bpf_get_prandom_u32\ncall bar\ncall bpf_foo\nexit")
    assert prog.kfuncs == ["bpf_foo", "bar"]
    assert [i.imm for i in prog.insns[:4]] == [0, 7, 1, 0]
    assert [i.src for i in prog.insns[:4]] == [2, 0, 2, 2]


def test_kfunc_explicit_ids_keep_their_index() -> None:
    prog = assemble("call kernel-function#2\ncall bpf_x#1\ncall bpf_y\nexit")
    assert [i.imm for i in prog.insns[:3]] == [2, 1, 0]
    assert prog.kfuncs == ["bpf_y", "bpf_x"]  # index 2 has no name: no entry


def test_kfunc_btf_ids_from_a_verifier_log_are_not_indices() -> None:
    prog = assemble("1: (85) call bpf_test_inline_kfunc1#98765\n2: (85) call kernel-function#98765\n3: (95) exit")
    assert prog.insns[:2] == [I(0x85, src=2, imm=0), I(0x85, src=2, imm=98765)]
    assert prog.kfuncs == ["bpf_test_inline_kfunc1"]


def test_helper_call_by_name_via_selftest_imm() -> None:
    assert assemble_insns("call %[bpf_get_prandom_u32];") == [I(0x85, imm=7)]


def test_maps_by_name() -> None:
    prog = assemble("r1 = %[map_a] ll\nr2 = map[map_b]+8\nr3 = map[map_a]\nexit")
    assert prog.maps == ["map_a", "map_b"]
    assert prog.insns[:6] == [I(0x18, 1, 5, imm=0), I(0), I(0x18, 2, 6, imm=1), I(0, imm=8),
                              I(0x18, 3, 5, imm=0), I(0)]


def test_comments() -> None:
    text = "/* a\n b */ r1 = 1 // one\n# hash comment\nr2 = 2 # two\n; source line\nexit;"
    assert assemble_insns(text) == [I(0xB7, 1, imm=1), I(0xB7, 2, imm=2), I(0x95)]


def test_program_has_no_extra_state() -> None:
    prog = assemble("r0 = 0\nexit")
    assert isinstance(prog, Program) and prog.kfuncs == [] and prog.maps == []


# --- errors: AsmError, one line, naming the line and the text ---------------------------------------

ERRORS: list[tuple[str, int, str]] = [
    ("r0 = 0\nr1 === 2\nexit", 2, "r1 === 2"),
    ("r11 = 1", 1, "r11"),
    ("r1 += w2", 1, "mixes 32- and 64-bit"),
    ("if r1 > w2 goto +1", 1, "mixes"),
    ("w1 = 0x1 ll", 1, "64-bit register"),
    ("r1 = 0x10000000000000000 ll", 1, "does not fit in 64 bits"),
    ("r1 += 0x100000000", 1, "does not fit in 32 bits"),
    ("*(u64 *)(r10 - 40000) = r1", 1, "does not fit in 16 bits"),
    ("goto +40000", 1, "does not fit in 16 bits"),
    ("exit\ngoto nowhere", 2, "undefined label 'nowhere'"),
    ("goto 1b\n1: exit", 1, "no label 1"),
    ("a:\na:\nexit", 2, "defined twice"),
    ("r1 = -r2", 1, "in place"),
    ("r2 = atomic_fetch_add((u64 *)(r1 + 0), r3)", 1, "must be the same"),
    ("r1 = atomic64_fetch_add((u32 *)(r1 + 0), r1)", 1, "u64"),
    ("r1 = cmpxchg_64(r1 + 0, r0, r2)", 1, "r0"),
    ("r1 = *(u8 *)skb[1]", 1, "r0"),
    ("r1 = *(s64 *)(r2 + 0)", 1, "64-bit load"),
    ("call bpf_get_prandom_u32#8", 1, "has id 7"),
    ("(b7) exit", 1, "opcode prefix (b7)"),
    ("r1 = 1\n/* open", 2, "unterminated"),
    ("", 1, "no instructions"),
    ("call 1 2", 1, "invalid call target"),
    ("goto +", 1, "invalid jump target"),
]


@pytest.mark.parametrize("text, line, fragment", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors_name_line_and_text(text: str, line: int, fragment: str) -> None:
    with pytest.raises(AsmError) as exc:
        assemble(text)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(f"line {line}: ")
    assert fragment in message


def test_error_quotes_the_statement() -> None:
    with pytest.raises(AsmError, match=r"^line 2: unknown instruction: 'r1 === 2'$"):
        assemble("r0 = 0\nr1 === 2")


# --- round trip: disasm then assemble gives back the same slots, for every opcode ---------------------

_REGS = (0, 1, 9, 10)
_OFFS = (0, 1, -1, 32767, -32768)
_IMMS = (0, 1, -1, 16, 32, 64, 2147483647, -2147483648, 0x100, 0x110)


def _variants(opcode: int) -> list[Insn]:
    """Instances of `opcode` with edge-case fields that isa accepts."""
    out = []
    for dst in _REGS:
        for src in _REGS:
            for off in _OFFS + (8, 16, 32):
                for imm in _IMMS + (0x01, 0x41, 0x51, 0xA1, 0xE1, 0xF1, 0x40, 0x50, 0xA0):
                    insn = Insn(opcode, dst, src, off, imm)
                    if isa.check_insn(insn) is None:
                        out.append(insn)
    return out


def _all_valid_one_slot() -> list[Insn]:
    insns = []
    for opcode in range(256):
        if opcode != isa.OP_LDDW:
            insns.extend(_variants(opcode))
    return insns


def _lddw_variants() -> list[Insn]:
    out: list[Insn] = []
    for dst in (0, 1, 10):
        for value in (0, 1, -1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 0x1122334455667788, 1 << 63):
            out += lddw_pair(dst, value)
    for src, lo, hi in ((1, 5, 0), (1, -1, 0), (2, 5, 16), (2, 0, -1), (3, 77, 0), (3, 77, 4), (3, 1, -1),
                        (4, 3, 0), (4, -4, 0), (5, 0, 0), (5, 7, 0), (6, 0, 8), (6, 3, -1)):
        out += [Insn(isa.OP_LDDW, 2, src, 0, lo), Insn(0, 0, 0, 0, hi)]
    return out


def test_round_trip_covers_every_valid_opcode() -> None:
    opcodes = {i.opcode for i in _all_valid_one_slot()}
    assert len(opcodes) == 128  # 53 ALU, 50 JMP, 6 LD (bar lddw), 7 LDX, 4 ST, 8 STX
    for opcode in (0x07, 0x0C, 0x3F, 0x91, 0xC3, 0xDB, 0xD3, 0x40, 0x06, 0xE5, 0x8D, 0xD7, 0xDC):
        assert opcode in opcodes


@pytest.mark.parametrize("opcodes", [False, True])
def test_round_trip_every_opcode(opcodes: bool) -> None:
    insns = _all_valid_one_slot() + _lddw_variants()
    text = disasm(insns, opcodes=opcodes)
    assert assemble_insns(text) == insns


def test_round_trip_program_with_names_and_source() -> None:
    prog = Program(
        insns=[I(0x85, src=2, imm=1), I(0x85, src=2, imm=0), I(0x18, 1, 5, imm=0), I(0), I(0x95)],
        kfuncs=["bpf_a", "bpf_b"], line_info=[LineInfo(0, "x.c", 1, 1, "  foo();"), LineInfo(4, "x.c", 2, 1, "")],
    )
    back = assemble(disasm(prog, source=True))
    assert back.insns == prog.insns
    named = assemble(disasm(prog, kfunc_names=True))
    assert named.insns == prog.insns and named.kfuncs == ["bpf_a", "bpf_b"]


# --- LLVM itself --------------------------------------------------------------------------------------

LLVM_MC = shutil.which("llvm-mc-19")
CLANG = shutil.which("clang-19")
OBJCOPY = shutil.which("llvm-objcopy-19")


def _text_section(obj: Path, section: str, tmp: Path) -> list[Insn]:
    out = tmp / "sec.bin"
    subprocess.run([OBJCOPY, "-O", "binary", f"--only-section={section}", str(obj), str(out)], check=True)
    return isa.decode(out.read_bytes(), validate=False)


@pytest.mark.clang
@pytest.mark.skipif(not (LLVM_MC and OBJCOPY), reason="llvm-mc-19 / llvm-objcopy-19 not installed")
def test_encodings_match_llvm_mc(tmp_path: Path) -> None:
    source = "\n".join(text for text, _ in LLVM) + "\n" + "\n".join([
        "l1:", "r1 = 1", "if r1 > 5 goto l1", "goto l2", "r2 = 0x1122334455667788 ll", "l2:",
        "call l1", "gotol l1", "may_goto l2", "exit",
    ]) + "\n"
    src = tmp_path / "t.s"
    src.write_text(source)
    obj = tmp_path / "t.o"
    subprocess.run([LLVM_MC, "-triple", "bpfel", "-mcpu=v4", "-filetype=obj", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    assert _text_section(obj, ".text", tmp_path) == assemble_insns(source)


C_PROG = r"""
__attribute__((naked, section("socket"), used)) void prog(void)
{
    asm volatile (
        "r1 = 1;"
        "r6 = 0;"
    "l0_%=:"
        "r6 += r1;"
        "if r6 s< 100 goto l0_%=;"
        "*(u64 *)(r10 - 8) = r6;"
        "r0 = *(u64 *)(r10 - 8);"
        "if r0 == 0 goto 1f;"
        "r0 = 0x1122334455667788 ll;"
        "lock *(u64 *)(r10 - 8) += r1;"
        "call 7;"
    "1:"
        "r0 = (s16)r0;"
        "w0 = w0;"
        "exit;"
        ::: "memory");
}
"""


@pytest.mark.clang
@pytest.mark.skipif(not (CLANG and OBJCOPY), reason="clang-19 / llvm-objcopy-19 not installed")
def test_selftest_style_inline_asm_matches_clang(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text(C_PROG)
    obj = tmp_path / "p.o"
    subprocess.run([CLANG, "-target", "bpf", "-mcpu=v4", "-O2", "-c", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    asm_text = "".join(part.split('"')[1] for part in C_PROG.splitlines() if part.strip().startswith('"'))
    assert _text_section(obj, "socket", tmp_path) == assemble_insns(asm_text)
