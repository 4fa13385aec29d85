/* Global data in every kind of section, read and written from tc programs. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

int data_counter = 42;                                  /* .data */
__u64 data_pair[2] = { 1, 2 };                          /* .data */
const volatile __u32 ro_limit = 1500;                   /* .rodata */
const volatile char ro_name[8] = "bpfvm";               /* .rodata */
__u32 bss_hits;                                         /* .bss */
__u64 bss_array[4];                                     /* .bss */
int custom_data SEC(".data.custom") = 7;                /* .data.custom */
const volatile int custom_ro SEC(".rodata.custom") = 9; /* .rodata.custom */
static int static_counter = 3;                          /* .data, static */

SEC("tc")
int tc_main(struct __sk_buff *skb)
{
	bss_hits++;
	bss_array[2] += skb->len;
	data_pair[1] += data_counter;
	static_counter++;
	custom_data += custom_ro;
	bpf_trace_printk("len %d\n", sizeof("len %d\n"), skb->len);
	if (skb->len > ro_limit)
		return TC_ACT_SHOT;
	return ro_name[1] + static_counter;
}

SEC("tcx/ingress")
int tcx_prog(struct __sk_buff *skb)
{
	return bss_hits > 10 ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("classifier")
int cls_prog(struct __sk_buff *skb)
{
	return custom_data;
}

SEC("action")
int act_prog(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
