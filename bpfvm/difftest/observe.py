"""One run's observable result (`Observation`) and the targets that produce it: bpfvm on an engine and inline
mode, or the kernel. Every run starts from fresh object state (new maps, new helper state: prandom seed and
deterministic clock), so maps compare and a run never depends on the runs before it.

A bpfvm target verifies and translates each program once and binds it to a fresh `BpfObject` per run (the
same steps as `ProgramHandle.run`, with the preparation shared across runs because it only depends on the
program)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BpfvmError
from ..program import Program
from .inputs import RunCase
from .spec import Spec

HELPER_OPTIONS = {"seed": 1, "ktime": 1_000_000, "pid_tgid": 0x1234_0000_1234, "uid_gid": 0}
COMPARED_MAP_TYPES = {1: "hash", 2: "array", 22: "queue", 23: "stack", 27: "ringbuf"}


@dataclass
class Observation:
    """What one run showed. A field that is None was not observable on that target (the kernel has no r0 and
    no printk capture) and is not compared."""

    retval: int | None = None
    r0: int | None = None
    data_out: bytes | None = None
    ctx_out: bytes | None = None
    maps: dict[str, Any] | None = None
    output: list[str] | None = None
    error: str | None = None  # class of the error that ended the run
    detail: str = ""  # its message, for people

    def fields(self) -> dict[str, Any]:
        return {"error": self.error, "retval": self.retval, "r0": self.r0, "data_out": self.data_out,
                "ctx_out": self.ctx_out, "output": self.output, "maps": self.maps}


class Rejected(BpfvmError):
    """The target refused the program itself (verifier, loader), whatever the input."""


@dataclass
class ObjectSource:
    """A BPF object as bytes (ELF) and, when generated, its already-linked form for the fast path."""

    elf: bytes | None = None
    path: str | None = None
    objfile: Any = None
    prog_type: str | None = None
    _tmp: str | None = field(default=None, repr=False)

    def parsed(self) -> Any:
        if self.objfile is None:
            from ..elf import load_object

            source: Any = self.elf if self.elf is not None else self.path
            self.objfile = load_object(source, prog_type=self.prog_type) if self.prog_type else load_object(source)
        return self.objfile

    def file(self) -> str:
        """A path to the ELF bytes (the kernel loads files)."""
        if self.path is not None:
            return self.path
        if self._tmp is None:
            if self.elf is None:
                raise BpfvmError("this object has no ELF form to load into the kernel")
            fd, self._tmp = tempfile.mkstemp(suffix=".o", prefix="bpfvm-diff-")
            with os.fdopen(fd, "wb") as f:
                f.write(self.elf)
        return self._tmp

    def cleanup(self) -> None:
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None


class BpfvmTarget:
    """bpfvm with one engine and inline mode."""

    def __init__(self, source: ObjectSource, prog: str, spec: Spec, options: dict[str, Any] | None = None):
        self.source = source
        self.prog = prog
        self.spec = spec
        self.options = dict(HELPER_OPTIONS if options is None else options)
        self._engine_programs: dict[str, Any] = {}
        self._xlated: dict[str, Program] = {}

    def _prepared(self, program: Program) -> Any:
        """Verified, rewritten and translated for this target's engine: once per program."""
        key = program.name
        if key not in self._engine_programs:
            from helpers.registry import check_program_helpers

            from ..engines import get_engine
            from ..kfunclib import default_library
            from ..pipeline import prepare

            check_program_helpers(program)
            prepared = prepare(program, mode=self.spec.mode, verify=self.spec.verify, library=default_library())
            self._xlated[key] = prepared.program
            engine = get_engine(self.spec.engine)
            self._engine_programs[key] = engine.prepare(prepared.program, verified=prepared.verified)
        return self._engine_programs[key]

    def check(self) -> None:
        """Prepare the program under test now; a refusal raises `Rejected`."""
        try:
            self._prepared(self._program())
        except BpfvmError as exc:
            raise Rejected(_one_line(exc)) from None

    def _program(self) -> Program:
        objfile = self.source.parsed()
        if self.prog not in objfile.programs:
            raise BpfvmError(f"no program {self.prog!r} in the object (programs: {', '.join(objfile.programs)})")
        return objfile.programs[self.prog]

    def xlated(self) -> Program:
        self._prepared(self._program())
        return self._xlated[self.prog]

    def run(self, case: RunCase) -> Observation:
        from ..api import BpfObject
        from ..progtypes import RunInput
        from ..testrun import test_run

        objfile = self.source.parsed()
        obj = BpfObject(objfile, options=self.options)
        program = self._program()
        bound: dict[str, Any] = {}

        def runnable_for(target: Any) -> Any:
            p = getattr(target, "program", target)
            if not isinstance(p, Program):
                raise BpfvmError(f"tail call to {target!r}, which is not a program")
            if p.name not in bound:
                bound[p.name] = self._prepared(p).bind(obj.runtime)
            return bound[p.name]

        try:
            runnable_for(program)
        except BpfvmError as exc:
            raise Rejected(_one_line(exc)) from None
        try:
            for name, entries in case.maps.items():
                for key, value in entries:
                    obj.maps[name][key] = value
            run_input = RunInput(data_in=case.data, ctx_in=case.ctx, skb_linear=case.skb_linear,
                                 xdp_frags=case.xdp_frags)
            result = test_run(program, obj.runtime, runnable_for, run_input)
        except BpfvmError as exc:
            return Observation(error=type(exc).__name__, detail=_one_line(exc), maps=observe_maps(obj))
        return Observation(retval=result.retval, r0=result.r0, data_out=result.data_out, ctx_out=result.ctx_out,
                           maps=observe_maps(obj), output=list(result.output))

    def listing(self) -> str:
        from ..disasm import disasm

        return disasm(self.xlated())

    def close(self) -> None:
        pass


def observe_maps(obj: Any) -> dict[str, Any]:
    """Every map's contents in a form both bpfvm and the kernel can give: hex key -> hex value (arrays: only
    their non-zero elements, so arrays of millions of elements stay cheap), or the records of a ring buffer, or
    the values of a queue/stack (other map kinds: their type only)."""
    out: dict[str, Any] = {}
    for name, m in obj.maps.items():
        kind = COMPARED_MAP_TYPES.get(getattr(m, "type", -1))
        if kind == "hash":
            out[name] = {k.hex(): _hex(v) for k, v in m.items()}
        elif kind == "array":
            out[name] = {k.hex(): _hex(v) for k, v in m.items(skip_zero=True)}
        elif kind == "ringbuf":
            out[name] = {"records": m.dump()["records"]}
        elif kind in ("queue", "stack"):
            out[name] = {"values": m.dump()["values"]}
        else:
            out[name] = None
    return out


def _hex(value: Any) -> Any:
    return [v.hex() for v in value] if isinstance(value, list) else bytes(value).hex()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class KernelTarget:
    """The running kernel: one bpftool `loadall` per run, so maps start fresh each time."""

    spec = Spec("kernel")

    def __init__(self, source: ObjectSource, prog: str):
        from ..kernel import kernel_unavailable_reason

        reason = kernel_unavailable_reason()
        if reason:
            raise BpfvmError(f"the kernel cannot be used here: {reason}")
        self.source = source
        self.prog = prog
        self._specs = {s.name: s for s in source.parsed().maps}

    def _load(self) -> Any:
        from ..kernel import KernelObject, KernelUnavailable

        try:
            return KernelObject(self.source.file(), prog_type=self.source.prog_type)
        except KernelUnavailable as exc:
            raise Rejected(self._refusal() or _one_line(exc)) from None

    def _refusal(self) -> str | None:
        """The kernel verifier's own last word (libbpf prints the log on failure; bpftool's last line is
        only advice), from a second load into a scratch pin directory."""
        import uuid

        from ..kernel import BPFFS

        pin = BPFFS / f"bpfvm-diff-{uuid.uuid4().hex[:12]}"
        cmd = ["bpftool", "prog", "loadall", self.source.file(), str(pin)]
        if self.source.prog_type:
            cmd += ["type", self.source.prog_type]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:  # loaded after all: unpin, and let the caller's error stand
            subprocess.run(["rm", "-rf", str(pin)], capture_output=True)
            return None
        log = done.stderr.split("-- BEGIN PROG LOAD LOG --", 1)[-1].split("-- END PROG LOAD LOG --", 1)[0]
        lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.startswith("processed ")]
        return f"the kernel refused the program: {lines[-1]}" if lines else None

    def check(self) -> None:
        self._load().close()

    def run(self, case: RunCase) -> Observation:
        if not case.kernel_ok:
            raise BpfvmError("the kernel's test run takes no skb_linear/xdp_frags input")
        kobj = self._load()
        try:
            for name, entries in case.maps.items():
                for key, value in entries:
                    kobj.map_update(name, key, value)
            try:
                result = kobj.run(self.prog, data_in=case.data, ctx_in=case.ctx)
            except BpfvmError as exc:
                return Observation(error="KernelRunError", detail=_one_line(exc), maps=self._maps(kobj))
            return Observation(retval=result.retval, data_out=result.data_out,
                               ctx_out=result.ctx_out if case.ctx is not None else b"", maps=self._maps(kobj))
        finally:
            kobj.close()

    def _maps(self, kobj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in self._specs.items():
            if spec.type in (1, 2) and not spec.readonly:
                entries = kobj.map_dump(name, skip_zero_array_values=True)
                out[name] = {k.hex(): v.hex() for k, v in entries.items()}
            else:
                out[name] = None  # ring buffers, per-CPU and other maps: not comparable through bpftool
        return out

    def listing(self) -> str:
        """`bpftool prog dump xlated` of the program as the kernel rewrote it."""
        kobj = self._load()
        try:
            done = subprocess.run(["bpftool", "prog", "dump", "xlated", "pinned", str(kobj.pin_dir / self.prog)],
                                  capture_output=True, text=True)
            return done.stdout if done.returncode == 0 else f"(bpftool failed: {done.stderr.strip()})\n"
        finally:
            kobj.close()

    def close(self) -> None:
        self.source.cleanup()


Target = BpfvmTarget | KernelTarget


def make_target(source: ObjectSource, prog: str, spec: Spec) -> Target:
    return KernelTarget(source, prog) if spec.is_kernel else BpfvmTarget(source, prog, spec)

