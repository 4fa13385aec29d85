/* BTF kinds that only attributes and types produce: DECL_TAG, TYPE_TAG, FLOAT, ENUM64, bitfields. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __user __attribute__((btf_type_tag("user")))

enum big_values { BIG_SMALL = 1, BIG_LARGE = 0x1234567890ULL };
enum signed_values { NEG_ONE = -1, POS_TWO = 2 };

struct tagged {
	int plain;
	int marked __tag("member_tag");
	unsigned int low : 3;
	unsigned int high : 13;
	int __user *uptr;
	double ratio;
	enum big_values big;
	enum signed_values sign;
} __tag("struct_tag");

struct tagged tagged_var __tag("var_tag");

__noinline __tag("func_tag") int tagged_func(int arg __tag("arg_tag"))
{
	return arg + tagged_var.low;
}

SEC("socket")
int tags_prog(struct __sk_buff *skb)
{
	return tagged_func(tagged_var.high) + (tagged_var.big == BIG_LARGE) + tagged_var.sign;
}

char LICENSE[] SEC("license") = "GPL";
