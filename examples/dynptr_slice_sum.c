// SPDX-License-Identifier: Apache-2.0
/*
 * A variant of dynptr_slice.c that uses every slice: it sums the first 100 bytes of the packet through
 * 100 one-byte slices and returns the sum, so no engine or compiler can drop the work. A slice that fails
 * (a short or non-linear packet without a buffer) adds 0x100, which makes the failure visible in the result.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SLICES 100

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *ptr, __u32 offset, void *buffer__opt,
                              __u32 buffer__szk) __ksym;

long hits = 0;

SEC("tc")
int dynptr_slice_sum(struct __sk_buff *skb)
{
	struct bpf_dynptr packet;
	unsigned int sum = 0;
	int offset;

	bpf_dynptr_from_skb(skb, 0, &packet);
#pragma clang loop unroll(full)
	for (offset = 0; offset < SLICES; offset++) {
		unsigned char *byte = bpf_dynptr_slice(&packet, offset, NULL, 1);

		sum += byte ? *byte : 0x100;
		asm volatile("" : "+r"(sum)); /* keep each slice's use before the next call */
	}
	__sync_add_and_fetch(&hits, SLICES);
	return sum;
}

/* The same with a stack buffer, so slices of a non-linear skb are copied instead of failing. */
SEC("tc")
int dynptr_slice_sum_buf(struct __sk_buff *skb)
{
	struct bpf_dynptr packet;
	unsigned int sum = 0;
	unsigned char buf[1];
	int offset;

	bpf_dynptr_from_skb(skb, 0, &packet);
#pragma clang loop unroll(full)
	for (offset = 0; offset < SLICES; offset++) {
		unsigned char *byte = bpf_dynptr_slice(&packet, offset, buf, 1);

		sum += byte ? *byte : 0x100;
		asm volatile("" : "+r"(sum)); /* keep each slice's use before the next call */
	}
	__sync_add_and_fetch(&hits, SLICES);
	return sum;
}

char LICENSE[] SEC("license") = "GPL";
