/* Network helpers with the kernel's semantics: sk_buff data and checksums, redirects, tunnel metadata,
 * xdp_buff adjustments and perf event output with packet bytes (see helpers.c for the conventions). */
#include "helpers.h"

enum { TC_ACT_SHOT = 2, TC_ACT_REDIRECT = 7, XDP_ABORTED = 0, XDP_REDIRECT = 4 };

/* -- perf events ----------------------------------------------------------------------------------------- */
#define BPF_F_INDEX_MASK 0xffffffffull
#define BPF_F_CURRENT_CPU 0xffffffffull
#define BPF_F_CTXLEN_MASK (0xfffffull << 32)

static uint64_t perf_output(struct bpfvm_env *env, uint64_t map, uint64_t flags, uint64_t data, uint64_t size,
                            const uint8_t *ctx_bytes, uint64_t ctx_size)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, map, "bpf_perf_event_output");
    if (!s)
        return 0;
    MEM(data, size, 0, "bpf_perf_event_output data");
    if (s->type != BPFVM_MAP_PERF_EVENT_ARRAY)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_perf_event_output: map is not a perf event array");
    uint64_t index = flags & BPF_F_INDEX_MASK;
    if (index == BPF_F_CURRENT_CPU)
        index = env->cpu;
    if (index >= s->max_entries)
        return BPFVM_ERR(-E2BIG);
    if (env->perf_strict && !bpfvm_fd_array_lookup(s->map, (uint32_t)index))
        return BPFVM_ERR(-ENOENT);
    uint32_t map_index = (uint32_t)(s - env->maps);
    uint32_t hdr[4] = {map_index, (uint32_t)index, (uint32_t)(size + ctx_size), 0};
    uint8_t **buf = &env->perf_buf;
    uint64_t total = sizeof(hdr) + size + ctx_size, padded = (total + 7) & ~7ull;
    static const uint8_t zeros[8];
    if (bpfvm_out_append(buf, &env->perf_len, &env->perf_cap, hdr, sizeof(hdr)) ||
        bpfvm_out_append(buf, &env->perf_len, &env->perf_cap, BPFVM_PTR(data), size) ||
        bpfvm_out_append(buf, &env->perf_len, &env->perf_cap, ctx_bytes, ctx_size) ||
        bpfvm_out_append(buf, &env->perf_len, &env->perf_cap, zeros, padded - total))
        return BPFVM_ERR(-ENOSPC);
    env->perf_records++;
    return 0;
}

HELPER(perf_event_output)
{
    uint64_t ctxlen = (r3 & BPF_F_CTXLEN_MASK) >> 32;
    if (env->ctx_kind == BPFVM_CTX_SKB || env->ctx_kind == BPFVM_CTX_XDP) {
        if (r3 & ~(BPF_F_CTXLEN_MASK | BPF_F_INDEX_MASK))
            return BPFVM_ERR(-EINVAL);
        uint8_t *copy = NULL;
        uint64_t ret;
        if (env->ctx_kind == BPFVM_CTX_SKB) {
            struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_perf_event_output");
            if (!skb)
                return 0;
            if (ctxlen > skb->len)
                return BPFVM_ERR(-EFAULT);
            copy = malloc(ctxlen + 1);
            if (!copy)
                return BPFVM_ERR(-ENOMEM);
            bpfvm_skb_copy_bits(skb, 0, copy, (int32_t)ctxlen);
        } else {
            struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_perf_event_output");
            if (!xdp)
                return 0;
            if (ctxlen > bpfvm_xdp_buff_len(xdp))
                return BPFVM_ERR(-EFAULT);
            copy = malloc(ctxlen + 1);
            if (!copy)
                return BPFVM_ERR(-ENOMEM);
            bpfvm_xdp_copy_buf(xdp, 0, copy, ctxlen, 0);
        }
        ret = perf_output(env, r2, r3, r4, r5, copy, ctxlen);
        free(copy);
        return ret;
    }
    if (r3 & ~BPF_F_INDEX_MASK)
        return BPFVM_ERR(-EINVAL);
    return perf_output(env, r2, r3, r4, r5, NULL, 0);
}

/* -- checksums ------------------------------------------------------------------------------------------- */
HELPER(csum_diff)
{
    uint32_t from_size = (uint32_t)r2, to_size = (uint32_t)r4, seed = (uint32_t)r5;
    if (from_size) {
        MEM(r1, from_size, 0, "bpf_csum_diff from");
    }
    if (to_size) {
        MEM(r3, to_size, 0, "bpf_csum_diff to");
    }
    uint32_t ret = seed;
    if (from_size && to_size)
        ret = bpfvm_csum_sub(bpfvm_csum_partial(BPFVM_PTR(r3), to_size, seed),
                             bpfvm_csum_partial(BPFVM_PTR(r1), from_size, 0));
    else if (to_size)
        ret = bpfvm_csum_partial(BPFVM_PTR(r3), to_size, seed);
    else if (from_size)
        ret = ~bpfvm_csum_partial(BPFVM_PTR(r1), from_size, ~seed);
    return bpfvm_csum_from32to16(ret);
}

#define BPF_F_HDR_FIELD_MASK 0xfull
#define BPF_F_PSEUDO_HDR (1ull << 4)
#define BPF_F_MARK_MANGLED_0 (1ull << 5)
#define BPF_F_MARK_ENFORCE (1ull << 6)
#define BPF_F_IPV6 (1ull << 7)
#define CSUM_MANGLED_0 0xffff

/* the checksum field at offset, made linear and writable as bpf_try_make_writable() does */
static uint16_t *csum_field(struct bpfvm_skb *skb, uint64_t offset)
{
    if (bpfvm_skb_ensure_writable(skb, (uint32_t)offset + 2) || offset + 2 > bpfvm_skb_headlen(skb))
        return NULL;
    return (uint16_t *)(skb->data + offset);
}

HELPER(l3_csum_replace)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_l3_csum_replace");
    if (!skb)
        return 0;
    uint32_t offset = (uint32_t)r2;
    if (r5 & ~BPF_F_HDR_FIELD_MASK)
        return BPFVM_ERR(-EINVAL);
    if (offset > 0xffff || offset & 1)
        return BPFVM_ERR(-EFAULT);
    uint16_t *ptr = csum_field(skb, offset);
    if (!ptr)
        return BPFVM_ERR(-EFAULT);
    switch (r5 & BPF_F_HDR_FIELD_MASK) {
    case 0:
        if (r3)
            return BPFVM_ERR(-EINVAL);
        bpfvm_csum_replace_by_diff(ptr, (uint32_t)r4);
        break;
    case 2:
        bpfvm_csum_replace2(ptr, (uint16_t)r3, (uint16_t)r4);
        break;
    case 4:
        bpfvm_csum_replace4(ptr, (uint32_t)r3, (uint32_t)r4);
        break;
    default:
        return BPFVM_ERR(-EINVAL);
    }
    return 0;
}

HELPER(l4_csum_replace)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_l4_csum_replace");
    if (!skb)
        return 0;
    uint32_t offset = (uint32_t)r2;
    uint64_t flags = r5;
    int is_pseudo = (flags & BPF_F_PSEUDO_HDR) != 0, is_mmzero = (flags & BPF_F_MARK_MANGLED_0) != 0;
    int do_mforce = (flags & BPF_F_MARK_ENFORCE) != 0, is_ipv6 = (flags & BPF_F_IPV6) != 0;
    if (flags & ~(BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR | BPF_F_HDR_FIELD_MASK | BPF_F_IPV6))
        return BPFVM_ERR(-EINVAL);
    if (offset > 0xffff || offset & 1)
        return BPFVM_ERR(-EFAULT);
    uint16_t *ptr = csum_field(skb, offset);
    if (!ptr)
        return BPFVM_ERR(-EFAULT);
    uint16_t cur;
    memcpy(&cur, ptr, 2);
    if (is_mmzero && !do_mforce && !cur)
        return 0;
    switch (flags & BPF_F_HDR_FIELD_MASK) {
    case 0:
        if (r3)
            return BPFVM_ERR(-EINVAL);
        bpfvm_proto_csum_replace_by_diff(ptr, skb, (uint32_t)r4, is_pseudo, is_ipv6);
        break;
    case 2:
        bpfvm_proto_csum_replace4(ptr, skb, (uint16_t)r3, (uint16_t)r4, is_pseudo);
        break;
    case 4:
        bpfvm_proto_csum_replace4(ptr, skb, (uint32_t)r3, (uint32_t)r4, is_pseudo);
        break;
    default:
        return BPFVM_ERR(-EINVAL);
    }
    memcpy(&cur, ptr, 2);
    if (is_mmzero && !cur) {
        cur = CSUM_MANGLED_0;
        memcpy(ptr, &cur, 2);
    }
    return 0;
}

HELPER(csum_update)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_csum_update");
    if (!skb)
        return 0;
    if (skb->ip_summed == BPFVM_CHECKSUM_COMPLETE)
        return skb->csum = bpfvm_csum_add(skb->csum, (uint32_t)r2);
    return BPFVM_ERR(-ENOTSUPP);
}

HELPER(csum_level)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_csum_level");
    if (!skb)
        return 0;
    switch (r2) {
    case 0:                           /* BPF_CSUM_LEVEL_QUERY */
        return skb->ip_summed == BPFVM_CHECKSUM_UNNECESSARY ? skb->csum_level : BPFVM_ERR(-EACCES);
    case 1:                           /* BPF_CSUM_LEVEL_INC */
        if (skb->ip_summed == BPFVM_CHECKSUM_UNNECESSARY) {
            if (skb->csum_level < 3)
                skb->csum_level++;
        } else if (skb->ip_summed == BPFVM_CHECKSUM_NONE) {
            skb->ip_summed = BPFVM_CHECKSUM_UNNECESSARY;
            skb->csum_level = 0;
        }
        return 0;
    case 2:                           /* BPF_CSUM_LEVEL_DEC */
        if (skb->ip_summed == BPFVM_CHECKSUM_UNNECESSARY) {
            if (skb->csum_level == 0)
                skb->ip_summed = BPFVM_CHECKSUM_NONE;
            else
                skb->csum_level--;
        }
        return 0;
    case 3:                           /* BPF_CSUM_LEVEL_RESET */
        if (skb->ip_summed == BPFVM_CHECKSUM_UNNECESSARY) {
            skb->ip_summed = BPFVM_CHECKSUM_NONE;
            skb->csum_level = 0;
        }
        return 0;
    default:
        return BPFVM_ERR(-EINVAL);
    }
}

/* -- sk_buff data ---------------------------------------------------------------------------------------- */
HELPER(skb_load_bytes)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_load_bytes");
    if (!skb)
        return 0;
    MEM(r3, (uint32_t)r4, 1, "bpf_skb_load_bytes to");
    return BPFVM_ERR(bpfvm_skb_load_bytes(skb, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4));
}

HELPER(skb_load_bytes_relative)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_load_bytes_relative");
    if (!skb)
        return 0;
    uint32_t offset = (uint32_t)r2, len = (uint32_t)r4;
    MEM(r3, len, 1, "bpf_skb_load_bytes_relative to");
    uint8_t *to = BPFVM_PTR(r3);
    uint32_t start = BPFVM_SKB_UNSET;
    if (offset <= 0xffff) {
        if (r5 == 0)                  /* BPF_HDR_START_MAC */
            start = skb->mac_header;
        else if (r5 == 1)             /* BPF_HDR_START_NET */
            start = skb->network_header;
    }
    if (start != BPFVM_SKB_UNSET) {
        uint8_t *ptr = skb->buf + start + offset;
        if (ptr + len <= bpfvm_skb_tail_pointer(skb) && ptr >= skb->buf) {
            memmove(to, ptr, len);
            return 0;
        }
    }
    memset(to, 0, len);
    return BPFVM_ERR(-EFAULT);
}

HELPER(skb_store_bytes)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_store_bytes");
    if (!skb)
        return 0;
    MEM(r3, (uint32_t)r4, 0, "bpf_skb_store_bytes from");
    return BPFVM_ERR(bpfvm_skb_store_bytes(skb, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4, r5));
}

HELPER(skb_pull_data)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_pull_data");
    if (!skb)
        return 0;
    uint32_t len = (uint32_t)r2;
    return BPFVM_ERR(bpfvm_skb_ensure_writable(skb, len ? len : bpfvm_skb_headlen(skb)));
}

/* __bpf_skb_min_len(): the packet may not shrink below its headers */
static uint32_t skb_min_len(const struct bpfvm_skb *skb)
{
    int64_t data_off = skb->data - skb->buf;
    int64_t min_len = (int64_t)skb->network_header - data_off;
    if (skb->transport_header != BPFVM_SKB_UNSET)
        min_len = (int64_t)skb->transport_header - data_off;
    return (uint32_t)min_len;
}

HELPER(skb_change_tail)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_change_tail");
    if (!skb)
        return 0;
    uint32_t new_len = (uint32_t)r2;
    if (r3 || new_len > BPFVM_SKB_MAX_LEN || new_len < skb_min_len(skb))
        return BPFVM_ERR(-EINVAL);
    if (skb->encapsulation)
        return BPFVM_ERR(-ENOTSUPP);
    int ret = bpfvm_skb_ensure_writable(skb, skb->len);   /* linearizes */
    if (!ret) {
        if (new_len > skb->len)
            ret = bpfvm_skb_put_zero(skb, new_len - skb->len);
        else if (new_len < skb->len)
            ret = bpfvm_skb_trim(skb, new_len);
        if (!ret && skb->gso_size) {  /* skb_gso_reset() */
            skb->gso_size = 0;
            skb->gso_segs = 0;
            skb->gso_type = 0;
        }
    }
    return BPFVM_ERR(ret);
}

HELPER(skb_change_head)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_change_head");
    if (!skb)
        return 0;
    uint32_t head_room = (uint32_t)r2, new_len = skb->len + head_room;
    if (r3 || (!skb->gso_size && new_len > BPFVM_SKB_MAX_LEN) || new_len < skb->len)
        return BPFVM_ERR(-EINVAL);
    int ret = bpfvm_skb_cow_head(skb, head_room);
    if (!ret) {
        skb->data -= head_room;
        skb->len += head_room;
        memset(skb->data, 0, head_room);
        skb->mac_header = (uint32_t)(skb->data - skb->buf);
        skb->mac_len = skb->network_header - skb->mac_header;
    }
    return BPFVM_ERR(ret);
}

/* -- bpf_fib_lookup ---------------------------------------------------------------------------------------- */
#define BPF_FIB_LOOKUP_FLAGS 0x3full          /* DIRECT, OUTPUT, SKIP_NEIGH, TBID, SRC, MARK */
#define BPF_FIB_LKUP_RET_FWD_DISABLED 5
#define FIB_PARAMS_SIZE 64                   /* sizeof(struct bpf_fib_lookup) */

/* bpfvm has no devices or routes. A kernel test run receives on the loopback device, which does not forward
 * (with default sysctls), so after the kernel's argument checks every lookup answers FWD_DISABLED, as the
 * kernel does there; a router program takes its pass-to-the-stack path. */
HELPER(fib_lookup)
{
    uint32_t plen = (uint32_t)r3;
    uint64_t flags = r4;
    if (env->ctx_kind == BPFVM_CTX_XDP ? !bpfvm_xdp_ctx(env, r1, "bpf_fib_lookup") :
                                         !bpfvm_skb_ctx(env, r1, "bpf_fib_lookup"))
        return 0;
    MEM(r2, plen, 1, "bpf_fib_lookup params");
    const uint8_t *params = _m_r2;
    if (plen < FIB_PARAMS_SIZE || (flags & ~BPF_FIB_LOOKUP_FLAGS))
        return BPFVM_ERR(-EINVAL);
    if (params[0] != 2 && params[0] != 10)   /* AF_INET, AF_INET6 */
        return BPFVM_ERR(-EAFNOSUPPORT);
    uint32_t ifindex;
    memcpy(&ifindex, params + 8, 4);
    if (!ifindex)
        return BPFVM_ERR(-ENODEV);
    return BPF_FIB_LKUP_RET_FWD_DISABLED;
}

/* -- bpf_skb_adjust_room ----------------------------------------------------------------------------------- */
#define BPF_ADJ_ROOM_NET 0u
#define BPF_ADJ_ROOM_MAC 1u
#define ADJ_FIXED_GSO (1ull << 0)
#define ADJ_ENCAP_L3_IPV4 (1ull << 1)
#define ADJ_ENCAP_L3_IPV6 (1ull << 2)
#define ADJ_ENCAP_L4_GRE (1ull << 3)
#define ADJ_ENCAP_L4_UDP (1ull << 4)
#define ADJ_NO_CSUM_RESET (1ull << 5)
#define ADJ_ENCAP_L2_ETH (1ull << 6)
#define ADJ_DECAP_L3_IPV4 (1ull << 7)
#define ADJ_DECAP_L3_IPV6 (1ull << 8)
#define ADJ_ENCAP_L2_SHIFT 56
#define ADJ_ENCAP_L3_MASK (ADJ_ENCAP_L3_IPV4 | ADJ_ENCAP_L3_IPV6)
#define ADJ_DECAP_L3_MASK (ADJ_DECAP_L3_IPV4 | ADJ_DECAP_L3_IPV6)
#define ADJ_KNOWN (ADJ_FIXED_GSO | ADJ_ENCAP_L3_MASK | ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP | ADJ_NO_CSUM_RESET | \
                   ADJ_ENCAP_L2_ETH | ADJ_DECAP_L3_MASK | (0xffull << ADJ_ENCAP_L2_SHIFT))
#define PROTO_IP 0x0008u              /* htons(ETH_P_IP): skb->protocol is kept in network byte order */
#define PROTO_IPV6 0xdd86u            /* htons(ETH_P_IPV6) */
#define GSO_TCPV4 (1u << 0)
#define GSO_DODGY (1u << 1)
#define GSO_TCPV6 (1u << 4)
#define GSO_GRE (1u << 6)
#define GSO_IPXIP4 (1u << 8)
#define GSO_IPXIP6 (1u << 9)
#define GSO_UDP_TUNNEL (1u << 10)
#define GSO_UDP_L4 (1u << 17)
#define GSO_BY_FRAGS 0xffffu

static uint32_t net_base_len(const struct bpfvm_skb *skb)
{
    return skb->protocol == PROTO_IP ? 20 : skb->protocol == PROTO_IPV6 ? 40 : ~0u;
}

static uint32_t data_offset(const struct bpfvm_skb *skb) { return (uint32_t)(skb->data - skb->buf); }

/* GSO packets whose gso_size delimits UDP datagrams may only change their headers with a fixed gso_size */
static int gso_resize_ok(const struct bpfvm_skb *skb, uint64_t flags)
{
    if (!skb->gso_size || (skb->gso_type & (GSO_TCPV4 | GSO_TCPV6)))
        return 1;
    return (skb->gso_type & GSO_UDP_L4) && (flags & ADJ_FIXED_GSO);
}

/* Insert len zero bytes `off` bytes after the MAC header start; headers before the gap move with the data. */
static void net_hdr_push(struct bpfvm_skb *skb, uint32_t off, uint32_t len)
{
    int trans_same = skb->transport_header == skb->network_header;
    skb->data -= len;
    skb->len += len;
    memmove(skb->data, skb->data + len, off);
    memset(skb->data + off, 0, len);  /* zeros leave a CHECKSUM_COMPLETE sum as it was */
    skb->mac_header -= len;
    skb->network_header -= len;
    if (trans_same)
        skb->transport_header = skb->network_header;
}

/* Remove len bytes `off` bytes after the MAC header start. */
static int net_hdr_pop(struct bpfvm_skb *skb, uint32_t off, uint32_t len)
{
    int trans_same = skb->transport_header == skb->network_header;
    if (!bpfvm_skb_may_pull(skb, off + len))
        return -ENOMEM;
    bpfvm_skb_postpull_rcsum(skb, skb->data + off, len);
    memmove(skb->data + len, skb->data, off);
    skb->data += len;
    skb->len -= len;
    skb->mac_header += len;
    skb->network_header += len;
    if (trans_same)
        skb->transport_header = skb->network_header;
    return 0;
}

static int net_grow(struct bpfvm_skb *skb, uint32_t off, uint32_t len, uint64_t flags)
{
    uint32_t inner_mac_len = (uint32_t)(flags >> ADJ_ENCAP_L2_SHIFT);
    int encap = (flags & ADJ_ENCAP_L3_MASK) != 0;
    uint32_t mac_len = 0;
    if (!gso_resize_ok(skb, flags))
        return -ENOTSUPP;
    int ret = bpfvm_skb_cow_head(skb, len);
    if (ret)
        return ret;
    if (encap) {
        if ((flags & ADJ_ENCAP_L3_MASK) == ADJ_ENCAP_L3_MASK ||
            (flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP)) == (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP))
            return -EINVAL;
        if (skb->encapsulation)
            return -EALREADY;
        mac_len = skb->network_header - skb->mac_header;
        if (inner_mac_len > len)
            return -EINVAL;
    }
    net_hdr_push(skb, off, len);
    if (encap) {
        skb->encapsulation = 1;
        skb->network_header = data_offset(skb) + mac_len;
        if (flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP))
            skb->transport_header = skb->network_header + (flags & ADJ_ENCAP_L3_IPV6 ? 40 : 20);
        if (skb->protocol == PROTO_IP && (flags & ADJ_ENCAP_L3_IPV6))
            skb->protocol = PROTO_IPV6;
        else if (skb->protocol == PROTO_IPV6 && (flags & ADJ_ENCAP_L3_IPV4))
            skb->protocol = PROTO_IP;
    }
    if (skb->gso_size) {
        uint32_t gso_type = GSO_DODGY;
        if (encap)
            gso_type |= flags & ADJ_ENCAP_L4_UDP ? GSO_UDP_TUNNEL : flags & ADJ_ENCAP_L4_GRE ? GSO_GRE :
                        flags & ADJ_ENCAP_L3_IPV6 ? GSO_IPXIP6 : GSO_IPXIP4;
        if (!(flags & ADJ_FIXED_GSO) && skb->gso_size != GSO_BY_FRAGS)
            skb->gso_size -= len;
        skb->gso_type |= gso_type;
        skb->gso_segs = 0;
    }
    return 0;
}

static int net_shrink(struct bpfvm_skb *skb, uint32_t off, uint32_t len, uint64_t flags)
{
    if (flags & ~(ADJ_FIXED_GSO | ADJ_DECAP_L3_MASK | ADJ_NO_CSUM_RESET))
        return -EINVAL;
    if (!gso_resize_ok(skb, flags))
        return -ENOTSUPP;
    int ret = net_hdr_pop(skb, off, len);
    if (ret)
        return ret;
    if (skb->protocol == PROTO_IP && (flags & ADJ_DECAP_L3_IPV6))
        skb->protocol = PROTO_IPV6;
    else if (skb->protocol == PROTO_IPV6 && (flags & ADJ_DECAP_L3_IPV4))
        skb->protocol = PROTO_IP;
    if (skb->gso_size) {
        if (!(flags & ADJ_FIXED_GSO) && skb->gso_size != GSO_BY_FRAGS)
            skb->gso_size += len;
        skb->gso_type |= GSO_DODGY;
        skb->gso_segs = 0;
    }
    return 0;
}

HELPER(skb_adjust_room)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_adjust_room");
    if (!skb)
        return 0;
    int32_t len_diff = (int32_t)r2;
    uint32_t mode = (uint32_t)r3;
    uint64_t flags = r4;
    int shrink = len_diff < 0;
    uint32_t diff = shrink ? (uint32_t)0 - (uint32_t)len_diff : (uint32_t)len_diff;
    uint32_t len_min = net_base_len(skb);
    if (flags & ~ADJ_KNOWN)
        return BPFVM_ERR(-EINVAL);
    if (diff > 0xfff)
        return BPFVM_ERR(-EFAULT);
    if (skb->protocol != PROTO_IP && skb->protocol != PROTO_IPV6)
        return BPFVM_ERR(-ENOTSUPP);
    uint32_t off = skb->network_header - skb->mac_header;
    if (mode == BPF_ADJ_ROOM_NET)
        off += net_base_len(skb);
    else if (mode != BPF_ADJ_ROOM_MAC)
        return BPFVM_ERR(-ENOTSUPP);
    if (flags & ADJ_DECAP_L3_MASK) {  /* the header that is left after decapsulation */
        if (!shrink || (flags & ADJ_DECAP_L3_MASK) == ADJ_DECAP_L3_MASK)
            return BPFVM_ERR(-EINVAL);
        len_min = flags & ADJ_DECAP_L3_IPV6 ? 40 : 20;
    }
    uint32_t len_cur = skb->len - (skb->network_header - data_offset(skb));
    if ((shrink && (diff >= len_cur || len_cur - diff < len_min)) ||
        (!shrink && skb->len + diff > BPFVM_SKB_MAX_LEN && !skb->gso_size))
        return BPFVM_ERR(-ENOTSUPP);
    int ret = shrink ? net_shrink(skb, off, diff, flags) : net_grow(skb, off, diff, flags);
    if (!ret && !(flags & ADJ_NO_CSUM_RESET) && skb->ip_summed == BPFVM_CHECKSUM_UNNECESSARY) {
        skb->ip_summed = BPFVM_CHECKSUM_NONE;   /* __skb_reset_checksum_unnecessary() */
        skb->csum_level = 0;
    }
    return BPFVM_ERR(ret);
}

HELPER(set_hash_invalid)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_set_hash_invalid");
    if (skb)
        bpfvm_skb_clear_hash(skb);
    return 0;
}

HELPER(set_hash)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_set_hash");
    if (skb) {                        /* __skb_set_sw_hash(skb, hash, true) */
        skb->hash = (uint32_t)r2;
        skb->sw_hash = 1;
        skb->l4_hash = 1;
    }
    return 0;
}

HELPER(redirect)
{
    uint64_t flags = r2;
    if (env->ctx_kind == BPFVM_CTX_XDP && env->xdp) {
        if (flags)
            return XDP_ABORTED;
        env->xdp->redirect_ifindex = (uint32_t)r1;
        env->xdp->redirect_flags = 0;
        return XDP_REDIRECT;
    }
    if (flags & ~1ull)                /* only BPF_F_INGRESS */
        return TC_ACT_SHOT;
    if (env->skb) {
        env->skb->redirect_ifindex = (uint32_t)r1;
        env->skb->redirect_flags = flags;
    }
    return TC_ACT_REDIRECT;
}

/* -- tunnel metadata --------------------------------------------------------------------------------------- */
#define BPF_F_TUNINFO_IPV6 1ull
#define BPF_F_ZERO_CSUM_TX (1ull << 1)
#define BPF_F_DONT_FRAGMENT (1ull << 2)
#define BPF_F_SEQ_NUMBER (1ull << 3)
#define BPF_F_NO_TUNNEL_KEY (1ull << 4)
#define BPF_F_TUNINFO_FLAGS (1ull << 4)
/* ip_tunnel flag bits (IP_TUNNEL_*_BIT) */
#define TUN_CSUM (1u << 0)
#define TUN_KEY (1u << 2)
#define TUN_SEQ (1u << 3)
#define TUN_DONT_FRAGMENT (1u << 8)
#define TUN_NOCACHE (1u << 13)
#define TUNNEL_KEY_SIZE 44u           /* sizeof(struct bpf_tunnel_key) */

static uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

HELPER(skb_set_tunnel_key)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_set_tunnel_key");
    if (!skb)
        return 0;
    uint32_t size = (uint32_t)r3;
    uint64_t flags = r4;
    MEM(r2, size, 0, "bpf_skb_set_tunnel_key key");
    uint8_t from[TUNNEL_KEY_SIZE] = {0};
    if (flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT | BPF_F_SEQ_NUMBER |
                  BPF_F_NO_TUNNEL_KEY))
        return BPFVM_ERR(-EINVAL);
    if (size != TUNNEL_KEY_SIZE && size != 28 && size != 24 && size != 22 && size != 8)
        return BPFVM_ERR(-EINVAL);   /* the compat layouts end at local_ipv6, label, ext, remote_ipv6[1] */
    memcpy(from, BPFVM_PTR(r2), size);
    uint32_t label = load_u32(from + 24);
    uint16_t ext;
    memcpy(&ext, from + 22, 2);
    if ((!(flags & BPF_F_TUNINFO_IPV6) && label) || ext)
        return BPFVM_ERR(-EINVAL);
    struct bpfvm_tunnel_info *t = &skb->tunnel;
    memset(t, 0, sizeof(*t));
    t->set = 1;
    t->flags = flags;
    t->tun_id = load_u32(from);
    t->tos = from[20];
    t->ttl = from[21];
    t->tun_flags = TUN_KEY | TUN_CSUM | TUN_NOCACHE;
    if (flags & BPF_F_DONT_FRAGMENT)
        t->tun_flags |= TUN_DONT_FRAGMENT;
    if (flags & BPF_F_ZERO_CSUM_TX)
        t->tun_flags &= ~TUN_CSUM;
    if (flags & BPF_F_SEQ_NUMBER)
        t->tun_flags |= TUN_SEQ;
    if (flags & BPF_F_NO_TUNNEL_KEY)
        t->tun_flags &= ~TUN_KEY;
    if (flags & BPF_F_TUNINFO_IPV6) {
        t->ipv6 = 1;
        memcpy(t->remote, from + 4, 16);
        memcpy(t->local, from + 28, 16);
        t->label = label & 0xfffff;
    } else {
        t->remote[0] = load_u32(from + 4);
        t->local[0] = load_u32(from + 28);
    }
    return 0;
}

HELPER(skb_get_tunnel_key)
{
    struct bpfvm_skb *skb = bpfvm_skb_ctx(env, r1, "bpf_skb_get_tunnel_key");
    if (!skb)
        return 0;
    uint32_t size = (uint32_t)r3;
    uint64_t flags = r4;
    MEM(r2, size, 1, "bpf_skb_get_tunnel_key key");
    uint8_t *to = BPFVM_PTR(r2), out[TUNNEL_KEY_SIZE] = {0};
    const struct bpfvm_tunnel_info *t = &skb->tunnel;
    int err = -EINVAL;
    if (!t->set || (flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS)))
        goto clear;
    if ((uint32_t)t->ipv6 != ((flags & BPF_F_TUNINFO_IPV6) ? 1u : 0u)) {
        err = -EPROTO;
        goto clear;
    }
    if (size != TUNNEL_KEY_SIZE && size != 28 && size != 24 && size != 22 &&
        !(size == 8 && !t->ipv6))
        goto clear;
    uint32_t id = (uint32_t)t->tun_id;
    memcpy(out, &id, 4);
    out[20] = t->tos;
    out[21] = t->ttl;
    if (flags & BPF_F_TUNINFO_FLAGS) {
        uint16_t be = (uint16_t)(((t->tun_flags & 0xff) << 8) | ((t->tun_flags >> 8) & 0xff));
        memcpy(out + 22, &be, 2);
    }
    /* the key set for transmit reads back from the receiver's side: remote is the source, local the dest */
    if (t->ipv6) {
        memcpy(out + 4, t->local, 16);
        memcpy(out + 28, t->remote, 16);
        memcpy(out + 24, &t->label, 4);
    } else {
        memcpy(out + 4, &t->local[0], 4);
        memcpy(out + 28, &t->remote[0], 4);
    }
    memcpy(to, out, size);
    return 0;
clear:
    memset(to, 0, size);
    return BPFVM_ERR(err);
}

/* -- xdp_buff -------------------------------------------------------------------------------------------- */
HELPER(xdp_adjust_head)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_adjust_head");
    return xdp ? BPFVM_ERR(bpfvm_xdp_adjust_head(xdp, (int32_t)r2)) : 0;
}

HELPER(xdp_adjust_meta)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_adjust_meta");
    return xdp ? BPFVM_ERR(bpfvm_xdp_adjust_meta(xdp, (int32_t)r2)) : 0;
}

HELPER(xdp_adjust_tail)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_adjust_tail");
    return xdp ? BPFVM_ERR(bpfvm_xdp_adjust_tail(xdp, (int32_t)r2)) : 0;
}

HELPER(xdp_get_buff_len)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_get_buff_len");
    return xdp ? bpfvm_xdp_buff_len(xdp) : 0;
}

HELPER(xdp_load_bytes)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_load_bytes");
    if (!xdp)
        return 0;
    MEM(r3, (uint32_t)r4, 1, "bpf_xdp_load_bytes buf");
    return BPFVM_ERR(bpfvm_xdp_load_bytes(xdp, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4));
}

HELPER(xdp_store_bytes)
{
    struct bpfvm_xdp *xdp = bpfvm_xdp_ctx(env, r1, "bpf_xdp_store_bytes");
    if (!xdp)
        return 0;
    MEM(r3, (uint32_t)r4, 0, "bpf_xdp_store_bytes buf");
    return BPFVM_ERR(bpfvm_xdp_store_bytes(xdp, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4));
}

