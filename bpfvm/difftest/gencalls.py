"""Generator statements that call out: helpers (deterministic ones: prandom with a fixed seed, the fixed clock,
csum_diff, trace_printk, skb/xdp_load_bytes, the packet-changing ones), map lookup/update/delete (a lookup opens a block where the value
is usable after the NULL check), ring buffers, bpf-to-bpf calls and dynptr kfuncs (slices with and without a
buffer, size, is_null, is_rdonly, adjust)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import isa
from .chooser import imm32
from .genprog import Call, FuncAddr, KfuncCall, MapLoad
from .genstate import GState, add_imm, alu, call, jmp, mov, movr, st as st_imm, stx

if TYPE_CHECKING:
    from .programs import Fn, Generator

MAP_LOOKUP, MAP_UPDATE, MAP_DELETE = 1, 2, 3
KTIME, PRINTK, PRANDOM, SMP_ID = 5, 6, 7, 8
SKB_LOAD_BYTES, CSUM_DIFF, XDP_LOAD_BYTES = 26, 28, 189
RB_OUTPUT, RB_RESERVE, RB_SUBMIT, RB_DISCARD = 130, 131, 132, 133
BPF_LOOP = 181
SKB_CHANGE_TAIL, SKB_CHANGE_HEAD, SKB_ADJUST_ROOM = 38, 43, 50
XDP_ADJUST_HEAD, XDP_ADJUST_META, XDP_ADJUST_TAIL = 44, 54, 65
# bpf_skb_adjust_room flags worth trying: encapsulations, decapsulations, their bad combinations and unknown bits
ADJUST_ROOM_FLAGS = (0, 1, 1 << 1, (1 << 1) | (1 << 4), (1 << 2) | (1 << 3), (1 << 1) | (1 << 2), 1 << 5,
                     (1 << 1) | (1 << 6) | (14 << 56), 1 << 7, 1 << 8, (1 << 7) | (1 << 8), 1 << 9)
PRINTK_FORMATS = (b"%d\n", b"v=%u %x\n", b"%lld %llu %llx\n", b"hi\n", b"%llx\n")


def _can_call(fn: "Fn", st: GState) -> bool:
    return not fn.no_calls


def _fill(g: "Generator", fn: "Fn", st: GState, off: int, size: int) -> None:
    """Initialise `size` bytes of stack at `off` (8-byte aligned) with stores of scalars or immediates."""
    pos = off
    while pos < off + size:
        width = 8 if off + size - pos >= 8 else 4 if off + size - pos >= 4 else 1
        if g.ch.chance(0.5) and st.scalars():
            fn.code.emit(stx(width, 10, g.ch.pick(st.scalars()), pos))
        else:
            fn.code.emit(st_imm(width, 10, pos, imm32(g.ch)))
        st.write_stack(pos, width)
        pos += width


def _ptr(fn: "Fn", st: GState, reg: int, off: int) -> None:
    """reg = r10 + off: the register no longer holds a scalar."""
    fn.code.emit(movr(reg, 10), add_imm(reg, off))
    st.regs.pop(reg, None)


def _map(fn: "Fn", st: GState, m: int) -> None:
    fn.code.items.append(MapLoad(1, m))
    st.regs.pop(1, None)


def _arg_scalar(g: "Generator", fn: "Fn", st: GState, reg: int, *, small: bool = False) -> None:
    """Put a scalar argument in `reg`: a constant or a copy of some scalar (masked when it must be small)."""
    if st.scalars() and g.ch.chance(0.5):
        fn.code.emit(movr(reg, g.ch.pick(st.scalars())))
        if small:
            fn.code.emit(alu(isa.AND, reg, imm=g.ch.pick((0x3F, 0xFF, 0x7))))
    else:
        fn.code.emit(mov(reg, g.ch.pick((0, 1, 2, 12, 14, 40, 100)) if small else imm32(g.ch)))
    st.regs[reg] = "s"


def s_pure_helper(g: "Generator", fn: "Fn", st: GState) -> bool:
    """prandom, ktime, smp_processor_id, csum_diff, trace_printk: deterministic under the diff options."""
    if not _can_call(fn, st):
        return False
    ch = g.ch
    options = [("csum", 2.0 if g.cfg.prog_type != "socket_filter" else 0)]
    if not g.cfg.kernel_safe:
        options += [("prandom", 2.0), ("ktime", 1.0), ("smp", 0.5), ("printk", 1.5 if fn.is_main else 0)]
    if not any(w for _, w in options):
        return False
    kind = ch.weighted(options)
    if kind in ("prandom", "ktime", "smp"):
        fn.code.emit(call({"prandom": PRANDOM, "ktime": KTIME, "smp": SMP_ID}[kind]))
        st.clobber_call()
        return True
    if kind == "csum":
        lo, n = fn.areas["val"]
        a, b = 4 * ch.between(0, 4), 4 * ch.between(0, 4)
        _fill(g, fn, st, lo, max(a, b, 8))
        for reg, size in ((1, a), (3, b)):
            if size:
                _ptr(fn, st, reg, lo)
            else:
                fn.code.emit(mov(reg, 0))
        fn.code.emit(mov(2, a), mov(4, b))
        _arg_scalar(g, fn, st, 5)
        fn.code.emit(call(CSUM_DIFF))
        st.clobber_call()
        return True
    fmt = ch.pick(PRINTK_FORMATS) + b"\0"
    lo, n = fn.areas["buf"]
    padded = fmt + bytes(-len(fmt) % 8)
    for i in range(0, len(padded), 8):
        fn.code.emit(*isa.lddw_pair(1, int.from_bytes(padded[i:i + 8], "little")), stx(8, 10, 1, lo + i))
        st.write_stack(lo + i, 8)
        st.regs[1] = "s"
    args = [r for r in st.scalars() if r not in (1, 2)]
    for reg in (3, 4, 5):
        if args and ch.chance(0.6):
            src = ch.pick(args)
            if src != reg:
                fn.code.emit(movr(reg, src))
        else:
            fn.code.emit(mov(reg, imm32(ch)))
    _ptr(fn, st, 1, lo)
    fn.code.emit(mov(2, len(fmt)), call(PRINTK))
    st.clobber_call()
    return True


def s_load_bytes(g: "Generator", fn: "Fn", st: GState) -> bool:
    """bpf_skb_load_bytes / bpf_xdp_load_bytes into the stack buffer (which is then initialised)."""
    t = g.cfg.prog_type
    if not fn.is_main or not _can_call(fn, st) or st.regs.get(6) != "ctx":
        return False
    lo, n = fn.areas["buf"]
    size = g.ch.pick((1, 2, 4, 8, 14, 20, n))
    if t == "xdp" and g.cfg.kernel_safe:
        # a failing bpf_xdp_load_bytes leaves the buffer as it was (bpf_skb_load_bytes zeroes it), and the
        # kernel's stack is not zeroed: fill it first, so its bytes are the same everywhere either way
        _fill(g, fn, st, lo, (size + 7) // 8 * 8)
    fn.code.emit(movr(1, 6))
    st.regs.pop(1, None)
    _arg_scalar(g, fn, st, 2, small=True)
    _ptr(fn, st, 3, lo)
    fn.code.emit(mov(4, size), call(XDP_LOAD_BYTES if t == "xdp" else SKB_LOAD_BYTES))
    st.clobber_call()
    st.write_stack(lo, size)
    return True


def s_pkt_change(g: "Generator", fn: "Fn", st: GState) -> bool:
    """A helper that moves or resizes the packet (skb adjust_room / change_head / change_tail, xdp adjust_head /
    tail / meta), with lengths and flags that reach its error paths too; every packet pointer is gone after it."""
    t = g.cfg.prog_type
    if t not in ("sched_cls", "xdp") or not fn.is_main or not _can_call(fn, st) or st.regs.get(6) != "ctx":
        return False
    ch = g.ch
    fn.code.emit(movr(1, 6))
    if t == "xdp":
        helper = ch.pick((XDP_ADJUST_HEAD, XDP_ADJUST_TAIL, XDP_ADJUST_META))
        fn.code.emit(mov(2, ch.pick((-64, -14, -8, -4, 0, 4, 8, 14, 20, 100, -4000))))
    else:
        helper = ch.pick((SKB_ADJUST_ROOM, SKB_ADJUST_ROOM, SKB_CHANGE_HEAD, SKB_CHANGE_TAIL))
        if helper == SKB_ADJUST_ROOM:
            fn.code.emit(mov(2, ch.pick((-40, -20, -8, -1, 0, 4, 8, 14, 20, 40, 5000))),
                         mov(3, ch.pick((0, 1, 1, 2))), *isa.lddw_pair(4, ch.pick(ADJUST_ROOM_FLAGS)))
        else:
            fn.code.emit(mov(2, ch.pick((0, 1, 8, 14, 34, 60, 100, 1500, 70000))), mov(3, 0 if ch.chance(0.9) else 1))
    fn.code.emit(call(helper))
    st.clobber_call()
    # packet pointers, and slices of the context's dynptr, which point into the packet too
    for reg in [r for r, k in st.regs.items() if k in ("pkt", "end") or k.startswith(("pkt:", "end:", "mem:"))]:
        del st.regs[reg]
    for slot in [o for o, k in st.spills.items() if k in ("pkt", "end")]:
        del st.spills[slot]
        st.init -= set(range(slot, slot + 8))
    st.pkt = 0
    return True


def _key(g: "Generator", fn: "Fn", st: GState, m: int) -> None:
    """Write a key of map `m` at the key slot: mostly small integers, sometimes from a scalar."""
    mdef = g.maps[m]
    lo, _ = fn.areas["key"]
    size = mdef.key_size
    if st.scalars() and g.ch.chance(0.4):
        r = g.ch.pick(st.scalars())
        fn.code.emit(stx(size, 10, r, lo))
    else:
        limit = mdef.max_entries if mdef.type == "array" else 16
        fn.code.emit(st_imm(size, 10, lo, g.ch.between(0, limit) if g.ch.chance(0.9) else imm32(g.ch)))
    st.write_stack(lo, size)


def s_map(g: "Generator", fn: "Fn", st: GState) -> bool:
    kv = [i for i, m in enumerate(g.maps) if m.type != "ringbuf"]
    if not kv or not _can_call(fn, st):
        return False
    ch = g.ch
    m = ch.pick(kv)
    op = ch.weighted([("lookup", 4), ("update", 2), ("delete", 1 if g.maps[m].type == "hash" else 0)])
    _key(g, fn, st, m)
    klo, _ = fn.areas["key"]
    code = fn.code
    _map(fn, st, m)
    _ptr(fn, st, 2, klo)
    if op == "update":
        vlo, _ = fn.areas["val"]
        _fill(g, fn, st, vlo, g.maps[m].value_size)
        _ptr(fn, st, 3, vlo)
        code.emit(mov(4, ch.pick((0, 0, 1, 2))))
        code.emit(call(MAP_UPDATE))
        st.clobber_call()
        return True
    if op == "delete":
        code.emit(call(MAP_DELETE))
        st.clobber_call()
        return True
    code.emit(call(MAP_LOOKUP))
    st.clobber_call(None)
    _when_not_null(g, fn, st, f"mv:{g.maps[m].value_size}", 4)
    return True


def s_ringbuf(g: "Generator", fn: "Fn", st: GState) -> bool:
    rbs = [i for i, m in enumerate(g.maps) if m.type == "ringbuf"]
    if not rbs or not _can_call(fn, st):
        return False
    ch = g.ch
    rb = ch.pick(rbs)
    size = ch.pick((8, 16, 24))
    code = fn.code
    if ch.chance(0.5):
        vlo, _ = fn.areas["val"]
        _fill(g, fn, st, vlo, size)
        _map(fn, st, rb)
        _ptr(fn, st, 2, vlo)
        code.emit(mov(3, size), mov(4, ch.pick((0, 1, 2))), call(RB_OUTPUT))
        st.clobber_call()
        return True
    # reserve; if NULL skip; fill the record from a callee-saved scalar or immediates; submit or discard
    _map(fn, st, rb)
    code.emit(mov(2, size), mov(3, 0), call(RB_RESERVE))
    st.clobber_call(None)
    skip = code.new_label()
    code.jump(jmp(isa.JEQ, 0, imm=0), skip)
    for off in range(0, size, 8):
        if st.scalars() and ch.chance(0.5):
            code.emit(stx(8, 0, ch.pick(st.scalars()), off))
        else:
            code.emit(st_imm(8, 0, off, imm32(ch)))
    code.emit(movr(1, 0), mov(2, ch.pick((0, 1, 2))), call(ch.pick((RB_SUBMIT, RB_SUBMIT, RB_DISCARD))))
    code.place(skip)
    st.clobber_call(None)
    return True


def s_bpf_loop(g: "Generator", fn: "Fn", st: GState) -> bool:
    """bpf_loop(n, callback, ctx, flags): a callback subprogram runs n times with a pointer to an initialised
    8-byte slot of this frame. Usually flags 0 (the loop is then inlined after verification); now and then
    bad flags or too many iterations, which the helper refuses."""
    callbacks = [i for i in range(fn.index + 1, len(g.subs)) if g.subs[i].callback and g.subs[i].level > fn.level]
    # the verifier walks a callback once per state it is called in: not inside a loop, and twice at most
    if not callbacks or not _can_call(fn, st) or fn.loops or g.loop_calls >= 2:
        return False
    g.loop_calls += 1
    ch = g.ch
    lo, n = fn.areas["general"]
    off = lo + 8 * ch.between(0, n // 8 - 1)
    if not st.stack_init(off, 8):
        _fill(g, fn, st, off, 8)
    fn.code.emit(mov(1, ch.pick((0, 1, 2, 3, 5, 8, 8, (1 << 23) + 1))))
    fn.code.items.append(FuncAddr(2, ch.pick(callbacks)))
    _ptr(fn, st, 3, off)
    fn.code.emit(mov(4, 0 if ch.chance(0.9) else 1), call(BPF_LOOP))
    st.clobber_call()
    return True


def s_call_sub(g: "Generator", fn: "Fn", st: GState) -> bool:
    """Call a subprogram with scalar arguments (and maybe a pointer to an initialised 8-byte stack slot)."""
    callees = [i for i in range(fn.index + 1, len(g.subs)) if g.subs[i].level > fn.level]
    if not callees or not _can_call(fn, st):
        return False
    ch = g.ch
    k = ch.pick(callees)
    sub = g.subs[k]
    code = fn.code
    for reg in range(1, sub.nargs + 1):
        _arg_scalar(g, fn, st, reg)
    if sub.ptr_arg:
        lo, n = fn.areas["general"]
        off = lo + 8 * ch.between(0, n // 8 - 1)
        if not st.stack_init(off, 8):
            _fill(g, fn, st, off, 8)
        _ptr(fn, st, sub.nargs + 1, off)
    code.items.append(Call(k))
    st.clobber_call()
    if sub.ptr_arg:
        st.spills = {o: kind for o, kind in st.spills.items() if o != off}
    return True


def s_kfunc(g: "Generator", fn: "Fn", st: GState) -> bool:
    """Dynptr kfuncs on the dynptr the prologue made from the context."""
    if not fn.is_main or not g.dynptr or not _can_call(fn, st):
        return False
    ch = g.ch
    dyn, _ = fn.areas["dyn"]
    code = fn.code
    adjust = 0 if "dynptr_adjust" in g.cfg.avoid else 0.5
    kind = ch.weighted([("slice", 4), ("size", 1), ("is_null", 0.5), ("is_rdonly", 0.5), ("adjust", adjust)])
    _ptr(fn, st, 1, dyn)
    if kind in ("size", "is_null", "is_rdonly"):
        code.items.append(KfuncCall(f"bpf_dynptr_{kind}"))
        if kind != "size" and g.cfg.kernel_safe:
            # a bool return defines only the low byte: x86-64 kernels leave the rest of rax as it was
            code.emit(alu(isa.AND, 0, imm=0xFF))
        st.clobber_call()
        return True
    if kind == "adjust":
        _arg_scalar(g, fn, st, 2, small=True)
        _arg_scalar(g, fn, st, 3, small=True)
        code.items.append(KfuncCall("bpf_dynptr_adjust"))
        st.clobber_call()
        return True
    blo, bn = fn.areas["buf"]
    size = ch.pick((1, 2, 4, 8, 14, 20, bn))
    _arg_scalar(g, fn, st, 2, small=True)
    with_buffer = ch.chance(0.5)
    if with_buffer:
        _fill(g, fn, st, blo, (size + 7) // 8 * 8)
        _ptr(fn, st, 3, blo)
    else:
        code.emit(mov(3, 0))
    code.emit(mov(4, size))
    rdwr = g.cfg.prog_type != "socket_filter" and ch.chance(0.3)
    code.items.append(KfuncCall("bpf_dynptr_slice_rdwr" if rdwr else "bpf_dynptr_slice"))
    st.clobber_call(None)
    _when_not_null(g, fn, st, f"mem:{size}:{'rw' if rdwr else 'ro'}", 3)
    return True


def _when_not_null(g: "Generator", fn: "Fn", st: GState, r0_kind: str, most: int) -> None:
    """After a call returning a pointer or NULL in r0: up to `most` statements (dereferences preferred) in a
    block that runs only when r0 != 0, with r0 of `r0_kind` there; r0 is unknown after the block."""
    if fn.depth >= g.cfg.max_depth:
        return
    code = fn.code
    skip = code.new_label()
    code.jump(jmp(isa.JEQ, 0, imm=0), skip)
    inner = st.copy()
    inner.regs[0] = r0_kind
    inner = g.block(fn, inner, g.ch.between(1, most), prefer=("deref",))
    code.place(skip)
    merged = inner.merge(st)
    merged.regs.pop(0, None)
    st.__dict__.update(merged.__dict__)
