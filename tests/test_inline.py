"""Inlinable kfuncs: the RFC's own expected listings (patch 10, verifier_inlinable_kfuncs.c), pruning of the
dynptr_slice benchmark (patch 11), and equal results in every inline mode."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm.asm import assemble
from bpfvm.disasm import disasm
from bpfvm.kfunclib import KfuncLibrary, read_library, scan_regs_usage
from bpfvm.pipeline import prepare

REPO = Path(__file__).resolve().parents[1]
TEST_LIBRARY = REPO / "tests" / "kfuncs" / "test_inlinable_kfuncs.o"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def library() -> KfuncLibrary:
    lib = KfuncLibrary()
    lib.load(TEST_LIBRARY)
    return lib


def program(asm: str, prog_type: str, attach_type: str = ""):
    prog = assemble(asm)
    prog.prog_type = prog_type
    prog.attach_type = attach_type
    return prog


def xlated(prog, library: KfuncLibrary, mode: str = "pruned") -> list[str]:
    return disasm(prepare(prog, mode=mode, library=library).program, call_ids=False).splitlines()


def assert_listing(lines: list[str], expected: list[str]) -> None:
    """The selftests' __xlated rule: each expected line, in order, starts a line of the listing; a listing
    line `N: ...` is matched by index. Lines ending in a space (`8: r1 &= `) match as prefixes."""
    by_index = {line.split(":", 1)[0]: line for line in lines}
    for want in expected:
        got = by_index.get(want.split(":", 1)[0])
        assert got is not None and got.startswith(want), f"expected {want!r}, got {got!r}\n" + "\n".join(lines)


# The programs and listings of the RFC's verifier_inlinable_kfuncs.c (socket filters unless said otherwise).
SEED_CASES = {
    "two_callsites_scalar_param": (
        "socket_filter",
        "r1 = 1; call bpf_test_inline_kfunc1; r1 = 2; call bpf_test_inline_kfunc1; exit;",
        ["0: r1 = 1", "1: r0 = 42", "2: r0 = 11", "3: goto pc+0", "4: r1 = 2", "5: r0 = 42", "6: r0 = 22",
         "7: goto pc+0", "8: exit"],
    ),
    "param_null": (
        "socket_filter",
        "r1 = 0; call bpf_test_inline_kfunc2; exit;",
        ["0: r1 = 0", "1: r0 = 42", "2: r0 = 24", "3: goto pc+0", "4: exit"],
    ),
    "param_kernel_value": (
        "socket_filter",
        "r1 = r10; r1 += -8; r2 = 8; call bpf_test_inline_kfunc3; exit;",
        ["0: r1 = r10", "1: r1 += -8", "2: r2 = 8", "3: r1 = *(u64 *)(r1 +0)", "4: *(u64 *)(r1 +0) = 42",
         "5: r0 = 0", "6: goto pc+0", "7: exit"],
    ),
    "clobbered_regs": (
        "socket_filter",
        "*(u64 *)(r10 - 128) = r1; call bpf_test_inline_kfunc4; r1 = *(u64 *)(r10 - 128); exit;",
        ["0: *(u64 *)(r10 -128) = r1", "1: *(u64 *)(r10 -136) = r6", "2: *(u64 *)(r10 -144) = r7", "3: r0 = 0",
         "4: r1 = 1", "5: r2 = 2", "6: r6 = 3", "7: r7 = 4", "8: goto pc+0", "9: r7 = *(u64 *)(r10 -144)",
         "10: r6 = *(u64 *)(r10 -136)", "11: r1 = *(u64 *)(r10 -128)", "12: exit"],
    ),
    "clobbered_regs_and_stack": (
        "socket_filter",
        "*(u64 *)(r10 - 32) = r1; call bpf_test_inline_kfunc6; r1 = *(u64 *)(r10 - 32); exit;",
        ["0: *(u64 *)(r10 -32) = r1", "1: *(u64 *)(r10 -40) = r6", "2: r0 = 0", "3: *(u64 *)(r10 -48) = r0",
         "4: r0 = *(u64 *)(r10 -48)", "5: r6 = 1", "6: goto pc+0", "7: r6 = *(u64 *)(r10 -40)",
         "8: r1 = *(u64 *)(r10 -32)", "9: exit"],
    ),
    "r10_escapes1": ("socket_filter", "call bpf_test_inline_kfunc7; exit;", ["0: call kernel-function", "1: exit"]),
    "r10_escapes2": ("socket_filter", "call bpf_test_inline_kfunc8; exit;", ["0: call kernel-function", "1: exit"]),
    "param_dynptr1": (
        "xdp",
        "r1 = r1; r2 = 0; r3 = r10; r3 += -16; call bpf_dynptr_from_xdp; r1 = r10; r1 += -16;"
        "call bpf_test_inline_kfunc5; exit;",
        ["5: r1 = r10", "6: r1 += -16", "7: r1 = *(u32 *)(r1 +8)", "8: r1 &= ", "9: r1 >>= ", "10: r0 = 2",
         "11: goto pc+0", "12: exit"],
    ),
    "param_dynptr2": (
        "cgroup_skb",
        "r1 = r1; r2 = 0; r3 = r10; r3 += -16; call bpf_dynptr_from_skb; r1 = r10; r1 += -16;"
        "call bpf_test_inline_kfunc5; r0 &= 3; exit;",
        ["5: r1 = r10", "6: r1 += -16", "7: r1 = *(u32 *)(r1 +8)", "8: r1 &= ", "9: r1 >>= ", "10: r0 = 1",
         "11: goto pc+0", "12: r0 &= 3", "13: exit"],
    ),
}


@pytest.mark.parametrize("name", list(SEED_CASES))
def test_rfc_expected_listings_under_pruned_inlining(name: str, library: KfuncLibrary) -> None:
    prog_type, asm, expected = SEED_CASES[name]
    attach = "cgroup_inet_egress" if name == "param_dynptr2" else ""  # SEC("cgroup_skb/egress")
    lines = xlated(program(asm, prog_type, attach), library)
    assert_listing(lines, expected)
    if not expected[0].startswith("5:"):  # full listings: nothing more
        assert len(lines) == len(expected), "\n".join(lines)


def test_plain_inlining_copies_the_whole_body(library: KfuncLibrary) -> None:
    lines = xlated(program(SEED_CASES["two_callsites_scalar_param"][1], "socket_filter"), library, "plain")
    # both bodies, unpruned: every conditional of kfunc1 survives at both call sites
    assert sum("if r1 != 0x1 goto pc+1" in line for line in lines) == 2
    assert sum("if r1 != 0x2 goto pc+1" in line for line in lines) == 2
    assert "call" not in "\n".join(lines)


def test_none_keeps_calls(library: KfuncLibrary) -> None:
    lines = xlated(program(SEED_CASES["two_callsites_scalar_param"][1], "socket_filter"), library, "none")
    assert lines == ["0: r1 = 1", "1: call kernel-function", "2: r1 = 2", "3: call kernel-function", "4: exit"]


def test_log_says_why_a_call_was_not_inlined(library: KfuncLibrary) -> None:
    prepared = prepare(program("call bpf_test_inline_kfunc7; r1 = 1; call bpf_test_inline_kfunc1; exit;", "socket_filter"),
                       mode="pruned", library=library)
    messages = [d.message() for d in prepared.decisions]
    assert "can't inline kfunc bpf_test_inline_kfunc7 at insn 0, r10 escapes" in messages
    assert "inlining kfunc bpf_test_inline_kfunc1 at insn 2" in messages


def test_regs_usage_matches_the_rfc_rules() -> None:
    kfuncs = {k.name: k for k in read_library(TEST_LIBRARY)}
    assert scan_regs_usage(kfuncs["bpf_test_inline_kfunc4"].insns).callee_saved == [6, 7]
    assert scan_regs_usage(kfuncs["bpf_test_inline_kfunc6"].insns).lowest_stack_off == -8
    assert scan_regs_usage(kfuncs["bpf_test_inline_kfunc7"].insns).r10_escapes  # *(u64 *)(r10 -8) = r10
    assert scan_regs_usage(kfuncs["bpf_test_inline_kfunc8"].insns).r10_escapes  # r1 = r10
    assert not scan_regs_usage(kfuncs["bpf_test_inline_kfunc6"].insns).r10_escapes


def test_dynptr_slice_pruning_removes_the_type_switch_and_the_buffer_test() -> None:
    handle = api.load(EXAMPLES / "dynptr_slice.o").programs["dynptr_slice"]
    plain = disasm(handle.xlated("plain"), kfunc_names=True)
    pruned = disasm(handle.xlated("pruned"), kfunc_names=True)
    # plain: every one of the 100 bodies keeps the switch on the dynptr type and the buffer test
    assert plain.count("if w7 == 0x3 goto") == 100 and plain.count("if r3 == 0x0 goto") == 100
    assert plain.count("call bpf_xdp_pointer") == 100
    # pruned: the type is known (SKB) and the buffer is NULL, so only skb_pointer_if_linear is left
    assert "if w7 ==" not in pruned and "if r3 == 0x0" not in pruned
    assert "bpf_xdp_pointer" not in pruned and "skb_header_pointer" not in pruned
    assert pruned.count("call skb_pointer_if_linear") == 100
    assert "call bpf_dynptr_slice" not in pruned and "call bpf_dynptr_slice" not in plain


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize(
    "prog, kwargs",
    [
        ("dynptr_slice_sum", {}),
        ("dynptr_slice_sum", {"skb_linear": 40}),
        ("dynptr_slice_sum_buf", {}),
        ("dynptr_slice_sum_buf", {"skb_linear": 40}),
        ("dynptr_slice_sum_buf", {"skb_linear": 0}),
    ],
)
def test_every_mode_gives_the_same_result(engine: str, prog: str, kwargs: dict) -> None:
    packet = bytes((i * 13 + 5) & 0xFF for i in range(300))
    results = {}
    for mode in ("none", "plain", "pruned"):
        obj = api.load(EXAMPLES / "dynptr_slice_sum.o")
        r = obj.programs[prog].run(packet, repeat=3, engine=engine, inline=mode, **kwargs)
        results[mode] = (r.retval, r.data_out, obj.maps[".bss"].dump())
    assert results["none"] == results["plain"] == results["pruned"]
