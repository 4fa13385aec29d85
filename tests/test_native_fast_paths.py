"""The native library's fast paths keep its safety rule: a pointer a program hands over is used only if a
region of the live table holds it. The last-hit region hint must never outlive the region it names."""

from __future__ import annotations

from typing import Any

import pytest

from bpfvm.memory import Memory
from helpers.native_build import load_native


def _address(memory: Memory) -> int:
    """The address of the memory's C-visible region table (it lives in bpfvm.memory's own ffi)."""
    from bpfvm import memory as bpf_memory

    return int(bpf_memory.ffi.cast("uintptr_t", memory.native_table))


@pytest.fixture()
def native() -> tuple[Any, Any, Memory, Any]:
    ffi, lib = load_native()
    memory = Memory()
    env = ffi.gc(lib.bpfvm_env_new(), lib.bpfvm_env_free)
    env.regions = ffi.cast("struct bpfvm_region_table *", _address(memory))
    return ffi, lib, memory, env


def _ok(ffi: Any, lib: Any, env: Any, addr: int, size: int, write: int = 0) -> bool:
    return lib.bpfvm_mem(env, addr, size, write) != ffi.NULL


def test_region_hint_is_revalidated_after_the_region_goes(native: tuple[Any, Any, Memory, Any]) -> None:
    ffi, lib, memory, env = native
    a = memory.add("a", 64)
    b = memory.add("b", 64)
    assert _ok(ffi, lib, env, b.start + 8, 8)     # the hint now names b
    memory.remove(b)
    assert not _ok(ffi, lib, env, b.start + 8, 8)  # b is gone: the hint must not let it through
    assert _ok(ffi, lib, env, a.start, 64) and not _ok(ffi, lib, env, a.start + 1, 64)


def test_region_hint_checks_the_end_and_writability(native: tuple[Any, Any, Memory, Any]) -> None:
    ffi, lib, memory, env = native
    ro = memory.add("ro", 32, writable=False)
    rw = memory.add("rw", 32)
    assert _ok(ffi, lib, env, ro.start, 32)
    assert not _ok(ffi, lib, env, ro.start + 16, 17)       # same region as the hint, past its end
    assert not _ok(ffi, lib, env, ro.start, 8, write=1)    # hinted, but read-only
    assert _ok(ffi, lib, env, rw.start, 8, write=1)
    assert not _ok(ffi, lib, env, rw.end, 1)               # just past the hinted region
    assert not _ok(ffi, lib, env, rw.start - 1, 2) or ro.end == rw.start  # straddling two regions


def test_region_hint_survives_a_reordered_table(native: tuple[Any, Any, Memory, Any]) -> None:
    ffi, lib, memory, env = native
    regions = [memory.add(f"r{k}", 16) for k in range(6)]
    last = max(regions, key=lambda r: r.start)
    assert _ok(ffi, lib, env, last.start, 16)              # hint: the last index
    for r in regions:
        if r is not last:
            memory.remove(r)                               # the table shrinks below the hint's index
    assert _ok(ffi, lib, env, last.start, 16)
    assert not _ok(ffi, lib, env, regions[0].start, 1) or regions[0] is last
