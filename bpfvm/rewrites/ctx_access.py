"""convert_ctx_accesses, first half: every verified load or store of the uapi context becomes accesses of the
program type's internal model (`ProgType.convert_ctx_access`), using the field the verifier recorded in the
slot's facts (`ctx_field`). The other half, the prologue and epilogue, is in rewrites/prologue.py.

The new slots touch the model the verifier proved the context pointer to be, so their loads and stores are
marked `proved_safe` (engines run them unguarded). A type that does not convert (`converts_ctx` unset) keeps
its context accesses as they are.
"""

from __future__ import annotations

from typing import Any

from .. import isa
from ..errors import BpfvmError
from ..patcher import Edit, replace_many
from ..program import Program


def convert_ctx_accesses(program: Program, prog_type: Any) -> int:
    """Convert in place (the facts must already be in `program.aux`); returns how many accesses changed."""
    if not prog_type.converts_ctx:
        return 0
    sites = [i for i, facts in program.aux.items()
             if facts.get("ctx_field") is not None and program.insns[i].cls in (isa.LDX, isa.ST, isa.STX)]
    edits = []
    for slot in sorted(sites):
        insn = program.insns[slot]
        field = program.aux[slot]["ctx_field"]
        new = prog_type.convert_ctx_access(insn, field)
        if not new:
            raise BpfvmError(f"insn {slot}: {prog_type.name} has no conversion for context field {field.name}")
        edits.append(Edit(slot, 1, new, [_facts(program.aux[slot], insn) for insn in new]))
    replace_many(program, edits)
    program.ctx_converted = True
    return len(sites)


def _facts(old: dict[str, Any], insn: isa.Insn) -> dict[str, Any]:
    facts: dict[str, Any] = {"seen": old.get("seen", True), "ctx_converted": True}
    if insn.cls in (isa.LDX, isa.ST, isa.STX):
        facts.update(proved_safe=True, mem_region="ctx")
    return facts
