"""The verifier's result: per-slot facts, per-subprogram stack depths, the log and the stats.

Facts reach `Program.aux` only through `Analysis.apply(program)`, which rewrites call explicitly; after that
the patcher carries them along as slots move. Keys written per slot (only for slots the facts concern):

  seen                 bool  the verifier reached the slot on some path
  true_branch_taken    bool  conditional jumps: the jump was possible on some path (RFC patch 01)
  false_branch_taken   bool  conditional jumps: the fall-through was possible on some path
  proved_safe          bool  loads/stores: on every path the address was inside a region of known size
  mem_region           str   what that region was (stack, map_value, packet, ctx, mem, map_key, kernel, mixed)
  ctx_field            CtxField  context accesses: field name, field offset/size, access offset/size
  kfunc_instance       int   kfunc calls with an instance: start slot of the instance body
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..program import Program


@dataclass
class Stats:
    processed: int = 0
    max_states_per_insn: int = 0
    total_states: int = 0
    peak_states: int = 0
    mark_read: int = 0

    def line(self, limit: int = 1_000_000) -> str:
        return (f"processed {self.processed} insns (limit {limit}) max_states_per_insn {self.max_states_per_insn} "
                f"total_states {self.total_states} peak_states {self.peak_states} mark_read {self.mark_read}")


@dataclass
class Analysis:
    program: Program
    aux: dict[int, dict[str, Any]]
    stack_depth: dict[int, int]
    log: str
    stats: Stats
    instances: dict[int, int] = field(default_factory=dict)
    limit: int = 1_000_000
    _applied: set[int] = field(default_factory=set, repr=False)

    @property
    def seen(self) -> list[bool]:
        return [bool(self.aux.get(i, {}).get("seen")) for i in range(len(self.program.insns))]

    @property
    def true_branch_taken(self) -> list[bool]:
        return [bool(self.aux.get(i, {}).get("true_branch_taken")) for i in range(len(self.program.insns))]

    @property
    def false_branch_taken(self) -> list[bool]:
        return [bool(self.aux.get(i, {}).get("false_branch_taken")) for i in range(len(self.program.insns))]

    def stats_line(self) -> str:
        return self.stats.line(self.limit)

    def apply(self, program: Program | None = None) -> Program:
        """Merge the facts into `program.aux` (default: the verified program). Idempotent per program, so
        that rewrites may call it first without clobbering facts that have since moved."""
        program = program if program is not None else self.program
        if id(program) in self._applied:
            return program
        if len(program.insns) != len(self.program.insns):
            raise ValueError("the analysis belongs to a program of a different length")
        for i, facts in self.aux.items():
            program.aux.setdefault(i, {}).update(facts)
        for i in range(len(program.insns)):
            program.aux.setdefault(i, {}).setdefault("seen", False)
        self._applied.add(id(program))
        return program
