"""The one program representation that flows through decode, verify, rewrite and execute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .isa import OP_LDDW, PSEUDO_FUNC, Insn


@dataclass(frozen=True)
class LineInfo:
    """BTF line info: the C source line an instruction slot came from."""

    insn: int
    file: str
    line: int
    col: int
    text: str


@dataclass(frozen=True)
class FuncInfo:
    """A subprogram start and its name (from BTF func info, or invented as `func_N`)."""

    insn: int
    name: str
    type_id: int = 0


@dataclass(eq=False)
class MapSpec:
    """A map as an object file declares it; `helpers.maps` instantiates it. Types are uapi BPF_MAP_TYPE_* ids.

    `initial` holds the contents of a global-data section (.data, .rodata, .bss ...), which is an ARRAY map of
    one element whose value is the section. `inner` is the template of a map-in-map's inner maps.
    """

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    initial: bytes | None = None
    inner: "MapSpec | None" = None
    readonly: bool = False
    section: str = ""
    btf_key_type: int = 0
    btf_value_type: int = 0
    pinning: int = 0
    spin_lock_off: int | None = None  # where the value's `struct bpf_spin_lock` is (from BTF), if it has one


@dataclass
class Program:
    """A BPF program: instruction slots plus everything a later stage needs to know about them.

    `maps` are the map objects referenced by `lddw` with src PSEUDO_MAP_IDX / PSEUDO_MAP_IDX_VALUE (imm is an
    index into this list); `kfuncs` names the kfuncs that `call` with src PSEUDO_KFUNC_CALL reaches (imm is an
    index into this list). `aux` holds per-slot facts that rewrites carry along.
    """

    insns: list[Insn]
    name: str = "prog"
    prog_type: str = "unspec"
    attach_type: str = ""  # the kernel's expected_attach_type, lowercase without BPF_ (e.g. cgroup_inet_egress)
    section: str = ""
    funcs: list[FuncInfo] = field(default_factory=list)
    line_info: list[LineInfo] = field(default_factory=list)
    maps: list[Any] = field(default_factory=list)
    kfuncs: list[str] = field(default_factory=list)
    aux: dict[int, dict[str, Any]] = field(default_factory=dict)
    license: str = ""
    btf: Any = None
    ctx_converted: bool = False  # convert_ctx_accesses ran: r1 is the internal context model, not the uapi one

    def __len__(self) -> int:
        return len(self.insns)

    def subprog_starts(self) -> list[int]:
        """Sorted starts of every subprogram: 0, BTF func info, local call targets and callback addresses."""
        return subprog_starts(self.insns, extra=[f.insn for f in self.funcs])

    def func_name(self, start: int) -> str:
        for f in self.funcs:
            if f.insn == start:
                return f.name
        return self.name if start == 0 else f"func_{start}"

    def source_line(self, insn: int) -> LineInfo | None:
        """The line info entry that covers slot `insn` (the last one at or before it)."""
        best = None
        for li in self.line_info:
            if li.insn <= insn and (best is None or li.insn >= best.insn):
                best = li
        return best


def subprog_starts(insns: list[Insn], extra: list[int] | tuple[int, ...] = ()) -> list[int]:
    starts = {0, *extra}
    i = 0
    n = len(insns)
    while i < n:
        insn = insns[i]
        if insn.is_local_call():
            starts.add(i + 1 + insn.imm)
        elif insn.opcode == OP_LDDW:
            if insn.src == PSEUDO_FUNC:
                starts.add(i + 1 + insn.imm)
            i += 2
            continue
        i += 1
    return sorted(s for s in starts if 0 <= s < n)
