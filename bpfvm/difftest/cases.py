"""Reproducible failure cases: a directory with `case.json` (kind, seed, what failed, the input that showed
it) and the bytes (`object.o`, `input.bin` or `input.txt`), so a case replays without the generator that made
it (generators change; saved bytes do not). `tests/regressions/` holds such cases; `replay` re-runs one."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BpfvmError
from .inputs import RunCase

OBJECT_KINDS = ("elf", "btf", "huge")
DATA_FILES = {"program": "object.o", "elf": "object.o", "btf": "object.o", "huge": "object.o", "asm": "input.txt",
              "ubpf": "input.txt", "insns": "input.bin"}


@dataclass
class Case:
    kind: str  # "program" or a malformed kind (malformed.KINDS)
    seed: int
    status: str  # what went wrong: mismatch, crash, traceback, timeout, worker-crash, hang ...
    data: bytes
    detail: str = ""
    spec: str = ""  # the program target that differed (programs)
    input: RunCase | None = None
    prog_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "status": self.status, "spec": self.spec,
                             "detail": self.detail, "file": DATA_FILES[self.kind], "prog_type": self.prog_type}
        if self.input is not None:
            d["input"] = self.input.to_json()
        if self.kind == "program" and self.spec:
            d["replay"] = f"bpfvm diff object.o --a interp,raw --b {self.spec}"
        d.update(self.extra)
        return d

    def save(self, root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        base = f"{self.kind}-{self.status}-{self.seed}"
        path = root / base
        n = 1
        while path.exists():
            n += 1
            path = root / f"{base}-{n}"
        path.mkdir()
        (path / DATA_FILES[self.kind]).write_bytes(self.data)
        (path / "case.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def load(path: Path) -> Case:
    try:
        d = json.loads((path / "case.json").read_text())
        data = (path / d["file"]).read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise BpfvmError(f"{path}: not a saved case ({exc})") from None
    return Case(d["kind"], int(d.get("seed", 0)), d.get("status", ""), data, d.get("detail", ""), d.get("spec", ""),
                RunCase.from_json(d["input"]) if d.get("input") else None, d.get("prog_type", ""),
                {k: v for k, v in d.items() if k in ("note", "expect", "bug")})


def signature(kind: str, status: str, detail: str, spec: str = "") -> str:
    """Failures that are probably the same bug: target, and the first line of the detail with numbers blanked."""
    first = detail.strip().splitlines()[0] if detail.strip() else ""
    where = f"{spec}/" if spec else ""
    return f"{kind}/{status}/{where}{re.sub(r'0x[0-9a-f]+|[0-9]+', 'N', first)[:120]}"


def replay(case: Case) -> tuple[bool, str]:
    """Run a saved case again: (passes now, what happened)."""
    if case.kind == "program":
        return _replay_program(case)
    from .malformed import Malformed
    from .robust import run_malformed

    outcome = run_malformed(Malformed(case.kind, case.data, "replay", case.prog_type or "sched_cls"))
    return not outcome.failed, f"{outcome.status}: {outcome.detail.splitlines()[0] if outcome.detail else ''}"


def _replay_program(case: Case) -> tuple[bool, str]:
    from .compare import compare
    from .observe import BpfvmTarget, ObjectSource, Rejected
    from .spec import Spec, parse_spec

    source = ObjectSource(elf=case.data)
    name = next(iter(source.parsed().programs))
    specs = [parse_spec(case.spec)] if case.spec else [Spec("interp", m) for m in ("none", "plain", "pruned")]
    ref = BpfvmTarget(source, name, Spec("interp", "raw"))
    inputs = [case.input] if case.input is not None else [RunCase(bytes(64))]
    for spec in specs:
        target = BpfvmTarget(source, name, spec)
        try:
            target.check()
        except Rejected as exc:
            return False, f"{spec} refuses the program: {exc}"
        for run_case in inputs:
            diffs = compare(ref.run(run_case), target.run(run_case))
            if diffs:
                return False, f"interp,raw and {spec} differ in {', '.join(d.field for d in diffs)}"
    return True, "agree"
