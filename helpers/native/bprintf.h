/* printf with the kernel's bpf_bprintf_prepare() rules and bstr_printf() output (see bprintf.c). */
#ifndef BPFVM_BPRINTF_H
#define BPFVM_BPRINTF_H

#include "vm.h"

/* Format `fmt` (NUL-terminated within fmt_size) with num_args u64 arguments into out (at most out_size - 1
 * characters and a NUL when out_size > 0). Returns the untruncated length, or -EINVAL / -ENOSPC. */
int64_t bpfvm_bprintf(struct bpfvm_env *env, const char *fmt, uint64_t fmt_size, const uint64_t *args,
                      uint32_t num_args, char *out, uint64_t out_size);

#endif
