"""Comparison of two observations, field by field. Only what both targets can observe is compared; errors
compare by class between bpfvm targets (their messages name instruction slots, which rewrites renumber) and by
presence against the kernel (whose errors are errno strings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .observe import Observation


@dataclass(frozen=True)
class Difference:
    field: str  # "error", "retval", "r0", "data_out", "ctx_out", "output" or "map NAME"
    a: Any
    b: Any


def compare(a: Observation, b: Observation, *, kernel: bool = False) -> list[Difference]:
    """Every difference between `a` and `b`; empty when they agree."""
    if a.error or b.error:
        same = (a.error is not None) == (b.error is not None) if kernel else a.error == b.error
        if not same:
            return [Difference("error", a.error and f"{a.error}: {a.detail}", b.error and f"{b.error}: {b.detail}")]
    diffs = []
    for name in ("retval", "r0", "data_out", "ctx_out", "output"):
        va, vb = getattr(a, name), getattr(b, name)
        if va is not None and vb is not None and va != vb:
            diffs.append(Difference(name, va, vb))
    for name in sorted(set(a.maps or {}) | set(b.maps or {})):
        ma, mb = (a.maps or {}).get(name), (b.maps or {}).get(name)
        if ma is not None and mb is not None and ma != mb:
            diffs.append(Difference(f"map {name}", ma, mb))
    return diffs


def render_value(value: Any, width: int = 48) -> list[str]:
    """A value as short lines for a side-by-side table."""
    if value is None:
        return ["-"]
    if isinstance(value, bytes):
        if not value:
            return ["(empty)"]
        return [value[i:i + width // 3].hex(" ") for i in range(0, len(value), width // 3)]
    if isinstance(value, int):
        return [f"{value} ({value:#x})"]
    if isinstance(value, list):
        return [str(v) for v in value] or ["(none)"]
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in sorted(value.items())] or ["(empty)"]
    return [str(value)]


def side_by_side(a: Observation, b: Observation, label_a: str, label_b: str, *, kernel: bool = False) -> str:
    """The two results as a table; differing fields are marked with `!`."""
    differing = {d.field for d in compare(a, b, kernel=kernel)}
    width = 50
    rows = [f"  {'field':<10} {label_a:<{width}} {label_b}"]
    fields = [("error", a.error and f"{a.error}: {a.detail}", b.error and f"{b.error}: {b.detail}")]
    fields += [(n, getattr(a, n), getattr(b, n)) for n in ("retval", "r0", "data_out", "ctx_out", "output")]
    for name in sorted(set(a.maps or {}) | set(b.maps or {})):
        fields.append((f"map {name}", (a.maps or {}).get(name), (b.maps or {}).get(name)))
    for name, va, vb in fields:
        if va is None and vb is None:
            continue
        if name.startswith("map ") and isinstance(va, dict) and isinstance(vb, dict):
            va, vb = _map_delta(va, vb)
        left, right = render_value(va), render_value(vb)
        mark = "!" if name in differing else " "
        for i in range(max(len(left), len(right))):
            la = left[i] if i < len(left) else ""
            rb = right[i] if i < len(right) else ""
            rows.append(f"{mark if i == 0 else ' '} {name if i == 0 else '':<10} {la:<{width}} {rb}")
    return "\n".join(rows)


def _map_delta(a: dict, b: dict) -> tuple[Any, Any]:
    """Only the entries that differ (a map that agrees shows as one line)."""
    if a == b:
        return f"same ({len(a)} entries)", f"same ({len(b)} entries)"
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ({k: a.get(k, "(absent)") for k in keys}, {k: b.get(k, "(absent)") for k in keys})
