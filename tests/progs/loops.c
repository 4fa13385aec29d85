/* bpf_loop call sites the verifier may or may not let become inline loops (rewrites/bpf_loop.py). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct acc {
	__u64 sum;
	__u32 stop;
};

static int add_index(__u32 i, void *data)
{
	struct acc *a = data;

	a->sum += i * 3 + 1;
	return i == a->stop;
}

static int xor_index(__u32 i, void *data)
{
	struct acc *a = data;

	a->sum ^= i;
	return 0;
}

/* flags 0, one callback: inlined; the count and the early stop depend on the packet */
SEC("tc")
int one_callback(struct __sk_buff *skb)
{
	struct acc a = { .sum = 0, .stop = skb->len % 7 + 3 };
	long n = bpf_loop(skb->len % 13, add_index, &a, 0);

	return (int)(a.sum * 100 + n);
}

/* a different callback on each path: stays a helper call */
SEC("tc")
int two_callbacks(struct __sk_buff *skb)
{
	struct acc a = { .sum = 1, .stop = 100 };
	long n = bpf_loop(6, skb->len > 60 ? add_index : xor_index, &a, 0);

	return (int)(a.sum * 100 + n);
}

/* flags not known to be 0: stays a helper call (-EINVAL when odd) */
SEC("tc")
int unknown_flags(struct __sk_buff *skb)
{
	struct acc a = { .sum = 0, .stop = 100 };
	long n = bpf_loop(4, xor_index, &a, skb->len & 1);

	return (int)(a.sum * 100 + n);
}

/* more than BPF_MAX_LOOPS iterations: -E2BIG from the inline loop */
SEC("tc")
int too_many(struct __sk_buff *skb)
{
	struct acc a = { .sum = 0, .stop = 100 };
	long n = bpf_loop((1 << 23) + skb->len, xor_index, &a, 0);

	return (int)n;
}

/* the upper half of that -E2BIG: the helper returns a long, so it is all ones */
SEC("tc")
int too_many_upper(struct __sk_buff *skb)
{
	struct acc a = { .sum = 0, .stop = 100 };
	long n = bpf_loop((1 << 23) + skb->len, xor_index, &a, 0);

	return (int)(n >> 32);
}

/* the same with flags the verifier cannot see are zero (the mark of a test run's skb): never inlined */
SEC("tc")
int too_many_upper_helper(struct __sk_buff *skb)
{
	struct acc a = { .sum = 0, .stop = 100 };
	long n = bpf_loop((1 << 23) + skb->len, xor_index, &a, skb->mark);

	return (int)(n >> 32);
}

char _license[] SEC("license") = "GPL";
