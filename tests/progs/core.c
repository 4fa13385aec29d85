/* CO-RE field relocations on local struct definitions with preserve_access_index. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
} __attribute__((preserve_access_index));

struct task_struct___local_only {
	int not_in_any_kernel_xyz;
} __attribute__((preserve_access_index));

struct bpfvm_local_type {
	long a;
	long b;
} __attribute__((preserve_access_index));

SEC("raw_tp/sched_switch")
int core_prog(__u64 *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	struct task_struct___local_only *l = (void *)t;
	int pid = BPF_CORE_READ(t, pid);
	int tgid = BPF_CORE_READ(t, tgid);
	char c = BPF_CORE_READ(t, comm[1]);

	if (bpf_core_field_exists(l->not_in_any_kernel_xyz))
		return -1;
	return pid + tgid + c + bpf_core_type_size(struct task_struct);
}

SEC("raw_tp/local")
int local_prog(struct bpfvm_local_type *p)
{
	return p->b;
}

char LICENSE[] SEC("license") = "GPL";
