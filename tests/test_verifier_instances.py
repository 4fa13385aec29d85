"""The instance hook for the inliner (RFC patches 06-08), on hand-built programs: a kfunc call checked as a call,
whose instance body (a hidden subprogram appended to the program) is visited in the distilled context, with
branch facts inside the body that the dead-code passes act on."""

from __future__ import annotations

import pytest

from bpfvm.asm import assemble
from bpfvm.btf import load_vmlinux
from bpfvm.disasm import disasm
from bpfvm.errors import VerifierError
from bpfvm.rewrites.dead_code import eliminate_dead_code
from bpfvm.verifier import InstanceSpec, verify
from bpfvm.verifier.instances import dynptr_size_reg

pytestmark = pytest.mark.skipif(load_vmlinux() is None or load_vmlinux().find_func("bpf_dynptr_slice") is None,
                                reason="needs the kernel's BTF (/sys/kernel/btf/vmlinux) for dynptr kfunc prototypes")

SKB_MAIN = """
    r6 = r1
    r2 = 0
    r3 = r10
    r3 += -16
    call bpf_dynptr_from_skb
    r1 = r10
    r1 += -16
    r2 = {offset}
    r3 = {buffer}
    r4 = 4
    call bpf_dynptr_slice
    if r0 == 0 goto +1
    r0 = *(u8 *)(r0 + 0)
    r0 = 0
    exit
"""

# A body shaped like the RFC's bpf_dynptr_slice: switch on the dynptr type kept in bpf_dynptr_kern.size,
# then on whether a buffer was given.
BODY = """
body:
    r6 = *(u32 *)(r1 + 8)
    r7 = r6
    r7 >>= 28
    r7 &= 7
    if r7 != 3 goto not_skb
    if r3 == 0 goto linear
    r0 = 1
    exit
linear:
    r8 = *(u64 *)(r1 + 0)
    r8 += r2
    r0 = *(u8 *)(r8 + 0)
    r0 += 1
    exit
not_skb:
    r0 = 0
    exit
"""


def build(main: str, body: str = BODY, prog_type: str = "sched_cls", **fmt):
    text = main.format(**fmt) + body
    prog = assemble(text)
    prog.prog_type = prog_type
    main_len = len(assemble(main.format(**fmt)).insns)
    calls = [i for i, insn in enumerate(prog.insns) if insn.is_kfunc_call()
             and prog.kfuncs[insn.imm] == "bpf_dynptr_slice" and i < main_len]
    return prog, calls[0], main_len


def facts(analysis, slot):
    a = analysis.aux[slot]
    return a.get("true_branch_taken"), a.get("false_branch_taken")


def test_distilled_context_predicts_type_and_buffer_branches() -> None:
    prog, call, start = build(SKB_MAIN, offset=0, buffer=0)
    a = verify(prog, instances={call: start}, log_level=1)
    # in the body: `if r7 != 3` (slot start+4) never jumps, `if r3 == 0` (start+5) always does
    assert facts(a, start + 4) == (False, True)
    assert facts(a, start + 5) == (True, False)
    assert a.seen[start + 6] is False and a.seen[start + 14] is False
    assert a.aux[call]["kfunc_instance"] == start
    # the `data` field is a KERNEL_VALUE: the load through it is allowed but proves nothing
    assert a.aux[start + 10]["proved_safe"] is False and a.aux[start + 10]["mem_region"] == "kernel"
    assert "queued instance body" in a.log


def test_dead_code_passes_prune_the_instance_body() -> None:
    prog, call, start = build(SKB_MAIN, offset=0, buffer=0)
    a = verify(prog, instances={call: InstanceSpec(start)})
    eliminate_dead_code(prog, a)
    body = disasm(prog).splitlines()[start:]
    assert [line.split(": ", 1)[1] for line in body] == [
        "r6 = *(u32 *)(r1 +8)", "r7 = r6", "r7 >>= 28", "r7 &= 7", "r8 = *(u64 *)(r1 +0)", "r8 += r2",
        "r0 = *(u8 *)(r8 +0)", "r0 += 1", "exit"]


def test_xdp_dynptr_takes_the_other_arm() -> None:
    main = SKB_MAIN.replace("bpf_dynptr_from_skb", "bpf_dynptr_from_xdp")
    prog, call, start = build(main, prog_type="xdp", offset=0, buffer=0)
    a = verify(prog, instances={call: start})
    assert facts(a, start + 4) == (True, False)
    assert a.seen[start + 5] is False and a.seen[start + 14] is True


def test_non_null_buffer_is_a_kernel_value() -> None:
    main = SKB_MAIN.replace("r3 = {buffer}", "r3 = r10\n    r3 += -24")
    prog, call, start = build(main, offset=0, buffer=0)
    a = verify(prog, instances={call: start})
    assert facts(a, start + 5) == (True, True)


def test_scalar_arguments_are_precise_at_the_call() -> None:
    """Two paths reach the call with different offsets; if r2 were not marked precise the second would be
    pruned at the join and the body's `if r2 == 1` would be wrongly hard-wired."""
    main = SKB_MAIN.replace("    r2 = {offset}\n", "    call bpf_get_prandom_u32\n    r2 = 1\n"
                            "    if r0 > 5 goto +1\n    r2 = 2\n    r1 = r10\n    r1 += -16\n")
    body = BODY.replace("    if r3 == 0 goto linear\n", "    if r2 == 1 goto linear\n")
    prog, call, start = build(main, body, offset=0, buffer=0)
    a = verify(prog, instances={call: start})
    assert facts(a, start + 5) == (True, True)


def test_internal_calls_and_kernel_values() -> None:
    body = """
body:
    r6 = 5
    *(u64 *)(r10 - 8) = r6
    r1 = r10
    r1 += -8
    call skb_header_pointer
    r7 = *(u64 *)(r10 - 8)
    if r7 == 5 goto +2
    r0 += r7
    *(u64 *)(r0 + 16) = r7
    r0 = 0
    exit
"""
    prog, call, start = build(SKB_MAIN, body, offset=0, buffer=0)
    a = verify(prog, instances={call: InstanceSpec(start, frozenset({"skb_header_pointer"}))})
    # the stack passed to the kernel function now holds KERNEL_VALUEs: nothing is known about it
    assert facts(a, start + 6) == (True, True)
    assert a.aux[start + 8]["mem_region"] == "kernel"


def test_internal_calls_are_not_allowed_outside_instances() -> None:
    prog = assemble("call skb_header_pointer; r0 = 0; exit")
    prog.prog_type = "sched_cls"
    with pytest.raises(VerifierError, match="kfunc skb_header_pointer: no BTF prototype"):
        verify(prog, internal_kfuncs={"skb_header_pointer"})


def test_call_site_is_still_checked_as_a_kfunc_call() -> None:
    main = SKB_MAIN.replace("    r1 = r10\n    r1 += -16\n", "    call bpf_get_prandom_u32\n    r9 = r0\n"
                            "    r1 = r10\n    r1 += -16\n").replace("r4 = 4", "r4 = r9")
    prog, call, start = build(main, offset=0, buffer=0)
    with pytest.raises(VerifierError, match="R4 must be a known constant"):
        verify(prog, instances={call: start})


def test_instance_exit_does_not_return_into_the_caller() -> None:
    """The body's r0 (a scalar) does not reach the caller: after the call r0 is the kfunc's return type."""
    main = SKB_MAIN.replace("    if r0 == 0 goto +1\n    r0 = *(u8 *)(r0 + 0)\n",
                            "    r0 = *(u8 *)(r0 + 0)\n")
    prog, call, start = build(main, offset=0, buffer=0)
    with pytest.raises(VerifierError, match="R0 invalid mem access 'rdonly_mem_or_null'"):
        verify(prog, instances={call: start})


def test_declaring_a_non_kfunc_call_is_an_error() -> None:
    prog, call, start = build(SKB_MAIN, offset=0, buffer=0)
    with pytest.raises(VerifierError, match="not a kfunc call"):
        verify(prog, instances={0: start})


def test_dynptr_size_field_encoding() -> None:
    r = dynptr_size_reg(3)
    assert r.precise and r.var.value == 3 << 28 and r.var.mask == (1 << 24) - 1 | 1 << 31
    assert r.umin == 3 << 28 and r.umax == (3 << 28) | (1 << 31) | ((1 << 24) - 1)
