/* Helpers the runtime always had that the verifier's prototype table lacked: skb head growth, checksum and
 * hash updates, tunnel key round trips, XDP buffer length and per-CPU lookups on a chosen CPU. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} per_cpu SEC(".maps");

#include "seen_map.h"

SEC("tc")
int tc_helpers(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {}, back = {};
	__u32 first = 0;
	long ret;

	bpf_set_hash(skb, 0x12345678);
	note(0, skb->hash);
	bpf_set_hash_invalid(skb);
	note(1, skb->hash);
	note(2, bpf_csum_update(skb, 0xabcd));
	note(3, (__u64)bpf_csum_level(skb, BPF_CSUM_LEVEL_QUERY));
	key.remote_ipv4 = 0x0a000001;
	key.tunnel_id = 42;
	key.tunnel_ttl = 64;
	ret = bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
	note(4, ret);
	ret = bpf_skb_get_tunnel_key(skb, &back, sizeof(back), 0);
	note(5, ret ? (__u64)ret : ((__u64)back.tunnel_id << 32 | back.remote_ipv4));
	if (skb->len >= 1)
		bpf_skb_load_bytes(skb, 0, &first, 1);
	ret = bpf_skb_change_head(skb, first & 0x3f, 0);
	note(6, ret);
	note(7, skb->len);
	return TC_ACT_OK;
}

SEC("xdp")
int xdp_helpers(struct xdp_md *ctx)
{
	__u32 key = 1, cpu;
	__u64 *value;

	value = bpf_map_lookup_elem(&per_cpu, &key);
	if (value)
		*value += bpf_xdp_get_buff_len(ctx);
	cpu = bpf_get_smp_processor_id();
	value = bpf_map_lookup_percpu_elem(&per_cpu, &key, cpu);
	note(0, value ? *value : 0xdead);
	value = bpf_map_lookup_percpu_elem(&per_cpu, &key, 100000);
	note(1, value ? 1 : 2);
	return XDP_PASS;
}

/* Encapsulation and decapsulation as tunnels do them: length, mode and flags come from the packet's last bytes,
 * so generated inputs reach every error path as well as the real ones. */
SEC("tc")
int adjust_room(struct __sk_buff *skb)
{
	__u8 knobs[4] = {};
	__s32 len_diff;
	__u64 flags;
	long ret;

	if (skb->len < 4 || bpf_skb_load_bytes(skb, skb->len - 4, knobs, 4))
		return TC_ACT_SHOT;
	len_diff = (__s8)knobs[0];
	if (knobs[3] & 0x80)
		len_diff *= 40;                      /* past the 0xfff bound now and then */
	flags = (__u64)(knobs[2] & 0x7f) << 1 | (knobs[3] & 1);   /* ENCAP_L3/L4/L2_ETH, NO_CSUM_RESET, FIXED_GSO */
	flags |= (__u64)(knobs[3] & 0x06) << 6;      /* DECAP_L3_IPV4/IPV6 */
	if (knobs[3] & 0x08)
		flags |= (__u64)(knobs[1] & 0x1f) << 56; /* BPF_F_ADJ_ROOM_ENCAP_L2(len) */
	ret = bpf_skb_adjust_room(skb, len_diff, knobs[1] >> 6, flags);
	note(0, ret);
	note(1, skb->len);
	note(2, skb->protocol);
	if (knobs[3] & 0x10) {                   /* a second change sees encapsulation and the new headers */
		ret = bpf_skb_adjust_room(skb, 8, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
		note(3, ret);
		note(4, bpf_skb_change_tail(skb, skb->len + 2, 0));
	}
	return ret ? TC_ACT_SHOT : TC_ACT_OK;
}

/* bpf_fib_lookup's argument checks, and a lookup from the test run's device, which does not forward. */
SEC("xdp")
int fib(struct xdp_md *ctx)
{
	struct bpf_fib_lookup params = {};

	params.family = 2;                   /* AF_INET */
	params.ifindex = ctx->ingress_ifindex;
	params.ipv4_dst = 0x0100007f;        /* 127.0.0.1 */
	note(0, bpf_fib_lookup(ctx, &params, sizeof(params), 0));
	params.family = 0;
	note(1, bpf_fib_lookup(ctx, &params, sizeof(params), 0));
	params.family = 10;                  /* AF_INET6 */
	params.ifindex = 0;
	note(2, bpf_fib_lookup(ctx, &params, sizeof(params), 0));
	note(3, bpf_fib_lookup(ctx, &params, sizeof(params), 1 << 7));
	note(4, bpf_fib_lookup(ctx, &params, 32, 0));
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
