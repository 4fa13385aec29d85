"""The verifier's environment: the program, options, per-slot facts, the worklist of pending paths and the
checkpoint bookkeeping every other part uses (the kernel's `struct bpf_verifier_env`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import isa
from ..isa import Insn
from ..program import Program
from .errors import Reject
from .log import Log
from .regs import NOT_INIT, Reg, type_str
from .state import State

DEFAULT_MAX_INSNS = 1_000_000


@dataclass
class InsnAux:
    """Facts about one slot, gathered over every path that reaches it."""

    seen: bool = False
    true_taken: bool = False
    false_taken: bool = False
    proved_safe: bool | None = None
    ctx_field: Any = None
    ptr_type: int = -1  # base pointer type of a load/store (kernel's save_aux_ptr_type)
    region: str = ""
    kfunc: str = ""
    instance: int = -1  # hidden subprogram start of an instance call
    loop_callback: int = -2  # bpf_loop call: its callback's start (-2: not visited yet; -1: not inlinable)

    def note_access(self, safe: bool, region: str) -> None:
        self.proved_safe = safe if self.proved_safe is None else (self.proved_safe and safe)
        if not self.region:
            self.region = region
        elif self.region != region:
            self.region = "mixed"


@dataclass
class Options:
    privileged: bool = True  # root: CAP_BPF + CAP_PERFMON (uninitialised stack reads allowed, pointer leaks ok)
    max_insns: int = DEFAULT_MAX_INSNS
    log_level: int = 0
    kernel_btf: Any = None
    prog_type: str = ""
    kfunc_btfs: tuple = ()  # BTF of kfunc libraries: prototypes of inlinable kfuncs, before the kernel's


class Core:
    """State shared by the verifier's parts; the checking methods live in the mixins of `check.Verifier`."""

    def __init__(self, program: Program, options: Options) -> None:
        self.program = program
        self.insns: list[Insn] = program.insns
        self.n = len(self.insns)
        self.opts = options
        self.prog_type = options.prog_type or program.prog_type or "socket_filter"
        self.aux = [InsnAux() for _ in range(self.n)]
        self.log = Log(options.log_level, program)
        self.id_gen = 0
        self.worklist: list[State] = []
        self.insn_processed = 0
        self.jmps_processed = 0
        self.prev_jmps = 0
        self.prev_insns = 0
        self.total_states = 0
        self.peak_states = 0
        self.cur_states = 0
        self.explored: dict[int, list[State]] = {}
        self.stack_depth: dict[int, int] = {}
        self.recorded = False
        self.cur_insn = 0
        self.checkpoint_seq = 0

    # -- ids and errors ------------------------------------------------------------------------------------
    def new_id(self) -> int:
        self.id_gen += 1
        return self.id_gen

    def reject(self, message: str, *extra: str) -> Reject:
        return Reject(self.cur_insn, message, *extra)

    # -- register operand checks (check_reg_arg) -----------------------------------------------------------
    def read_reg(self, st: State, regno: int) -> Reg:
        r = st.frames[-1].regs[regno]
        if r.type == NOT_INIT:
            raise self.reject(f"R{regno} !read_ok")
        return r

    def write_reg(self, st: State, regno: int) -> Reg:
        if regno == isa.FRAME_POINTER:
            raise self.reject("frame pointer is read only")
        return st.frames[-1].regs[regno]

    def type_name(self, r: Reg) -> str:
        return type_str(r.type)

    # -- history and the worklist -----------------------------------------------------------------------------
    def record(self, st: State, extra: Any = None) -> None:
        """Append the current instruction to the path's history (once per instruction)."""
        if not self.recorded:
            st.history.append((self.cur_insn, len(st.frames) - 1, extra))
            self.recorded = True

    def push(self, st: State, insn: int) -> State:
        """Queue a copy of `st` that continues at `insn` (push_stack)."""
        other = st.copy()
        other.insn = insn
        if other.parent is not None:
            other.parent.branches += 1
        self.worklist.append(other)
        if len(self.worklist) > 8192:
            raise self.reject(f"The sequence of {len(self.worklist)} jumps is too complex.")
        return other

    def push_new(self, st: State) -> None:
        """Queue an independent path (an instance body): it has no checkpoint parent."""
        self.worklist.append(st)

    def path_done(self, st: State) -> None:
        """A path ended (exit or pruned): checkpoints with no unfinished paths left become complete."""
        p = st.parent
        while p is not None:
            p.branches -= 1
            if p.branches > 0:
                break
            p = p.parent

    def pop(self) -> State | None:
        return self.worklist.pop() if self.worklist else None
