/* BPF maps with the Linux kernel's semantics, for the interpreter (through cffi) and JIT-compiled code.
 *
 * Storage is preallocated at creation, like the kernel's default hash maps, so value pointers handed to
 * programs stay valid for the map's lifetime. Values live in one buffer (the only memory programs reach);
 * keys, bucket chains and LRU lists live in separate buffers a program cannot touch.
 *
 * Hash iteration order is the kernel's for a map created with BPF_F_ZERO_SEED: buckets in index order
 * (jhash of the key with seed 0, masked by the power-of-two bucket count), newest element first within a
 * bucket. LRU maps follow the kernel's bpf_lru_list algorithm (common LRU with per-CPU local lists, or
 * per-CPU LRU lists with BPF_F_NO_COMMON_LRU), driven by the map's current CPU.
 */
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>

#include "maps.cdef"

#define PAGE 4096u
#define MAX_CPUS 4096u
#define MAX_MAP_BYTES ((uint64_t)4 << 30)   /* preallocation limit of one map */
#define KMALLOC_MAX (1u << 22)       /* the kernel's KMALLOC_MAX_SIZE with 4K pages */
#define PCPU_MIN_UNIT 32768u         /* per-CPU value size limit */
#define HTAB_ELEM_HDR 48u            /* sizeof(struct htab_elem) in the kernel, for its size check */
#define RB_HDR 8u
#define RB_BUSY 0x80000000u
#define RB_DISCARD 0x40000000u
#define RB_META_PAGES 3u             /* ringbuf data starts at page 3, as in the kernel's struct bpf_ringbuf */
#define LOCAL_FREE_TARGET 128u
#define PERCPU_FREE_TARGET 4u
#define ACCESS_MASK (BPFVM_F_RDONLY | BPFVM_F_WRONLY | BPFVM_F_RDONLY_PROG | BPFVM_F_WRONLY_PROG)

/* -- intrusive circular lists with a sentinel head ------------------------------------------------- */
struct lnode {
    struct lnode *next, *prev;
};

static void l_init(struct lnode *h) { h->next = h->prev = h; }
static bool l_empty(const struct lnode *h) { return h->next == h; }

static void l_del(struct lnode *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

static void l_add(struct lnode *n, struct lnode *head)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

static void l_move(struct lnode *n, struct lnode *head)
{
    l_del(n);
    l_add(n, head);
}

/* -- map structures ------------------------------------------------------------------------------- */
enum { LRU_ACTIVE, LRU_INACTIVE, LRU_FREE, LRU_LOCAL_FREE, LRU_LOCAL_PENDING };

struct helem {                 /* metadata of one hash element; its key and value are at the same index */
    struct lnode lru;
    uint32_t hash;
    int32_t next;              /* next element in the bucket chain, -1 at the end */
    uint32_t cpu;              /* LRU: the CPU whose lists own this node */
    uint8_t type;              /* LRU: which list the node is on */
    uint8_t ref;               /* LRU: used since it was last rotated */
    uint8_t linked;            /* in a bucket chain */
};

struct lru_list {
    struct lnode lists[3];     /* active, inactive, free */
    uint32_t counts[2];        /* active, inactive */
    struct lnode *next_rot;    /* where the next inactive rotation starts */
};

struct lru_local {             /* common LRU: one per CPU */
    struct lnode free, pending;
    uint32_t next_steal;
};

struct rb_res {
    uint64_t pos;
    uint32_t size;
};

struct bpfvm_map {
    uint32_t type, key_size, value_size, max_entries, map_flags, ncpus, cpu;
    int32_t lock_off;
    uint32_t stride;           /* round_up(value_size, 8) */
    uint32_t elem_size;        /* bytes of storage per element: stride, or stride * ncpus when per-CPU */
    uint32_t nelems, count;
    uint8_t *values;
    uint64_t values_size;
    bool expose;               /* values may be handed to programs */
    /* hash maps */
    uint8_t *keys;
    struct helem *elems;
    int32_t *buckets;
    uint32_t n_buckets;
    uint32_t *free_stack, nfree;
    uint32_t *extra;           /* per-CPU spare element for replacing updates (plain hash) */
    /* LRU */
    bool percpu_lru;
    struct lru_list *lru;      /* one (common) or one per CPU */
    struct lru_local *local;   /* common LRU: one per CPU */
    uint32_t target_free, nr_scans;
    /* slots */
    struct bpfvm_map **inner;  /* array of maps */
    uint64_t *ids;             /* prog array, perf event array */
    uint32_t inner_type, inner_key_size, inner_value_size, inner_max_entries, inner_flags;
    bool has_inner_meta;
    /* queue / stack */
    uint8_t *qs;
    uint32_t qs_head, qs_tail, qs_size;
    /* ring buffer */
    uint8_t *rb_area, *rb_data;
    uint64_t rb_mask, wakeups;
    uint64_t *cons_pos, *prod_pos;
    struct rb_res *res;
    uint32_t nres, res_cap;
    struct bpfvm_map *rb_next;
};

static pthread_mutex_t rb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bpfvm_map *rb_list;

static uint32_t round8(uint32_t n) { return (n + 7u) & ~7u; }
static bool is_pow2(uint64_t n) { return n && !(n & (n - 1)); }

static bool is_hash(uint32_t t)
{
    return t == BPFVM_MAP_HASH || t == BPFVM_MAP_PERCPU_HASH || t == BPFVM_MAP_LRU_HASH ||
           t == BPFVM_MAP_LRU_PERCPU_HASH || t == BPFVM_MAP_HASH_OF_MAPS;
}

static bool is_lru(uint32_t t) { return t == BPFVM_MAP_LRU_HASH || t == BPFVM_MAP_LRU_PERCPU_HASH; }

static bool is_percpu(uint32_t t)
{
    return t == BPFVM_MAP_PERCPU_HASH || t == BPFVM_MAP_LRU_PERCPU_HASH || t == BPFVM_MAP_PERCPU_ARRAY;
}

static bool is_array(uint32_t t)
{
    return t == BPFVM_MAP_ARRAY || t == BPFVM_MAP_PERCPU_ARRAY || t == BPFVM_MAP_PROG_ARRAY ||
           t == BPFVM_MAP_PERF_EVENT_ARRAY || t == BPFVM_MAP_ARRAY_OF_MAPS;
}

static bool is_fd_array(uint32_t t)
{
    return t == BPFVM_MAP_PROG_ARRAY || t == BPFVM_MAP_PERF_EVENT_ARRAY || t == BPFVM_MAP_ARRAY_OF_MAPS;
}

static uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* -- jhash (Bob Jenkins' lookup3, as the kernel's jhash/jhash2) -------------------------------------- */
static uint32_t rol32(uint32_t w, unsigned s) { return (w << s) | (w >> (32 - s)); }

#define JMIX(a, b, c)                                 \
    do {                                              \
        a -= c; a ^= rol32(c, 4);  c += b;            \
        b -= a; b ^= rol32(a, 6);  a += c;            \
        c -= b; c ^= rol32(b, 8);  b += a;            \
        a -= c; a ^= rol32(c, 16); c += b;            \
        b -= a; b ^= rol32(a, 19); a += c;            \
        c -= b; c ^= rol32(b, 4);  b += a;            \
    } while (0)

#define JFINAL(a, b, c)                               \
    do {                                              \
        c ^= b; c -= rol32(b, 14);                    \
        a ^= c; a -= rol32(c, 11);                    \
        b ^= a; b -= rol32(a, 25);                    \
        c ^= b; c -= rol32(b, 16);                    \
        a ^= c; a -= rol32(c, 4);                     \
        b ^= a; b -= rol32(a, 14);                    \
        c ^= b; c -= rol32(b, 24);                    \
    } while (0)

#define JHASH_INIT 0xdeadbeefu

static uint32_t jhash_bytes(const uint8_t *k, uint32_t len, uint32_t seed)
{
    uint32_t a, b, c;
    a = b = c = JHASH_INIT + len + seed;
    while (len > 12) {
        a += load_u32(k);
        b += load_u32(k + 4);
        c += load_u32(k + 8);
        JMIX(a, b, c);
        len -= 12;
        k += 12;
    }
    switch (len) {
    case 12: c += (uint32_t)k[11] << 24; /* fall through */
    case 11: c += (uint32_t)k[10] << 16; /* fall through */
    case 10: c += (uint32_t)k[9] << 8;   /* fall through */
    case 9:  c += k[8];                  /* fall through */
    case 8:  b += (uint32_t)k[7] << 24;  /* fall through */
    case 7:  b += (uint32_t)k[6] << 16;  /* fall through */
    case 6:  b += (uint32_t)k[5] << 8;   /* fall through */
    case 5:  b += k[4];                  /* fall through */
    case 4:  a += (uint32_t)k[3] << 24;  /* fall through */
    case 3:  a += (uint32_t)k[2] << 16;  /* fall through */
    case 2:  a += (uint32_t)k[1] << 8;   /* fall through */
    case 1:  a += k[0];
        JFINAL(a, b, c);
        break;
    default: break;
    }
    return c;
}

static uint32_t jhash_words(const uint8_t *k, uint32_t words, uint32_t seed)
{
    uint32_t a, b, c;
    a = b = c = JHASH_INIT + (words << 2) + seed;
    while (words > 3) {
        a += load_u32(k);
        b += load_u32(k + 4);
        c += load_u32(k + 8);
        JMIX(a, b, c);
        words -= 3;
        k += 12;
    }
    switch (words) {
    case 3: c += load_u32(k + 8); /* fall through */
    case 2: b += load_u32(k + 4); /* fall through */
    case 1: a += load_u32(k);
        JFINAL(a, b, c);
        break;
    default: break;
    }
    return c;
}

static uint32_t key_hash(const struct bpfvm_map *m, const void *key)
{
    if (m->key_size % 4 == 0)
        return jhash_words(key, m->key_size / 4, 0);
    return jhash_bytes(key, m->key_size, 0);
}

/* -- value copies (skipping a bpf_spin_lock field, as the kernel's copy_map_value) ------------------ */
static void copy_value(const struct bpfvm_map *m, uint8_t *dst, const uint8_t *src)
{
    if (m->lock_off < 0) {
        memmove(dst, src, m->value_size);
        return;
    }
    uint32_t lo = (uint32_t)m->lock_off;
    memmove(dst, src, lo);
    memmove(dst + lo + 4, src + lo + 4, m->value_size - lo - 4);
}

static void copy_value_out(const struct bpfvm_map *m, uint8_t *dst, const uint8_t *src)
{
    memcpy(dst, src, m->value_size);
    if (m->lock_off >= 0)
        memset(dst + m->lock_off, 0, 4);
}

static uint8_t *elem_value(const struct bpfvm_map *m, uint32_t idx)
{
    return m->values + (uint64_t)idx * m->elem_size;
}

static uint8_t *elem_key(const struct bpfvm_map *m, uint32_t idx)
{
    return m->keys + (uint64_t)idx * m->key_size;
}

/* per-CPU copies: program side writes the current CPU's and zeroes the others for a new element;
 * syscall side takes every CPU's copy from a blob of stride bytes per CPU. */
static void percpu_write(const struct bpfvm_map *m, uint8_t *base, const uint8_t *value, bool all, bool init)
{
    for (uint32_t c = 0; c < m->ncpus; c++) {
        uint8_t *dst = base + (uint64_t)c * m->stride;
        if (all)
            memmove(dst, value + (uint64_t)c * m->stride, m->stride);
        else if (c == m->cpu)
            memmove(dst, value, m->value_size);
        else if (init)
            memset(dst, 0, m->stride);
    }
}

static void percpu_read(const struct bpfvm_map *m, uint8_t *out, const uint8_t *base)
{
    memcpy(out, base, (uint64_t)m->stride * m->ncpus);
}

/* -- hash table ----------------------------------------------------------------------------------- */
static int32_t htab_find(const struct bpfvm_map *m, uint32_t hash, const void *key)
{
    int32_t idx = m->buckets[hash & (m->n_buckets - 1)];
    uint32_t guard = 0;
    while (idx >= 0 && guard++ <= m->nelems) {
        const struct helem *e = &m->elems[idx];
        if (e->hash == hash && memcmp(elem_key(m, (uint32_t)idx), key, m->key_size) == 0)
            return idx;
        idx = e->next;
    }
    return -1;
}

static void htab_link(struct bpfvm_map *m, uint32_t idx)
{
    struct helem *e = &m->elems[idx];
    int32_t *head = &m->buckets[e->hash & (m->n_buckets - 1)];
    e->next = *head;
    *head = (int32_t)idx;
    e->linked = 1;
    m->count++;
}

static bool htab_unlink(struct bpfvm_map *m, uint32_t idx)
{
    struct helem *e = &m->elems[idx];
    if (!e->linked)
        return false;
    int32_t *pp = &m->buckets[e->hash & (m->n_buckets - 1)];
    uint32_t guard = 0;
    while (*pp >= 0 && guard++ <= m->nelems) {
        if ((uint32_t)*pp == idx) {
            *pp = e->next;
            e->next = -1;
            e->linked = 0;
            m->count--;
            return true;
        }
        pp = &m->elems[*pp].next;
    }
    return false;
}

static int check_flags(int32_t old, uint64_t flags)
{
    uint64_t f = flags & ~(uint64_t)BPFVM_F_LOCK;
    if (old >= 0 && f == BPFVM_NOEXIST)
        return -EEXIST;
    if (old < 0 && f == BPFVM_EXIST)
        return -ENOENT;
    return 0;
}

static int32_t free_pop(struct bpfvm_map *m)
{
    return m->nfree ? (int32_t)m->free_stack[--m->nfree] : -1;
}

static void free_push(struct bpfvm_map *m, uint32_t idx)
{
    if (m->nfree < m->nelems)
        m->free_stack[m->nfree++] = idx;
}

/* -- LRU (the kernel's bpf_lru_list algorithm) ------------------------------------------------------ */
#define NODE(n) ((struct helem *)((char *)(n) - offsetof(struct helem, lru)))

static bool lru_local_type(uint8_t t) { return t >= LRU_LOCAL_FREE; }

static void lru_count(struct lru_list *l, uint8_t type, int delta)
{
    if (type < 2)
        l->counts[type] += (uint32_t)delta;
}

static uint32_t elem_index(const struct bpfvm_map *m, const struct helem *e) { return (uint32_t)(e - m->elems); }

/* The LRU's callback into the hash table: unlink the element of an evicted node. */
static bool lru_del_from_htab(struct bpfvm_map *m, struct helem *e) { return htab_unlink(m, elem_index(m, e)); }

static void lru_move_to_free(struct lru_list *l, struct helem *e, struct lnode *free_list, uint8_t tgt)
{
    if (lru_local_type(e->type))
        return;
    if (&e->lru == l->next_rot)
        l->next_rot = l->next_rot->prev;
    lru_count(l, e->type, -1);
    e->type = tgt;
    l_move(&e->lru, free_list);
}

static void lru_move_in(struct lru_list *l, struct helem *e, uint8_t tgt)
{
    if (!lru_local_type(e->type) || lru_local_type(tgt))
        return;
    lru_count(l, tgt, 1);
    e->type = tgt;
    e->ref = 0;
    l_move(&e->lru, &l->lists[tgt]);
}

static void lru_move(struct lru_list *l, struct helem *e, uint8_t tgt)
{
    if (lru_local_type(e->type) || lru_local_type(tgt))
        return;
    if (e->type != tgt) {
        lru_count(l, e->type, -1);
        lru_count(l, tgt, 1);
        e->type = tgt;
    }
    e->ref = 0;
    if (&e->lru == l->next_rot)
        l->next_rot = l->next_rot->prev;
    l_move(&e->lru, &l->lists[tgt]);
}

/* Active tail to head: referenced nodes get another round in active, the rest go to inactive. */
static void lru_rotate_active(const struct bpfvm_map *m, struct lru_list *l)
{
    struct lnode *head = &l->lists[LRU_ACTIVE];
    if (l_empty(head))
        return;
    struct lnode *first = head->next, *cur, *prev;
    uint32_t i = 0;
    for (cur = head->prev; cur != head; cur = prev) {
        prev = cur->prev;
        struct helem *e = NODE(cur);
        lru_move(l, e, e->ref ? LRU_ACTIVE : LRU_INACTIVE);
        if (++i == m->nr_scans || cur == first)
            break;
    }
}

/* Inactive, from where the last rotation stopped: referenced nodes move to active. */
static void lru_rotate_inactive(const struct bpfvm_map *m, struct lru_list *l)
{
    struct lnode *inactive = &l->lists[LRU_INACTIVE], *cur, *last, *next = inactive;
    uint32_t i = 0, guard = 0;
    if (l_empty(inactive))
        return;
    last = l->next_rot->next;
    if (last == inactive)
        last = last->next;
    cur = l->next_rot;
    while (i < m->nr_scans && guard++ < 2 * m->nelems + 4) {
        if (cur == inactive) {
            cur = cur->prev;
            continue;
        }
        struct helem *e = NODE(cur);
        next = cur->prev;
        if (e->ref)
            lru_move(l, e, LRU_ACTIVE);
        if (cur == last)
            break;
        cur = next;
        i++;
    }
    l->next_rot = next;
}

static void lru_rotate(const struct bpfvm_map *m, struct lru_list *l)
{
    if (l->counts[LRU_INACTIVE] < l->counts[LRU_ACTIVE])
        lru_rotate_active(m, l);
    lru_rotate_inactive(m, l);
}

static uint32_t lru_shrink_inactive(struct bpfvm_map *m, struct lru_list *l, uint32_t want,
                                    struct lnode *free_list, uint8_t tgt)
{
    struct lnode *inactive = &l->lists[LRU_INACTIVE], *cur, *prev;
    uint32_t n = 0, i = 0;
    for (cur = inactive->prev; cur != inactive; cur = prev) {
        prev = cur->prev;
        struct helem *e = NODE(cur);
        if (e->ref) {
            lru_move(l, e, LRU_ACTIVE);
        } else if (lru_del_from_htab(m, e)) {
            lru_move_to_free(l, e, free_list, tgt);
            if (++n == want)
                break;
        }
        if (++i == m->nr_scans)
            break;
    }
    return n;
}

/* Evict unreferenced inactive nodes; failing that, the oldest node regardless of its reference bit. */
static uint32_t lru_shrink(struct bpfvm_map *m, struct lru_list *l, uint32_t want, struct lnode *free_list,
                           uint8_t tgt)
{
    uint32_t n = lru_shrink_inactive(m, l, want, free_list, tgt);
    if (n)
        return n;
    struct lnode *force = l_empty(&l->lists[LRU_INACTIVE]) ? &l->lists[LRU_ACTIVE] : &l->lists[LRU_INACTIVE];
    struct lnode *cur, *prev;
    for (cur = force->prev; cur != force; cur = prev) {
        prev = cur->prev;
        struct helem *e = NODE(cur);
        if (lru_del_from_htab(m, e)) {
            lru_move_to_free(l, e, free_list, tgt);
            return 1;
        }
    }
    return 0;
}

static void lru_local_flush(struct lru_list *l, struct lru_local *loc)
{
    struct lnode *cur, *prev;
    for (cur = loc->pending.prev; cur != &loc->pending; cur = prev) {
        prev = cur->prev;
        struct helem *e = NODE(cur);
        lru_move_in(l, e, e->ref ? LRU_ACTIVE : LRU_INACTIVE);
    }
}

static void lru_refill_local(struct bpfvm_map *m, struct lru_local *loc)
{
    struct lru_list *l = &m->lru[0];
    struct lnode *free_list = &l->lists[LRU_FREE], *cur, *next;
    uint32_t nfree = 0;
    lru_local_flush(l, loc);
    lru_rotate(m, l);
    for (cur = free_list->next; cur != free_list; cur = next) {
        next = cur->next;
        lru_move_to_free(l, NODE(cur), &loc->free, LRU_LOCAL_FREE);
        if (++nfree == m->target_free)
            break;
    }
    if (nfree < m->target_free)
        lru_shrink(m, l, m->target_free - nfree, &loc->free, LRU_LOCAL_FREE);
}

static struct helem *lru_local_pop_free(struct lru_local *loc)
{
    if (l_empty(&loc->free))
        return NULL;
    struct lnode *n = loc->free.next;
    l_del(n);
    return NODE(n);
}

static struct helem *lru_local_pop_pending(struct bpfvm_map *m, struct lru_local *loc)
{
    for (int force = 0; force < 2; force++) {
        struct lnode *cur;
        for (cur = loc->pending.prev; cur != &loc->pending; cur = cur->prev) {
            struct helem *e = NODE(cur);
            if ((!e->ref || force) && lru_del_from_htab(m, e)) {
                l_del(cur);
                return e;
            }
        }
    }
    return NULL;
}

static void lru_add_pending(struct lru_local *loc, uint32_t cpu, struct helem *e, uint32_t hash)
{
    e->hash = hash;
    e->cpu = cpu;
    e->type = LRU_LOCAL_PENDING;
    e->ref = 0;
    l_add(&e->lru, &loc->pending);
}

static struct helem *lru_pop_free(struct bpfvm_map *m, uint32_t hash)
{
    uint32_t cpu = m->cpu;
    if (m->percpu_lru) {
        struct lru_list *l = &m->lru[cpu];
        struct lnode *free_list = &l->lists[LRU_FREE];
        lru_rotate(m, l);
        if (l_empty(free_list))
            lru_shrink(m, l, PERCPU_FREE_TARGET, free_list, LRU_FREE);
        if (l_empty(free_list))
            return NULL;
        struct helem *e = NODE(free_list->next);
        e->hash = hash;
        e->ref = 0;
        lru_move(l, e, LRU_INACTIVE);
        return e;
    }
    struct lru_local *loc = &m->local[cpu];
    struct helem *e = lru_local_pop_free(loc);
    if (!e) {
        lru_refill_local(m, loc);
        e = lru_local_pop_free(loc);
    }
    if (e) {
        lru_add_pending(loc, cpu, e, hash);
        return e;
    }
    /* nothing free here or globally: steal from the CPUs' local lists, round robin */
    uint32_t first = loc->next_steal, steal = first;
    do {
        struct lru_local *victim = &m->local[steal];
        e = lru_local_pop_free(victim);
        if (!e)
            e = lru_local_pop_pending(m, victim);
        steal = (steal + 1) % m->ncpus;
    } while (!e && steal != first);
    loc->next_steal = steal;
    if (e)
        lru_add_pending(loc, cpu, e, hash);
    return e;
}

static void lru_push_free(struct bpfvm_map *m, struct helem *e)
{
    if (m->percpu_lru) {
        lru_move(&m->lru[e->cpu < m->ncpus ? e->cpu : 0], e, LRU_FREE);
        return;
    }
    if (e->type == LRU_FREE || e->type == LRU_LOCAL_FREE)
        return;
    if (e->type == LRU_LOCAL_PENDING) {
        struct lru_local *loc = &m->local[e->cpu < m->ncpus ? e->cpu : 0];
        e->type = LRU_LOCAL_FREE;
        e->ref = 0;
        l_move(&e->lru, &loc->free);
        return;
    }
    lru_move(&m->lru[0], e, LRU_FREE);
}

static void lru_populate(struct bpfvm_map *m)
{
    uint32_t per_cpu = m->nelems / m->ncpus;
    for (uint32_t i = 0; i < m->nelems; i++) {
        struct helem *e = &m->elems[i];
        e->type = LRU_FREE;
        e->ref = 0;
        if (m->percpu_lru) {
            uint32_t cpu = i / per_cpu;
            e->cpu = cpu < m->ncpus ? cpu : m->ncpus - 1;
            l_add(&e->lru, &m->lru[e->cpu].lists[LRU_FREE]);
        } else {
            l_add(&e->lru, &m->lru[0].lists[LRU_FREE]);
        }
    }
    uint32_t t = (m->nelems / m->ncpus) / 2;
    m->target_free = t < 1 ? 1 : (t > LOCAL_FREE_TARGET ? LOCAL_FREE_TARGET : t);
    m->nr_scans = m->percpu_lru ? PERCPU_FREE_TARGET : LOCAL_FREE_TARGET;
}

static void lru_mark(struct helem *e)
{
    if (!e->ref)
        e->ref = 1;
}

/* -- hash updates ------------------------------------------------------------------------------------ */
static int htab_update(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags)
{
    if ((flags & ~(uint64_t)BPFVM_F_LOCK) > BPFVM_EXIST)
        return -EINVAL;
    uint32_t hash = key_hash(m, key);
    if ((flags & BPFVM_F_LOCK) && m->lock_off < 0)
        return -EINVAL;
    int32_t old = htab_find(m, hash, key);
    int ret = check_flags(old, flags);
    if (ret)
        return ret;
    if (old >= 0 && (flags & BPFVM_F_LOCK)) {
        copy_value(m, elem_value(m, (uint32_t)old), value);   /* in place, under the element's lock */
        return 0;
    }
    int32_t idx;
    if (old >= 0) {            /* replace with the CPU's spare element; the old one becomes the spare */
        idx = (int32_t)m->extra[m->cpu];
        m->extra[m->cpu] = (uint32_t)old;
    } else {
        idx = free_pop(m);
        if (idx < 0)
            return -E2BIG;
    }
    memcpy(elem_key(m, (uint32_t)idx), key, m->key_size);
    copy_value(m, elem_value(m, (uint32_t)idx), value);
    m->elems[idx].hash = hash;
    htab_link(m, (uint32_t)idx);
    if (old >= 0)
        htab_unlink(m, (uint32_t)old);
    return 0;
}

/* per-CPU hash and hash of maps: existing elements are updated in place */
static int htab_update_in_place(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags, bool all)
{
    if (flags > BPFVM_EXIST)
        return -EINVAL;
    uint32_t hash = key_hash(m, key);
    int32_t old = htab_find(m, hash, key);
    int ret = check_flags(old, flags);
    if (ret)
        return ret;
    bool percpu = m->type == BPFVM_MAP_PERCPU_HASH;
    int32_t idx = old;
    if (idx < 0) {
        idx = free_pop(m);
        if (idx < 0)
            return -E2BIG;
        memcpy(elem_key(m, (uint32_t)idx), key, m->key_size);
        m->elems[idx].hash = hash;
    }
    if (percpu)
        percpu_write(m, elem_value(m, (uint32_t)idx), value, all, old < 0);
    else
        memmove(elem_value(m, (uint32_t)idx), value, m->value_size);
    if (old < 0)
        htab_link(m, (uint32_t)idx);
    return 0;
}

static int lru_update(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags)
{
    if (flags > BPFVM_EXIST)
        return -EINVAL;
    uint32_t hash = key_hash(m, key);
    /* like the kernel, take a node first: this may evict, even the key being updated */
    struct helem *e = lru_pop_free(m, hash);
    if (!e)
        return -ENOMEM;
    uint32_t idx = elem_index(m, e);
    memcpy(elem_key(m, idx), key, m->key_size);
    copy_value(m, elem_value(m, idx), value);
    int32_t old = htab_find(m, hash, key);
    int ret = check_flags(old, flags);
    if (ret) {
        lru_push_free(m, e);
        return ret;
    }
    htab_link(m, idx);
    if (old >= 0) {
        lru_mark(e);
        htab_unlink(m, (uint32_t)old);
        lru_push_free(m, &m->elems[old]);
    }
    return 0;
}

static int lru_percpu_update(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags, bool all)
{
    if (flags > BPFVM_EXIST)
        return -EINVAL;
    uint32_t hash = key_hash(m, key);
    struct helem *e = NULL;
    if (flags != BPFVM_EXIST) {
        e = lru_pop_free(m, hash);
        if (!e)
            return -ENOMEM;
        memcpy(elem_key(m, elem_index(m, e)), key, m->key_size);
    }
    int32_t old = htab_find(m, hash, key);
    int ret = check_flags(old, flags);
    if (!ret) {
        if (old >= 0) {
            lru_mark(&m->elems[old]);
            percpu_write(m, elem_value(m, (uint32_t)old), value, all, false);
        } else {
            uint32_t idx = elem_index(m, e);
            percpu_write(m, elem_value(m, idx), value, all, true);
            htab_link(m, idx);
            e = NULL;
        }
    }
    if (e)
        lru_push_free(m, e);
    return ret;
}

static int htab_delete(struct bpfvm_map *m, const void *key)
{
    int32_t idx = htab_find(m, key_hash(m, key), key);
    if (idx < 0)
        return -ENOENT;
    htab_unlink(m, (uint32_t)idx);
    if (is_lru(m->type))
        lru_push_free(m, &m->elems[idx]);
    else
        free_push(m, (uint32_t)idx);
    return 0;
}

static int htab_get_next_key(const struct bpfvm_map *m, const void *key, void *next_key)
{
    uint64_t i = 0;
    if (key) {
        uint32_t hash = key_hash(m, key);
        int32_t idx = htab_find(m, hash, key);
        if (idx >= 0) {
            int32_t nx = m->elems[idx].next;
            if (nx >= 0) {
                memcpy(next_key, elem_key(m, (uint32_t)nx), m->key_size);
                return 0;
            }
            i = (uint64_t)(hash & (m->n_buckets - 1)) + 1;
        }
    }
    for (; i < m->n_buckets; i++) {
        if (m->buckets[i] >= 0) {
            memcpy(next_key, elem_key(m, (uint32_t)m->buckets[i]), m->key_size);
            return 0;
        }
    }
    return -ENOENT;
}

/* -- arrays ------------------------------------------------------------------------------------------ */
static int array_update(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags, bool sys)
{
    uint32_t idx = load_u32(key);
    bool percpu = m->type == BPFVM_MAP_PERCPU_ARRAY;
    if (percpu && sys) {
        if (flags > BPFVM_EXIST)
            return -EINVAL;
    } else if ((flags & ~(uint64_t)BPFVM_F_LOCK) > BPFVM_EXIST) {
        return -EINVAL;
    }
    if (idx >= m->max_entries)
        return -E2BIG;
    if (flags & BPFVM_NOEXIST)
        return -EEXIST;
    if ((flags & BPFVM_F_LOCK) && m->lock_off < 0)
        return -EINVAL;
    if (percpu)
        percpu_write(m, elem_value(m, idx), value, sys, false);
    else
        copy_value(m, elem_value(m, idx), value);
    return 0;
}

static int array_get_next_key(const struct bpfvm_map *m, const void *key, void *next_key)
{
    uint32_t idx = key ? load_u32(key) : UINT32_MAX;
    uint32_t next = 0;
    if (idx < m->max_entries) {
        if (idx == m->max_entries - 1)
            return -ENOENT;
        next = idx + 1;
    }
    memcpy(next_key, &next, 4);
    return 0;
}

/* -- queue / stack -------------------------------------------------------------------------------------- */
static int qs_push(struct bpfvm_map *m, const void *value, uint64_t flags)
{
    if ((flags & BPFVM_NOEXIST) || flags > BPFVM_EXIST)
        return -EINVAL;
    uint32_t head = m->qs_head + 1 >= m->qs_size ? 0 : m->qs_head + 1;
    if (head == m->qs_tail) {          /* full */
        if (!(flags & BPFVM_EXIST))
            return -E2BIG;
        m->qs_tail = m->qs_tail + 1 >= m->qs_size ? 0 : m->qs_tail + 1;   /* overwrite the oldest */
    }
    memmove(m->qs + (uint64_t)m->qs_head * m->value_size, value, m->value_size);
    m->qs_head = head;
    return 0;
}

static int qs_get(struct bpfvm_map *m, void *value, bool del)
{
    if (m->qs_head == m->qs_tail) {
        memset(value, 0, m->value_size);
        return -ENOENT;
    }
    uint32_t idx;
    if (m->type == BPFVM_MAP_QUEUE) {
        idx = m->qs_tail;
        if (del)
            m->qs_tail = m->qs_tail + 1 >= m->qs_size ? 0 : m->qs_tail + 1;
    } else {
        idx = m->qs_head == 0 ? m->qs_size - 1 : m->qs_head - 1;
        if (del)
            m->qs_head = idx;
    }
    memmove(value, m->qs + (uint64_t)idx * m->value_size, m->value_size);
    return 0;
}

int bpfvm_map_qs_item(const struct bpfvm_map *m, uint32_t i, void *value)
{
    if (m->type != BPFVM_MAP_QUEUE && m->type != BPFVM_MAP_STACK)
        return -EINVAL;
    if (i >= bpfvm_map_count(m))
        return -ENOENT;
    uint64_t slot = m->type == BPFVM_MAP_QUEUE ? (uint64_t)m->qs_tail + i : (uint64_t)m->qs_head + m->qs_size - 1 - i;
    memcpy(value, m->qs + (slot % m->qs_size) * m->value_size, m->value_size);
    return 0;
}

/* -- creation ---------------------------------------------------------------------------------------- */
static bool access_ok(uint32_t f)
{
    return (f & (BPFVM_F_RDONLY | BPFVM_F_WRONLY)) != (BPFVM_F_RDONLY | BPFVM_F_WRONLY) &&
           (f & (BPFVM_F_RDONLY_PROG | BPFVM_F_WRONLY_PROG)) != (BPFVM_F_RDONLY_PROG | BPFVM_F_WRONLY_PROG);
}

/* The kernel's map_alloc_check for each type. */
static int check_attrs(uint32_t type, uint32_t ks, uint32_t vs, uint32_t max, uint32_t flags)
{
    if (is_array(type)) {
        uint32_t mask = BPFVM_F_NUMA_NODE | BPFVM_F_MMAPABLE | ACCESS_MASK | BPFVM_F_PRESERVE_ELEMS |
                        BPFVM_F_INNER_MAP;
        if (is_fd_array(type) && (vs != 4 || (flags & (BPFVM_F_RDONLY_PROG | BPFVM_F_WRONLY_PROG))))
            return -EINVAL;
        if (max == 0 || ks != 4 || vs == 0 || (flags & ~mask) || !access_ok(flags))
            return -EINVAL;
        if (type != BPFVM_MAP_ARRAY && (flags & (BPFVM_F_MMAPABLE | BPFVM_F_INNER_MAP)))
            return -EINVAL;
        if (type != BPFVM_MAP_PERF_EVENT_ARRAY && (flags & BPFVM_F_PRESERVE_ELEMS))
            return -EINVAL;
        if (vs > INT32_MAX)
            return -E2BIG;
        if (type == BPFVM_MAP_PERCPU_ARRAY && vs > PCPU_MIN_UNIT)
            return -E2BIG;
        return 0;
    }
    if (is_hash(type)) {
        uint32_t mask = BPFVM_F_NO_PREALLOC | BPFVM_F_NO_COMMON_LRU | BPFVM_F_NUMA_NODE | ACCESS_MASK |
                        BPFVM_F_ZERO_SEED;
        if (type == BPFVM_MAP_HASH_OF_MAPS && vs != 4)
            return -EINVAL;
        if ((flags & ~mask) || !access_ok(flags))
            return -EINVAL;
        if (!is_lru(type) && (flags & BPFVM_F_NO_COMMON_LRU))
            return -EINVAL;
        if (is_lru(type) && (flags & BPFVM_F_NO_PREALLOC))
            return -BPFVM_ENOTSUPP;
        if ((flags & BPFVM_F_NUMA_NODE) && (is_percpu(type) || (flags & BPFVM_F_NO_COMMON_LRU)))
            return -EINVAL;
        if (max == 0 || ks == 0 || vs == 0)
            return -EINVAL;
        if ((uint64_t)ks + vs >= KMALLOC_MAX - HTAB_ELEM_HDR)
            return -E2BIG;
        if (is_percpu(type) && round8(vs) > PCPU_MIN_UNIT)
            return -E2BIG;
        if (max > (1u << 31))
            return -E2BIG;
        return 0;
    }
    if (type == BPFVM_MAP_QUEUE || type == BPFVM_MAP_STACK) {
        if (max == 0 || ks != 0 || vs == 0 || (flags & ~(BPFVM_F_NUMA_NODE | ACCESS_MASK)) || !access_ok(flags))
            return -EINVAL;
        if (vs > KMALLOC_MAX)
            return -E2BIG;
        return 0;
    }
    if (type == BPFVM_MAP_RINGBUF) {
        if (flags & ~BPFVM_F_NUMA_NODE)
            return -EINVAL;
        if (ks || vs || !is_pow2(max) || max % PAGE)
            return -EINVAL;
        return 0;   /* a u32 size never exceeds the kernel's 64 GiB limit */
    }
    return -EINVAL;
}

static void *zalloc(uint64_t n, uint64_t size)
{
    if (size && n > UINT64_MAX / size)
        return NULL;
    uint64_t total = n * size;
    if (total > MAX_MAP_BYTES || total > SIZE_MAX)
        return NULL;
    return calloc(total ? total : 1, 1);
}

/* Preallocation of a map over MAX_MAP_BYTES fails with -ENOMEM, as an allocation the kernel cannot make. */
static bool too_big(uint32_t type, uint32_t ks, uint32_t vs, uint32_t max, uint32_t ncpus)
{
    uint64_t per = round8(vs) * (uint64_t)(is_percpu(type) ? ncpus : 1);
    if (is_hash(type))
        per += ks + sizeof(struct helem) + 2 * sizeof(int32_t);
    else if (type == BPFVM_MAP_QUEUE || type == BPFVM_MAP_STACK)
        per = vs;
    else if (type == BPFVM_MAP_RINGBUF)
        per = 2;
    else if (is_fd_array(type))
        per = 8;
    return ((uint64_t)max + ncpus) * per > MAX_MAP_BYTES;
}

static int alloc_hash(struct bpfvm_map *m)
{
    bool lru = is_lru(m->type);
    if (m->percpu_lru) {   /* every CPU's list gets the same number of nodes */
        uint64_t rounded = ((uint64_t)m->max_entries + m->ncpus - 1) / m->ncpus * m->ncpus;
        m->max_entries = rounded > UINT32_MAX ? m->max_entries / m->ncpus * m->ncpus : (uint32_t)rounded;
    }
    uint64_t nb = 1;
    while (nb < m->max_entries)
        nb <<= 1;
    m->n_buckets = (uint32_t)nb;
    uint64_t nelems = m->max_entries;
    if (m->type == BPFVM_MAP_HASH)
        nelems += m->ncpus;   /* spares for replacing updates */
    if (nelems >= INT32_MAX)
        return -E2BIG;
    m->nelems = (uint32_t)nelems;
    m->buckets = zalloc(m->n_buckets, sizeof(int32_t));
    m->elems = zalloc(m->nelems, sizeof(struct helem));
    m->keys = zalloc(m->nelems, m->key_size);
    m->values = zalloc(m->nelems, m->elem_size);
    if (!m->buckets || !m->elems || !m->keys || !m->values)
        return -ENOMEM;
    m->values_size = (uint64_t)m->nelems * m->elem_size;
    memset(m->buckets, 0xff, (uint64_t)m->n_buckets * sizeof(int32_t));
    for (uint32_t i = 0; i < m->nelems; i++) {
        m->elems[i].next = -1;
        l_init(&m->elems[i].lru);
    }
    if (lru) {
        uint32_t nl = m->percpu_lru ? m->ncpus : 1;
        m->lru = zalloc(nl, sizeof(struct lru_list));
        if (!m->lru)
            return -ENOMEM;
        for (uint32_t c = 0; c < nl; c++) {
            for (int t = 0; t < 3; t++)
                l_init(&m->lru[c].lists[t]);
            m->lru[c].next_rot = &m->lru[c].lists[LRU_INACTIVE];
        }
        if (!m->percpu_lru) {
            m->local = zalloc(m->ncpus, sizeof(struct lru_local));
            if (!m->local)
                return -ENOMEM;
            for (uint32_t c = 0; c < m->ncpus; c++) {
                l_init(&m->local[c].free);
                l_init(&m->local[c].pending);
                m->local[c].next_steal = c;
            }
        }
        lru_populate(m);
        return 0;
    }
    m->free_stack = zalloc(m->nelems, sizeof(uint32_t));
    if (!m->free_stack)
        return -ENOMEM;
    for (uint32_t i = m->max_entries; i-- > 0;)
        m->free_stack[m->nfree++] = i;   /* pops come out as 0, 1, 2 ... */
    if (m->type == BPFVM_MAP_HASH) {
        m->extra = zalloc(m->ncpus, sizeof(uint32_t));
        if (!m->extra)
            return -ENOMEM;
        for (uint32_t c = 0; c < m->ncpus; c++)
            m->extra[c] = m->max_entries + c;
    }
    return 0;
}

static int alloc_ringbuf(struct bpfvm_map *m)
{
    /* meta pages (consumer and producer positions) then the data area and, right after it, a mirror
     * of the same size so that a record wrapping around the end is contiguous for the program; the
     * wrapped tail is copied back to the start of the data area when the record is committed. */
    uint64_t size = (uint64_t)RB_META_PAGES * PAGE + 2ull * m->max_entries;
    void *area = NULL;
    if (size > SIZE_MAX || posix_memalign(&area, PAGE, (size_t)size))
        return -ENOMEM;
    memset(area, 0, (size_t)size);
    m->rb_area = area;
    m->cons_pos = (uint64_t *)(m->rb_area + PAGE);
    m->prod_pos = (uint64_t *)(m->rb_area + 2 * PAGE);
    m->rb_data = m->rb_area + RB_META_PAGES * PAGE;
    m->rb_mask = m->max_entries - 1;
    m->values = m->rb_data;
    m->values_size = 2ull * m->max_entries;
    pthread_mutex_lock(&rb_lock);
    m->rb_next = rb_list;
    rb_list = m;
    pthread_mutex_unlock(&rb_lock);
    return 0;
}

struct bpfvm_map *bpfvm_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                                   uint32_t map_flags, uint32_t ncpus, int32_t lock_off, int *err)
{
    int ret = check_attrs(type, key_size, value_size, max_entries, map_flags);
    if (!ret && (ncpus == 0 || ncpus > MAX_CPUS))
        ret = -EINVAL;
    if (!ret && too_big(type, key_size, value_size, max_entries, ncpus))
        ret = -ENOMEM;
    if (!ret && lock_off >= 0) {
        if (type != BPFVM_MAP_HASH && type != BPFVM_MAP_ARRAY)
            ret = -EOPNOTSUPP;
        else if (lock_off % 4 || (uint64_t)lock_off + 4 > value_size)
            ret = -EINVAL;
    }
    if (ret) {
        if (err)
            *err = ret;
        return NULL;
    }
    struct bpfvm_map *m = calloc(1, sizeof(*m));
    if (!m) {
        if (err)
            *err = -ENOMEM;
        return NULL;
    }
    m->type = type;
    m->key_size = key_size;
    m->value_size = value_size;
    m->max_entries = max_entries;
    m->map_flags = map_flags;
    m->ncpus = ncpus;
    m->lock_off = lock_off < 0 ? -1 : lock_off;
    m->stride = round8(value_size);
    m->elem_size = is_percpu(type) ? m->stride * ncpus : m->stride;
    m->percpu_lru = is_lru(type) && (map_flags & BPFVM_F_NO_COMMON_LRU);
    if (type == BPFVM_MAP_HASH_OF_MAPS)
        m->value_size = m->elem_size = m->stride = 8;   /* holds the inner map pointer */

    if (is_hash(type)) {
        ret = alloc_hash(m);
        m->expose = type != BPFVM_MAP_HASH_OF_MAPS;
    } else if (type == BPFVM_MAP_ARRAY || type == BPFVM_MAP_PERCPU_ARRAY) {
        m->nelems = max_entries;
        m->values = zalloc(max_entries, m->elem_size);
        m->values_size = (uint64_t)max_entries * m->elem_size;
        m->expose = true;
        ret = m->values ? 0 : -ENOMEM;
    } else if (type == BPFVM_MAP_ARRAY_OF_MAPS) {
        m->inner = zalloc(max_entries, sizeof(*m->inner));
        ret = m->inner ? 0 : -ENOMEM;
    } else if (is_fd_array(type)) {
        m->ids = zalloc(max_entries, sizeof(*m->ids));
        ret = m->ids ? 0 : -ENOMEM;
    } else if (type == BPFVM_MAP_QUEUE || type == BPFVM_MAP_STACK) {
        m->qs_size = max_entries + 1u;
        m->qs = m->qs_size ? zalloc(m->qs_size, value_size) : NULL;
        ret = m->qs ? 0 : (m->qs_size ? -ENOMEM : -E2BIG);
    } else if (type == BPFVM_MAP_RINGBUF) {
        ret = alloc_ringbuf(m);
        m->expose = ret == 0;
    }
    if (ret) {
        bpfvm_map_free(m);
        if (err)
            *err = ret;
        return NULL;
    }
    if (err)
        *err = 0;
    return m;
}

void bpfvm_map_free(struct bpfvm_map *m)
{
    if (!m)
        return;
    if (m->rb_area) {
        pthread_mutex_lock(&rb_lock);
        for (struct bpfvm_map **pp = &rb_list; *pp; pp = &(*pp)->rb_next) {
            if (*pp == m) {
                *pp = m->rb_next;
                break;
            }
        }
        pthread_mutex_unlock(&rb_lock);
        free(m->rb_area);
    } else {
        free(m->values);
    }
    free(m->keys);
    free(m->elems);
    free(m->buckets);
    free(m->free_stack);
    free(m->extra);
    free(m->lru);
    free(m->local);
    free(m->inner);
    free(m->ids);
    free(m->qs);
    free(m->res);
    free(m);
}

int bpfvm_map_set_cpu(struct bpfvm_map *m, uint32_t cpu)
{
    if (cpu >= m->ncpus)
        return -EINVAL;
    m->cpu = cpu;
    return 0;
}

uint32_t bpfvm_map_cpu(const struct bpfvm_map *m) { return m->cpu; }
uint32_t bpfvm_map_max_entries(const struct bpfvm_map *m) { return m->max_entries; }

uint32_t bpfvm_map_count(const struct bpfvm_map *m)
{
    if (m->type == BPFVM_MAP_QUEUE || m->type == BPFVM_MAP_STACK)
        return m->qs_head >= m->qs_tail ? m->qs_head - m->qs_tail : m->qs_size - m->qs_tail + m->qs_head;
    if (is_hash(m->type))
        return m->count;
    return m->max_entries;
}

uint32_t bpfvm_map_sys_value_size(const struct bpfvm_map *m)
{
    return is_percpu(m->type) ? m->stride * m->ncpus : m->value_size;
}

uint8_t *bpfvm_map_values(struct bpfvm_map *m) { return m->expose ? m->values : NULL; }
uint64_t bpfvm_map_values_size(const struct bpfvm_map *m) { return m->expose ? m->values_size : 0; }

/* -- program side -------------------------------------------------------------------------------------- */
void *bpfvm_map_lookup_elem(struct bpfvm_map *m, const void *key)
{
    if (m->map_flags & BPFVM_F_WRONLY_PROG)
        return NULL;
    switch (m->type) {
    case BPFVM_MAP_ARRAY:
    case BPFVM_MAP_PERCPU_ARRAY: {
        uint32_t idx = load_u32(key);
        if (idx >= m->max_entries)
            return NULL;
        return elem_value(m, idx) + (m->type == BPFVM_MAP_PERCPU_ARRAY ? (uint64_t)m->cpu * m->stride : 0);
    }
    case BPFVM_MAP_ARRAY_OF_MAPS: {
        uint32_t idx = load_u32(key);
        return idx < m->max_entries ? m->inner[idx] : NULL;
    }
    case BPFVM_MAP_HASH:
    case BPFVM_MAP_PERCPU_HASH:
    case BPFVM_MAP_LRU_HASH:
    case BPFVM_MAP_LRU_PERCPU_HASH:
    case BPFVM_MAP_HASH_OF_MAPS: {
        int32_t idx = htab_find(m, key_hash(m, key), key);
        if (idx < 0)
            return NULL;
        uint8_t *v = elem_value(m, (uint32_t)idx);
        if (is_lru(m->type))
            lru_mark(&m->elems[idx]);
        if (m->type == BPFVM_MAP_HASH_OF_MAPS) {
            void *inner;
            memcpy(&inner, v, sizeof(inner));
            return inner;
        }
        return is_percpu(m->type) ? v + (uint64_t)m->cpu * m->stride : v;
    }
    default:
        return NULL;
    }
}

void *bpfvm_map_lookup_percpu_elem(struct bpfvm_map *m, const void *key, uint32_t cpu)
{
    if (!is_percpu(m->type) || cpu >= m->ncpus || (m->map_flags & BPFVM_F_WRONLY_PROG))
        return NULL;
    uint32_t saved = m->cpu;
    m->cpu = cpu;
    void *p = bpfvm_map_lookup_elem(m, key);
    m->cpu = saved;
    return p;
}

long bpfvm_map_update_elem(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags)
{
    if (m->map_flags & BPFVM_F_RDONLY_PROG)
        return -EPERM;
    switch (m->type) {
    case BPFVM_MAP_ARRAY:
    case BPFVM_MAP_PERCPU_ARRAY:
        return array_update(m, key, value, flags, false);
    case BPFVM_MAP_HASH:
        return htab_update(m, key, value, flags);
    case BPFVM_MAP_PERCPU_HASH:
        return htab_update_in_place(m, key, value, flags, false);
    case BPFVM_MAP_LRU_HASH:
        return lru_update(m, key, value, flags);
    case BPFVM_MAP_LRU_PERCPU_HASH:
        return lru_percpu_update(m, key, value, flags, false);
    case BPFVM_MAP_RINGBUF:
        return -BPFVM_ENOTSUPP;
    default:
        return -EINVAL;
    }
}

long bpfvm_map_delete_elem(struct bpfvm_map *m, const void *key)
{
    if (m->map_flags & BPFVM_F_RDONLY_PROG)
        return -EPERM;
    switch (m->type) {
    case BPFVM_MAP_HASH:
    case BPFVM_MAP_PERCPU_HASH:
    case BPFVM_MAP_LRU_HASH:
    case BPFVM_MAP_LRU_PERCPU_HASH:
        return htab_delete(m, key);
    case BPFVM_MAP_RINGBUF:
        return -BPFVM_ENOTSUPP;
    default:
        return -EINVAL;
    }
}

long bpfvm_map_push_elem(struct bpfvm_map *m, const void *value, uint64_t flags)
{
    if (m->type != BPFVM_MAP_QUEUE && m->type != BPFVM_MAP_STACK)
        return -EINVAL;
    if (m->map_flags & BPFVM_F_RDONLY_PROG)
        return -EPERM;
    return qs_push(m, value, flags);
}

long bpfvm_map_pop_elem(struct bpfvm_map *m, void *value)
{
    if (m->type != BPFVM_MAP_QUEUE && m->type != BPFVM_MAP_STACK)
        return -EINVAL;
    if (m->map_flags & (BPFVM_F_RDONLY_PROG | BPFVM_F_WRONLY_PROG))
        return -EPERM;
    return qs_get(m, value, true);
}

long bpfvm_map_peek_elem(struct bpfvm_map *m, void *value)
{
    if (m->type != BPFVM_MAP_QUEUE && m->type != BPFVM_MAP_STACK)
        return -EINVAL;
    if (m->map_flags & BPFVM_F_WRONLY_PROG)
        return -EPERM;
    return qs_get(m, value, false);
}

/* -- syscall side ------------------------------------------------------------------------------------- */
int bpfvm_map_sys_lookup(struct bpfvm_map *m, const void *key, void *value, uint64_t flags)
{
    if (m->map_flags & BPFVM_F_WRONLY)
        return -EPERM;
    if (flags & ~(uint64_t)BPFVM_F_LOCK)
        return -EINVAL;
    if ((flags & BPFVM_F_LOCK) && m->lock_off < 0)
        return -EINVAL;
    switch (m->type) {
    case BPFVM_MAP_ARRAY:
    case BPFVM_MAP_PERCPU_ARRAY: {
        uint32_t idx = load_u32(key);
        if (idx >= m->max_entries)
            return -ENOENT;
        if (m->type == BPFVM_MAP_PERCPU_ARRAY)
            percpu_read(m, value, elem_value(m, idx));
        else
            copy_value_out(m, value, elem_value(m, idx));
        return 0;
    }
    case BPFVM_MAP_HASH:
    case BPFVM_MAP_PERCPU_HASH:
    case BPFVM_MAP_LRU_HASH:
    case BPFVM_MAP_LRU_PERCPU_HASH: {
        int32_t idx = htab_find(m, key_hash(m, key), key);
        if (idx < 0)
            return -ENOENT;
        if (is_percpu(m->type))
            percpu_read(m, value, elem_value(m, (uint32_t)idx));
        else
            copy_value_out(m, value, elem_value(m, (uint32_t)idx));
        return 0;
    }
    case BPFVM_MAP_QUEUE:
    case BPFVM_MAP_STACK:
        return qs_get(m, value, false);
    default:
        return -BPFVM_ENOTSUPP;
    }
}

int bpfvm_map_sys_update(struct bpfvm_map *m, const void *key, const void *value, uint64_t flags)
{
    if (m->map_flags & BPFVM_F_RDONLY)
        return -EPERM;
    if ((flags & BPFVM_F_LOCK) && m->lock_off < 0)
        return -EINVAL;
    switch (m->type) {
    case BPFVM_MAP_ARRAY:
    case BPFVM_MAP_PERCPU_ARRAY:
        return array_update(m, key, value, flags, true);
    case BPFVM_MAP_HASH:
        return htab_update(m, key, value, flags);
    case BPFVM_MAP_PERCPU_HASH:
        return htab_update_in_place(m, key, value, flags, true);
    case BPFVM_MAP_LRU_HASH:
        return lru_update(m, key, value, flags);
    case BPFVM_MAP_LRU_PERCPU_HASH:
        return lru_percpu_update(m, key, value, flags, true);
    case BPFVM_MAP_QUEUE:
    case BPFVM_MAP_STACK:
        return qs_push(m, value, flags);
    case BPFVM_MAP_RINGBUF:
        return -BPFVM_ENOTSUPP;
    default:
        return -EINVAL;   /* slots are set with inner_update / fd_array_update */
    }
}

int bpfvm_map_sys_delete(struct bpfvm_map *m, const void *key)
{
    if (m->map_flags & BPFVM_F_RDONLY)
        return -EPERM;
    if (is_hash(m->type))
        return htab_delete(m, key);
    if (is_fd_array(m->type)) {
        uint32_t idx = load_u32(key);
        if (idx >= m->max_entries)
            return -E2BIG;
        if (m->type == BPFVM_MAP_ARRAY_OF_MAPS) {
            if (!m->inner[idx])
                return -ENOENT;
            m->inner[idx] = NULL;
        } else {
            if (!m->ids[idx])
                return -ENOENT;
            m->ids[idx] = 0;
        }
        return 0;
    }
    return m->type == BPFVM_MAP_RINGBUF ? -BPFVM_ENOTSUPP : -EINVAL;
}

int bpfvm_map_sys_lookup_and_delete(struct bpfvm_map *m, const void *key, void *value, uint64_t flags)
{
    if (m->map_flags & (BPFVM_F_RDONLY | BPFVM_F_WRONLY))
        return -EPERM;
    if (m->type == BPFVM_MAP_QUEUE || m->type == BPFVM_MAP_STACK)
        return flags ? -EINVAL : qs_get(m, value, true);
    if (!is_hash(m->type) || m->type == BPFVM_MAP_HASH_OF_MAPS)
        return -BPFVM_ENOTSUPP;
    if (flags & ~(uint64_t)BPFVM_F_LOCK)
        return -EINVAL;
    if ((flags & BPFVM_F_LOCK) && m->lock_off < 0)
        return -EINVAL;
    int ret = bpfvm_map_sys_lookup(m, key, value, flags);
    return ret ? ret : htab_delete(m, key);
}

int bpfvm_map_get_next_key(struct bpfvm_map *m, const void *key, void *next_key)
{
    if (m->map_flags & BPFVM_F_WRONLY)
        return -EPERM;
    if (is_array(m->type))
        return array_get_next_key(m, key, next_key);
    if (is_hash(m->type))
        return htab_get_next_key(m, key, next_key);
    return m->type == BPFVM_MAP_RINGBUF ? -BPFVM_ENOTSUPP : -EINVAL;
}

/* -- slots -------------------------------------------------------------------------------------------- */
int bpfvm_map_set_inner_meta(struct bpfvm_map *outer, uint32_t type, uint32_t key_size, uint32_t value_size,
                             uint32_t max_entries, uint32_t map_flags)
{
    if (outer->type != BPFVM_MAP_ARRAY_OF_MAPS && outer->type != BPFVM_MAP_HASH_OF_MAPS)
        return -EINVAL;
    if (type == BPFVM_MAP_ARRAY_OF_MAPS || type == BPFVM_MAP_HASH_OF_MAPS || type == BPFVM_MAP_PROG_ARRAY)
        return -EINVAL;   /* no nesting; tail-call maps cannot be inner maps */
    int ret = check_attrs(type, key_size, value_size, max_entries, map_flags);
    if (ret)
        return ret;
    outer->inner_type = type;
    outer->inner_key_size = key_size;
    outer->inner_value_size = value_size;
    outer->inner_max_entries = max_entries;
    outer->inner_flags = map_flags;
    outer->has_inner_meta = true;
    return 0;
}

static bool inner_compatible(const struct bpfvm_map *outer, const struct bpfvm_map *in)
{
    if (!outer->has_inner_meta || in->type != outer->inner_type || in->key_size != outer->inner_key_size ||
        in->value_size != outer->inner_value_size || in->map_flags != outer->inner_flags)
        return false;
    if (is_array(in->type) && !(in->map_flags & BPFVM_F_INNER_MAP))
        return in->max_entries == outer->inner_max_entries;
    return true;
}

int bpfvm_map_inner_update(struct bpfvm_map *outer, const void *key, struct bpfvm_map *inner, uint64_t flags)
{
    if (outer->map_flags & BPFVM_F_RDONLY)
        return -EPERM;
    if (outer->type == BPFVM_MAP_ARRAY_OF_MAPS) {
        uint32_t idx = load_u32(key);
        if (flags != BPFVM_ANY)
            return -EINVAL;
        if (idx >= outer->max_entries)
            return -E2BIG;
        if (!inner || !inner_compatible(outer, inner))
            return -EINVAL;
        outer->inner[idx] = inner;
        return 0;
    }
    if (outer->type == BPFVM_MAP_HASH_OF_MAPS) {
        if (!inner || !inner_compatible(outer, inner))
            return -EINVAL;
        uint8_t ptr[8] = {0};
        memcpy(ptr, &inner, sizeof(inner));
        return htab_update_in_place(outer, key, ptr, flags, false);
    }
    return -EINVAL;
}

struct bpfvm_map *bpfvm_map_inner_lookup(struct bpfvm_map *outer, const void *key)
{
    if (outer->type == BPFVM_MAP_ARRAY_OF_MAPS) {
        uint32_t idx = load_u32(key);
        return idx < outer->max_entries ? outer->inner[idx] : NULL;
    }
    if (outer->type == BPFVM_MAP_HASH_OF_MAPS) {
        int32_t idx = htab_find(outer, key_hash(outer, key), key);
        struct bpfvm_map *inner = NULL;
        if (idx >= 0)
            memcpy(&inner, elem_value(outer, (uint32_t)idx), sizeof(inner));
        return inner;
    }
    return NULL;
}

int bpfvm_fd_array_update(struct bpfvm_map *m, const void *key, uint64_t id, uint64_t flags)
{
    if (m->type != BPFVM_MAP_PROG_ARRAY && m->type != BPFVM_MAP_PERF_EVENT_ARRAY)
        return -EINVAL;
    if (m->map_flags & BPFVM_F_RDONLY)
        return -EPERM;
    uint32_t idx = load_u32(key);
    if (flags != BPFVM_ANY)
        return -EINVAL;
    if (idx >= m->max_entries)
        return -E2BIG;
    if (!id)
        return -EBADF;
    m->ids[idx] = id;
    return 0;
}

uint64_t bpfvm_fd_array_lookup(const struct bpfvm_map *m, uint32_t index)
{
    if (!m->ids || index >= m->max_entries)
        return 0;
    return m->ids[index];
}

/* -- ring buffer -------------------------------------------------------------------------------------- */
static uint64_t rb_pending_pos(const struct bpfvm_map *m)
{
    uint64_t pend = *m->prod_pos;
    for (uint32_t i = 0; i < m->nres; i++)
        if (m->res[i].pos < pend)
            pend = m->res[i].pos;
    return pend;
}

static int rb_find_res(const struct bpfvm_map *m, uint64_t pos)
{
    for (uint32_t i = 0; i < m->nres; i++)
        if (m->res[i].pos == pos)
            return (int)i;
    return -1;
}

static void rb_write_hdr(struct bpfvm_map *m, uint64_t off, uint32_t len)
{
    uint8_t *hdr = m->rb_data + off;
    uint32_t pg_off = (uint32_t)((uint64_t)(hdr - m->rb_area) / PAGE);
    memcpy(hdr, &len, 4);
    memcpy(hdr + 4, &pg_off, 4);
}

void *bpfvm_ringbuf_reserve(struct bpfvm_map *m, uint64_t size, uint64_t flags)
{
    if (m->type != BPFVM_MAP_RINGBUF || flags || size > UINT32_MAX / 4)
        return NULL;
    uint64_t len = (size + RB_HDR + 7) & ~7ull;
    if (len > m->rb_mask + 1)
        return NULL;
    uint64_t cons = *m->cons_pos, prod = *m->prod_pos, new_prod = prod + len;
    /* no more than size - 1 ahead of the consumer, nor of the oldest record still reserved */
    if (new_prod - cons > m->rb_mask || new_prod - rb_pending_pos(m) > m->rb_mask)
        return NULL;
    if (m->nres == m->res_cap) {
        uint32_t cap = m->res_cap ? m->res_cap * 2 : 8;
        struct rb_res *res = realloc(m->res, cap * sizeof(*res));
        if (!res)
            return NULL;
        m->res = res;
        m->res_cap = cap;
    }
    uint64_t off = prod & m->rb_mask;
    rb_write_hdr(m, off, (uint32_t)size | RB_BUSY);
    *m->prod_pos = new_prod;
    m->res[m->nres].pos = prod;
    m->res[m->nres].size = (uint32_t)size;
    m->nres++;
    return m->rb_data + off + RB_HDR;
}

static int rb_commit(struct bpfvm_map *m, void *sample, uint64_t flags, bool discard)
{
    if (m->type != BPFVM_MAP_RINGBUF)
        return -EINVAL;
    uintptr_t p = (uintptr_t)sample, data = (uintptr_t)m->rb_data;
    if (p < data + RB_HDR || p > data + m->rb_mask + 1)
        return -EINVAL;
    uint64_t off = p - data - RB_HDR;
    int j = -1;
    for (uint32_t i = 0; i < m->nres; i++) {
        if ((m->res[i].pos & m->rb_mask) == off) {
            j = (int)i;
            break;
        }
    }
    if (j < 0)
        return -EINVAL;
    struct rb_res r = m->res[j];
    m->res[j] = m->res[--m->nres];
    uint64_t len = ((uint64_t)r.size + RB_HDR + 7) & ~7ull, n = m->rb_mask + 1;
    if (off + len > n)   /* the tail went to the mirror: bring it back to the start of the data area */
        memmove(m->rb_data, m->rb_data + n, off + len - n);
    rb_write_hdr(m, off, r.size | (discard ? RB_DISCARD : 0));
    if (flags & BPFVM_RB_FORCE_WAKEUP)
        m->wakeups++;
    else if ((*m->cons_pos & m->rb_mask) == off && !(flags & BPFVM_RB_NO_WAKEUP))
        m->wakeups++;
    return 0;
}

int bpfvm_ringbuf_submit(struct bpfvm_map *m, void *sample, uint64_t flags) { return rb_commit(m, sample, flags, false); }
int bpfvm_ringbuf_discard(struct bpfvm_map *m, void *sample, uint64_t flags) { return rb_commit(m, sample, flags, true); }

long bpfvm_ringbuf_output(struct bpfvm_map *m, const void *data, uint64_t size, uint64_t flags)
{
    if (flags & ~(uint64_t)(BPFVM_RB_NO_WAKEUP | BPFVM_RB_FORCE_WAKEUP))
        return -EINVAL;
    void *rec = bpfvm_ringbuf_reserve(m, size, 0);
    if (!rec)
        return -EAGAIN;
    memmove(rec, data, size);
    return rb_commit(m, rec, flags, false);
}

uint64_t bpfvm_ringbuf_query(const struct bpfvm_map *m, uint64_t flags)
{
    if (m->type != BPFVM_MAP_RINGBUF)
        return 0;
    switch (flags) {
    case BPFVM_RB_AVAIL_DATA: return *m->prod_pos - *m->cons_pos;
    case BPFVM_RB_RING_SIZE: return m->rb_mask + 1;
    case BPFVM_RB_CONS_POS: return *m->cons_pos;
    case BPFVM_RB_PROD_POS: return *m->prod_pos;
    default: return 0;
    }
}

struct bpfvm_map *bpfvm_ringbuf_of(const void *sample)
{
    uintptr_t p = (uintptr_t)sample;
    struct bpfvm_map *found = NULL;
    pthread_mutex_lock(&rb_lock);
    for (struct bpfvm_map *m = rb_list; m; m = m->rb_next) {
        uintptr_t data = (uintptr_t)m->rb_data;
        if (p >= data && p < data + 2 * (m->rb_mask + 1)) {
            found = m;
            break;
        }
    }
    pthread_mutex_unlock(&rb_lock);
    return found;
}

long bpfvm_ringbuf_read(const struct bpfvm_map *m, uint64_t *pos, void *buf, uint64_t cap)
{
    if (m->type != BPFVM_MAP_RINGBUF)
        return -EINVAL;
    uint64_t cur = *pos, prod = *m->prod_pos, n = m->rb_mask + 1;
    if (cur < *m->cons_pos || cur > prod || cur % 8)
        return -EINVAL;
    while (cur < prod) {
        if (rb_find_res(m, cur) >= 0) {
            *pos = cur;
            return -EBUSY;
        }
        uint64_t off = cur & m->rb_mask;
        uint32_t hlen = load_u32(m->rb_data + off);
        uint32_t size = hlen & ~(RB_BUSY | RB_DISCARD);
        uint64_t len = ((uint64_t)size + RB_HDR + 7) & ~7ull;
        if ((hlen & RB_BUSY) || len > n || cur + len > prod) {   /* a program overwrote the header */
            *pos = cur;
            return -EFAULT;
        }
        if (hlen & RB_DISCARD) {
            cur += len;
            continue;
        }
        if (size > cap) {
            *pos = cur;
            return -ENOSPC;
        }
        uint64_t start = (off + RB_HDR) & m->rb_mask;
        uint64_t first = size < n - start ? size : n - start;
        memcpy(buf, m->rb_data + start, first);
        memcpy((uint8_t *)buf + first, m->rb_data, size - first);
        *pos = cur + len;
        return (long)size;
    }
    *pos = cur;
    return -ENOENT;
}

int bpfvm_ringbuf_advance(struct bpfvm_map *m, uint64_t pos)
{
    if (m->type != BPFVM_MAP_RINGBUF || pos < *m->cons_pos || pos > *m->prod_pos || pos % 8)
        return -EINVAL;
    *m->cons_pos = pos;
    return 0;
}

uint64_t bpfvm_ringbuf_wakeups(const struct bpfvm_map *m) { return m->wakeups; }
