"""A differential session: one program, two targets, N generated inputs; on the first mismatch, the smallest
input that still differs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ..errors import BpfvmError
from .compare import Difference, compare
from .inputs import RunCase, generate
from .minimise import minimise
from .observe import ObjectSource, Observation, Rejected, Target, make_target
from .spec import Spec


@dataclass
class Mismatch:
    index: int  # which generated input first showed it
    case: RunCase
    a: Observation
    b: Observation
    diffs: list[Difference]
    shrink_runs: int = 0


@dataclass
class Verdicts:
    """When a target refuses the program itself: its message (None if it accepted)."""

    a: str | None
    b: str | None

    @property
    def differ(self) -> bool:
        return (self.a is None) != (self.b is None)


@dataclass
class Summary:
    inputs: int = 0
    skipped: int = 0
    retvals: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    mismatch: Mismatch | None = None
    verdicts: Verdicts | None = None


class DiffSession:
    def __init__(self, source: ObjectSource, prog: str, spec_a: Spec, spec_b: Spec):
        self.source = source
        self.prog = prog
        self.spec_a, self.spec_b = spec_a, spec_b
        self.kernel = spec_a.is_kernel or spec_b.is_kernel
        self.a: Target = make_target(source, prog, spec_a)
        self.b: Target = make_target(source, prog, spec_b)
        self.prog_type = source.parsed().programs[prog].prog_type
        self.map_specs = list(source.parsed().maps)

    def verdicts(self) -> Verdicts:
        """Whether each target accepts the program at all."""
        out = []
        for target in (self.a, self.b):
            try:
                target.check()
                out.append(None)
            except Rejected as exc:
                out.append(str(exc))
        return Verdicts(*out)

    def inputs(self, n: int, seed: int) -> list[RunCase]:
        rng = random.Random(seed)
        return [generate(rng, self.prog_type, self.map_specs, kernel=self.kernel) for _ in range(n)]

    def check(self, case: RunCase) -> tuple[Observation, Observation, list[Difference]]:
        a, b = self.a.run(case), self.b.run(case)
        return a, b, compare(a, b, kernel=self.kernel)

    def run(self, n: int, seed: int, *, shrink: bool = True, max_shrink_runs: int = 400) -> Summary:
        summary = Summary()
        summary.verdicts = self.verdicts()
        if summary.verdicts.a is not None or summary.verdicts.b is not None:
            return summary
        for index, case in enumerate(self.inputs(n, seed)):
            a, b, diffs = self.check(case)
            summary.inputs += 1
            if a.error:
                summary.errors[a.error] += 1
            else:
                summary.retvals[a.retval] += 1
            if diffs:
                summary.mismatch = self.shrink(Mismatch(index, case, a, b, diffs), max_shrink_runs) if shrink \
                    else Mismatch(index, case, a, b, diffs)
                break
        return summary

    def shrink(self, found: Mismatch, max_runs: int) -> Mismatch:
        fields = {d.field for d in found.diffs}
        runs = 0

        def still_differs(case: RunCase) -> bool:
            nonlocal runs
            runs += 1
            try:
                _, _, diffs = self.check(case)
            except BpfvmError:
                return False
            return bool(fields & {d.field for d in diffs})

        smallest = minimise(found.case, still_differs, max_runs=max_runs)
        a, b, diffs = self.check(smallest)
        if not diffs:  # cannot happen for a deterministic target; keep the original then
            return found
        return Mismatch(found.index, smallest, a, b, diffs, runs)

    def listings(self) -> tuple[str, str]:
        out = []
        for target in (self.a, self.b):
            try:
                out.append(target.listing())
            except BpfvmError as exc:
                out.append(f"(no listing: {exc})\n")
        return out[0], out[1]

    def close(self) -> None:
        for target in (self.a, self.b):
            target.close()
