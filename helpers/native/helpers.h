/* Shared by the helper sources (helpers*.c): the helper signature, argument checks. Not for cffi. */
#ifndef BPFVM_HELPERS_H
#define BPFVM_HELPERS_H

#include <stdio.h>
#include <stdlib.h>

#include "dynptr.h"
#include "helpers.cdef"
#include "maps.cdef"

#define HELPER(name) \
    uint64_t bpfvm_helper_##name(struct bpfvm_env *env, uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, \
                                 uint64_t r5)

#define MEM(addr, size, write, what) \
    void *_m_##addr = bpfvm_mem_arg(env, (addr), (size), (write), (what)); \
    if (!_m_##addr) \
        return 0

/* arg1 as this run's context: the sk_buff / xdp_buff model behind it, or NULL with a fault */
struct bpfvm_skb *bpfvm_skb_ctx(struct bpfvm_env *env, uint64_t ctx, const char *what);
struct bpfvm_xdp *bpfvm_xdp_ctx(struct bpfvm_env *env, uint64_t ctx, const char *what);
/* a map pointer: a program map (map_ptr_base + index * stride) or the raw handle of an inner map */
struct bpfvm_map_slot *bpfvm_map_slot_arg(struct bpfvm_env *env, uint64_t ptr, const char *what);

#endif
