/* iproute2-style maps: struct bpf_elf_map (28 bytes) in SEC("maps"), classifier and action sections. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct bpf_elf_map {
	__u32 type;
	__u32 size_key;
	__u32 size_value;
	__u32 max_elem;
	__u32 flags;
	__u32 id;
	__u32 pinning;
};

#define PIN_GLOBAL_NS 2

struct bpf_elf_map SEC("maps") acc_map = {
	.type = BPF_MAP_TYPE_ARRAY,
	.size_key = sizeof(__u32),
	.size_value = sizeof(__u32),
	.pinning = PIN_GLOBAL_NS,
	.max_elem = 2,
};

struct bpf_elf_map SEC("maps") tc_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.size_key = sizeof(__u32),
	.size_value = sizeof(__u64),
	.max_elem = 64,
	.id = 5,
};

SEC("classifier")
int cls_main(struct __sk_buff *skb)
{
	__u32 key = 0, *v = bpf_map_lookup_elem(&acc_map, &key);

	if (v)
		__sync_fetch_and_add(v, skb->len);
	return TC_ACT_OK;
}

SEC("action")
int act_main(struct __sk_buff *skb)
{
	__u32 key = skb->mark;

	return bpf_map_lookup_elem(&tc_hash, &key) ? TC_ACT_SHOT : TC_ACT_OK;
}

char __license[] SEC("license") = "GPL";
