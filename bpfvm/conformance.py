"""The BPF conformance suite (bpf_conformance `.data` files): parsing, running, and the runner's plugin protocol."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import isa
from .engines import get_engine
from .errors import BpfvmError, LoadError
from .interp import ProgramExit, Runtime
from .isa import Insn
from .memory import Memory
from .program import Program
from .ubpf_asm import assemble

_SECTION_KINDS = ("asm", "result", "mem", "raw", "no register offset", " c", "error")


@dataclass
class DataFile:
    """One `.data` test: the program, its input memory, and the expected r0 or error."""

    path: str
    insns: list[Insn] | None = None
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    raw_bytes: bytes | None = None  # a `-- raw` section written one byte per token (the negative suite)
    sections: dict[str, list[str]] = field(default_factory=dict)


def parse_data(text: str, path: str = "<data>") -> DataFile:
    """Split a `.data` file into sections as the upstream runner does (comments first, then `--` headers)."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r").split("#", 1)[0]
        if "--" in line:
            kind = next((k for k in _SECTION_KINDS if k in line), None)
            if kind is None:
                raise LoadError(f"{path}: unknown directive {line.strip()!r}")
            current = kind.strip()
            sections.setdefault(current, [])
            continue
        if current is not None and line.strip():
            sections[current].append(line.strip())
    test = DataFile(path=path, sections=sections)
    if "raw" in sections:
        tokens = " ".join(sections["raw"]).split()
        if tokens and len(tokens) % 8 == 0 and all(re.fullmatch(r"[0-9a-fA-F]{2}", t) for t in tokens):
            test.raw_bytes = bytes(int(t, 16) for t in tokens)
        else:
            try:
                words = [int(t, 16) if t.lower().startswith("0x") else int(t) for t in tokens]
                raw = b"".join(w.to_bytes(8, "little") for w in words)
            except (ValueError, OverflowError):
                raise LoadError(f"{path}: -- raw holds a token that is not a 64-bit number") from None
            test.insns = isa.decode(raw, validate=False)
    elif "asm" in sections:
        test.insns = assemble("\n".join(sections["asm"]))
    if "mem" in sections:
        test.mem = parse_hex_bytes(" ".join(sections["mem"]))
    if sections.get("result"):
        value = sections["result"][-1]
        test.result = int(value, 16) if "0x" in value else int(value)
    if "error" in sections:
        test.error = sections["error"][-1] if sections["error"] else ""
    return test


def parse_hex_bytes(text: str) -> bytes:
    """Bytes written as whitespace-separated hex pairs (`aa bb 0c`), or one run of hex digits."""
    tokens = text.split()
    if len(tokens) == 1 and len(tokens[0]) % 2 == 0:
        tokens = [tokens[0][i : i + 2] for i in range(0, len(tokens[0]), 2)]
    try:
        out = bytes(int(t, 16) for t in tokens)
    except ValueError:
        raise LoadError(f"invalid hex bytes: {text[:40]!r}") from None
    if any(len(t) > 2 for t in tokens):
        raise LoadError(f"invalid hex bytes: {text[:40]!r} (one byte per token)")
    return out


def _unwind_helper(_runtime: Runtime, r1: int, *_rest: int) -> int:
    """uBPF's helper 5, which the suite's call tests use: returns r1; a zero ends the program with r0 = 0."""
    if r1 == 0:
        raise ProgramExit(0)
    return r1


CONFORMANCE_HELPERS: dict[int, Callable[..., int]] = {5: _unwind_helper}


def run_insns(
    insns: list[Insn],
    mem: bytes = b"",
    *,
    engine: str = "interp",
    helpers: dict[int, Callable[..., int]] | None = None,
    insn_limit: int = 10_000_000,
) -> int:
    """Run a bare program as the suite expects: r1 = a writable copy of `mem`, r2 = its length; return r0."""
    isa.validate_program(insns)
    program = Program(list(insns), name="conformance")
    memory = Memory()
    all_helpers = dict(CONFORMANCE_HELPERS)
    all_helpers.update(helpers or {})
    runtime = Runtime(memory, helpers=all_helpers, insn_limit=insn_limit)
    r1 = r2 = 0
    if mem:
        region = memory.add("mem", len(mem), data=mem)
        r1, r2 = region.start, len(mem)
    runnable = get_engine(engine).prepare(program, verified=False).bind(runtime)
    return runnable(r1, r2)


@dataclass
class Outcome:
    path: str
    status: str  # "passed" | "failed" | "skipped"
    reason: str = ""


def run_file(path: Path, engine: str = "interp") -> Outcome:
    name = str(path)
    try:
        test = parse_data(path.read_text(errors="replace"), name)
    except BpfvmError as exc:
        return Outcome(name, "skipped", f"unparsable: {exc}")
    if test.raw_bytes is not None:
        # A must-reject case of the negative suite: one instruction with a reserved field set.
        try:
            isa.decode(test.raw_bytes)
        except isa.DecodeError as exc:
            return Outcome(name, "passed", f"refused: {exc}")
        return Outcome(name, "failed", "program with a non-zero reserved field was accepted")
    if not test.insns or (test.result is None and test.error is None):
        return Outcome(name, "skipped", "no instructions or no expected result")
    try:
        r0 = run_insns(test.insns, test.mem, engine=engine)
    except BpfvmError as exc:
        if test.error is not None:
            return Outcome(name, "passed", f"error: {exc}")
        return Outcome(name, "failed", f"error: {exc}")
    expected = test.result if test.result is not None else 0
    if r0 != expected & isa.U64:
        return Outcome(name, "failed", f"r0 = {r0:#x}, expected {expected & isa.U64:#x}")
    return Outcome(name, "passed")


def iter_data_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    yield from sorted(p for p in root.rglob("*.data") if p.is_file())


_HEX_RE = re.compile(r"^[0-9a-fA-F\s]*$")


def plugin_decode(hex_text: str) -> bytes:
    """The runner's hex encoding: two hex digits per byte, separated by spaces."""
    if not _HEX_RE.match(hex_text):
        raise LoadError("invalid hex input: only hex digits and spaces are allowed")
    return parse_hex_bytes(hex_text) if hex_text.strip() else b""
