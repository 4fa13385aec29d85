/* Ring buffer and dynptr helpers (see helpers.c for the conventions): records live in the map's data
 * area, which programs reach as a region; submit and discard accept only outstanding reservations. */
#include "helpers.h"

/* -- ring buffers ---------------------------------------------------------------------------------------- */
static struct bpfvm_map *ringbuf_of_sample(struct bpfvm_env *env, uint64_t sample, const char *what)
{
    struct bpfvm_map *m = bpfvm_ringbuf_of(BPFVM_PTR(sample));
    for (uint32_t i = 0; m && i < env->nmaps; i++)
        if (env->maps[i].map == m)
            return m;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: %#llx is not a record reserved in a ring buffer of this program",
                 what, (unsigned long long)sample);
    return NULL;
}

static struct bpfvm_map_slot *ringbuf_arg(struct bpfvm_env *env, uint64_t map, const char *what)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, map, what);
    if (s && s->type != BPFVM_MAP_RINGBUF) {
        bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: map is not a ring buffer", what);
        return NULL;
    }
    return s;
}

HELPER(ringbuf_output)
{
    struct bpfvm_map_slot *s = ringbuf_arg(env, r1, "bpf_ringbuf_output");
    if (!s)
        return 0;
    MEM(r2, r3, 0, "bpf_ringbuf_output data");
    return BPFVM_ERR(bpfvm_ringbuf_output(s->map, BPFVM_PTR(r2), r3, r4));
}

HELPER(ringbuf_reserve)
{
    struct bpfvm_map_slot *s = ringbuf_arg(env, r1, "bpf_ringbuf_reserve");
    if (!s)
        return 0;
    return BPFVM_U64(bpfvm_ringbuf_reserve(s->map, r2, r3));
}

static uint64_t ringbuf_commit(struct bpfvm_env *env, uint64_t sample, uint64_t flags, int discard,
                               const char *what)
{
    struct bpfvm_map *m = ringbuf_of_sample(env, sample, what);
    if (!m)
        return 0;
    int err = discard ? bpfvm_ringbuf_discard(m, BPFVM_PTR(sample), flags)
                      : bpfvm_ringbuf_submit(m, BPFVM_PTR(sample), flags);
    if (err)
        bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: %#llx is not an outstanding reservation", what,
                     (unsigned long long)sample);
    return 0;
}

HELPER(ringbuf_submit) { return ringbuf_commit(env, r1, r2, 0, "bpf_ringbuf_submit"); }
HELPER(ringbuf_discard) { return ringbuf_commit(env, r1, r2, 1, "bpf_ringbuf_discard"); }

HELPER(ringbuf_query)
{
    struct bpfvm_map_slot *s = ringbuf_arg(env, r1, "bpf_ringbuf_query");
    return s ? bpfvm_ringbuf_query(s->map, r2) : 0;
}

HELPER(ringbuf_reserve_dynptr)
{
    struct bpfvm_map_slot *s = ringbuf_arg(env, r1, "bpf_ringbuf_reserve_dynptr");
    if (!s)
        return 0;
    struct bpfvm_dynptr_kern *ptr = bpfvm_dynptr_arg(env, r4, 1, "bpf_ringbuf_reserve_dynptr ptr");
    if (!ptr)
        return 0;
    if (r3) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_ERR(-EINVAL);
    }
    if (r2 > BPFVM_DYNPTR_MAX_SIZE) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_ERR(-E2BIG);
    }
    void *sample = bpfvm_ringbuf_reserve(s->map, r2, 0);
    if (!sample) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_ERR(-EINVAL);
    }
    bpfvm_dynptr_init(ptr, sample, BPFVM_DYNPTR_TYPE_RINGBUF, 0, (uint32_t)r2);
    return 0;
}

static uint64_t ringbuf_commit_dynptr(struct bpfvm_env *env, uint64_t p, uint64_t flags, int discard,
                                      const char *what)
{
    struct bpfvm_dynptr_kern *ptr = bpfvm_dynptr_arg(env, p, 1, what);
    if (!ptr || !ptr->data)
        return 0;
    if (bpfvm_dynptr_get_type(ptr) != BPFVM_DYNPTR_TYPE_RINGBUF)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: not a ring buffer dynptr", what);
    ringbuf_commit(env, BPFVM_U64(ptr->data), flags, discard, what);
    bpfvm_dynptr_set_null(ptr);
    return 0;
}

HELPER(ringbuf_submit_dynptr) { return ringbuf_commit_dynptr(env, r1, r2, 0, "bpf_ringbuf_submit_dynptr"); }
HELPER(ringbuf_discard_dynptr) { return ringbuf_commit_dynptr(env, r1, r2, 1, "bpf_ringbuf_discard_dynptr"); }

/* -- dynptrs --------------------------------------------------------------------------------------------- */
HELPER(dynptr_from_mem)
{
    struct bpfvm_dynptr_kern *ptr = bpfvm_dynptr_arg(env, r4, 1, "bpf_dynptr_from_mem ptr");
    if (!ptr)
        return 0;
    uint32_t size = (uint32_t)r2;
    if (size > BPFVM_DYNPTR_MAX_SIZE) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_ERR(-E2BIG);
    }
    if (r3) {
        bpfvm_dynptr_set_null(ptr);
        return BPFVM_ERR(-EINVAL);
    }
    if (!bpfvm_mem_arg(env, r1, size, 0, "bpf_dynptr_from_mem data"))
        return 0;
    bpfvm_dynptr_init(ptr, BPFVM_PTR(r1), BPFVM_DYNPTR_TYPE_LOCAL, 0, size);
    if (size && !bpfvm_mem(env, r1, size, 1))
        bpfvm_dynptr_set_rdonly(ptr);  /* read-only memory (.rodata) gives a read-only dynptr */
    return 0;
}

HELPER(dynptr_read)
{
    struct bpfvm_dynptr_kern *src = bpfvm_dynptr_arg(env, r3, 0, "bpf_dynptr_read src");
    return src ? BPFVM_ERR(bpfvm_dynptr_read(env, r1, (uint32_t)r2, src, (uint32_t)r4, r5)) : 0;
}

HELPER(dynptr_write)
{
    struct bpfvm_dynptr_kern *dst = bpfvm_dynptr_arg(env, r1, 0, "bpf_dynptr_write dst");
    return dst ? BPFVM_ERR(bpfvm_dynptr_write(env, dst, (uint32_t)r2, r3, (uint32_t)r4, r5)) : 0;
}

HELPER(dynptr_data)
{
    struct bpfvm_dynptr_kern *ptr = bpfvm_dynptr_arg(env, r1, 0, "bpf_dynptr_data ptr");
    return ptr ? bpfvm_dynptr_data(env, ptr, (uint32_t)r2, (uint32_t)r3) : 0;
}

