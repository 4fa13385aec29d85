"""The sk_buff and xdp_buff models and their helpers, compared with the running kernel's BPF_PROG_TEST_RUN.

Programs are written once, in the uBPF assembler dialect plus three pseudo-instructions (`ldmap %rX, N`,
`ldfunc %rX, SLOT`, `kcall NAME`), and run both on bpfvm and, where root may call bpf(), on the kernel.
This module also holds that harness; test_helpers.py and test_kfuncs.py import it.

The kernel's test run cannot build a non-linear skb before Linux 6.19 (a nonzero `__sk_buff.data_end` in
ctx_in is refused here), so non-linear skb cases are checked against the kernel source's semantics by hand.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import re
import struct
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest

from bpfvm import bpfsys, isa
from bpfvm.errors import HelperError, MemoryFault
from bpfvm.interp import Interpreter, Runtime
from bpfvm.memory import Memory
from bpfvm.program import MapSpec, Program
from bpfvm.ubpf_asm import assemble
from helpers.maps import create_map
from helpers.registry import attach
from helpers.skb import TestRunError, make_skb_context
from helpers.xdp import make_xdp_context

# -- programs written once for both sides ------------------------------------------------------------------
_MAP_MAGIC = 0x5EEDB0BA
_FUNC_MAGIC = 0x5EEDF00D
_MAPVAL_MAGIC = 0x5EEC0000  # low 16 bits of the high word: the map index; the low word: the offset


@dataclass
class Prog:
    """Instructions with map, function and kfunc references left symbolic until one side resolves them."""

    insns: list[isa.Insn]
    kfuncs: list[str] = field(default_factory=list)


def asm(text: str) -> Prog:
    """Assemble uBPF-dialect text with `ldmap %rX, N`, `ldmapval %rX, N, OFF`, `ldfunc %rX, SLOT` and
    `kcall NAME` lines (map N of the program, the address of OFF in its value, the function at SLOT)."""
    kfuncs: list[str] = []
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "ldmap":
            lines.append(f"lddw {words[1]} {(_MAP_MAGIC << 32) | int(words[2])}")
        elif words and words[0] == "ldmapval":
            index, off = int(words[2].rstrip(",")), int(words[3])
            lines.append(f"lddw {words[1]} {((_MAPVAL_MAGIC | index) << 32) | off}")
        elif words and words[0] == "ldfunc":
            lines.append(f"lddw {words[1]} {(_FUNC_MAGIC << 32) | int(words[2])}")
        elif words and words[0] == "kcall":
            if words[1] not in kfuncs:
                kfuncs.append(words[1])
            lines.append(f"call runtime {kfuncs.index(words[1])}")
        else:
            lines.append(line)
    insns = assemble("\n".join(lines))
    out = list(insns)
    for i, insn in enumerate(insns):
        if insn.opcode == isa.OP_LDDW and i + 1 < len(insns):
            value = isa.lddw_value(insn, insns[i + 1])
            if value >> 32 == _MAP_MAGIC:
                out[i], out[i + 1] = isa.lddw_pair(insn.dst, value & 0xFFFFFFFF, src=isa.PSEUDO_MAP_IDX)
            elif value >> 48 == _MAPVAL_MAGIC >> 16:
                first, second = isa.lddw_pair(insn.dst, 0, src=isa.PSEUDO_MAP_IDX_VALUE)
                out[i] = first._replace(imm=(value >> 32) & 0xFFFF)
                out[i + 1] = second._replace(imm=value & 0xFFFFFFFF)
            elif value >> 32 == _FUNC_MAGIC:
                out[i], out[i + 1] = isa.lddw_pair(insn.dst, (value & 0xFFFFFFFF) - (i + 1), src=isa.PSEUDO_FUNC)
    return Prog(out, kfuncs)


# -- bpfvm side -------------------------------------------------------------------------------------------------
@dataclass
class Result:
    err: int  # 0, or the positive errno the test run failed with
    retval: int = 0
    data_out: bytes = b""
    ctx_out: bytes = b""
    maps: list[Any] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    runtime: Any = None


def vm_run(prog_type: str, prog: Prog, data: bytes, ctx: bytes | None = None, maps: list[MapSpec] = (),
           *, linear: int | None = None, frags: int | None = None, options: dict | None = None,
           setup: Any = None) -> Result:
    """Run `prog` on bpfvm as BPF_PROG_TEST_RUN would; `setup(runtime, maps, program)` may fill maps first.

    Runs go through the test-run driver (bpfvm.testrun), which follows tail calls."""
    from bpfvm.progtypes import RunInput
    from bpfvm.testrun import test_run

    memory = Memory()
    runtime = Runtime(memory)
    instances = []
    for spec in maps:
        inst = create_map(spec, memory)
        runtime.add_map(spec, inst)
        instances.append(inst)
    attach(runtime, options=options or {})
    program = Program(list(prog.insns), prog_type=prog_type, maps=list(maps), kfuncs=list(prog.kfuncs))
    if setup:
        setup(runtime, instances, program)
    bound: dict[int, Any] = {}

    def runnable_for(p: Program) -> Any:
        if id(p) not in bound:
            bound[id(p)] = Interpreter(p).bind(runtime)
        return bound[id(p)]

    run_input = RunInput(data_in=data, ctx_in=ctx, skb_linear=linear, xdp_frags=frags)
    try:
        res = test_run(program, runtime, runnable_for, run_input)
    except TestRunError as exc:
        return Result(exc.errno)
    return Result(0, res.retval, res.data_out, res.ctx_out, instances, list(res.output), runtime)


# -- kernel side (ctypes bpf()) ------------------------------------------------------------------------------------
_PROG_TYPES = {"socket_filter": 1, "kprobe": 2, "sched_cls": 3, "sched_act": 4, "xdp": 6, "cgroup_skb": 8,
               "lwt_in": 10, "lwt_out": 11, "lwt_xmit": 12, "syscall": 31}


class KernelBpf:
    """Just enough bpf(2) to load raw programs, make maps and test-run; never attaches anything."""

    def __init__(self) -> None:
        self.log = ctypes.create_string_buffer(1 << 20)

    def call(self, cmd: int, attr: bytearray) -> tuple[int, bytes]:
        """(the return value or -errno, the attr as the kernel left it)."""
        ret, err, out = bpfsys.bpf(cmd, attr)
        return (-err if ret < 0 else ret), out

    def map_create(self, spec: MapSpec) -> int:
        attr = bytearray(256)
        struct.pack_into("<IIIII", attr, 0, spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags)
        fd, _ = self.call(0, attr)
        if fd < 0:
            raise OSError(-fd, f"BPF_MAP_CREATE {spec.name}")
        return fd

    def map_update(self, fd: int, key: bytes, value: bytes) -> int:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        attr = bytearray(256)
        struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
        return self.call(2, attr)[0]

    def map_lookup(self, fd: int, key: bytes, size: int) -> bytes | None:
        k, v = ctypes.create_string_buffer(key), ctypes.create_string_buffer(size)
        attr = bytearray(256)
        struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
        return None if self.call(1, attr)[0] < 0 else v.raw[:size]

    def btf_load(self, nfuncs: int) -> int:
        """BTF with `int` and one static `int f<i>(void)` per subprogram: what func_info must point at."""
        strings = b"\0int\0" + b"".join(f"f{i}\0".encode() for i in range(nfuncs))
        types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)  # [1] int, signed 32 bits
        types += struct.pack("<III", 0, 13 << 24, 1)  # [2] int (void)
        name = 5
        for i in range(nfuncs):  # [3 + i] static func f<i>
            types += struct.pack("<III", name, 12 << 24, 2)
            name += len(f"f{i}") + 1
        blob = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings
        buf = ctypes.create_string_buffer(blob)
        attr = bytearray(256)
        struct.pack_into("<QQIII", attr, 0, ctypes.addressof(buf), 0, len(blob), 0, 0)
        fd, _ = self.call(18, attr)
        if fd < 0:
            raise OSError(-fd, "BPF_BTF_LOAD")
        return fd

    def prog_load(self, prog_type: str, insns: list[isa.Insn]) -> int:
        from bpfvm.program import subprog_starts

        code = ctypes.create_string_buffer(isa.encode(insns))
        lic = ctypes.create_string_buffer(b"GPL")
        attr = bytearray(256)
        struct.pack_into("<IIQQIIQ", attr, 0, _PROG_TYPES[prog_type], len(insns), ctypes.addressof(code),
                         ctypes.addressof(lic), 1, len(self.log), ctypes.addressof(self.log))
        starts = subprog_starts(insns)
        btf_fd = -1
        if len(starts) > 1:  # subprograms (callbacks) need BTF func_info
            btf_fd = self.btf_load(len(starts))
            info = ctypes.create_string_buffer(b"".join(struct.pack("<II", s, 3 + i) for i, s in enumerate(starts)))
            struct.pack_into("<IIQI", attr, 72, btf_fd, 8, ctypes.addressof(info), len(starts))
        fd, _ = self.call(5, attr)
        if btf_fd >= 0:
            os.close(btf_fd)
        if fd < 0:
            lines = self.log.value.decode(errors="replace").strip().splitlines()
            raise OSError(-fd, f"the kernel refused the program: {lines[-3:] if lines else ''}")
        return fd

    def test_run(self, fd: int, data: bytes, ctx: bytes | None) -> tuple[int, int, bytes, bytes]:
        din = ctypes.create_string_buffer(data, max(len(data), 1))
        dout = ctypes.create_string_buffer(1 << 17)
        cin = ctypes.create_string_buffer(ctx or b"", max(len(ctx or b""), 1))
        cout = ctypes.create_string_buffer(256)
        attr = bytearray(256)
        struct.pack_into("<IIIIQQIIIIQQ", attr, 0, fd, 0, len(data), len(dout), ctypes.addressof(din),
                         ctypes.addressof(dout), 1, 0, len(ctx) if ctx is not None else 0,
                         len(cout) if ctx is not None else 0, ctypes.addressof(cin) if ctx is not None else 0,
                         ctypes.addressof(cout) if ctx is not None else 0)
        err, buf = self.call(10, attr)
        retval, _, size_out = struct.unpack_from("<III", buf, 4)
        ctx_size_out = struct.unpack_from("<I", buf, 44)[0]
        return err, retval, dout.raw[:size_out], cout.raw[:ctx_size_out] if ctx is not None else b""


@functools.cache
def kernel_btf_ids() -> dict[str, int]:
    out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"], capture_output=True,
                         text=True).stdout
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\[(\d+)\] FUNC '(\w+)'", out, re.M)}


@functools.cache
def kernel_reason() -> str | None:
    """None when this machine's kernel can load and test-run programs for us; otherwise why not."""
    if platform.machine() not in bpfsys.SYSCALL_NUMBERS:
        return f"no bpf() syscall number for {platform.machine()}"
    if os.geteuid() != 0:
        return "BPF_PROG_TEST_RUN needs root here"
    try:
        k = KernelBpf()
        fd = k.prog_load("socket_filter", [isa.Insn(0xB7, 0, 0, 0, 0), isa.Insn(isa.OP_EXIT)])
        os.close(fd)
    except OSError as exc:
        return f"bpf() refused: {exc}"
    return None


def kernel_run(prog_type: str, prog: Prog, data: bytes, ctx: bytes | None = None, maps: list[MapSpec] = (),
               setup_kernel: Any = None) -> Result:
    """Run `prog` on the running kernel with BPF_PROG_TEST_RUN; skips the test where bpf() is refused.

    Maps whose spec has `initial` bytes get them as element 0 (frozen when the spec is read-only) before
    the program is loaded; `setup_kernel(k, map_fds, prog_fd)` runs after loading."""
    reason = kernel_reason()
    if reason:
        pytest.skip(reason)
    k = KernelBpf()
    fds = [k.map_create(spec) for spec in maps]
    for spec, mfd in zip(maps, fds):
        if spec.initial is not None:
            k.map_update(mfd, bytes(4), spec.initial.ljust(spec.value_size, b"\0"))
            if spec.flags & 128:  # BPF_F_RDONLY_PROG: freeze, so the verifier treats it as constant
                attr = bytearray(256)
                struct.pack_into("<I", attr, 0, mfd)
                k.call(22, attr)
    insns = list(prog.insns)
    ids = kernel_btf_ids() if prog.kfuncs else {}
    for i, insn in enumerate(insns):
        if insn.opcode == isa.OP_LDDW and insn.src == isa.PSEUDO_MAP_IDX:
            insns[i] = insn._replace(src=isa.PSEUDO_MAP_FD, imm=fds[insn.imm])
        elif insn.opcode == isa.OP_LDDW and insn.src == isa.PSEUDO_MAP_IDX_VALUE:
            insns[i] = insn._replace(src=isa.PSEUDO_MAP_VALUE, imm=fds[insn.imm])
        elif insn.opcode == isa.OP_CALL and insn.src == isa.PSEUDO_KFUNC_CALL:
            insns[i] = insn._replace(imm=ids[prog.kfuncs[insn.imm]])
    opened = list(fds)
    try:
        fd = k.prog_load(prog_type, insns)
        opened.append(fd)
        if setup_kernel:
            setup_kernel(k, fds, fd)
        err, retval, data_out, ctx_out = k.test_run(fd, data, ctx)
        values = []
        for spec, mfd in zip(maps, fds):
            if spec.type in (1, 2):  # hash, array: read the first entries back
                values.append({i: k.map_lookup(mfd, i.to_bytes(spec.key_size, "little"), spec.value_size)
                               for i in range(min(spec.max_entries, 8))})
            else:
                values.append(None)
        return Result(-err if err < 0 else 0, retval, data_out, ctx_out, values)
    finally:
        for fd in opened:
            os.close(fd)


def both(prog_type: str, prog: Prog, data: bytes, ctx: bytes | None = None, maps: list[MapSpec] = (),
         setup_kernel: Any = None, **kw: Any) -> tuple[Result, Result]:
    vm = vm_run(prog_type, prog, data, ctx, maps, **kw)
    kernel = kernel_run(prog_type, prog, data, ctx, maps, setup_kernel)
    return vm, kernel


def assert_same(vm: Result, kernel: Result) -> None:
    assert vm.err == kernel.err, f"errno: bpfvm {vm.err}, kernel {kernel.err}"
    if vm.err:
        return
    assert vm.retval == kernel.retval, f"retval: bpfvm {vm.retval:#x}, kernel {kernel.retval:#x}"
    assert vm.data_out == kernel.data_out
    assert vm.ctx_out == kernel.ctx_out


# -- packets ------------------------------------------------------------------------------------------------------
def ipv4_udp(payload: bytes = b"hello world!", dst_mac: bytes = b"\x02" * 6) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack("!HHHH", 1234, 80, 8 + len(payload), 0)
    return dst_mac + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp + payload


def skb_ctx(**fields: int) -> bytes:
    from helpers.skb import SKB_FIELDS

    ctx = bytearray(192)
    for name, value in fields.items():
        off, size = SKB_FIELDS[name]
        ctx[off : off + size] = value.to_bytes(size, "little")
    return bytes(ctx)


# =================================================================================================================
# tests
# =================================================================================================================
FIELD_TO_MAP = """
    ldx{size} %r6, [%r1+{off}]
    stw [%r10-4], 0
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, out
    stxdw [%r0+0], %r6
    out:
    mov %r0, 1
    exit
"""
ONE_U64 = MapSpec("out", 2, 4, 8, 1)


def map_value(res: Result, index: int = 0, key: int = 0) -> bytes | None:
    """Entry `key` of map `index` after a run, from either side."""
    m = res.maps[index]
    if isinstance(m, dict):
        return m.get(key)
    try:
        return m.lookup_raw(key.to_bytes(m.key_size, "little"))
    except KeyError:
        return None


@pytest.mark.kernel
@pytest.mark.parametrize("prog_type", ["sched_cls", "socket_filter", "cgroup_skb", "lwt_in", "lwt_xmit"])
@pytest.mark.parametrize("dst", [b"\x02" * 6, b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01", bytes(6)])
def test_sk_buff_fields_match_kernel(prog_type: str, dst: bytes) -> None:
    """Every __sk_buff field the program type may read, with and without ctx_in (loopback: pkt_type, ifindex)."""
    from helpers.skb import SKB_FIELDS

    compared = 0
    for ctx in (None, skb_ctx(mark=7, priority=3, cb0=0xABCD, cb4=9, ifindex=1, tstamp=5, gso_segs=2)):
        for name, (off, size) in SKB_FIELDS.items():
            if name in ("data", "data_end", "data_meta", "flow_keys", "sk"):
                continue
            prog = asm(FIELD_TO_MAP.format(size={1: "b", 4: "w", 8: "dw"}[size], off=off))
            try:
                kernel = kernel_run(prog_type, prog, ipv4_udp(dst_mac=dst), ctx, [ONE_U64])
            except OSError:
                continue  # the verifier refuses this field for this program type
            vm = vm_run(prog_type, prog, ipv4_udp(dst_mac=dst), ctx, [ONE_U64])
            assert_same(vm, kernel)
            assert map_value(vm) == map_value(kernel), name
            compared += 1
    assert compared >= 10


@pytest.mark.kernel
def test_data_pointers_and_len_match_kernel() -> None:
    """data_end - data, data_meta == data for tc; len counts the Ethernet header for tc only."""
    prog = asm("""
        ldxw %r2, [%r1+76]
        ldxw %r3, [%r1+80]
        ldxw %r4, [%r1+140]
        mov %r0, %r3
        sub %r0, %r2
        jeq %r4, %r2, same
        mov %r0, 0xdead
        same:
        exit
    """)
    for size in (14, 60, 1500, 3712):
        assert_same(*both("sched_cls", prog, ipv4_udp(bytes(max(size - 42, 0)))[:size] if size >= 42 else bytes(size)))


@pytest.mark.kernel
@pytest.mark.parametrize("fields,why", [
    ({"len": 1}, "len"), ({"tc_index": 1}, "tc_index"), ({"hash": 5}, "hash"), ({"data": 1}, "data"),
    ({"data_end": 30}, "data_end: no non-linear skbs before 6.19"), ({"sk": 1}, "sk"),
    ({"tstamp_type": 1}, "tstamp_type"), ({"wire_len": 3}, "wire_len < len"),
    ({"wire_len": 70000}, "wire_len > 64K"), ({"gso_segs": 70000}, "gso_segs"),
    ({"ifindex": 999}, "no such device"), ({"mark": 1, "gso_size": 9, "hwtstamp": 5, "tstamp": 6}, "accepted"),
])
def test_ctx_in_rules_match_kernel(fields: dict, why: str) -> None:
    prog = asm("mov %r0, 1\nexit")
    assert_same(*both("sched_cls", prog, ipv4_udp(), skb_ctx(**fields)))


@pytest.mark.kernel
def test_data_in_size_limits_match_kernel() -> None:
    prog = asm("mov %r0, 1\nexit")
    for size in (13, 14, 3712, 3713):
        assert_same(*both("sched_cls", prog, bytes(size)))
    assert_same(*both("sched_cls", prog, ipv4_udp(), skb_ctx() + b"\0" * 8))
    assert_same(*both("sched_cls", prog, ipv4_udp(), skb_ctx() + b"\1"))


@pytest.mark.kernel
def test_ctx_writes_reach_ctx_out_like_kernel() -> None:
    prog = asm("""
        mov %r2, 77
        stxw [%r1+8], %r2
        mov %r2, 5
        stxw [%r1+32], %r2
        mov %r2, 0x1234
        stxw [%r1+56], %r2
        mov %r0, 0
        exit
    """)
    vm, kernel = both("sched_cls", prog, ipv4_udp(), skb_ctx(cb0=1, gso_size=3))
    assert_same(vm, kernel)
    assert struct.unpack_from("<I", vm.ctx_out, 8)[0] == 77


def test_ctx_write_refused_where_the_kernel_refuses() -> None:
    """socket filters may write only cb[]; a mark store is a fault (the kernel's verifier rejects it)."""
    prog = asm("mov %r2, 1\nstxw [%r1+8], %r2\nexit")
    with pytest.raises(MemoryFault, match="socket_filter programs may not write 4 bytes to __sk_buff.mark"):
        vm_run("socket_filter", prog, ipv4_udp())
    with pytest.raises(MemoryFault, match="invalid 2-byte access to __sk_buff.data"):
        vm_run("sched_cls", asm("ldxh %r0, [%r1+76]\nexit"), ipv4_udp())


LOAD_BYTES = """
    mov %r6, %r1
    stdw [%r10-16], -1
    mov %r1, %r6
    lddw %r2, {off}
    mov %r3, %r10
    add %r3, -16
    mov %r4, {len}
    call 26
    stxw [%r10-24], %r0
    ldxdw %r0, [%r10-16]
    ldxw %r2, [%r10-24]
    xor %r0, %r2
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("off,length", [(0, 8), (12, 4), (56, 8), (60, 4), (61, 4), (70, 1), (-1, 4),
                                        (0x7fffffff, 1), (0x80000000, 1)])
def test_skb_load_bytes_matches_kernel(off: int, length: int) -> None:
    """In range, across the end (-EFAULT with the buffer zeroed), and offsets past INT_MAX."""
    prog = asm(LOAD_BYTES.format(off=off, len=length))
    assert_same(*both("sched_cls", prog, ipv4_udp()[:64]))


def test_skb_load_bytes_across_the_linear_boundary() -> None:
    """A non-linear skb (20 linear bytes): the kernel's skb_header_pointer copies from the fragments.

    The kernel cannot build this skb in a test run before 6.19, so the expectation is the packet itself, which
    is what skb_copy_bits() returns for any split of the same bytes."""
    packet = ipv4_udp()
    for off in (0, 12, 16, 18, 20, 40):
        prog = asm(LOAD_BYTES.format(off=off, len=8))
        want = int.from_bytes(packet[off : off + 8], "little")
        for linear in (None, 14, 20, 21, 47):
            assert vm_run("sched_cls", prog, packet, linear=linear).retval == want & 0xFFFFFFFF


@pytest.mark.kernel
@pytest.mark.parametrize("flags", [0, 1, 2, 3, 4])
def test_skb_store_bytes_matches_kernel(flags: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        lddw %r2, 0x1122334455667788
        stxdw [%r10-8], %r2
        mov %r1, %r6
        mov %r2, 20
        mov %r3, %r10
        add %r3, -8
        mov %r4, 8
        mov %r5, {flags}
        call 9
        exit
    """)
    assert_same(*both("sched_cls", prog, ipv4_udp()))
    prog_far = asm(f"""
        mov %r6, %r1
        stdw [%r10-8], 0
        mov %r1, %r6
        mov %r2, 60
        mov %r3, %r10
        add %r3, -8
        mov %r4, 8
        mov %r5, {flags}
        call 9
        exit
    """)
    assert_same(*both("sched_cls", prog_far, ipv4_udp()))


def test_store_bytes_pulls_a_non_linear_skb() -> None:
    """skb_ensure_writable() linearizes up to offset + len before the write, so the write lands in place."""
    packet = ipv4_udp()
    prog = asm("""
        mov %r6, %r1
        lddw %r2, 0x1122334455667788
        stxdw [%r10-8], %r2
        mov %r1, %r6
        mov %r2, 30
        mov %r3, %r10
        add %r3, -8
        mov %r4, 8
        mov %r5, 0
        call 9
        ldxw %r2, [%r6+76]
        ldxw %r3, [%r6+80]
        sub %r3, %r2
        lsh %r0, 32
        or %r0, %r3
        exit
    """)
    res = vm_run("sched_cls", prog, packet, linear=16)
    assert res.retval == 38  # the head now holds 38 bytes: pskb_may_pull(skb, 30 + 8)
    want = packet[:30] + bytes.fromhex("8877665544332211") + packet[38:]
    assert res.data_out == want


@pytest.mark.kernel
@pytest.mark.parametrize("length", [0, 20, 60, 61, 100])
def test_skb_pull_data_matches_kernel(length: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, {length}
        call 39
        ldxw %r2, [%r6+76]
        ldxw %r3, [%r6+80]
        sub %r3, %r2
        lsh %r0, 16
        or %r0, %r3
        exit
    """)
    assert_same(*both("sched_cls", prog, ipv4_udp()[:60]))


def test_skb_pull_data_on_a_non_linear_skb() -> None:
    """pskb_may_pull(): the linear part grows to `len`; past skb->len the helper fails with -ENOMEM."""
    packet = ipv4_udp()
    prog = asm("""
        mov %r6, %r1
        mov %r2, 40
        call 39
        mov %r7, %r0
        ldxw %r2, [%r6+76]
        ldxw %r3, [%r6+80]
        sub %r3, %r2
        mov %r0, %r3
        lsh %r7, 32
        or %r0, %r7
        exit
    """)
    res = vm_run("sched_cls", prog, packet, linear=20)
    assert res.retval == 40 and res.data_out == packet
    prog_all = asm("mov %r2, 0\ncall 39\nexit")  # len 0 pulls nothing more than the head
    assert vm_run("sched_cls", prog_all, packet, linear=20).retval == 0
    prog_far = asm("mov %r2, 1000\ncall 39\nexit")
    assert vm_run("sched_cls", prog_far, packet, linear=20).retval == (-errno.ENOMEM) & 0xFFFFFFFF


@pytest.mark.kernel
@pytest.mark.parametrize("new_len", [13, 14, 40, 54, 100, 16064, 16065])
@pytest.mark.parametrize("prog_type", ["sched_cls", "lwt_xmit"])
def test_skb_change_tail_matches_kernel(new_len: int, prog_type: str) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, {new_len}
        mov %r3, 0
        call 38
        ldxw %r2, [%r6+0]
        lsh %r0, 20
        or %r0, %r2
        exit
    """)
    vm, kernel = both(prog_type, prog, ipv4_udp())
    assert_same(vm, kernel)


@pytest.mark.kernel
@pytest.mark.parametrize("flags,frm,to", [(2, 0x0a00, 0x0b00), (4, 0x0100000a, 0x0100000b), (0, 0, 0x1234),
                                          (0, 5, 5), (3, 1, 2), (0x10, 0, 0)])
@pytest.mark.parametrize("offset", [24, 25, 0x10000])
def test_l3_csum_replace_matches_kernel(flags: int, frm: int, to: int, offset: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, {offset}
        mov %r3, {frm}
        mov %r4, {to}
        mov %r5, {flags}
        call 10
        exit
    """)
    assert_same(*both("sched_cls", prog, ipv4_udp()))


@pytest.mark.kernel
@pytest.mark.parametrize("flags", [2, 4, 0, 0x12, 0x14, 0x24, 0x64, 0x34, 0x94, 0x100])
def test_l4_csum_replace_matches_kernel(flags: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, 40
        mov %r3, 0x0a000001
        mov %r4, 0x0a0000fe
        mov %r5, {flags}
        call 11
        exit
    """)
    packet = bytearray(ipv4_udp())
    assert_same(*both("sched_cls", prog, bytes(packet)))
    packet[40:42] = b"\x12\x34"  # a nonzero UDP checksum
    assert_same(*both("sched_cls", prog, bytes(packet)))


@pytest.mark.kernel
@pytest.mark.parametrize("ifindex,flags", [(1, 0), (5, 1), (3, 2), (3, 0x100)])
@pytest.mark.parametrize("prog_type", ["sched_cls", "xdp"])
def test_redirect_return_codes_match_kernel(ifindex: int, flags: int, prog_type: str) -> None:
    prog = asm(f"mov %r1, {ifindex}\nmov %r2, {flags}\ncall 23\nexit")
    assert_same(*both(prog_type, prog, ipv4_udp()))


# -- XDP ----------------------------------------------------------------------------------------------------
XDP_GEOMETRY = """
    mov %r6, %r1
    {body}
    ldxw %r2, [%r6+0]
    ldxw %r3, [%r6+4]
    ldxw %r4, [%r6+8]
    mov %r5, %r3
    sub %r5, %r2
    sub %r2, %r4
    lsh %r2, 16
    or %r5, %r2
    lsh %r0, 24
    xor %r0, %r5
    exit
"""


def xdp_md(data: int = 0, data_end: int = 0, ingress_ifindex: int = 0, rx_queue_index: int = 0,
           data_meta: int = 0, egress_ifindex: int = 0) -> bytes:
    return struct.pack("<6I", data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex)


@pytest.mark.kernel
@pytest.mark.parametrize("size", [14, 100, 3520, 3521, 5000, 9000])
def test_xdp_geometry_matches_kernel(size: int) -> None:
    """Linear size (at most 4096 - 256 - 320 bytes, the rest in fragments) and data_out of every size."""
    prog = asm(XDP_GEOMETRY.format(body="mov %r1, %r6\n    call 188"))
    data = bytes(i & 0xFF for i in range(size))
    assert_same(*both("xdp", prog, data))


@pytest.mark.kernel
@pytest.mark.parametrize("ctx", [
    xdp_md(0, 60), xdp_md(8, 100), xdp_md(216, 300), xdp_md(220, 300), xdp_md(6, 100), xdp_md(0, 101),
    xdp_md(50, 40), xdp_md(0, 100, data_meta=4), xdp_md(0, 100, 1, 0), xdp_md(0, 100, 1, 1),
    xdp_md(0, 100, 0, 1), xdp_md(0, 100, 77), xdp_md(0, 100, egress_ifindex=1), xdp_md(0, 0),
    xdp_md(90, 100),
])
def test_xdp_ctx_in_rules_match_kernel(ctx: bytes) -> None:
    prog = asm(XDP_GEOMETRY.format(body="mov %r1, %r6\n    call 188"))
    assert_same(*both("xdp", prog, bytes(range(100)), ctx))


@pytest.mark.kernel
@pytest.mark.parametrize("offset", [-256, -216, -217, -200, -10, 0, 10, 86, 87, 200])
@pytest.mark.parametrize("meta", [0, 8])
def test_xdp_adjust_head_matches_kernel(offset: int, meta: int) -> None:
    prog = asm(XDP_GEOMETRY.format(body=f"mov %r1, %r6\n    mov %r2, {offset}\n    call 44"))
    assert_same(*both("xdp", prog, bytes(range(100)), xdp_md(meta, 100)))


@pytest.mark.kernel
@pytest.mark.parametrize("offset", [-4, -8, -6, -32, -36, -216, -220, -256, 4, 8])
def test_xdp_adjust_meta_matches_kernel(offset: int) -> None:
    prog = asm(XDP_GEOMETRY.format(body=f"mov %r1, %r6\n    mov %r2, {offset}\n    call 54"))
    assert_same(*both("xdp", prog, bytes(range(100))))
    assert_same(*both("xdp", prog, bytes(range(100)), xdp_md(8, 100)))


@pytest.mark.kernel
@pytest.mark.parametrize("offset", [-100, -86, -87, -1, 0, 1, 3420, 3421, 100])
@pytest.mark.parametrize("size,linear", [(100, None), (5000, None), (200, 100), (200, 150)])
def test_xdp_adjust_tail_matches_kernel(offset: int, size: int, linear: int | None) -> None:
    """Linear buffers grow up to the shared info and shrink to 14 bytes; multi-buffer tails grow within the
    last fragment's page and shrink fragment by fragment, into the linear part when none is left."""
    prog = asm(XDP_GEOMETRY.format(body=f"mov %r1, %r6\n    mov %r2, {offset}\n    call 65"))
    ctx = xdp_md(0, linear) if linear is not None else None
    assert_same(*both("xdp", prog, bytes(i & 0xFF for i in range(size)), ctx))


@pytest.mark.kernel
@pytest.mark.parametrize("off,length", [(0, 8), (95, 8), (60, 8), (96, 4), (99, 4), (0, 100), (0xffff, 1),
                                        (0x10000, 1)])
def test_xdp_load_and_store_bytes_match_kernel(off: int, length: int) -> None:
    """bpf_xdp_load_bytes/store_bytes on a 60-byte linear part with 40 bytes in a fragment."""
    size = min(length, 64)
    prog = asm(f"""
        mov %r6, %r1
        stdw [%r10-64], -1
        mov %r2, {off}
        mov %r3, %r10
        add %r3, -64
        mov %r4, {size}
        call 189
        mov %r7, %r0
        ldxw %r8, [%r10-64]
        mov %r1, %r6
        mov %r2, 2
        mov %r3, %r10
        add %r3, -64
        mov %r4, {size}
        call 190
        lsh %r0, 8
        xor %r0, %r7
        xor %r0, %r8
        exit
    """)
    assert_same(*both("xdp", prog, bytes(range(100)), xdp_md(0, 60)))


def test_xdp_frags_option_sets_fragment_size() -> None:
    prog = asm(XDP_GEOMETRY.format(body="mov %r1, %r6\n    call 188"))
    res = vm_run("xdp", prog, bytes(5000), frags=1000)
    assert res.retval == ((5000 << 24) ^ 3520) & 0xFFFFFFFF and res.data_out == bytes(5000)
    assert res.runtime is not None


def test_context_regions_are_released() -> None:
    memory = Memory()
    runtime = Runtime(memory)
    attach(runtime)
    before = len(memory.regions)
    ctx = make_skb_context(memory, runtime, "sched_cls", ipv4_udp(), None, 20)
    assert len(memory.regions) > before
    ctx.release()
    assert len(memory.regions) == before
    ctx = make_xdp_context(memory, runtime, bytes(5000), None, None)
    ctx.release()
    assert len(memory.regions) == before


def test_helpers_refuse_a_foreign_context() -> None:
    prog = asm("mov %r1, %r10\nmov %r2, 0\ncall 39\nexit")
    with pytest.raises(HelperError, match="not this run's __sk_buff"):
        vm_run("sched_cls", prog, ipv4_udp())


@pytest.mark.kernel
@pytest.mark.parametrize("set_flags,get_flags,size", [(0, 0, 44), (0, 0x10, 44), (1, 1, 44), (1, 0, 44),
                                                      (0x4, 0x10, 44), (0x2, 0x10, 44), (0x8, 0x10, 44),
                                                      (0x10, 0x10, 44), (0, 0, 28), (0, 0, 8), (0, 0, 30),
                                                      (0x20, 0, 44)])
def test_tunnel_keys_match_kernel(set_flags: int, get_flags: int, size: int) -> None:
    key = struct.pack("<I16sBBHI16s", 0x1234, bytes([10, 0, 0, 1]) + bytes(12), 5, 64, 0, 0,
                      bytes([10, 0, 0, 2]) + bytes(12))
    if set_flags & 1:
        key = struct.pack("<I16sBBHI16s", 0x1234, bytes(range(16)), 5, 64, 0, 0xABCDE, bytes(range(16, 32)))
    lines = ["mov %r6, %r1"]
    padded = key.ljust(48, b"\0")
    for i in range(0, 48, 8):
        lines += [f"lddw %r1, {int.from_bytes(padded[i:i + 8], 'little')}", f"stxdw [%r10{-48 + i:+d}], %r1"]
        lines += [f"stdw [%r10{-96 + i:+d}], -1"]
    lines += ["mov %r1, %r6", "mov %r2, %r10", "add %r2, -48", f"mov %r3, {size}", f"mov %r4, {set_flags}",
              "call 21", "mov %r7, %r0", "mov %r1, %r6", "mov %r2, %r10", "add %r2, -96", "mov %r3, 44",
              f"mov %r4, {get_flags}", "call 20", "lsh %r0, 8", "xor %r7, %r0"]
    for i in range(0, 44, 4):
        lines += [f"ldxw %r1, [%r10{-96 + i:+d}]", "lsh %r7, 3", "xor %r7, %r1"]
    lines += ["mov %r0, %r7", "rsh %r7, 32", "xor %r0, %r7", "exit"]
    assert_same(*both("sched_cls", asm("\n".join(lines)), ipv4_udp()))


@pytest.mark.kernel
@pytest.mark.parametrize("mode,offset,size", [(0x20, 0, 4), (0x20, 8, 2), (0x20, 39, 1), (0x20, 38, 4),
                                              (0x20, 40, 1), (0x20, -0x100000 + 2, 2), (0x20, -0x200000 + 12, 2),
                                              (0x20, -0x200000 + 40, 4), (0x20, -5, 4), (0x40, 9, 2)])
@pytest.mark.parametrize("prog_type", ["socket_filter", "sched_cls"])
def test_ld_abs_and_ld_ind_match_kernel(mode: int, offset: int, size: int, prog_type: str) -> None:
    """Legacy packet loads: big-endian values; a load outside the packet ends the program with r0 = 0."""
    code = {1: 0x10, 2: 0x08, 4: 0x00}[size] | mode  # BPF_LD | size | ABS/IND
    insns = [isa.Insn(0xBF, 6, 1), isa.Insn(0xB7, 0, 0, 0, 0x77), isa.Insn(0xB7, 7, 0, 0, 1),
             isa.Insn(code, 0, 7 if mode == 0x40 else 0, 0, offset), isa.Insn(0x07, 0, 0, 0, 0x100),
             isa.Insn(isa.OP_EXIT)]
    assert_same(*both(prog_type, Prog(insns), ipv4_udp()[:54]))


@pytest.mark.kernel
@pytest.mark.parametrize("start,offset,length", [(0, 0, 8), (1, 0, 8), (0, 12, 2), (1, 12, 8), (1, 32, 8),
                                                 (1, 33, 8), (2, 0, 4), (0, 0x10000, 1)])
@pytest.mark.parametrize("prog_type", ["sched_cls", "cgroup_skb"])
def test_skb_load_bytes_relative_matches_kernel(start: int, offset: int, length: int, prog_type: str) -> None:
    prog = asm(f"""
        stdw [%r10-8], -1
        mov %r2, {offset}
        mov %r3, %r10
        add %r3, -8
        mov %r4, {length}
        mov %r5, {start}
        call 68
        ldxdw %r1, [%r10-8]
        stw [%r10-12], 0
        stxdw [%r10-24], %r1
        lsh %r0, 56
        xor %r0, %r1
        stxdw [%r10-32], %r0
        ldmap %r1, 0
        mov %r2, %r10
        add %r2, -12
        call 1
        jeq %r0, 0, out
        ldxdw %r1, [%r10-32]
        stxdw [%r0+0], %r1
        out:
        mov %r0, 1
        exit
    """)
    vm, kernel = both(prog_type, prog, ipv4_udp()[:54], maps=[ONE_U64])
    assert_same(vm, kernel)
    assert map_value(vm) == map_value(kernel)


@pytest.mark.kernel
@pytest.mark.parametrize("room,flags", [(14, 0), (0, 0), (100, 0), (16064, 0), (8, 1)])
def test_skb_change_head_matches_kernel(room: int, flags: int) -> None:
    prog = asm(f"""
        mov %r6, %r1
        mov %r2, {room}
        mov %r3, {flags}
        call 43
        ldxw %r2, [%r6+0]
        lsh %r0, 20
        xor %r0, %r2
        exit
    """)
    assert_same(*both("lwt_xmit", prog, ipv4_udp()))
    assert_same(*both("sched_cls", prog, ipv4_udp()))


def test_map_in_map_lookups_return_usable_inner_maps() -> None:
    inner = MapSpec("inner", 2, 4, 8, 2)
    outer = MapSpec("outer", 12, 4, 4, 2, inner=inner)
    prog = asm("""
        stw [%r10-4], 1
        ldmap %r1, 0
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, none
        mov %r1, %r0
        mov %r2, %r10
        add %r2, -4
        call 1
        jeq %r0, 0, none
        ldxdw %r0, [%r0+0]
        exit
        none:
        mov %r0, 0xbad
        exit
    """)

    def setup(runtime, maps, program):  # noqa: ANN001, ANN202
        inner_map = maps[0].new_inner()
        inner_map.update(1, 4242)
        maps[0].update(1, inner_map)

    assert vm_run("sched_cls", prog, ipv4_udp(), maps=[outer], setup=setup).retval == 4242
    assert vm_run("sched_cls", prog, ipv4_udp(), maps=[outer]).retval == 0xBAD
