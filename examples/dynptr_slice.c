// SPDX-License-Identifier: Apache-2.0
/*
 * The dynptr_slice microbenchmark of the inlinable-kfuncs RFC (patch 11/11), reproduced for bpfvm:
 * a tc program takes an skb dynptr and asks for a one-byte slice at each of the first 100 offsets
 * (the loop is unrolled), then counts the 100 calls in `hits`. Run with a 1000-byte packet, repeat 64.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SLICES 100

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *ptr, __u32 offset, void *buffer__opt,
                              __u32 buffer__szk) __ksym;

long hits = 0;

SEC("tc")
int dynptr_slice(struct __sk_buff *skb)
{
	struct bpf_dynptr packet;
	int offset;

	bpf_dynptr_from_skb(skb, 0, &packet);
#pragma clang loop unroll(full)
	for (offset = 0; offset < SLICES; offset++)
		bpf_dynptr_slice(&packet, offset, NULL, 1);
	__sync_add_and_fetch(&hits, SLICES);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
