"""Helper prototypes by uapi id, as the kernel's `struct bpf_func_proto`: argument kinds, return type,
whether the helper changes packet data, and which program types may call it.

Argument kinds (the kernel's ARG_*):
  anything        ARG_ANYTHING: any initialised register (a scalar or a pointer, as root may)
  map_ptr         ARG_CONST_MAP_PTR                 ctx          ARG_PTR_TO_CTX
  map_key         ARG_PTR_TO_MAP_KEY                map_value    ARG_PTR_TO_MAP_VALUE
  uninit_map_value ARG_PTR_TO_UNINIT_MAP_VALUE
  mem / mem_or_null  ARG_PTR_TO_MEM | MEM_RDONLY (| PTR_MAYBE_NULL): memory the helper reads
  mem_rw          ARG_PTR_TO_MEM: initialised memory the helper reads and may write
  uninit_mem      ARG_PTR_TO_UNINIT_MEM: memory the helper writes (need not be initialised)
  size / size_or_zero  ARG_CONST_SIZE(_OR_ZERO): the byte count of the preceding memory argument
  alloc_size_or_zero   ARG_CONST_ALLOC_SIZE_OR_ZERO: a constant size of memory the helper returns
  func            ARG_PTR_TO_FUNC (a callback)      stack_or_null  ARG_PTR_TO_STACK_OR_NULL (callback ctx)
  ringbuf_mem     ARG_PTR_TO_RINGBUF_MEM | OBJ_RELEASE
  dynptr_*        ARG_PTR_TO_DYNPTR with flags: `_local_uninit`, `_ringbuf_uninit`, `_ringbuf_release`,
                  `_rdonly` (any initialised dynptr), `` (writable use)
  const_str       ARG_PTR_TO_CONST_STR (a NUL-terminated string in a read-only map value)
  spin_lock       ARG_PTR_TO_SPIN_LOCK: a map value pointer at its `struct bpf_spin_lock`
"""

from __future__ import annotations

from dataclasses import dataclass

from ..helper_ids import helper_id, helper_name


@dataclass(frozen=True)
class Proto:
    name: str
    ret: str  # int, void, map_value_or_null, ringbuf_mem_or_null, dynptr_mem_or_null
    args: tuple[str, ...] = ()
    pkt_changing: bool = False
    types: frozenset[str] | None = None  # program types that may call it; None: every type
    callback: tuple[int, int, int] | None = None  # (func arg index, number of callback args, max return)
    acquire: bool = False


SKB_TYPES = frozenset({"socket_filter", "sched_cls", "sched_act", "cgroup_skb", "lwt_in", "lwt_out", "lwt_xmit",
                       "lwt_seg6local", "sk_skb", "flow_dissector", "sk_reuseport"})
TC = frozenset({"sched_cls", "sched_act"})
TC_LWT_XMIT = TC | {"lwt_xmit"}
XDP = frozenset({"xdp"})
TRACING = frozenset({"kprobe", "tracepoint", "perf_event", "raw_tracepoint", "raw_tracepoint_writable", "tracing"})
PERF_OUTPUT = SKB_TYPES | XDP | TRACING

_PROTOS: dict[str, Proto] = {}


def _p(name: str, ret: str, *args: str, **kw) -> None:
    _PROTOS[name] = Proto(name, ret, tuple(args), **kw)


_p("map_lookup_elem", "map_value_or_null", "map_ptr", "map_key")
_p("map_update_elem", "int", "map_ptr", "map_key", "map_value", "anything")
_p("map_delete_elem", "int", "map_ptr", "map_key")
_p("map_lookup_percpu_elem", "map_value_or_null", "map_ptr", "map_key", "anything")
_p("map_push_elem", "int", "map_ptr", "map_value", "anything")
_p("map_pop_elem", "int", "map_ptr", "uninit_map_value")
_p("map_peek_elem", "int", "map_ptr", "uninit_map_value")
_p("probe_read", "int", "uninit_mem", "size_or_zero", "anything", types=TRACING)
_p("probe_read_str", "int", "uninit_mem", "size_or_zero", "anything", types=TRACING)
_p("ktime_get_ns", "int")
_p("ktime_get_boot_ns", "int")
_p("ktime_get_coarse_ns", "int")
_p("ktime_get_tai_ns", "int")
_p("jiffies64", "int")
_p("trace_printk", "int", "mem", "size")  # r3-r5 are read as raw varargs, not checked
_p("trace_vprintk", "int", "mem", "size", "mem_or_null", "size_or_zero")
_p("snprintf", "int", "uninit_mem_or_null", "size_or_zero", "const_str", "mem_or_null", "size_or_zero")
_p("get_prandom_u32", "int")
_p("get_smp_processor_id", "int")
_p("get_numa_node_id", "int")
_p("get_current_pid_tgid", "int")
_p("get_current_uid_gid", "int")
_p("get_current_comm", "int", "uninit_mem", "size")
_p("get_current_task", "int")
_p("get_ns_current_pid_tgid", "int", "anything", "anything", "uninit_mem", "size")
_p("get_stack", "int", "ctx", "uninit_mem", "size_or_zero", "anything", types=TRACING)
_p("get_attach_cookie", "int", "ctx", types=TRACING)
for _n in ("probe_read_kernel", "probe_read_user", "probe_read_kernel_str", "probe_read_user_str"):
    _p(_n, "int", "uninit_mem", "size_or_zero", "anything")
_p("tail_call", "void", "ctx", "map_ptr", "anything")
_p("skb_load_bytes", "int", "ctx", "anything", "uninit_mem", "size", types=SKB_TYPES)
_p("skb_load_bytes_relative", "int", "ctx", "anything", "uninit_mem", "size", "anything",
   types=SKB_TYPES - {"flow_dissector"})
_p("skb_store_bytes", "int", "ctx", "anything", "mem", "size", "anything", pkt_changing=True,
   types=TC_LWT_XMIT | {"sk_skb", "lwt_seg6local"})
_p("l3_csum_replace", "int", "ctx", "anything", "anything", "anything", "anything", pkt_changing=True,
   types=TC_LWT_XMIT)
_p("l4_csum_replace", "int", "ctx", "anything", "anything", "anything", "anything", pkt_changing=True,
   types=TC_LWT_XMIT)
_p("csum_diff", "int", "mem_or_null", "size_or_zero", "mem_or_null", "size_or_zero", "anything",
   types=TC | XDP | {"lwt_in", "lwt_out", "lwt_xmit", "lwt_seg6local"})
_p("skb_pull_data", "int", "ctx", "anything", pkt_changing=True, types=TC_LWT_XMIT | {"sk_skb"})
_p("skb_change_tail", "int", "ctx", "anything", "anything", pkt_changing=True, types=TC_LWT_XMIT | {"sk_skb"})
_p("skb_change_head", "int", "ctx", "anything", "anything", pkt_changing=True, types=TC_LWT_XMIT | {"sk_skb"})
_p("skb_adjust_room", "int", "ctx", "anything", "anything", "anything", pkt_changing=True, types=TC)
_p("skb_set_tunnel_key", "int", "ctx", "mem", "size", "anything", types=TC_LWT_XMIT)
_p("skb_get_tunnel_key", "int", "ctx", "uninit_mem", "size", "anything", types=TC_LWT_XMIT)
_p("csum_update", "int", "ctx", "anything", types=TC_LWT_XMIT)
_p("csum_level", "int", "ctx", "anything", types=TC_LWT_XMIT)
_p("set_hash_invalid", "int", "ctx", types=TC_LWT_XMIT)  # returns 0: RET_INTEGER, not void
_p("set_hash", "int", "ctx", "anything", types=TC)
_p("get_hash_recalc", "int", "ctx", types=TC)
_p("redirect", "int", "anything", "anything", types=TC_LWT_XMIT | XDP)
_p("redirect_map", "int", "map_ptr", "anything", "anything", types=XDP)
_p("fib_lookup", "int", "ctx", "mem_rw", "size", "anything", types=TC | XDP)
_p("xdp_adjust_head", "int", "ctx", "anything", pkt_changing=True, types=XDP)
_p("xdp_adjust_meta", "int", "ctx", "anything", pkt_changing=True, types=XDP)
_p("xdp_adjust_tail", "int", "ctx", "anything", pkt_changing=True, types=XDP)
_p("xdp_load_bytes", "int", "ctx", "anything", "uninit_mem", "size", types=XDP)
_p("xdp_store_bytes", "int", "ctx", "anything", "mem", "size", types=XDP)
_p("xdp_get_buff_len", "int", "ctx", types=XDP)
_p("perf_event_output", "int", "ctx", "map_ptr", "anything", "mem", "size_or_zero", types=PERF_OUTPUT)
_p("ringbuf_output", "int", "map_ptr", "mem", "size_or_zero", "anything")
_p("ringbuf_reserve", "ringbuf_mem_or_null", "map_ptr", "alloc_size_or_zero", "anything", acquire=True)
_p("ringbuf_submit", "void", "ringbuf_mem", "anything")
_p("ringbuf_discard", "void", "ringbuf_mem", "anything")
_p("ringbuf_query", "int", "map_ptr", "anything")
_p("ringbuf_reserve_dynptr", "int", "map_ptr", "anything", "anything", "dynptr_ringbuf_uninit")
_p("ringbuf_submit_dynptr", "void", "dynptr_ringbuf_release", "anything")
_p("ringbuf_discard_dynptr", "void", "dynptr_ringbuf_release", "anything")
_p("dynptr_from_mem", "int", "uninit_mem", "size_or_zero", "anything", "dynptr_local_uninit")
_p("dynptr_read", "int", "uninit_mem", "size_or_zero", "dynptr_rdonly", "anything", "anything")
_p("dynptr_write", "int", "dynptr_rdonly", "anything", "mem", "size_or_zero", "anything")
_p("dynptr_data", "dynptr_mem_or_null", "dynptr_rdonly", "anything", "alloc_size_or_zero")
_p("loop", "int", "anything", "func", "stack_or_null", "anything", callback=(1, 2, 1))
_p("for_each_map_elem", "int", "map_ptr", "func", "stack_or_null", "anything", callback=(1, 4, 1))
_p("strncmp", "int", "mem", "size", "const_str")
_p("spin_lock", "void", "spin_lock")
_p("spin_unlock", "void", "spin_lock")

# Helper ids whose callback is a loop body (called any number of times).
LOOP_CALLBACK_HELPERS = frozenset({"loop", "for_each_map_elem"})


def proto_for(helper: int) -> Proto | None:
    name = helper_name(helper)
    if name is None:
        return None
    return _PROTOS.get(name[4:])


def helper_label(helper: int) -> str:
    """`bpf_map_lookup_elem#1`, as the verifier log names a helper."""
    name = helper_name(helper)
    return f"{name}#{helper}" if name else f"unknown#{helper}"


def known_helpers() -> dict[int, Proto]:
    out = {}
    for name, proto in _PROTOS.items():
        hid = helper_id(name)
        if hid is not None:
            out[hid] = proto
    return out
