/* The xdp_buff model: declarations for native modules (see xdp.cdef). */
#ifndef BPFVM_XDP_H
#define BPFVM_XDP_H

#include "skb.h"
#include "xdp.cdef"

static inline uint8_t *bpfvm_xdp_hard_end(const struct bpfvm_xdp *xdp)
{
    return xdp->data_hard_start + xdp->frame_sz - BPFVM_XDP_SHINFO_SIZE;
}

static inline int bpfvm_xdp_has_frags(const struct bpfvm_xdp *xdp)
{
    return (xdp->flags & BPFVM_XDP_FLAGS_HAS_FRAGS) != 0;
}

#endif
