/* The inlinable dynptr kfuncs (RFC patch 09): one C source, compiled for the host into the native library
 * (what engines call when a call is not inlined, behind the validating wrappers of kfuncs.c) and for the BPF
 * target into helpers/inlinable/kfuncs.o (what the inliner copies into programs). So the two never disagree.
 *
 * The bodies follow the kernel's kernel/bpf/helpers.c semantics: a NULL dynptr gives NULL / -EINVAL, offsets
 * are checked against the dynptr's size, and SKB / XDP slices go through the kernel-internal functions.
 */
#include "inlinable_kfuncs.h"

static inline __attribute__((always_inline)) uint32_t dynptr_type(const struct bpfvm_dynptr_kern *ptr)
{
    return (ptr->size & ~BPFVM_DYNPTR_RDONLY_BIT) >> BPFVM_DYNPTR_TYPE_SHIFT;
}

static inline __attribute__((always_inline)) uint32_t dynptr_size(const struct bpfvm_dynptr_kern *ptr)
{
    return ptr->size & BPFVM_DYNPTR_SIZE_MASK;
}

static inline __attribute__((always_inline)) int dynptr_rdonly(const struct bpfvm_dynptr_kern *ptr)
{
    return (ptr->size & BPFVM_DYNPTR_RDONLY_BIT) != 0;
}

static inline __attribute__((always_inline)) void *slice(const struct bpfvm_dynptr_kern *ptr, uint32_t offset,
                                                         void *buffer, uint32_t len)
{
    uint32_t size, off;

    if (!ptr->data)
        return 0;
    size = dynptr_size(ptr);
    if (len > size || offset > size - len)
        return 0;
    off = ptr->offset + offset;
    switch (dynptr_type(ptr)) {
    case BPFVM_DYNPTR_TYPE_LOCAL:
    case BPFVM_DYNPTR_TYPE_RINGBUF:
        return (char *)ptr->data + off;
    case BPFVM_DYNPTR_TYPE_SKB:
        if (buffer)
            return skb_header_pointer(ptr->data, (int)off, (int)len, buffer);
        return skb_pointer_if_linear(ptr->data, (int)off, (int)len);
    case BPFVM_DYNPTR_TYPE_XDP: {
        uint64_t p = bpf_xdp_pointer(ptr->data, off, len);

        if (p && p < (uint64_t)-BPFVM_MAX_ERRNO)
            return (void *)(uintptr_t)p;
        if (!buffer)
            return 0;
        bpf_xdp_copy_buf(ptr->data, off, buffer, len, 0);
        return buffer;
    }
    default:
        return 0;
    }
}

/* The kernel's prototypes take `struct bpf_dynptr *` (which the verifier recognises as a dynptr argument)
 * and read it as the kernel-side layout. */
#define KERN(p) ((struct bpfvm_dynptr_kern *)(p))

int BPFVM_INLINABLE(bpf_dynptr_is_null)(const struct bpf_dynptr *p)
{
    return !KERN(p)->data;
}

int BPFVM_INLINABLE(bpf_dynptr_is_rdonly)(const struct bpf_dynptr *p)
{
    const struct bpfvm_dynptr_kern *ptr = KERN(p);

    if (!ptr->data)
        return 0;
    return dynptr_rdonly(ptr);
}

uint32_t BPFVM_INLINABLE(bpf_dynptr_size)(const struct bpf_dynptr *p)
{
    const struct bpfvm_dynptr_kern *ptr = KERN(p);

    if (!ptr->data)
        return (uint32_t)-BPFVM_EINVAL;
    return dynptr_size(ptr);
}

void *BPFVM_INLINABLE(bpf_dynptr_slice)(const struct bpf_dynptr *p, uint32_t offset, void *buffer__opt,
                                        uint32_t buffer__szk)
{
    return slice(KERN(p), offset, buffer__opt, buffer__szk);
}

void *BPFVM_INLINABLE(bpf_dynptr_slice_rdwr)(const struct bpf_dynptr *p, uint32_t offset,
                                             void *buffer__opt, uint32_t buffer__szk)
{
    const struct bpfvm_dynptr_kern *ptr = KERN(p);

    if (!ptr->data || dynptr_rdonly(ptr))
        return 0;
    return slice(ptr, offset, buffer__opt, buffer__szk);
}

int BPFVM_INLINABLE(bpf_dynptr_adjust)(const struct bpf_dynptr *p, uint32_t start, uint32_t end)
{
    struct bpfvm_dynptr_kern *ptr = KERN(p);

    uint32_t size;

    if (!ptr->data || start > end)
        return -BPFVM_EINVAL;
    size = dynptr_size(ptr);
    if (start > size || end > size)
        return -BPFVM_ERANGE;
    ptr->offset += start;
    ptr->size = (ptr->size & ~(uint32_t)BPFVM_DYNPTR_SIZE_MASK) | (end - start);
    return 0;
}
