/* The native environment: region checks, map slots, faults, clocks, randomness and output buffers.
 *
 * Every pointer a BPF program hands to native code goes through bpfvm_mem() before it is used: the address
 * range must lie inside one region of the table Python keeps in sync (bpfvm.memory.Memory.native_table).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vm.h"

struct bpfvm_env *bpfvm_env_new(void)
{
    struct bpfvm_env *env = calloc(1, sizeof(*env));
    if (!env)
        return NULL;
    env->ncpus = 1;
    env->pid_tgid = 0;
    memcpy(env->comm, "bpfvm", 6);
    bpfvm_env_seed(env, 0);
    return env;
}

void bpfvm_env_free(struct bpfvm_env *env)
{
    if (!env)
        return;
    free(env->maps);
    free(env->printk_buf);
    free(env->perf_buf);
    free(env);
}

int bpfvm_env_add_map(struct bpfvm_env *env, struct bpfvm_map *map, uint32_t type, uint32_t key_size,
                      uint32_t value_size, uint32_t max_entries)
{
    if (env->nmaps == env->maps_cap) {
        uint32_t cap = env->maps_cap ? env->maps_cap * 2 : 8;
        struct bpfvm_map_slot *slots = realloc(env->maps, cap * sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        env->maps = slots;
        env->maps_cap = cap;
    }
    struct bpfvm_map_slot *s = &env->maps[env->nmaps];
    memset(s, 0, sizeof(*s));
    s->map = map;
    s->type = type;
    s->key_size = key_size;
    s->value_size = value_size;
    s->max_entries = max_entries;
    return (int)env->nmaps++;
}

int bpfvm_env_set_inner_template(struct bpfvm_env *env, uint32_t index, uint32_t type, uint32_t key_size,
                                 uint32_t value_size, uint32_t max_entries)
{
    if (index >= env->nmaps)
        return -EINVAL;
    struct bpfvm_map_slot *s = &env->maps[index];
    s->inner_type = type;
    s->inner_key_size = key_size;
    s->inner_value_size = value_size;
    s->inner_max_entries = max_entries;
    return 0;
}

/* The kernel's prandom_seed_state(): derive four Tausworthe states from one 64-bit seed. */
static uint32_t seed_component(uint32_t x, uint32_t m) { return x < m ? x + m : x; }

void bpfvm_env_seed(struct bpfvm_env *env, uint64_t seed)
{
    uint32_t i = (uint32_t)(((seed >> 32) ^ (seed << 10) ^ seed) & 0xffffffffu);
    env->prandom[0] = seed_component(i, 2u);
    env->prandom[1] = seed_component(i, 8u);
    env->prandom[2] = seed_component(i, 16u);
    env->prandom[3] = seed_component(i, 128u);
}

/* L'Ecuyer's four-component Tausworthe generator (LFSR113), as prandom_u32_state() computes it. */
static uint32_t taus(uint32_t s, unsigned a, unsigned b, uint32_t c, unsigned d)
{
    return ((s & c) << d) ^ (((s << a) ^ s) >> b);
}

uint32_t bpfvm_prandom_u32(struct bpfvm_env *env)
{
    uint32_t *s = env->prandom;
    s[0] = taus(s[0], 6u, 13u, 4294967294u, 18u);
    s[1] = taus(s[1], 2u, 27u, 4294967288u, 2u);
    s[2] = taus(s[2], 13u, 21u, 4294967280u, 7u);
    s[3] = taus(s[3], 3u, 12u, 4294967168u, 13u);
    return s[0] ^ s[1] ^ s[2] ^ s[3];
}

void bpfvm_env_reset_run(struct bpfvm_env *env)
{
    env->tail_call_cnt = 0;
    env->tail_call_target = 0;
    env->fault = BPFVM_FAULT_NONE;
    env->fault_msg[0] = 0;
    env->callback_depth = 0;
}

void bpfvm_env_clear_output(struct bpfvm_env *env)
{
    env->printk_len = 0;
    env->printk_lines = 0;
    env->perf_len = 0;
    env->perf_records = 0;
}

/* -- region checks ----------------------------------------------------------------------------------- */
/* The region holding addr, or NULL. Consecutive checks mostly hit the same region (a dynptr on the stack,
 * the packet), so the last hit is tried first; it is re-validated against the live table, so a table that
 * changed since can never make it wrong, only miss. */
static const struct bpfvm_region *find_region(const struct bpfvm_env *env, uint64_t addr)
{
    const struct bpfvm_region_table *t = env->regions;
    if (!t || !t->regions)
        return NULL;
    uint64_t hint = env->region_hint;
    if (hint < t->count && t->regions[hint].start <= addr && addr < t->regions[hint].end)
        return &t->regions[hint];
    uint64_t lo = 0, hi = t->count;
    while (lo < hi) {            /* the last region whose start <= addr */
        uint64_t mid = lo + (hi - lo) / 2;
        if (t->regions[mid].start <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const struct bpfvm_region *r = &t->regions[lo - 1];
    if (addr >= r->end)
        return NULL;
    ((struct bpfvm_env *)env)->region_hint = lo - 1;   /* a cache, not part of the env's meaning */
    return r;
}

static uint8_t zero_size_dummy;

void *bpfvm_mem(const struct bpfvm_env *env, uint64_t addr, uint64_t size, int write)
{
    if (size == 0)
        return &zero_size_dummy;
    if (addr + size < addr)
        return NULL;
    const struct bpfvm_region *r = find_region(env, addr);
    if (!r || addr + size > r->end)
        return NULL;
    if (write && !r->writable)
        return NULL;
    return BPFVM_PTR(addr);
}

uint64_t bpfvm_mem_avail(const struct bpfvm_env *env, uint64_t addr, int write)
{
    const struct bpfvm_region *r = find_region(env, addr);
    if (!r || (write && !r->writable))
        return 0;
    return r->end - addr;
}

void *bpfvm_mem_arg(struct bpfvm_env *env, uint64_t addr, uint64_t size, int write, const char *what)
{
    void *p = bpfvm_mem(env, addr, size, write);
    if (!p) {
        const struct bpfvm_region *r = size ? find_region(env, addr) : NULL;
        bpfvm_faultf(env, BPFVM_FAULT_MEMORY, "%s: %s of %llu bytes at %#llx is %s", what,
                     write ? "write" : "read", (unsigned long long)size, (unsigned long long)addr,
                     !r ? "outside every region"
                        : (addr + size > r->end || addr + size < addr) ? "past the end of its region"
                                                                       : "in a read-only region");
    }
    return p;
}

/* -- maps -------------------------------------------------------------------------------------------- */
uint64_t bpfvm_map_pointer(const struct bpfvm_env *env, uint32_t index)
{
    return env->map_ptr_base + (uint64_t)index * env->map_ptr_stride;
}

struct bpfvm_map_slot *bpfvm_map_arg(struct bpfvm_env *env, uint64_t ptr, const char *what)
{
    if (env->map_ptr_stride && ptr >= env->map_ptr_base) {
        uint64_t off = ptr - env->map_ptr_base;
        uint64_t index = off / env->map_ptr_stride;
        if (off % env->map_ptr_stride == 0 && index < env->nmaps)
            return &env->maps[index];
    }
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: %#llx is not a map pointer", what, (unsigned long long)ptr);
    return NULL;
}

uint64_t bpfvm_map_pointer_of(struct bpfvm_env *env, struct bpfvm_map *map, const struct bpfvm_map_slot *outer)
{
    if (!map)
        return 0;
    for (uint32_t i = 0; i < env->nmaps; i++)
        if (env->maps[i].map == map)
            return bpfvm_map_pointer(env, i);
    if (!outer)
        return 0;
    /* an inner map seen for the first time: give it a slot with the outer map's template */
    uint32_t type = outer->inner_type, ks = outer->inner_key_size, vs = outer->inner_value_size,
             max = outer->inner_max_entries;
    int idx = bpfvm_env_add_map(env, map, type, ks, vs, max);
    return idx < 0 ? 0 : bpfvm_map_pointer(env, (uint32_t)idx);
}

/* -- faults ------------------------------------------------------------------------------------------ */
int bpfvm_set_fault(struct bpfvm_env *env, int32_t kind, const char *msg)
{
    if (env->fault && env->fault != BPFVM_FAULT_TAIL_CALL)
        return 0;                /* keep the first fault */
    env->fault = kind;
    snprintf(env->fault_msg, sizeof(env->fault_msg), "%s", msg ? msg : "");
    return 0;
}

uint64_t bpfvm_faultf(struct bpfvm_env *env, int32_t kind, const char *fmt, ...)
{
    if (env->fault && env->fault != BPFVM_FAULT_TAIL_CALL)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(env->fault_msg, sizeof(env->fault_msg), fmt, ap);
    va_end(ap);
    env->fault = kind;
    return 0;
}

/* -- output and clocks ------------------------------------------------------------------------------- */
int bpfvm_out_append(uint8_t **buf, uint64_t *len, uint64_t *cap, const void *data, uint64_t n)
{
    if (*len + n > *cap) {
        uint64_t want = *cap ? *cap : 4096;
        while (want < *len + n)
            want *= 2;
        if (want > (1ull << 30))
            return -ENOMEM;      /* runaway output: drop it rather than eat the host's memory */
        uint8_t *p = realloc(*buf, want);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = want;
    }
    if (n)
        memcpy(*buf + *len, data, n);
    *len += n;
    return 0;
}

uint64_t bpfvm_ktime(struct bpfvm_env *env, int clock)
{
    if (env->ktime_fixed) {
        uint64_t now = env->ktime_ns;
        env->ktime_ns += env->ktime_step;
        return now;
    }
    struct timespec ts;
    if (clock_gettime((clockid_t)clock, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
