"""Interpreter semantics beyond the conformance suite: edge cases checked by hand against RFC 9669."""

from __future__ import annotations

import pytest

from bpfvm import isa
from bpfvm.conformance import run_insns
from bpfvm.errors import CallDepthExceeded, InstructionLimitExceeded, LoadError, MemoryFault, VMFault
from bpfvm.interp import FUNC_PTR_BASE, Interpreter, Runtime
from bpfvm.isa import Insn
from bpfvm.memory import Memory
from bpfvm.program import Program
from bpfvm.ubpf_asm import assemble

M64 = (1 << 64) - 1


def run(text: str, mem: bytes = b"", **kw) -> int:
    return run_insns(assemble(text), mem, **kw)


@pytest.mark.parametrize(
    "text, expected",
    [
        # 64-bit wrap-around
        ("lddw %r0, 0xffffffffffffffff\nadd %r0, 1\nexit", 0),
        ("mov %r0, 0\nsub %r0, 1\nexit", M64),
        ("lddw %r0, 0x8000000000000000\nmul %r0, 2\nexit", 0),
        # 32-bit ops zero the upper half
        ("lddw %r0, 0xffffffffffffffff\nadd32 %r0, 1\nexit", 0),
        ("lddw %r0, 0x1234567800000005\nmov32 %r0, %r0\nexit", 5),
        ("mov %r0, -1\nexit", M64),  # mov64 imm sign-extends
        ("mov32 %r0, -1\nexit", 0xFFFFFFFF),  # mov32 imm does not
        # shifts are masked: 64 -> 0, 63 stays 63; 32-bit masks by 31
        ("mov %r0, 1\nmov %r1, 64\nlsh %r0, %r1\nexit", 1),
        ("mov %r0, 1\nlsh %r0, 63\nexit", 1 << 63),
        ("mov %r0, 1\nmov %r1, 33\nlsh32 %r0, %r1\nexit", 2),
        ("lddw %r0, 0x8000000000000000\narsh %r0, 63\nexit", M64),
        ("lddw %r0, 0x8000000000000000\nrsh %r0, 63\nexit", 1),
        ("mov32 %r0, 0x80000000\narsh32 %r0, 31\nexit", 0xFFFFFFFF),
        # division and modulo by zero
        ("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit", 0),
        ("mov %r0, 7\nmov %r1, 0\nmod %r0, %r1\nexit", 7),
        ("lddw %r0, 0x1_0000_0007\nmov %r1, 0\nmod32 %r0, %r1\nexit".replace("_", ""), 7),
        # signed division: truncation toward zero, INT_MIN / -1
        ("mov %r0, -7\nsdiv %r0, 2\nexit", (-3) & M64),
        ("mov %r0, -7\nsmod %r0, 2\nexit", (-1) & M64),
        ("mov %r0, 7\nsmod %r0, -2\nexit", 1),
        ("lddw %r0, 0x8000000000000000\nsdiv %r0, -1\nexit", 1 << 63),
        ("lddw %r0, 0x8000000000000000\nsmod %r0, -1\nexit", 0),
        ("mov32 %r0, 0x80000000\nsdiv32 %r0, -1\nexit", 0x80000000),
        # sign-extending moves
        ("mov %r1, 0x80\nmovsx864 %r0, %r1\nexit", 0xFFFFFFFFFFFFFF80),
        ("mov %r1, 0x8000\nmovsx1632 %r0, %r1\nexit", 0xFFFF8000),
        ("mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit", 0xFFFFFFFF80000000),
        # byte order
        ("lddw %r0, 0x1122334455667788\nbe16 %r0\nexit", 0x8877),
        ("lddw %r0, 0x1122334455667788\nle32 %r0\nexit", 0x55667788),
        ("lddw %r0, 0x1122334455667788\nbswap64 %r0\nexit", 0x8877665544332211),
        # neg
        ("mov %r0, 1\nneg %r0\nexit", M64),
        ("mov %r0, 1\nneg32 %r0\nexit", 0xFFFFFFFF),
        # signed and unsigned comparisons of the same bits differ
        ("mov %r0, 0\nmov %r1, -1\njsgt %r1, 0, +1\nmov %r0, 1\nexit", 1),
        ("mov %r0, 0\nmov %r1, -1\njgt %r1, 0, +1\nmov %r0, 1\nexit", 0),
        ("mov %r0, 0\nlddw %r1, 0x1ffffffff\njsgt32 %r1, 0, +1\nmov %r0, 1\nexit", 1),
    ],
)
def test_alu_and_jump_edge_cases(text: str, expected: int) -> None:
    assert run(text) == expected


def test_atomics_return_old_values() -> None:
    prog = """
        stdw [%r10-8], 5
        mov %r1, 3
        lock fetch add [%r10-8], %r1
        mov %r0, %r1
        ldxdw %r2, [%r10-8]
        lsh %r2, 8
        or %r0, %r2
        exit
    """
    assert run(prog) == 5 | (8 << 8)  # old value 5 in r1; memory now 8


def test_cmpxchg32_compares_low_half_and_zero_extends() -> None:
    prog = """
        stw [%r10-4], 7
        lddw %r0, 0xffffffff00000007
        mov %r1, 9
        lock cmpxchg32 [%r10-4], %r1
        ldxw %r2, [%r10-4]
        lsh %r2, 32
        or %r0, %r2
        exit
    """
    # r0 := old value (7, zero-extended); the compare used the low 32 bits of r0, so memory became 9.
    assert run(prog) == 7 | (9 << 32)


def test_xchg_and_fetch_ops_32bit() -> None:
    prog = """
        stw [%r10-4], 0xf0
        mov %r1, 0x0f
        lock fetch or32 [%r10-4], %r1
        mov %r3, 0x55
        lock xchg32 [%r10-4], %r3
        mov %r0, %r1
        lsh %r0, 16
        or %r0, %r3
        exit
    """
    assert run(prog) == (0xF0 << 16) | 0xFF


def test_memsx_loads_sign_extend() -> None:
    mem = bytes([0x80, 0xFF, 0x00, 0x80])
    assert run("ldxsb %r0, [%r1]\nexit", mem) == 0xFFFFFFFFFFFFFF80
    assert run("ldxsh %r0, [%r1+2]\nexit", mem) == 0xFFFFFFFFFFFF8000
    assert run("ldxsw %r0, [%r1]\nexit", mem) == 0xFFFFFFFF8000FF80


def test_local_call_preserves_callee_saved_and_has_own_stack() -> None:
    prog = """
        mov %r6, 11
        stdw [%r10-8], 100
        call local f
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        add %r0, %r6
        exit
    f:
        mov %r6, 0
        stdw [%r10-8], 1
        ldxdw %r0, [%r10-8]
        exit
    """
    assert run(prog) == 1 + 100 + 11


def test_call_depth_limit_names_the_instruction() -> None:
    # Each frame calls the next: eight frames are fine, a ninth is refused.
    def chain(depth: int) -> str:
        lines = []
        for k in range(depth - 1):
            lines += [f"call local f{k + 1}", "exit"] if k == 0 else [f"f{k}:", f"call local f{k + 1}", "exit"]
        lines += [f"f{depth - 1}:", "mov %r0, 42", "exit"]
        return "\n".join(lines)

    assert run(chain(8)) == 42
    with pytest.raises(CallDepthExceeded, match=r"insn \d+: the call stack of 9 frames is too deep"):
        run(chain(9))


def test_instruction_limit_stops_runaway_program() -> None:
    with pytest.raises(InstructionLimitExceeded, match="insn 0: instruction limit of 1000 exceeded"):
        run("ja -1\nexit", insn_limit=1000)


def test_out_of_region_access_is_a_fault_not_a_crash() -> None:
    with pytest.raises(MemoryFault, match=r"insn 1: invalid memory access: read of 8 bytes at 0x10"):
        run("mov %r1, 16\nldxdw %r0, [%r1]\nexit")
    with pytest.raises(MemoryFault, match="insn 0"):
        run("ldxdw %r0, [%r1+6]\nexit", b"\0" * 8)  # straddles the end of the region
    with pytest.raises(MemoryFault, match="write"):
        run("stdw [%r10+0], 1\nexit")  # just above the stack


def test_read_only_region_refuses_writes() -> None:
    memory = Memory()
    ro = memory.add("ro", 8, data=b"\x2a" + b"\0" * 7, writable=False)
    runtime = Runtime(memory)
    prog = Program(assemble("ldxb %r0, [%r1]\nstb [%r1], 1\nexit"))
    bound = Interpreter(prog).bind(runtime)
    with pytest.raises(MemoryFault, match="insn 1: .*read-only region ro"):
        bound(ro.start)


def test_may_goto_ends_an_infinite_loop() -> None:
    # may_goto +1 jumps over the back-edge once its budget is spent.
    insns = [
        Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, 0),
        Insn(isa.OP_MAY_GOTO, off=2),
        Insn(isa.ALU64 | isa.ADD | isa.K, 0, 0, 0, 1),
        Insn(isa.OP_JA, off=-3),
        Insn(isa.OP_EXIT),
    ]
    assert run_insns(insns, insn_limit=100_000_000) == 8 * 1024 * 1024


def test_callx_through_a_function_pointer() -> None:
    # lddw r2, func (PSEUDO_FUNC, imm relative to the next slot); callx r2
    insns = [
        Insn(isa.OP_LDDW, 2, isa.PSEUDO_FUNC, 0, 4), Insn(0),
        Insn(isa.ALU64 | isa.MOV | isa.K, 1, 0, 0, 20),
        Insn(isa.OP_CALLX, 2),
        Insn(isa.OP_EXIT),
        Insn(isa.ALU64 | isa.MOV | isa.X, 0, 1), Insn(isa.ALU64 | isa.ADD | isa.K, 0, 0, 0, 1),
        Insn(isa.OP_EXIT),
    ]
    assert run_insns(insns) == 21


def test_function_pointer_is_opaque() -> None:
    insns = [Insn(isa.OP_LDDW, 0, isa.PSEUDO_FUNC, 0, 2), Insn(0), Insn(isa.OP_EXIT),
             Insn(isa.ALU64 | isa.MOV | isa.K), Insn(isa.OP_EXIT)]
    assert run_insns(insns) == FUNC_PTR_BASE + 3 * 8


def test_jump_out_of_range_is_refused_at_load() -> None:
    with pytest.raises(LoadError, match="insn 0: jump out of range"):
        run_insns([Insn(isa.OP_JA, off=5), Insn(isa.OP_EXIT)])
    with pytest.raises(LoadError, match="jump out of range"):  # into the second slot of lddw
        run_insns([Insn(isa.OP_JA, off=1), *isa.lddw_pair(0, 1), Insn(isa.OP_EXIT)])


def test_falling_off_the_end_is_a_fault() -> None:
    with pytest.raises(VMFault, match="fell off the end"):
        run("mov %r0, 1")


def test_unknown_helper_is_a_fault_naming_it() -> None:
    with pytest.raises(VMFault, match="unknown helper #99"):
        run("call 99\nexit")


def test_interpreter_counts_instructions() -> None:
    prog = Program(assemble("mov %r0, 3\nsub %r0, 1\njne %r0, 0, -2\nexit"))
    bound = Interpreter(prog).bind(Runtime(Memory()))
    assert bound() == 0
    assert bound.steps == 1 + 3 * 2 + 1


@pytest.mark.parametrize(
    "text, refused",
    [
        ("mov %r10, 1\nexit", True),
        ("ldxdw %r10, [%r1]\nexit", True),
        ("lddw %r10, 5\nexit", True),
        ("lock fetch add [%r1], %r10\nexit", True),  # fetch writes the old value into src
        ("lock xchg [%r1], %r10\nexit", True),
        ("stdw [%r10-8], 0\nmov %r0, 0\nlock cmpxchg [%r10-8], %r10\nexit", False),  # cmpxchg writes r0 only
        ("stxdw [%r10-8], %r10\nmov %r0, 0\nexit", False),  # storing r10 reads it
    ],
)
def test_writes_to_the_frame_pointer_are_refused_at_load(text: str, refused: bool) -> None:
    if refused:
        with pytest.raises(LoadError, match=r"insn \d+: frame pointer is read only"):
            run(text, b"\0" * 8)
    else:
        run(text, b"\0" * 8)
