// SPDX-License-Identifier: Apache-2.0
/*
 * A small XDP program that parses Ethernet/IPv4, counts packets per IP protocol in an array map and
 * bytes in a global, rewrites the destination MAC through a bpf-to-bpf call, and passes IPv4 while
 * dropping anything else.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} proto_packets SEC(".maps");

__u64 total_bytes = 0;
const volatile unsigned char new_dst[ETH_ALEN] = {0x02, 0, 0, 0, 0, 0x01};

static __attribute__((noinline)) int rewrite_dst(struct ethhdr *eth)
{
	__builtin_memcpy(eth->h_dest, (const void *)new_dst, ETH_ALEN);
	return 1;
}

SEC("xdp")
int xdp_counter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 proto;
	__u64 *count;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__sync_fetch_and_add(&total_bytes, data_end - data);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_DROP;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	proto = ip->protocol;
	count = bpf_map_lookup_elem(&proto_packets, &proto);
	if (count)
		__sync_fetch_and_add(count, 1);
	rewrite_dst(eth);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
