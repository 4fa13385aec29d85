"""Kernel-internal functions the JIT expands inline instead of calling: today `skb_pointer_if_linear`.

Pruned kfunc bodies end in a call to the kernel's `skb_pointer_if_linear(skb, offset, len)`: a few loads and
compares on the run's sk_buff model, far cheaper than the call itself (state sync, fault word, unwind check).
When the slot is bound to the native library's own function (checked per run through the slot table) and `skb`
is this run's model, the JIT computes the same pointer from the model's fields; any other case takes the
ordinary call, which faults exactly as before. The expansion only computes a pointer, never dereferences one
from the program: what the program then does with it stays guarded.

The model's field offsets come from the native library's cffi declarations, and the library's source hash is
part of the JIT's code version, so a changed layout recompiles every program.
"""

from __future__ import annotations

import functools
from typing import Protocol

from . import guards as g

INLINE_KFUNCS = ("skb_pointer_if_linear",)
SLOT_FIELDS = 4  # per helper slot: function, env, fault-word address, inline tag (see engine.JitRunnable)
TAG_NONE, TAG_SKB_POINTER_IF_LINEAR = 0, 1


@functools.cache
def native_layout() -> dict[str, int] | None:
    """Byte offsets of the fields the expansions read, or None when the native library is unavailable."""
    try:
        from helpers.native_build import load_native

        ffi, _lib = load_native()
    except Exception:  # noqa: BLE001 - no compiler, no library: the JIT then always calls
        return None
    layout = {"env.skb": ffi.offsetof("struct bpfvm_env", "skb")}
    for name in ("buf", "buf_size", "data", "len", "data_len"):
        layout[f"skb.{name}"] = ffi.offsetof("struct bpfvm_skb", name)
    return layout


@functools.cache
def native_version() -> str:
    """The native library's source hash (part of the JIT's code version), or "" without the library."""
    try:
        from helpers.native_build import source_hash

        return source_hash()
    except Exception:  # noqa: BLE001
        return ""


def tag_for(kind: str, key: int | str) -> int:
    """The inline tag a slot gets when it is bound to the native library's own function."""
    return TAG_SKB_POINTER_IF_LINEAR if (kind, key) == ("kfunc", "skb_pointer_if_linear") else TAG_NONE


class Emitter(Protocol):
    def op(self, text: str) -> str: ...


def _field(e: Emitter, base: str, offset: int, ty: str) -> str:
    p = e.op(f"getelementptr i8, ptr {base}, i64 {offset}")
    return e.op(f"load {ty}, ptr {p}, align 4, {g.VM}")


def skb_of_run(e: Emitter, layout: dict[str, int], env: str, r1: str) -> tuple[str, str]:
    """(applies, skb): `applies` (i1) says r1 is this run's sk_buff model (kfuncs.c's skb_model check). Nothing
    may be read through `skb` before branching on it: without an sk_buff in the run it is NULL."""
    skb = _field(e, env, layout["env.skb"], "ptr")
    skb_int = e.op(f"ptrtoint ptr {skb} to i64")
    applies = e.op(f"and i1 {e.op(f'icmp ne i64 {skb_int}, 0')}, {e.op(f'icmp eq i64 {r1}, {skb_int}')}")
    return applies, skb


def skb_pointer_if_linear(e: Emitter, layout: dict[str, int], skb: str, r2: str, r3: str) -> str:
    """IR for bpfvm_skb_pointer_if_linear(skb, (int)r2, (int)r3) on this run's model: the r0 of the call."""
    length = _field(e, skb, layout["skb.len"], "i32")
    paged = _field(e, skb, layout["skb.data_len"], "i32")
    headlen = e.op(f"sext i32 {e.op(f'sub i32 {length}, {paged}')} to i64")
    off = e.op(f"sext i32 {e.op(f'trunc i64 {r2} to i32')} to i64")
    n = e.op(f"sext i32 {e.op(f'trunc i64 {r3} to i32')} to i64")
    linear = e.op(f"icmp sge i64 {e.op(f'sub i64 {headlen}, {off}')}, {n}")
    data = e.op(f"ptrtoint ptr {_field(e, skb, layout['skb.data'], 'ptr')} to i64")
    buf = e.op(f"ptrtoint ptr {_field(e, skb, layout['skb.buf'], 'ptr')} to i64")
    size = _field(e, skb, layout["skb.buf_size"], "i64")
    headroom = e.op(f"sub i64 {data}, {buf}")
    above_buf = e.op(f"icmp sge i64 {off}, {e.op(f'sub i64 0, {headroom}')}")
    nonneg = e.op(f"icmp sge i64 {n}, 0")
    end = e.op(f"add i64 {e.op(f'add i64 {headroom}, {off}')}, {n}")
    below_end = e.op(f"icmp ule i64 {end}, {size}")
    in_head = e.op(f"and i1 {e.op(f'and i1 {above_buf}, {nonneg}')}, {below_end}")
    ok = e.op(f"and i1 {linear}, {in_head}")
    return e.op(f"select i1 {ok}, i64 {e.op(f'add i64 {data}, {off}')}, i64 0")
