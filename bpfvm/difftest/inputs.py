"""Inputs of one differential run (`RunCase`) and their generators per program type: random bytes of varied
lengths, well-formed packets, linear and non-linear skbs (`skb_linear`), multi-buffer XDP (`xdp_frags`), a
context (`ctx_in`) with the fields a test run may set, and random map contents."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from . import packets

SKB_TYPES = frozenset({"socket_filter", "sched_cls", "sched_act", "cgroup_skb", "lwt_in", "lwt_out", "lwt_xmit"})
SKB_CTX_SETTABLE = [(8, 4), (32, 4), *[(48 + 4 * i, 4) for i in range(5)], (152, 8)]  # mark, priority, cb, tstamp
HASH_KEYS = 16  # hash map keys are small integers, so programs that compute keys hit them


@dataclass
class RunCase:
    """Everything one test run takes. `maps` holds (key, value) pairs written before the run."""

    data: bytes | None
    ctx: bytes | None = None
    skb_linear: int | None = None
    xdp_frags: int | None = None
    maps: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)

    @property
    def kernel_ok(self) -> bool:
        """The kernel's BPF_PROG_TEST_RUN (through bpftool) can take this input as it is."""
        return self.skb_linear is None and self.xdp_frags is None

    def size(self) -> int:
        """How big the case is, for the minimiser: smaller is simpler."""
        return (len(self.data or b"") + len(self.ctx or b"") + (self.skb_linear is not None)
                + (self.xdp_frags is not None) + sum(len(k) + len(v) + 1 for e in self.maps.values() for k, v in e))

    def to_json(self) -> dict[str, Any]:
        return {"data": None if self.data is None else self.data.hex(), "ctx": None if self.ctx is None else self.ctx.hex(),
                "skb_linear": self.skb_linear, "xdp_frags": self.xdp_frags,
                "maps": {n: [[k.hex(), v.hex()] for k, v in e] for n, e in self.maps.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunCase":
        def b(x: str | None) -> bytes | None:
            return None if x is None else bytes.fromhex(x)

        return cls(b(d.get("data")), b(d.get("ctx")), d.get("skb_linear"), d.get("xdp_frags"),
                   {n: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in e] for n, e in d.get("maps", {}).items()})

    def describe(self) -> str:
        lines = [f"packet ({len(self.data)} bytes):" if self.data is not None else "packet: none"]
        if self.data:
            lines += [f"  {i:04x}: {self.data[i:i + 16].hex(' ')}" for i in range(0, len(self.data), 16)]
        if self.ctx is not None:
            lines.append(f"ctx_in ({len(self.ctx)} bytes): {self.ctx.hex()}")
        if self.skb_linear is not None:
            lines.append(f"skb_linear: {self.skb_linear}")
        if self.xdp_frags is not None:
            lines.append(f"xdp_frags: {self.xdp_frags}")
        for name, entries in self.maps.items():
            for k, v in entries:
                lines.append(f"map {name}[{k.hex()}] = {v.hex()}")
        return "\n".join(lines)


def random_bytes(rng: random.Random) -> bytes:
    """Lengths around the interesting edges: empty, below and at an Ethernet header, small, page-sized."""
    size = rng.choice([0, 1, 13, 14, 15, 20, 34, 54, 60, 64, 100, rng.randrange(300), rng.randrange(1500),
                       rng.randrange(3000, 5000)])
    fill = rng.randrange(4)
    if fill == 0:
        return bytes(size)
    if fill == 1:
        return bytes((i * 7 + 3) & 0xFF for i in range(size))
    return rng.randbytes(size)


def skb_ctx(rng: random.Random) -> bytes:
    ctx = bytearray(192)
    for off, size in SKB_CTX_SETTABLE:
        if rng.random() < 0.4:
            struct.pack_into("<Q" if size == 8 else "<I", ctx, off, rng.getrandbits(8 * size))
    return bytes(ctx)


def map_contents(rng: random.Random, specs: list[Any]) -> dict[str, list[tuple[bytes, bytes]]]:
    """Random entries for the array and hash maps among `specs` (other kinds start empty)."""
    out: dict[str, list[tuple[bytes, bytes]]] = {}
    for spec in specs:
        if spec.type not in (1, 2) or spec.key_size > 8 or spec.initial is not None or spec.readonly:
            continue
        entries = []
        used: set[int] = set()
        for _ in range(rng.randrange(min(spec.max_entries, 8) + 1)):
            index = rng.randrange(spec.max_entries if spec.type == 2 else HASH_KEYS)
            if index in used:
                continue
            used.add(index)
            key = index.to_bytes(spec.key_size, "little") if spec.key_size >= 4 or index < 256 else bytes(spec.key_size)
            value = rng.choice([bytes(spec.value_size), rng.randbytes(spec.value_size)])
            entries.append((key, value))
        if entries:
            out[spec.name] = entries
    return out


def generate(rng: random.Random, prog_type: str, map_specs: list[Any] = (), *, kernel: bool = False) -> RunCase:
    """One input for a program of `prog_type`; `kernel` keeps it within what bpftool's test run can take."""
    kind = rng.choice(["random", "packet", "packet", "packet"])
    data = random_bytes(rng) if kind == "random" else packets.ethernet(rng)
    case = RunCase(data, maps=map_contents(rng, list(map_specs)) if rng.random() < 0.7 else {})
    if prog_type in SKB_TYPES:
        if rng.random() < 0.3:
            case.ctx = skb_ctx(rng)
        if not kernel and rng.random() < 0.3 and prog_type not in ("lwt_in", "lwt_out", "lwt_xmit"):
            case.skb_linear = rng.choice([0, 14, 20, 34, 40, 54, rng.randrange(len(data) + 1)])
    elif prog_type == "xdp":
        if not kernel and rng.random() < 0.3:
            case.xdp_frags = rng.choice([1, 8, 64, 1000, 4096])
            if rng.random() < 0.7 and len(data) >= 14:
                linear = rng.randrange(14, len(data) + 1)
                case.ctx = struct.pack("<6I", 0, linear, 0, 0, 0, 0)
    elif prog_type in ("raw_tracepoint", "syscall", "kprobe"):
        case = RunCase(None, ctx=rng.randbytes(rng.choice([0, 8, 16, 96])), maps=case.maps)
    return case


def without(case: RunCase, **changes: Any) -> RunCase:
    return replace(case, **changes)
