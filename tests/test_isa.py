"""Decoding, encoding and reserved-field validation of RFC 9669 instructions."""

from __future__ import annotations

import pytest

from bpfvm import isa
from bpfvm.isa import DecodeError, Insn


def test_encode_decode_round_trip_every_field() -> None:
    insns = [
        Insn(0xB7, 1, 0, 0, -1),  # mov r1, -1
        Insn(0x6B, 10, 3, -8, 0),  # *(u16 *)(r10 -8) = r3
        Insn(0xDB, 1, 2, 32767, isa.ATOMIC_CMPXCHG),
        *isa.lddw_pair(3, 0x8877665544332211),
        Insn(0x06, 0, 0, 0, -100),  # gotol
        Insn(0x95),
    ]
    raw = isa.encode(insns)
    assert len(raw) == 8 * len(insns)
    assert raw[:8] == bytes.fromhex("b701 0000 ffffffff".replace(" ", ""))
    assert raw[8:16] == bytes([0x6B, 0x3A, 0xF8, 0xFF, 0, 0, 0, 0])  # src 3 in the high nibble, off -8
    assert isa.decode(raw) == insns
    assert isa.lddw_value(insns[3], insns[4]) == 0x8877665544332211


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty program"),
        (b"\x95" + b"\0" * 8, "not a multiple of 8"),
        (bytes([0x18, 1, 0, 0, 1, 0, 0, 0]), "lddw is missing its second slot"),
        (bytes([0x18, 1, 0, 0, 1, 0, 0, 0, 0x07, 0, 0, 0, 0, 0, 0, 0]), "second slot of lddw: reserved field 'opcode'"),
        (bytes([0xFF, 0, 0, 0, 0, 0, 0, 0]), "unknown opcode 0xff"),
        (bytes([0xB7, 0x0B, 0, 0, 0, 0, 0, 0]), "invalid dst register r11"),
        (bytes([0x87, 0x01, 0, 0, 0, 0, 0, 0]) + b"\x95" + b"\0" * 7, None),  # neg r1 is fine
        (bytes([0x8F, 0x01, 0, 0, 0, 0, 0, 0]), "neg takes no source register"),
        (bytes([0xD4, 0x01, 0, 0, 8, 0, 0, 0]), "invalid width imm=8"),
        (bytes([0xDF, 0x01, 0, 0, 16, 0, 0, 0]), "unknown opcode 0xdf"),
        (bytes([0xDB, 0x21, 0, 0, 0x02, 0, 0, 0]), "unknown operation imm=0x2"),
        (bytes([0xD3, 0x21, 0, 0, 0x00, 0, 0, 0]), "atomics are 32 or 64 bit"),
        (bytes([0x85, 0, 0, 0, 1, 0, 0, 0]) .replace(b"\x85\x00", b"\x85\x30"), "unknown call kind src=3"),
        (bytes([0x86, 0, 0, 0, 1, 0, 0, 0]), "unknown opcode 0x86"),
        (bytes([0x06, 0, 1, 0, 1, 0, 0, 0]), "ja32: reserved field 'off'"),
        (bytes([0xBF, 0x21, 7, 0, 0, 0, 0, 0]), "mov: invalid offset 7"),
        (bytes([0xBC, 0x21, 32, 0, 0, 0, 0, 0]), "mov: invalid offset 32"),  # movsx 32->32 does not exist
        (bytes([0x9F, 0x21, 2, 0, 0, 0, 0, 0]), "mod: invalid offset 2"),
        (bytes([0x98, 0, 0, 0, 0, 0, 0, 0]), "unknown opcode 0x98"),  # ld_abs dw
        (bytes([0x20, 1, 0, 0, 0, 0, 0, 0]), "ld_abs: reserved field 'dst'"),
        (bytes([0x99, 0x21, 0, 0, 0, 0, 0, 0]), "unknown opcode 0x99"),  # ldxsdw does not exist
        (bytes([0x18, 0x71, 0, 0, 0, 0, 0, 0]) + b"\0" * 8, "unknown pseudo source kind src=7"),
        (bytes([0xE5, 0, 3, 0, 1, 0, 0, 0]), "may_goto: reserved field 'imm'"),
    ],
)
def test_decode_refuses_with_a_message_naming_the_problem(raw: bytes, message: str | None) -> None:
    if message is None:
        isa.decode(raw)
        return
    with pytest.raises(DecodeError, match=message):
        isa.decode(raw)


def test_every_valid_opcode_class_decodes() -> None:
    valid = [
        Insn(cls | op | src) for cls in (isa.ALU, isa.ALU64) for op in
        (isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.MOD, isa.XOR, isa.MOV, isa.ARSH)
        for src in (isa.K, isa.X)
    ]
    valid += [Insn(isa.JMP | op | src, 1, 2 if src else 0, 1) for op in isa.JMP_NAMES for src in (isa.K, isa.X)]
    valid += [Insn(isa.JMP32 | op | src, 1, 2 if src else 0, 1) for op in isa.JMP_NAMES for src in (isa.K, isa.X)]
    valid += [Insn(isa.LDX | isa.MEM | size, 1, 2) for size in (isa.B, isa.H, isa.W, isa.DW)]
    valid += [Insn(isa.LDX | isa.MEMSX | size, 1, 2) for size in (isa.B, isa.H, isa.W)]
    valid += [Insn(isa.ST | isa.MEM | size, 1, 0, 0, 5) for size in (isa.B, isa.H, isa.W, isa.DW)]
    valid += [Insn(isa.STX | isa.MEM | size, 1, 2) for size in (isa.B, isa.H, isa.W, isa.DW)]
    valid += [Insn(isa.STX | isa.ATOMIC | size, 1, 2, 0, op) for size in (isa.W, isa.DW) for op in isa.ATOMIC_OPS]
    valid += [Insn(isa.LD | isa.ABS | size, 0, 0, 0, 12) for size in (isa.B, isa.H, isa.W)]
    valid += [Insn(isa.LD | isa.IND | size, 0, 3, 0, 12) for size in (isa.B, isa.H, isa.W)]
    valid += [Insn(isa.OP_CALL, imm=7), Insn(isa.OP_CALL, src=1, imm=1), Insn(isa.OP_CALL, src=2, imm=0),
              Insn(isa.OP_CALLX, 2), Insn(isa.OP_JA, off=0), Insn(isa.OP_JA32, imm=0), Insn(isa.OP_MAY_GOTO, off=0)]
    for insn in valid:
        assert isa.check_insn(insn) is None, insn
