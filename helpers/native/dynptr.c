/* Dynptr operations shared by the dynptr helpers (bpf_dynptr_read/write/data) and kfuncs (slices).
 *
 * The kernel trusts a dynptr because its verifier tracks it; here any 16 bytes of program memory may claim to
 * be one. So before memory is touched, LOCAL and RINGBUF dynptrs must point into a region that allows the
 * access, and SKB/XDP dynptrs must name this run's model; anything else is a fault, never a host access.
 */
#include "dynptr.h"

uint32_t bpfvm_dynptr_get_type(const struct bpfvm_dynptr_kern *ptr)
{
    return (ptr->size & ~BPFVM_DYNPTR_RDONLY_BIT) >> BPFVM_DYNPTR_TYPE_SHIFT;
}

uint32_t bpfvm_dynptr_get_size(const struct bpfvm_dynptr_kern *ptr) { return ptr->size & BPFVM_DYNPTR_SIZE_MASK; }
int bpfvm_dynptr_is_rdonly(const struct bpfvm_dynptr_kern *ptr) { return (ptr->size & BPFVM_DYNPTR_RDONLY_BIT) != 0; }
void bpfvm_dynptr_set_rdonly(struct bpfvm_dynptr_kern *ptr) { ptr->size |= BPFVM_DYNPTR_RDONLY_BIT; }
void bpfvm_dynptr_set_null(struct bpfvm_dynptr_kern *ptr) { memset(ptr, 0, sizeof(*ptr)); }

void bpfvm_dynptr_init(struct bpfvm_dynptr_kern *ptr, void *data, uint32_t type, uint32_t offset, uint32_t size)
{
    ptr->data = data;
    ptr->offset = offset;
    ptr->size = size | (type << BPFVM_DYNPTR_TYPE_SHIFT);
}

int bpfvm_dynptr_check_off_len(const struct bpfvm_dynptr_kern *ptr, uint32_t offset, uint32_t len)
{
    uint32_t size = bpfvm_dynptr_get_size(ptr);
    if (len > size || offset > size - len)
        return -E2BIG;
    return 0;
}

struct bpfvm_dynptr_kern *bpfvm_dynptr_arg(struct bpfvm_env *env, uint64_t addr, int write, const char *what)
{
    return bpfvm_mem_arg(env, addr, sizeof(struct bpfvm_dynptr_kern), write, what);
}

/* The skb / xdp model an SKB / XDP dynptr names, or NULL with a fault when it names anything else. */
static struct bpfvm_skb *skb_of(struct bpfvm_env *env, const struct bpfvm_dynptr_kern *ptr, const char *what)
{
    if (env->skb && ptr->data == (void *)env->skb)
        return env->skb;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: SKB dynptr does not point at this run's sk_buff", what);
    return NULL;
}

static struct bpfvm_xdp *xdp_of(struct bpfvm_env *env, const struct bpfvm_dynptr_kern *ptr, const char *what)
{
    if (env->xdp && ptr->data == (void *)env->xdp)
        return env->xdp;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: XDP dynptr does not point at this run's xdp_buff", what);
    return NULL;
}

/* The memory of a LOCAL/RINGBUF dynptr at offset, len bytes, checked against the regions. */
static void *local_mem(struct bpfvm_env *env, const struct bpfvm_dynptr_kern *ptr, uint32_t offset, uint32_t len,
                       int write, const char *what)
{
    uint64_t addr = BPFVM_U64(ptr->data) + ptr->offset + offset;
    if (!len)
        return BPFVM_PTR(addr);
    void *p = bpfvm_mem(env, addr, len, write);
    if (!p)
        bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: dynptr memory [%#llx, +%u) is not %s program memory", what,
                     (unsigned long long)addr, len, write ? "writable" : "readable");
    return p;
}

int64_t bpfvm_dynptr_read(struct bpfvm_env *env, uint64_t dst, uint32_t len, struct bpfvm_dynptr_kern *src,
                          uint32_t offset, uint64_t flags)
{
    const char *what = "bpf_dynptr_read";
    void *to = bpfvm_mem_arg(env, dst, len, 1, "bpf_dynptr_read dst");
    if (!to)
        return 0;
    if (!src->data || flags)
        return -EINVAL;
    int err = bpfvm_dynptr_check_off_len(src, offset, len);
    if (err)
        return err;
    uint32_t off = src->offset + offset;
    switch (bpfvm_dynptr_get_type(src)) {
    case BPFVM_DYNPTR_TYPE_LOCAL:
    case BPFVM_DYNPTR_TYPE_RINGBUF: {
        void *from = local_mem(env, src, offset, len, 0, what);
        if (from)
            memmove(to, from, len);
        return 0;
    }
    case BPFVM_DYNPTR_TYPE_SKB: {
        struct bpfvm_skb *skb = skb_of(env, src, what);
        return skb ? bpfvm_skb_load_bytes(skb, off, to, len) : 0;
    }
    case BPFVM_DYNPTR_TYPE_XDP: {
        struct bpfvm_xdp *xdp = xdp_of(env, src, what);
        return xdp ? bpfvm_xdp_load_bytes(xdp, off, to, len) : 0;
    }
    default:
        return -EFAULT;
    }
}

int64_t bpfvm_dynptr_write(struct bpfvm_env *env, struct bpfvm_dynptr_kern *dst, uint32_t offset, uint64_t src,
                           uint32_t len, uint64_t flags)
{
    const char *what = "bpf_dynptr_write";
    const void *from = bpfvm_mem_arg(env, src, len, 0, "bpf_dynptr_write src");
    if (!from)
        return 0;
    if (!dst->data || bpfvm_dynptr_is_rdonly(dst))
        return -EINVAL;
    int err = bpfvm_dynptr_check_off_len(dst, offset, len);
    if (err)
        return err;
    uint32_t off = dst->offset + offset;
    switch (bpfvm_dynptr_get_type(dst)) {
    case BPFVM_DYNPTR_TYPE_LOCAL:
    case BPFVM_DYNPTR_TYPE_RINGBUF: {
        if (flags)
            return -EINVAL;
        void *to = local_mem(env, dst, offset, len, 1, what);
        if (to)
            memmove(to, from, len);
        return 0;
    }
    case BPFVM_DYNPTR_TYPE_SKB: {
        struct bpfvm_skb *skb = skb_of(env, dst, what);
        return skb ? bpfvm_skb_store_bytes(skb, off, from, len, flags) : 0;
    }
    case BPFVM_DYNPTR_TYPE_XDP: {
        if (flags)
            return -EINVAL;
        struct bpfvm_xdp *xdp = xdp_of(env, dst, what);
        return xdp ? bpfvm_xdp_store_bytes(xdp, off, from, len) : 0;
    }
    default:
        return -EFAULT;
    }
}

uint64_t bpfvm_dynptr_data(struct bpfvm_env *env, struct bpfvm_dynptr_kern *ptr, uint32_t offset, uint32_t len)
{
    if (!ptr->data || bpfvm_dynptr_check_off_len(ptr, offset, len) || bpfvm_dynptr_is_rdonly(ptr))
        return 0;
    switch (bpfvm_dynptr_get_type(ptr)) {
    case BPFVM_DYNPTR_TYPE_LOCAL:
    case BPFVM_DYNPTR_TYPE_RINGBUF:
        return BPFVM_U64(local_mem(env, ptr, offset, len, 1, "bpf_dynptr_data"));
    default:                          /* skb and xdp dynptrs take bpf_dynptr_slice */
        return 0;
    }
}

/* Check what a slice of [offset, offset+len) would touch, before the shared kfunc body (inlinable_kfuncs.c)
 * runs: the buffer must be writable program memory, an SKB/XDP dynptr must name this run's model, and a
 * LOCAL/RINGBUF slice must lie in a region. Out-of-range or NULL dynptrs pass: the body returns NULL for them.
 * Returns 0 with a fault set when the slice must not be taken. */
int bpfvm_dynptr_slice_ok(struct bpfvm_env *env, const struct bpfvm_dynptr_kern *ptr, uint32_t offset,
                          uint64_t buffer, uint32_t len, int rdwr)
{
    const char *what = rdwr ? "bpf_dynptr_slice_rdwr" : "bpf_dynptr_slice";
    if (buffer && !bpfvm_mem_arg(env, buffer, len, 1, rdwr ? "bpf_dynptr_slice_rdwr buffer" : "bpf_dynptr_slice buffer"))
        return 0;
    if (!ptr->data || (rdwr && bpfvm_dynptr_is_rdonly(ptr)) || bpfvm_dynptr_check_off_len(ptr, offset, len))
        return 1;
    switch (bpfvm_dynptr_get_type(ptr)) {
    case BPFVM_DYNPTR_TYPE_LOCAL:
    case BPFVM_DYNPTR_TYPE_RINGBUF:
        return local_mem(env, ptr, offset, len, rdwr, what) != NULL;
    case BPFVM_DYNPTR_TYPE_SKB:
        return skb_of(env, ptr, what) != NULL;
    case BPFVM_DYNPTR_TYPE_XDP:
        return xdp_of(env, ptr, what) != NULL;
    default:
        return 1;
    }
}
