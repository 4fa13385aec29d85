"""Context access rules per program type: which offsets and sizes of `__sk_buff`, `xdp_md`, raw tracepoint
arguments ... a program may read or write, and which loads give packet pointers.

The layouts are the uapi ones (checked against vmlinux BTF in the tests); the rules follow the kernel's
*_is_valid_access() callbacks in net/core/filter.c and kernel/trace/bpf_trace.c. `check_ctx` returns a
`CtxField` describing the access (recorded in `aux[i]["ctx_field"]` for context conversion) or None when the
kernel would say `invalid bpf_context access`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .regs import PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_PACKET_META, SCALAR


@dataclass(frozen=True)
class CtxField:
    name: str  # field name, e.g. "data", "cb[2]", "args[0]"
    field_off: int  # offset of the field in the context struct
    field_size: int
    off: int  # offset of the access
    size: int  # size of the access
    reg_type: int = SCALAR  # what a load gives
    unsupported: bool = False  # the kernel allows it, bpfvm cannot model the result


def _fields(*items: tuple[str, int, int]) -> list[tuple[str, int, int]]:
    return list(items)


SK_BUFF_SIZE = 192
SK_BUFF = _fields(
    ("len", 0, 4), ("pkt_type", 4, 4), ("mark", 8, 4), ("queue_mapping", 12, 4), ("protocol", 16, 4),
    ("vlan_present", 20, 4), ("vlan_tci", 24, 4), ("vlan_proto", 28, 4), ("priority", 32, 4),
    ("ingress_ifindex", 36, 4), ("ifindex", 40, 4), ("tc_index", 44, 4),
    *[(f"cb[{i}]", 48 + 4 * i, 4) for i in range(5)],
    ("hash", 68, 4), ("tc_classid", 72, 4), ("data", 76, 4), ("data_end", 80, 4), ("napi_id", 84, 4),
    ("family", 88, 4), ("remote_ip4", 92, 4), ("local_ip4", 96, 4),
    *[(f"remote_ip6[{i}]", 100 + 4 * i, 4) for i in range(4)],
    *[(f"local_ip6[{i}]", 116 + 4 * i, 4) for i in range(4)],
    ("remote_port", 132, 4), ("local_port", 136, 4), ("data_meta", 140, 4), ("flow_keys", 144, 8),
    ("tstamp", 152, 8), ("wire_len", 160, 4), ("gso_segs", 164, 4), ("sk", 168, 8), ("gso_size", 176, 4),
    ("tstamp_type", 180, 1), ("hwtstamp", 184, 8),
)
XDP_MD_SIZE = 24
XDP_MD = _fields(("data", 0, 4), ("data_end", 4, 4), ("data_meta", 8, 4), ("ingress_ifindex", 12, 4),
                 ("rx_queue_index", 16, 4), ("egress_ifindex", 20, 4))

_SKB_BY_OFF = {off: (name, off, size) for name, off, size in SK_BUFF}
_XDP_BY_OFF = {off: (name, off, size) for name, off, size in XDP_MD}


def _field_at(table: dict[int, tuple[str, int, int]], off: int) -> tuple[str, int, int] | None:
    for start in range(off, max(off - 8, -1), -1):
        f = table.get(start)
        if f is not None:
            return f if start + f[2] > off else None
    return None


def _narrow_ok(off: int, size: int, field_off: int, field_size: int) -> bool:
    """bpf_ctx_narrow_access_ok(): a power-of-two load no wider than the field, inside it."""
    return size <= field_size and not (size & (size - 1)) and off + size <= field_off + field_size


def _in(name: str, *names: str) -> bool:
    base = name.split("[")[0]
    return base in names


_PKT = {"data": PTR_TO_PACKET, "data_end": PTR_TO_PACKET_END, "data_meta": PTR_TO_PACKET_META}


def _skb_common(name: str, foff: int, fsize: int, off: int, size: int, write: bool) -> CtxField | None:
    """bpf_skb_is_valid_access()."""
    if off < 0 or off >= SK_BUFF_SIZE or off % size:
        return None
    if name.startswith("cb["):
        if off + size > 68:
            return None
        return CtxField(name, foff, fsize, off, size)
    if _in(name, "remote_ip6", "local_ip6", "remote_ip4", "local_ip4", "data", "data_meta", "data_end"):
        if size != 4:
            return None
        return CtxField(name, foff, fsize, off, size, _PKT.get(name, SCALAR))
    if name == "flow_keys":
        return None
    if name == "hwtstamp":
        if write or size != 8:
            return None
        return CtxField(name, foff, fsize, off, size)
    if name == "tstamp":
        if size != 8:
            return None
        return CtxField(name, foff, fsize, off, size)
    if name == "sk":
        if write or size != 8:
            return None
        return CtxField(name, foff, fsize, off, size, SCALAR, unsupported=True)
    if name == "tstamp_type" or off in range(181, 184):
        return None
    if write:
        if size != 4:
            return None
    elif not _narrow_ok(off, size, foff, 4):
        return None
    return CtxField(name, foff, fsize, off, size)


def _skb_rules(denied: tuple[str, ...], writable: tuple[str, ...], pkt: bool, pkt_meta: bool = False
               ) -> Callable[[int, int, bool], CtxField | None]:
    def check(off: int, size: int, write: bool) -> CtxField | None:
        f = _field_at(_SKB_BY_OFF, off)
        if f is None:
            return None
        name, foff, fsize = f
        if _in(name, *denied):
            return None
        if not pkt and _in(name, "data", "data_end", "data_meta"):
            return None
        if not pkt_meta and name == "data_meta":
            return None
        if write and not _in(name, *writable):
            return None
        return _skb_common(name, foff, fsize, off, size, write)

    return check


_SK_FIELDS = ("family", "remote_ip4", "local_ip4", "remote_ip6", "local_ip6", "remote_port", "local_port")

SOCKET_FILTER = _skb_rules(("tc_classid", *_SK_FIELDS, "tstamp", "wire_len", "hwtstamp"), ("cb",), pkt=False)
SCHED_CLS = _skb_rules(_SK_FIELDS, ("mark", "tc_index", "priority", "tc_classid", "cb", "tstamp",
                                    "queue_mapping"), pkt=True, pkt_meta=True)
CGROUP_SKB = _skb_rules(("tc_classid", "data_meta", "flow_keys", "wire_len"), ("mark", "priority", "cb", "tstamp"),
                        pkt=True)
LWT = _skb_rules(("tc_classid", "data_meta", *_SK_FIELDS, "tstamp", "wire_len", "hwtstamp"),
                 ("mark", "priority", "cb"), pkt=True)
LWT_IN_OUT = _skb_rules(("tc_classid", "data_meta", *_SK_FIELDS, "tstamp", "wire_len", "hwtstamp"), ("cb",),
                        pkt=True)
SK_SKB = _skb_rules(("tc_classid", "data_meta", "tstamp", "wire_len", "hwtstamp"), ("tc_index", "priority", "mark"),
                    pkt=True)


def FLOW_DISSECTOR(off: int, size: int, write: bool) -> CtxField | None:
    f = _field_at(_SKB_BY_OFF, off)
    if f is None or write:
        return None
    name, foff, fsize = f
    if name in ("data", "data_end"):
        if size != 4 or off != foff:
            return None
        return CtxField(name, foff, fsize, off, size, _PKT[name])
    if name == "flow_keys" and size == 8 and off == foff:
        return CtxField(name, foff, fsize, off, size, SCALAR, unsupported=True)
    return None


def XDP(off: int, size: int, write: bool) -> CtxField | None:
    """xdp_is_valid_access() for the default attach type (no egress_ifindex)."""
    if write or off < 0 or off >= XDP_MD_SIZE or off % size or size != 4:
        return None
    f = _XDP_BY_OFF.get(off)
    if f is None or f[0] == "egress_ifindex":
        return None
    name, foff, fsize = f
    return CtxField(name, foff, fsize, off, size, _PKT.get(name, SCALAR))


def _u64_array(limit: int, prefix: str = "args", start: int = 0, writable: bool = False):
    def check(off: int, size: int, write: bool) -> CtxField | None:
        if off < start or off >= limit or off % size or size != 8 or (write and not writable):
            return None
        i = (off - start) // 8
        return CtxField(f"{prefix}[{i}]", off, 8, off, size)

    return check


RAW_TRACEPOINT = _u64_array(12 * 8)


def KPROBE(off: int, size: int, write: bool) -> CtxField | None:
    if write or off < 0 or off >= 168 or off % size or off + size > 168:
        return None
    return CtxField(f"regs+{off - off % 8}", off - off % 8, 8, off, size)


def TRACEPOINT(off: int, size: int, write: bool) -> CtxField | None:
    if write or off < 8 or off >= 2048 or off % size:
        return None
    return CtxField(f"tp+{off}", off, size, off, size)


def PERF_EVENT(off: int, size: int, write: bool) -> CtxField | None:
    if write or off < 0 or off >= 184 or off % size:
        return None
    if off >= 168:
        name = "sample_period" if off < 176 else "addr"
        if size != 8 and not _narrow_ok(off, size, off - off % 8, 8):
            return None
        return CtxField(name, off - off % 8, 8, off, size)
    if off + size > 168:
        return None
    return CtxField(f"regs+{off - off % 8}", off - off % 8, 8, off, size)


def SYSCALL(off: int, size: int, write: bool) -> CtxField | None:
    if off < 0 or off >= 0xFFFF or off % size:
        return None
    return CtxField(f"ctx+{off}", off, size, off, size)


RULES: dict[str, Callable[[int, int, bool], CtxField | None]] = {
    "socket_filter": SOCKET_FILTER, "sched_cls": SCHED_CLS, "sched_act": SCHED_CLS, "cgroup_skb": CGROUP_SKB,
    "lwt_in": LWT_IN_OUT, "lwt_out": LWT_IN_OUT, "lwt_xmit": LWT, "lwt_seg6local": LWT_IN_OUT, "sk_skb": SK_SKB,
    "flow_dissector": FLOW_DISSECTOR, "xdp": XDP, "raw_tracepoint": RAW_TRACEPOINT,
    "raw_tracepoint_writable": RAW_TRACEPOINT, "tracing": RAW_TRACEPOINT, "lsm": RAW_TRACEPOINT, "kprobe": KPROBE,
    "tracepoint": TRACEPOINT, "perf_event": PERF_EVENT, "syscall": SYSCALL,
}

# Program types that may write packet data directly (may_access_direct_pkt_data with BPF_WRITE).
PKT_WRITE = frozenset({"sched_cls", "sched_act", "xdp", "lwt_xmit", "sk_skb", "sk_msg", "lwt_seg6local"})


# Hook for program types registered from Python (bpfvm.progtypes installs it): name -> an object with
# check_ctx_access(off, size, write) and return_range(attach_type), or None to use the tables here.
_prog_type_lookup: Callable[[str], Any] | None = None


def set_prog_type_lookup(lookup: Callable[[str], Any] | None) -> None:
    global _prog_type_lookup
    _prog_type_lookup = lookup


def _registered(prog_type: str) -> Any:
    return _prog_type_lookup(prog_type) if _prog_type_lookup is not None else None


def check_ctx(prog_type: str, off: int, size: int, write: bool) -> CtxField | None:
    if size <= 0:
        return None
    registered = _registered(prog_type)
    if registered is not None:
        return registered.check_ctx_access(off, size, write)
    rules = RULES.get(prog_type)
    return rules(off, size, write) if rules is not None else None


def known_prog_type(prog_type: str) -> bool:
    return prog_type in RULES


# Return value ranges that check_return_code() enforces (program types not listed: no check).
RETURN_RANGES: dict[str, tuple[int, int]] = {
    "cgroup_skb": (0, 1), "cgroup_sock": (0, 1), "sock_ops": (0, 1), "cgroup_device": (0, 1),
    "cgroup_sysctl": (0, 1), "cgroup_sockopt": (0, 1), "cgroup_sock_addr": (0, 1), "sk_lookup": (0, 1),
    "netfilter": (0, 1),
}


def return_range(prog_type: str, attach_type: str = "") -> tuple[int, int] | None:
    registered = _registered(prog_type)
    if registered is not None:
        return registered.return_range(attach_type)
    return RETURN_RANGES.get(prog_type)
