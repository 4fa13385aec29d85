"""A generated program before linking: functions of symbolic code (labels, jumps, calls to other functions by
index, map loads by map index, kfunc calls by name), its maps and program type.

`to_program()` links it the way `bpfvm.elf` links a loaded object (entry first, then each subprogram depth
first in call order), so the fast path the fuzzer takes and `bpfvm.load(to_elf())` give the same instructions;
`to_elf()` writes an object that bpftool can load into the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import isa
from ..isa import Insn
from ..program import FuncInfo, MapSpec, Program
from .elfwriter import R_BPF_64_32, R_BPF_64_64, ElfFunc, write_object

SECTIONS = {"sched_cls": "tc", "xdp": "xdp", "socket_filter": "socket"}
MAP_TYPE_IDS = {"hash": 1, "array": 2, "ringbuf": 27}


@dataclass(frozen=True)
class MapDef:
    name: str
    type: str  # "array", "hash" or "ringbuf"
    key_size: int
    value_size: int
    max_entries: int

    def btf_fields(self) -> dict[str, int]:
        fields = {"type": MAP_TYPE_IDS[self.type], "max_entries": self.max_entries}
        if self.type != "ringbuf":
            fields.update(key_size=self.key_size, value_size=self.value_size)
        return fields

    def spec(self) -> MapSpec:
        key, value = (0, 0) if self.type == "ringbuf" else (self.key_size, self.value_size)
        return MapSpec(self.name, MAP_TYPE_IDS[self.type], key, value, self.max_entries, section=".maps")


@dataclass(frozen=True)
class Label:
    id: int


@dataclass(frozen=True)
class Jump:
    """A jump (conditional or not) to a label; the offset is filled in when the function is resolved."""

    insn: Insn
    label: int


@dataclass(frozen=True)
class Call:
    func: int  # index into GenProgram.funcs


@dataclass(frozen=True)
class MapLoad:
    dst: int
    map: int  # index into GenProgram.maps


@dataclass(frozen=True)
class KfuncCall:
    name: str


@dataclass(frozen=True)
class FuncAddr:
    """`dst = &func` (lddw of a function: the callback argument of bpf_loop)."""

    dst: int
    func: int  # index into GenProgram.funcs


Item = Insn | Label | Jump | Call | MapLoad | KfuncCall | FuncAddr


class Code:
    """The symbolic code of one function, appended to by the generator."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._next_label = 0

    def new_label(self) -> int:
        self._next_label += 1
        return self._next_label

    def place(self, label: int) -> None:
        self.items.append(Label(label))

    def emit(self, *insns: Insn) -> None:
        self.items.extend(insns)

    def jump(self, insn: Insn, label: int) -> None:
        self.items.append(Jump(insn, label))

    def resolve(self) -> tuple[list[Insn], dict[int, tuple[str, int | str]]]:
        """Instructions with jump offsets filled in, and slot -> ("call", func) / ("funcaddr", func) / ("map", idx)
        / ("kfunc", name)."""
        where: dict[int, int] = {}
        slot = 0
        for item in self.items:
            if isinstance(item, Label):
                where[item.id] = slot
            else:
                slot += 2 if isinstance(item, (MapLoad, FuncAddr)) else 1
        insns: list[Insn] = []
        refs: dict[int, tuple[str, int | str]] = {}
        for item in self.items:
            if isinstance(item, Label):
                continue
            if isinstance(item, Insn):
                insns.append(item)
            elif isinstance(item, Jump):
                rel = where[item.label] - len(insns) - 1
                insn = item.insn._replace(imm=rel) if item.insn.opcode == isa.OP_JA32 else item.insn._replace(off=rel)
                insns.append(insn)
            elif isinstance(item, Call):
                refs[len(insns)] = ("call", item.func)
                insns.append(Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, -1))
            elif isinstance(item, MapLoad):
                refs[len(insns)] = ("map", item.map)
                insns.extend(isa.lddw_pair(item.dst, 0))
            elif isinstance(item, FuncAddr):
                refs[len(insns)] = ("funcaddr", item.func)
                insns.extend(isa.lddw_pair(item.dst, 0))
            else:
                refs[len(insns)] = ("kfunc", item.name)
                insns.append(Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, -1))
        return insns, refs


@dataclass
class GenProgram:
    """funcs[0] is the program; the others are its subprograms (static functions in `.text`)."""

    prog_type: str
    funcs: list[Code]
    maps: list[MapDef] = field(default_factory=list)
    name: str = "prog"
    _specs: list[MapSpec] = field(default_factory=list, repr=False, compare=False)

    def kfunc_names(self) -> list[str]:
        out: list[str] = []
        for code in self.funcs:
            for item in code.items:
                if isinstance(item, KfuncCall) and item.name not in out:
                    out.append(item.name)
        return out

    def func_name(self, index: int) -> str:
        return self.name if index == 0 else f"sub{index}"

    def to_program(self) -> Program:
        """Link as `bpfvm.elf` does: map and kfunc tables in order of first reference."""
        resolved = [code.resolve() for code in self.funcs]
        insns: list[Insn] = []
        base: dict[int, int] = {}
        maps: list[int] = []
        kfuncs: list[str] = []

        def append(index: int) -> None:
            base[index] = len(insns)
            code, refs = resolved[index]
            start = len(insns)
            insns.extend(code)
            for slot, (kind, what) in sorted(refs.items()):
                pos = start + slot
                if kind in ("call", "funcaddr"):
                    assert isinstance(what, int)
                    if what not in base:
                        append(what)
                    src = isa.PSEUDO_CALL if kind == "call" else isa.PSEUDO_FUNC
                    insns[pos] = insns[pos]._replace(src=src, imm=base[what] - pos - 1)
                elif kind == "kfunc":
                    if what not in kfuncs:
                        kfuncs.append(str(what))
                    insns[pos] = insns[pos]._replace(src=isa.PSEUDO_KFUNC_CALL, imm=kfuncs.index(str(what)))
                else:
                    if what not in maps:
                        maps.append(int(what))
                    insns[pos] = insns[pos]._replace(src=isa.PSEUDO_MAP_IDX, imm=maps.index(int(what)))

        append(0)
        specs = self.map_specs()
        funcs = [FuncInfo(start, self.func_name(i)) for i, start in sorted(base.items(), key=lambda kv: kv[1])]
        return Program(insns=insns, name=self.name, prog_type=self.prog_type, section=SECTIONS[self.prog_type],
                       funcs=funcs, maps=[specs[i] for i in maps], kfuncs=kfuncs, license="GPL")

    def map_specs(self) -> list[MapSpec]:
        """One MapSpec per map (cached, so programs and objects built from this share them)."""
        if len(self._specs) != len(self.maps):
            self._specs = [m.spec() for m in self.maps]
        return self._specs

    def to_elf(self) -> bytes:
        funcs = []
        for i, code in enumerate(self.funcs):
            insns, refs = code.resolve()
            relocs: dict[int, tuple[int, str]] = {}
            for slot, (kind, what) in refs.items():
                if kind == "call":
                    relocs[slot] = (R_BPF_64_32, self.func_name(int(what)))
                elif kind == "funcaddr":
                    relocs[slot] = (R_BPF_64_64, self.func_name(int(what)))
                elif kind == "kfunc":
                    relocs[slot] = (R_BPF_64_32, str(what))
                else:
                    relocs[slot] = (R_BPF_64_64, self.maps[int(what)].name)
            section = SECTIONS[self.prog_type] if i == 0 else ".text"
            funcs.append(ElfFunc(self.func_name(i), isa.encode(insns), section, i == 0, relocs))
        return write_object(funcs, [(m.name, m.btf_fields()) for m in self.maps], self.kfunc_names())

    def object_file(self):
        """An `ObjectFile` for `bpfvm.api.BpfObject` without going through ELF (the fuzzer's fast path)."""
        from ..elf import ObjectFile

        return ObjectFile(programs={self.name: self.to_program()}, maps=self.map_specs(), license="GPL",
                          path=f"<generated {self.name}>")


def program_elf(program: Program) -> bytes:
    """An object holding one single-function `Program` (kfunc calls become extern relocations), so hand-written
    or assembled programs can be loaded into the kernel too. Programs with maps or subprograms are refused."""
    from ..errors import BpfvmError

    if program.maps or len(program.subprog_starts()) > 1:
        raise BpfvmError("program_elf writes single-function programs without maps")
    insns, relocs = [], {}
    for i, insn in enumerate(program.insns):
        if insn.is_kfunc_call():
            relocs[i] = (R_BPF_64_32, program.kfuncs[insn.imm])
            insn = insn._replace(src=isa.PSEUDO_CALL, imm=-1)
        insns.append(insn)
    func = ElfFunc(program.name, isa.encode(insns), SECTIONS[program.prog_type], True, relocs)
    return write_object([func], [], list(program.kfuncs))
