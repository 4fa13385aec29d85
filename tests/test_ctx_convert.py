"""convert_ctx_accesses for `__sk_buff` and `xdp_md`: a verified program's context accesses become plain
accesses of the sk_buff / xdp_buff models, and it runs with the model in r1 (no hooked region).

Every readable field at every offset and size the verifier allows (narrow and sign-extending loads too),
every writable field, the data pointers and the registers the data_end conversion borrows are compared with
the running kernel's BPF_PROG_TEST_RUN, on both engines and in every inline mode, and with the hooked context
unverified runs keep.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import bpfvm.api as api
from bpfvm.asm import assemble
from bpfvm.disasm import disasm
from bpfvm.engines import get_engine
from bpfvm.interp import Runtime
from bpfvm.kernel import KernelObject, kernel_unavailable_reason
from bpfvm.memory import Memory
from bpfvm.pipeline import prepare
from bpfvm.program import MapSpec, Program
from bpfvm.progtypes import RunInput
from bpfvm.testrun import test_run as run_test
from bpfvm.verifier.ctx import check_ctx
from bpfvm.verifier.regs import SCALAR
from helpers.ctx_convert import model_layout, skb_scratch_offset
from helpers.maps import create_map
from helpers.registry import attach
from helpers.skb import SkbCtxHook, TestRunError
from helpers.xdp import XdpCtxHook
from test_skb_xdp import Prog, Result, asm, ipv4_udp, kernel_run, map_value, skb_ctx, vm_run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SKB_TYPES = ["sched_cls", "socket_filter", "cgroup_skb", "lwt_in", "lwt_xmit"]
SIZES = {1: "b", 2: "h", 4: "w", 8: "dw"}


def converted_run(prog_type: str, prog: Prog, data: bytes, ctx: bytes | None = None, maps: list[MapSpec] = (),
                  *, engine: str = "interp", mode: str = "none", linear: int | None = None) -> Result:
    """Run `prog` verified and converted (pipeline.prepare), on `engine`, as BPF_PROG_TEST_RUN would."""
    memory = Memory()
    runtime = Runtime(memory)
    instances = []
    for spec in maps:
        inst = create_map(spec, memory)
        runtime.add_map(spec, inst)
        instances.append(inst)
    attach(runtime)
    program = Program(list(prog.insns), prog_type=prog_type, maps=list(maps), kfuncs=list(prog.kfuncs))
    prepared = prepare(program, mode=mode)
    assert prepared.program.ctx_converted
    runnable = get_engine(engine).prepare(prepared.program, verified=True).bind(runtime)
    try:
        res = run_test(program, runtime, lambda p: runnable, RunInput(data_in=data, ctx_in=ctx, skb_linear=linear))
    except TestRunError as exc:
        return Result(exc.errno)
    return Result(0, res.retval, res.data_out, res.ctx_out, instances, list(res.output), runtime)


def same(a: Result, b: Result, what: str = "") -> None:
    assert (a.err, a.retval, a.data_out, a.ctx_out) == (b.err, b.retval, b.data_out, b.ctx_out), what
    assert map_value(a) == map_value(b), what


def readable(prog_type: str, ctx_size: int) -> list[tuple[int, int, bool]]:
    """Every (offset, size, sign-extending) scalar load the verifier allows for the type."""
    out = []
    for off in range(ctx_size):
        for size in SIZES:
            for sx in (False, True) if size < 8 else (False,):
                field = check_ctx(prog_type, off, size, False)
                if field is not None and field.reg_type == SCALAR and not field.unsupported:
                    out.append((off, size, sx))
    return out


def pointer_lines(prog_type: str, slot: int) -> tuple[list[str], int]:
    """data_end - data, data - data_meta and the first packet byte through data, into slots from `slot`."""
    data_off, end_off, meta_off = (0, 4, 8) if prog_type == "xdp" else (76, 80, 140)
    if check_ctx(prog_type, data_off, 4, False) is None:
        return [], 0
    lines = [f"ldxw %r2, [%r9+{data_off}]", f"ldxw %r3, [%r9+{end_off}]", "mov %r4, %r3", "sub %r4, %r2",
             f"stxdw [%r8+{8 * slot}], %r4", "mov %r4, %r2", "add %r4, 1", "jgt %r4, %r3, nobyte",
             "ldxb %r4, [%r2]", f"stxdw [%r8+{8 * slot + 8}], %r4", "nobyte:"]
    if check_ctx(prog_type, meta_off, 4, False) is None:
        return lines, 2
    lines += [f"ldxw %r4, [%r9+{meta_off}]", "mov %r5, %r2", "sub %r5, %r4", f"stxdw [%r8+{8 * slot + 16}], %r5"]
    return lines, 3


def dump_program(prog_type: str, stores: list[str] = ()) -> tuple[Prog, MapSpec]:
    """`stores` on the context (r9), then every readable field and the data pointers into one map value."""
    loads = readable(prog_type, 24 if prog_type == "xdp" else 192)
    body = [f"ldx{'s' if sx else ''}{SIZES[size]} %r6, [%r9+{off}]\nstxdw [%r8+{8 * k}], %r6"
            for k, (off, size, sx) in enumerate(loads)]
    pointers, nptr = pointer_lines(prog_type, len(loads))
    prog = asm("\n".join([
        "mov %r9, %r1", *stores, "stw [%r10-4], 0", "ldmap %r1, 0", "mov %r2, %r10", "add %r2, -4", "call 1",
        "jeq %r0, 0, out", "mov %r8, %r0", *body, *pointers, "out:", "mov %r0, 1", "exit"]))
    return prog, MapSpec("out", 2, 4, 8 * (len(loads) + nptr), 1)


@pytest.fixture(scope="module")
def kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


# -- __sk_buff ------------------------------------------------------------------------------------------------------
CTX_IN = skb_ctx(mark=7, priority=3, cb0=0x80ABCDEF, cb2=0x8000, cb4=9, ifindex=1, tstamp=5, gso_segs=2,
                 hwtstamp=0x1122334455667788, wire_len=200)


@pytest.mark.kernel
@pytest.mark.parametrize("prog_type", SKB_TYPES)
@pytest.mark.parametrize("ctx", [None, CTX_IN], ids=["no-ctx", "ctx"])
def test_every_readable_skb_field_matches_kernel(prog_type: str, ctx: bytes | None) -> None:
    prog, spec = dump_program(prog_type)
    packet = ipv4_udp(b"x" * 150, dst_mac=b"\x01\x00\x5e\x00\x00\x01")
    kernel = kernel_run(prog_type, prog, packet, ctx, [spec])
    hooked = vm_run(prog_type, prog, packet, ctx, [spec])
    for engine in ("interp", "jit"):
        same(converted_run(prog_type, prog, packet, ctx, [spec], engine=engine), kernel, engine)
    same(hooked, kernel, "unverified")


@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("mode", ["none", "plain", "pruned"])
def test_skb_fields_match_kernel_in_every_mode(engine: str, mode: str) -> None:
    prog, spec = dump_program("sched_cls")
    packet = ipv4_udp(b"y" * 40)
    same(converted_run("sched_cls", prog, packet, CTX_IN, [spec], engine=engine, mode=mode),
         kernel_run("sched_cls", prog, packet, CTX_IN, [spec]))


def skb_stores(prog_type: str) -> list[str]:
    """A store of a distinct value to every writable (offset, size), register and immediate forms alternating,
    then the special cases: queue_mapping ignores NO_QUEUE_MAPPING and above, tc_index keeps 16 bits."""
    lines = []
    for off in range(192):
        for size in SIZES:
            if check_ctx(prog_type, off, size, True) is None:
                continue
            value = 0x10000 * size + 0x101 * off + 3
            if (off + size) % 2:
                lines.append(f"st{SIZES[size]} [%r9+{off}], {value}")
            else:
                lines += [f"lddw %r2, {value | (0xA5 << 40)}", f"stx{SIZES[size]} [%r9+{off}], %r2"]
    if check_ctx(prog_type, 12, 4, True) is not None:  # queue_mapping
        lines += ["mov %r2, 0x1ffff", "stxw [%r9+12], %r2", "stw [%r9+12], 0xffff", "mov %r2, 0xfffe",
                  "stxw [%r9+12], %r2", "stw [%r9+12], 0x10000"]
    if check_ctx(prog_type, 44, 4, True) is not None:  # tc_index
        lines += ["mov %r2, 0x12345", "stxw [%r9+44], %r2"]
    return lines


@pytest.mark.kernel
@pytest.mark.parametrize("prog_type", SKB_TYPES)
@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_every_writable_skb_field_matches_kernel(prog_type: str, engine: str) -> None:
    """What the stores leave in ctx_out and what loads read back. cb[] takes stores of any size (8 bytes
    too), which the hooked context of unverified runs refuses and the kernel allows."""
    stores = skb_stores(prog_type)
    assert any("[%r9+48]" in line for line in stores)
    prog, spec = dump_program(prog_type, stores)
    packet = ipv4_udp()
    kernel = kernel_run(prog_type, prog, packet, CTX_IN, [spec])
    same(converted_run(prog_type, prog, packet, CTX_IN, [spec], engine=engine), kernel)
    same(vm_run(prog_type, prog, packet, CTX_IN, [spec]), kernel, "unverified")


@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_queue_mapping_stores_compare_like_the_kernel(engine: str) -> None:
    """The kernel compares a stored register's 64 bits, and a stored imm as signed, with NO_QUEUE_MAPPING:
    0x100000005 is ignored, -1 is stored as 0xffff. The hooked context of unverified runs gets the whole
    operand and does the same (it once saw only the 32 bits stored: campaign seed 476007)."""
    prog = asm("""
        mov %r9, %r1
        mov %r2, 7
        stxw [%r9+12], %r2
        lddw %r2, 0x100000005
        stxw [%r9+12], %r2
        ldxw %r6, [%r9+12]
        stw [%r9+12], -1
        ldxw %r0, [%r9+12]
        lsh %r0, 16
        or %r0, %r6
        exit
    """)
    assert converted_run("sched_cls", prog, ipv4_udp(), engine=engine).retval == 0xFFFF0007
    assert vm_run("sched_cls", prog, ipv4_udp()).retval == 0xFFFF0007
    assert kernel_run("sched_cls", prog, ipv4_udp()).retval == 0xFFFF0007


BORROWED = """
    mov %r6, %r1
    stw [%r10-4], 0
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, out
    stxdw [%r10-16], %r0
    mov %r1, 101
    mov %r0, 100
    mov %r2, 102
    mov %r3, 103
    mov %r4, 104
    mov %r5, 105
    mov %r7, 107
    mov %r8, 108
    mov %r9, 109
    mov %r{src}, %r6
    ldxw %r{dst}, [%r{src}+{off}]
    {saves}
    ldxdw %r2, [%r10-{dst_slot}]
    ldxw %r1, [%r6+76]
    sub %r2, %r1
    stxdw [%r10-{dst_slot}], %r2
    ldxdw %r0, [%r10-16]
    {copies}
    out:
    mov %r0, 0
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("off", [80, 140], ids=["data_end", "data_meta"])
@pytest.mark.parametrize("src,dst", [(1, 1), (1, 5), (7, 7), (9, 8), (8, 9), (3, 0)])
@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_data_end_and_data_meta_keep_the_registers_they_borrow(off: int, src: int, dst: int, engine: str) -> None:
    """The conversion borrows r9/r8 (and swaps back when dst == src): every other register must survive."""
    regs = [r for r in range(10) if r != 6 and (r != src or r == dst)]  # not the context pointer's value
    saves = "\n".join(f"stxdw [%r10-{24 + 8 * k}], %r{r}" for k, r in enumerate(regs))
    copies = "\n".join(f"ldxdw %r1, [%r10-{24 + 8 * k}]\nstxdw [%r0+{8 * k}], %r1" for k, r in enumerate(regs))
    prog = asm(BORROWED.format(src=src, dst=dst, off=off, saves=saves, copies=copies,
                               dst_slot=24 + 8 * regs.index(dst)))
    spec = MapSpec("out", 2, 4, 8 * len(regs), 1)
    vm = converted_run("sched_cls", prog, ipv4_udp(), None, [spec], engine=engine)
    same(vm, kernel_run("sched_cls", prog, ipv4_udp(), None, [spec]))
    values = struct.unpack(f"<{len(regs)}Q", map_value(vm))
    for r, value in zip(regs, values):
        if r == dst:
            assert value == (len(ipv4_udp()) if off == 80 else 0)  # data_end - data, data_meta - data
        else:
            assert value == 100 + r, f"r{r}"


def test_data_end_on_a_non_linear_skb() -> None:
    """data_end - data is the linear part (hand-checked: 40 of the 54 bytes), as the hook computes it."""
    prog = asm("ldxw %r2, [%r1+76]\nldxw %r0, [%r1+80]\nsub %r0, %r2\nexit")
    for engine in ("interp", "jit"):
        assert converted_run("sched_cls", prog, ipv4_udp(), linear=40, engine=engine).retval == 40
    assert vm_run("sched_cls", prog, ipv4_udp(), linear=40).retval == 40


def test_the_conversion_listing() -> None:
    """Hand-checked against struct bpfvm_skb (data at 24, len at 32, data_len at 36, cb at 112, 584 bytes, then
    the scratch words): a narrow load shifts and masks, an 8-byte cb store goes straight to the model, and
    data_end into the context register borrows r9 and r8 and swaps r9 back with xor."""
    layout = model_layout("bpfvm_skb")
    assert (layout["data"][0], layout["len"][0], layout["data_len"][0], layout["cb"][0]) == (24, 32, 36, 112)
    assert skb_scratch_offset() == 584
    prog = assemble("r0 = *(u16 *)(r1 +2); *(u64 *)(r1 +48) = r0; r1 = *(u32 *)(r1 +80); r0 = 0; exit")
    prog.prog_type = "sched_cls"
    assert disasm(prepare(prog).program).splitlines() == [
        "0: r0 = *(u32 *)(r1 +32)", "1: r0 >>= 16", "2: r0 &= 65535",
        "3: *(u64 *)(r1 +112) = r0",
        "4: *(u64 *)(r1 +584) = r9", "5: *(u64 *)(r1 +592) = r8", "6: r9 = *(u64 *)(r1 +24)",
        "7: r8 = *(u32 *)(r1 +32)", "8: r9 += r8", "9: r8 = *(u32 *)(r1 +36)", "10: r9 -= r8",
        "11: r8 = *(u64 *)(r1 +592)", "12: r9 ^= r1", "13: r1 ^= r9", "14: r9 ^= r1", "15: r9 = *(u64 *)(r9 +584)",
        "16: r0 = 0", "17: exit",
    ]


# -- xdp_md ---------------------------------------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("mode", ["none", "plain", "pruned"])
@pytest.mark.parametrize("ctx", [None, struct.pack("<6I", 8, 60, 0, 1, 0, 0)], ids=["no-ctx", "meta"])
def test_every_xdp_field_matches_kernel(engine: str, mode: str, ctx: bytes | None) -> None:
    prog, spec = dump_program("xdp")
    packet = bytes(range(8)) + ipv4_udp(b"z" * 100)
    same(converted_run("xdp", prog, packet, ctx, [spec], engine=engine, mode=mode),
         kernel_run("xdp", prog, packet, ctx, [spec]))


# -- whole programs, every engine and mode ----------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("mode", ["none", "plain", "pruned"])
def test_examples_match_kernel_in_every_engine_and_mode(kernel: None, engine: str, mode: str) -> None:
    packets = [ipv4_udp(b"p" * n) for n in (0, 30, 900)] + [bytes(14), bytes(range(200))]
    obj = api.load(EXAMPLES / "xdp_counter.o")
    sums = api.load(EXAMPLES / "dynptr_slice_sum.o")
    with KernelObject(EXAMPLES / "xdp_counter.o") as k, KernelObject(EXAMPLES / "dynptr_slice_sum.o") as ks:
        for packet in packets:
            mine = obj.programs["xdp_counter"].run(packet, engine=engine, inline=mode)
            theirs = k.run("xdp_counter", data_in=packet)
            assert (mine.retval, mine.data_out) == (theirs.retval, theirs.data_out)
            for name in ("dynptr_slice_sum", "dynptr_slice_sum_buf"):
                mine = sums.programs[name].run(packet, engine=engine, inline=mode)
                theirs = ks.run(name, data_in=packet)
                assert (mine.retval, mine.data_out) == (theirs.retval, theirs.data_out)


# -- no hooked context for verified programs; the hook for unverified ones --------------------------------------------
def _refuse(*args: Any, **kwargs: Any) -> int:
    raise AssertionError("a converted program went through the hooked uapi context")


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_verified_programs_never_touch_the_hooked_context(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    for hook in (SkbCtxHook, XdpCtxHook):
        monkeypatch.setattr(hook, "load", _refuse)
        monkeypatch.setattr(hook, "store", _refuse)
    prog, spec = dump_program("sched_cls", skb_stores("sched_cls"))
    converted_run("sched_cls", prog, ipv4_udp(), CTX_IN, [spec], engine=engine)
    prog, spec = dump_program("xdp")
    converted_run("xdp", prog, ipv4_udp(), None, [spec], engine=engine)
    obj = api.load(EXAMPLES / "xdp_counter.o")
    assert obj.programs["xdp_counter"].run(ipv4_udp(), engine=engine).retval == 2  # XDP_PASS
    with pytest.raises(AssertionError, match="hooked uapi context"):
        obj.programs["xdp_counter"].run(ipv4_udp(), verify=False)


def test_unverified_programs_keep_the_uapi_context() -> None:
    obj = api.load(EXAMPLES / "xdp_counter.o")
    handle = obj.programs["xdp_counter"]
    assert not handle.xlated(verify=False).ctx_converted and handle.xlated().ctx_converted
    assert disasm(handle.xlated(verify=False)).splitlines()[1:3] == ["1: r2 = *(u32 *)(r1 +4)",
                                                                    "2: r6 = *(u32 *)(r1 +0)"]
    assert disasm(handle.xlated()).splitlines()[1:3] == ["1: r2 = *(u64 *)(r1 +8)", "2: r6 = *(u64 *)(r1 +0)"]
    for verify in (True, False):
        assert handle.run(ipv4_udp(), verify=verify).retval == 2
