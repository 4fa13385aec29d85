"""Numbers from the kernel's uapi `linux/bpf.h` that object loading needs: map types, program types, flags.

Program types are named as `BPF_PROG_TYPE_*` lowercased without the prefix ("socket_filter", "xdp" ...),
which is how `Program.prog_type` stores them; map types are the uapi integers, as `MapSpec.type` stores them.
"""

from __future__ import annotations

MAP_TYPE_NAMES: tuple[str, ...] = (
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array",
    "stack_trace", "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps",
    "hash_of_maps", "devmap", "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage",
    "reuseport_sockarray", "percpu_cgroup_storage", "queue", "stack", "sk_storage", "devmap_hash",
    "struct_ops", "ringbuf", "inode_storage", "task_storage", "bloom_filter", "user_ringbuf",
    "cgrp_storage", "arena", "insn_array", "rhash",
)
MAP_TYPES: dict[str, int] = {name: i for i, name in enumerate(MAP_TYPE_NAMES)}

BPF_MAP_TYPE_HASH = MAP_TYPES["hash"]
BPF_MAP_TYPE_ARRAY = MAP_TYPES["array"]
BPF_MAP_TYPE_PROG_ARRAY = MAP_TYPES["prog_array"]
BPF_MAP_TYPE_ARRAY_OF_MAPS = MAP_TYPES["array_of_maps"]
BPF_MAP_TYPE_HASH_OF_MAPS = MAP_TYPES["hash_of_maps"]
BPF_MAP_TYPE_STRUCT_OPS = MAP_TYPES["struct_ops"]
BPF_MAP_TYPE_ARENA = MAP_TYPES["arena"]

PROG_TYPE_NAMES: tuple[str, ...] = (
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event",
    "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_skb", "cgroup_device",
    "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2", "sk_reuseport",
    "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops",
    "ext", "lsm", "sk_lookup", "syscall", "netfilter",
)
PROG_TYPES: dict[str, int] = {name: i for i, name in enumerate(PROG_TYPE_NAMES)}

# Map flags libbpf sets on global-data maps.
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10

# libbpf's `pinning` values in BTF map definitions; iproute2's are PIN_OBJECT_NS 1, PIN_GLOBAL_NS 2.
LIBBPF_PIN_NONE, LIBBPF_PIN_BY_NAME = 0, 1


def map_type_name(type_id: int) -> str:
    return MAP_TYPE_NAMES[type_id] if 0 <= type_id < len(MAP_TYPE_NAMES) else f"map_type_{type_id}"


def map_type_id(name: str) -> int:
    """The uapi id of a map type name ("hash", "BPF_MAP_TYPE_HASH" or "HASH"); KeyError if unknown."""
    key = name.lower().removeprefix("bpf_map_type_")
    return MAP_TYPES[key]


def prog_type_id(name: str) -> int:
    key = name.lower().removeprefix("bpf_prog_type_")
    return PROG_TYPES[key]


# The short names users know from section names and tools (bpftool's `type` words).
PROG_TYPE_ALIASES = {
    "socket": "socket_filter", "tc": "sched_cls", "classifier": "sched_cls", "tcx": "sched_cls",
    "action": "sched_act", "raw_tp": "raw_tracepoint", "tp": "tracepoint", "kretprobe": "kprobe",
    "cgroup/skb": "cgroup_skb", "struct_ops": "struct_ops", "fentry": "tracing", "fexit": "tracing",
}


def normalize_prog_type(name: str) -> str | None:
    """The canonical lowercase program type name for "xdp", "BPF_PROG_TYPE_XDP", "socket", "tc" ...;
    None if unknown."""
    key = name.lower().removeprefix("bpf_prog_type_")
    key = PROG_TYPE_ALIASES.get(key, key)
    return key if key in PROG_TYPES else None


def is_map_in_map(map_type: int) -> bool:
    return map_type in (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS)
