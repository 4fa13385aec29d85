"""Execution engines by name. Every engine runs the same `Program` against the same `Runtime` memory model."""

from __future__ import annotations

from typing import Callable, Protocol

from .errors import BpfvmError
from .interp import BoundProgram, Interpreter, Runtime
from .program import Program


class Runnable(Protocol):
    """A program bound to a runtime: call with r1..r5, get r0. `steps` is the instruction count of the last run."""

    steps: int

    def __call__(self, r1: int = 0, r2: int = 0, r3: int = 0, r4: int = 0, r5: int = 0) -> int: ...


class Prepared(Protocol):
    def bind(self, runtime: Runtime) -> Runnable: ...


class Engine(Protocol):
    name: str

    def prepare(self, program: Program, *, verified: bool) -> Prepared: ...


class InterpreterEngine:
    """The reference interpreter; it checks every memory access, so it may run unverified programs."""

    name = "interp"

    def prepare(self, program: Program, *, verified: bool) -> Interpreter:
        return Interpreter(program)


_ENGINES: dict[str, Callable[[], Engine]] = {"interp": InterpreterEngine}


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    _ENGINES[name] = factory


def engine_names() -> list[str]:
    _load_optional_engines()
    return sorted(_ENGINES)


def get_engine(name: str) -> Engine:
    _load_optional_engines()
    factory = _ENGINES.get(name)
    if factory is None:
        raise BpfvmError(f"unknown engine {name!r} (choose from {', '.join(sorted(_ENGINES))})")
    return factory()


def _load_optional_engines() -> None:
    """Engines outside the core package (the JIT) register themselves when imported."""
    if "jit" not in _ENGINES:
        try:
            import jit.engine  # noqa: F401
        except ImportError:
            pass


__all__ = ["BoundProgram", "Engine", "Prepared", "Runnable", "get_engine", "register_engine", "engine_names"]
