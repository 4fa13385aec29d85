/* `seen`: eight u64 slots a test program fills with what it observed, for the test to read back. */
#ifndef SEEN_MAP_H
#define SEEN_MAP_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 8);
} seen SEC(".maps");

static void note(__u32 slot, __u64 value)
{
	__u64 *entry = bpf_map_lookup_elem(&seen, &slot);

	if (entry)
		*entry = value;
}

#endif
