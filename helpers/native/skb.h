/* The sk_buff model and Internet checksums: declarations for native modules (see skb.cdef). */
#ifndef BPFVM_SKB_H
#define BPFVM_SKB_H

#include "vm.h"
#include "skb.cdef"

/* csum_replace2/4/by_diff and inet_proto_csum_replace* of the kernel, on a checksum field in memory */
void bpfvm_csum_replace2(uint16_t *sum, uint16_t from, uint16_t to);
void bpfvm_csum_replace4(uint16_t *sum, uint32_t from, uint32_t to);
void bpfvm_csum_replace_by_diff(uint16_t *sum, uint32_t diff);
void bpfvm_proto_csum_replace4(uint16_t *sum, struct bpfvm_skb *skb, uint32_t from, uint32_t to, int pseudohdr);
void bpfvm_proto_csum_replace_by_diff(uint16_t *sum, struct bpfvm_skb *skb, uint32_t diff, int pseudohdr,
                                      int ipv6);

static inline uint8_t *bpfvm_skb_tail_pointer(const struct bpfvm_skb *skb)
{
    return skb->data + (skb->len - skb->data_len);
}

static inline uint8_t *bpfvm_skb_buf_end(const struct bpfvm_skb *skb) { return skb->buf + skb->buf_size; }

#endif
