"""From a loaded program to the xlated program an engine runs, in the order of the kernel's bpf_check():

    instantiate inlinable kfuncs (pruned)  ->  verify  ->  inline bpf_loop calls  ->  hard-wire dead branches
    ->  remove dead code  ->  remove nops  ->  convert_ctx_accesses (context accesses onto the type's model; its prologue and
    epilogue)  ->  inline kfunc bodies (plain: library bodies; pruned: the pruned instances)
    ->  remove instance subprograms

The program type (bpfvm.progtypes) decides the conversions and the prologue/epilogue; those two snippets
are trusted code, processed as stubs of their own by `_snippet` (see bpfvm.rewrites.prologue) and spliced
in. Unverified programs are not converted: they run against the hooked uapi context.

Each stage only does its own job on the one `Program` representation; the loaded program is never modified
(`prepare` works on a copy), so one object can be prepared in every mode side by side.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import isa
from .errors import BpfvmError, VerifierError
from .kfunclib import KfuncLibrary, default_library
from .program import Program
from .progtypes import ProgType, find_prog_type
from .rewrites import prologue as pro
from .rewrites.bpf_loop import inline_bpf_loops
from .rewrites.ctx_access import convert_ctx_accesses
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
    notes: list[str] = field(default_factory=list)  # what happened to the type's prologue and epilogue

    @property
    def verified(self) -> bool:
        return self.analysis is not None

    def log(self) -> str:
        """The verifier log followed by the inliner's per-call-site decisions."""
        parts = [self.analysis.log] if self.analysis is not None and self.analysis.log else []
        parts += [d.message() for d in self.decisions] + self.notes
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
    return _prepare(copy_program(program), mode, verify, library, log_level, kernel_btf, snippet=False)


def _prepare(prog: Program, mode: str, verify: bool, library: KfuncLibrary, log_level: int, kernel_btf: Any,
             *, snippet: bool) -> Prepared:
    """The stages on `prog` itself. A `snippet` stub (trusted code) is neither call-checked nor converted."""
    prog_type = None if snippet else find_prog_type(prog.prog_type)
    if prog_type is not None:
        prog_type.check_calls(prog)
    instances = instantiate(prog, library) if mode == "pruned" else {}
    analysis = None
    decisions: list[InlineDecision] = []
    notes: list[str] = []
    ctx_slot = 0  # stack bytes below the main function's that the epilogue's context slot takes
    if verify:
        from .verifier import InstanceSpec, verify as run_verifier

        specs = {slot: InstanceSpec(start, frozenset(library[_kfunc_at(prog, slot)].calls))
                 for slot, start in instances.items()}
        analysis = run_verifier(prog, log_level=log_level, kernel_btf=kernel_btf, instances=specs,
                                kfunc_btfs=library.btfs())
        analysis.apply(prog)
        loop_stack = inline_bpf_loops(prog, analysis.stack_depth)
        eliminate_dead_code(prog, analysis)
        if prog_type is not None:
            ctx_slot = _convert(prog, prog_type, analysis, mode, library, kernel_btf, decisions, notes,
                                loop_stack.get(0, 0))
    depths = _depths(prog, analysis)
    if depths is not None:
        starts = sorted(depths)
        for sub, grow in loop_stack.items():
            depths[starts[sub]] += grow
    if depths is not None and ctx_slot:
        depths[0] = max(depths[0], ctx_slot)
    if mode == "plain":
        bodies = {slot: _body_for_program(prog, library[_kfunc_at(prog, slot)].insns,
                                          library[_kfunc_at(prog, slot)].calls)
                  for slot in inlinable_call_sites(prog, library)}
        decisions += inline_calls(prog, bodies, depths)
    elif mode == "pruned":
        bounds = instance_bounds(prog)
        bodies = {}
        for slot, facts in prog.aux.items():
            name = facts.get(INSTANCE_KEY)
            if name in bounds and prog.insns[slot].is_kfunc_call():
                start, end = bounds[name]
                bodies[slot] = prog.insns[start:end]
        decisions += inline_calls(prog, bodies, depths)
        remove_instances(prog)
    return Prepared(prog, mode, analysis, decisions, notes)


def _convert(prog: Program, prog_type: ProgType, analysis: Any, mode: str, library: KfuncLibrary,
             kernel_btf: Any, decisions: list[InlineDecision], notes: list[str], main_extra: int = 0) -> int:
    """convert_ctx_accesses: context accesses, then the prologue and epilogue. Returns the stack bytes the
    epilogue's context slot adds below the main function's verified stack (0 without an epilogue)."""
    convert_ctx_accesses(prog, prog_type)
    direct_write = any(insn.cls in (isa.ST, isa.STX) and prog.aux.get(i, {}).get("mem_region") == "packet"
                       for i, insn in enumerate(prog.insns))
    main_depth = analysis.stack_depth.get(0, 0) + main_extra  # with the stack inline bpf_loops took
    ctx_off = pro.ctx_stack_offset(main_depth)
    pro_snippet = prog_type.gen_prologue(prog, direct_write)
    epi_snippet = prog_type.gen_epilogue(prog, ctx_off)
    ret_range = prog_type.return_range(prog.attach_type)
    prologue = epilogue = None
    if pro_snippet is not None:
        tail = pro.prologue_tail(ret_range[0] if ret_range is not None else 0)
        stub = pro.prologue_stub(prog, pro_snippet, tail)
        # a jump back to slot 0 reaches the prologue too (as in the kernel), in a state its stub cannot stand for
        prologue = _snippet(stub, 0, len(tail), "prologue", mode, library, kernel_btf, decisions, notes,
                            verify=not _jumps_to_start(prog))
    if epi_snippet is not None:
        pro.check_ctx_slot(main_depth)
        stub, head, tail_len = pro.epilogue_stub(prog, epi_snippet, ctx_off, ret_range)
        epilogue = _snippet(stub, head, tail_len, "epilogue", mode, library, kernel_btf, decisions, notes,
                            verify=True)
    pro.splice(prog, prologue, epilogue, ctx_off)
    return -ctx_off if epilogue is not None else 0


def _snippet(stub: Program, prefix: int, suffix: int, what: str, mode: str, library: KfuncLibrary,
             kernel_btf: Any, decisions: list[InlineDecision], notes: list[str], *, verify: bool) -> "pro.Piece":
    """A prologue or epilogue stub through the stages: verified when the type's rules allow what it does,
    so that its kfunc calls get pruned instances; else, like all such code in the kernel, unverified (plain
    library bodies under pruned)."""
    size = len(stub.insns) - prefix - suffix
    done = None
    if verify:
        try:
            done = _prepare(copy_program(stub), "pruned" if mode == "pruned" else "none", True, library, 0,
                            kernel_btf, snippet=True)
            notes.append(f"{what}: {size} insns, verified in its call site's context")
        except VerifierError as exc:
            notes.append(f"{what}: {size} insns, trusted and not verified ({getattr(exc, 'reason', exc)})")
    else:
        notes.append(f"{what}: {size} insns, trusted and not verified (the program jumps back to its start)")
    if done is None:
        done = _prepare(copy_program(stub), "plain" if mode == "pruned" else "none", False, library, 0,
                        kernel_btf, snippet=True)
    if not _same_frame(stub.insns, done.program.insns, prefix, suffix):
        raise BpfvmError(f"{stub.prog_type} {what}: never reaches the program (it does not fall through)")
    decisions += [InlineDecision(d.slot - prefix, f"{d.kfunc} ({what})", d.inlined, d.reason)
                  for d in done.decisions]
    return pro.piece_of(done.program, prefix, suffix, done.verified, done.decisions)


def _jumps_to_start(program: Program) -> bool:
    i = 0
    while i < len(program.insns):
        insn = program.insns[i]
        if insn.cls in (isa.JMP, isa.JMP32) and insn.opcode & 0xF0 not in (isa.CALL, isa.EXIT) \
                and i + 1 + insn.jump_offset() == 0:
            return True
        i += isa.insn_slots(insn)
    return False


def _same_frame(before: list[isa.Insn], after: list[isa.Insn], prefix: int, suffix: int) -> bool:
    """Whether the stub's own slots around the snippet survived the stages (the header's jumps still reaching
    the tail), so that the processed snippet is what lies between them."""
    if len(after) < prefix + suffix or after[len(after) - suffix:] != before[len(before) - suffix:]:
        return False
    for k in range(prefix):
        old, new = before[k], after[k]
        if old.is_cond_jump():
            if (old.opcode, old.dst, old.imm) != (new.opcode, new.dst, new.imm) or \
                    k + 1 + new.off != len(after) - suffix:
                return False
        elif old != new:
            return False
    return True


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
