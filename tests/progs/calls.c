/* bpf-to-bpf calls (static and global, transitive), bpf_loop callbacks, two programs in one section. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

int total;

static __noinline int leaf(int x)
{
	return x * 3 + total;
}

static __noinline int middle(int x)
{
	return leaf(x) + leaf(x + 1);
}

__noinline int global_helper(int x)
{
	return middle(x) ^ 0x55;
}

static long loop_cb(__u32 index, void *ctx)
{
	total += leaf(index);
	return 0;
}

static long other_cb(__u32 index, void *ctx)
{
	*(long *)ctx += index;
	return index > 5;
}

SEC("raw_tp/sys_enter")
int enter_a(void *ctx)
{
	long acc = 0;

	bpf_loop(10, loop_cb, NULL, 0);
	bpf_loop(10, other_cb, &acc, 0);
	return global_helper((int)acc);
}

SEC("raw_tp/sys_enter")
int enter_b(void *ctx)
{
	return middle(total);
}

SEC("raw_tracepoint/sched_switch")
int switch_prog(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
