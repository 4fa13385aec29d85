"""Dead-code passes after verification, and the instruction patcher they (and every rewrite) use.

The three programs and expected `__xlated` listings are those of the RFC's patch 02
(tools/testing/selftests/bpf/progs/verifier_dead_code.c), read from the seed file.
"""

from __future__ import annotations

import re

import pytest

from bpfvm import isa
from bpfvm.asm import assemble
from bpfvm.disasm import disasm
from bpfvm.isa import Insn
from bpfvm.patcher import PatchError, insert_after, insert_before, patch_insn, remove, replace
from bpfvm.program import FuncInfo, LineInfo
from bpfvm.rewrites.dead_code import (
    eliminate_dead_code, hard_wire_dead_branches, remove_dead_code, remove_nops,
)
from bpfvm.verifier import verify

SEED = "000_bc2a6e7f9b3c52bf.txt"


def _seed_programs(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (inline asm, expected xlated lines) for each test of verifier_dead_code.c in the seed."""
    start = text.index("+++ b/tools/testing/selftests/bpf/progs/verifier_dead_code.c")
    body = text[start:text.index("-- ", start)]
    out = {}
    for m in re.finditer(r'((?:\+__xlated\("[^"]*"\)\n)+)\+__success\n(?:\+__retval\(\d+\)\n)?'
                         r'\+__naked void (\w+)\(void\)\n\+\{\n\+\tasm volatile \(\n((?:\+\t\t"[^"]*"\n)+)', body):
        xlated = re.findall(r'__xlated\("([^"]*)"\)', m.group(1))
        asm = "".join(re.findall(r'"([^"]*)"', m.group(3)))
        out[m.group(2)] = (asm.replace("%[bpf_get_prandom_u32]", "bpf_get_prandom_u32"), xlated)
    return out


@pytest.fixture(scope="module")
def seed_cases(seeds_dir) -> dict[str, tuple[str, list[str]]]:
    cases = _seed_programs((seeds_dir / SEED).read_text())
    assert set(cases) == {"cond_always_false", "cond_always_true", "cond_unknown"}
    return cases


@pytest.mark.parametrize("name", ["cond_always_false", "cond_always_true", "cond_unknown"])
def test_seed_xlated_listings(seed_cases, name: str) -> None:
    asm, expected = seed_cases[name]
    prog = assemble(asm)
    prog.prog_type = "socket_filter"
    analysis = verify(prog)
    eliminate_dead_code(prog, analysis)
    got = disasm(prog, call_ids=False).splitlines()
    assert len(got) == len(expected)
    for line, want in zip(got, expected):
        assert line.startswith(want), (line, want)  # `__xlated("0: call")` matches a prefix, as in selftests


def test_seed_listings_exactly() -> None:
    """The same three, with the listings written out."""
    def xlated(src: str) -> list[str]:
        p = assemble(src)
        eliminate_dead_code(p, verify(p))
        return disasm(p, call_ids=False).splitlines()

    assert xlated("r1 = 1; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit;") == \
        ["0: r1 = 1", "1: r0 = 42", "2: r0 = 24", "3: exit"]
    assert xlated("r1 = 2; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit;") == ["0: r1 = 2", "1: r0 = 42", "2: exit"]
    assert xlated("call bpf_get_prandom_u32; r1 = r0; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit;") == \
        ["0: call bpf_get_prandom_u32", "1: r1 = r0", "2: r0 = 42", "3: if r1 != 0x1 goto pc+1", "4: r0 = 24",
         "5: exit"]


def test_passes_one_by_one() -> None:
    p = assemble("r1 = 2; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit")
    a = verify(p)
    assert hard_wire_dead_branches(p, a) == 1
    assert p.insns[2] == Insn(isa.OP_JA, 0, 0, 1, 0)
    assert remove_dead_code(p) == 1
    assert disasm(p).splitlines() == ["0: r1 = 2", "1: r0 = 42", "2: goto pc+0", "3: exit"]
    assert remove_nops(p) == 1
    assert len(p.insns) == 3


def test_rfc_patch01_example_hard_wires_subprogram_branch() -> None:
    """Both arms of the branch are reached, but only ever by a decided branch: patch 01 hard-wires it."""
    p = assemble("r1 = 42; call f; exit; f: r0 = 1; if r1 != 42 goto +1; r0 = 2; exit")
    a = verify(p)
    eliminate_dead_code(p, a)
    assert disasm(p).splitlines() == ["0: r1 = 42", "1: call pc+1", "2: exit", "3: r0 = 1", "4: r0 = 2", "5: exit"]


def test_dead_subprogram_branch_keeps_call_offsets_and_funcs() -> None:
    p = assemble("r1 = 0; if r1 != 0 goto +2; call f; exit; r0 = 5; exit; f: r0 = 1; exit")
    p.funcs = [FuncInfo(0, "main"), FuncInfo(6, "f")]
    a = verify(p)
    eliminate_dead_code(p, a)
    assert disasm(p).splitlines() == ["0: r1 = 0", "1: call pc+1", "2: exit", "3: r0 = 1", "4: exit"]
    assert [f.insn for f in p.funcs] == [0, 3]
    assert p.aux[3]["seen"] is True


def test_instances_branch_facts_prune_dead_code_in_bodies() -> None:
    """A never-reached arm inside a subprogram called only with a constant disappears, lddw kept whole."""
    p = assemble("r1 = 1; call f; exit; f: if r1 == 0 goto +3; r0 = 0x100000000 ll; exit; r0 = 7; exit")
    eliminate_dead_code(p, verify(p))
    assert disasm(p).splitlines() == ["0: r1 = 1", "1: call pc+1", "2: exit", "3: r0 = 0x100000000", "5: exit"]


# --- the patcher ---------------------------------------------------------------------------------------------

def _prog():
    p = assemble("r0 = 0; if r0 > 3 goto +2; r0 = 1; r0 += 1; call f; exit; f: r0 = 2; goto -2")
    # fake facts, funcs and lines to follow
    p.aux = {i: {"seen": True, "tag": i} for i in range(len(p.insns))}
    p.funcs = [FuncInfo(0, "main"), FuncInfo(6, "f")]
    p.line_info = [LineInfo(0, "a.c", 1, 0, "a"), LineInfo(2, "a.c", 2, 0, "b"), LineInfo(6, "a.c", 3, 0, "c")]
    return p


def test_patch_expands_one_insn_and_keeps_jumps() -> None:
    p = _prog()
    patch_insn(p, 2, [Insn(0xB7, 2, 0, 0, 9), Insn(0xB7, 0, 0, 0, 1)])
    assert disasm(p).splitlines() == [
        "0: r0 = 0", "1: if r0 > 0x3 goto pc+3", "2: r2 = 9", "3: r0 = 1", "4: r0 += 1", "5: call pc+1", "6: exit",
        "7: r0 = 2", "8: goto pc-2"]
    assert [f.insn for f in p.funcs] == [0, 7]
    assert [li.insn for li in p.line_info] == [0, 2, 7]
    # the old slot's facts go to the last new slot; the others inherit `seen`
    assert p.aux[3]["tag"] == 2 and p.aux[2] == {"seen": True} and p.aux[8]["tag"] == 7


def test_insert_before_and_after() -> None:
    p = _prog()
    insert_before(p, 4, [Insn(0xB7, 3, 0, 0, 3)])  # before `r0 += 1`, a jump target
    assert disasm(p).splitlines()[1] == "1: if r0 > 0x3 goto pc+2"  # lands on the inserted insn
    p = _prog()
    insert_after(p, 2, [Insn(0xB7, 3, 0, 0, 3)])  # after `r0 = 1`: the jump to 4 skips it
    assert disasm(p).splitlines()[1] == "1: if r0 > 0x3 goto pc+3"
    assert disasm(p).splitlines()[3] == "3: r3 = 3"


def test_remove_keeps_everything_right() -> None:
    p = _prog()
    remove(p, 2, 1)
    assert disasm(p).splitlines() == [
        "0: r0 = 0", "1: if r0 > 0x3 goto pc+1", "2: r0 += 1", "3: call pc+1", "4: exit", "5: r0 = 2",
        "6: goto pc-2"]
    assert [f.insn for f in p.funcs] == [0, 5]
    assert [li.insn for li in p.line_info] == [0, 2, 5]  # "b" (slot 2) still covers what follows
    assert p.aux[2]["tag"] == 3


def test_remove_refuses_dangling_jumps_and_split_lddw() -> None:
    p = _prog()
    with pytest.raises(PatchError, match="jumps into removed"):
        remove(p, 4, 1)
    q = assemble("r0 = 1 ll; exit")
    with pytest.raises(PatchError, match="splits a lddw"):
        remove(q, 1, 1)


def test_offset_overflow() -> None:
    p = assemble("r0 = 0; if r0 > 3 goto +1; r0 = 1; exit")
    with pytest.raises(PatchError, match="does not fit"):
        patch_insn(p, 2, [Insn(0xB7, 0, 0, 0, 0)] * 40000)


def test_ja32_call_and_func_pointer_offsets() -> None:
    p = assemble("r2 = subprog[+5]; gotol +1; exit; call f; exit; f: r0 = 0; exit")
    insert_after(p, 0, [Insn(0xB7, 0, 0, 0, 1)] * 3)  # after the lddw
    text = disasm(p).splitlines()
    assert text[0] == "0: r2 = subprog[+8]"
    assert text[4] == "5: gotol pc+1"
    assert text[6] == "7: call pc+1"
    replace(p, 2, 3, [])
    assert disasm(p).splitlines()[0] == "0: r2 = subprog[+5]"


# --- batched removal and the fast no-op scan, against the one-at-a-time forms they replace -------------------

def _random_jumpy_program(rng) -> "Program":
    """Random slots: ALU, lddw, `goto +0`, `may_goto +0`, and forward/backward jumps, with funcs, line info
    and facts on some slots (nothing here is run: only the bookkeeping of edits is compared)."""
    from bpfvm.program import Program

    insns: list[Insn] = []
    while len(insns) < rng.randint(8, 60):
        roll = rng.random()
        if roll < 0.15:
            insns += [Insn(isa.OP_LDDW, 1, 0, 0, 7), Insn(0, 0, 0, 0, 0)]
        elif roll < 0.3:
            insns.append(Insn(isa.OP_JA, 0, 0, 0, 0))
        elif roll < 0.38:
            insns.append(Insn(isa.OP_MAY_GOTO, 0, 0, 0, 0))
        elif roll < 0.6:
            insns.append(Insn(isa.JMP | isa.JEQ | isa.K, 1, 0, 0, 3))  # offset filled in below
        else:
            insns.append(Insn(isa.ALU64 | isa.ADD | isa.K, 1, 0, 0, 1))
    insns.append(Insn(isa.OP_EXIT, 0, 0, 0, 0))
    starts = isa.instruction_starts(insns)
    targets = [i for i in range(len(insns)) if starts[i]]
    for i, insn in enumerate(insns):
        if insn.opcode in (isa.JMP | isa.JEQ | isa.K, isa.OP_MAY_GOTO) and (insn.opcode != isa.OP_MAY_GOTO
                                                                          or rng.random() < 0.5):
            t = rng.choice(targets)
            insns[i] = insn._replace(off=t - i - 1)
        elif insn.opcode == isa.OP_JA and rng.random() < 0.5:
            insns[i] = insn._replace(off=rng.choice(targets) - i - 1)
    line_info = [LineInfo(i, "f.c", i, 1, f"line {i}") for i in targets if rng.random() < 0.4]
    funcs = [FuncInfo(0, "main", 0)] + [FuncInfo(i, f"f{i}", 0) for i in targets[1:] if rng.random() < 0.1]
    aux = {i: {"seen": rng.random() < 0.7, "tag": i} for i in targets if rng.random() < 0.5}
    return Program(insns=insns, funcs=funcs, line_info=line_info, aux=aux)


def _snapshot(p) -> tuple:
    return (list(p.insns), list(p.funcs), list(p.line_info), dict(p.aux))


def _random_ranges(rng, prog, chance: float, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Disjoint, ordered (start, count) ranges of whole instructions: each instruction starts one with
    probability `chance`, spanning min_len..max_len instructions (0: an insertion point)."""
    starts = [i for i, s in enumerate(isa.instruction_starts(prog.insns)) if s] + [len(prog.insns)]
    ranges, k = [], 0
    while k < len(starts) - 1:
        if rng.random() < chance:
            j = min(k + rng.randint(min_len, max_len), len(starts) - 1)
            ranges.append((starts[k], starts[j] - starts[k]))
            k = j + 1
        else:
            k += 1
    return ranges


@pytest.mark.parametrize("seed", range(200))
def test_remove_runs_equals_removing_run_by_run(seed: int) -> None:
    import copy
    import random

    from bpfvm.patcher import remove_runs

    rng = random.Random(seed)
    prog = _random_jumpy_program(rng)
    runs = _random_ranges(rng, prog, 0.25, 1, 3)
    one_by_one, batched = copy.deepcopy(prog), copy.deepcopy(prog)
    try:
        for start, count in reversed(runs):
            remove(one_by_one, start, count, retarget=True)
    except PatchError as exc:
        with pytest.raises(PatchError):
            remove_runs(batched, runs, retarget=True)
        return
    remove_runs(batched, runs, retarget=True)
    assert _snapshot(batched) == _snapshot(one_by_one)


def _kernel_remove_nops(p) -> int:
    """opt_remove_nops() as the kernel writes it: remove one slot at a time, step back after a may_goto."""
    ja0, may0 = Insn(isa.OP_JA, 0, 0, 0, 0), Insn(isa.OP_MAY_GOTO, 0, 0, 0, 0)
    removed, i = 0, 0
    while i < len(p.insns):
        insn = p.insns[i]
        if (insn == ja0 or insn == may0) and isa.instruction_starts(p.insns)[i]:
            remove(p, i, 1, retarget=True)
            removed += 1
            i -= 2 if (insn == may0 and i > 0) else 1
            i = max(i, -1)
        i += 1
    return removed


@pytest.mark.parametrize("seed", range(300))
def test_remove_nops_equals_the_kernels_slot_by_slot_scan(seed: int) -> None:
    import copy
    import random

    prog = _random_jumpy_program(random.Random(seed))
    reference, fast = copy.deepcopy(prog), copy.deepcopy(prog)
    assert remove_nops(fast) == _kernel_remove_nops(reference)
    assert _snapshot(fast) == _snapshot(reference)


@pytest.mark.parametrize("seed", range(200))
def test_replace_many_equals_replacing_one_by_one(seed: int) -> None:
    """Expansions, insertions (count 0) and removals mixed, with and without facts for the new slots."""
    import copy
    import random

    from bpfvm.patcher import Edit, replace_many

    rng = random.Random(seed)
    prog = _random_jumpy_program(rng)
    edits = []
    for start, count in _random_ranges(rng, prog, 0.3, 0, 2):
        new = [Insn(isa.ALU64 | isa.MOV | isa.K, 2, 0, 0, rng.randint(0, 9)) for _ in range(rng.randint(0, 3))]
        if new and rng.random() < 0.3:
            new.insert(0, Insn(isa.OP_JA, 0, 0, len(new) - 1, 0))  # a jump inside the new code
        if not count and not new:
            new = [Insn(isa.ALU64 | isa.MOV | isa.K, 3, 0, 0, 1)]
        aux = [{"new": t} if rng.random() < 0.5 else None for t in range(len(new))] if rng.random() < 0.5 else None
        edits.append(Edit(start, count, new, aux))
    one_by_one, batched = copy.deepcopy(prog), copy.deepcopy(prog)
    try:
        for e in reversed(edits):
            replace(one_by_one, e.start, e.count, e.new, aux=e.aux, retarget=True)
    except PatchError:
        with pytest.raises(PatchError):
            replace_many(batched, edits, retarget=True)
        return
    replace_many(batched, edits, retarget=True)
    assert _snapshot(batched) == _snapshot(one_by_one)
