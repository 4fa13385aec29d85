/* The xdp_buff model: the kernel's multi-buffer accessors and the head/meta/tail adjustments. */
#include "xdp.h"

uint32_t bpfvm_xdp_buff_len(const struct bpfvm_xdp *xdp)
{
    uint32_t len = (uint32_t)(xdp->data_end - xdp->data);
    return bpfvm_xdp_has_frags(xdp) ? len + xdp->frags_size : len;
}

uint64_t bpfvm_xdp_pointer(struct bpfvm_xdp *xdp, uint32_t offset, uint32_t len)
{
    uint32_t size = (uint32_t)(xdp->data_end - xdp->data);
    uint8_t *addr = xdp->data;
    if (offset > 0xffff || len > 0xffff)
        return bpfvm_err_ptr(-EFAULT);
    if (offset + len > bpfvm_xdp_buff_len(xdp))
        return bpfvm_err_ptr(-EINVAL);
    if (offset >= size) {             /* paged area */
        offset -= size;
        for (uint32_t i = 0; i < xdp->nr_frags; i++) {
            uint32_t frag_size = xdp->frags[i].size;
            if (offset < frag_size) {
                addr = xdp->frags[i].data + xdp->frags[i].off;
                size = frag_size;
                break;
            }
            offset -= frag_size;
        }
    }
    return offset + len <= size ? BPFVM_U64(addr + offset) : 0;
}

void bpfvm_xdp_copy_buf(struct bpfvm_xdp *xdp, uint64_t off, void *buf, uint64_t len, int flush)
{
    uint8_t *mem = buf;
    uint64_t ptr_len = (uint64_t)(xdp->data_end - xdp->data), ptr_off = 0;
    uint8_t *ptr_buf = xdp->data;
    uint32_t next = 0;
    if (ptr_len >= off + len) {
        if (flush)
            memmove(xdp->data + off, mem, len);
        else
            memmove(mem, xdp->data + off, len);
        return;
    }
    for (;;) {
        if (off < ptr_off + ptr_len) {
            uint64_t copy_off = off - ptr_off;
            uint64_t copy_len = len < ptr_len - copy_off ? len : ptr_len - copy_off;
            if (flush)
                memmove(ptr_buf + copy_off, mem, copy_len);
            else
                memmove(mem, ptr_buf + copy_off, copy_len);
            off += copy_len;
            len -= copy_len;
            mem += copy_len;
        }
        if (!len || next >= xdp->nr_frags)
            break;
        ptr_off += ptr_len;
        ptr_buf = xdp->frags[next].data + xdp->frags[next].off;
        ptr_len = xdp->frags[next].size;
        next++;
    }
}

int bpfvm_xdp_load_bytes(struct bpfvm_xdp *xdp, uint32_t offset, void *buf, uint32_t len)
{
    uint64_t p = bpfvm_xdp_pointer(xdp, offset, len);
    if (bpfvm_is_err(p))
        return (int)(int64_t)p;
    if (!p)
        bpfvm_xdp_copy_buf(xdp, offset, buf, len, 0);
    else
        memmove(buf, BPFVM_PTR(p), len);
    return 0;
}

int bpfvm_xdp_store_bytes(struct bpfvm_xdp *xdp, uint32_t offset, const void *buf, uint32_t len)
{
    uint64_t p = bpfvm_xdp_pointer(xdp, offset, len);
    if (bpfvm_is_err(p))
        return (int)(int64_t)p;
    if (!p)
        bpfvm_xdp_copy_buf(xdp, offset, (void *)buf, len, 1);
    else
        memmove(BPFVM_PTR(p), buf, len);
    return 0;
}

int bpfvm_xdp_adjust_head(struct bpfvm_xdp *xdp, int32_t offset)
{
    uint8_t *frame_end = xdp->data_hard_start + BPFVM_XDP_FRAME_SIZE;
    uint64_t metalen = (uint64_t)(xdp->data - xdp->data_meta);
    uint8_t *data_start = frame_end + metalen;
    int64_t pos = (xdp->data - xdp->data_hard_start) + (int64_t)offset;
    if (pos < (int64_t)(data_start - xdp->data_hard_start) ||
        pos > (int64_t)(xdp->data_end - xdp->data_hard_start) - 14)
        return -EINVAL;
    if (metalen)
        memmove(xdp->data_meta + offset, xdp->data_meta, metalen);
    xdp->data_meta += offset;
    xdp->data += offset;
    return 0;
}

static int metalen_invalid(uint64_t metalen) { return (metalen & 3) || metalen > BPFVM_XDP_METADATA_MAX; }

int bpfvm_xdp_adjust_meta(struct bpfvm_xdp *xdp, int32_t offset)
{
    int64_t meta = (xdp->data_meta - xdp->data_hard_start) + (int64_t)offset;
    int64_t data = xdp->data - xdp->data_hard_start;
    if (meta < BPFVM_XDP_FRAME_SIZE || meta > data)
        return -EINVAL;
    if (metalen_invalid((uint64_t)(data - meta)))
        return -EACCES;
    xdp->data_meta += offset;
    return 0;
}

static int frags_increase_tail(struct bpfvm_xdp *xdp, int32_t offset)
{
    struct bpfvm_frag *frag = &xdp->frags[xdp->nr_frags - 1];
    if (!xdp->frag_size || xdp->frag_size > xdp->frame_sz)
        return -EOPNOTSUPP;
    int64_t tailroom = (int64_t)xdp->frag_size - frag->size - frag->off;
    if (offset > tailroom)
        return -EINVAL;
    memset(frag->data + frag->off + frag->size, 0, (size_t)offset);
    frag->size += (uint32_t)offset;
    xdp->frags_size += (uint32_t)offset;
    return 0;
}

static int frags_shrink_tail(struct bpfvm_xdp *xdp, int32_t offset)
{
    if (offset > (int64_t)bpfvm_xdp_buff_len(xdp) - 14)
        return -EINVAL;
    uint32_t freed = 0, len_free = 0;
    for (int i = (int)xdp->nr_frags - 1; i >= 0 && offset > 0; i--) {
        struct bpfvm_frag *frag = &xdp->frags[i];
        uint32_t shrink = (uint32_t)offset < frag->size ? (uint32_t)offset : frag->size;
        len_free += shrink;
        offset -= (int32_t)shrink;
        if (frag->size == shrink) {
            freed++;
        } else {
            frag->size -= shrink;
            break;
        }
    }
    for (uint32_t j = xdp->nr_frags - freed; j < xdp->nr_frags; j++)
        memset(&xdp->frags[j], 0, sizeof(xdp->frags[j]));
    xdp->nr_frags -= freed;
    xdp->frags_size -= len_free;
    if (!xdp->nr_frags) {             /* the rest of the shrink eats into the linear part */
        xdp->flags &= ~(uint32_t)BPFVM_XDP_FLAGS_HAS_FRAGS;
        xdp->data_end -= offset;
    }
    return 0;
}

int bpfvm_xdp_adjust_tail(struct bpfvm_xdp *xdp, int32_t offset)
{
    if (bpfvm_xdp_has_frags(xdp)) {
        if (offset < 0)
            return frags_shrink_tail(xdp, -offset);
        return frags_increase_tail(xdp, offset);
    }
    int64_t end = (xdp->data_end - xdp->data_hard_start) + (int64_t)offset;
    if (end > (int64_t)(bpfvm_xdp_hard_end(xdp) - xdp->data_hard_start))
        return -EINVAL;
    if (end < (int64_t)(xdp->data - xdp->data_hard_start) + 14)
        return -EINVAL;
    if (offset > 0)
        memset(xdp->data_end, 0, (size_t)offset);
    xdp->data_end += offset;
    return 0;
}
