"""Built-in helpers: the registry, maps, time, randomness, printing, probes, checksums, tail calls, callbacks,
ring buffers, perf output and local dynptrs, compared with the running kernel where it can test-run them."""

from __future__ import annotations

import errno
import time

import pytest

from bpfvm import isa
from bpfvm.errors import HelperError, LoadError, MemoryFault
from bpfvm.extensions import USER_HELPERS, helper
from bpfvm.memory import Memory
from bpfvm.interp import Interpreter, Runtime
from bpfvm.program import MapSpec, Program
from helpers.native_build import load_native
from helpers.registry import attach, check_program_helpers, helper_names, kfunc_names, native_symbols
from test_skb_xdp import Prog, asm, assert_same, both, ipv4_udp, kernel_run, map_value, vm_run

ARRAY4 = MapSpec("arr", 2, 4, 8, 4)
HASH = MapSpec("hash", 1, 4, 8, 8)
OUT = MapSpec("out", 2, 4, 8, 4)


def with_callbacks(main: str, *callbacks: str) -> Prog:
    """`main` may load `@cbN`, the address of callback N (appended after main, in order)."""
    def expand(text: str, starts: list[int]) -> str:
        for n, start in enumerate(starts):
            text = text.replace(f"@cb{n}", str(start))
        return text

    zeros = [0] * len(callbacks)
    starts, pos = [], len(asm(expand(main, zeros)).insns)
    for cb in callbacks:
        starts.append(pos)
        pos += len(asm(expand(cb, zeros)).insns)
    prog = asm(expand(main, starts))
    for cb, start in zip(callbacks, starts):
        for insn_index, insn in enumerate(asm(expand(cb, starts)).insns):
            if insn.opcode == isa.OP_LDDW and insn.src == isa.PSEUDO_FUNC:  # relative to its new position
                insn = insn._replace(imm=insn.imm - start)
            prog.insns.append(insn)
    return prog


def store_string(text: bytes, at: int) -> str:
    """Instructions that put `text` (padded to 8-byte words) at r10 + at."""
    data = text.ljust((len(text) + 7) // 8 * 8, b"\0")
    lines = []
    for i in range(0, len(data), 8):
        lines.append(f"lddw %r1, {int.from_bytes(data[i:i + 8], 'little')}")
        lines.append(f"stxdw [%r10{at + i:+d}], %r1")
    return "\n".join(lines)


def run_bare(text: str, maps: list[MapSpec] = (), options: dict | None = None) -> tuple[int, Runtime, list]:
    """Run a context-free program on bpfvm: (r0, runtime, map instances)."""
    from helpers.maps import create_map

    memory = Memory()
    runtime = Runtime(memory)
    instances = []
    for spec in maps:
        inst = create_map(spec, memory)
        runtime.add_map(spec, inst)
        instances.append(inst)
    attach(runtime, options=options or {})
    prog = asm(text)
    program = Program(prog.insns, maps=list(maps), kfuncs=prog.kfuncs)
    return Interpreter(program).bind(runtime)(), runtime, instances


# -- the registry -----------------------------------------------------------------------------------------------
def test_registry_lists_the_builtins() -> None:
    names = helper_names()
    assert names[1] == "bpf_map_lookup_elem" and names[181] == "bpf_loop" and names[202] == "bpf_dynptr_write"
    assert {"bpf_dynptr_slice", "bpf_iter_num_next", "skb_header_pointer", "bpf_xdp_copy_buf"} <= set(kfunc_names())
    symbols = native_symbols()
    assert symbols["bpfvm_helper_loop"] and symbols["bpfvm_kfunc_bpf_dynptr_slice"]


def test_unknown_helpers_and_kfuncs_are_refused_by_name() -> None:
    prog = Program([isa.Insn(isa.OP_CALL, imm=35), isa.Insn(isa.OP_EXIT)])
    with pytest.raises(LoadError, match=r"insn 0: program calls helper bpf_get_current_task#35"):
        check_program_helpers(prog)
    prog = Program([isa.Insn(0xB7), isa.Insn(isa.OP_CALL, imm=4000), isa.Insn(isa.OP_EXIT)])
    with pytest.raises(LoadError, match="insn 1: program calls unknown helper #4000"):
        check_program_helpers(prog)
    prog = Program([isa.Insn(isa.OP_CALL, src=isa.PSEUDO_KFUNC_CALL, imm=0), isa.Insn(isa.OP_EXIT)],
                   kfuncs=["bpf_no_such_kfunc"])
    with pytest.raises(LoadError, match="kfunc bpf_no_such_kfunc"):
        check_program_helpers(prog)
    check_program_helpers(asm("call 7\nexit"))


def test_user_helpers_join_the_builtins() -> None:
    @helper(4001)
    def double(runtime, r1, r2, r3, r4, r5):  # noqa: ANN001, ANN202
        return r1 * 2

    try:
        check_program_helpers(Program([isa.Insn(isa.OP_CALL, imm=4001), isa.Insn(isa.OP_EXIT)]))
        r0, _, _ = run_bare("mov %r1, 21\ncall 4001\nexit")
        assert r0 == 42 and helper_names()[4001]
    finally:
        USER_HELPERS.pop(4001, None)


# -- maps ----------------------------------------------------------------------------------------------------------
MAP_OPS = """
    stw [%r10-4], {key}
    lddw %r1, 0x1111222233334444
    stxdw [%r10-16], %r1
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    mov %r3, %r10
    add %r3, -16
    mov %r4, {flags}
    call 2
    mov %r6, %r0
    stw [%r10-4], {other}
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    call 3
    lsh %r0, 8
    xor %r6, %r0
    stw [%r10-4], {key}
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, out
    ldxdw %r1, [%r0+0]
    add %r1, 1
    stxdw [%r0+0], %r1
    out:
    mov %r0, %r6
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("spec", [ARRAY4, HASH])
@pytest.mark.parametrize("key,other,flags", [(1, 2, 0), (1, 1, 0), (5, 1, 0), (1, 2, 1), (1, 2, 2), (1, 2, 8)])
def test_map_update_delete_lookup_match_kernel(spec: MapSpec, key: int, other: int, flags: int) -> None:
    prog = asm(MAP_OPS.format(key=key, other=other, flags=flags))
    vm, kernel = both("sched_cls", prog, ipv4_udp(), maps=[spec])
    assert_same(vm, kernel)
    for k in range(4):
        assert map_value(vm, 0, k) == map_value(kernel, 0, k), k


@pytest.mark.kernel
@pytest.mark.parametrize("kind", [22, 23])  # queue, stack
def test_push_pop_peek_match_kernel(kind: int) -> None:
    spec = MapSpec("qs", kind, 0, 8, 2)
    lines = []
    for value, flags in ((10, 0), (20, 0), (30, 0), (40, 2)):  # the third push finds the map full; BPF_EXIST
        lines += [f"stdw [%r10-8], {value}", "ldmap %r1, 0", "mov %r2, %r10", "add %r2, -8", f"mov %r3, {flags}",
                  "call 87", "lsh %r6, 4", "and %r0, 15", "or %r6, %r0"]
    for helper_id in (89, 88, 88, 88):  # peek, pop, pop, pop (empty)
        lines += ["stdw [%r10-8], 0", "ldmap %r1, 0", "mov %r2, %r10", "add %r2, -8", f"call {helper_id}",
                  "ldxdw %r1, [%r10-8]", "lsh %r6, 4", "xor %r6, %r1", "and %r0, 15", "xor %r6, %r0"]
    prog = asm("mov %r6, 0\n" + "\n".join(lines) + "\nmov %r0, %r6\nexit")
    assert_same(*both("sched_cls", prog, ipv4_udp(), maps=[spec]))


def test_map_helpers_check_pointers() -> None:
    with pytest.raises(MemoryFault, match="bpf_map_lookup_elem key: read of 4 bytes at 0x10 is outside every region"):
        run_bare("ldmap %r1, 0\nmov %r2, 16\ncall 1\nexit", [ARRAY4])
    with pytest.raises(HelperError, match="is not a map pointer"):
        run_bare("mov %r1, %r10\nmov %r2, %r10\nadd %r2, -8\ncall 1\nexit", [ARRAY4])


# -- time, randomness and the task ----------------------------------------------------------------------------------
def test_ktime_is_deterministic_when_asked() -> None:
    r0, runtime, _ = run_bare("call 5\nmov %r6, %r0\ncall 125\nsub %r0, %r6\nexit",
                              options={"ktime": 10**9, "ktime_step": 250})
    assert r0 == 250
    r0, _, _ = run_bare("call 5\nexit", options={"ktime": 777})
    assert r0 == 777


def test_ktime_follows_the_host_clock() -> None:
    before = time.monotonic_ns()
    r0, _, _ = run_bare("call 5\nexit")
    assert before <= r0 <= time.monotonic_ns()
    boot, _, _ = run_bare("call 125\nexit")
    assert boot >= r0 - 10**9


def test_prandom_is_the_kernels_generator_and_seedable() -> None:
    """prandom_u32_state() against the kernel's own self-test vectors (prandom_seed_early + warmup)."""
    ffi, lib = load_native()
    env = ffi.gc(lib.bpfvm_env_new(), lib.bpfvm_env_free)
    lcg = lambda x: (x * 69069) & 0xFFFFFFFF  # noqa: E731
    for seed, want in ((1, 3484351685), (2, 2623130059), (3, 3125133893), (4, 984847254)):
        s1 = lcg(seed) + 2 if lcg(seed) < 2 else lcg(seed)
        s2 = lcg(s1) + 8 if lcg(s1) < 8 else lcg(s1)
        s3 = lcg(s2) + 16 if lcg(s2) < 16 else lcg(s2)
        s4 = lcg(s3) + 128 if lcg(s3) < 128 else lcg(s3)
        env.prandom = [s1, s2, s3, s4]
        for _ in range(10):
            lib.bpfvm_helper_get_prandom_u32(env, 0, 0, 0, 0, 0)
        assert lib.bpfvm_helper_get_prandom_u32(env, 0, 0, 0, 0, 0) == want
    a = run_bare("call 7\nmov %r6, %r0\ncall 7\nxor %r0, %r6\nexit", options={"seed": 99})[0]
    b = run_bare("call 7\nmov %r6, %r0\ncall 7\nxor %r0, %r6\nexit", options={"seed": 99})[0]
    c = run_bare("call 7\nmov %r6, %r0\ncall 7\nxor %r0, %r6\nexit", options={"seed": 100})[0]
    assert a == b != c


def test_task_identity_is_configurable() -> None:
    opts = {"pid_tgid": (42 << 32) | 43, "uid_gid": (5 << 32) | 6, "comm": "kworker/0:1-events", "cpu": 1,
            "ncpus": 2}
    assert run_bare("call 14\nexit", options=opts)[0] == (42 << 32) | 43
    assert run_bare("call 15\nexit", options=opts)[0] == (5 << 32) | 6
    assert run_bare("call 8\nexit", options=opts)[0] == 1
    r0, runtime, _ = run_bare("stdw [%r10-16], -1\nstdw [%r10-8], -1\nmov %r1, %r10\nadd %r1, -16\nmov %r2, 16\n"
                              "call 16\nldxdw %r0, [%r10-16]\nldxdw %r1, [%r10-8]\nxor %r0, %r1\nexit", options=opts)
    assert r0.to_bytes(8, "little") == bytes(a ^ b for a, b in zip(b"kworker/", b"0:1-eve\0"))
    r0, _, _ = run_bare("stdw [%r10-8], -1\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 4\ncall 16\n"
                        "ldxdw %r0, [%r10-8]\nexit", options=opts)
    assert r0.to_bytes(8, "little") == b"kwo\0\xff\xff\xff\xff"


# -- printing ---------------------------------------------------------------------------------------------------------
PRINTK_CASES = [
    (b"%d", (-5, 0, 0), "-5"), (b"%5d|%-5d|%05d", (42, 42, -42), "   42|42   |-0042"), (b"%u %x %X", (-1, 255, 255),
    "4294967295 ff FF"), (b"%lx %llu %lld", (2**40, 2**63, -2**63), "10000000000 9223372036854775808 "
    "-9223372036854775808"), (b"%+d % d %i", (7, 7, -7), "+7  7 -7"), (b"%c%c%%", (65, 66, 0), "AB%"),
    (b"%pI4", None, "10.0.0.1"), (b"%pi4", None, "010.000.000.001"), (b"%s!", None, "hello!"),
    (b"%8s|", None, "   hello|"), (b"%px", (0x1234, 0, 0), "0000000000001234"),
    (b"no args", (0, 0, 0), "no args"), (b"%d %d %d %d", (1, 2, 3), None), (b"%q", (1, 0, 0), None),
    (b"%.2d", (1, 0, 0), None), (b"%hd", (1, 0, 0), None), (b"%s:x", None, "hello:x"), (b"%sx", None, None), (b"tab\tok", (0, 0, 0), "tab\tok"),
    (b"\x01", (0, 0, 0), None),
]


def printk_prog(fmt: bytes, args: tuple | None, nul: bool = True) -> Prog:
    """trace_printk(fmt on the stack, its size, args); string/IP arguments point at stack data."""
    text = fmt + (b"\0" if nul else b"")
    size = len(text)
    lines = [store_string(text, -64), store_string(b"hello\0\0\0" + bytes([10, 0, 0, 1]), -96)]
    if args is None:
        lines += ["mov %r3, %r10", "add %r3, -96" if b"%s" in fmt or b"%8s" in fmt else "add %r3, -88",
                  "mov %r4, 0", "mov %r5, 0"]
    else:
        for reg, value in zip((3, 4, 5), args):
            lines.append(f"lddw %r{reg}, {value & 0xFFFFFFFFFFFFFFFF}")
    lines += ["mov %r1, %r10", "add %r1, -64", f"mov %r2, {size}", "call 6", "exit"]
    return asm("\n".join(lines))


@pytest.mark.parametrize("fmt,args,want", PRINTK_CASES)
def test_trace_printk_formats_like_the_kernel(fmt: bytes, args: tuple | None, want: str | None) -> None:
    vm = vm_run("sched_cls", printk_prog(fmt, args), ipv4_udp())
    if want is None:
        assert vm.retval == (-errno.EINVAL) & 0xFFFFFFFF and vm.output == []
    else:
        assert vm.output == [want] and vm.retval == len(want)


@pytest.mark.kernel
@pytest.mark.parametrize("fmt,args,want", PRINTK_CASES)
def test_trace_printk_results_match_kernel(fmt: bytes, args: tuple | None, want: str | None) -> None:
    """Return values (the formatted length, or -EINVAL) agree; the kernel's text goes to its trace buffer."""
    prog = printk_prog(fmt, args)
    try:
        assert_same(*both("sched_cls", prog, ipv4_udp()))
    except OSError as exc:  # the kernel's verifier checks formats at load time for some programs
        pytest.skip(f"the kernel refuses this program at load: {exc}")


def test_trace_printk_needs_a_terminated_format() -> None:
    vm = vm_run("sched_cls", printk_prog(b"abc", (0, 0, 0), nul=False), ipv4_udp())
    assert vm.retval == (-errno.EINVAL) & 0xFFFFFFFF


@pytest.mark.kernel
@pytest.mark.parametrize("fmt,nargs,size", [(b"x=%d y=%s", 2, 64), (b"%016llx", 1, 64), (b"%d", 1, 3),
                                            (b"%pI4 %c", 2, 64), (b"%d %d", 1, 64), (b"%z", 1, 64),
                                            (b"plain", 0, 0)])
def test_snprintf_matches_kernel(fmt: bytes, nargs: int, size: int) -> None:
    fmt_map = MapSpec("fmt", 2, 4, 64, 1, flags=128, initial=fmt + b"\0")
    out = MapSpec("out", 2, 4, 64, 1)
    lines = ["stw [%r10-4], 0", "ldmap %r1, 1", "mov %r2, %r10", "add %r2, -4", "call 1", "jeq %r0, 0, out",
             "mov %r6, %r0", store_string(b"hi\0\0\0\0\0\0" + bytes([192, 168, 0, 7]), -48)]
    lines += ["mov %r1, %r10", "add %r1, -48", "stxdw [%r10-24], %r1", "lddw %r1, 0xffffffffffffffb3",
              "stxdw [%r10-32], %r1", "mov %r1, %r10", "add %r1, -40", "stxdw [%r10-16], %r1"]
    if fmt.startswith(b"%016"):
        lines += ["lddw %r1, 0xdeadbeef", "stxdw [%r10-32], %r1"]
    if fmt.startswith(b"%pI4"):
        lines += ["mov %r1, %r10", "add %r1, -40", "stxdw [%r10-32], %r1", "mov %r1, 90", "stxdw [%r10-24], %r1"]
    lines += ["mov %r1, %r6", f"mov %r2, {size}", "ldmapval %r3, 0, 0", "mov %r4, %r10", "add %r4, -32",
              f"mov %r5, {nargs * 8}", "call 165", "ja done", "out:", "mov %r0, 1", "done:", "exit"]
    prog = asm("\n".join(lines))
    maps = [fmt_map, out]
    vm = vm_run("sched_cls", prog, ipv4_udp(), maps=maps)
    try:
        kernel = kernel_run("sched_cls", prog, ipv4_udp(), maps=maps)
    except OSError as exc:  # the verifier checks constant formats at load time
        assert "Invalid format string" in str(exc)
        assert vm.retval == (-errno.EINVAL) & 0xFFFFFFFF
        return
    assert_same(vm, kernel)
    assert map_value(vm, 1) == map_value(kernel, 1)


# -- probes ------------------------------------------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("helper_id", [4, 112, 113])
def test_probe_read_zeroes_on_fault_like_kernel(helper_id: int) -> None:
    prog = asm(f"""
        lddw %r1, 0x1122334455667788
        stxdw [%r10-16], %r1
        stdw [%r10-8], -1
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, 4096
        call {helper_id}
        ldxdw %r6, [%r10-8]
        lsh %r0, 8
        xor %r0, %r6
        exit
    """)
    if helper_id != 4:  # bpf_probe_read is for tracing programs only
        assert_same(*both("sched_cls", prog, ipv4_udp()))
    vm = vm_run("sched_cls", prog, ipv4_udp())
    err = errno.ERANGE if helper_id == 113 else errno.EFAULT  # kernel reads refuse user addresses
    assert vm.retval == ((-err) << 8) & 0xFFFFFFFF
    ok = asm(f"""
        lddw %r1, 0x1122334455667788
        stxdw [%r10-16], %r1
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, %r10
        add %r3, -16
        call {helper_id}
        ldxdw %r0, [%r10-8]
        exit
    """)
    assert vm_run("sched_cls", ok, ipv4_udp()).retval == 0x55667788


def test_probe_read_str_semantics() -> None:
    """Length with the NUL on success; truncation to size - 1 characters; -EFAULT (zeroed) for a bad source."""
    base = store_string(b"abcdef\0\0", -16) + "\nstdw [%r10-32], -1\nstdw [%r10-24], -1\n"
    tail = "\nldxdw %r6, [%r10-32]\nlsh %r0, 56\nxor %r0, %r6\nexit"
    call = "mov %r1, %r10\nadd %r1, -32\nmov %r2, {size}\n{src}\ncall 115"
    good = "mov %r3, %r10\nadd %r3, -16"
    r0 = run_bare(base + call.format(size=16, src=good) + tail)[0]
    assert r0 >> 56 == 7 ^ 0xFF and (r0 & 0xFFFFFFFFFFFFFF).to_bytes(7, "little") == b"abcdef\0"  # no padding
    r0 = run_bare(base + call.format(size=4, src=good) + tail)[0]
    assert r0 >> 56 == 4 ^ 0xFF and (r0 & 0xFFFFFFFF).to_bytes(4, "little") == b"abc\0"
    r0 = run_bare(base + call.format(size=8, src="mov %r3, 64") + tail)[0]
    assert r0 >> 56 == 0xDE and r0 & 0xFFFFFFFFFFFFFF == 0  # -ERANGE: not kernel memory


# -- checksums -----------------------------------------------------------------------------------------------------------
@pytest.mark.kernel
@pytest.mark.parametrize("from_size,to_size,seed", [(4, 4, 0), (8, 0, 0), (0, 8, 0), (8, 8, 0), (4, 4, 0x12345),
                                                    (0, 8, -1), (8, 8, 0xDEADBEEF), (4, 3, 0), (0, 0, 7),
                                                    (16, 16, 0)])
def test_csum_diff_matches_kernel(from_size: int, to_size: int, seed: int) -> None:
    prog = asm(f"""
        lddw %r1, 0x0a0b0c0d01020304
        stxdw [%r10-32], %r1
        lddw %r1, 0x5566778811223344
        stxdw [%r10-24], %r1
        lddw %r1, 0xfedcba9876543210
        stxdw [%r10-16], %r1
        lddw %r1, 0x0123456789abcdef
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -32
        mov %r2, {from_size}
        mov %r3, %r10
        add %r3, -16
        mov %r4, {to_size}
        lddw %r5, {seed & 0xFFFFFFFFFFFFFFFF}
        call 28
        exit
    """)
    assert_same(*both("sched_cls", prog, ipv4_udp()))


# -- tail calls --------------------------------------------------------------------------------------------------------
PROG_ARRAY = MapSpec("jmp", 3, 4, 4, 2)
COUNTER = MapSpec("count", 2, 4, 8, 1)
TAIL_SELF = """
    mov %r6, %r1
    stw [%r10-4], 0
    ldmap %r1, 1
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, out
    ldxdw %r1, [%r0+0]
    add %r1, 1
    stxdw [%r0+0], %r1
    out:
    mov %r1, %r6
    ldmap %r2, 0
    mov %r3, {slot}
    call 12
    mov %r0, 7
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("slot", [0, 1, 5])
def test_tail_call_limit_matches_kernel(slot: int) -> None:
    """A program that tail-calls itself runs 1 + 33 times; an empty or out-of-range slot falls through."""
    prog = asm(TAIL_SELF.format(slot=slot))

    def setup_vm(runtime, maps, program):  # noqa: ANN001, ANN202
        maps[0].update(0, program)

    def setup_kernel(k, fds, prog_fd):  # noqa: ANN001, ANN202
        k.map_update(fds[0], bytes(4), prog_fd.to_bytes(4, "little"))

    vm = vm_run("sched_cls", prog, ipv4_udp(), maps=[PROG_ARRAY, COUNTER], setup=setup_vm)
    kernel = kernel_run("sched_cls", prog, ipv4_udp(), maps=[PROG_ARRAY, COUNTER], setup_kernel=setup_kernel)
    assert_same(vm, kernel)
    assert map_value(vm, 1) == map_value(kernel, 1) == (34 if slot == 0 else 1).to_bytes(8, "little")


# -- callbacks ---------------------------------------------------------------------------------------------------------
LOOP_MAIN = """
    stdw [%r10-8], 0
    mov %r1, {n}
    ldfunc %r2, @cb0
    mov %r3, %r10
    add %r3, -8
    mov %r4, {flags}
    call 181
    lsh %r0, 16
    ldxdw %r1, [%r10-8]
    add %r0, %r1
    exit
"""
LOOP_CB = """
    ldxdw %r3, [%r2+0]
    add %r3, %r1
    stxdw [%r2+0], %r3
    mov %r0, 0
    jne %r1, {stop}, more
    mov %r0, 1
    more:
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("n,stop,flags", [(0, 99, 0), (10, 99, 0), (10, 4, 0), (5, 0, 0), (3, 99, 1),
                                          (8 * 1024 * 1024 + 1, 99, 0)])
def test_bpf_loop_matches_kernel(n: int, stop: int, flags: int) -> None:
    prog = with_callbacks(LOOP_MAIN.format(n=n, flags=flags), LOOP_CB.format(stop=stop))
    assert_same(*both("sched_cls", prog, ipv4_udp()))


def test_nested_bpf_loop_and_callback_faults() -> None:
    """A callback may call bpf_loop again; a fault inside a callback surfaces as the original error."""
    outer_cb = """
        mov %r6, %r2
        mov %r1, 3
        ldfunc %r2, @cb1
        mov %r3, %r6
        mov %r4, 0
        call 181
        mov %r0, 0
        exit
    """
    prog = with_callbacks(LOOP_MAIN.format(n=4, flags=0), outer_cb, LOOP_CB.format(stop=99))
    r0 = vm_run("sched_cls", prog, ipv4_udp()).retval
    assert r0 == (4 << 16) + 4 * 3
    bad_cb = "mov %r1, 0\nldxdw %r0, [%r1+0]\nexit"
    with pytest.raises(MemoryFault, match="outside every region"):
        vm_run("sched_cls", with_callbacks(LOOP_MAIN.format(n=3, flags=0), bad_cb), ipv4_udp())


FOR_EACH_MAIN = """
    stdw [%r10-8], 0
    ldmap %r1, 0
    ldfunc %r2, @cb0
    mov %r3, %r10
    add %r3, -8
    mov %r4, {flags}
    call 164
    lsh %r0, 16
    ldxdw %r1, [%r10-8]
    add %r0, %r1
    exit
"""
FOR_EACH_CB = """
    ldxw %r5, [%r2+0]
    ldxdw %r1, [%r3+0]
    add %r1, %r5
    ldxdw %r2, [%r4+0]
    add %r2, %r1
    stxdw [%r4+0], %r2
    mov %r0, 0
    jne %r5, {stop}, more
    mov %r0, 1
    more:
    exit
"""


@pytest.mark.kernel
@pytest.mark.parametrize("stop,flags", [(99, 0), (1, 0), (0, 1)])
def test_for_each_map_elem_matches_kernel(stop: int, flags: int) -> None:
    """Array maps: every index in order with its value; the callback's 1 stops the walk."""
    prog = with_callbacks(FOR_EACH_MAIN.format(flags=flags), FOR_EACH_CB.format(stop=stop))
    values = {0: 5, 1: 7, 2: 11, 3: 13}

    def setup_vm(runtime, maps, program):  # noqa: ANN001, ANN202
        for k, v in values.items():
            maps[0].update(k, v)

    def setup_kernel(k, fds, prog_fd):  # noqa: ANN001, ANN202
        for key, v in values.items():
            k.map_update(fds[0], key.to_bytes(4, "little"), v.to_bytes(8, "little"))

    vm = vm_run("sched_cls", prog, ipv4_udp(), maps=[ARRAY4], setup=setup_vm)
    kernel = kernel_run("sched_cls", prog, ipv4_udp(), maps=[ARRAY4], setup_kernel=setup_kernel)
    assert_same(vm, kernel)


def test_for_each_map_elem_on_a_hash_map() -> None:
    prog = with_callbacks(FOR_EACH_MAIN.format(flags=0), FOR_EACH_CB.format(stop=99))

    def setup(runtime, maps, program):  # noqa: ANN001, ANN202
        for k in (3, 9, 20):
            maps[0].update(k, k * 100)

    vm = vm_run("sched_cls", prog, ipv4_udp(), maps=[HASH], setup=setup)
    assert vm.retval == (3 << 16) + (3 + 9 + 20) * 101


# -- ring buffers ------------------------------------------------------------------------------------------------------
RINGBUF = MapSpec("rb", 27, 0, 0, 4096)


@pytest.mark.kernel
def test_ringbuf_output_until_full_matches_kernel() -> None:
    """16-byte records take 24 bytes each: 170 fit in 4096 bytes, the 171st gets -EAGAIN."""
    lines = ["mov %r6, 0", "stdw [%r10-16], 1", "stdw [%r10-8], 2"]
    for _ in range(175):
        lines += ["ldmap %r1, 0", "mov %r2, %r10", "add %r2, -16", "mov %r3, 16", "mov %r4, 0", "call 130",
                  "jne %r0, 0, full", "add %r6, 1"]
    lines += ["full:", "mov %r7, %r0", "ldmap %r1, 0", "mov %r2, 0", "call 134", "lsh %r0, 16", "or %r6, %r0",
              "ldmap %r1, 0", "mov %r2, 3", "call 134", "lsh %r0, 40", "or %r6, %r0", "mov %r0, %r6",
              "and %r7, 0xff", "lsh %r7, 56", "or %r0, %r7", "exit"]
    prog = asm("\n".join(lines))
    vm, kernel = both("sched_cls", prog, ipv4_udp(), maps=[RINGBUF])
    assert_same(vm, kernel)
    assert vm.retval & 0xFFFF == 170
    assert len(vm.maps[0].drain()) == 170


@pytest.mark.kernel
@pytest.mark.parametrize("size,flags", [(100, 0), (4088, 0), (4089, 0), (5000, 0), (8, 1)])
@pytest.mark.parametrize("discard", [0, 1])
def test_ringbuf_reserve_submit_discard_match_kernel(size: int, flags: int, discard: int) -> None:
    prog = asm(f"""
        ldmap %r1, 0
        mov %r2, {size}
        mov %r3, {flags}
        call 131
        jeq %r0, 0, none
        stdw [%r0+0], 42
        mov %r1, %r0
        mov %r2, 0
        call {133 if discard else 132}
        ldmap %r1, 0
        mov %r2, 0
        call 134
        exit
        none:
        mov %r0, 0xbad
        exit
    """.replace("stdw [%r0+0], 42", "stdw [%r0+0], 42" if size >= 8 else "mov %r0, %r0"))
    vm, kernel = both("sched_cls", prog, ipv4_udp(), maps=[RINGBUF])
    assert_same(vm, kernel)
    if vm.retval != 0xBAD:
        assert vm.maps[0].drain() == ([] if discard else [(42).to_bytes(8, "little") + bytes(size - 8)])


def test_ringbuf_submit_refuses_a_forged_record() -> None:
    prog = asm("ldmap %r1, 0\nmov %r2, 16\nmov %r3, 0\ncall 131\nadd %r0, 8\nmov %r1, %r0\nmov %r2, 0\ncall 132\nexit")
    with pytest.raises(HelperError, match="is not an outstanding reservation"):
        vm_run("sched_cls", prog, ipv4_udp(), maps=[RINGBUF])
    with pytest.raises(HelperError, match="not a record reserved in a ring buffer"):
        vm_run("sched_cls", asm("mov %r1, %r10\nmov %r2, 0\ncall 132\nexit"), ipv4_udp(), maps=[RINGBUF])


@pytest.mark.kernel
@pytest.mark.parametrize("size,flags", [(16, 0), (5000, 0), (16, 1), (0x1000000, 0)])
def test_ringbuf_dynptr_matches_kernel(size: int, flags: int) -> None:
    prog = asm(f"""
        ldmap %r1, 0
        mov %r2, {size}
        mov %r3, {flags}
        mov %r4, %r10
        add %r4, -16
        call 198
        mov %r6, %r0
        stdw [%r10-24], 0x77
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        mov %r3, %r10
        add %r3, -24
        mov %r4, 8
        mov %r5, 0
        call 202
        lsh %r0, 8
        xor %r6, %r0
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        call 199
        ldmap %r1, 0
        mov %r2, 0
        call 134
        lsh %r0, 16
        xor %r0, %r6
        exit
    """)
    assert_same(*both("sched_cls", prog, ipv4_udp(), maps=[RINGBUF]))


# -- perf event output --------------------------------------------------------------------------------------------------
PERF = MapSpec("events", 4, 4, 4, 2)


def perf_prog(flags: int) -> Prog:
    return asm(f"""
        mov %r6, %r1
        lddw %r1, 0x0807060504030201
        stxdw [%r10-8], %r1
        mov %r1, %r6
        ldmap %r2, 0
        lddw %r3, {flags}
        mov %r4, %r10
        add %r4, -8
        mov %r5, 8
        call 25
        exit
    """)


@pytest.mark.kernel
@pytest.mark.parametrize("flags", [0, 1, 2, 0xFFFFFFFF, (16 << 32), (4096 << 32), (1 << 52)])
def test_perf_event_output_matches_kernel_when_strict(flags: int) -> None:
    """Nobody opened the perf slots: the kernel says -ENOENT (or -E2BIG/-EINVAL/-EFAULT first)."""
    vm = vm_run("sched_cls", perf_prog(flags), ipv4_udp(), maps=[PERF], options={"perf_strict": True, "ncpus": 1})
    kernel = kernel_run("sched_cls", perf_prog(flags), ipv4_udp(), maps=[PERF])
    if flags == 0xFFFFFFFF and kernel.retval == (-errno.E2BIG) & 0xFFFFFFFF:
        pytest.skip("BPF_F_CURRENT_CPU names a CPU past the 2 slots on this machine")
    assert_same(vm, kernel)


def test_perf_event_output_captures_records() -> None:
    vm = vm_run("sched_cls", perf_prog(1 | (14 << 32)), ipv4_udp(), maps=[PERF])
    assert vm.retval == 0
    assert vm.maps[0].records == [(1, bytes(range(1, 9)) + ipv4_udp()[:14])]
    assert vm.runtime.native_env.perf_records[0][1] == 1


# -- local dynptrs ---------------------------------------------------------------------------------------------------------
DYNPTR_LOCAL = """
    stw [%r10-4], 0
    ldmap %r1, 0
    mov %r2, %r10
    add %r2, -4
    call 1
    jeq %r0, 0, nomap
    mov %r7, %r0
    lddw %r1, 0x0706050403020100
    stxdw [%r7+0], %r1
    lddw %r1, 0x0f0e0d0c0b0a0908
    stxdw [%r7+8], %r1
    mov %r1, %r7
    mov %r2, {size}
    mov %r3, {flags}
    mov %r4, %r10
    add %r4, -16
    call 197
    mov %r6, %r0
    stdw [%r10-24], -1
    mov %r1, %r10
    add %r1, -24
    mov %r2, {rlen}
    mov %r3, %r10
    add %r3, -16
    lddw %r4, {roff}
    mov %r5, 0
    call 201
    lsh %r0, 8
    xor %r6, %r0
    stdw [%r10-32], 0x55
    mov %r1, %r10
    add %r1, -16
    lddw %r2, {woff}
    mov %r3, %r10
    add %r3, -32
    mov %r4, 2
    mov %r5, 0
    call 202
    lsh %r0, 16
    xor %r6, %r0
    mov %r1, %r10
    add %r1, -16
    lddw %r2, {doff}
    mov %r3, 4
    call 203
    jeq %r0, 0, nodata
    ldxw %r0, [%r0+0]
    lsh %r0, 32
    xor %r6, %r0
    nodata:
    ldxdw %r0, [%r10-24]
    xor %r0, %r6
    ldxdw %r1, [%r7+0]
    xor %r0, %r1
    exit
    nomap:
    mov %r0, 1
    exit
"""
MEM16 = MapSpec("mem", 2, 4, 16, 1)


@pytest.mark.kernel
@pytest.mark.parametrize("size,flags,roff,rlen,woff,doff", [
    (16, 0, 0, 8, 2, 4), (16, 0, 8, 8, 14, 12), (16, 0, 9, 8, 15, 13), (8, 0, 0, 8, 7, 5), (16, 1, 0, 8, 2, 4),
    (0, 0, 0, 0, 0, 0), (16, 0, 0xffffffff, 1, 0xfffffffe, 0xfffffffd),
])
def test_local_dynptrs_match_kernel(size: int, flags: int, roff: int, rlen: int, woff: int, doff: int) -> None:
    prog = asm(DYNPTR_LOCAL.format(size=size, flags=flags, roff=roff, rlen=rlen, woff=woff, doff=doff))
    vm, kernel = both("sched_cls", prog, ipv4_udp(), maps=[MEM16])
    assert_same(vm, kernel)
    assert map_value(vm) == map_value(kernel)


def test_dynptr_from_read_only_memory_is_read_only() -> None:
    rodata = MapSpec(".rodata", 2, 4, 16, 1, flags=128, initial=b"constant data!!\0", readonly=True)
    prog = asm("""
        ldmapval %r1, 0, 0
        mov %r2, 16
        mov %r3, 0
        mov %r4, %r10
        add %r4, -16
        call 197
        mov %r1, %r10
        add %r1, -16
        mov %r2, 0
        mov %r3, %r10
        add %r3, -24
        mov %r4, 1
        mov %r5, 0
        call 202
        exit
    """)
    assert vm_run("sched_cls", prog, ipv4_udp(), maps=[rodata]).retval == (-errno.EINVAL) & 0xFFFFFFFF


def test_forged_local_dynptr_faults() -> None:
    """A dynptr whose data points outside every region is a fault, never a host access."""
    prog = asm("""
        mov %r1, 0x1000
        stxdw [%r10-16], %r1
        lddw %r1, 0x0000000010000010
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -32
        mov %r2, 8
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        mov %r5, 0
        call 201
        exit
    """)
    with pytest.raises(HelperError, match="bpf_dynptr_read: dynptr memory"):
        vm_run("sched_cls", prog, ipv4_udp())


# -- memory safety under hostile arguments ----------------------------------------------------------------------------
def test_every_native_function_survives_hostile_arguments() -> None:
    """Random pointers, sizes and flags into every helper and kfunc: a result or a typed error, never a crash."""
    import random

    from bpfvm.errors import BpfvmError
    from bpfvm.interp import ProgramExit
    from helpers.maps import create_map
    from helpers.skb import make_skb_context

    rng = random.Random(1234)
    memory = Memory()
    runtime = Runtime(memory)
    specs = [ARRAY4, HASH, RINGBUF, PERF, PROG_ARRAY, MapSpec("q", 22, 0, 8, 4)]
    for spec in specs:
        runtime.add_map(spec, create_map(spec, memory))
    attach(runtime)
    ctx = make_skb_context(memory, runtime, "sched_cls", ipv4_udp(), None, 20)
    region = memory.add("scratch", 256)
    state = runtime.native_env
    interesting = [0, 1, 8, 16, 255, 4096, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 63, region.start, region.start + 250,
                   region.start - 8, ctx.address, runtime.stack.start, runtime.stack.end - 16,
                   int(state.ffi.cast("uintptr_t", state.env.skb)), runtime.map_pointer(specs[0]),
                   runtime.map_pointer(specs[2]), runtime.map_pointer(specs[1]), 0xFFFF_8880_0000_0000 + 7]
    functions = [(name, fn) for name, fn in list(runtime.helpers.items()) + list(runtime.kfuncs.items())]
    calls = 0
    for _ in range(40):
        for name, fn in functions:
            args = [rng.choice(interesting) if rng.random() < 0.8 else rng.getrandbits(64) for _ in range(5)]
            try:
                fn(runtime, *args)
            except (BpfvmError, ProgramExit):
                pass
            calls += 1
    assert calls > 2000
    ctx.release()
