/* Legacy map definitions in SEC("maps") (libbpf's old struct bpf_map_def) and an old section name. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_map_def_legacy {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def_legacy SEC("maps") counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 256,
};

struct bpf_map_def_legacy SEC("maps") flows = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 8,
	.value_size = 4,
	.max_entries = 1024,
	.map_flags = BPF_F_NO_PREALLOC,
};

SEC("socket")
int sock_prog(struct __sk_buff *skb)
{
	__u32 key = skb->protocol & 0xff;
	__u64 *v = bpf_map_lookup_elem(&counts, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

SEC("socket1")
int old_style(struct __sk_buff *skb)
{
	__u64 key = skb->len;

	return bpf_map_lookup_elem(&flows, &key) != 0;
}

char _license[] SEC("license") = "GPL";
__u32 _version SEC("version") = 0x050a00;
