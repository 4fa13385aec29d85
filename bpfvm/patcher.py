"""The one instruction patcher every rewrite uses: replace, insert or remove instruction slots while keeping
everything that refers to slot numbers right (the kernel's bpf_patch_insn_data, verifier_remove_insns,
bpf_adj_branches, adjust_subprog_starts, bpf_adj_linfo and adjust_insn_aux_data are the model):

  * jump offsets (`off`, and `imm` of `gotol`/ja32), local call offsets (`imm` of `call pc+N`) and
    function addresses (`imm` of `lddw rX, subprog[...]`) of every instruction outside the edited range;
  * subprogram starts (`Program.funcs`);
  * BTF line info (`Program.line_info`);
  * per-slot facts (`Program.aux`).

All edits work in place on the Program and return it. `replace(program, start, count, new)` is the
general form: slots [start, start+count) become `new` (a lddw is two slots). A jump from outside into the
replaced range lands on the first new slot (so "insert before slot s" keeps jumps to s on the inserted code,
as the kernel's patches do); jumps inside `new` are relative and kept as given. Removing slots that a
surviving jump still targets is an error, as is an offset that no longer fits in 16 bits.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, NamedTuple, Sequence

from . import isa
from .errors import BpfvmError
from .isa import Insn
from .program import FuncInfo, LineInfo, Program

S16_MIN, S16_MAX = -(1 << 15), (1 << 15) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1


class PatchError(BpfvmError):
    """An edit that would leave the program inconsistent."""


def _ref_kind(insn: Insn) -> str | None:
    """Which field of `insn` holds a slot-relative reference: 'off', 'imm', or None."""
    if insn.opcode == isa.OP_LDDW:
        return "imm" if insn.src == isa.PSEUDO_FUNC else None
    cls = insn.cls
    if cls not in (isa.JMP, isa.JMP32):
        return None
    op = insn.opcode & 0xF0
    if op == isa.EXIT or insn.opcode == isa.OP_CALLX:
        return None
    if op == isa.CALL:
        return "imm" if insn.src == isa.PSEUDO_CALL else None
    if insn.opcode == isa.OP_JA32:
        return "imm"
    return "off"


def replace(program: Program, start: int, count: int, new: Sequence[Insn], *,
            aux: Sequence[dict[str, Any] | None] | None = None, retarget: bool = False) -> Program:
    """Replace slots [start, start + count) with `new`. `aux` gives the facts of the new slots; by default
    the facts of the last replaced slot go to the last new slot and the others inherit its `seen` (as the
    kernel's adjust_insn_aux_data does for a patch that ends with the original instruction).

    Removing slots (empty `new`) that a surviving jump targets is an error unless `retarget`, when such
    jumps go to the slot after the removed range (right for removed no-ops, as bpf_adj_branches does)."""
    return replace_many(program, [Edit(start, count, list(new), aux)], retarget=retarget)


class Edit(NamedTuple):
    """Slots [start, start + count) become `new` (facts `aux`; None: inherited as `replace` says)."""

    start: int
    count: int
    new: Sequence[Insn]
    aux: Sequence[dict[str, Any] | None] | None = None


def replace_many(program: Program, edits: Sequence[Edit], *, retarget: bool = False) -> Program:
    """Apply many non-overlapping edits in one pass over the program: the same result as applying them one
    by one from the last with `replace`, in time linear in the program instead of its size times the number
    of edits (rewrites patch every call site or context access; dead-code removal removes every dead run)."""
    insns = program.insns
    n = len(insns)
    edits = sorted(edits, key=lambda e: (e.start, e.count))
    starts = isa.instruction_starts(insns)
    for k, e in enumerate(edits):
        if e.start < 0 or e.count < 0 or e.start + e.count > n:
            raise PatchError(f"patch range [{e.start}, {e.start + e.count}) is outside the program of {n} slots")
        if (e.start < n and not starts[e.start]) or (e.start + e.count < n and not starts[e.start + e.count]):
            raise PatchError(f"patch range [{e.start}, {e.start + e.count}) splits a lddw")
        if k and e.start < edits[k - 1].start + edits[k - 1].count + (edits[k - 1].count == 0):
            raise PatchError(f"patch ranges at {edits[k - 1].start} and {e.start} overlap")
    shift_before = [0]  # total length change of the edits before edit k
    for e in edits:
        shift_before.append(shift_before[-1] + len(e.new) - e.count)
    edit_starts = [e.start for e in edits]

    def locate(t: int) -> tuple[int, bool]:
        """New slot of old slot `t`, and whether `t` was inside an edited range (then: where its edit starts)."""
        k = bisect_right(edit_starts, t) - 1
        if k >= 0 and t < edits[k].start + edits[k].count:
            return edits[k].start + shift_before[k], True
        return t + shift_before[k + 1], False

    out: list[Insn] = []
    k = 0
    i = 0
    while i < n:
        if k < len(edits) and i == edits[k].start:
            out.extend(edits[k].new)
            i += edits[k].count
            k += 1
            continue
        insn = insns[i]
        kind = _ref_kind(insn)
        if kind is not None:
            rel = insn.imm if kind == "imm" else insn.off
            target = i + 1 + rel
            new_target, inside = locate(target)
            if inside and not retarget:
                j = bisect_right(edit_starts, target) - 1
                if not edits[j].new:
                    raise PatchError(f"insn {i} jumps into removed slots "
                                     f"[{edits[j].start}, {edits[j].start + edits[j].count})")
            new_rel = new_target - (i + shift_before[k]) - 1
            lo, hi = (S32_MIN, S32_MAX) if kind == "imm" else (S16_MIN, S16_MAX)
            if not lo <= new_rel <= hi:
                raise PatchError(f"insn {i}: jump offset {new_rel} does not fit after patching")
            insn = insn._replace(**{kind: new_rel})
        out.append(insn)
        if insn.opcode == isa.OP_LDDW and i + 1 < n:
            out.append(insns[i + 1])
            i += 2
            continue
        i += 1
    for e in edits[k:]:  # edits at the very end (inserting after the last slot)
        out.extend(e.new)
    program.insns = out
    for k in range(len(edits) - 1, -1, -1):  # few subprograms: edit by edit, from the last, as `replace` would
        e = edits[k]
        length_after = n + shift_before[-1] - shift_before[k]
        _adjust_funcs(program, e.start, e.count, len(e.new), length_after)
    _adjust_line_info(program, edits, locate, n)
    _adjust_aux(program, edits, shift_before, locate)
    return program


def _adjust_funcs(program: Program, start: int, count: int, new_len: int, length: int | None = None) -> None:
    """`length`: the program's length after this edit (default: as it is now)."""
    length = len(program.insns) if length is None else length
    delta = new_len - count
    end_old = start + count
    funcs: list[FuncInfo] = []
    for f in program.funcs:
        if f.insn < start:
            funcs.append(f)
        elif f.insn >= end_old:
            funcs.append(FuncInfo(f.insn + delta, f.name, f.type_id))
        elif new_len:
            if f.insn == start:
                funcs.append(f)
            # a subprogram starting inside a replaced range has no start any more
        else:
            # removed: a subprogram that starts inside the range survives (starting at `start`) only if
            # it extends beyond it, i.e. no other subprogram starts before the range ends
            later = [g.insn for g in program.funcs if start <= g.insn < end_old and g.insn > f.insn]
            next_start = min([g.insn for g in program.funcs if g.insn >= end_old] or [length])
            if not later and next_start > end_old and start < length:
                funcs.append(FuncInfo(start, f.name, f.type_id))
    seen: set[int] = set()
    program.funcs = [f for f in funcs if not (f.insn in seen or seen.add(f.insn))]


def _adjust_line_info(program: Program, edits: Sequence[Edit], locate: Any, n: int) -> None:
    """Entries outside every edit move with their slot; of those inside an edit, the first goes to the new
    code's first slot, or, for a removal, the last goes to the slot after it when that slot has none."""
    at = {li.insn for li in program.line_info}
    edit_starts = [e.start for e in edits]
    out: list[LineInfo] = []
    inside: dict[int, list[LineInfo]] = {}
    for li in program.line_info:
        new_slot, is_inside = locate(li.insn)
        if is_inside:
            inside.setdefault(bisect_right(edit_starts, li.insn) - 1, []).append(li)
        else:
            out.append(LineInfo(new_slot, li.file, li.line, li.col, li.text))
    for k, entries in inside.items():
        e = edits[k]
        end = e.start + e.count
        if e.new:
            first = entries[0]
            out.append(LineInfo(locate(e.start)[0], first.file, first.line, first.col, first.text))
        elif end not in at and end < n:
            last = entries[-1]  # it still describes the slots after the removed range
            out.append(LineInfo(locate(end)[0], last.file, last.line, last.col, last.text))
    out.sort(key=lambda li: li.insn)
    program.line_info = out


def _adjust_aux(program: Program, edits: Sequence[Edit], shift_before: list[int], locate: Any) -> None:
    old = program.aux
    new_aux: dict[int, dict[str, Any]] = {}
    for slot, facts in old.items():
        new_slot, inside = locate(slot)
        if not inside:
            new_aux[new_slot] = facts
    for k, e in enumerate(edits):
        first, new_len = e.start + shift_before[k], len(e.new)
        if not new_len:
            continue
        if e.aux is not None:
            for j, facts in enumerate(e.aux):
                if facts is not None:
                    new_aux[first + j] = dict(facts)
        elif e.count:
            last = old.get(e.start + e.count - 1)
            seen = (last or {}).get("seen")
            for j in range(new_len - 1):
                if seen is not None:
                    new_aux[first + j] = {"seen": seen}
            if last is not None:
                new_aux[first + new_len - 1] = dict(last)
    program.aux = new_aux


def patch_insn(program: Program, slot: int, new: Sequence[Insn], **kw: Any) -> Program:
    """Replace the instruction at `slot` (both slots of a lddw) with `new`."""
    width = 2 if program.insns[slot].opcode == isa.OP_LDDW else 1
    return replace(program, slot, width, new, **kw)


def insert_before(program: Program, slot: int, new: Sequence[Insn], *,
                  aux: Sequence[dict[str, Any] | None] | None = None) -> Program:
    """Insert `new` before the instruction at `slot`; jumps to `slot` now reach the inserted code first."""
    if slot == len(program.insns):
        return replace(program, slot, 0, new, aux=list(aux) if aux is not None else [None] * len(new))
    width = 2 if program.insns[slot].opcode == isa.OP_LDDW else 1
    old = program.insns[slot:slot + width]
    facts = list(aux) if aux is not None else [None] * len(new)
    facts += [program.aux.get(slot + k) for k in range(width)]
    return replace(program, slot, width, list(new) + old, aux=facts)


def insert_after(program: Program, slot: int, new: Sequence[Insn], *,
                 aux: Sequence[dict[str, Any] | None] | None = None) -> Program:
    """Insert `new` after the instruction at `slot`: it runs when `slot` falls through, while jumps to the
    next instruction still go straight to it."""
    width = 2 if program.insns[slot].opcode == isa.OP_LDDW else 1
    return replace(program, slot + width, 0, new, aux=list(aux) if aux is not None else [None] * len(new))


def remove(program: Program, start: int, count: int, *, retarget: bool = False) -> Program:
    """Remove slots [start, start + count) (verifier_remove_insns); see `replace` for `retarget`."""
    return replace(program, start, count, [], retarget=retarget)


def remove_runs(program: Program, runs: Sequence[tuple[int, int]], *, retarget: bool = False) -> Program:
    """Remove many runs of slots, each `(start, count)`, in one pass (adjacent runs merge into one)."""
    merged: list[list[int]] = []
    for start, count in sorted(r for r in runs if r[1] > 0):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + count)
        else:
            merged.append([start, start + count])
    return replace_many(program, [Edit(start, end - start, []) for start, end in merged], retarget=retarget)
