"""Kfuncs: skb/xdp dynptrs and their slices, dynptr bookkeeping, the number iterator, and the kernel-internal
functions inlined kfunc bodies call. Compared with the running kernel where it can test-run them; the
non-linear skb cases are checked by hand against the kernel's skb_header_pointer()/skb_pointer_if_linear().
"""

from __future__ import annotations

import errno

import pytest

from bpfvm.errors import HelperError, MemoryFault
from bpfvm.interp import Runtime
from bpfvm.memory import Memory
from bpfvm.program import MapSpec
from helpers.registry import attach
from helpers.skb import make_skb_context
from helpers.xdp import make_xdp_context
from test_skb_xdp import asm, assert_same, both, ipv4_udp, kernel_run, map_value, vm_run, xdp_md

PACKET = ipv4_udp(bytes(range(100, 140)))  # 82 bytes
OUT = MapSpec("out", 2, 4, 8, 4)

# slice(&ptr, off, buf or NULL, len) -> (first bytes) ^ copied << 28 ^ ctor result << 24, or 0xbad ^ ... for NULL
SLICE = """
    mov %r6, %r1
    mov %r1, %r6
    mov %r2, 0
    mov %r3, %r10
    add %r3, -16
    kcall {ctor}
    mov %r8, %r0
    {init}
    mov %r1, %r10
    add %r1, -16
    mov %r2, {off}
    {buf}
    mov %r4, {len}
    kcall {slice}
    jeq %r0, 0, null
    mov %r7, 0
    mov %r1, %r10
    add %r1, -256
    jne %r0, %r1, direct
    mov %r7, 1
    direct:
    {load}
    lsh %r7, 28
    xor %r0, %r7
    lsh %r8, 24
    xor %r0, %r8
    exit
    null:
    mov %r0, 0xbad
    lsh %r8, 24
    xor %r0, %r8
    exit
"""


def slice_prog(ctor: str, off: int, length: int, buffer: bool, rdwr: bool = False):
    """A slice of `length` bytes at `off`, with a buffer at r10-256 or none; reads its first bytes."""
    init = "\n".join(f"stdw [%r10{-256 + i:+d}], -1" for i in range(0, max(length, 8), 8)) if buffer else ""
    load = {0: "mov %r0, 0x777", 1: "ldxb %r0, [%r0+0]", 2: "ldxh %r0, [%r0+0]", 3: "ldxh %r0, [%r0+0]"}.get(
        length, "ldxw %r0, [%r0+0]")
    return asm(SLICE.format(ctor=ctor, off=off, len=length, slice="bpf_dynptr_slice_rdwr" if rdwr else "bpf_dynptr_slice",
                            buf="mov %r3, %r10\n    add %r3, -256" if buffer else "mov %r3, 0", init=init, load=load))


@pytest.mark.kernel
@pytest.mark.parametrize("off,length", [(0, 4), (12, 4), (78, 4), (79, 4), (80, 4), (0, 82), (40, 42), (82, 0)])
@pytest.mark.parametrize("buffer", [True, False])
@pytest.mark.parametrize("rdwr", [False, True])
def test_skb_dynptr_slice_matches_kernel(off: int, length: int, buffer: bool, rdwr: bool) -> None:
    """A linear skb: direct pointers inside it, NULL past its end, with or without a buffer."""
    prog = slice_prog("bpf_dynptr_from_skb", off, length, buffer, rdwr)
    assert_same(*both("sched_cls", prog, PACKET))


@pytest.mark.parametrize("linear", [14, 20, 30, 50])
@pytest.mark.parametrize("off,length", [(0, 4), (12, 4), (18, 4), (20, 8), (28, 4), (40, 30), (78, 4), (79, 4)])
def test_skb_dynptr_slice_on_a_non_linear_skb(linear: int, off: int, length: int) -> None:
    """skb_header_pointer(): a direct pointer when [off, off+len) is in the head, else a copy into the buffer;
    skb_pointer_if_linear() (no buffer): NULL unless the slice is in the head."""
    in_head = off + length <= linear
    in_packet = off + length <= len(PACKET)
    first = int.from_bytes(PACKET[off : off + min(length, 4)], "little")
    for buffer in (True, False):
        res = vm_run("sched_cls", slice_prog("bpf_dynptr_from_skb", off, length, buffer), PACKET, linear=linear)
        if not in_packet or (not buffer and not in_head):
            assert res.retval == 0xBAD, (buffer, res.retval)
        else:
            assert res.retval == first ^ (0 if in_head else 1 << 28), (buffer, hex(res.retval))
        assert res.data_out == PACKET  # slices never pull: the packet is untouched


def test_skb_dynptr_read_write_on_a_non_linear_skb() -> None:
    """bpf_dynptr_read copies across fragments; bpf_dynptr_write pulls the skb as bpf_skb_store_bytes does."""
    prog = asm("""
        mov %r6, %r1
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_skb
        mov %r1, %r10
        add %r1, -32
        mov %r2, 16
        mov %r3, %r10
        add %r3, -16
        mov %r4, 20
        mov %r5, 0
        call 201
        mov %r7, %r0
        lddw %r1, 0xaabbccddeeff0011
        stxdw [%r10-40], %r1
        mov %r1, %r10
        add %r1, -16
        mov %r2, 36
        mov %r3, %r10
        add %r3, -40
        mov %r4, 8
        mov %r5, 0
        call 202
        lsh %r0, 8
        xor %r7, %r0
        mov %r1, %r10
        add %r1, -16
        kcall bpf_dynptr_size
        lsh %r0, 16
        xor %r7, %r0
        ldxdw %r0, [%r10-32]
        ldxdw %r1, [%r10-24]
        xor %r0, %r1
        lsh %r0, 32
        xor %r0, %r7
        exit
    """)
    res = vm_run("sched_cls", prog, PACKET, linear=24)
    want_bytes = PACKET[20:28], PACKET[28:36]
    mixed = int.from_bytes(want_bytes[0], "little") ^ int.from_bytes(want_bytes[1], "little")
    assert res.retval == (((mixed << 32) ^ (len(PACKET) << 16)) & 0xFFFFFFFF)
    assert res.data_out == PACKET[:36] + bytes.fromhex("1100ffeeddccbbaa") + PACKET[44:]


@pytest.mark.kernel
@pytest.mark.parametrize("prog_type", ["cgroup_skb", "socket_filter", "sched_cls"])
def test_skb_dynptr_is_read_only_where_packets_are(prog_type: str) -> None:
    """The verifier hands cgroup_skb and socket filters bpf_dynptr_from_skb_rdonly: writes fail with -EINVAL
    (and it refuses bpf_dynptr_slice_rdwr in them at load; here such a slice is NULL)."""
    prog = asm("""
        mov %r6, %r1
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_skb
        mov %r1, %r10
        add %r1, -16
        kcall bpf_dynptr_is_rdonly
        mov %r7, %r0
        stdw [%r10-24], 0
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        mov %r3, %r10
        add %r3, -24
        mov %r4, 1
        mov %r5, 0
        call 202
        lsh %r0, 8
        xor %r7, %r0
        stw [%r10-28], 0
        ldmap %r1, 0
        mov %r2, %r10
        add %r2, -28
        call 1
        jeq %r0, 0, out
        stxdw [%r0+0], %r7
        out:
        mov %r0, 1
        exit
    """)
    try:
        kernel = kernel_run(prog_type, prog, PACKET, maps=[OUT])
    except OSError as exc:
        if prog_type == "socket_filter":
            pytest.skip(f"the kernel gives socket filters no skb dynptrs: {exc}")
        raise
    vm = vm_run(prog_type, prog, PACKET, maps=[OUT])
    assert_same(vm, kernel)
    assert map_value(vm) == map_value(kernel)
    rdwr = vm_run(prog_type, slice_prog("bpf_dynptr_from_skb", 0, 4, False, rdwr=True), PACKET)
    assert rdwr.retval == (0xBAD if prog_type != "sched_cls" else int.from_bytes(PACKET[:4], "little"))


# -- XDP dynptrs ------------------------------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("off,length", [(0, 4), (0, 60), (56, 4), (57, 4), (59, 2), (60, 40), (60, 4), (96, 4),
                                        (97, 4), (0, 100), (30, 60)])
@pytest.mark.parametrize("buffer", [True, False])
def test_xdp_dynptr_slice_matches_kernel(off: int, length: int, buffer: bool) -> None:
    """bpf_xdp_pointer() direct within one buffer (linear 60 bytes, then a 40-byte fragment), else
    bpf_xdp_copy_buf() into the buffer, or NULL without one."""
    prog = slice_prog("bpf_dynptr_from_xdp", off, length, buffer)
    data = bytes(range(100))
    assert_same(*both("xdp", prog, data, xdp_md(0, 60)))
    assert_same(*both("xdp", prog, data))


@pytest.mark.kernel
@pytest.mark.parametrize("off", [0, 50, 56, 60, 92, 93])
def test_xdp_dynptr_read_write_across_fragments_match_kernel(off: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_xdp
        stdw [%r10-24], -1
        mov %r1, %r10
        add %r1, -24
        mov %r2, 8
        mov %r3, %r10
        add %r3, -16
        mov %r4, {off}
        mov %r5, 0
        call 201
        mov %r7, %r0
        lddw %r1, 0x1122334455667788
        stxdw [%r10-32], %r1
        mov %r1, %r10
        add %r1, -16
        mov %r2, {off}
        mov %r3, %r10
        add %r3, -32
        mov %r4, 8
        mov %r5, 0
        call 202
        lsh %r0, 8
        xor %r7, %r0
        ldxdw %r0, [%r10-24]
        xor %r0, %r7
        exit
    """)
    assert_same(*both("xdp", prog, bytes(range(100)), xdp_md(0, 60)))


# -- dynptr bookkeeping -----------------------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("start,end", [(0, 82), (10, 20), (20, 10), (0, 83), (82, 82), (5, 5)])
def test_adjust_clone_size_match_kernel(start: int, end: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_skb
        mov %r1, %r10
        add %r1, -16
        mov %r2, {start}
        mov %r3, {end}
        kcall bpf_dynptr_adjust
        mov %r7, %r0
        and %r7, 0xff
        mov %r1, %r10
        add %r1, -16
        mov %r2, %r10
        add %r2, -32
        kcall bpf_dynptr_clone
        lsh %r0, 8
        xor %r7, %r0
        mov %r1, %r10
        add %r1, -32
        kcall bpf_dynptr_size
        lsh %r0, 16
        xor %r7, %r0
        mov %r1, %r10
        add %r1, -32
        kcall bpf_dynptr_is_null
        lsh %r0, 30
        xor %r7, %r0
        stdw [%r10-40], 0
        mov %r1, %r10
        add %r1, -40
        mov %r2, 4
        mov %r3, %r10
        add %r3, -32
        mov %r4, 0
        mov %r5, 0
        call 201
        ldxw %r0, [%r10-40]
        xor %r0, %r7
        exit
    """)
    assert_same(*both("sched_cls", prog, PACKET))


@pytest.mark.kernel
@pytest.mark.parametrize("start,end", [(0, 5), (5, 5), (-3, 4), (5, 0), (0, 8 * 1024 * 1024),
                                       (-8 * 1024 * 1024, 1)])
def test_iter_num_matches_kernel(start: int, end: int) -> None:
    prog = asm(f"""
        mov %r1, %r10
        add %r1, -8
        mov %r2, {start}
        mov %r3, {end}
        kcall bpf_iter_num_new
        mov %r6, %r0
        mov %r7, 0
        mov %r8, 0
        loop:
        mov %r1, %r10
        add %r1, -8
        kcall bpf_iter_num_next
        jeq %r0, 0, done
        ldxw %r1, [%r0+0]
        add %r7, %r1
        add %r8, 1
        ja loop
        done:
        mov %r1, %r10
        add %r1, -8
        kcall bpf_iter_num_destroy
        ldxdw %r0, [%r10-8]
        lsh %r6, 16
        xor %r0, %r6
        xor %r0, %r7
        lsh %r8, 8
        xor %r0, %r8
        exit
    """)
    assert_same(*both("sched_cls", prog, PACKET))


# -- memory safety -----------------------------------------------------------------------------------------------
def test_a_forged_skb_dynptr_faults() -> None:
    """16 bytes claiming to be an SKB dynptr over something other than this run's sk_buff."""
    prog = asm("""
        mov %r1, %r10
        stxdw [%r10-16], %r1
        lddw %r1, 0x0000000030000100
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        mov %r3, 0
        mov %r4, 4
        kcall bpf_dynptr_slice
        exit
    """)
    with pytest.raises(HelperError, match="SKB dynptr does not point at this run's sk_buff"):
        vm_run("sched_cls", prog, PACKET)


def test_slice_buffer_must_be_writable_memory() -> None:
    prog = asm(SLICE.format(ctor="bpf_dynptr_from_skb", off=0, len=4, slice="bpf_dynptr_slice",
                            buf="mov %r3, 4096", init="", load="ldxw %r0, [%r0+0]"))
    with pytest.raises(MemoryFault, match="bpf_dynptr_slice buffer: write of 4 bytes at 0x1000"):
        vm_run("sched_cls", prog, PACKET)


def test_dynptr_from_skb_wants_this_runs_context() -> None:
    prog = asm("mov %r1, %r10\nmov %r2, 0\nmov %r3, %r10\nadd %r3, -16\nkcall bpf_dynptr_from_skb\nexit")
    with pytest.raises(HelperError, match="arg1 is not this run's __sk_buff"):
        vm_run("sched_cls", prog, PACKET)
    prog = asm("mov %r2, 1\nmov %r3, %r10\nadd %r3, -16\nkcall bpf_dynptr_from_skb\nexit")
    assert vm_run("sched_cls", prog, PACKET).retval == (-errno.EINVAL) & 0xFFFFFFFF


# -- the kernel-internal functions ------------------------------------------------------------------------------
def test_internal_functions_on_the_models() -> None:
    """skb_header_pointer, skb_pointer_if_linear, skb_copy_bits, bpf_xdp_pointer and bpf_xdp_copy_buf, called
    as inlined kfunc bodies call them: with the model pointer a dynptr holds."""
    memory = Memory()
    runtime = Runtime(memory)
    attach(runtime)
    state = runtime.native_env
    ffi, lib, env = state.ffi, state.lib, state.env
    ctx = make_skb_context(memory, runtime, "sched_cls", PACKET, None, 20)
    skb = int(ffi.cast("uintptr_t", env.skb))
    buf = memory.add("buf", 128)
    data = int(ffi.cast("uintptr_t", env.skb.data))
    assert lib.bpfvm_kfunc_skb_pointer_if_linear(env, skb, 4, 16, 0, 0) == data + 4
    assert lib.bpfvm_kfunc_skb_pointer_if_linear(env, skb, 4, 17, 0, 0) == 0
    assert lib.bpfvm_kfunc_skb_header_pointer(env, skb, 10, 20, buf.start, 0) == buf.start
    assert buf.read(0, 20) == PACKET[10:30]
    assert lib.bpfvm_kfunc_skb_header_pointer(env, skb, 10, 20, 0, 0) == 0
    assert lib.bpfvm_kfunc_skb_header_pointer(env, skb, 80, 4, buf.start, 0) == 0  # past the end
    assert lib.bpfvm_kfunc_skb_copy_bits(env, skb, 0, buf.start, len(PACKET), 0) == 0
    assert buf.read(0, len(PACKET)) == PACKET
    # an int result: -EFAULT in the low half, the upper half zero (as after an x86-64 call)
    assert lib.bpfvm_kfunc_skb_copy_bits(env, skb, 1, buf.start, len(PACKET), 0) == (-errno.EFAULT) & 0xFFFFFFFF
    assert env.fault == 0
    lib.bpfvm_kfunc_skb_copy_bits(env, skb + 8, 0, buf.start, 4, 0)
    assert env.fault and b"not this run's sk_buff" in ffi.string(env.fault_msg)
    env.fault = 0
    ctx.release()

    xctx = make_xdp_context(memory, runtime, bytes(range(100)), xdp_md(0, 60), None)
    xdp = int(ffi.cast("uintptr_t", env.xdp))
    frag = int(ffi.cast("uintptr_t", env.xdp.frags[0].data))
    assert lib.bpfvm_kfunc_bpf_xdp_pointer(env, xdp, 60, 40, 0, 0) == frag
    assert lib.bpfvm_kfunc_bpf_xdp_pointer(env, xdp, 50, 20, 0, 0) == 0
    assert lib.bpfvm_kfunc_bpf_xdp_pointer(env, xdp, 50, 60, 0, 0) == (-errno.EINVAL) & (2**64 - 1)
    assert lib.bpfvm_kfunc_bpf_xdp_pointer(env, xdp, 0x10000, 1, 0, 0) == (-errno.EFAULT) & (2**64 - 1)
    lib.bpfvm_kfunc_bpf_xdp_copy_buf(env, xdp, 50, buf.start, 20, 0)
    assert buf.read(0, 20) == bytes(range(50, 70))
    buf.write(0, b"\xee" * 20)
    lib.bpfvm_kfunc_bpf_xdp_copy_buf(env, xdp, 50, buf.start, 20, 1)
    assert xctx.packet() == bytes(range(50)) + b"\xee" * 20 + bytes(range(70, 100))
    xctx.release()


def test_inlined_style_body_reads_the_skb_model() -> None:
    """A body compiled from kernel code reads `ptr->data` (the model) and calls skb_header_pointer on it."""
    prog = asm("""
        mov %r6, %r1
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_skb
        ldxdw %r1, [%r10-16]
        mov %r2, 16
        mov %r3, 8
        mov %r4, %r10
        add %r4, -32
        kcall skb_header_pointer
        jeq %r0, 0, null
        ldxdw %r0, [%r0+0]
        exit
        null:
        mov %r0, 0
        exit
    """)
    for linear in (None, 20):
        res = vm_run("sched_cls", prog, PACKET, linear=linear)
        assert res.retval == int.from_bytes(PACKET[16:20], "little")


# -- a clang-compiled program: the RFC's motivating example -------------------------------------------------------
DYNPTR_C = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
                              __u32 buffer__szk) __ksym;

SEC("tc")
int dynptr_slice(struct __sk_buff *skb)
{
    struct bpf_dynptr psrc;
    __u8 buf[4] = {};
    __u32 sum = 0;
    __u8 *p;

    if (bpf_dynptr_from_skb(skb, 0, &psrc))
        return 1;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        p = bpf_dynptr_slice(&psrc, i * 4, NULL, 1);
        if (p)
            sum += *p;
        p = bpf_dynptr_slice(&psrc, i * 4 + 1, buf, sizeof(buf));
        if (p)
            sum += p[3];
    }
    return sum;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.clang
@pytest.mark.kernel
def test_compiled_dynptr_slice_program_matches_kernel(tmp_path) -> None:  # noqa: ANN001
    from clang import compile_bpf

    import bpfvm.api
    from bpfvm.kernel import KernelObject, kernel_unavailable_reason

    src = tmp_path / "dynptr_slice.c"
    src.write_text(DYNPTR_C)
    obj = compile_bpf(src, tmp_path)
    packet = PACKET + bytes(range(0, 40))
    ours = bpfvm.api.load(obj).program("dynptr_slice").run(packet)
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with KernelObject(obj) as kobj:
        theirs = kobj.run("dynptr_slice", data_in=packet)
    assert (ours.retval, ours.data_out) == (theirs.retval, theirs.data_out)
    nonlinear = bpfvm.api.load(obj).program("dynptr_slice").run(packet, skb_linear=20)
    # without a buffer only the head's bytes are visible; with one, every byte is
    want = sum(packet[i * 4] for i in range(16) if i * 4 < 20) + sum(packet[i * 4 + 4] for i in range(16))
    assert nonlinear.retval == want


@pytest.mark.clang
def test_models_have_the_same_layout_for_bpf_code(tmp_path) -> None:  # noqa: ANN001
    """Inlined kfunc bodies are BPF code reading the models: clang's BPF target must lay them out as gcc does."""
    import shutil
    import subprocess
    from pathlib import Path

    from clang import CLANG, include_dir, require_clang
    from helpers.native_build import NATIVE_DIR, load_native

    require_clang()
    if shutil.which(CLANG) is None:
        pytest.skip(f"{CLANG} is not installed")
    ffi, _lib = load_native()
    lines = ["#include <stdint.h>", "#include <stddef.h>"] + [f'#include "{n}.cdef"' for n in ("vm", "skb", "xdp", "dynptr")]
    for struct_name in ("struct bpfvm_skb", "struct bpfvm_xdp", "struct bpfvm_dynptr_kern", "struct bpfvm_frag"):
        for field_name, _ in ffi.typeof(struct_name).fields:
            lines.append(f"_Static_assert(offsetof({struct_name}, {field_name}) == "
                         f"{ffi.offsetof(struct_name, field_name)}, \"{struct_name}.{field_name}\");")
        lines.append(f"_Static_assert(sizeof({struct_name}) == {ffi.sizeof(struct_name)}, \"{struct_name}\");")
    src = Path(tmp_path) / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([CLANG, "-target", "bpf", "-O2", "-ffreestanding", "-fsyntax-only", f"-I{NATIVE_DIR}",
                           f"-I{include_dir()}", str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bpf_code_can_read_the_skb_model() -> None:
    """The sk_buff model is a read-only region: BPF code may read skb->len through a dynptr's data, not write."""
    from helpers.native_build import load_native

    ffi, _ = load_native()
    len_off = ffi.offsetof("struct bpfvm_skb", "len")
    data_len_off = ffi.offsetof("struct bpfvm_skb", "data_len")
    prog = asm(f"""
        mov %r2, 0
        mov %r3, %r10
        add %r3, -16
        kcall bpf_dynptr_from_skb
        ldxdw %r1, [%r10-16]
        ldxw %r0, [%r1+{len_off}]
        ldxw %r2, [%r1+{data_len_off}]
        lsh %r2, 16
        or %r0, %r2
        exit
    """)
    assert vm_run("sched_cls", prog, PACKET, linear=30).retval == len(PACKET) | ((len(PACKET) - 30) << 16)
    bad = asm("mov %r2, 0\nmov %r3, %r10\nadd %r3, -16\nkcall bpf_dynptr_from_skb\nldxdw %r1, [%r10-16]\n"
              f"stw [%r1+{len_off}], 0\nexit")
    with pytest.raises(MemoryFault, match="read-only region sk_buff"):
        vm_run("sched_cls", bad, PACKET)
