"""User extensions: helpers and kfuncs written in Python, registered with decorators or loaded from files.

    import bpfvm

    @bpfvm.helper(1000)
    def my_helper(runtime, r1, r2, r3, r4, r5):
        return r1 * 2
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from .errors import BpfvmError

HelperFn = Callable[..., int]

USER_HELPERS: dict[int, HelperFn] = {}
USER_KFUNCS: dict[str, HelperFn] = {}


def helper(helper_id: int) -> Callable[[HelperFn], HelperFn]:
    """Register `fn(runtime, r1, r2, r3, r4, r5) -> int` as helper `helper_id` for every later run."""
    if not isinstance(helper_id, int) or helper_id < 0:
        raise BpfvmError(f"helper id must be a non-negative integer, not {helper_id!r}")

    def register(fn: HelperFn) -> HelperFn:
        USER_HELPERS[helper_id] = fn
        return fn

    return register


def kfunc(name: str) -> Callable[[HelperFn], HelperFn]:
    """Register `fn(runtime, r1, r2, r3, r4, r5) -> int` as the kfunc called `name`."""
    if not name or not name.isidentifier():
        raise BpfvmError(f"kfunc name must be a C identifier, not {name!r}")

    def register(fn: HelperFn) -> HelperFn:
        USER_KFUNCS[name] = fn
        return fn

    return register


def load_extension_file(path: str | Path) -> None:
    """Import a Python file whose decorators register helpers and kfuncs."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"bpfvm_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise BpfvmError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BpfvmError:
        raise
    except Exception as exc:
        raise BpfvmError(f"{path}: {type(exc).__name__}: {exc}") from None


def load_helper_files(paths: tuple[str, ...] | list[str]) -> dict[int, HelperFn]:
    for p in paths:
        load_extension_file(p)
    return dict(USER_HELPERS)
