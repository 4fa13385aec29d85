/* bpf_spin_lock around a shared counter, and one misuse per -D variant for the verifier to refuse as the kernel
 * does: BAD_TWICE (nested locks), BAD_EXIT (returning with the lock held), BAD_CALL (a helper call inside),
 * BAD_UNLOCK (unlock without lock), BAD_TOUCH (reading the lock word), BAD_OFFSET (the lock is elsewhere). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct counter {
	__u64 packets;
	struct bpf_spin_lock lock;
	__u32 last_len;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 16);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(max_entries, 4);
} totals SEC(".maps");

SEC("tc")
int count(struct __sk_buff *skb)
{
	__u32 key = skb->len & 3, total_key = 0;
	struct counter *c, *t, fresh = {};
	__u64 packets;

	c = bpf_map_lookup_elem(&counters, &key);
	if (!c) {
		fresh.packets = 1;
		fresh.bytes = skb->len;
		bpf_map_update_elem(&counters, &key, &fresh, BPF_NOEXIST);
		return TC_ACT_OK;
	}
	t = bpf_map_lookup_elem(&totals, &total_key);
	if (!t)
		return TC_ACT_SHOT;
	bpf_spin_lock(&c->lock);
	c->packets++;
	c->bytes += skb->len;
	c->last_len = skb->len;
	packets = c->packets;
#ifdef BAD_TWICE
	bpf_spin_lock(&t->lock);
	bpf_spin_unlock(&t->lock);
#endif
#ifdef BAD_EXIT
	if (packets > 3)
		return TC_ACT_SHOT;
#endif
#ifdef BAD_CALL
	c->bytes += bpf_get_prandom_u32() & 1;
#endif
#ifdef BAD_TOUCH
	packets += *(volatile __u32 *)&c->lock;
#endif
#ifdef BAD_OFFSET
	bpf_spin_unlock((struct bpf_spin_lock *)&c->last_len);
#else
	bpf_spin_unlock(&c->lock);
#endif
#ifdef BAD_UNLOCK
	bpf_spin_unlock(&t->lock);
#endif
	bpf_spin_lock(&t->lock);
	t->packets++;
	bpf_spin_unlock(&t->lock);
	return packets & 1 ? TC_ACT_OK : TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
