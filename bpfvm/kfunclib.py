"""Inlinable kfuncs: kfunc bodies compiled to BPF, read from function libraries (RFC patches 03 and 04).

Every global function of a library object's `.text` is an inlinable kfunc; calls in a body to undefined
symbols (`R_BPF_64_32` relocations) are calls to kernel-internal functions, kept by name. The built-in
library (`helpers/inlinable/kfuncs.o`) holds the dynptr kfuncs; users register more with
`register_kfunc_library(path)` or the CLI's `--kfuncs LIB.o`, as the RFC lets modules register theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import isa
from .errors import LoadError
from .isa import Insn

BUILTIN_LIBRARY = Path(__file__).resolve().parent.parent / "helpers" / "inlinable" / "kfuncs.o"


@dataclass(frozen=True)
class InlinableKfunc:
    """One kfunc body. Kfunc calls in `insns` index `calls` (the kernel-internal functions it calls)."""

    name: str
    insns: tuple[Insn, ...]
    calls: tuple[str, ...]
    library: str
    btf: Any = field(default=None, compare=False, repr=False)  # the library's BTF: the kfunc's prototype

    def regs_usage(self) -> "RegsUsage":
        return scan_regs_usage(self.insns)


@dataclass(frozen=True)
class RegsUsage:
    """What inlining a body must preserve: callee-saved registers it writes, its stack, whether r10 escapes."""

    used_regs: frozenset[int]
    lowest_stack_off: int
    r10_escapes: bool

    @property
    def callee_saved(self) -> list[int]:
        return [r for r in (6, 7, 8, 9) if r in self.used_regs]


def scan_regs_usage(insns: tuple[Insn, ...] | list[Insn]) -> RegsUsage:
    """Registers named by any instruction, the lowest r10-relative offset, and whether r10's value escapes
    (stored to memory or used as an ALU source), in which case the body cannot be moved into another frame."""
    used: set[int] = set()
    lowest = 0
    escapes = False
    i = 0
    while i < len(insns):
        insn = insns[i]
        used.add(insn.dst)
        used.add(insn.src)
        cls = insn.cls
        if cls in (isa.ST, isa.STX):
            if insn.dst == isa.FRAME_POINTER:
                lowest = min(lowest, insn.off)
            if cls == isa.STX and insn.src == isa.FRAME_POINTER:
                escapes = True
        elif cls == isa.LDX:
            if insn.src == isa.FRAME_POINTER:
                lowest = min(lowest, insn.off)
        elif cls in (isa.ALU, isa.ALU64):
            if insn.opcode & isa.X and insn.src == isa.FRAME_POINTER:
                escapes = True
        i += isa.insn_slots(insn)
    return RegsUsage(frozenset(used), lowest, escapes)


class KfuncLibrary:
    """The inlinable kfuncs known by name; later registrations replace earlier ones of the same name."""

    def __init__(self) -> None:
        self._kfuncs: dict[str, InlinableKfunc] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._kfuncs

    def __getitem__(self, name: str) -> InlinableKfunc:
        return self._kfuncs[name]

    def get(self, name: str) -> InlinableKfunc | None:
        return self._kfuncs.get(name)

    def names(self) -> list[str]:
        return sorted(self._kfuncs)

    def load(self, path: str | Path) -> list[str]:
        """Register every global function of the library object at `path`; returns their names."""
        added = read_library(path)
        for kfunc in added:
            self._kfuncs[kfunc.name] = kfunc
        return [k.name for k in added]

    def btfs(self) -> tuple[Any, ...]:
        """The BTF of every library, newest first: where the verifier finds inlinable kfuncs' prototypes."""
        seen: dict[int, Any] = {}
        for kfunc in reversed(list(self._kfuncs.values())):
            if kfunc.btf is not None:
                seen.setdefault(id(kfunc.btf), kfunc.btf)
        return tuple(seen.values())

    def copy(self) -> "KfuncLibrary":
        other = KfuncLibrary()
        other._kfuncs = dict(self._kfuncs)
        return other


def read_library(path: str | Path) -> list[InlinableKfunc]:
    """Parse a kfunc library object. A body may call kernel-internal functions but nothing else: no
    bpf-to-bpf calls, maps or global data, which an inlined body could not carry into a program."""
    from .elf import load_library

    obj = load_library(path)
    out = []
    for name, prog in obj.programs.items():
        where = f"{path}: kfunc {name}"
        if prog.maps:
            raise LoadError(f"{where}: inlinable kfuncs cannot use maps or global data")
        if len(prog.subprog_starts()) > 1:
            raise LoadError(f"{where}: inlinable kfuncs cannot call other BPF functions (make them static inline)")
        isa.validate_program(prog.insns)
        out.append(InlinableKfunc(name=name, insns=tuple(prog.insns), calls=tuple(prog.kfuncs), library=str(path),
                                  btf=obj.btf))
    if not out:
        raise LoadError(f"{path}: the library defines no global functions")
    return out


_default: KfuncLibrary | None = None


def default_library() -> KfuncLibrary:
    """The built-in library plus every library registered so far in this process."""
    global _default
    if _default is None:
        _default = KfuncLibrary()
        if BUILTIN_LIBRARY.exists():
            _default.load(BUILTIN_LIBRARY)
    return _default


def register_kfunc_library(path: str | Path) -> list[str]:
    """Make the inlinable kfuncs of a library object available to every later run (RFC patch 04)."""
    return default_library().load(path)
