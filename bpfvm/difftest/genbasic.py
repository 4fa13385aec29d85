"""Generator statements without calls: ALU, conditional blocks, bounded loops, stack stores/loads and pointer
spills, packet accesses behind `data_end` checks, context fields, LD_ABS/LD_IND, early exits, and loads/stores
through map values and dynptr slices. Each statement takes (gen, fn, st), emits into `fn.code`, updates `st`
and returns False when it does not apply in that state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import isa
from ..isa import Insn
from .chooser import imm32, imm64
from .genstate import EXIT, GOTO, GState, add_imm, alu, jmp, ldx, mov, movr, st as st_imm, stx

if TYPE_CHECKING:
    from .programs import Fn, Generator

ALU_OPS = (isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.MOD, isa.XOR, isa.ARSH)
JMP_OPS = (isa.JEQ, isa.JNE, isa.JGT, isa.JGE, isa.JLT, isa.JLE, isa.JSET, isa.JSGT, isa.JSGE, isa.JSLT, isa.JSLE)
SIZES = (1, 2, 4, 8)

# __sk_buff fields: (offset, size) a program may read, and those tc may write (4 bytes; tstamp 8)
SKB_READ = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4), (32, 4), (36, 4), (40, 4), (44, 4),
            (48, 4), (52, 4), (56, 4), (60, 4), (64, 4), (160, 4), (164, 4), (176, 4), (152, 8),
            (0, 1), (0, 2), (8, 1), (16, 2), (48, 1), (50, 2), (12, 2)]
SOCKET_DENIED = {160, 152}  # wire_len, tstamp
TC_WRITE = [(8, 4), (32, 4), (44, 4), (48, 4), (52, 4), (56, 4), (60, 4), (64, 4), (12, 4), (152, 8)]
SOCKET_WRITE = [(48, 4), (52, 4), (56, 4), (60, 4), (64, 4)]
XDP_READ = [(12, 4), (16, 4)]


def dest(g: "Generator", fn: "Fn", st: GState, *, avoid: tuple[int, ...] = ()) -> int | None:
    """A register a scalar may be written to: free, or holding a scalar (never a pointer or a loop counter)."""
    options = [r for r in fn.writable if r not in avoid and st.regs.get(r, "s") == "s"]
    return g.ch.pick(options) if options else None


def scalar(g: "Generator", fn: "Fn", st: GState) -> int | None:
    """A register holding a scalar, making one (mov imm) if there is none."""
    regs = st.scalars()
    if regs:
        return g.ch.pick(regs)
    r = dest(g, fn, st)
    if r is None:
        return None
    fn.code.emit(mov(r, imm32(g.ch)))
    st.regs[r] = "s"
    return r


def s_mov(g: "Generator", fn: "Fn", st: GState) -> bool:
    r = dest(g, fn, st)
    if r is None:
        return False
    kind = g.ch.weighted([("imm", 4), ("reg", 3), ("imm64", 1), ("imm32", 1)])
    if kind == "reg" and st.scalars():
        fn.code.emit(movr(r, g.ch.pick(st.scalars()), wide=g.ch.chance(0.7)))
    elif kind == "imm64":
        fn.code.emit(*isa.lddw_pair(r, imm64(g.ch)))
    else:
        fn.code.emit(mov(r, imm32(g.ch), wide=kind == "imm"))
    st.regs[r] = "s"
    return True


def s_alu(g: "Generator", fn: "Fn", st: GState) -> bool:
    ch = g.ch
    d = [r for r in st.scalars() if r in fn.writable and st.regs[r] == "s"]
    if not d:
        return s_mov(g, fn, st)
    r = ch.pick(d)
    wide = ch.chance(0.6)
    form = ch.weighted([("op", 10), ("neg", 1), ("end", 1), ("movsx", 1), ("sdiv", 1)])
    if form == "neg":
        fn.code.emit(alu(isa.NEG, r, imm=0, wide=wide))
    elif form == "end":
        bits = ch.pick((16, 32, 64))
        if ch.chance(0.3):  # bswap (ALU64 END)
            fn.code.emit(Insn(isa.ALU64 | isa.END, r, 0, 0, bits))
        else:
            order = ch.pick((isa.TO_LE, isa.TO_BE))
            if order == isa.TO_LE and bits == 64 and "le64" in g.cfg.avoid:
                order = isa.TO_BE
            fn.code.emit(Insn(isa.ALU | isa.END | order, r, 0, 0, bits))
    elif form == "movsx":
        src = ch.pick(st.scalars())
        fn.code.emit(Insn((isa.ALU64 if wide else isa.ALU) | isa.MOV | isa.X, r, src,
                          ch.pick((8, 16, 32) if wide else (8, 16)), 0))
    else:
        op = ch.pick((isa.DIV, isa.MOD)) if form == "sdiv" else ch.pick(ALU_OPS)
        off = 1 if form == "sdiv" else 0
        if ch.chance(0.5):
            src = ch.pick(st.scalars())
            fn.code.emit(alu(op, r, src, wide=wide, off=off))
        else:
            imm = imm32(ch)
            if op in (isa.LSH, isa.RSH, isa.ARSH):
                imm = ch.between(0, 63 if wide else 31)
            elif op in (isa.DIV, isa.MOD) and imm == 0:
                imm = ch.pick((1, 3, -1, 7))
            fn.code.emit(alu(op, r, imm=imm, wide=wide, off=off))
    st.regs[r] = "s"
    return True


def cond_jump(g: "Generator", st: GState) -> Insn:
    """`if <scalar> op <scalar or imm>` with the offset left for the label."""
    ch = g.ch
    a = ch.pick(st.scalars())
    op = ch.pick(JMP_OPS)
    wide = ch.chance(0.7)
    if ch.chance(0.4) and len(st.scalars()) > 1:
        return jmp(op, a, ch.pick(st.scalars()), wide=wide)
    return jmp(op, a, imm=ch.pick((0, 1, 2, 10, 255, -1, 0x7FFFFFFF)) if ch.chance(0.7) else imm32(ch), wide=wide)


def s_if(g: "Generator", fn: "Fn", st: GState) -> bool:
    """`if cond goto skip; {then}; [goto end; skip: {else}]`."""
    if fn.depth >= g.cfg.max_depth or scalar(g, fn, st) is None:
        return False
    code = fn.code
    skip = code.new_label()
    code.jump(cond_jump(g, st), skip)
    then = g.block(fn, st.copy(), g.ch.between(1, 4))
    if g.ch.chance(0.35):
        end = code.new_label()
        if not then.dead:
            code.jump(GOTO, end)
        code.place(skip)
        other = g.block(fn, st.copy(), g.ch.between(1, 3))
        code.place(end)
    else:
        code.place(skip)
        other = st
    merged = then.merge(other)
    st.__dict__.update(merged.__dict__)
    return True


def s_exit(g: "Generator", fn: "Fn", st: GState) -> bool:
    """An early exit, only inside a block (so the code after it stays reachable)."""
    if fn.depth == 0 or fn.loops:
        return False
    r = scalar(g, fn, st)
    if r is None:
        return False
    if r != 0:
        fn.code.emit(movr(0, r))
    if fn.callback:
        fn.code.emit(alu(isa.AND, 0, imm=1))  # a loop callback returns 0 (go on) or 1 (stop)
    fn.code.emit(EXIT)
    st.dead = True
    return True


def s_loop(g: "Generator", fn: "Fn", st: GState) -> bool:
    """`i = 0; loop: {body}; i += 1; if i < K goto loop` with K small: the verifier walks every iteration."""
    if fn.loops or fn.depth >= g.cfg.max_depth or not g.cfg.loops:
        return False
    callee_saved = [r for r in (9, 8, 7, 6) if r in fn.writable and st.regs.get(r, "s") == "s"]
    counter = callee_saved[0] if callee_saved else dest(g, fn, st)
    if counter is None:
        return False
    code = fn.code
    code.emit(mov(counter, 0))
    st.regs[counter] = "l"
    head = code.new_label()
    code.place(head)
    fn.loops += 1
    fn.no_calls = counter < 6
    # The body is generated for the state at the loop head, which the back edge must re-establish: retry
    # with the intersection until what the body assumes holds at its end too (else leave the body empty).
    start, budget, n = len(code.items), g.budget, g.ch.between(1, 3)
    head_state = st.copy()
    for _ in range(6):
        del code.items[start:]
        g.budget = budget
        body = g.block(fn, head_state.copy(), n)
        back = body.merge(head_state)
        if _same(back, head_state):
            break
        head_state = back
    else:
        del code.items[start:]
        body = head_state
    fn.loops -= 1
    fn.no_calls = False
    code.emit(add_imm(counter, 1))
    code.jump(jmp(g.ch.pick((isa.JLT, isa.JNE)), counter, imm=g.ch.between(1, 4)), head)
    after = body.merge(head_state)
    after.regs[counter] = "s"
    st.__dict__.update(after.__dict__)
    return True


def _same(a: GState, b: GState) -> bool:
    return a.regs == b.regs and a.spills == b.spills and a.init == b.init and a.pkt == b.pkt


# -- stack -----------------------------------------------------------------------------------------------------
def s_stack_store(g: "Generator", fn: "Fn", st: GState) -> bool:
    ch = g.ch
    size = ch.pick(SIZES)
    lo, n = fn.areas["general"]
    off = lo + size * ch.between(0, n // size - 1)
    if ch.chance(0.6) and st.scalars():
        fn.code.emit(stx(size, 10, ch.pick(st.scalars()), off))
    else:
        fn.code.emit(st_imm(size, 10, off, imm32(ch)))
    st.write_stack(off, size)
    return True


def s_stack_load(g: "Generator", fn: "Fn", st: GState) -> bool:
    ch = g.ch
    cands = [(o, s) for s in SIZES for o in range(-fn.frame, 0, s) if st.stack_init(o, s)]
    r = dest(g, fn, st)
    if not cands or r is None:
        return False
    off, size = ch.pick(cands)
    fn.code.emit(ldx(size, r, 10, off, signed=size < 8 and ch.chance(0.2)))
    st.regs[r] = "s"
    return True


def s_spill(g: "Generator", fn: "Fn", st: GState) -> bool:
    """Spill a pointer (ctx, packet, packet end) to an 8-byte slot, or fill one back."""
    ch = g.ch
    lo, n = fn.areas["general"]
    if st.spills and ch.chance(0.5):
        off = ch.pick(sorted(st.spills))
        r = dest(g, fn, st)
        if r is None:
            return False
        fn.code.emit(ldx(8, r, 10, off))
        st.regs[r] = st.spills[off]
        return True
    ptrs = [r for r, k in st.regs.items() if k in ("ctx", "pkt", "end")]
    if not ptrs:
        return False
    r = ch.pick(sorted(ptrs))
    off = lo + 8 * ch.between(0, n // 8 - 1)
    fn.code.emit(stx(8, 10, r, off))
    st.spill(off, st.regs[r])
    return True


# -- packet ----------------------------------------------------------------------------------------------------
def s_pkt_guard(g: "Generator", fn: "Fn", st: GState) -> bool:
    """`t = data + N; if t > data_end goto skip; {accesses within N}`."""
    pkt, end = st.of_kind("pkt"), st.of_kind("end")
    if not pkt or not end or fn.depth >= g.cfg.max_depth:
        return False
    t = dest(g, fn, st)
    if t is None:
        return False
    n = g.ch.pick((1, 2, 4, 8, 14, 20, 34, 40, 54, 60, 64))
    code = fn.code
    code.emit(movr(t, pkt[0]), add_imm(t, n))
    st.regs.pop(t, None)
    skip = code.new_label()
    if g.ch.chance(0.5):
        code.jump(jmp(isa.JGT, t, end[0]), skip)
    else:
        code.jump(jmp(isa.JLT, end[0], t), skip)
    inner = st.copy()
    inner.pkt = max(st.pkt, n)
    inner = g.block(fn, inner, g.ch.between(1, 4), prefer=("pkt",))
    code.place(skip)
    merged = inner.merge(st)
    st.__dict__.update(merged.__dict__)
    return True


def s_pkt_access(g: "Generator", fn: "Fn", st: GState) -> bool:
    pkt = st.of_kind("pkt")
    if not pkt or st.pkt == 0:
        return False
    ch = g.ch
    size = ch.pick([s for s in SIZES if s <= st.pkt])
    off = ch.between(0, st.pkt - size)
    if g.cfg.prog_type != "socket_filter" and ch.chance(0.35):
        if ch.chance(0.6) and st.scalars():
            fn.code.emit(stx(size, pkt[0], ch.pick(st.scalars()), off))
        else:
            fn.code.emit(st_imm(size, pkt[0], off, imm32(ch)))
        return True
    r = dest(g, fn, st)
    if r is None:
        return False
    fn.code.emit(ldx(size, r, pkt[0], off, signed=size < 8 and ch.chance(0.2)))
    st.regs[r] = "s"
    return True


def s_pkt_var(g: "Generator", fn: "Fn", st: GState) -> bool:
    """A packet access at a variable offset: `p = data + (x & mask); if p + size > end goto skip; load p[0]`."""
    pkt, end = st.of_kind("pkt"), st.of_kind("end")
    x = st.scalars()
    free = [r for r in fn.writable if st.regs.get(r, "s") == "s"]
    if not pkt or not end or not x or len(free) < 3:
        return False
    ch = g.ch
    o, p, t = free[:3] if ch.chance(0.5) else free[-3:]
    size = ch.pick(SIZES)
    code = fn.code
    code.emit(movr(o, ch.pick(x)), alu(isa.AND, o, imm=ch.pick((0x3F, 0xFF, 0x7, 0x1F))))
    code.emit(movr(p, pkt[0]), alu(isa.ADD, p, o), movr(t, p), add_imm(t, size))
    skip = code.new_label()
    code.jump(jmp(isa.JGT, t, end[0]), skip)
    code.emit(ldx(size, o, p, 0))
    code.place(skip)
    for r in (p, t):
        st.regs.pop(r, None)
    st.regs[o] = "s"
    return True


def s_pkt_len(g: "Generator", fn: "Fn", st: GState) -> bool:
    pkt, end = st.of_kind("pkt"), st.of_kind("end")
    r = dest(g, fn, st)
    if not pkt or not end or r is None:
        return False
    fn.code.emit(movr(r, end[0]), alu(isa.SUB, r, pkt[0]))
    st.regs[r] = "s"
    return True


# -- context ---------------------------------------------------------------------------------------------------
def s_ctx(g: "Generator", fn: "Fn", st: GState) -> bool:
    ctx = st.of_kind("ctx")
    if not ctx:
        return False
    ch, t = g.ch, g.cfg.prog_type
    writes = TC_WRITE if t == "sched_cls" else SOCKET_WRITE if t == "socket_filter" else []
    if writes and ch.chance(0.3) and st.scalars():
        off, size = ch.pick(writes)
        fn.code.emit(stx(size, ctx[0], ch.pick(st.scalars()), off))
        return True
    reads = XDP_READ if t == "xdp" else [f for f in SKB_READ if not (t == "socket_filter" and f[0] in SOCKET_DENIED)]
    r = dest(g, fn, st)
    if r is None:
        return False
    off, size = ch.pick(reads)
    fn.code.emit(ldx(size, r, ctx[0], off))
    st.regs[r] = "s"
    return True


def s_ldabs(g: "Generator", fn: "Fn", st: GState) -> bool:
    """LD_ABS / LD_IND (r6 must be the context); they clobber r1-r5 like a call and set r0."""
    if g.cfg.prog_type not in ("socket_filter", "sched_cls") or st.regs.get(6) != "ctx" or fn.no_calls:
        return False
    ch = g.ch
    size = ch.pick((isa.B, isa.H, isa.W))
    if ch.chance(0.5) or not st.scalars():
        insn = Insn(isa.LD | isa.ABS | size, 0, 0, 0, ch.pick((0, 12, 14, 23, 30, 40, 60, 100, 1000)))
    else:
        insn = Insn(isa.LD | isa.IND | size, 0, ch.pick(st.scalars()), 0, ch.pick((0, 2, 14, -1)))
    fn.code.emit(insn)
    st.clobber_call()
    return True


# -- through pointers a block established ------------------------------------------------------------------------
def s_deref(g: "Generator", fn: "Fn", st: GState) -> bool:
    """Load/store/atomic through a map value, a dynptr slice or the caller's stack slot."""
    ptrs = [(r, k) for r, k in st.regs.items() if k.startswith(("mv:", "mem:")) or k == "sp"]
    if not ptrs:
        return False
    ch = g.ch
    r, kind = ch.pick(sorted(ptrs))
    limit = 8 if kind == "sp" else int(kind.split(":")[1])
    writable = kind == "sp" or kind.startswith("mv:") or kind.endswith(":rw")
    sizes = [s for s in SIZES if s <= limit]
    size = ch.pick(sizes)
    off = size * ch.between(0, limit // size - 1)
    action = ch.weighted([("load", 3), ("store", 2 if writable else 0), ("atomic", 1 if kind.startswith("mv:") else 0)])
    if action == "store" and st.scalars():
        fn.code.emit(stx(size, r, ch.pick(st.scalars()), off))
        return True
    if action == "atomic" and size in (4, 8) and st.scalars():
        return atomic(g, fn, st, r, off, size)
    d = dest(g, fn, st, avoid=(r,))
    if d is None:
        return False
    fn.code.emit(ldx(size, d, r, off, signed=size < 8 and ch.chance(0.2)))
    st.regs[d] = "s"
    return True


def atomic(g: "Generator", fn: "Fn", st: GState, base: int, off: int, size: int) -> bool:
    """An atomic read-modify-write at base+off (stack or map value)."""
    ch = g.ch
    code = isa.STX | isa.ATOMIC | (isa.DW if size == 8 else isa.W)
    op = ch.pick((isa.ATOMIC_ADD, isa.ATOMIC_OR, isa.ATOMIC_AND, isa.ATOMIC_XOR, isa.ATOMIC_XCHG,
                  isa.ATOMIC_CMPXCHG))
    fetch = op in (isa.ATOMIC_XCHG, isa.ATOMIC_CMPXCHG) or ch.chance(0.4)
    if op == isa.ATOMIC_CMPXCHG:
        if st.regs.get(0) != "s" or base == 0:
            return False
        src_options = [r for r in st.scalars() if r != base]
    else:
        src_options = [r for r in st.scalars() if r in fn.writable and st.regs[r] == "s" and r != base] if fetch \
            else [r for r in st.scalars() if r != base]
    if not src_options:
        return False
    src = ch.pick(src_options)
    imm = op | (isa.FETCH if fetch and op not in (isa.ATOMIC_XCHG, isa.ATOMIC_CMPXCHG) else 0)
    fn.code.emit(Insn(code, base, src, off, imm))
    return True


def s_stack_atomic(g: "Generator", fn: "Fn", st: GState) -> bool:
    size = g.ch.pick((4, 8))
    lo, n = fn.areas["general"]
    cands = [o for o in range(lo, lo + n, size) if st.stack_init(o, size)]
    if not cands:
        return False
    return atomic(g, fn, st, 10, g.ch.pick(cands), size)
