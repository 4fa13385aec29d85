/* BTF-defined maps of several kinds, map-in-map with an initial slot, a prog array, pinning. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pair { __u32 a; __u64 b; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct pair);
	__uint(max_entries, 128);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16);
	__uint(max_entries, 4);
} sized_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u64);
	__type(value, __u32);
	__uint(max_entries, 1000);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 8);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer SEC(".maps") = {
	.values = { [1] = &inner_a, [3] = &inner_b },
};

int tail_target(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = { [0] = (void *)&tail_target },
};

SEC("xdp")
int xdp_main(struct xdp_md *ctx)
{
	__u32 key = 0, *inner_val;
	struct pair *p;
	__u64 *cnt, k64 = 7;
	void *inner;

	p = bpf_map_lookup_elem(&hash_map, &key);
	if (p)
		p->b += 1;
	cnt = bpf_map_lookup_elem(&counters, &key);
	if (cnt)
		*cnt += 1;
	bpf_map_update_elem(&lru, &k64, &key, BPF_ANY);
	bpf_map_lookup_elem(&sized_array, &key);
	inner = bpf_map_lookup_elem(&outer, &key);
	if (inner) {
		inner_val = bpf_map_lookup_elem(inner, &key);
		if (inner_val)
			return *inner_val;
	}
	bpf_ringbuf_output(&events, &key, sizeof(key), 0);
	bpf_tail_call(ctx, &jumps, 0);
	return XDP_PASS;
}

SEC("xdp")
int tail_target(struct xdp_md *ctx)
{
	__u32 key = 1;
	__u64 *cnt = bpf_map_lookup_elem(&counters, &key);

	return cnt ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
