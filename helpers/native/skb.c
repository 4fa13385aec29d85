/* The sk_buff model: the kernel's linear/paged accessors and the Internet checksum arithmetic.
 *
 * Offsets follow the kernel's int arithmetic (skb_header_pointer takes int offset and len), but every
 * access is additionally clamped to the head buffer, so a negative offset can never leave it.
 */
#include "skb.h"

/* -- Internet checksums (x86-64 results: 64-bit one's-complement sum folded to 32 bits) ----------- */
uint32_t bpfvm_csum_partial(const void *buf, uint64_t len, uint32_t sum)
{
    const uint8_t *p = buf;
    unsigned __int128 total = sum;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        total += w;
        p += 8;
        len -= 8;
    }
    if (len) {                       /* the trailing bytes, zero-padded above, as load_unaligned_zeropad */
        uint64_t w = 0;
        memcpy(&w, p, len);
        total += w;
    }
    /* end-around carry: what a chain of adc instructions leaves in the 64-bit accumulator */
    uint64_t r = total == 0 ? 0 : (uint64_t)((total - 1) % 0xffffffffffffffffull) + 1;
    uint64_t s = (r >> 32) + (r & 0xffffffffu);
    return (uint32_t)s + (uint32_t)(s >> 32);
}

uint16_t bpfvm_csum_fold(uint32_t sum)
{
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)~sum;
}

uint32_t bpfvm_csum_add(uint32_t a, uint32_t b)
{
    uint32_t r = a + b;
    return r + (r < b);
}

uint32_t bpfvm_csum_sub(uint32_t a, uint32_t b) { return bpfvm_csum_add(a, ~b); }

uint16_t bpfvm_csum_from32to16(uint32_t sum)
{
    sum += (sum >> 16) | (sum << 16);
    return (uint16_t)(sum >> 16);
}

static uint16_t load16(const uint16_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void store16(uint16_t *p, uint16_t v) { memcpy(p, &v, 2); }

static uint16_t csum16_add(uint16_t csum, uint16_t addend)
{
    uint16_t r = (uint16_t)(csum + addend);
    return (uint16_t)(r + (r < addend));
}

void bpfvm_csum_replace2(uint16_t *sum, uint16_t from, uint16_t to)
{
    uint16_t s = load16(sum);
    store16(sum, (uint16_t)~csum16_add(csum16_add((uint16_t)~s, (uint16_t)~from), to));
}

void bpfvm_csum_replace4(uint16_t *sum, uint32_t from, uint32_t to)
{
    uint32_t tmp = bpfvm_csum_sub(~(uint32_t)load16(sum), from);
    store16(sum, bpfvm_csum_fold(bpfvm_csum_add(tmp, to)));
}

void bpfvm_csum_replace_by_diff(uint16_t *sum, uint32_t diff)
{
    store16(sum, bpfvm_csum_fold(bpfvm_csum_add(diff, ~(uint32_t)load16(sum))));
}

void bpfvm_proto_csum_replace4(uint16_t *sum, struct bpfvm_skb *skb, uint32_t from, uint32_t to, int pseudohdr)
{
    if (skb->ip_summed != BPFVM_CHECKSUM_PARTIAL) {
        bpfvm_csum_replace4(sum, from, to);
        if (skb->ip_summed == BPFVM_CHECKSUM_COMPLETE && pseudohdr)
            skb->csum = ~bpfvm_csum_add(bpfvm_csum_sub(~skb->csum, from), to);
    } else if (pseudohdr) {
        store16(sum, (uint16_t)~bpfvm_csum_fold(bpfvm_csum_add(bpfvm_csum_sub(load16(sum), from), to)));
    }
}

void bpfvm_proto_csum_replace_by_diff(uint16_t *sum, struct bpfvm_skb *skb, uint32_t diff, int pseudohdr,
                                      int ipv6)
{
    if (skb->ip_summed != BPFVM_CHECKSUM_PARTIAL) {
        bpfvm_csum_replace_by_diff(sum, diff);
        if (skb->ip_summed == BPFVM_CHECKSUM_COMPLETE && pseudohdr && !ipv6)
            skb->csum = ~bpfvm_csum_sub(diff, skb->csum);
    } else if (pseudohdr) {
        store16(sum, (uint16_t)~bpfvm_csum_fold(bpfvm_csum_add(diff, load16(sum))));
    }
}

/* -- geometry ---------------------------------------------------------------------------------------- */
uint32_t bpfvm_skb_headlen(const struct bpfvm_skb *skb) { return skb->len - skb->data_len; }
uint32_t bpfvm_skb_headroom(const struct bpfvm_skb *skb) { return (uint32_t)(skb->data - skb->head); }

uint32_t bpfvm_skb_tailroom(const struct bpfvm_skb *skb)
{
    return (uint32_t)(bpfvm_skb_buf_end(skb) - bpfvm_skb_tail_pointer(skb));
}

/* [data + offset, +len) lies inside the head buffer */
static int in_head(const struct bpfvm_skb *skb, int64_t offset, int64_t len)
{
    const uint8_t *p = skb->data + offset;
    return offset >= -(int64_t)(skb->data - skb->buf) && len >= 0 &&
           (uint64_t)(p - skb->buf) + (uint64_t)len <= skb->buf_size;
}

/* -- the kernel's accessors -------------------------------------------------------------------------- */
void *bpfvm_skb_pointer_if_linear(const struct bpfvm_skb *skb, int32_t offset, int32_t len)
{
    if ((int64_t)(int32_t)bpfvm_skb_headlen(skb) - offset >= len && in_head(skb, offset, len))
        return skb->data + offset;
    return NULL;
}

void *bpfvm_skb_header_pointer(const struct bpfvm_skb *skb, int32_t offset, int32_t len, void *buffer)
{
    if ((int64_t)(int32_t)bpfvm_skb_headlen(skb) - offset >= len)
        return in_head(skb, offset, len) ? skb->data + offset : NULL;
    if (!buffer || bpfvm_skb_copy_bits(skb, offset, buffer, len) < 0)
        return NULL;
    return buffer;
}

/* Copy (write == 0: out of the skb into mem; write == 1: from mem into the skb) len bytes at offset. */
static int copy_bits(struct bpfvm_skb *skb, int32_t offset, uint8_t *mem, int32_t len, int write)
{
    int64_t start = (int64_t)bpfvm_skb_headlen(skb);
    int64_t off = offset, n = len;
    if (n < 0 || off > (int64_t)skb->len - n)
        return -EFAULT;
    int64_t copy = start - off;
    if (copy > 0) {
        if (copy > n)
            copy = n;
        if (!in_head(skb, off, copy))
            return -EFAULT;
        if (write)
            memmove(skb->data + off, mem, (size_t)copy);
        else
            memmove(mem, skb->data + off, (size_t)copy);
        n -= copy;
        if (n == 0)
            return 0;
        off += copy;
        mem += copy;
    }
    for (uint32_t i = 0; i < skb->nr_frags && i < BPFVM_SKB_MAX_FRAGS; i++) {
        struct bpfvm_frag *f = &skb->frags[i];
        int64_t end = start + f->size;
        copy = end - off;
        if (copy > 0) {
            if (copy > n)
                copy = n;
            uint8_t *src = f->data + f->off + (off - start);
            if (write)
                memmove(src, mem, (size_t)copy);
            else
                memmove(mem, src, (size_t)copy);
            n -= copy;
            if (n == 0)
                return 0;
            off += copy;
            mem += copy;
        }
        start = end;
    }
    return n ? -EFAULT : 0;
}

int bpfvm_skb_copy_bits(const struct bpfvm_skb *skb, int32_t offset, void *to, int32_t len)
{
    return copy_bits((struct bpfvm_skb *)skb, offset, to, len, 0);
}

int bpfvm_skb_store_bits(struct bpfvm_skb *skb, int32_t offset, const void *from, int32_t len)
{
    return copy_bits(skb, offset, (uint8_t *)from, len, 1);
}

void bpfvm_skb_linear_copy(const struct bpfvm_skb *skb, uint8_t *out)
{
    copy_bits((struct bpfvm_skb *)skb, 0, out, (int32_t)skb->len, 0);
}

/* __pskb_pull_tail(): move delta bytes from the fragments to the end of the linear part */
static int pull_tail(struct bpfvm_skb *skb, uint32_t delta)
{
    if (delta > skb->data_len || delta > bpfvm_skb_tailroom(skb))
        return -ENOMEM;
    uint8_t *tail = bpfvm_skb_tail_pointer(skb);
    uint32_t eat = delta;
    uint32_t i = 0;
    while (eat && i < skb->nr_frags) {
        struct bpfvm_frag *f = &skb->frags[i];
        uint32_t take = f->size < eat ? f->size : eat;
        memcpy(tail, f->data + f->off, take);
        tail += take;
        eat -= take;
        f->off += take;
        f->size -= take;
        if (f->size == 0)
            i++;
    }
    if (i) {                          /* drop the fragments that were eaten entirely */
        memmove(&skb->frags[0], &skb->frags[i], (skb->nr_frags - i) * sizeof(skb->frags[0]));
        skb->nr_frags -= i;
        memset(&skb->frags[skb->nr_frags], 0, i * sizeof(skb->frags[0]));
    }
    skb->data_len -= delta;
    return 0;
}

int bpfvm_skb_may_pull(struct bpfvm_skb *skb, uint32_t len)
{
    uint32_t headlen = bpfvm_skb_headlen(skb);
    if (len <= headlen)
        return 1;
    if (len > skb->len)
        return 0;
    return pull_tail(skb, len - headlen) == 0;
}

int bpfvm_skb_ensure_writable(struct bpfvm_skb *skb, uint32_t write_len)
{
    return bpfvm_skb_may_pull(skb, write_len) ? 0 : -ENOMEM;
}

int bpfvm_skb_cow_head(struct bpfvm_skb *skb, uint32_t need)
{
    uint32_t room = bpfvm_skb_headroom(skb);
    if (need <= room)
        return 0;
    uint32_t delta = ((need - room) + (BPFVM_SKB_HEADROOM - 1)) & ~(uint32_t)(BPFVM_SKB_HEADROOM - 1);
    if ((uint64_t)(skb->head - skb->buf) < delta)
        return -ENOMEM;
    skb->head -= delta;               /* pskb_expand_head() would have copied into a bigger buffer */
    return 0;
}

int bpfvm_skb_put_zero(struct bpfvm_skb *skb, uint32_t n)
{
    if (skb->data_len || n > bpfvm_skb_tailroom(skb))
        return -ENOMEM;
    memset(bpfvm_skb_tail_pointer(skb), 0, n);
    skb->len += n;
    return 0;
}

int bpfvm_skb_trim(struct bpfvm_skb *skb, uint32_t new_len)
{
    if (new_len >= skb->len)
        return 0;
    uint32_t headlen = bpfvm_skb_headlen(skb);
    if (new_len <= headlen) {
        memset(skb->frags, 0, sizeof(skb->frags));
        skb->nr_frags = 0;
        skb->data_len = 0;
        skb->len = new_len;
        return 0;
    }
    uint32_t keep = new_len - headlen, i = 0;   /* bytes to keep in the fragments */
    for (; i < skb->nr_frags; i++) {
        if (keep <= skb->frags[i].size) {
            skb->frags[i].size = keep;
            break;
        }
        keep -= skb->frags[i].size;
    }
    uint32_t n = keep ? i + 1 : i;
    for (uint32_t j = n; j < skb->nr_frags; j++)
        memset(&skb->frags[j], 0, sizeof(skb->frags[j]));
    skb->nr_frags = n;
    skb->data_len = new_len - headlen;
    skb->len = new_len;
    return 0;
}

void bpfvm_skb_clear_hash(struct bpfvm_skb *skb)
{
    skb->hash = 0;
    skb->sw_hash = 0;
    skb->l4_hash = 0;
}

/* csum_block_add/sub: a partial sum over bytes at an odd offset is byte-rotated before combining */
static uint32_t csum_shift(uint32_t sum, uint32_t off) { return off & 1 ? (sum << 8) | (sum >> 24) : sum; }

void bpfvm_skb_postpull_rcsum(struct bpfvm_skb *skb, const void *start, uint32_t len)
{
    if (skb->ip_summed != BPFVM_CHECKSUM_COMPLETE)
        return;
    uint32_t off = (uint32_t)((const uint8_t *)start - skb->data);
    skb->csum = bpfvm_csum_sub(skb->csum, csum_shift(bpfvm_csum_partial(start, len, 0), off));
}

void bpfvm_skb_postpush_rcsum(struct bpfvm_skb *skb, const void *start, uint32_t len)
{
    if (skb->ip_summed != BPFVM_CHECKSUM_COMPLETE)
        return;
    uint32_t off = (uint32_t)((const uint8_t *)start - skb->data);
    skb->csum = bpfvm_csum_add(skb->csum, csum_shift(bpfvm_csum_partial(start, len, 0), off));
}

/* -- helper bodies shared by bpf_skb_load_bytes/store_bytes and SKB dynptrs ------------------------ */
int64_t bpfvm_skb_load_bytes(struct bpfvm_skb *skb, uint32_t offset, void *to, uint32_t len)
{
    if (offset <= 0x7fffffffu && len <= 0x7fffffffu) {
        void *p = bpfvm_skb_header_pointer(skb, (int32_t)offset, (int32_t)len, to);
        if (p) {
            if (p != to)
                memmove(to, p, len);
            return 0;
        }
    }
    memset(to, 0, len);
    return -EFAULT;
}

int64_t bpfvm_skb_store_bytes(struct bpfvm_skb *skb, uint32_t offset, const void *from, uint32_t len,
                              uint64_t flags)
{
    const uint64_t RECOMPUTE_CSUM = 1, INVALIDATE_HASH = 2;
    if (flags & ~(RECOMPUTE_CSUM | INVALIDATE_HASH))
        return -EINVAL;
    if (offset > 0x7fffffffu)
        return -EFAULT;
    uint64_t end = (uint64_t)offset + len;
    if (end > 0xffffffffu || bpfvm_skb_ensure_writable(skb, (uint32_t)end) || end > bpfvm_skb_headlen(skb))
        return -EFAULT;
    uint8_t *ptr = skb->data + offset;
    if (flags & RECOMPUTE_CSUM)
        bpfvm_skb_postpull_rcsum(skb, ptr, len);
    memmove(ptr, from, len);
    if (flags & RECOMPUTE_CSUM)
        bpfvm_skb_postpush_rcsum(skb, ptr, len);
    if (flags & INVALIDATE_HASH)
        bpfvm_skb_clear_hash(skb);
    return 0;
}
