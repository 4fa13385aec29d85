"""Check one generated program: the unverified, unrewritten program on the interpreter (`interp,raw`) is the
reference; the verified program with each inline mode, and optionally on the JIT, must give the same
observation on every input. Modes whose xlated program is the same as one already run are skipped (same
engine, same instructions: the same result), which is what keeps a million-program campaign affordable."""

from __future__ import annotations

import random
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..errors import BpfvmError
from .compare import compare
from .genprog import GenProgram
from .inputs import RunCase, generate
from .observe import BpfvmTarget, ObjectSource, Observation, Rejected
from .programs import random_program
from .spec import Spec

REFERENCE = Spec("interp", "raw")
INLINE_KFUNCS = frozenset({"bpf_dynptr_slice", "bpf_dynptr_slice_rdwr", "bpf_dynptr_size", "bpf_dynptr_is_null",
                           "bpf_dynptr_is_rdonly", "bpf_dynptr_adjust"})


@dataclass
class Outcome:
    """agree | mismatch | rejected (a target refused the program) | crash (an exception that is not a
    BpfvmError: a bug in bpfvm)."""

    status: str
    detail: str = ""
    spec: str = ""  # the target that differed, refused or crashed
    case: RunCase | None = None
    a: Observation | None = None
    b: Observation | None = None
    runs: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def targets_for(program: GenProgram, *, jit: bool) -> list[Spec]:
    """What to compare with the reference: `none` always; `plain`/`pruned` when something is inlinable."""
    specs = [Spec("interp", "none")]
    if INLINE_KFUNCS & set(program.kfunc_names()):
        specs += [Spec("interp", "plain"), Spec("interp", "pruned")]
    if jit:
        specs += [Spec("jit", "none")] + ([Spec("jit", "pruned")] if len(specs) > 1 else [])
    return specs


def check_program(program: GenProgram, *, seed: int = 0, inputs: int = 2, jit: bool = False,
                  via_elf: bool = False, specs: list[Spec] | None = None) -> Outcome:
    """Compare every target with the reference on `inputs` generated inputs."""
    if via_elf:
        source = ObjectSource(elf=program.to_elf(), prog_type=None)
    else:
        source = ObjectSource(objfile=program.object_file())
    name = program.name
    stage = "prepare"
    spec_name = str(REFERENCE)
    try:
        ref = BpfvmTarget(source, name, REFERENCE)
        targets: list[BpfvmTarget] = []
        seen: set[tuple[str, tuple]] = set()
        for spec in specs or targets_for(program, jit=jit):
            spec_name = str(spec)
            target = BpfvmTarget(source, name, spec)
            try:
                target.check()
            except Rejected as exc:
                return Outcome("rejected", str(exc), spec_name)
            key = (spec.engine, tuple(target.xlated().insns))
            if key in seen:
                continue
            seen.add(key)
            targets.append(target)
        rng = random.Random(seed * 7919 + 1)
        cases = [generate(rng, program.prog_type, program.map_specs()) for _ in range(inputs)]
        runs = 0
        stage = "run"
        for case in cases:
            spec_name = str(REFERENCE)
            expected = ref.run(case)
            runs += 1
            for target in targets:
                spec_name = str(target.spec)
                got = target.run(case)
                runs += 1
                if compare(expected, got):
                    return Outcome("mismatch", ", ".join(d.field for d in compare(expected, got)), spec_name,
                                   case, expected, got, runs)
        return Outcome("agree", "", "", runs=runs, stats={"targets": len(targets)})
    except Rejected as exc:
        return Outcome("rejected", str(exc), spec_name)
    except BpfvmError as exc:  # load errors of the object itself (ELF path)
        return Outcome("rejected", f"{stage}: {exc}", spec_name)
    except Exception as exc:  # noqa: BLE001 - a bug in bpfvm: reported, never raised
        tb = traceback.format_exc(limit=-8)
        return Outcome("crash", f"{type(exc).__name__}: {exc}\n{tb}", spec_name)
    finally:
        source.cleanup()


def check_seed(seed: int, *, jit: bool = False, via_elf: bool = False, inputs: int = 2) -> Outcome:
    """The campaign's unit of work: the program for `seed`, checked."""
    return check_program(random_program(seed), seed=seed, jit=jit, via_elf=via_elf, inputs=inputs)
