"""Memory safety of JIT code, and the per-run state it shares with the Python wrapper.

Native code cannot raise a Python exception, so every bound program owns a small state block (an array of
u64 fields, allocated by `jit.engine`) through which it counts instructions, records faults and finds the
Python services (ctypes callbacks). A fault sets `F_ERROR` and the generated code returns at once up the BPF
call chain; the wrapper then raises the exception the interpreter would have raised.

Every load and store is checked against `Memory.native_table` (plain regions only) unless the program's aux
data marks it `proved_safe` or it addresses the current stack frame through an unmodified r10. The check is a
per-site cache of the index of the region last hit (re-validated against the live table, so a changed table
can never make it unsafe), then an out-of-line binary search (`@bpfvm_lookup`, in a support module shared
by all programs), then a call into Python's `Memory` for hooked regions (contexts) and for faults, which
therefore carry exactly the interpreter's `MemoryFault`.
"""

from __future__ import annotations

from typing import Callable, Protocol

# -- the per-run state: u64 fields ------------------------------------------------------------------------
(
    F_STEPS, F_LIMIT, F_LOOPS, F_ERROR, F_ERR_PC, F_ERR_ARG, F_TABLE, F_STACK_START, F_STACK_END, F_FRAME,
    F_CONSTS, F_SITES, F_HELPERS, F_CB_R10, F_CB_DEPTH,
    F_SVC_LOAD, F_SVC_STORE, F_SVC_ATOMIC, F_SVC_CALLX, F_SVC_LDABS,
) = range(20)
STATE_FIELDS = 20

# F_ERROR codes: why the generated code unwound.
E_NONE, E_PYTHON, E_LIMIT, E_DEPTH, E_FELL, E_CALLX, E_BTF, E_NATIVE = range(8)

# The Python services (callbacks whose addresses are in the F_SVC_* fields) and their C signatures. Arguments
# are passed directly: reading them back from the state costs more than the call itself.
SERVICES = {
    F_SVC_LOAD: ("addr", "size", "signed", "pc"),
    F_SVC_STORE: ("addr", "size", "value", "pc"),
    F_SVC_ATOMIC: ("addr", "size", "op", "value", "expected", "pc"),
    F_SVC_CALLX: ("target", "r1", "r2", "r3", "r4", "r5", "pc"),
    F_SVC_LDABS: ("ctx", "offset", "size", "pc"),
}


# Atomic operation codes passed to the slow path and the service.
A_ADD, A_OR, A_AND, A_XOR, A_XCHG, A_CMPXCHG = range(6)
ATOMIC_NAMES = ("add", "or", "and", "xor", "xchg", "cmpxchg")
_RMW = {A_ADD: "add", A_OR: "or", A_AND: "and", A_XOR: "xor", A_XCHG: "xchg"}

# Scoped no-alias metadata: the VM's private memory (state, region table, site caches) never overlaps the
# regions a program touches, so LLVM may keep counters in registers across program stores.
VM = "!alias.scope !3, !noalias !4"
BPF = "!alias.scope !4, !noalias !3"
ALIAS_METADATA = """\
!0 = distinct !{!0, !"bpfvm"}
!1 = distinct !{!1, !0, !"vm"}
!2 = distinct !{!2, !0, !"bpf"}
!3 = !{!1}
!4 = !{!2}
"""


class Builder(Protocol):
    """What the guards need from the function being emitted (see `jit.lower.FunctionBuilder`)."""

    def tmp(self) -> str: ...

    def label(self) -> str: ...

    def emit(self, line: str) -> None: ...

    def start(self, label: str) -> None: ...

    def sload(self, field: int) -> str: ...

    def sstore(self, field: int, value: str) -> None: ...

    def call(self, text: str) -> None: ...

    def unwind_if_error(self) -> str: ...


def _ity(size: int) -> str:
    return f"i{size * 8}"


def _narrow(value: str, size: int) -> str:
    """The instruction text that takes the low `size` bytes of an i64."""
    return f"add i64 {value}, 0" if size == 8 else f"trunc i64 {value} to {_ity(size)}"


def _site_pointer(b: Builder, site: int) -> str:
    sites = b.sload(F_SITES)
    base = b.tmp()
    b.emit(f"{base} = inttoptr i64 {sites} to ptr")
    ptr = b.tmp()
    b.emit(f"{ptr} = getelementptr i32, ptr {base}, i64 {site}")
    return ptr


# The current function's frame, [r10 - FRAME_WINDOW, r10), lies inside the stack region on every run (the
# interpreter's own r10 fast path relies on it too), so an access inside it needs no table.
FRAME_WINDOW = 512


def _frame_check(b: Builder, addr: str, size: int, fast: str) -> None:
    """Branch to `fast` if [addr, addr+size) lies in the current frame; continue in a fresh block otherwise.

    Pure arithmetic on r10 (`%a10`, fixed for the function): pointers spilled to the stack and reloaded, which
    the lowering cannot prove, mostly point into the frame, and this costs three instructions, not a lookup.
    """
    low, off, inside, other = b.tmp(), b.tmp(), b.tmp(), b.label()
    b.emit(f"{low} = sub i64 %a10, {FRAME_WINDOW}")
    b.emit(f"{off} = sub i64 {addr}, {low}")
    b.emit(f"{inside} = icmp ule i64 {off}, {FRAME_WINDOW - size}")
    b.emit(f"br i1 {inside}, label %{fast}, label %{other}")
    b.start(other)


def _cached_check(b: Builder, addr: str, size: int, write: bool, site_ptr: str, fast: str, slow: str) -> None:
    """Branch to `fast` if [addr, addr+size) is in the current frame, or in the region cached for this site
    (and that region is writable, for a write)."""
    _frame_check(b, addr, size, fast)
    table = b.sload(F_TABLE)
    tptr, count, rraw, regions, idx32, idx = (b.tmp() for _ in range(6))
    b.emit(f"{tptr} = inttoptr i64 {table} to ptr")
    b.emit(f"{count} = load i64, ptr {tptr}, align 8, {VM}")
    rpp = b.tmp()
    b.emit(f"{rpp} = getelementptr i64, ptr {tptr}, i64 2")
    b.emit(f"{rraw} = load i64, ptr {rpp}, align 8, {VM}")
    b.emit(f"{regions} = inttoptr i64 {rraw} to ptr")
    b.emit(f"{idx32} = load i32, ptr {site_ptr}, align 4, {VM}")
    b.emit(f"{idx} = zext i32 {idx32} to i64")
    inb = b.tmp()
    b.emit(f"{inb} = icmp ult i64 {idx}, {count}")
    check = b.label()
    b.emit(f"br i1 {inb}, label %{check}, label %{slow}")
    b.start(check)
    k3, rp, start, ep, end, off, length, c1, rem, c2, ok = (b.tmp() for _ in range(11))
    b.emit(f"{k3} = mul i64 {idx}, 3")
    b.emit(f"{rp} = getelementptr i64, ptr {regions}, i64 {k3}")
    b.emit(f"{start} = load i64, ptr {rp}, align 8, {VM}")
    b.emit(f"{ep} = getelementptr i64, ptr {rp}, i64 1")
    b.emit(f"{end} = load i64, ptr {ep}, align 8, {VM}")
    b.emit(f"{off} = sub i64 {addr}, {start}")
    b.emit(f"{length} = sub i64 {end}, {start}")
    b.emit(f"{c1} = icmp ult i64 {off}, {length}")
    b.emit(f"{rem} = sub i64 {length}, {off}")
    b.emit(f"{c2} = icmp uge i64 {rem}, {size}")
    b.emit(f"{ok} = and i1 {c1}, {c2}")
    if write:
        wp, wv, wn, ok2 = (b.tmp() for _ in range(4))
        b.emit(f"{wp} = getelementptr i64, ptr {rp}, i64 2")
        b.emit(f"{wv} = load i64, ptr {wp}, align 8, {VM}")
        b.emit(f"{wn} = icmp ne i64 {wv}, 0")
        b.emit(f"{ok2} = and i1 {ok}, {wn}")
        ok = ok2
    b.emit(f"br i1 {ok}, label %{fast}, label %{slow}")


def emit_load(b: Builder, addr: str, size: int, signed: bool, pc: int, direct: bool) -> str:
    """Load `size` bytes at `addr` (an i64 SSA value); returns the i64 result, zero- or sign-extended."""
    ext = "sext" if signed else "zext"
    ty = _ity(size)
    if direct:
        p, v, r = b.tmp(), b.tmp(), b.tmp()
        b.emit(f"{p} = inttoptr i64 {addr} to ptr")
        b.emit(f"{v} = load {ty}, ptr {p}, align 1, {BPF}")
        if size == 8:
            return v
        b.emit(f"{r} = {ext} {ty} {v} to i64")
        return r
    site = _site_pointer(b, pc)
    fast, slow, join = b.label(), b.label(), b.label()
    _cached_check(b, addr, size, False, site, fast, slow)
    b.start(fast)
    p, v, vf = b.tmp(), b.tmp(), b.tmp()
    b.emit(f"{p} = inttoptr i64 {addr} to ptr")
    b.emit(f"{v} = load {ty}, ptr {p}, align 1, {BPF}")
    if size == 8:
        b.emit(f"{vf} = add i64 {v}, 0")
    else:
        b.emit(f"{vf} = {ext} {ty} {v} to i64")
    b.emit(f"br label %{join}")
    b.start(slow)
    vs = b.tmp()
    b.call(f"{vs} = call i64 @bpfvm_ld_slow(ptr %st, i64 {addr}, i64 {size}, i64 {int(signed)}, ptr {site}, i64 {pc})")
    slow_end = b.unwind_if_error()
    b.emit(f"br label %{join}")
    b.start(join)
    out = b.tmp()
    b.emit(f"{out} = phi i64 [{vf}, %{fast}], [{vs}, %{slow_end}]")
    return out


def emit_store(b: Builder, addr: str, size: int, value: str, pc: int, direct: bool) -> None:
    """Store the low `size` bytes of the i64 `value` at `addr`."""
    ty = _ity(size)

    def native() -> None:
        p = b.tmp()
        b.emit(f"{p} = inttoptr i64 {addr} to ptr")
        v = value
        if size != 8:
            v = b.tmp()
            b.emit(f"{v} = trunc i64 {value} to {ty}")
        b.emit(f"store {ty} {v}, ptr {p}, align 1, {BPF}")

    if direct:
        native()
        return
    site = _site_pointer(b, pc)
    fast, slow, join = b.label(), b.label(), b.label()
    _cached_check(b, addr, size, True, site, fast, slow)
    b.start(fast)
    native()
    b.emit(f"br label %{join}")
    b.start(slow)
    b.call(f"call void @bpfvm_st_slow(ptr %st, i64 {addr}, i64 {size}, i64 {value}, ptr {site}, i64 {pc})")
    b.unwind_if_error()
    b.emit(f"br label %{join}")
    b.start(join)


def emit_atomic(b: Builder, addr: str, size: int, op: int, value: str, expected: str, pc: int, direct: bool) -> str:
    """An atomic read-modify-write; returns the old value, zero-extended (the interpreter's `Memory.atomic`).

    The fast path (cached region, writable, naturally aligned) is a real atomicrmw/cmpxchg; anything else goes
    to `@bpfvm_amo_slow`, which does a plain read-modify-write (the VM is single-threaded) or asks Python.
    """
    ty = _ity(size)
    fast, slow, join = b.label(), b.label(), b.label()
    site = "null"
    check = b.label()
    if direct:
        b.emit(f"br label %{check}")
    else:
        site = _site_pointer(b, pc)
        _cached_check(b, addr, size, True, site, check, slow)
    b.start(check)
    low, aligned = b.tmp(), b.tmp()
    b.emit(f"{low} = and i64 {addr}, {size - 1}")
    b.emit(f"{aligned} = icmp eq i64 {low}, 0")
    b.emit(f"br i1 {aligned}, label %{fast}, label %{slow}")
    b.start(fast)
    p, v, old, oldx = b.tmp(), b.tmp(), b.tmp(), b.tmp()
    b.emit(f"{p} = inttoptr i64 {addr} to ptr")
    b.emit(f"{v} = {_narrow(value, size)}")
    if op == A_CMPXCHG:
        e, pair = b.tmp(), b.tmp()
        b.emit(f"{e} = {_narrow(expected, size)}")
        b.emit(f"{pair} = cmpxchg ptr {p}, {ty} {e}, {ty} {v} seq_cst seq_cst, align {size}, {BPF}")
        b.emit(f"{old} = extractvalue {{ {ty}, i1 }} {pair}, 0")
    else:
        b.emit(f"{old} = atomicrmw {_RMW[op]} ptr {p}, {ty} {v} seq_cst, align {size}, {BPF}")
    b.emit(f"{oldx} = add i64 {old}, 0" if size == 8 else f"{oldx} = zext {ty} {old} to i64")
    b.emit(f"br label %{join}")
    b.start(slow)
    vs = b.tmp()
    b.call(
        f"{vs} = call i64 @bpfvm_amo_slow(ptr %st, i64 {addr}, i64 {size}, i64 {op}, i64 {value}, "
        f"i64 {expected}, ptr {site}, i64 {pc})"
    )
    slow_end = b.unwind_if_error()
    b.emit(f"br label %{join}")
    b.start(join)
    out = b.tmp()
    b.emit(f"{out} = phi i64 [{oldx}, %{fast}], [{vs}, %{slow_end}]")
    return out


# -- out-of-line support functions, one copy per module ---------------------------------------------------
def _field(name: str, field: int) -> str:
    return f"%{name}.p = getelementptr i64, ptr %st, i64 {field}"


def _svc_call(field: int, args: list[str]) -> str:
    """IR lines (in a support function) calling the Python service in `field`; the result is in %svc.r."""
    return "\n".join([
        f"  %svc.p = getelementptr i64, ptr %st, i64 {field}",
        f"  %svc.i = load i64, ptr %svc.p, align 8, {VM}",
        "  %svc.f = inttoptr i64 %svc.i to ptr",
        f"  %svc.r = call i64 %svc.f({', '.join('i64 ' + a for a in args)})",
    ])


def _sized_switch(prefix: str, body: Callable[[int], list[str]], join: str) -> str:
    """A switch over %n (1, 2, 4, 8) whose cases are `body(size)` and then branch to `join`."""
    cases = " ".join(f"i64 {size}, label %{prefix}{size}" for size in (1, 2, 4))
    out = [f"  switch i64 %n, label %{prefix}8 [ {cases} ]"]
    for size in (1, 2, 4, 8):
        out.append(f"{prefix}{size}:")
        out.extend("  " + line for line in body(size))
        out.append(f"  br label %{join}")
    return "\n".join(out)


# The out-of-line support functions live in one module per process (compiled once, cached on disk like
# programs) whose symbols are registered with LLVM, so program objects call them directly by name.
SUPPORT_SYMBOLS = ("bpfvm_ld_slow", "bpfvm_st_slow", "bpfvm_amo_slow", "bpfvm_fault")


def support_declarations() -> str:
    """What a program module declares to call the shared support functions."""
    return """
declare i64 @bpfvm_ld_slow(ptr, i64, i64, i64, ptr, i64) cold nounwind
declare void @bpfvm_st_slow(ptr, i64, i64, i64, ptr, i64) cold nounwind
declare i64 @bpfvm_amo_slow(ptr, i64, i64, i64, i64, i64, ptr, i64) cold nounwind
declare void @bpfvm_fault(ptr, i64, i64, i64) cold nounwind
"""


def support_ir() -> str:
    """The support module: region lookup, the slow paths of loads, stores and atomics, and fault recording."""
    lookup = f"""
define internal i64 @bpfvm_lookup(ptr %st, i64 %a, i64 %n, i64 %w) noinline nounwind {{
entry:
  {_field("t", F_TABLE)}
  %t.i = load i64, ptr %t.p, align 8, {VM}
  %t = inttoptr i64 %t.i to ptr
  %cnt = load i64, ptr %t, align 8, {VM}
  %rpp = getelementptr i64, ptr %t, i64 2
  %r.i = load i64, ptr %rpp, align 8, {VM}
  %r = inttoptr i64 %r.i to ptr
  br label %loop
loop:
  %lo = phi i64 [0, %entry], [%lo2, %body]
  %hi = phi i64 [%cnt, %entry], [%hi2, %body]
  %more = icmp ult i64 %lo, %hi
  br i1 %more, label %body, label %done
body:
  %sum = add i64 %lo, %hi
  %mid = lshr i64 %sum, 1
  %m3 = mul i64 %mid, 3
  %sp = getelementptr i64, ptr %r, i64 %m3
  %s = load i64, ptr %sp, align 8, {VM}
  %le = icmp ule i64 %s, %a
  %mid1 = add i64 %mid, 1
  %lo2 = select i1 %le, i64 %mid1, i64 %lo
  %hi2 = select i1 %le, i64 %hi, i64 %mid
  br label %loop
done:
  %none = icmp eq i64 %lo, 0
  br i1 %none, label %miss, label %check
check:
  %k = sub i64 %lo, 1
  %k3 = mul i64 %k, 3
  %rp = getelementptr i64, ptr %r, i64 %k3
  %start = load i64, ptr %rp, align 8, {VM}
  %ep = getelementptr i64, ptr %rp, i64 1
  %end = load i64, ptr %ep, align 8, {VM}
  %wp = getelementptr i64, ptr %rp, i64 2
  %wr = load i64, ptr %wp, align 8, {VM}
  %off = sub i64 %a, %start
  %len = sub i64 %end, %start
  %c1 = icmp ult i64 %off, %len
  %rem = sub i64 %len, %off
  %c2 = icmp uge i64 %rem, %n
  %in = and i1 %c1, %c2
  %ro = icmp eq i64 %wr, 0
  %wants = icmp ne i64 %w, 0
  %denied = and i1 %ro, %wants
  %allowed = xor i1 %denied, true
  %ok = and i1 %in, %allowed
  br i1 %ok, label %hit, label %miss
hit:
  ret i64 %k
miss:
  ret i64 -1
}}
"""

    def load_case(size: int) -> list[str]:
        ty = _ity(size)
        lines = [f"%v{size} = load {ty}, ptr %p, align 1, {BPF}"]
        if size == 8:
            return lines + ["%x8 = add i64 %v8, 0"]
        return lines + [
            f"%z{size} = zext {ty} %v{size} to i64",
            f"%s{size} = sext {ty} %v{size} to i64",
            f"%x{size} = select i1 %signed, i64 %s{size}, i64 %z{size}",
        ]

    ld_slow = f"""
define i64 @bpfvm_ld_slow(ptr %st, i64 %a, i64 %n, i64 %sx, ptr %site, i64 %pc) noinline cold {{
entry:
  %k = call i64 @bpfvm_lookup(ptr %st, i64 %a, i64 %n, i64 0)
  %found = icmp sge i64 %k, 0
  br i1 %found, label %native, label %py
native:
  %k32 = trunc i64 %k to i32
  store i32 %k32, ptr %site, align 4, {VM}
  %p = inttoptr i64 %a to ptr
  %signed = icmp ne i64 %sx, 0
{_sized_switch("L", load_case, "done")}
done:
  %v = phi i64 [%x1, %L1], [%x2, %L2], [%x4, %L4], [%x8, %L8]
  ret i64 %v
py:
{_svc_call(F_SVC_LOAD, ["%a", "%n", "%sx", "%pc"])}
  ret i64 %svc.r
}}
"""

    def store_case(size: int) -> list[str]:
        ty = _ity(size)
        if size == 8:
            return [f"store i64 %v, ptr %p, align 1, {BPF}"]
        return [f"%t{size} = trunc i64 %v to {ty}", f"store {ty} %t{size}, ptr %p, align 1, {BPF}"]

    st_slow = f"""
define void @bpfvm_st_slow(ptr %st, i64 %a, i64 %n, i64 %v, ptr %site, i64 %pc) noinline cold {{
entry:
  %k = call i64 @bpfvm_lookup(ptr %st, i64 %a, i64 %n, i64 1)
  %found = icmp sge i64 %k, 0
  br i1 %found, label %native, label %py
native:
  %k32 = trunc i64 %k to i32
  store i32 %k32, ptr %site, align 4, {VM}
  %p = inttoptr i64 %a to ptr
{_sized_switch("S", store_case, "done")}
done:
  ret void
py:
{_svc_call(F_SVC_STORE, ["%a", "%n", "%v", "%pc"])}
  ret void
}}
"""

    def rmw_case(size: int) -> list[str]:
        ty = _ity(size)
        return [
            f"%m{size} = load {ty}, ptr %p, align 1, {BPF}",
            f"%v{size} = {'add' if size == 8 else 'trunc'} i64 %v{', 0' if size == 8 else ' to ' + ty}",
            f"%e{size} = {'add' if size == 8 else 'trunc'} i64 %e{', 0' if size == 8 else ' to ' + ty}",
            f"%add{size} = add {ty} %m{size}, %v{size}",
            f"%or{size} = or {ty} %m{size}, %v{size}",
            f"%and{size} = and {ty} %m{size}, %v{size}",
            f"%xor{size} = xor {ty} %m{size}, %v{size}",
            f"%eq{size} = icmp eq {ty} %m{size}, %e{size}",
            f"%cx{size} = select i1 %eq{size}, {ty} %v{size}, {ty} %m{size}",
            f"%n1{size} = select i1 %is_add, {ty} %add{size}, {ty} %cx{size}",
            f"%n2{size} = select i1 %is_or, {ty} %or{size}, {ty} %n1{size}",
            f"%n3{size} = select i1 %is_and, {ty} %and{size}, {ty} %n2{size}",
            f"%n4{size} = select i1 %is_xor, {ty} %xor{size}, {ty} %n3{size}",
            f"%n5{size} = select i1 %is_xchg, {ty} %v{size}, {ty} %n4{size}",
            f"store {ty} %n5{size}, ptr %p, align 1, {BPF}",
            f"%o{size} = add i64 %m8, 0" if size == 8 else f"%o{size} = zext {ty} %m{size} to i64",
        ]

    amo_slow = f"""
define i64 @bpfvm_amo_slow(ptr %st, i64 %a, i64 %n, i64 %op, i64 %v, i64 %e, ptr %site, i64 %pc) noinline cold {{
entry:
  %k = call i64 @bpfvm_lookup(ptr %st, i64 %a, i64 %n, i64 1)
  %found = icmp sge i64 %k, 0
  br i1 %found, label %native, label %py
native:
  %has_site = icmp ne ptr %site, null
  br i1 %has_site, label %remember, label %rmw
remember:
  %k32 = trunc i64 %k to i32
  store i32 %k32, ptr %site, align 4, {VM}
  br label %rmw
rmw:
  %p = inttoptr i64 %a to ptr
  %is_add = icmp eq i64 %op, {A_ADD}
  %is_or = icmp eq i64 %op, {A_OR}
  %is_and = icmp eq i64 %op, {A_AND}
  %is_xor = icmp eq i64 %op, {A_XOR}
  %is_xchg = icmp eq i64 %op, {A_XCHG}
{_sized_switch("A", rmw_case, "done")}
done:
  %o = phi i64 [%o1, %A1], [%o2, %A2], [%o4, %A4], [%o8, %A8]
  ret i64 %o
py:
{_svc_call(F_SVC_ATOMIC, ["%a", "%n", "%op", "%v", "%e", "%pc"])}
  ret i64 %svc.r
}}
"""

    fault = f"""
define void @bpfvm_fault(ptr %st, i64 %code, i64 %pc, i64 %arg) noinline cold nounwind {{
  {_field("e", F_ERROR)}
  store i64 %code, ptr %e.p, align 8, {VM}
  {_field("c", F_ERR_PC)}
  store i64 %pc, ptr %c.p, align 8, {VM}
  {_field("g", F_ERR_ARG)}
  store i64 %arg, ptr %g.p, align 8, {VM}
  ret void
}}
"""
    return lookup + ld_slow + st_slow + amo_slow + fault + ALIAS_METADATA

