/* Helpers of tracing programs: the current task's ids in a pid namespace named by (dev, ino) from a map, a
 * kernel stack (bpfvm has none) and the attach cookie (bpfvm attaches nothing). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "seen_map.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} pidns SEC(".maps");  /* [0] st_dev, [1] st_ino of /proc/self/ns/pid */

SEC("raw_tp/sys_enter")
int task_ids(void *ctx)
{
	struct bpf_pidns_info info = {};
	__u64 stack[4];
	__u32 k0 = 0, k1 = 1;
	__u64 *dev = bpf_map_lookup_elem(&pidns, &k0), *ino = bpf_map_lookup_elem(&pidns, &k1);

	if (!dev || !ino)
		return 1;
	note(0, bpf_get_ns_current_pid_tgid(*dev, *ino, &info, sizeof(info)));
	note(1, ((__u64)info.tgid << 32) | info.pid);
	note(2, bpf_get_stack(ctx, stack, sizeof(stack), 0));
	note(3, stack[0] | stack[3]);
	note(4, bpf_get_attach_cookie(ctx));
	return 0;
}

char _license[] SEC("license") = "GPL";
