"""Random programs the verifier accepts, for differential and property testing.

    random_program(seed, prog_type="xdp")            # fast, for the campaign (random.Random choices)
    programs(prog_types=("sched_cls",)).example()   # a hypothesis strategy (shrinkable choices)

A program is a prologue (r6 = ctx; r7/r8 = data/data_end for tc and XDP; maybe a dynptr from the context),
a body of statements from `genbasic` and `gencalls` chosen by weight and valid in the generator's abstract
state (`genstate`), and an epilogue that folds every live scalar into r0, so what the body computed is
observable. Subprograms (called with scalar arguments and maybe a pointer into the caller's stack) are made
first so the body can call them; calls chain at most two deep to stay within the 512-byte stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .. import isa
from . import gencalls as C
from . import genbasic as B
from .chooser import Chooser, DrawChooser, RandomChooser, imm32
from .genprog import Code, GenProgram, KfuncCall, MapDef
from .genstate import EXIT, GState, add_imm, alu, jmp, ldx, mov, movr

PROG_TYPES = ("sched_cls", "xdp", "socket_filter")
MAIN_AREAS = {"general": (-64, 64), "key": (-72, 8), "val": (-120, 48), "buf": (-152, 32), "dyn": (-168, 16)}
SUB_AREAS = {"general": (-64, 64), "key": (-72, 8), "val": (-120, 48)}
DATA_OFFSETS = {"sched_cls": (76, 80), "xdp": (0, 4)}

Stmt = Callable[[Any, Any, GState], bool]
STATEMENTS: list[tuple[str, Stmt, float]] = [
    ("mov", B.s_mov, 2), ("alu", B.s_alu, 6), ("if", B.s_if, 2.5), ("loop", B.s_loop, 0.5),
    ("exit", B.s_exit, 0.3), ("stack_store", B.s_stack_store, 1.5), ("stack_load", B.s_stack_load, 1.5),
    ("spill", B.s_spill, 0.7), ("stack_atomic", B.s_stack_atomic, 0.5), ("pkt", B.s_pkt_guard, 1.5),
    ("pkt_access", B.s_pkt_access, 2), ("pkt_var", B.s_pkt_var, 0.7), ("pkt_len", B.s_pkt_len, 0.3),
    ("ctx", B.s_ctx, 1.5), ("ldabs", B.s_ldabs, 0.4), ("deref", B.s_deref, 2),
    ("helper", C.s_pure_helper, 1), ("load_bytes", C.s_load_bytes, 0.7), ("map", C.s_map, 1.5),
    ("ringbuf", C.s_ringbuf, 0.5), ("call", C.s_call_sub, 1), ("kfunc", C.s_kfunc, 1.5),
    ("pkt_change", C.s_pkt_change, 0.4), ("bpf_loop", C.s_bpf_loop, 0.6),
]


@dataclass(frozen=True)
class Config:
    prog_type: str = "sched_cls"
    kernel_safe: bool = False  # only what the kernel computes the same (no prandom, clock, cpu id, printk)
    max_stmts: int = 30
    max_depth: int = 3
    loops: bool = True
    subprogs: bool = True
    kfuncs: bool = True
    maps: bool = True
    disabled: frozenset[str] = frozenset()  # statement names to leave out
    avoid: frozenset[str] = frozenset()  # finer features to leave out: "dynptr_adjust", "le64", "ldabs"


@dataclass
class FuncInfo:
    level: int  # call-chain depth: 0 for the program, 1 or 2 for subprograms
    nargs: int = 0
    ptr_arg: bool = False
    callback: bool = False  # a bpf_loop callback: (u32 index, void *ctx), returns 0 or 1


@dataclass
class Fn:
    """The function being generated and where the generator is in it."""

    index: int
    code: Code
    level: int
    writable: tuple[int, ...]
    areas: dict[str, tuple[int, int]]
    is_main: bool = False
    depth: int = 0
    loops: int = 0
    no_calls: bool = False
    callback: bool = False  # every exit returns 0 or 1 (go on, or stop the loop)

    @property
    def frame(self) -> int:
        return -min(lo for lo, _ in self.areas.values())


@dataclass
class Generator:
    ch: Chooser
    cfg: Config
    maps: list[MapDef] = field(default_factory=list)
    subs: list[FuncInfo] = field(default_factory=list)
    dynptr: bool = False
    budget: int = 0
    loop_calls: int = 0  # bpf_loop calls emitted so far

    def program(self) -> GenProgram:
        ch, cfg = self.ch, self.cfg
        self.budget = cfg.max_stmts
        if cfg.maps:
            for i in range(ch.between(0, 3)):
                kind = ch.pick(("array", "hash", "ringbuf"))
                if kind == "ringbuf":
                    self.maps.append(MapDef(f"m{i}", kind, 0, 0, 4096))
                else:
                    self.maps.append(MapDef(f"m{i}", kind, 4 if kind == "array" or ch.chance(0.7) else 8,
                                            ch.pick((8, 16, 24, 48)), ch.pick((1, 2, 4, 16))))
        self.subs = [FuncInfo(0)]
        if cfg.subprogs:
            levels = sorted(ch.between(1, 2) for _ in range(ch.between(0, 3)))
            self.subs += [FuncInfo(level, ch.between(0, 3), ch.chance(0.3)) for level in levels]
            if not cfg.kernel_safe and "bpf_loop" not in cfg.disabled and ch.chance(0.3):
                # the kernel wants BTF func_info for callbacks, which generated objects do not carry
                self.subs.append(FuncInfo(1, 1, True, callback=True))
        codes: list[Code] = [Code() for _ in self.subs]
        for index in range(len(self.subs) - 1, 0, -1):
            self._subprogram(index, codes[index])
        self._main(codes[0])
        return GenProgram(cfg.prog_type, codes, self.maps)

    # -- functions -------------------------------------------------------------------------------------------
    def _main(self, code: Code) -> None:
        ch, t = self.ch, self.cfg.prog_type
        packet = t in DATA_OFFSETS
        writable = (0, 1, 2, 3, 4, 5, 9) if packet else (0, 1, 2, 3, 4, 5, 7, 8, 9)
        fn = Fn(0, code, 0, writable, MAIN_AREAS, is_main=True)
        st = GState()
        code.emit(movr(6, 1))
        st.regs[6] = "ctx"
        out = None
        if packet:
            data, end = DATA_OFFSETS[t]
            code.emit(ldx(4, 7, 6, data), ldx(4, 8, 6, end))
            st.regs.update({7: "pkt", 8: "end"})
            if ch.chance(0.4):
                out = code.new_label()
                n = ch.pick((14, 20, 34, 54))
                code.emit(movr(1, 7), add_imm(1, n))
                code.jump(jmp(isa.JGT, 1, 8), out)
                st.pkt = n
            if self.cfg.kfuncs and ch.chance(0.4):
                dyn, _ = MAIN_AREAS["dyn"]
                code.emit(movr(1, 6), mov(2, 0), movr(3, 10), add_imm(3, dyn))
                code.items.append(KfuncCall("bpf_dynptr_from_skb" if t == "sched_cls" else "bpf_dynptr_from_xdp"))
                st.clobber_call()
                self.dynptr = True
        if ch.chance(0.5):
            code.emit(mov(9, imm32(ch)))
            st.regs[9] = "s"
        self._body(fn, st)
        self._epilogue(fn, st)
        if out is not None:
            code.place(out)
            code.emit(mov(0, ch.pick((0, 1, 2))), EXIT)

    def _subprogram(self, index: int, code: Code) -> None:
        info = self.subs[index]
        fn = Fn(index, code, info.level, tuple(range(10)), SUB_AREAS, callback=info.callback)
        st = GState()
        for reg in range(1, info.nargs + 1):
            st.regs[reg] = "s"
        if info.ptr_arg:
            st.regs[info.nargs + 1] = "sp"
        saved, self.budget = self.budget, max(3, self.cfg.max_stmts // 4)
        self._body(fn, st)
        self.budget = saved
        self._epilogue(fn, st)

    def _body(self, fn: Fn, st: GState) -> None:
        while self.budget > 0 and not st.dead:
            self.statement(fn, st)

    def _epilogue(self, fn: Fn, st: GState) -> None:
        if st.dead:
            return
        scalars = [r for r in st.scalars() if r != 0]
        if st.regs.get(0) not in ("s", "l"):
            fn.code.emit(mov(0, imm32(self.ch)) if not scalars else movr(0, scalars.pop(0)))
        for r in scalars[:6]:
            fn.code.emit(alu(self.ch.pick((isa.XOR, isa.ADD)), 0, r))
        if fn.callback:
            fn.code.emit(alu(isa.AND, 0, imm=1))
        fn.code.emit(EXIT)

    # -- statements ------------------------------------------------------------------------------------------
    def block(self, fn: Fn, st: GState, n: int, prefer: tuple[str, ...] = ()) -> GState:
        """`n` statements one nesting level down; returns the state at the block's end."""
        fn.depth += 1
        for _ in range(n):
            if self.budget <= 0 or st.dead:
                break
            self.statement(fn, st, prefer)
        fn.depth -= 1
        return st

    def statement(self, fn: Fn, st: GState, prefer: tuple[str, ...] = ()) -> None:
        self.budget -= 1
        options = [(stmt, w * (4 if name in prefer else 1)) for name, stmt, w in STATEMENTS
                   if name not in self.cfg.disabled]
        for _ in range(4):
            if self.ch.weighted(options)(self, fn, st):
                return
        B.s_alu(self, fn, st)


def generate(ch: Chooser, cfg: Config) -> GenProgram:
    return Generator(ch, cfg).program()


def random_program(seed: int, prog_type: str | None = None, **config: Any) -> GenProgram:
    """The program for `seed` (deterministic): the campaign's fast generator."""
    ch = RandomChooser(seed)
    prog_type = prog_type or ch.pick(PROG_TYPES)
    cfg = Config(prog_type=prog_type, max_stmts=config.pop("max_stmts", ch.between(3, 40)), **config)
    return generate(ch, cfg)


def programs(prog_types: tuple[str, ...] = PROG_TYPES, *, kernel_safe: bool = False, max_stmts: int = 20,
             **config: Any):
    """A hypothesis strategy of `GenProgram`s."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> GenProgram:
        ch = DrawChooser(draw)
        cfg = Config(prog_type=ch.pick(prog_types), kernel_safe=kernel_safe,
                     max_stmts=ch.between(max(1, max_stmts // 3), max_stmts), **config)
        return generate(ch, cfg)

    return build()
