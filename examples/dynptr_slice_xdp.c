// SPDX-License-Identifier: Apache-2.0
/*
 * The dynptr_slice benchmark (RFC patch 11/11) on XDP: an xdp dynptr from bpf_dynptr_from_xdp and 100
 * one-byte slices at the first 100 offsets (unrolled), counted in `hits`. `dynptr_slice_xdp` only takes the
 * slices, as the RFC's tc program does; `dynptr_slice_xdp_sum` uses every slice and returns the sum of the
 * first 100 packet bytes (a failed slice adds 0x100), so no engine can drop the work.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SLICES 100

extern int bpf_dynptr_from_xdp(struct xdp_md *xdp, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *ptr, __u32 offset, void *buffer__opt,
                              __u32 buffer__szk) __ksym;

long hits = 0;

SEC("xdp")
int dynptr_slice_xdp(struct xdp_md *xdp)
{
	struct bpf_dynptr packet;
	int offset;

	bpf_dynptr_from_xdp(xdp, 0, &packet);
#pragma clang loop unroll(full)
	for (offset = 0; offset < SLICES; offset++)
		bpf_dynptr_slice(&packet, offset, NULL, 1);
	__sync_add_and_fetch(&hits, SLICES);
	return XDP_PASS;
}

SEC("xdp")
int dynptr_slice_xdp_sum(struct xdp_md *xdp)
{
	struct bpf_dynptr packet;
	unsigned int sum = 0;
	int offset;

	bpf_dynptr_from_xdp(xdp, 0, &packet);
#pragma clang loop unroll(full)
	for (offset = 0; offset < SLICES; offset++) {
		unsigned char *byte = bpf_dynptr_slice(&packet, offset, NULL, 1);

		sum += byte ? *byte : 0x100;
		asm volatile("" : "+r"(sum)); /* keep each slice's use before the next call */
	}
	__sync_add_and_fetch(&hits, SLICES);
	return sum;
}

char LICENSE[] SEC("license") = "GPL";
