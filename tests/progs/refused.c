/* Things the loader must refuse, each selected with -D. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifdef KCONFIG
extern int CONFIG_BPFVM_SURELY_MISSING __kconfig;  /* strong, and no kernel configures it */
SEC("xdp") int uses_kconfig(void *ctx) { return CONFIG_BPFVM_SURELY_MISSING > 0; }
#endif

#ifdef KSYM_VAR
extern const int bpf_prog_active __ksym;
SEC("xdp") int uses_ksym(void *ctx) { return *(int *)&bpf_prog_active; }
#endif

#ifdef DATA_POINTER
int target = 1;
int *pointer = &target;
SEC("xdp") int uses_pointer(void *ctx) { return *pointer; }
#endif

#ifdef UNKNOWN_SECTION
SEC("my_custom_section") int custom(void *ctx) { return 2; }
#endif

char LICENSE[] SEC("license") = "GPL";
