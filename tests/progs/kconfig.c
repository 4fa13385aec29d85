/* Kernel configuration as __kconfig externs: libbpf's virtual options, each kind of value (tristate, bool, char,
 * int, string), a weak option no kernel has, and with -DSTRONG_MISSING a strong one, which must not load. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern enum libbpf_tristate CONFIG_BPF_SYSCALL __kconfig;
extern bool CONFIG_BPF_JIT __kconfig __weak;
extern char CONFIG_NET __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[8] __kconfig __weak;
extern int CONFIG_BPFVM_NO_SUCH_OPTION __kconfig __weak;
#ifdef STRONG_MISSING
extern int CONFIG_BPFVM_NOT_THERE_EITHER __kconfig;
#endif

#include "seen_map.h"

SEC("tc")
int read_kconfig(struct __sk_buff *skb)
{
	note(0, LINUX_KERNEL_VERSION);
	note(1, LINUX_HAS_BPF_COOKIE);
	note(2, CONFIG_BPF_SYSCALL);
	note(3, CONFIG_BPF_JIT);
	note(4, CONFIG_NET);
	note(5, CONFIG_HZ);
	note(6, *(__u64 *)CONFIG_DEFAULT_HOSTNAME);
#ifdef STRONG_MISSING
	note(7, CONFIG_BPFVM_NOT_THERE_EITHER);
#else
	note(7, CONFIG_BPFVM_NO_SUCH_OPTION);
#endif
	return 0;
}

char _license[] SEC("license") = "GPL";
