"""From a loaded program to the xlated program an engine runs, in the order of the kernel's bpf_check():

    instantiate inlinable kfuncs (pruned)  ->  verify  ->  hard-wire dead branches  ->  remove dead code
    ->  remove nops  ->  inline kfunc bodies (plain: library bodies; pruned: the pruned instances)
    ->  remove instance subprograms

Each stage only does its own job on the one `Program` representation; the loaded program is never modified
(`prepare` works on a copy), so one object can be prepared in every mode side by side.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .errors import BpfvmError
from .kfunclib import KfuncLibrary, default_library
from .program import Program
from .rewrites.dead_code import eliminate_dead_code
from .rewrites.inline import (
    INSTANCE_KEY, InlineDecision, inlinable_call_sites, inline_calls, instance_bounds, instantiate,
    remove_instances, _body_for_program,
)

INLINE_MODES = ("none", "plain", "pruned")


@dataclass
class Prepared:
    """The xlated program, the verifier's analysis of the program it verified, and what inlining did."""

    program: Program
    mode: str
    analysis: Any = None
    decisions: list[InlineDecision] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.analysis is not None

    def log(self) -> str:
        """The verifier log followed by the inliner's per-call-site decisions."""
        parts = [self.analysis.log] if self.analysis is not None and self.analysis.log else []
        parts += [d.message() for d in self.decisions]
        return "\n".join(p.rstrip("\n") for p in parts if p) + ("\n" if parts else "")


def copy_program(program: Program) -> Program:
    """A copy whose instruction list, debug info and facts can be rewritten without touching the original."""
    clone = copy.copy(program)
    clone.insns = list(program.insns)
    clone.funcs = list(program.funcs)
    clone.line_info = list(program.line_info)
    clone.kfuncs = list(program.kfuncs)
    clone.maps = list(program.maps)
    clone.aux = copy.deepcopy(program.aux)
    return clone


def prepare(
    program: Program,
    *,
    mode: str = "none",
    verify: bool = True,
    library: KfuncLibrary | None = None,
    log_level: int = 0,
    kernel_btf: Any = None,
) -> Prepared:
    """Verify and rewrite `program` for inline `mode` ("none", "plain" or "pruned")."""
    if mode not in INLINE_MODES:
        raise BpfvmError(f"unknown inline mode {mode!r} (choose from {', '.join(INLINE_MODES)})")
    if mode == "pruned" and not verify:
        raise BpfvmError("--inline pruned needs the verifier: it prunes what verification proves dead")
    library = library if library is not None else default_library()
    prog = copy_program(program)
    instances = instantiate(prog, library) if mode == "pruned" else {}
    analysis = None
    if verify:
        from .verifier import InstanceSpec, verify as run_verifier

        specs = {slot: InstanceSpec(start, frozenset(library[_kfunc_at(prog, slot)].calls))
                 for slot, start in instances.items()}
        analysis = run_verifier(prog, log_level=log_level, kernel_btf=kernel_btf, instances=specs,
                                kfunc_btfs=library.btfs())
        eliminate_dead_code(prog, analysis)
    decisions: list[InlineDecision] = []
    if mode == "plain":
        bodies = {slot: _body_for_program(prog, library[_kfunc_at(prog, slot)].insns,
                                          library[_kfunc_at(prog, slot)].calls)
                  for slot in inlinable_call_sites(prog, library)}
        decisions = inline_calls(prog, bodies, _depths(prog, analysis))
    elif mode == "pruned":
        bounds = instance_bounds(prog)
        bodies = {}
        for slot, facts in prog.aux.items():
            name = facts.get(INSTANCE_KEY)
            if name in bounds and prog.insns[slot].is_kfunc_call():
                start, end = bounds[name]
                bodies[slot] = prog.insns[start:end]
        decisions = inline_calls(prog, bodies, _depths(prog, analysis))
        remove_instances(prog)
    return Prepared(prog, mode, analysis, decisions)


def _kfunc_at(program: Program, slot: int) -> str:
    return program.kfuncs[program.insns[slot].imm]


def _depths(program: Program, analysis: Any) -> dict[int, int] | None:
    """Verified stack depths by current subprogram start (the analysis keys them by the verified program's
    subprogram order, which dead-code removal keeps)."""
    if analysis is None:
        return None
    verified_starts = sorted(analysis.stack_depth)
    current_starts = program.subprog_starts()
    if len(verified_starts) != len(current_starts):
        return None
    return {now: analysis.stack_depth[then] for then, now in zip(verified_starts, current_starts)}
