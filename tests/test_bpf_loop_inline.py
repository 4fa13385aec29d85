"""bpf_loop calls rewritten into inline loops after verification (bpfvm/rewrites/bpf_loop.py): where the
verifier allows it, what the xlated program looks like next to the kernel's, and that the inline loop gives
what the helper gives, on both engines and against the kernel."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bpfvm
from bpfvm.disasm import disasm
from bpfvm.kernel import KernelObject, kernel_unavailable_reason
from clang import compile_bpf

PROGS = ("one_callback", "two_callbacks", "unknown_flags", "too_many", "too_many_upper", "too_many_upper_helper")
INLINED = {"one_callback": True, "two_callbacks": False, "unknown_flags": False, "too_many": True,
           "too_many_upper": True, "too_many_upper_helper": False}
SAME_AS_KERNEL = [name for name in PROGS if name != "too_many_upper"]  # see test_e2big_upper_half


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("loops")
    return {"loops": compile_bpf("loops.c", out), "calls": compile_bpf("calls.c", out)}


def _listing(program) -> list[str]:
    return [line.split(": ", 1)[1] for line in disasm(program).splitlines() if re.match(r"\d+: ", line)]


@pytest.mark.parametrize("name", PROGS)
def test_only_calls_with_zero_flags_and_one_callback_are_inlined(objects, name: str) -> None:
    obj = bpfvm.load(objects["loops"])
    xlated = _listing(obj.programs[name].xlated("none"))
    assert any("call bpf_loop" in line for line in xlated) == (not INLINED[name])
    if INLINED[name]:
        assert any(re.fullmatch(r"if r1 <= 0x800000 goto pc\+2", line) for line in xlated)
        assert any(line.startswith("call pc") for line in xlated)


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("name", PROGS)
def test_inline_loop_gives_what_the_helper_gives(objects, name: str, engine: str) -> None:
    """The unverified program calls the bpf_loop helper; the verified one runs the inline loop."""
    obj = bpfvm.load(objects["loops"])
    prog = obj.programs[name]
    for size in (14, 60, 61, 64, 100, 127):
        packet = bytes(range(size))
        helper = prog.run(packet, verify=False)
        inline = prog.run(packet, engine=engine)
        assert inline.retval == helper.retval, (size, inline.retval, helper.retval)


def test_results_are_the_ones_worked_out_by_hand(objects) -> None:
    obj = bpfvm.load(objects["loops"])
    # len 64: n = 64 % 13 = 12 iterations asked, stop at i == 64 % 7 + 3 = 4 -> 5 iterations run;
    # sum = 1 + 4 + 7 + 10 + 13 = 35 -> 35 * 100 + 5
    assert obj.programs["one_callback"].run(bytes(64), engine="jit").retval == 3505
    # (1 << 23) + len iterations: -E2BIG
    assert obj.programs["too_many"].run(bytes(20), engine="jit").retval == (-7) & 0xFFFFFFFF
    # its upper half is the helper's (the long -7), inlined or not, on both engines
    for engine in ("interp", "jit"):
        for verify in (True, False) if engine == "interp" else (True,):
            run = obj.programs["too_many_upper"].run(bytes(20), engine=engine, verify=verify)
            assert run.retval == 0xFFFFFFFF, (engine, verify)
    # odd length: flags 1 -> -EINVAL from the helper, callback never called
    assert obj.programs["unknown_flags"].run(bytes(61)).retval == (-22) & 0xFFFFFFFF


@pytest.fixture(scope="module")
def kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


@pytest.mark.kernel
def test_xlated_is_the_kernels_instruction_for_instruction(objects, kernel) -> None:
    """calls.c's enter_a has two inlinable bpf_loop calls and no context access or map: bpfvm's xlated
    program must be the kernel's (bpftool names the callee after `call pc+N#`; that part is dropped)."""
    ours = _listing(bpfvm.load(objects["calls"]).programs["enter_a"].xlated("none"))
    with KernelObject(objects["calls"]) as k:
        theirs = [re.sub(r"(call pc[+-]\d+)#.*", r"\1", line) for line in k.xlated("enter_a")]
    # the one intended difference: -E2BIG as the helper's long (see bpfvm/rewrites/bpf_loop.py)
    theirs = ["r0 = -7" if line == "w0 = -7" else line for line in theirs]
    main_end = theirs.index("exit") + 1
    assert ours[:main_end] == theirs[:main_end]
    assert sum("goto pc-6" in line for line in ours) == 2


@pytest.mark.kernel
def test_e2big_upper_half_is_the_helpers(objects, kernel) -> None:
    """The kernel's inlined bpf_loop sets `w0 = -E2BIG`: the upper half of r0 is 0 where its own helper
    returns all ones. bpfvm's rewrite keeps the helper's value, so inlining changes nothing observable."""
    obj = bpfvm.load(objects["loops"])
    with KernelObject(objects["loops"]) as k:
        assert k.run("too_many_upper_helper", data_in=bytes(20)).retval == 0xFFFFFFFF  # the helper
        assert k.run("too_many_upper", data_in=bytes(20)).retval == 0  # the same call, inlined
    for name in ("too_many_upper", "too_many_upper_helper"):
        assert obj.programs[name].run(bytes(20), engine="jit").retval == 0xFFFFFFFF


@pytest.mark.kernel
@pytest.mark.parametrize("name", SAME_AS_KERNEL)
def test_inline_loop_matches_the_kernel(objects, kernel, name: str) -> None:
    obj = bpfvm.load(objects["loops"])
    with KernelObject(objects["loops"]) as k:
        for size in (14, 61, 64, 127):
            packet = bytes(range(size))
            expected = k.run(name, data_in=packet).retval
            for engine in ("interp", "jit"):
                assert obj.programs[name].run(packet, engine=engine).retval == expected, (size, engine)
