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
from typing import Any, Sequence

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
    insns = program.insns
    n = len(insns)
    if start < 0 or count < 0 or start + count > n:
        raise PatchError(f"patch range [{start}, {start + count}) is outside the program of {n} slots")
    starts = isa.instruction_starts(insns)
    if start < n and not starts[start] or (start + count < n and not starts[start + count]):
        raise PatchError(f"patch range [{start}, {start + count}) splits a lddw")
    new = list(new)
    new_len = len(new)
    delta = new_len - count
    end_old = start + count

    def map_slot(t: int) -> int:
        if t < start:
            return t
        if t >= end_old:
            return t + delta
        return start

    out: list[Insn] = []
    inserted = False
    i = 0
    while i < n:
        if i == start and not inserted:
            out.extend(new)
            inserted = True
            i = end_old
            if i >= n:
                break
            continue
        insn = insns[i]
        kind = _ref_kind(insn)
        if kind is not None:
            rel = insn.imm if kind == "imm" else insn.off
            target = i + 1 + rel
            if start <= target < end_old and new_len == 0 and not retarget:
                raise PatchError(f"insn {i} jumps into removed slots [{start}, {end_old})")
            new_rel = map_slot(target) - map_slot(i) - 1
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
    if start == n and not inserted:
        out.extend(new)
    program.insns = out
    _adjust_funcs(program, start, count, new_len)
    _adjust_line_info(program, start, count, new_len)
    _adjust_aux(program, start, count, new_len, aux)
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


def _adjust_line_info(program: Program, start: int, count: int, new_len: int) -> None:
    delta = new_len - count
    end_old = start + count
    out: list[LineInfo] = []
    inside: list[LineInfo] = []
    for li in program.line_info:
        if li.insn < start:
            out.append(li)
        elif li.insn >= end_old:
            out.append(LineInfo(li.insn + delta, li.file, li.line, li.col, li.text))
        else:
            inside.append(li)
    if inside:
        if new_len:
            first = inside[0]
            out.append(LineInfo(start, first.file, first.line, first.col, first.text))
        elif not any(li.insn == end_old for li in program.line_info) and end_old < len(program.insns) + count:
            last = inside[-1]  # it still describes the slots after the removed range
            out.append(LineInfo(start, last.file, last.line, last.col, last.text))
    out.sort(key=lambda li: li.insn)
    program.line_info = out


def _adjust_aux(program: Program, start: int, count: int, new_len: int,
                aux: Sequence[dict[str, Any] | None] | None) -> None:
    delta = new_len - count
    end_old = start + count
    old = program.aux
    new_aux: dict[int, dict[str, Any]] = {}
    for k, v in old.items():
        if k < start:
            new_aux[k] = v
        elif k >= end_old:
            new_aux[k + delta] = v
    if new_len:
        if aux is not None:
            for j, facts in enumerate(aux):
                if facts is not None:
                    new_aux[start + j] = dict(facts)
        elif count:
            last = old.get(end_old - 1)
            seen = (last or {}).get("seen")
            for j in range(new_len - 1):
                if seen is not None:
                    new_aux[start + j] = {"seen": seen}
            if last is not None:
                new_aux[start + new_len - 1] = dict(last)
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
    """Remove many runs of slots, each `(start, count)`, in one pass over the program: the same result as
    removing them one by one from the last, in time linear in the program rather than in its size times
    the number of runs (which made dead-code removal slow on 100k-slot programs)."""
    insns = program.insns
    n = len(insns)
    merged: list[list[int]] = []
    for start, count in sorted(r for r in runs if r[1] > 0):
        if start < 0 or start + count > n:
            raise PatchError(f"patch range [{start}, {start + count}) is outside the program of {n} slots")
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + count)
        else:
            merged.append([start, start + count])
    if not merged:
        return program
    starts = isa.instruction_starts(insns)
    for start, end in merged:
        if not starts[start] or (end < n and not starts[end]):
            raise PatchError(f"patch range [{start}, {end}) splits a lddw")
    run_starts = [start for start, _ in merged]
    removed_before = [0]  # slots removed by the runs before run k
    for start, end in merged:
        removed_before.append(removed_before[-1] + end - start)

    def locate(t: int) -> tuple[int, bool]:
        """New slot of old slot `t`, and whether `t` was removed (then: the slot after its run)."""
        k = bisect_right(run_starts, t) - 1
        if k >= 0 and t < merged[k][1]:
            return merged[k][0] - removed_before[k], True
        return t - removed_before[k + 1], False

    out: list[Insn] = []
    k = 0
    i = 0
    while i < n:
        if k < len(merged) and i == merged[k][0]:
            i = merged[k][1]
            k += 1
            continue
        insn = insns[i]
        kind = _ref_kind(insn)
        if kind is not None:
            rel = insn.imm if kind == "imm" else insn.off
            new_target, gone = locate(i + 1 + rel)
            if gone and not retarget:
                raise PatchError(f"insn {i} jumps into removed slots")
            new_rel = new_target - (i - removed_before[k]) - 1
            lo, hi = (S32_MIN, S32_MAX) if kind == "imm" else (S16_MIN, S16_MAX)
            if not lo <= new_rel <= hi:
                raise PatchError(f"insn {i}: jump offset {new_rel} does not fit after patching")
            insn = insn._replace(**{kind: new_rel})
        out.append(insn)
        i += 1
    program.insns = out
    length = n
    for start, end in reversed(merged):  # few subprograms: run by run, as single removals would
        length -= end - start
        _adjust_funcs(program, start, end - start, 0, length)
    _remove_line_info(program, merged, locate, n)
    program.aux = {locate(slot)[0]: facts for slot, facts in program.aux.items() if not locate(slot)[1]}
    return program


def _remove_line_info(program: Program, merged: list[list[int]], locate: Any, n: int) -> None:
    """Line info after removing `merged` runs: shifted; the last entry inside a run moves to the slot after
    it when that slot has none of its own (as `_adjust_line_info` does for one run)."""
    at = {li.insn for li in program.line_info}
    out: list[LineInfo] = []
    last_inside: dict[int, LineInfo] = {}
    run_starts = [start for start, _ in merged]
    for li in program.line_info:
        new_slot, gone = locate(li.insn)
        if not gone:
            out.append(LineInfo(new_slot, li.file, li.line, li.col, li.text))
        else:
            last_inside[bisect_right(run_starts, li.insn) - 1] = li
    for k, li in last_inside.items():
        end = merged[k][1]
        if end not in at and end < n:
            out.append(LineInfo(locate(end)[0], li.file, li.line, li.col, li.text))
    out.sort(key=lambda li: li.insn)
    program.line_info = out
