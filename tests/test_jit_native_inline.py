"""The JIT's inline expansion of skb_pointer_if_linear (jit.native_inline): the same pointer as the native
call on every packet geometry, the ordinary call (and its fault) whenever the expansion does not apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfvm import api, isa
from bpfvm.isa import Insn
from bpfvm.program import Program
from helpers.registry import attach
from jit import engine as jit_engine
from jit import native_inline as ni
from jit.engine import NativeHelper
from test_jit import run_both

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPFVM_JIT_DISK_CACHE", "0")


@pytest.mark.parametrize("size, linear", [(300, None), (300, 0), (300, 1), (300, 57), (300, 99), (300, 100),
                                          (60, None), (14, None), (100, None)])
def test_pruned_slices_agree_with_the_interpreter_on_every_geometry(size: int, linear: int | None) -> None:
    packet = bytes((i * 29 + 11) & 0xFF for i in range(size))
    kwargs = {} if linear is None else {"skb_linear": linear}
    results = []
    for engine in ("interp", "jit"):
        obj = api.load(EXAMPLES / "dynptr_slice_sum.o")
        for prog in ("dynptr_slice_sum", "dynptr_slice_sum_buf"):
            r = obj.programs[prog].run(packet, repeat=2, engine=engine, inline="pruned", **kwargs)
            results.append((engine, prog, r.retval, r.data_out, obj.maps[".bss"].dump()))
    half = len(results) // 2
    assert [x[1:] for x in results[:half]] == [x[1:] for x in results[half:]]


def test_the_expansion_is_tagged_only_for_the_native_librarys_own_function() -> None:
    own = jit_engine._registry_plain_symbols()[("kfunc", "skb_pointer_if_linear")]
    assert jit_engine._inline_tag("kfunc", "skb_pointer_if_linear", NativeHelper(own, 1234, 0)) == \
        ni.TAG_SKB_POINTER_IF_LINEAR
    assert jit_engine._inline_tag("kfunc", "skb_pointer_if_linear", NativeHelper(own + 16, 1234, 0)) == ni.TAG_NONE
    assert jit_engine._inline_tag("kfunc", "skb_pointer_if_linear", NativeHelper(own, 0, 0)) == ni.TAG_NONE
    assert jit_engine._inline_tag("kfunc", "bpf_dynptr_slice", NativeHelper(own, 1234, 0)) == ni.TAG_NONE


@pytest.mark.parametrize("r1", ["0", "%r10", "0x1000"])
def test_a_pointer_that_is_not_the_runs_skb_takes_the_call_and_its_fault(r1: str) -> None:
    """No sk_buff in this run (env->skb is NULL) or a foreign pointer: the expansion must not apply, and the
    native call's fault reaches the caller as the interpreter reports it."""
    if r1 == "%r10":
        first = Insn(isa.ALU64 | isa.MOV | isa.X, 1, 10)
    else:
        first = Insn(isa.ALU64 | isa.MOV | isa.K, 1, 0, 0, int(r1, 0))
    insns = [
        first,
        Insn(isa.ALU64 | isa.MOV | isa.K, 2, 0, 0, 0),
        Insn(isa.ALU64 | isa.MOV | isa.K, 3, 0, 0, 1),
        Insn(isa.OP_CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, 0),
        Insn(isa.OP_EXIT),
    ]
    outcome = run_both(Program(insns, kfuncs=["skb_pointer_if_linear"]), setup=lambda rt: attach(rt))
    assert outcome[0] == "error" and "skb_pointer_if_linear" in outcome[2], outcome
