"""Verifier states: frames of registers and stack, references, and the checkpoint tree used for pruning.

A `State` is one path being explored. At prune points a copy of it is kept as a checkpoint (`parent` of the
path from then on); `history` records the instructions executed since that checkpoint, which precision
backtracking walks. `branches` counts the unfinished paths below a checkpoint: only checkpoints with no
unfinished paths may prune others by plain equivalence (the kernel's rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .regs import NOT_INIT, PTR_TO_STACK, Reg, set_not_init

MAX_FRAMES = 8
MAX_STACK = 512
REG_SIZE = 8

# Stack byte kinds (the kernel's STACK_*).
INVALID, SPILL, MISC, ZERO, DYNPTR, ITER = 0, 1, 2, 3, 4, 5
SLOT_CHARS = {INVALID: "?", SPILL: "r", MISC: "m", ZERO: "0", DYNPTR: "d", ITER: "i"}

# Iterator slot states.
ITER_ACTIVE, ITER_DRAINED = 1, 2


class Slot:
    """An 8-byte stack slot: the kind of each byte (index 0 is the highest address, as the kernel's
    slot_type[]) and the spilled register (or dynptr/iterator state) it holds."""

    __slots__ = ("types", "reg")

    def __init__(self, types: list[int] | None = None, reg: Reg | None = None) -> None:
        self.types = types if types is not None else [INVALID] * REG_SIZE
        self.reg = reg if reg is not None else Reg()

    def copy(self) -> "Slot":
        s = Slot.__new__(Slot)
        s.types = self.types[:]
        s.reg = self.reg.copy()
        return s

    def is_spill(self) -> bool:
        return self.types[REG_SIZE - 1] == SPILL

    def spill_size(self) -> int:
        n = 0
        for k in range(REG_SIZE - 1, -1, -1):
            if self.types[k] != SPILL:
                break
            n += 1
        return n

    def is_special(self) -> bool:
        return self.types[REG_SIZE - 1] in (SPILL, DYNPTR, ITER)


class Frame:
    """One call frame (bpf_func_state)."""

    __slots__ = ("regs", "stack", "frameno", "callsite", "subprog", "in_callback", "callback_ret",
                 "callback_kind", "in_instance", "fake", "entry_refs")

    def __init__(self, frameno: int, callsite: int, subprog: int) -> None:
        self.regs = [Reg() for _ in range(11)]
        self.stack: list[Slot] = []
        self.frameno = frameno
        self.callsite = callsite
        self.subprog = subprog
        self.in_callback = False
        self.callback_ret: tuple[int, int] | None = None
        self.callback_kind = 0  # helper id (or -1 for a kfunc) that called this callback
        self.in_instance = False
        self.fake = False
        self.entry_refs: frozenset[int] = frozenset()

    def copy(self) -> "Frame":
        f = Frame.__new__(Frame)
        f.regs = [r.copy() for r in self.regs]
        f.stack = [s.copy() for s in self.stack]
        f.frameno = self.frameno
        f.callsite = self.callsite
        f.subprog = self.subprog
        f.in_callback = self.in_callback
        f.callback_ret = self.callback_ret
        f.callback_kind = self.callback_kind
        f.in_instance = self.in_instance
        f.fake = self.fake
        f.entry_refs = self.entry_refs
        return f

    @property
    def allocated(self) -> int:
        return len(self.stack) * REG_SIZE

    def grow(self, size: int) -> None:
        """Make room for `size` bytes below the frame pointer."""
        n = (size + REG_SIZE - 1) // REG_SIZE
        while len(self.stack) < n:
            self.stack.append(Slot())

    def slot(self, off: int) -> tuple[Slot, int]:
        """Slot and byte index of the stack byte at frame-pointer offset `off` (-512..-1)."""
        k = -off - 1
        return self.stack[k // REG_SIZE], k % REG_SIZE


@dataclass
class Ref:
    id: int
    insn: int
    kind: str = "ptr"  # "ptr", "dynptr", "iter", or "lock": a held bpf_spin_lock
    ptr: int = -1  # a lock's map (with `id`, the map value pointer's id, it names the lock)


class State:
    """A path's verifier state, or a checkpoint of one."""

    __slots__ = ("frames", "refs", "parent", "first_insn", "insn", "history", "branches", "range_only",
                 "may_goto_depth", "callback_depth", "instance", "instance_base", "checkpoint_id",
                 "hit_cnt", "miss_cnt")

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.refs: list[Ref] = []
        self.parent: State | None = None
        self.first_insn = 0
        self.insn = 0
        self.history: list[tuple] = []
        self.branches = 0
        self.range_only = False
        self.may_goto_depth = 0
        self.callback_depth = 0
        self.instance = -1  # call slot of the instance whose body this path runs, -1 in the program proper
        self.instance_base = 0  # frame index of the instance body's own frame
        self.checkpoint_id = 0
        self.hit_cnt = 0
        self.miss_cnt = 0

    @property
    def cur(self) -> Frame:
        return self.frames[-1]

    @property
    def curframe(self) -> int:
        return len(self.frames) - 1

    def regs(self) -> list[Reg]:
        return self.frames[-1].regs

    def copy(self) -> "State":
        s = State.__new__(State)
        s.frames = [f.copy() for f in self.frames]
        s.refs = [Ref(r.id, r.insn, r.kind, r.ptr) for r in self.refs]
        s.parent = self.parent
        s.first_insn = self.first_insn
        s.insn = self.insn
        s.history = self.history[:]
        s.branches = 0
        s.range_only = False
        s.may_goto_depth = self.may_goto_depth
        s.callback_depth = self.callback_depth
        s.instance = self.instance
        s.instance_base = self.instance_base
        s.checkpoint_id = 0
        s.hit_cnt = 0
        s.miss_cnt = 0
        return s

    def all_regs(self):
        """Every register and spilled register of every frame, with (frame index, kind, index)."""
        for fi, f in enumerate(self.frames):
            for i, r in enumerate(f.regs):
                yield fi, "r", i, r
            for spi, s in enumerate(f.stack):
                if s.is_spill() or s.types[REG_SIZE - 1] in (DYNPTR, ITER):
                    yield fi, "s", spi, s.reg

    def held_lock(self) -> Ref | None:
        """The bpf_spin_lock this path holds, if any (at most one)."""
        for r in self.refs:
            if r.kind == "lock":
                return r
        return None

    def has_references(self) -> bool:
        """Whether the path holds references that must be released (held locks are not references)."""
        return any(r.kind != "lock" for r in self.refs)

    def find_ref(self, ref_id: int) -> Ref | None:
        for r in self.refs:
            if r.id == ref_id:
                return r
        return None


def new_frame(frameno: int, callsite: int, subprog: int) -> Frame:
    f = Frame(frameno, callsite, subprog)
    for r in f.regs:
        set_not_init(r)
    fp = f.regs[10]
    fp.type = PTR_TO_STACK
    from .regs import mark_known

    mark_known(fp, 0)
    fp.frameno = frameno
    return f


@dataclass
class Explored:
    """Checkpoints kept at one instruction, and counters for the stats line."""

    states: list[State] = field(default_factory=list)
    miss: int = 0


__all__ = ["State", "Frame", "Slot", "Ref", "new_frame", "NOT_INIT"]
