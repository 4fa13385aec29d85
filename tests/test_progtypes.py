"""The program-type interface (bpfvm.progtypes): the built-in types behind it, and a type registered from
Python whose context rules and return range the verifier obeys and whose prologue and epilogue (the kernel's
gen_prologue / gen_epilogue) run in every engine and inline mode.

The registered type is struct_ops-like, after the seed's tcp-bpf-cc example: its context is a congestion
control state; the prologue records the congestion window the program started with, and the epilogue fixes a
window the program left at zero, to a floor it gets from a kfunc of the RFC's test library
(bpf_test_inline_kfunc1(2) == 22), which `--inline pruned` inlines pruned to `r0 = 42; r0 = 22`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm import isa
from bpfvm.asm import assemble
from bpfvm.disasm import disasm
from bpfvm.errors import BpfvmError, LoadError, VerifierError
from bpfvm.extensions import USER_KFUNCS
from bpfvm.isa import Insn
from bpfvm.progtypes import (
    CtxFieldSpec, ProgType, RunInput, Snippet, find_prog_type, get_prog_type, prog_type_names, register_prog_type,
    unregister_prog_type,
)
from bpfvm.verifier import verify

REPO = Path(__file__).resolve().parents[1]
TEST_LIBRARY = REPO / "tests" / "kfuncs" / "test_inlinable_kfuncs.o"
ENGINES = ("interp", "jit")
MODES = ("none", "plain", "pruned")
KFUNC = "bpf_test_inline_kfunc1"


class CongestionType(ProgType):
    """struct test_cc_ctx { u32 snd_cwnd, ssthresh; const u32 acked, prior_cwnd; }"""

    name = "test_cc"
    ctx_struct = "test_cc_ctx"
    ctx_size = 16
    ctx_fields = (CtxFieldSpec("snd_cwnd", 0, 4, write=True), CtxFieldSpec("ssthresh", 4, 4, write=True),
                  CtxFieldSpec("acked", 8, 4), CtxFieldSpec("prior_cwnd", 12, 4))
    ret_range = (0, 3)
    helpers = frozenset({1})  # bpf_map_lookup_elem only

    def gen_prologue(self, program, direct_write):
        # prior_cwnd = snd_cwnd: a store programs may not do (trusted code may)
        return Snippet.asm("r2 = *(u32 *)(r1 +0); *(u32 *)(r1 +12) = r2")

    def gen_epilogue(self, program, ctx_stack_off):
        return Snippet.asm(f"""
            r6 = r0
            r1 = *(u64 *)(r10 {ctx_stack_off})
            r2 = *(u32 *)(r1 +0)
            if r2 != 0 goto +4
            r1 = 2
            call {KFUNC}
            r1 = *(u64 *)(r10 {ctx_stack_off})
            *(u32 *)(r1 +0) = r0
            r0 = r6
            exit""")


# cwnd += acked and return 1; on a loss (acked == 0) the buggy program zeroes the window and returns 2
CC_PROGRAM = """
    r2 = *(u32 *)(r1 +8)
    r3 = *(u32 *)(r1 +0)
    if r2 == 0 goto +4
    r3 += r2
    *(u32 *)(r1 +0) = r3
    r0 = 1
    exit
    r3 = 0
    *(u32 *)(r1 +0) = r3
    r0 = 2
    exit
"""


@pytest.fixture
def cc_type():
    """The type, and the kfunc as engines call it when it is not inlined (mode none)."""
    register_prog_type(CongestionType())
    USER_KFUNCS[KFUNC] = lambda runtime, r1, *rest: {1: 11, 2: 22}.get(r1 & 0xFFFFFFFF, 42)
    yield find_prog_type("test_cc")
    unregister_prog_type("test_cc")
    USER_KFUNCS.pop(KFUNC, None)


def cc_program(text: str = CC_PROGRAM, name: str = "cc"):
    prog = assemble(text)
    prog.prog_type, prog.name = "test_cc", name
    return prog


def cc_handle(text: str = CC_PROGRAM) -> api.ProgramHandle:
    obj = api.from_programs(cc_program(text), kfunc_libraries=[TEST_LIBRARY])
    return obj.programs["cc"]


def cc_ctx(cwnd: int, ssthresh: int, acked: int) -> bytes:
    return struct.pack("<4I", cwnd, ssthresh, acked, 0)


# -- the built-in types -----------------------------------------------------------------------------------------
def test_builtin_types_are_registered_with_their_aliases() -> None:
    names = prog_type_names()
    for name in ("socket_filter", "sched_cls", "sched_act", "xdp", "cgroup_skb", "lwt_in", "lwt_out", "lwt_xmit",
                 "raw_tracepoint", "tracepoint", "kprobe", "perf_event", "syscall", "flow_dissector"):
        assert name in names
    assert get_prog_type("tc") is get_prog_type("sched_cls") and get_prog_type("socket").name == "socket_filter"
    assert get_prog_type("raw_tp").name == "raw_tracepoint"
    assert get_prog_type("sched_cls").converts_ctx and get_prog_type("xdp").converts_ctx
    assert not get_prog_type("raw_tracepoint").converts_ctx
    assert get_prog_type("xdp").ctx_struct == "xdp_md" and get_prog_type("cgroup_skb").ctx_struct == "__sk_buff"


def test_builtin_rules_are_the_kernels() -> None:
    """The kernel's tables, through the interface: cgroup_skb may write mark, socket filters only cb[];
    tracepoints may not read their first 8 bytes; cgroup egress may return 0..3, ingress 0..1."""
    skb, sock, tp = get_prog_type("cgroup_skb"), get_prog_type("socket_filter"), get_prog_type("tracepoint")
    assert skb.check_ctx_access(8, 4, True).name == "mark"
    assert sock.check_ctx_access(8, 4, True) is None and sock.check_ctx_access(48, 4, True).name == "cb[0]"
    assert tp.check_ctx_access(0, 8, False) is None and tp.check_ctx_access(8, 8, False) is not None
    assert skb.return_range("cgroup_inet_egress") == (0, 3) and skb.return_range("cgroup_inet_ingress") == (0, 1)
    assert get_prog_type("xdp").return_range("") is None


def test_unknown_and_unsupported_types_fail_in_one_line() -> None:
    with pytest.raises(LoadError, match="program type 'warp' cannot be test-run"):
        get_prog_type("warp")
    with pytest.raises(BpfvmError, match="flow_dissector programs cannot be test-run: .*bpf_flow_keys"):
        get_prog_type("flow_dissector").make_context(None, None, RunInput())
    with pytest.raises(BpfvmError, match="C identifier"):
        register_prog_type(type("Bad", (ProgType,), {"name": "no way"})())


@pytest.mark.parametrize("engine", ENGINES)
def test_buffer_contexts_run_through_the_default_test_run(engine: str) -> None:
    """syscall programs may write their ctx_in bytes (ctx_out shows it); raw tracepoints may only read theirs."""
    prog = assemble("r2 = *(u32 *)(r1 +0); r2 += 5; *(u32 *)(r1 +4) = r2; r0 = r2; exit")
    prog.prog_type, prog.name = "syscall", "sys"
    result = api.from_programs(prog).programs["sys"].run(ctx=struct.pack("<II", 37, 0), engine=engine)
    assert result.retval == 42 and result.ctx_out[:8] == struct.pack("<II", 37, 42)
    prog = assemble("r2 = 1; *(u64 *)(r1 +0) = r2; r0 = 0; exit")
    prog.prog_type, prog.name = "raw_tracepoint", "tp"
    with pytest.raises(VerifierError, match="invalid bpf_context access off=0 size=8"):
        api.from_programs(prog).programs["tp"].run(ctx=bytes(8), engine=engine)


# -- a type registered from Python: the verifier obeys it ----------------------------------------------------------
def test_verifier_uses_the_registered_context_rules(cc_type: ProgType) -> None:
    verify(cc_program("r0 = *(u8 *)(r1 +9); r0 &= 3; exit"))  # a narrow read of acked
    with pytest.raises(VerifierError, match="invalid bpf_context access off=8 size=4"):
        verify(cc_program("r2 = 1; *(u32 *)(r1 +8) = r2; r0 = 0; exit"))  # acked is read-only
    with pytest.raises(VerifierError, match="invalid bpf_context access off=16 size=4"):
        verify(cc_program("r0 = *(u32 *)(r1 +16); exit"))  # past the layout
    with pytest.raises(VerifierError, match="invalid bpf_context access off=0 size=2"):
        verify(cc_program("r2 = 1; *(u16 *)(r1 +0) = r2; r0 = 0; exit"))  # stores take the whole field


def test_verifier_uses_the_registered_return_range(cc_type: ProgType) -> None:
    with pytest.raises(VerifierError, match=r"R0 has smin=7 smax=7 should have been in \[0, 3\]"):
        verify(cc_program("r0 = 7; exit"))


def test_helper_allow_list(cc_type: ProgType) -> None:
    with pytest.raises(LoadError, match="insn 0: test_cc programs may not call helper #7"):
        cc_handle("call 7; r0 = 0; exit").prepare()


def test_a_narrow_read_gives_the_fields_byte(cc_type: ProgType) -> None:
    handle = cc_handle("r0 = *(u8 *)(r1 +9); r0 &= 3; exit")
    assert handle.run(ctx=cc_ctx(10, 7, 0x0201)).retval == 2  # byte 1 of acked


# -- prologue and epilogue -------------------------------------------------------------------------------------------
def test_prologue_and_epilogue_in_the_xlated_program(cc_type: ProgType) -> None:
    """The prologue first, the context saved below the program's stack (r10 -8: the program uses none), the
    epilogue at the first exit and a jump back to it from the second."""
    lines = disasm(cc_handle().xlated("none"), call_ids=False).splitlines()
    assert lines == [
        "0: r2 = *(u32 *)(r1 +0)", "1: *(u32 *)(r1 +12) = r2",  # prologue
        "2: *(u64 *)(r10 -8) = r1",  # ctx saved for the epilogue
        "3: r2 = *(u32 *)(r1 +8)", "4: r3 = *(u32 *)(r1 +0)", "5: if r2 == 0x0 goto pc+13", "6: r3 += r2",
        "7: *(u32 *)(r1 +0) = r3", "8: r0 = 1",
        "9: r6 = r0", "10: r1 = *(u64 *)(r10 -8)", "11: r2 = *(u32 *)(r1 +0)", "12: if r2 != 0x0 goto pc+4",
        "13: r1 = 2", "14: call kernel-function", "15: r1 = *(u64 *)(r10 -8)", "16: *(u32 *)(r1 +0) = r0",
        "17: r0 = r6", "18: exit",  # epilogue, in place of the first exit
        "19: r3 = 0", "20: *(u32 *)(r1 +0) = r3", "21: r0 = 2", "22: goto pc-14",  # second exit: to the epilogue
    ]


def test_the_epilogue_kfunc_is_inlined_and_pruned(cc_type: ProgType) -> None:
    """plain copies the library body; pruned verified the epilogue in its call site's context (r1 == 2) and
    keeps only `r0 = 42; r0 = 22`, as the RFC's two_callsites_scalar_param listing does."""
    handle = cc_handle()
    plain = disasm(handle.xlated("plain"), call_ids=False).splitlines()
    assert plain[13:20] == ["13: r1 = 2", "14: r0 = 42", "15: if r1 != 0x1 goto pc+1", "16: r0 = 11",
                            "17: if r1 != 0x2 goto pc+1", "18: r0 = 22", "19: goto pc+0"]
    pruned = disasm(handle.xlated("pruned"), call_ids=False).splitlines()
    assert pruned[13:19] == ["13: r1 = 2", "14: r0 = 42", "15: r0 = 22", "16: goto pc+0",
                             "17: r1 = *(u64 *)(r10 -8)", "18: *(u32 *)(r1 +0) = r0"]
    assert "call" not in "\n".join(pruned)
    log = handle.prepare("pruned").log()
    assert f"inlining kfunc {KFUNC} (epilogue) at insn 5" in log
    assert "epilogue: 10 insns, verified in its call site's context" in log
    assert "prologue: 2 insns, trusted and not verified (invalid bpf_context access off=12 size=4)" in log


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
def test_prologue_and_epilogue_run_in_every_engine_and_mode(cc_type: ProgType, engine: str, mode: str) -> None:
    handle = cc_handle()
    grow = handle.run(ctx=cc_ctx(10, 7, 5), engine=engine, inline=mode)
    assert grow.retval == 1 and struct.unpack("<4I", grow.ctx_out) == (15, 7, 5, 10)  # prior_cwnd from the prologue
    loss = handle.run(ctx=cc_ctx(10, 7, 0), engine=engine, inline=mode)
    assert loss.retval == 2 and struct.unpack("<4I", loss.ctx_out) == (22, 7, 0, 10)  # zero window fixed to 22


def test_unverified_runs_get_no_prologue_or_epilogue(cc_type: ProgType) -> None:
    """They are part of convert_ctx_accesses, which only verified programs go through (as in the kernel)."""
    handle = cc_handle()
    assert not handle.xlated("none", verify=False).ctx_converted
    loss = handle.run(ctx=cc_ctx(10, 7, 0), verify=False)
    assert loss.retval == 2 and struct.unpack("<4I", loss.ctx_out) == (0, 7, 0, 0)


def test_the_epilogue_slot_must_fit_in_the_frame(cc_type: ProgType) -> None:
    with pytest.raises(BpfvmError, match="the epilogue needs 8 bytes of stack below the program's 512"):
        cc_handle("r2 = 0; *(u64 *)(r10 -512) = r2; r0 = 0; exit").prepare()


class _BadEpilogue(CongestionType):
    def __init__(self, snippet: Snippet):
        self.snippet = snippet

    def gen_prologue(self, program, direct_write):
        return None

    def gen_epilogue(self, program, ctx_stack_off):
        return self.snippet


@pytest.mark.parametrize("snippet, message", [
    (Snippet.asm("r0 = 1"), "test_cc epilogue: must end with exit"),
    (Snippet.asm("if r0 == 0 goto +5; exit"), "test_cc epilogue: insn 0: jumps outside the epilogue"),
    (Snippet((Insn(isa.OP_LDDW, 1, isa.PSEUDO_MAP_IDX), Insn(0), Insn(isa.OP_EXIT))),
     "test_cc epilogue: insn 0: may not reference maps or functions"),
    (Snippet((Insn(isa.OP_CALL, 0, isa.PSEUDO_KFUNC_CALL), Insn(isa.OP_EXIT))), "names none of its kfuncs"),
])
def test_bad_snippets_are_refused_in_one_line(snippet: Snippet, message: str) -> None:
    register_prog_type(_BadEpilogue(snippet))
    try:
        with pytest.raises(BpfvmError, match=message):
            cc_handle("r0 = 0; exit").prepare()
    finally:
        unregister_prog_type("test_cc")
