"""The verifier on hand-written programs: one accepted or rejected program per rule, with the kernel's wording.

Every case here is also loaded into the running kernel by test_verifier_kernel.py (unless marked
`kernel=False` with the reason), so the expected verdicts are the kernel's, not guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from bpfvm.asm import assemble
from bpfvm.errors import VerifierError
from bpfvm.program import MapSpec, Program
from bpfvm.verifier import verify

MAPS = {
    "arr": MapSpec("arr", 2, 4, 8, 4),
    "big": MapSpec("big", 2, 4, 64, 4),
    "hash": MapSpec("hash", 1, 4, 8, 16),
    "rb": MapSpec("rb", 27, 0, 0, 4096),
    "ro": MapSpec("ro", 2, 4, 8, 1, flags=1 << 7),
    "queue": MapSpec("queue", 22, 0, 8, 16),
    "progs": MapSpec("progs", 3, 4, 4, 4),
    "pcpu": MapSpec("pcpu", 6, 4, 8, 4),
}


@dataclass
class Case:
    id: str
    asm: str
    error: str | None = None  # None: accepted; else a regex the one-line error must contain
    prog_type: str = "socket_filter"
    maps: tuple[str, ...] = ()
    kernel: bool = True  # compare with the kernel (test_verifier_kernel.py)
    why_no_kernel: str = ""
    extra: dict = field(default_factory=dict)

    def program(self) -> Program:
        p = assemble(self.asm)
        p.prog_type = self.prog_type
        p.maps = [MAPS[name] for name in self.maps]
        return p


PKT = "r2 = *(u32 *)(r1 + 76); r3 = *(u32 *)(r1 + 80);"
XPKT = "r2 = *(u32 *)(r1 + 0); r3 = *(u32 *)(r1 + 4);"
KEY0 = "r1 = 0; *(u32 *)(r10 - 4) = r1; r2 = r10; r2 += -4;"

CASES = [
    # --- accepted programs -------------------------------------------------------------------------------
    Case("percpu-lookup-checked", KEY0 + "r1 = map[pcpu]; r3 = 1; call bpf_map_lookup_percpu_elem;"
                                        "if r0 == 0 goto +1; r0 = *(u64 *)(r0 + 0); r0 = 0; exit", maps=("pcpu",)),
    Case("tc-hash-csum-head-helpers", "r6 = r1; r2 = 5; call bpf_set_hash; r1 = r6; call bpf_set_hash_invalid;"
                                      "r1 = r6; r2 = 3; call bpf_csum_update; r1 = r6; r2 = 1; call bpf_csum_level;"
                                      "r1 = r6; r2 = 8; r3 = 0; call bpf_skb_change_head; r0 = 0; exit",
         prog_type="sched_cls"),
    Case("tc-get-tunnel-key-into-uninit-stack", "r2 = r10; r2 += -48; r3 = 44; r4 = 0;"
                                                "call bpf_skb_get_tunnel_key; r0 = 0; exit", prog_type="sched_cls"),
    Case("xdp-buff-len", "call bpf_xdp_get_buff_len; exit", prog_type="xdp"),
    Case("fib-lookup-params-on-stack", "r2 = r10; r2 += -64; r3 = 64; r4 = 0; call bpf_fib_lookup; exit",
         prog_type="xdp"),
    Case("set-hash-invalid-returns-an-int", "call bpf_set_hash_invalid; exit", prog_type="sched_cls"),
    Case("ns-pid-tgid-anywhere", "r1 = 0; r2 = 0; r3 = r10; r3 += -8; r4 = 8; call bpf_get_ns_current_pid_tgid;"
                                 "exit", prog_type="xdp"),
    Case("get-stack-kprobe", "r2 = r10; r2 += -64; r3 = 64; r4 = 0; call bpf_get_stack; exit", prog_type="kprobe"),
    Case("attach-cookie-tracepoint", "call bpf_get_attach_cookie; exit", prog_type="tracepoint"),
    Case("lsm-reads-its-arguments", "r0 = *(u64 *)(r1 + 24); exit", prog_type="lsm", kernel=False,
         why_no_kernel="an lsm program needs an attach target (attach_btf_id)"),
    Case("return-0", "r0 = 0; exit"),
    Case("alu-mix", "r0 = 7; r0 *= 3; r0 <<= 2; r0 s>>= 1; w0 += 5; r0 = -r0; r0 = be16 r0; r0 ^= r0; exit"),
    Case("stack-spill-fill", "r1 = 5; *(u64 *)(r10 - 8) = r1; r0 = *(u64 *)(r10 - 8); exit"),
    Case("stack-narrow", "r0 = 0; *(u32 *)(r10 - 8) = r0; r0 = *(u64 *)(r10 - 8); exit"),
    Case("stack-uninit-read-root", "r0 = *(u64 *)(r10 - 8); r0 = 0; exit"),
    Case("stack-ptr-arith", "r0 = 0; r1 = r10; r1 += -8; *(u64 *)(r1 + 0) = r0; r0 = *(u64 *)(r10 - 8); exit"),
    Case("stack-var-offset", "call bpf_get_prandom_u32; r0 &= 7; r1 = r10; r1 += -16; r1 += r0;"
                             "r0 = *(u8 *)(r1 + 0); r0 = 0; exit"),
    Case("ptr-minus-ptr", "r1 = r10; r2 = r10; r1 -= r2; r0 = 0; exit"),
    Case("ctx-read-skb", "r0 = *(u32 *)(r1 + 0); r0 = *(u16 *)(r1 + 8); r0 = *(u32 *)(r1 + 48); exit"),
    Case("ctx-write-cb", "r2 = 1; *(u32 *)(r1 + 48) = r2; r0 = 0; exit"),
    Case("ctx-tc-data", "r0 = *(u32 *)(r1 + 76); r0 = 0; exit", prog_type="sched_cls"),
    Case("pkt-checked", PKT + "r4 = r2; r4 += 14; if r4 > r3 goto +2; r0 = *(u8 *)(r2 + 13); exit; r0 = 0; exit",
         prog_type="sched_cls"),
    Case("pkt-checked-strict", PKT + "r4 = r2; r4 += 14; if r4 < r3 goto +2; r0 = 0; exit;"
                                     "r0 = *(u8 *)(r2 + 14); exit", prog_type="sched_cls"),
    Case("pkt-end-first", PKT + "r4 = r2; r4 += 14; if r3 >= r4 goto +2; r0 = 0; exit; r0 = *(u8 *)(r2 + 13); exit",
         prog_type="sched_cls"),
    Case("pkt-var-offset", PKT + "r5 = *(u8 *)(r1 + 0); r5 &= 0xf; r2 += r5; r4 = r2; r4 += 4;"
                                 "if r4 > r3 goto +2; r0 = *(u32 *)(r2 + 0); exit; r0 = 0; exit",
         prog_type="sched_cls"),
    Case("pkt-write-tc", PKT + "r4 = r2; r4 += 14; if r4 > r3 goto +3; *(u8 *)(r2 + 13) = 1; r0 = 0; exit;"
                               "r0 = 0; exit", prog_type="sched_cls"),
    Case("xdp-pkt", XPKT + "r4 = r2; r4 += 14; if r4 > r3 goto +2; r0 = *(u16 *)(r2 + 12); exit; r0 = 2; exit",
         prog_type="xdp"),
    Case("map-lookup-checked", KEY0 + "r1 = map[hash]; call bpf_map_lookup_elem; if r0 == 0 goto +1;"
                                      "r0 = *(u64 *)(r0 + 0); r0 = 0; exit", maps=("hash",)),
    Case("array-const-key-not-null", KEY0 + "r1 = map[arr]; call bpf_map_lookup_elem;"
                                            "r0 = *(u64 *)(r0 + 0); r0 = 0; exit", maps=("arr",)),
    Case("map-var-offset", KEY0 + "r1 = map[big]; call bpf_map_lookup_elem; if r0 == 0 goto +5;"
                                  "r1 = *(u32 *)(r0 + 0); if r1 > 56 goto +3; r0 += r1; r1 = *(u64 *)(r0 + 0);"
                                  "r0 = 0; exit", maps=("big",)),
    Case("map-linked-bound", KEY0 + "r1 = map[big]; call bpf_map_lookup_elem; if r0 == 0 goto +6;"
                                    "r1 = *(u32 *)(r0 + 0); r2 = r1; if r2 > 56 goto +3; r0 += r1;"
                                    "r1 = *(u64 *)(r0 + 0); r0 = 0; exit", maps=("big",)),
    Case("map-update", KEY0 + "r3 = 7; *(u64 *)(r10 - 16) = r3; r3 = r10; r3 += -16; r1 = map[hash]; r4 = 0;"
                              "call bpf_map_update_elem; r0 = 0; exit", maps=("hash",)),
    Case("ringbuf-ok", "r1 = map[rb]; r2 = 8; r3 = 0; call bpf_ringbuf_reserve; if r0 == 0 goto +3; r1 = r0;"
                       "r2 = 0; call bpf_ringbuf_submit; r0 = 0; exit", maps=("rb",)),
    Case("helper-stack-buf", "r1 = r10; r1 += -16; r2 = 16; call bpf_get_current_comm; r0 = *(u64 *)(r10 - 8);"
                             "exit"),
    Case("helper-var-size", "call bpf_get_prandom_u32; r2 = r0; r2 &= 7; r2 += 1; r1 = r10; r1 += -8;"
                            "r3 = 0; call bpf_probe_read_kernel; r0 = 0; exit"),
    Case("subprog-call", "r1 = 5; call f; if r0 > 10 goto +1; r0 = 0; exit; f: r0 = r1; r0 += 1; exit"),
    Case("subprog-stack-arg", "r1 = r10; r1 += -8; call f; r0 = *(u64 *)(r10 - 8); exit;"
                              "f: r0 = 1; *(u64 *)(r1 + 0) = r0; r0 = 0; exit"),
    Case("bounded-loop", "r0 = 0; r1 = 0; l: r0 += r1; r1 += 1; if r1 < 1000 goto l; r0 = 0; exit"),
    Case("may-goto-loop", "r0 = 0; l: may_goto +2; r0 += 1; goto l; r0 = 0; exit"),
    Case("dead-branch", "r1 = 1; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit"),
    Case("ld-abs", "r6 = r1; r0 = *(u8 *)skb[12]; r0 = 0; exit"),
    Case("atomic-stack", "r1 = 1; *(u64 *)(r10 - 8) = r1; lock *(u64 *)(r10 - 8) += r1; r0 = 0; exit"),
    Case("rodata-const", "r0 = 0; exit"),
    Case("return-range-ok", "call bpf_get_prandom_u32; r0 &= 1; exit", prog_type="cgroup_skb"),
    Case("raw-tp-args", "r0 = *(u64 *)(r1 + 8); r0 = 0; exit", prog_type="raw_tracepoint"),
    Case("null-check-marks-copies", KEY0 + "r1 = map[hash]; call bpf_map_lookup_elem; r6 = r0;"
                                           "if r0 == 0 goto +1; r0 = *(u64 *)(r6 + 0); r0 = 0; exit", maps=("hash",)),
    Case("queue-push-pop", "r1 = 7; *(u64 *)(r10 - 8) = r1; r1 = map[queue]; r2 = r10; r2 += -8; r3 = 0;"
                           "call bpf_map_push_elem; r1 = map[queue]; r2 = r10; r2 += -16; call bpf_map_pop_elem;"
                           "r0 = *(u64 *)(r10 - 16); r0 = 0; exit", maps=("queue",)),
    Case("tail-call", "r2 = map[progs]; r3 = 1; call bpf_tail_call; r0 = 0; exit", maps=("progs",)),
    Case("skb-load-bytes", "r6 = r1; r2 = 0; r3 = r10; r3 += -16; r4 = 16; call bpf_skb_load_bytes;"
                           "r0 = *(u64 *)(r10 - 16); r0 = 0; exit", prog_type="sched_cls"),
    Case("skb-store-bytes", "r6 = r1; r1 = 0; *(u64 *)(r10 - 8) = r1; r1 = r6; r2 = 0; r3 = r10; r3 += -8; r4 = 8;"
                            "r5 = 0; call bpf_skb_store_bytes; r0 = 0; exit", prog_type="sched_cls"),
    Case("csum-replace", "r6 = r1; r2 = 0; r3 = 0; r4 = 0; r5 = 2; call bpf_l3_csum_replace; r1 = r6; r2 = 0;"
                         "r3 = 0; r4 = 0; r5 = 2; call bpf_l4_csum_replace; r0 = 0; exit", prog_type="sched_cls"),
    Case("csum-diff", "r1 = 0; *(u64 *)(r10 - 8) = r1; r1 = r10; r1 += -8; r2 = 4; r3 = 0; r4 = 0; r5 = 0;"
                      "call bpf_csum_diff; r0 = 0; exit", prog_type="xdp"),
    Case("skb-change-tail", "r6 = r1; r2 = 100; r3 = 0; call bpf_skb_change_tail; r0 = 0; exit", prog_type="sched_cls"),
    Case("xdp-adjust", "r6 = r1; r2 = -14; call bpf_xdp_adjust_head; r1 = r6; r2 = 0; call bpf_xdp_adjust_meta;"
                       "r1 = r6; r2 = 0; call bpf_xdp_adjust_tail; r0 = 2; exit", prog_type="xdp"),
    Case("redirect", "r1 = 1; r2 = 0; call bpf_redirect; exit", prog_type="xdp"),
    Case("tunnel-key", "r6 = r1; r1 = 0; *(u64 *)(r10 - 8) = r1; *(u64 *)(r10 - 16) = r1; *(u64 *)(r10 - 24) = r1;"
                       "*(u64 *)(r10 - 32) = r1; *(u64 *)(r10 - 40) = r1; *(u64 *)(r10 - 48) = r1; r1 = r6;"
                       "r2 = r10; r2 += -48; r3 = 44; r4 = 0; call bpf_skb_set_tunnel_key; r0 = 0; exit",
         prog_type="sched_cls"),
    Case("time-and-ids", "call bpf_ktime_get_ns; call bpf_ktime_get_boot_ns; call bpf_get_smp_processor_id;"
                         "call bpf_get_current_pid_tgid; r0 = 0; exit"),
    Case("probe-read", "r1 = r10; r1 += -8; r2 = 8; r3 = 0; call bpf_probe_read_user; r1 = r10; r1 += -16;"
                       "r2 = 8; r3 = 0; call bpf_probe_read_kernel_str; r0 = 0; exit", prog_type="kprobe"),
    Case("ringbuf-output", "r1 = 1; *(u64 *)(r10 - 8) = r1; r1 = map[rb]; r2 = r10; r2 += -8; r3 = 8; r4 = 0;"
                           "call bpf_ringbuf_output; r1 = map[rb]; r2 = 0; call bpf_ringbuf_query; r0 = 0; exit",
         maps=("rb",)),
    # --- rejected: registers --------------------------------------------------------------------------------
    Case("uninit-reg", "r0 = r2; exit", r"R2 !read_ok"),
    Case("uninit-r0-exit", "exit", r"R0 !read_ok"),
    Case("fp-write", "r10 = 1; r0 = 0; exit", r"frame pointer is read only"),
    Case("fp-atomic-fetch", "r0 = 0; *(u64 *)(r10 - 8) = r0; r10 = atomic_fetch_add((u64 *)(r10 - 8), r10);"
                            "exit", r"frame pointer is read only"),
    # --- rejected: ALU --------------------------------------------------------------------------------------------
    Case("div-zero", "r0 = 1; r0 /= 0; exit", r"div by zero"),
    Case("mod-zero", "r0 = 1; w0 %= 0; exit", r"div by zero"),
    Case("shift-64", "r0 = 1; r0 <<= 64; exit", r"invalid shift 64"),
    Case("shift-32", "r0 = 1; w0 >>= 32; exit", r"invalid shift 32"),
    Case("shift-neg", "r0 = 1; r0 s>>= -1; exit", r"invalid shift -1"),
    Case("ptr-and", "r1 = r10; r1 &= 8; r0 = 0; exit", r"R1 bitwise operator &= on pointer prohibited"),
    Case("ptr-mul", "r1 = r10; r1 *= 8; r0 = 0; exit", r"R1 pointer arithmetic with \*= operator prohibited"),
    Case("ptr-32bit", "r1 = r10; w1 += 8; r0 = 0; exit", r"R1 32-bit pointer arithmetic prohibited"),
    Case("ptr-plus-ptr", "r1 = r10; r2 = r10; r1 += r2; r0 = 0; exit", r"R1 pointer \+= pointer prohibited"),
    Case("scalar-minus-ptr", "r2 = 4; r2 -= r10; r0 = 0; exit", r"R2 tried to subtract pointer from scalar"),
    Case("fp-sub", "r1 = r10; r1 -= 8; r0 = 0; exit", r"R1 subtraction from stack pointer prohibited"),
    Case("ptr-unbounded-add", "call bpf_get_prandom_u32; r1 = r10; r1 += r0; r0 = 0; exit",
         r"math between fp pointer and register with unbounded min value is not allowed"),
    Case("null-arith", KEY0 + "r1 = map[hash]; call bpf_map_lookup_elem; r0 += 8; r0 = 0; exit",
         r"R0 pointer arithmetic on map_value_or_null prohibited, null-check it first", maps=("hash",)),
    # --- rejected: memory ------------------------------------------------------------------------------------
    Case("scalar-deref", "r2 = 5; r0 = *(u64 *)(r2 + 0); exit", r"R2 invalid mem access 'scalar'"),
    Case("stack-above-fp", "r0 = *(u64 *)(r10 + 8); exit", r"invalid read from stack R10 off=8 size=8"),
    Case("stack-too-deep", "r0 = 0; *(u64 *)(r10 - 520) = r0; exit", r"invalid write to stack R10 off=-520 size=8"),
    Case("stack-misaligned", "r0 = 0; *(u64 *)(r10 - 4) = r0; exit", r"misaligned stack access off 0\+0\+-4 size 8"),
    Case("spill-narrow-ptr", "r1 = r10; *(u32 *)(r10 - 8) = r1; r0 = 0; exit", r"invalid size of register spill"),
    Case("fill-narrow-ptr", "r1 = r10; *(u64 *)(r10 - 8) = r1; r0 = *(u32 *)(r10 - 8); exit",
         r"invalid size of register fill"),
    Case("ctx-bad-off", "r0 = *(u32 *)(r1 + 1000); exit", r"invalid bpf_context access off=1000 size=4"),
    Case("ctx-narrow-bad", "r0 = *(u8 *)(r1 + 77); exit", r"invalid bpf_context access off=77 size=1",
         prog_type="sched_cls"),
    Case("ctx-write-ro", "r2 = 0; *(u32 *)(r1 + 0) = r2; r0 = 0; exit", r"invalid bpf_context access off=0 size=4"),
    Case("ctx-modified", "r1 += 4; r0 = *(u32 *)(r1 + 0); exit", r"dereference of modified ctx ptr R1 off=4 disallowed",
         prog_type="sched_cls"),
    Case("ctx-socket-data", "r0 = *(u32 *)(r1 + 76); exit", r"invalid bpf_context access off=76 size=4"),
    Case("xdp-ctx-write", "r2 = 0; *(u32 *)(r1 + 0) = r2; r0 = 0; exit", r"invalid bpf_context access off=0 size=4",
         prog_type="xdp"),
    Case("pkt-unchecked", PKT + "r0 = *(u8 *)(r2 + 0); exit",
         r"invalid access to packet, off=0 size=1, R2\(id=0,off=0,r=0\)", prog_type="sched_cls"),
    Case("pkt-past-range", PKT + "r4 = r2; r4 += 14; if r4 > r3 goto +2; r0 = *(u8 *)(r2 + 14); exit;"
                                 "r0 = 0; exit", r"invalid access to packet, off=14 size=1", prog_type="sched_cls"),
    Case("pkt-write-cgroup", PKT + "r4 = r2; r4 += 14; if r4 > r3 goto +3; *(u8 *)(r2 + 13) = 1; r0 = 0; exit;"
                                   "r0 = 0; exit", r"cannot write into packet", prog_type="cgroup_skb"),
    Case("pkt-var-too-wide", PKT + "r5 = *(u32 *)(r1 + 0); r2 += r5; r4 = r2; r4 += 4; if r4 > r3 goto +2;"
                                   "r0 = *(u32 *)(r2 + 0); exit; r0 = 0; exit", r"invalid access to packet",
         prog_type="sched_cls"),
    Case("pkt-after-pull", PKT + "r4 = r2; r4 += 14; if r4 > r3 goto +6; r6 = r2; r2 = 0; call bpf_skb_pull_data;"
                                 "r0 = *(u8 *)(r6 + 0); r0 = 0; exit; r0 = 0; exit",
         r"R6 invalid mem access 'scalar'", prog_type="sched_cls"),
    Case("map-null-deref", KEY0 + "r1 = map[hash]; call bpf_map_lookup_elem; r0 = *(u64 *)(r0 + 0); r0 = 0; exit",
         r"R0 invalid mem access 'map_value_or_null'", maps=("hash",)),
    Case("map-value-oob", KEY0 + "r1 = map[arr]; call bpf_map_lookup_elem; if r0 == 0 goto +2;"
                                 "r0 = *(u64 *)(r0 + 4); r0 = 0; exit",
         r"invalid access to map value, value_size=8 off=4 size=8", maps=("arr",)),
    Case("map-var-oob", KEY0 + "r1 = map[big]; call bpf_map_lookup_elem; if r0 == 0 goto +5;"
                               "r1 = *(u32 *)(r0 + 0); if r1 > 57 goto +3; r0 += r1; r1 = *(u64 *)(r0 + 0);"
                               "r0 = 0; exit", r"invalid access to map value, value_size=64 off=57 size=8",
         maps=("big",)),
    Case("map-unbounded", KEY0 + "r1 = map[big]; call bpf_map_lookup_elem; if r0 == 0 goto +4;"
                                 "r1 = *(u32 *)(r0 + 0); r0 += r1; r1 = *(u32 *)(r0 + 0); r0 = 0; exit",
         r"R0 unbounded memory access, make sure to bounds check any such access", maps=("big",)),
    Case("map-ro-write", KEY0 + "r1 = map[ro]; call bpf_map_lookup_elem; if r0 == 0 goto +2; r1 = 1;"
                                "*(u64 *)(r0 + 0) = r1; r0 = 0; exit",
         r"write into map forbidden, value_size=8 off=0 size=8", maps=("ro",)),
    Case("atomic-ctx", "r2 = 1; lock *(u32 *)(r1 + 48) += r2; r0 = 0; exit",
         r"BPF_ATOMIC stores into R1 ctx is not allowed"),
    # --- rejected: helpers ----------------------------------------------------------------------------------------
    Case("helper-unknown", "r0 = 0; call 9999; exit", r"invalid func unknown#9999"),
    Case("helper-wrong-prog", "r6 = r1; call bpf_xdp_adjust_head; r0 = 0; exit",
         r"program of this type cannot use helper bpf_xdp_adjust_head#44"),
    Case("helper-map-arg", "r1 = 0; call bpf_map_lookup_elem; exit", r"R1 type=scalar expected=map_ptr"),
    Case("helper-key-arg", "r1 = map[arr]; r2 = 0; call bpf_map_lookup_elem; r0 = 0; exit",
         r"R2 type=scalar expected=fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf", maps=("arr",)),
    Case("helper-size-zero", "r1 = r10; r1 += -8; r2 = 0; call bpf_get_current_comm; r0 = 0; exit",
         r"R2 invalid zero-sized read: u64=\[0,0\]"),
    Case("helper-size-neg", "call bpf_get_prandom_u32; r2 = r0; r1 = r10; r1 += -8; call bpf_get_current_comm;"
                            "r0 = 0; exit", r"R2 min value is negative, either use unsigned or 'var &= const'"),
    Case("helper-stack-overflow", "r1 = r10; r1 += -8; r2 = 16; call bpf_get_current_comm; r0 = 0; exit",
         r"invalid write to stack R1 off=-8 size=16"),
    Case("helper-map-type", "r1 = map[hash]; r2 = 8; r3 = 0; call bpf_ringbuf_reserve; r0 = 0; exit",
         r"cannot pass map_type 1 into func bpf_ringbuf_reserve#131", maps=("hash",)),
    Case("ringbuf-leak", "r1 = map[rb]; r2 = 8; r3 = 0; call bpf_ringbuf_reserve; r0 = 0; exit",
         r"Unreleased reference id=\d+ alloc_insn=4", maps=("rb",)),
    Case("ringbuf-null-submit", "r1 = map[rb]; r2 = 8; r3 = 0; call bpf_ringbuf_reserve; r1 = r0; r2 = 0;"
                                "call bpf_ringbuf_submit; r0 = 0; exit",
         r"R1 type=ringbuf_mem_or_null expected=ringbuf_mem", maps=("rb",)),
    Case("tail-call-map-type", "r2 = map[hash]; r3 = 1; call bpf_tail_call; r0 = 0; exit",
         r"expected prog array map for tail call", maps=("hash",)),
    Case("helper-pkt-changing-needs-tc", "r6 = r1; r2 = 100; call bpf_skb_pull_data; r0 = 0; exit",
         r"program of this type cannot use helper bpf_skb_pull_data#39"),
    Case("callback-not-func", "r1 = 10; r2 = 0; r3 = 0; r4 = 0; call bpf_loop; r0 = 0; exit",
         r"R2 type=scalar expected=func"),
    Case("fentry-argument-is-not-a-pointer", "r1 = *(u64 *)(r1 + 0); r0 = *(u32 *)(r1 + 0); r0 = 0; exit",
         r"R1 invalid mem access 'scalar' \(bpfvm passes fentry/fexit/tp_btf/iter/lsm arguments as plain u64",
         prog_type="tracing", kernel=False, why_no_kernel="the kernel types the argument from its attach target"),
    Case("fib-lookup-may-change-its-params",
         "r6 = 0; *(u64 *)(r10 - 56) = r6; r2 = r10; r2 += -64; r3 = 64; r4 = 0; call bpf_fib_lookup;"
         "r6 = *(u64 *)(r10 - 56); r1 = 0; *(u32 *)(r10 - 72) = r1; r2 = r10; r2 += -72; r1 = map[arr];"
         "call bpf_map_lookup_elem; if r0 == 0 goto +2; r0 += r6; r0 = *(u8 *)(r0 + 0); r0 = 0; exit",
         r"math between map_value pointer and register with unbounded min value is not allowed", prog_type="xdp",
         maps=("arr",)),
    Case("get-stack-needs-tracing", "r2 = r10; r2 += -64; r3 = 64; r4 = 0; call bpf_get_stack; exit",
         r"program of this type cannot use helper bpf_get_stack#67", prog_type="xdp"),
    Case("percpu-lookup-plain-array", KEY0 + "r1 = map[arr]; r3 = 0; call bpf_map_lookup_percpu_elem; r0 = 0; exit",
         r"cannot pass map_type 2 into func bpf_map_lookup_percpu_elem#195", maps=("arr",)),
    Case("percpu-lookup-unchecked", KEY0 + "r1 = map[pcpu]; r3 = 1; call bpf_map_lookup_percpu_elem;"
                                          "r0 = *(u64 *)(r0 + 0); exit",
         r"R0 invalid mem access 'map_value_or_null'", maps=("pcpu",)),
    Case("skb-change-head-needs-tc", "r2 = 8; r3 = 0; call bpf_skb_change_head; r0 = 0; exit",
         r"program of this type cannot use helper bpf_skb_change_head#43"),
    Case("xdp-buff-len-needs-xdp", "call bpf_xdp_get_buff_len; exit",
         r"program of this type cannot use helper bpf_xdp_get_buff_len#188", prog_type="sched_cls"),
    # --- rejected: control flow -----------------------------------------------------------------------------------
    Case("unreachable", "r0 = 0; exit; r0 = 1; exit", r"unreachable insn 2"),
    Case("jump-out-of-range", "r0 = 0; goto +5; exit", r"jump out of range from insn 1 to 7"),
    Case("jump-negative", "r0 = 0; if r0 > 1 goto -5; exit", r"jump out of range from insn 1 to -3"),
    Case("last-not-exit", "r0 = 0; exit; r0 = 1", r"last insn is not an exit or jmp"),
    Case("call-bad-target", "r0 = 0; call pc+5; exit", r"call to invalid destination"),
    Case("infinite-loop", "r0 = 0; if r0 == 0 goto -2; exit", r"infinite loop detected at insn 1"),
    Case("too-many-insns", "call bpf_get_prandom_u32; r1 = r0; l: r1 += 1; if r1 s< 0 goto l; r0 = 0; exit",
         r"BPF program is too large. Processed 1000001 insn"),
    Case("call-depth", "call f; exit; f: call g; exit; g: call h; exit; h: call i; exit; i: call j; exit;"
                       "j: call k; exit; k: call l; exit; l: call m; exit; m: r0 = 0; exit",
         r"the call stack of 9 frames is too deep"),
    Case("return-stack-ptr", "r0 = 0; call f; r0 = 0; exit; f: r0 = r10; exit",
         r"cannot return stack pointer to the caller"),
    Case("return-range", "r0 = 7; exit", r"At program exit the register R0 has smin=7 smax=7 should have been in "
                                         r"\[0, 1\]", prog_type="cgroup_skb"),
    Case("return-ptr", "r0 = r1; exit", r"At program exit the register R0 is not a known value \(ctx\)",
         prog_type="cgroup_skb"),
    Case("ld-abs-xdp", "r6 = r1; r0 = *(u8 *)skb[12]; r0 = 0; exit",
         r"BPF_LD_\[ABS\|IND\] instructions not allowed for this program type", prog_type="xdp"),
    Case("callx", "r0 = 0; callx r0; exit", r"unknown opcode 8d"),
]

# Programs the kernel judges differently for reasons outside the verifier's rules.
CASES += [
    Case("callback-ret-range", "r1 = 10; r2 = subprog[+6]; r3 = 0; r4 = 0; call bpf_loop; r0 = 0; exit;"
                               "r0 = 2; exit", r"At callback return the register R0 has smin=2 smax=2 should have "
                                               r"been in \[0, 1\]", kernel=False,
         why_no_kernel="the kernel wants BTF func_info for callbacks (tested with C in test_verifier_clang.py)"),
    Case("callback-ok", "r1 = 10; r2 = subprog[+6]; r3 = 0; r4 = 0; call bpf_loop; r0 = 0; exit; r0 = 1; exit",
         kernel=False, why_no_kernel="the kernel wants BTF func_info for callbacks"),
    # A callback that overwrites a byte of the caller's spilled scalar and branches: the bpf_loop call site
    # must take a checkpoint on every return (the kernel's force checkpoint) for the walk to converge.
    # Campaign generator seed 883 (with bpf_loop statements); was "BPF program is too large".
    Case("callback-rewrites-caller-stack-converges",
         "r6 = r1; r0 = -173878803; call bpf_get_prandom_u32; r0 = (s16)r0; r0 = be16 r0;"
         "call bpf_get_prandom_u32; w0 <<= 24; r0 s/= 1887943902; *(u64 *)(r10 - 8) = r0; r1 = 5;"
         "r2 = subprog[+7]; r3 = r10; r3 += -8; r4 = 0; call bpf_loop; r0 ^= -413103196; exit;"
         "*(u8 *)(r2 + 3) = r1; if r1 > 2 goto +1; if r1 s<= 1 goto +0; r0 = r1; r0 &= 1; exit",
         kernel=False, why_no_kernel="the kernel wants BTF func_info for callbacks",
         extra={"max_insns": 5000}),
    Case("back-edge-unpriv", "r0 = 0; r1 = 0; l: r1 += 1; if r1 < 10 goto l; exit", r"back-edge from insn 3 to 2",
         kernel=False, why_no_kernel="needs an unprivileged loader", extra={"privileged": False}),
    Case("uninit-stack-unpriv", "r0 = 0; *(u64 *)(r10 - 16) = r0; r1 = r10; r1 += -8; r2 = 8;"
                                "call bpf_trace_printk; r0 = 0; exit",
         r"invalid read from stack R1 off -8\+0 size 8", kernel=False,
         why_no_kernel="needs an unprivileged loader (root may read uninitialised stack)",
         extra={"privileged": False}),
]

# kfunc argument rules from BTF parameter names (vmlinux prototypes); the kernel wants these in sleepable
# programs, which the raw loader does not set up.
_SLEEPABLE = "bpf_copy_from_user_str is only for sleepable programs"
CASES += [
    Case("kfunc-sz-ok", "r1 = r10; r1 += -16; r2 = 16; r3 = 0; r4 = 0; call bpf_copy_from_user_str;"
                        "r0 = *(u64 *)(r10 - 8); r0 = 0; exit", prog_type="syscall", kernel=False,
         why_no_kernel=_SLEEPABLE),
    Case("kfunc-sz-too-big", "r1 = r10; r1 += -16; r2 = 32; r3 = 0; r4 = 0; call bpf_copy_from_user_str; r0 = 0;"
                             "exit", r"invalid write to stack R1 off=-16 size=32", prog_type="syscall",
         kernel=False, why_no_kernel=_SLEEPABLE),
    Case("kfunc-sz-unbounded", "call bpf_get_prandom_u32; r2 = r0; r1 = r10; r1 += -16; r3 = 0; r4 = 0;"
                               "call bpf_copy_from_user_str; r0 = 0; exit",
         r"R2 min value is negative, either use unsigned or 'var &= const'", prog_type="syscall", kernel=False,
         why_no_kernel=_SLEEPABLE),
    Case("kfunc-k-not-const", "call bpf_get_prandom_u32; r2 = r0; r1 = 0; call bpf_rdonly_cast; r0 = 0; exit",
         r"R2 must be a known constant", prog_type="syscall", kernel=False,
         why_no_kernel="bpf_rdonly_cast returns a BTF pointer, which bpfvm does not model"),
]

BY_ID = {c.id: c for c in CASES}


_RESULTS: dict[str, object] = {}


def run_case(case: Case):
    """Verify a case once per session (the 1M-instruction case takes a while); re-raise its error."""
    if case.id not in _RESULTS:
        try:
            _RESULTS[case.id] = verify(case.program(), **case.extra)
        except VerifierError as exc:
            _RESULTS[case.id] = exc
    got = _RESULTS[case.id]
    if isinstance(got, VerifierError):
        raise got
    return got


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case) -> None:
    if case.error is None:
        run_case(case)
        return
    with pytest.raises(VerifierError) as info:
        run_case(case)
    message = str(info.value)
    assert "\n" not in message
    assert re.match(r"insn \d+: ", message), message
    assert re.search(case.error, message), message


def test_error_names_slot_and_source_line() -> None:
    p = assemble("r0 = 0; r0 /= 0; exit")
    from bpfvm.program import LineInfo

    p.line_info = [LineInfo(0, "/src/prog.c", 7, 2, "\tint x = 0;"), LineInfo(1, "/src/prog.c", 8, 2, "\treturn x / 0;")]
    with pytest.raises(VerifierError) as info:
        verify(p)
    assert str(info.value) == "insn 1: div by zero (prog.c:8: return x / 0;)"
    assert info.value.insn == 1
    assert "div by zero" in info.value.log or info.value.log == ""


def test_log_level_1_lists_instructions_and_stats() -> None:
    a = verify(assemble("r1 = 1; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit"), log_level=1)
    lines = a.log.splitlines()
    assert lines[0].startswith("0: (b7) r1 = 1") and lines[0].endswith("; R1=1")
    assert "2: (55) if r1 != 0x1 goto pc+1" in a.log
    assert lines[-1] == "processed 5 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0"
    assert a.stats.processed == 5


def test_rejected_log_ends_with_reason_and_stats() -> None:
    with pytest.raises(VerifierError) as info:
        verify(assemble("r0 = 0; r0 /= 0; exit"), log_level=1)
    lines = info.value.log.splitlines()
    assert lines[-2] == "div by zero"
    assert lines[-1].startswith("processed 2 insns")


def test_branch_facts() -> None:
    a = verify(assemble("r1 = 1; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit"))
    assert a.aux[2]["true_branch_taken"] is False and a.aux[2]["false_branch_taken"] is True
    a = verify(assemble("call bpf_get_prandom_u32; r1 = r0; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit"))
    assert a.aux[3]["true_branch_taken"] and a.aux[3]["false_branch_taken"]
    # RFC patch 01's example: both arms reached (by different calls), yet the branch is decided in each.
    a = verify(assemble("r1 = 42; call f; exit; f: r0 = 1; if r1 != 42 goto +1; r0 = 2; exit"))
    assert a.seen[5] and a.seen[6]
    assert a.aux[4]["true_branch_taken"] is False and a.aux[4]["false_branch_taken"] is True


def test_unseen_and_access_facts() -> None:
    p = BY_ID["pkt-checked"].program()
    a = verify(p)
    load = 5
    assert a.aux[load]["proved_safe"] is True and a.aux[load]["mem_region"] == "packet"
    assert a.aux[0]["ctx_field"].name == "data" and a.aux[1]["ctx_field"].name == "data_end"
    assert a.aux[0]["ctx_field"].field_off == 76


def test_apply_puts_facts_into_program_aux_once() -> None:
    p = assemble("r1 = 1; r0 = 42; if r1 != 1 goto +1; r0 = 24; exit")
    a = verify(p)
    assert p.aux == {}
    a.apply(p)
    assert p.aux[2]["false_branch_taken"] is True and p.aux[3]["seen"] is True
    p.aux[2]["false_branch_taken"] = "moved"
    a.apply(p)  # a second call is a no-op
    assert p.aux[2]["false_branch_taken"] == "moved"


def test_stack_depth_per_subprogram() -> None:
    a = verify(assemble("r1 = 0; *(u64 *)(r10 - 24) = r1; call f; r0 = 0; exit;"
                        "f: *(u64 *)(r10 - 40) = r1; r0 = 0; exit"))
    assert a.stack_depth == {0: 24, 5: 40}


def test_combined_stack_too_large() -> None:
    src = ("r1 = 0; *(u64 *)(r10 - 512) = r1; call f; r0 = 0; exit;"
           "f: r1 = 0; *(u64 *)(r10 - 256) = r1; r0 = 0; exit")
    with pytest.raises(VerifierError, match=r"combined stack size of 2 calls is 768. Too large"):
        verify(assemble(src))


def test_pruning_keeps_large_programs_linear() -> None:
    # 2000 independent diamonds: without pruning this is 2^2000 paths.
    body = "".join(f"call bpf_get_prandom_u32; if r0 > {i} goto +1; r6 += 1; r7 = r6;" for i in range(2000))
    a = verify(assemble("r6 = 0;" + body + "r0 = 0; exit"))
    assert a.stats.processed < 4 * len(assemble("r6 = 0;" + body + "r0 = 0; exit").insns)


def test_precision_blocks_unsound_pruning() -> None:
    # The second branch's r1 differs from the first in a way only an imprecise comparison would ignore: the
    # index into the map value must stay checked on every path.
    src = (KEY0 + "r1 = map[big]; call bpf_map_lookup_elem; if r0 == 0 goto +9;"
           "r6 = r0; call bpf_get_prandom_u32; r1 = 8; if r0 > 5 goto +1; r1 = 60;"
           "r6 += r1; r0 = *(u64 *)(r6 + 0); r0 = 0; exit; r0 = 0; exit")
    p = assemble(src)
    p.maps = [MAPS["big"]]
    with pytest.raises(VerifierError, match="invalid access to map value, value_size=64 off=60 size=8"):
        verify(p)


def test_ctx_tables_match_kernel_btf() -> None:
    """The uapi layouts ctx.py writes down are the ones in the running kernel's BTF."""
    from bpfvm.btf import load_vmlinux
    from bpfvm.verifier.ctx import SK_BUFF, XDP_MD

    btf = load_vmlinux()
    if btf is None:
        pytest.skip("no /sys/kernel/btf/vmlinux")
    for struct, table in (("__sk_buff", SK_BUFF), ("xdp_md", XDP_MD)):
        t = btf.find_struct(struct)
        for name, off, size in table:
            base = name.split("[")[0]
            m = btf.member(t.id, base)
            if m is None:  # anonymous unions: flow_keys, sk
                continue
            assert m.byte_offset <= off < m.byte_offset + btf.size_of(m.type), (struct, name)
