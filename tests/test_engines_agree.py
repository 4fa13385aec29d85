"""Issue 7's sweep: the interpreter and the JIT give identical observations (return value, r0, packet and
context out, maps, helper output) on every compiled program of the test suite, in every inline mode, on
generated inputs for each program's type. A program a mode refuses must be refused by both engines alike."""

from __future__ import annotations

from pathlib import Path

import pytest

import bpfvm
from bpfvm.difftest.observe import ObjectSource
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import Spec
from bpfvm.errors import BpfvmError
from clang import PROGS, compile_bpf

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(REPO.glob("examples/*.o")) + [REPO / "tests/kfuncs/test_inlinable_kfuncs.o"]
MODES = ("none", "plain", "pruned")
INPUTS = 6


def _programs(path: Path) -> list[str]:
    try:
        return list(bpfvm.load(path).programs)
    except BpfvmError:  # objects the loader refuses on purpose (tests/progs/refused.c) have nothing to run
        return []


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("sweep")
    compiled = []
    for src in sorted(PROGS.glob("*.c")):
        try:
            compiled.append(compile_bpf(src, out))
        except RuntimeError:  # a source that is meant not to compile for this target
            continue
    return SHIPPED + compiled


def test_interpreter_and_jit_agree_on_every_program_in_every_mode(objects: list[Path]) -> None:
    checked = 0
    for path in objects:
        for prog in _programs(path):
            for mode in MODES:
                session = DiffSession(ObjectSource(path=str(path)), prog, Spec("interp", mode), Spec("jit", mode))
                summary = session.run(INPUTS, seed=7, shrink=False)
                verdicts = summary.verdicts
                assert verdicts is not None and not verdicts.differ, (path.name, prog, mode, verdicts)
                if verdicts.a is not None:
                    continue  # refused by both (e.g. a program type that cannot be test-run)
                assert summary.mismatch is None, (path.name, prog, mode, summary.mismatch.diffs)
                checked += 1
    assert checked >= 40, checked  # the sweep really ran programs, not just refusals
