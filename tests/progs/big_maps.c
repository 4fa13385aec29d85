/* Tables the size a real load balancer declares (katran's consistent-hash ring has 33M elements), written at
 * an index taken from the packet: map observation and kernel map reads must cope with millions of elements. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define RING_SIZE (1u << 22)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, RING_SIZE);
} ring SEC(".maps");

struct stat { __u64 packets; __u64 bytes; __u8 last_byte; } __attribute__((packed));  /* 17 bytes, stored in 24 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct stat);
	__uint(max_entries, 1024);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct stat);
	__uint(max_entries, 1024);
} totals SEC(".maps");

SEC("xdp")
int ring_writer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 *word = data;
	struct stat *st, *total;
	__u32 slot, bucket, *entry;

	if ((void *)(word + 2) > data_end)
		return XDP_ABORTED;
	slot = word[0] & (RING_SIZE - 1);
	bucket = word[1] & 1023;
	entry = bpf_map_lookup_elem(&ring, &slot);
	if (!entry)
		return XDP_DROP;
	*entry += word[1] | 1;
	st = bpf_map_lookup_elem(&stats, &bucket);
	total = bpf_map_lookup_elem(&totals, &bucket);
	if (!st || !total)
		return XDP_DROP;
	st->packets++;
	st->bytes += data_end - data;
	total->packets++;
	total->last_byte = ((__u8 *)word)[7];
	return slot & 1 ? XDP_TX : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
