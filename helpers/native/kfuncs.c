/* Kfuncs by BTF name: the dynptr family, the open-coded number iterator, and the kernel-internal functions
 * that inlinable kfunc bodies call (skb_header_pointer, skb_pointer_if_linear, skb_copy_bits,
 * bpf_xdp_pointer, bpf_xdp_copy_buf), each exported under its kernel name.
 *
 * Same calling convention as helpers: (env, r1..r5) -> r0, faults in env->fault.
 */
#include "dynptr.h"
#include "inlinable_kfuncs.h"
#include "helpers.cdef"
#include "kfuncs.cdef"

#define KFUNC(name) \
    uint64_t bpfvm_kfunc_##name(struct bpfvm_env *env, uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, \
                                uint64_t r5)

#define BPF_MAX_LOOPS (8ll * 1024 * 1024)

/* -- arguments --------------------------------------------------------------------------------------- */
static struct bpfvm_dynptr_kern *dynptr(struct bpfvm_env *env, uint64_t addr, int write, const char *what)
{
    return bpfvm_dynptr_arg(env, addr, write, what);
}

/* the sk_buff model: inlined kfunc bodies hand it over as ptr->data */
static struct bpfvm_skb *skb_model(struct bpfvm_env *env, uint64_t p, const char *what)
{
    if (env->skb && p == BPFVM_U64(env->skb))
        return env->skb;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: %#llx is not this run's sk_buff", what, (unsigned long long)p);
    return NULL;
}

static struct bpfvm_xdp *xdp_model(struct bpfvm_env *env, uint64_t p, const char *what)
{
    if (env->xdp && p == BPFVM_U64(env->xdp))
        return env->xdp;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: %#llx is not this run's xdp_buff", what, (unsigned long long)p);
    return NULL;
}

/* -- dynptr constructors ----------------------------------------------------------------------------- */
KFUNC(bpf_dynptr_from_skb)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r3, 1, "bpf_dynptr_from_skb ptr");
    if (!ptr)
        return 0;
    if (env->ctx_kind != BPFVM_CTX_SKB || !env->skb || r1 != env->ctx_addr)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_dynptr_from_skb: arg1 is not this run's __sk_buff");
    if (r2) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_INT(-EINVAL);
    }
    bpfvm_dynptr_init(ptr, env->skb, BPFVM_DYNPTR_TYPE_SKB, 0, env->skb->len);
    if (!env->pkt_writable)            /* the verifier's bpf_dynptr_from_skb_rdonly for read-only types */
        bpfvm_dynptr_set_rdonly(ptr);
    return 0;
}

KFUNC(bpf_dynptr_from_xdp)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r3, 1, "bpf_dynptr_from_xdp ptr");
    if (!ptr)
        return 0;
    if (env->ctx_kind != BPFVM_CTX_XDP || !env->xdp || r1 != env->ctx_addr)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_dynptr_from_xdp: arg1 is not this run's xdp_md");
    if (r2) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_INT(-EINVAL);
    }
    bpfvm_dynptr_init(ptr, env->xdp, BPFVM_DYNPTR_TYPE_XDP, 0, bpfvm_xdp_buff_len(env->xdp));
    return 0;
}

/* -- dynptr accessors -------------------------------------------------------------------------------- */
/* The inlinable dynptr kfuncs: validate what the program handed over, then run the shared body of
 * inlinable_kfuncs.c, the same C the inliner copies into programs as BPF. */
KFUNC(bpf_dynptr_slice)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_slice ptr");
    if (!ptr || !bpfvm_dynptr_slice_ok(env, ptr, (uint32_t)r2, r3, (uint32_t)r4, 0))
        return 0;
    return BPFVM_U64(bpfvm_inlinable_bpf_dynptr_slice((const struct bpf_dynptr *)ptr, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4));
}

KFUNC(bpf_dynptr_slice_rdwr)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_slice_rdwr ptr");
    if (!ptr || !bpfvm_dynptr_slice_ok(env, ptr, (uint32_t)r2, r3, (uint32_t)r4, 1))
        return 0;
    return BPFVM_U64(bpfvm_inlinable_bpf_dynptr_slice_rdwr((const struct bpf_dynptr *)ptr, (uint32_t)r2, BPFVM_PTR(r3), (uint32_t)r4));
}

KFUNC(bpf_dynptr_size)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_size ptr");
    return ptr ? bpfvm_inlinable_bpf_dynptr_size((const struct bpf_dynptr *)ptr) : 0;   /* a __u32 result */
}

KFUNC(bpf_dynptr_is_null)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_is_null ptr");
    return ptr ? (uint64_t)bpfvm_inlinable_bpf_dynptr_is_null((const struct bpf_dynptr *)ptr) : 0;
}

KFUNC(bpf_dynptr_is_rdonly)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_is_rdonly ptr");
    return ptr ? (uint64_t)bpfvm_inlinable_bpf_dynptr_is_rdonly((const struct bpf_dynptr *)ptr) : 0;
}

KFUNC(bpf_dynptr_adjust)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 1, "bpf_dynptr_adjust ptr");
    return ptr ? BPFVM_INT(bpfvm_inlinable_bpf_dynptr_adjust((const struct bpf_dynptr *)ptr, (uint32_t)r2, (uint32_t)r3)) : 0;
}

KFUNC(bpf_dynptr_clone)
{
    struct bpfvm_dynptr_kern *ptr = dynptr(env, r1, 0, "bpf_dynptr_clone ptr");
    struct bpfvm_dynptr_kern *clone = dynptr(env, r2, 1, "bpf_dynptr_clone clone");
    if (!ptr || !clone)
        return 0;
    if (!ptr->data) {
        bpfvm_dynptr_set_null(clone);
        return BPFVM_INT(-EINVAL);
    }
    memmove(clone, ptr, sizeof(*clone));
    return 0;
}

/* -- open-coded iterator over numbers: struct bpf_iter_num_kern { int cur; int end; } ---------------- */
static int32_t *iter_num(struct bpfvm_env *env, uint64_t it, const char *what)
{
    return bpfvm_mem_arg(env, it, 8, 1, what);
}

KFUNC(bpf_iter_num_new)
{
    int32_t *s = iter_num(env, r1, "bpf_iter_num_new it");
    if (!s)
        return 0;
    int32_t start = (int32_t)r2, end = (int32_t)r3;
    if (start > end) {
        s[0] = s[1] = 0;
        return BPFVM_INT(-EINVAL);
    }
    if ((int64_t)end - (int64_t)start > BPF_MAX_LOOPS) {
        s[0] = s[1] = 0;
        return BPFVM_INT(-E2BIG);
    }
    s[0] = (int32_t)((uint32_t)start - 1u);   /* next() is called first */
    s[1] = end;
    return 0;
}

KFUNC(bpf_iter_num_next)
{
    int32_t *s = iter_num(env, r1, "bpf_iter_num_next it");
    if (!s)
        return 0;
    if ((int64_t)(int32_t)((uint32_t)s[0] + 1u) >= (int64_t)s[1]) {
        s[0] = s[1] = 0;
        return 0;
    }
    s[0]++;
    return BPFVM_U64(&s[0]);
}

KFUNC(bpf_iter_num_destroy)
{
    int32_t *s = iter_num(env, r1, "bpf_iter_num_destroy it");
    if (s)
        s[0] = s[1] = 0;
    return 0;
}

/* -- no-ops that only matter to the kernel's scheduler and RCU ---------------------------------------- */
KFUNC(bpf_rcu_read_lock) { return 0; }
KFUNC(bpf_rcu_read_unlock) { return 0; }
KFUNC(bpf_preempt_disable) { return 0; }
KFUNC(bpf_preempt_enable) { return 0; }

/* -- kernel-internal functions that inlinable kfunc bodies call ----------------------------------------- */
KFUNC(skb_header_pointer)
{
    struct bpfvm_skb *skb = skb_model(env, r1, "skb_header_pointer");
    if (!skb)
        return 0;
    int32_t offset = (int32_t)r2, len = (int32_t)r3;
    if (r4 && (len < 0 || !bpfvm_mem_arg(env, r4, (uint32_t)len, 1, "skb_header_pointer buffer")))
        return 0;
    return BPFVM_U64(bpfvm_skb_header_pointer(skb, offset, len, BPFVM_PTR(r4)));
}

KFUNC(skb_pointer_if_linear)
{
    struct bpfvm_skb *skb = skb_model(env, r1, "skb_pointer_if_linear");
    return skb ? BPFVM_U64(bpfvm_skb_pointer_if_linear(skb, (int32_t)r2, (int32_t)r3)) : 0;
}

KFUNC(skb_copy_bits)
{
    struct bpfvm_skb *skb = skb_model(env, r1, "skb_copy_bits");
    if (!skb)
        return 0;
    int32_t len = (int32_t)r4;
    if (len < 0)
        return BPFVM_INT(-EFAULT);
    if (!bpfvm_mem_arg(env, r3, (uint32_t)len, 1, "skb_copy_bits to"))
        return 0;
    return BPFVM_INT(bpfvm_skb_copy_bits(skb, (int32_t)r2, BPFVM_PTR(r3), len));
}

KFUNC(bpf_xdp_pointer)
{
    struct bpfvm_xdp *xdp = xdp_model(env, r1, "bpf_xdp_pointer");
    return xdp ? bpfvm_xdp_pointer(xdp, (uint32_t)r2, (uint32_t)r3) : 0;
}

KFUNC(bpf_xdp_copy_buf)
{
    struct bpfvm_xdp *xdp = xdp_model(env, r1, "bpf_xdp_copy_buf");
    if (!xdp)
        return 0;
    if (!bpfvm_mem_arg(env, r3, r4, r5 ? 0 : 1, "bpf_xdp_copy_buf buf"))
        return 0;
    bpfvm_xdp_copy_buf(xdp, r2, BPFVM_PTR(r3), r4, r5 != 0);
    return 0;
}

/* -- the table ------------------------------------------------------------------------------------------- */
#define K(name) {0, #name, bpfvm_kfunc_##name, 0}

const struct bpfvm_native_entry bpfvm_kfunc_table[] = {
    K(bpf_dynptr_from_skb), K(bpf_dynptr_from_xdp), K(bpf_dynptr_slice), K(bpf_dynptr_slice_rdwr),
    K(bpf_dynptr_size), K(bpf_dynptr_is_null), K(bpf_dynptr_is_rdonly), K(bpf_dynptr_adjust),
    K(bpf_dynptr_clone), K(bpf_iter_num_new), K(bpf_iter_num_next), K(bpf_iter_num_destroy),
    K(bpf_rcu_read_lock), K(bpf_rcu_read_unlock), K(bpf_preempt_disable), K(bpf_preempt_enable),
    K(skb_header_pointer), K(skb_pointer_if_linear), K(skb_copy_bits), K(bpf_xdp_pointer), K(bpf_xdp_copy_buf),
};

const uint32_t bpfvm_kfunc_count = sizeof(bpfvm_kfunc_table) / sizeof(bpfvm_kfunc_table[0]);
