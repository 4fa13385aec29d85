/* The native environment of helpers and kfuncs: declarations shared by every native module.
 *
 * vm.cdef holds the declarations cffi also sees; this header adds what only C needs: errno values of the
 * kernel, small inline helpers and the formatted fault setter.
 */
#ifndef BPFVM_VM_H
#define BPFVM_VM_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>

#include "vm.cdef"

/* the kernel-internal error codes that helpers return and userspace headers lack */
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

#define BPFVM_U64(p) ((uint64_t)(uintptr_t)(p))
#define BPFVM_PTR(v) ((void *)(uintptr_t)(v))
/* a negative errno as a helper's u64 result */
#define BPFVM_ERR(e) ((uint64_t)(int64_t)(e))
/* an `int` result (kfuncs declared to return int): the upper half is zero, as after an x86-64 kernel call
 * and after the inlined BPF body (w0 = ...), so the inline modes agree on all 64 bits of r0 */
#define BPFVM_INT(e) ((uint64_t)(uint32_t)(int32_t)(e))

/* Set a fault with a printf-style message; returns 0 so helpers can `return bpfvm_faultf(...)`. */
uint64_t bpfvm_faultf(struct bpfvm_env *env, int32_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The kernel's ERR_PTR encoding for functions that return a pointer or an error (bpf_xdp_pointer). */
static inline uint64_t bpfvm_err_ptr(int err) { return (uint64_t)(int64_t)err; }
static inline int bpfvm_is_err(uint64_t v) { return v >= (uint64_t)-4095; }

/* Append bytes to a growable output buffer owned by C; 0 or -ENOMEM. */
int bpfvm_out_append(uint8_t **buf, uint64_t *len, uint64_t *cap, const void *data, uint64_t n);

/* wall clocks for ktime helpers (deterministic when env->ktime_fixed) */
uint64_t bpfvm_ktime(struct bpfvm_env *env, int clock);

/* the kernel's prandom_u32_state() on env->prandom */
uint32_t bpfvm_prandom_u32(struct bpfvm_env *env);

#endif
