"""Shrink an input that makes two targets differ to the smallest one that still does: drop options, map
entries and the context, cut the packet down (delta debugging by chunks), then zero what is left, so the bytes
that remain are the ones the difference depends on."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .inputs import RunCase

Check = Callable[[RunCase], bool]


class _Budget:
    def __init__(self, runs: int):
        self.left = runs

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def minimise(case: RunCase, still_differs: Check, *, max_runs: int = 400) -> RunCase:
    """The smallest case found (within `max_runs` checks) for which `still_differs` holds."""
    budget = _Budget(max_runs)

    def ok(candidate: RunCase) -> bool:
        return budget.spend() and still_differs(candidate)

    while True:
        before = case
        case = _drop_options(case, ok)
        case = _shrink_maps(case, ok)
        if case.data:
            data = _ddmin(case.data, lambda d: ok(replace(case, data=d, skb_linear=_clamp(case.skb_linear, d))))
            case = replace(case, data=data, skb_linear=_clamp(case.skb_linear, data))
            data = _zero(case.data or b"", lambda d: ok(replace(case, data=d)))
            data = _lower(data, lambda d: ok(replace(case, data=d)))
            case = replace(case, data=data)
        if case == before or budget.left <= 0:
            return case


def _clamp(linear: int | None, data: bytes) -> int | None:
    return None if linear is None else min(linear, len(data))


def _drop_options(case: RunCase, ok: Check) -> RunCase:
    for change in ({"skb_linear": None}, {"xdp_frags": None}, {"ctx": None}):
        key = next(iter(change))
        if getattr(case, key) is not None:
            candidate = replace(case, **change)
            if ok(candidate):
                case = candidate
    if case.ctx and any(case.ctx):
        candidate = replace(case, ctx=_zero(case.ctx, lambda c: ok(replace(case, ctx=c))))
        case = candidate
    return case


def _shrink_maps(case: RunCase, ok: Check) -> RunCase:
    for name in list(case.maps):
        rest = {n: e for n, e in case.maps.items() if n != name}
        if ok(replace(case, maps=rest)):
            case = replace(case, maps=rest)
            continue
        entries = list(case.maps[name])
        i = 0
        while i < len(entries):
            fewer = entries[:i] + entries[i + 1:]
            if ok(replace(case, maps={**case.maps, name: fewer})):
                entries = fewer
                case = replace(case, maps={**case.maps, name: entries})
                continue
            key, value = entries[i]
            if any(value):
                zeroed = entries[:i] + [(key, bytes(len(value)))] + entries[i + 1:]
                if ok(replace(case, maps={**case.maps, name: zeroed})):
                    entries = zeroed
                    case = replace(case, maps={**case.maps, name: entries})
            i += 1
    return case


def _ddmin(data: bytes, ok: Callable[[bytes], bool]) -> bytes:
    """Remove chunks, halving the chunk size when no chunk can go (Zeller's ddmin, complement steps only)."""
    if ok(b""):
        return b""
    chunk = max(len(data) // 2, 1)
    while data and chunk >= 1:
        removed = False
        start = len(data) - chunk  # try the tail first: truncation is the most common shrink
        while start >= 0:
            candidate = data[:start] + data[start + chunk:]
            if ok(candidate):
                data = candidate
                removed = True
                start = min(start, len(data) - chunk)
            else:
                start -= chunk
        if not removed:
            if chunk == 1:
                break
            chunk //= 2
    return data


def _zero(data: bytes, ok: Callable[[bytes], bool]) -> bytes:
    """Replace non-zero chunks by zeros, big chunks first, then single bytes."""
    chunk = max(len(data) // 2, 1)
    while chunk >= 1:
        for start in range(0, len(data), chunk):
            piece = data[start:start + chunk]
            if any(piece):
                candidate = data[:start] + bytes(len(piece)) + data[start + chunk:]
                if ok(candidate):
                    data = candidate
        if chunk == 1:
            break
        chunk //= 2
    return data


def _lower(data: bytes, ok: Callable[[bytes], bool]) -> bytes:
    """Make each remaining non-zero byte as small as it can be: 1, else with bits cleared one by one."""
    out = bytearray(data)
    for i, value in enumerate(data):
        if value <= 1:
            continue
        for candidate in [1] + [value & ~(1 << b) for b in range(7, -1, -1) if value >> b & 1]:
            if candidate < out[i]:
                trial = bytes(out[:i]) + bytes([candidate]) + bytes(out[i + 1:])
                if ok(trial):
                    out[i] = candidate
                    if candidate == 1:
                        break
    return bytes(out)
