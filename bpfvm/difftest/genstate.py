"""The generator's own abstract state: which registers hold what, which stack bytes are initialised, what is
spilled where and how much packet is proven readable. The generator only emits instructions that are valid in
this state, so the verifier accepts what it builds; at a join the state is the intersection of both paths.

Register kinds: "s" scalar, "l" loop counter (a scalar nothing may write), "ctx", "pkt" (packet start, readable
up to `pkt` bytes), "end" (packet end), "sp" (pointer to 8 initialised bytes of the caller's stack),
"mv:N" (map value of N bytes, not NULL), "mem:N:rw" / "mem:N:ro" (a dynptr slice of N bytes, not NULL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import isa
from ..isa import Insn

SCALARS = ("s", "l")
POINTER_SPILLS = ("ctx", "pkt", "end")


@dataclass
class GState:
    regs: dict[int, str] = field(default_factory=dict)
    init: set[int] = field(default_factory=set)  # initialised stack bytes, as negative offsets from r10
    spills: dict[int, str] = field(default_factory=dict)  # 8-aligned slot -> pointer kind spilled there
    pkt: int = 0
    dead: bool = False  # this path has exited

    def copy(self) -> "GState":
        return GState(dict(self.regs), set(self.init), dict(self.spills), self.pkt, self.dead)

    def merge(self, other: "GState") -> "GState":
        """What holds on both paths (a dead path contributes nothing)."""
        if self.dead:
            return other.copy()
        if other.dead:
            return self.copy()
        regs = {r: k for r, k in self.regs.items() if other.regs.get(r) == k}
        spills = {o: k for o, k in self.spills.items() if other.spills.get(o) == k}
        init = self.init & other.init
        for slot in (set(self.spills) | set(other.spills)) - set(spills):
            init -= set(range(slot, slot + 8))  # a pointer on some path: not readable as a scalar
        return GState(regs, init, spills, min(self.pkt, other.pkt))

    def scalars(self) -> list[int]:
        """Registers a scalar can be read from."""
        return sorted(r for r, k in self.regs.items() if k in SCALARS)

    def of_kind(self, prefix: str) -> list[int]:
        return sorted(r for r, k in self.regs.items() if k == prefix or k.startswith(prefix + ":"))

    def stack_init(self, off: int, size: int) -> bool:
        return all(off + i in self.init for i in range(size)) and not self._touches_spill(off, size)

    def _touches_spill(self, off: int, size: int) -> bool:
        return any(slot < off + size and off < slot + 8 for slot in self.spills)

    def write_stack(self, off: int, size: int) -> None:
        """A scalar store: the bytes are initialised. A spilled pointer it partly overwrites is gone, and the
        rest of that slot still holds pointer bytes, which must never be read as a scalar (addresses differ
        from run to run)."""
        for slot in [s for s in self.spills if s < off + size and off < s + 8]:
            del self.spills[slot]
            self.init -= set(range(slot, slot + 8))
        self.init.update(range(off, off + size))

    def spill(self, off: int, kind: str) -> None:
        self.write_stack(off, 8)
        self.spills[off] = kind

    def clobber_call(self, ret: str | None = "s") -> None:
        """A call: r1-r5 are gone, r0 holds the result."""
        for r in range(6):
            self.regs.pop(r, None)
        if ret:
            self.regs[0] = ret


# -- instruction constructors ------------------------------------------------------------------------------------
def mov(dst: int, imm: int, wide: bool = True) -> Insn:
    return Insn((isa.ALU64 if wide else isa.ALU) | isa.MOV | isa.K, dst, 0, 0, imm)


def movr(dst: int, src: int, wide: bool = True) -> Insn:
    return Insn((isa.ALU64 if wide else isa.ALU) | isa.MOV | isa.X, dst, src, 0, 0)


def alu(op: int, dst: int, src: int | None = None, imm: int = 0, wide: bool = True, off: int = 0) -> Insn:
    cls = isa.ALU64 if wide else isa.ALU
    if src is None:
        return Insn(cls | op | isa.K, dst, 0, off, imm)
    return Insn(cls | op | isa.X, dst, src, off, 0)


def add_imm(dst: int, imm: int) -> Insn:
    return alu(isa.ADD, dst, imm=imm)


SIZE_CODE = {1: isa.B, 2: isa.H, 4: isa.W, 8: isa.DW}


def ldx(size: int, dst: int, src: int, off: int, signed: bool = False) -> Insn:
    return Insn(isa.LDX | (isa.MEMSX if signed else isa.MEM) | SIZE_CODE[size], dst, src, off, 0)


def stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.STX | isa.MEM | SIZE_CODE[size], dst, src, off, 0)


def st(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(isa.ST | isa.MEM | SIZE_CODE[size], dst, 0, off, imm)


def jmp(op: int, dst: int, src: int | None = None, imm: int = 0, wide: bool = True) -> Insn:
    cls = isa.JMP if wide else isa.JMP32
    if src is None:
        return Insn(cls | op | isa.K, dst, 0, 0, imm)
    return Insn(cls | op | isa.X, dst, src, 0, 0)


def call(helper: int) -> Insn:
    return Insn(isa.OP_CALL, 0, 0, 0, helper)


EXIT = Insn(isa.OP_EXIT)
GOTO = Insn(isa.OP_JA)
