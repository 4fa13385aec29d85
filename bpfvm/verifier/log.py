"""A kernel-style verifier log (kernel/bpf/log.c, roughly): each processed instruction in the disassembler's
syntax followed by the registers it changed, branch and state lines, and the final stats line.

Level 1 prints instructions and the registers they write; level 2 also prints the full state at every
prune point and each path's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .. import disasm
from .regs import (
    CONST_PTR_TO_MAP, KERNEL_VALUE, NOT_INIT, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_PACKET,
    PTR_TO_PACKET_META, PTR_TO_STACK, S32_MAX, S32_MIN, S64_MAX, S64_MIN, SCALAR, U32, U64, Reg, type_str,
)
from .state import DYNPTR, INVALID, ITER, MISC, SLOT_CHARS, SPILL, ZERO, Frame

if TYPE_CHECKING:
    from .state import State


def _scalar_ranges(r: Reg) -> list[str]:
    out = []
    if r.smin != S64_MIN:
        out.append(f"smin={r.smin}")
    if r.smax != S64_MAX:
        out.append(f"smax={r.smax}")
    if r.umin != 0:
        out.append(f"umin={r.umin}")
    if r.umax != U64:
        out.append(f"umax={r.umax}")
    if r.s32min != S32_MIN:
        out.append(f"smin32={r.s32min}")
    if r.s32max != S32_MAX:
        out.append(f"smax32={r.s32max}")
    if r.u32min != 0:
        out.append(f"umin32={r.u32min}")
    if r.u32max != U32:
        out.append(f"umax32={r.u32max}")
    if r.var.mask != U64 and r.var.mask:
        out.append(f"var_off=({r.var.value:#x}; {r.var.mask:#x})")
    return out


def reg_str(r: Reg, map_names: Sequence[str] | None = None) -> str:
    t = r.type
    if t == NOT_INIT:
        return "?"
    if t == SCALAR:
        p = "P" if r.precise else ""
        if r.var.mask == 0:
            v = r.var.value
            return f"{p}{v - (1 << 64) if v >> 63 else v}"
        inner = ",".join(([f"id={r.id}"] if r.id else []) + _scalar_ranges(r))
        return f"{p}scalar({inner})"
    if t == KERNEL_VALUE:
        return "kval()"
    base = t & 0xFF
    if base == PTR_TO_STACK and r.var.mask == 0 and r.var.value == 0:
        return f"fp{r.off}" if r.frameno == 0 else f"fp[{r.frameno}]{r.off}"
    parts: list[str] = []
    if r.id:
        parts.append(f"id={r.id}")
    if r.ref_obj_id:
        parts.append(f"ref_obj_id={r.ref_obj_id}")
    if r.off:
        parts.append(f"off={r.off}")
    if base in (PTR_TO_PACKET, PTR_TO_PACKET_META):
        parts.append(f"r={r.range}")
    if base in (CONST_PTR_TO_MAP, PTR_TO_MAP_VALUE, PTR_TO_MAP_KEY) and r.map >= 0:
        name = map_names[r.map] if map_names and r.map < len(map_names) else str(r.map)
        parts.append(f"map={name}")
    if base == PTR_TO_MEM:
        parts.append(f"sz={r.mem_size}")
    if r.var.mask:
        parts.extend(_scalar_ranges(r))
    elif r.var.value:
        parts.append(f"imm={r.var.value}")
    return f"{type_str(t)}({','.join(parts)})"


def frame_str(f: Frame, map_names: Sequence[str] | None = None, only: set[int] | None = None) -> str:
    out = []
    for i, r in enumerate(f.regs):
        if r.type == NOT_INIT or (only is not None and i not in only):
            continue
        out.append(f"R{i}={reg_str(r, map_names)}")
    if only is None:
        for spi, s in enumerate(f.stack):
            kinds = s.types
            if all(k == INVALID for k in kinds):
                continue
            off = -(spi + 1) * 8
            if kinds[7] == SPILL:
                out.append(f"fp{off}={reg_str(s.reg, map_names)}")
            elif kinds[7] == DYNPTR:
                out.append(f"fp{off}=dynptr")
            elif kinds[7] == ITER:
                out.append(f"fp{off}=iter")
            else:
                out.append(f"fp{off}=" + "".join(SLOT_CHARS[k] for k in kinds))
    prefix = f"frame{f.frameno}: " if f.frameno else ""
    return prefix + " ".join(out)


def state_str(st: "State", map_names: Sequence[str] | None = None) -> str:
    return " ".join(frame_str(f, map_names) for f in st.frames)


class Log:
    """Collects log lines when the level is above 0 (nothing is formatted otherwise)."""

    def __init__(self, level: int, program) -> None:
        self.level = level
        self.lines: list[str] = []
        self.program = program
        self.map_names = [getattr(m, "name", str(m)) for m in program.maps]
        self.kfunc_names = list(program.kfuncs)

    def __bool__(self) -> bool:
        return self.level > 0

    def line(self, text: str) -> None:
        if self.level:
            self.lines.append(text)

    def insn_text(self, i: int) -> str:
        insns = self.program.insns
        return disasm.format_insn(insns, i, opcodes=True, kfunc_names=self.kfunc_names or None,
                                  map_names=self.map_names or None)

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


__all__ = ["Log", "reg_str", "frame_str", "state_str", "MISC", "ZERO"]
