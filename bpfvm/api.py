"""The Python API: load an object, look at its programs and maps, run programs.

    obj = bpfvm.load("prog.o")
    result = obj.programs["xdp_prog"].run(data=packet, repeat=64)
    obj.maps["hits"][0]
"""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from .engines import get_engine
from .errors import BpfvmError, LoadError
from .interp import DEFAULT_INSN_LIMIT, Runtime
from .memory import Memory
from .program import MapSpec, Program
from .progtypes import RunInput
from .testrun import RunResult, test_run

if TYPE_CHECKING:
    from .pipeline import Prepared


# Storage of maps taken since the cyclic garbage collector last ran, and the amount that makes it run.
_map_bytes_since_collect = 0
COLLECT_AFTER_MAP_BYTES = 256 << 20


def _account_map_storage(nbytes: int) -> None:
    """An object's engines, helpers and runtime refer to one another, so a dropped object's maps are freed by
    the cyclic collector, which counts Python objects and not native bytes. Loading objects with large maps
    in a loop (`bpfvm diff` on a load balancer's 33M-element ring) would otherwise hold gigabytes."""
    global _map_bytes_since_collect
    _map_bytes_since_collect += nbytes
    if _map_bytes_since_collect > COLLECT_AFTER_MAP_BYTES:
        _map_bytes_since_collect = 0
        gc.collect()


class BpfObject:
    """A loaded object: its programs and its maps, which live as long as the object and persist across runs."""

    def __init__(self, objfile: Any, *, ncpus: int = 1, options: dict[str, Any] | None = None):
        from helpers.maps import create_map

        self.path = getattr(objfile, "path", None)
        self.license: str = getattr(objfile, "license", "")
        self.btf = getattr(objfile, "btf", None)
        self.options = dict(options or {})
        self.memory = Memory()
        self.runtime = Runtime(self.memory, insn_limit=self.options.get("insn_limit", DEFAULT_INSN_LIMIT))
        self.maps: dict[str, Any] = {}
        for spec in objfile.maps:
            instance = create_map(spec, self.memory, ncpus=ncpus)
            self.runtime.add_map(spec, instance)
            self.maps[spec.name] = instance
        _account_map_storage(sum(m.region.size for m in self.maps.values() if getattr(m, "region", None)))
        self._attach_helpers()
        self.kfunc_library = _kfunc_library(self.options.get("kfunc_libraries", ()))
        self.programs: dict[str, ProgramHandle] = {
            name: ProgramHandle(self, program) for name, program in objfile.programs.items()
        }

    def _attach_helpers(self) -> None:
        from helpers.registry import attach

        attach(self.runtime, options=self.options)

    def handle_of(self, program: Program) -> "ProgramHandle":
        for handle in self.programs.values():
            if handle.program is program:
                return handle
        raise BpfvmError(f"program {program.name} does not belong to {self.path}")

    def program(self, name: str | None = None) -> "ProgramHandle":
        """The program called `name`, or the only/first program when no name is given."""
        if not self.programs:
            raise LoadError(f"{self.path}: the object holds no programs")
        if name is None:
            return next(iter(self.programs.values()))
        if name not in self.programs:
            raise BpfvmError(f"no program {name!r} in {self.path} (programs: {', '.join(self.programs)})")
        return self.programs[name]

    def map(self, name: str) -> Any:
        if name not in self.maps:
            raise BpfvmError(f"no map {name!r} in {self.path} (maps: {', '.join(self.maps) or 'none'})")
        return self.maps[name]

    def __repr__(self) -> str:
        return f"<BpfObject {self.path}: {len(self.programs)} programs, {len(self.maps)} maps>"


class ProgramHandle:
    """One program of an object, runnable on any engine."""

    def __init__(self, obj: BpfObject, program: Program):
        self.obj = obj
        self.program = program
        self._prepared: dict[tuple[str, bool], Any] = {}
        self._bound: dict[tuple[str, str, int], Any] = {}

    @property
    def name(self) -> str:
        return self.program.name

    def prepare(self, inline: str = "none", *, verify: bool = True, log_level: int = 0) -> "Prepared":
        """Verify and rewrite the program for an inline mode (cached): see `bpfvm.pipeline`."""
        from helpers.registry import check_program_helpers

        from .pipeline import prepare

        key = (inline, verify)
        if key not in self._prepared or log_level:
            check_program_helpers(self.program)  # unknown helper ids and kfuncs are refused by name
            prepared = prepare(self.program, mode=inline, verify=verify, library=self.obj.kfunc_library,
                               log_level=log_level)
            if log_level:
                return prepared
            self._prepared[key] = prepared
        return self._prepared[key]

    def xlated(self, inline: str = "none", *, verify: bool = True) -> Program:
        """The program as an engine runs it: verified, dead code removed, kfuncs inlined per `inline`."""
        return self.prepare(inline, verify=verify).program

    def _runnable(self, program: Program, engine: str, inline: str, verify: bool) -> Any:
        """`program` (this one or a tail-call target) prepared for `inline` and bound for `engine`."""
        handle = self if program is self.program else self.obj.handle_of(program)
        key = (engine, inline, verify)
        bound = handle._bound.get(key)
        if bound is None:
            prepared = handle.prepare(inline, verify=verify)
            engine_impl = get_engine(engine)
            bound = engine_impl.prepare(prepared.program, verified=prepared.verified).bind(self.obj.runtime)
            handle._bound[key] = bound
        return bound

    def run(
        self,
        data: bytes | None = None,
        *,
        ctx: bytes | None = None,
        repeat: int = 1,
        engine: str = "interp",
        inline: str = "none",
        verify: bool = True,
        skb_linear: int | None = None,
        xdp_frags: int | None = None,
    ) -> RunResult:
        """Test-run the program as BPF_PROG_TEST_RUN does, on `engine`, with kfunc inlining `inline`
        ("none", "plain" or "pruned"). `verify=False` runs an unverified program (interpreter only)."""
        if not verify and engine != "interp":
            raise BpfvmError(f"the {engine} engine runs only verified programs; drop --no-verify")
        run_input = RunInput(data_in=data, ctx_in=ctx, skb_linear=skb_linear, xdp_frags=xdp_frags)
        return test_run(
            self.program, self.obj.runtime, lambda p: self._runnable(_as_program(p), engine, inline, verify),
            run_input, repeat=repeat,
        )

    def __repr__(self) -> str:
        return f"<program {self.name} ({self.program.prog_type}, {len(self.program)} insns)>"


def _kfunc_library(paths: Any) -> Any:
    """The built-in inlinable kfuncs plus any libraries given for this object (RFC patch 04)."""
    from .kfunclib import default_library

    library = default_library()
    if paths:
        library = library.copy()
        for path in paths:
            library.load(path)
    return library


def _as_program(target: Any) -> Program:
    """Tail-call targets come out of PROG_ARRAY maps as handles or programs."""
    if isinstance(target, ProgramHandle):
        return target.program
    if isinstance(target, Program):
        return target
    raise BpfvmError(f"tail call to {target!r}, which is not a program")


def load(path: str | Path, *, prog_type: str | None = None, ncpus: int = 1, **options: Any) -> BpfObject:
    """Load a clang-compiled BPF object (`clang -O2 -g -target bpf`)."""
    from .elf import load_object

    path = Path(path)
    if not path.exists():
        raise LoadError(f"{path}: no such file")
    if path.is_dir():
        raise LoadError(f"{path}: is a directory, not an object file")
    objfile = load_object(path, prog_type=prog_type) if prog_type else load_object(path)
    return BpfObject(objfile, ncpus=ncpus, options=options)


def from_programs(*programs: Program, ncpus: int = 1, **options: Any) -> BpfObject:
    """An object made of programs built in Python (e.g. with bpfvm.asm), such as programs of a type registered
    with bpfvm.progtypes.register_prog_type; its maps are those the programs' `maps` lists hold."""
    if not programs:
        raise BpfvmError("from_programs needs at least one program")
    names = [p.name for p in programs]
    if len(set(names)) != len(names):
        raise BpfvmError(f"program names must differ: {', '.join(names)}")
    maps: dict[int, MapSpec] = {id(m): m for p in programs for m in p.maps}
    objfile = SimpleNamespace(path=None, license=programs[0].license, btf=programs[0].btf, maps=list(maps.values()),
                              programs={p.name: p for p in programs})
    return BpfObject(objfile, ncpus=ncpus, options=options)


__all__ = ["BpfObject", "MapSpec", "ProgramHandle", "RunResult", "from_programs", "load"]
