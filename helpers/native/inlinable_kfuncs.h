/* Inlinable kfuncs: the declarations that let one C source compile both ways.
 *
 * For the BPF target (the library object that the inliner reads) the kernel-internal functions are extern
 * declarations: clang emits calls to undefined symbols, which the library loader turns into kfunc calls by
 * name, so an inlined body calls the same native functions the kernel's would. For the host (the native
 * library the engines call when a call is not inlined) they are the sk_buff / xdp_buff model functions,
 * and each body gets a `bpfvm_inlinable_` prefix so that the validating wrappers in kfuncs.c can call it.
 */
#ifndef BPFVM_INLINABLE_KFUNCS_H
#define BPFVM_INLINABLE_KFUNCS_H

#include <stdint.h>

#ifdef __bpf__
#define BPFVM_INLINABLE(name) name

struct bpfvm_dynptr_kern {
    void *data;
    uint32_t size;
    uint32_t offset;
};
enum {
    BPFVM_DYNPTR_TYPE_LOCAL = 1, BPFVM_DYNPTR_TYPE_RINGBUF = 2, BPFVM_DYNPTR_TYPE_SKB = 3,
    BPFVM_DYNPTR_TYPE_XDP = 4, BPFVM_DYNPTR_TYPE_SHIFT = 28, BPFVM_DYNPTR_SIZE_MASK = 0xffffff
};
#define BPFVM_DYNPTR_RDONLY_BIT 0x80000000u

extern void *skb_header_pointer(const void *skb, int offset, int len, void *buffer);
extern void *skb_pointer_if_linear(const void *skb, int offset, int len);
extern uint64_t bpf_xdp_pointer(const void *xdp, uint32_t offset, uint32_t len);
extern void bpf_xdp_copy_buf(const void *xdp, uint64_t off, void *buf, uint64_t len, int flush);

#else /* the host */
#include "dynptr.h"
#define BPFVM_INLINABLE(name) bpfvm_inlinable_##name

#define skb_header_pointer(skb, off, len, buf) \
    bpfvm_skb_header_pointer((const struct bpfvm_skb *)(skb), (off), (len), (buf))
#define skb_pointer_if_linear(skb, off, len) bpfvm_skb_pointer_if_linear((const struct bpfvm_skb *)(skb), (off), (len))
#define bpf_xdp_pointer(xdp, off, len) bpfvm_xdp_pointer((struct bpfvm_xdp *)(xdp), (off), (len))
#define bpf_xdp_copy_buf(xdp, off, buf, len, flush) \
    bpfvm_xdp_copy_buf((struct bpfvm_xdp *)(xdp), (off), (buf), (len), (flush))
#endif

/* The uapi type of kfunc parameters (as include/uapi/linux/bpf.h declares it); bodies read it as the
 * kernel-side struct bpfvm_dynptr_kern. */
struct bpf_dynptr {
    uint64_t __opaque[2];
} __attribute__((aligned(8)));

#define BPFVM_EINVAL 22
#define BPFVM_ERANGE 34
#define BPFVM_E2BIG 7
#define BPFVM_MAX_ERRNO 4095

/* The kfunc bodies (host names; the BPF library object exports them under their kernel names). */
#ifndef __bpf__
int BPFVM_INLINABLE(bpf_dynptr_is_null)(const struct bpf_dynptr *p);
int BPFVM_INLINABLE(bpf_dynptr_is_rdonly)(const struct bpf_dynptr *p);
uint32_t BPFVM_INLINABLE(bpf_dynptr_size)(const struct bpf_dynptr *p);
void *BPFVM_INLINABLE(bpf_dynptr_slice)(const struct bpf_dynptr *p, uint32_t offset, void *buffer__opt,
                                        uint32_t buffer__szk);
void *BPFVM_INLINABLE(bpf_dynptr_slice_rdwr)(const struct bpf_dynptr *p, uint32_t offset,
                                             void *buffer__opt, uint32_t buffer__szk);
int BPFVM_INLINABLE(bpf_dynptr_adjust)(const struct bpf_dynptr *p, uint32_t start, uint32_t end);
#endif

#endif
