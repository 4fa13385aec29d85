"""The verifier on C programs compiled with clang-19: loops, iterators, callbacks, dynptrs, ring buffers,
read-only globals. Each program is compiled alone, verified by bpfvm, and (where bpftool and bpffs work)
loaded into the kernel with `bpftool prog loadall`, whose verdict must be the same."""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from bpfvm.elf import load_object
from bpfvm.errors import VerifierError
from bpfvm.kernel import kernel_unavailable_reason
from bpfvm.rewrites.dead_code import eliminate_dead_code
from bpfvm.verifier import verify
from clang import CLANG, include_dir, missing_reason

pytestmark = pytest.mark.clang

HEADER = r'''
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <stdbool.h>
struct bpf_iter_num { __u64 __opaque[1]; } __attribute__((aligned(8)));
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;
extern int bpf_dynptr_from_skb(struct __sk_buff *s, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
                              __u32 buffer__szk) __ksym;
extern void *bpf_dynptr_slice_rdwr(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
                                   __u32 buffer__szk) __ksym;
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __ksym;
extern int bpf_dynptr_clone(const struct bpf_dynptr *p, struct bpf_dynptr *clone__uninit) __ksym;
extern bool bpf_dynptr_is_null(const struct bpf_dynptr *p) __ksym;
extern bool bpf_dynptr_is_rdonly(const struct bpf_dynptr *p) __ksym;
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } hash SEC(".maps");
struct bpf_map;
char LICENSE[] SEC("license") = "GPL";
'''

# name -> (C source of one program and its static helpers, None if accepted else a regex of bpfvm's error)
PROGRAMS: dict[str, tuple[str, str | None]] = {
    "iter_sum": (r'''
SEC("raw_tp") int iter_sum(void *ctx)
{
	struct bpf_iter_num it; int *v, sum = 0;
	bpf_iter_num_new(&it, 0, 100);
	while ((v = bpf_iter_num_next(&it))) sum += *v;
	bpf_iter_num_destroy(&it);
	return sum;
}''', None),
    "iter_leak": (r'''
SEC("raw_tp") int iter_leak(void *ctx)
{
	struct bpf_iter_num it; int *v, sum = 0;
	bpf_iter_num_new(&it, 0, 100);
	while ((v = bpf_iter_num_next(&it))) sum += *v;
	return sum;
}''', r"Unreleased reference id=\d+ alloc_insn=\d+"),
    "iter_index": (r'''
SEC("raw_tp") int iter_index(void *ctx)
{
	struct bpf_iter_num it; int *v; __u64 buf[16] = {}; __u64 s = 0;
	bpf_iter_num_new(&it, 0, 16);
	while ((v = bpf_iter_num_next(&it))) { int i = *v; if (i >= 0 && i < 16) s += buf[i]; }
	bpf_iter_num_destroy(&it);
	return s;
}''', None),
    "iter_index_bad": (r'''
SEC("raw_tp") int iter_index_bad(void *ctx)
{
	struct bpf_iter_num it; int *v; __u64 buf[16] = {}; __u64 s = 0;
	bpf_iter_num_new(&it, 0, 16);
	while ((v = bpf_iter_num_next(&it))) { int i = *v; if (i >= 0 && i <= 16) s += buf[i]; }
	bpf_iter_num_destroy(&it);
	return s;
}''', r"invalid read from stack R2 var_off \(0x0; 0xf8\)\+128 size 8"),
    "bounded_loop": (r'''
SEC("raw_tp") int bounded_loop(void *ctx)
{
	__u64 s = 0;
	for (int i = 0; i < 300; i++) { __u32 k = i & 15; __u64 *p = bpf_map_lookup_elem(&hash, &k); if (p) s += *p; }
	return s;
}''', None),
    "loop_cb": (r'''
static long cb(__u64 index, void *ctx) { *(__u64 *)ctx += index; return 0; }
SEC("raw_tp") int loop_cb(void *ctx) { __u64 acc = 0; bpf_loop(100, cb, &acc, 0); return acc; }''', None),
    "loop_cb_index": (r'''
static long cb(__u64 index, void *ctx) { __u64 *v = bpf_map_lookup_elem(&arr, &index); if (v) *v += 1; return 0; }
SEC("raw_tp") int loop_cb_index(void *ctx) { bpf_loop(16, cb, 0, 0); return 0; }''', None),
    "loop_cb_oob": (r'''
static long cb(__u64 index, void *ctx) { __u64 *buf = ctx; buf[index & 7] += 1; return 0; }
SEC("raw_tp") int loop_cb_oob(void *ctx) { __u64 buf[4] = {}; bpf_loop(16, cb, buf, 0); return buf[0]; }''',
                    r"invalid variable-offset read from stack R2 var_off=\(0x0; 0x38\) off=-32 size=8"),
    "foreach": (r'''
static long each(struct bpf_map *map, __u32 *key, __u64 *val, void *ctx) { *(__u64 *)ctx += *val + *key; return 0; }
SEC("raw_tp") int foreach(void *ctx) { __u64 acc = 0; bpf_for_each_map_elem(&arr, each, &acc, 0); return acc; }''',
                None),
    "iter_count_unbounded": (r'''
SEC("raw_tp") int iter_count_unbounded(void *ctx)
{
	struct bpf_iter_num it; int *v; __u64 buf[16] = {}; int i = 0;
	bpf_iter_num_new(&it, 0, 100);
	while ((v = bpf_iter_num_next(&it))) i++;
	bpf_iter_num_destroy(&it);
	return buf[i & 31];
}''', r"invalid read from stack R1 off=0 size=8"),
    "iter_checked_index": (r'''
SEC("raw_tp") int iter_checked_index(void *ctx)
{
	struct bpf_iter_num it; int *v; __u64 buf[16] = {}; int x = 1; __u64 s = 0;
	bpf_iter_num_new(&it, 0, 100);
	while ((v = bpf_iter_num_next(&it))) {
		asm volatile("" : "+r"(x));
		if (x > 15) break;
		s += buf[x];
		x += 1;
	}
	bpf_iter_num_destroy(&it);
	return s;
}''', None),
    "iter_doubling_index": (r'''
SEC("raw_tp") int iter_doubling_index(void *ctx)
{
	struct bpf_iter_num it; int *v; __u64 buf[16] = {}; int x = 1; __u64 s = 0;
	bpf_iter_num_new(&it, 0, 100);
	while ((v = bpf_iter_num_next(&it))) { s += buf[x]; x = x * 2; }
	bpf_iter_num_destroy(&it);
	return s;
}''', r"invalid read from stack off -8\+0 size 8"),
    "loop_cb_state_grows": (r'''
static long cb(__u64 index, void *ctx) { __u64 *c = ctx; __u64 buf[4] = {}; c[1] += buf[c[0]]; c[0] += 1; return 0; }
SEC("raw_tp") int loop_cb_state_grows(void *ctx) { __u64 c[2] = {}; bpf_loop(100, cb, c, 0); return c[0]; }''',
                            r"invalid read from stack R4 off=0 size=8"),
    "may_goto_index": (r'''
SEC("raw_tp") int may_goto_index(void *ctx)
{
	__u64 buf[16] = {}; __u64 s = 0; int i = 0;
	for (;;) {
		asm volatile goto("may_goto %l[out]" :::: out);
		s += buf[i & 15];
		i += 3;
	}
out:
	return s + buf[i];
}''', r"invalid read from stack R2 off=16 size=8"),
    "slice_ok": (r'''
SEC("tc") int slice_ok(struct __sk_buff *skb)
{
	struct bpf_dynptr p, c; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	bpf_dynptr_clone(&p, &c);
	bpf_dynptr_adjust(&c, 1, 10);
	d = bpf_dynptr_slice(&c, 0, buf, sizeof(buf));
	if (!d) return 0;
	return d[7] + bpf_dynptr_size(&p) + bpf_dynptr_is_null(&c) + bpf_dynptr_is_rdonly(&c);
}''', None),
    "slice_oob": (r'''
SEC("tc") int slice_oob(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	d = bpf_dynptr_slice(&p, 0, buf, sizeof(buf));
	if (!d) return 0;
	return d[8];
}''', r"invalid access to memory, mem_size=8 off=8 size=1"),
    "slice_nocheck": (r'''
SEC("tc") int slice_nocheck(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	d = bpf_dynptr_slice(&p, 0, buf, sizeof(buf));
	return d[0];
}''', r"R0 invalid mem access 'rdonly_mem_or_null'"),
    "slice_write_ro": (r'''
SEC("tc") int slice_write_ro(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	d = bpf_dynptr_slice(&p, 0, buf, sizeof(buf));
	if (!d) return 0;
	d[0] = 1;
	return 0;
}''', r"R0 cannot write into rdonly_mem"),
    "slice_rdwr": (r'''
SEC("tc") int slice_rdwr(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	d = bpf_dynptr_slice_rdwr(&p, 0, buf, sizeof(buf));
	if (!d) return 0;
	d[0] = 1;
	return 0;
}''', None),
    "slice_after_pull": (r'''
SEC("tc") int slice_after_pull(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	bpf_dynptr_from_skb(skb, 0, &p);
	d = bpf_dynptr_slice(&p, 0, buf, sizeof(buf));
	if (!d) return 0;
	bpf_skb_pull_data(skb, 0);
	return d[0];
}''', r"R\d invalid mem access 'scalar'"),
    "uninit_dynptr": (r'''
SEC("tc") int uninit_dynptr(struct __sk_buff *skb)
{
	struct bpf_dynptr p; __u8 buf[8]; __u8 *d;
	d = bpf_dynptr_slice(&p, 0, buf, sizeof(buf));
	if (!d) return 0;
	return d[0];
}''', r"Expected an initialized dynptr as arg #0"),
    "rb_dynptr": (r'''
SEC("raw_tp") int rb_dynptr(void *ctx)
{
	struct bpf_dynptr p; __u64 v = 7;
	if (bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &p)) { bpf_ringbuf_discard_dynptr(&p, 0); return 0; }
	bpf_dynptr_write(&p, 0, &v, sizeof(v), 0);
	bpf_ringbuf_submit_dynptr(&p, 0);
	return 0;
}''', None),
    "rb_dynptr_leak": (r'''
SEC("raw_tp") int rb_dynptr_leak(void *ctx)
{
	struct bpf_dynptr p; __u64 v = 7;
	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &p);
	bpf_dynptr_write(&p, 0, &v, sizeof(v), 0);
	return 0;
}''', r"Unreleased reference id=\d+ alloc_insn=\d+"),
    "local_dynptr_stack": (r'''
SEC("raw_tp") int local_dynptr_stack(void *ctx)
{
	struct bpf_dynptr p; __u64 mem[2] = {1, 2}; __u64 out = 0;
	bpf_dynptr_from_mem(mem, sizeof(mem), 0, &p);
	bpf_dynptr_read(&out, sizeof(out), &p, 8, 0);
	return out;
}''', r"Unsupported reg type fp for bpf_dynptr_from_mem data"),
    "local_dynptr_map": (r'''
SEC("raw_tp") int local_dynptr_map(void *ctx)
{
	struct bpf_dynptr p; __u32 k = 0; __u64 out = 0, *d; __u64 *v = bpf_map_lookup_elem(&arr, &k);
	if (!v) return 0;
	bpf_dynptr_from_mem(v, 8, 0, &p);
	bpf_dynptr_read(&out, sizeof(out), &p, 0, 0);
	d = bpf_dynptr_data(&p, 0, 8);
	if (!d) return 0;
	return out + *d;
}''', None),
    "ringbuf_record": (r'''
SEC("raw_tp") int ringbuf_record(void *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 16, 0);
	if (!e) return 0;
	e[0] = 1; e[1] = 2;
	bpf_ringbuf_submit(e, 0);
	return 0;
}''', None),
    "ringbuf_oob": (r'''
SEC("raw_tp") int ringbuf_oob(void *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 16, 0);
	if (!e) return 0;
	e[2] = 1;
	bpf_ringbuf_submit(e, 0);
	return 0;
}''', r"invalid access to memory, mem_size=16 off=16 size=8"),
    "ringbuf_use_after_submit": (r'''
SEC("raw_tp") int ringbuf_use_after_submit(void *ctx)
{
	__u64 *e = bpf_ringbuf_reserve(&rb, 16, 0);
	if (!e) return 0;
	bpf_ringbuf_submit(e, 0);
	e[0] = 1;
	return 0;
}''', r"R\d invalid mem access 'scalar'"),
    "rodata_dead_branch": (r'''
const volatile int debug = 0;
SEC("raw_tp") int rodata_dead_branch(void *ctx)
{
	if (debug) bpf_printk("debug %d", 1);
	return 0;
}''', None),
    "xdp_parse": (r'''
#include <linux/if_ether.h>
SEC("xdp") int xdp_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end) return XDP_DROP;
	return eth->h_proto == 0x0008 ? XDP_PASS : XDP_DROP;
}''', None),
    "xdp_parse_bad": (r'''
#include <linux/if_ether.h>
SEC("xdp") int xdp_parse_bad(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end + 1) return XDP_DROP;
	return eth->h_proto == 0x0008 ? XDP_PASS : XDP_DROP;
}''', r"pointer arithmetic on pkt_end prohibited"),
    "global_subprog": (r'''
__noinline int helper(int x) { return x * 3; }
SEC("tc") int global_subprog(struct __sk_buff *skb) { return helper(skb->len) & 1; }''', None),
}

OUT = Path("/tmp") / "bpfvm-verifier-clang"


def compile_one(name: str) -> Path:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    src = HEADER + PROGRAMS[name][0]
    OUT.mkdir(exist_ok=True)
    out = OUT / f"{name}-{hashlib.sha1(src.encode()).hexdigest()[:10]}.o"
    if not out.exists():
        done = subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", f"-I{include_dir()}", "-x", "c", "-c", "-",
                               "-o", str(out)], input=src, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return out


def ours(path: Path):
    obj = load_object(path)
    (name, prog), = obj.programs.items()
    return prog, verify(prog)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_verdict(name: str) -> None:
    path = compile_one(name)
    expected = PROGRAMS[name][1]
    if expected is None:
        ours(path)
        return
    with pytest.raises(VerifierError) as info:
        ours(path)
    assert re.search(expected, str(info.value)), str(info.value)
    assert re.search(r"\(<stdin>:\d+: ", str(info.value)), "the error names the C source line"


def _kernel_accepts(path: Path) -> tuple[bool, str]:
    pin = f"/sys/fs/bpf/bpfvm-verifier-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(["bpftool", "-d", "prog", "loadall", str(path), pin], capture_output=True, text=True)
    subprocess.run(["rm", "-rf", pin])
    return done.returncode == 0, done.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_same_verdict_as_kernel(name: str) -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")
    path = compile_one(name)
    accepted, log = _kernel_accepts(path)
    try:
        ours(path)
        we_accept = True
    except VerifierError:
        we_accept = False
    assert we_accept == accepted, log[-2000:]


def test_rodata_folding_removes_dead_printk() -> None:
    path = compile_one("rodata_dead_branch")
    prog, analysis = ours(path)
    eliminate_dead_code(prog, analysis)
    assert not any(insn.is_helper_call() for insn in prog.insns)
