/* Kfunc externs: dynptr kfuncs whose argument names carry verifier suffixes (__uninit, __opt, __szk). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt,
			      __u32 buffer__szk) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

SEC("tc")
int kfunc_prog(struct __sk_buff *skb)
{
	struct bpf_dynptr ptr;
	__u8 buf[4] = {};
	__u8 *data;

	if (bpf_dynptr_from_skb(skb, 0, &ptr))
		return TC_ACT_OK;
	data = bpf_dynptr_slice(&ptr, 0, buf, sizeof(buf));
	if (!data)
		return TC_ACT_SHOT;
	return data[0];
}

SEC("cgroup_skb/ingress")
int rcu_prog(struct __sk_buff *skb)
{
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
