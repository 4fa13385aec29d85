/* BPF helpers by uapi id, with the kernel's semantics and error codes: maps, time, the task, probes,
 * printing, tail calls and callbacks; network helpers are in helpers_net.c, ring buffers and dynptrs in
 * helpers_ringbuf.c.
 *
 * Every helper has the uniform native signature (env, r1..r5) -> r0 and is listed in bpfvm_helper_table, from
 * which the Python registry builds the interpreter's helper table and a JIT takes call targets. Pointer
 * arguments are checked against the region table before use: an argument the verifier would have proved
 * valid becomes a fault when it is not, while pointers the kernel itself probes (probe_read's source, a
 * %s argument) give the kernel's error return.
 */
#include "bprintf.h"
#include "helpers.h"

#define MAX_TAIL_CALL_CNT 33u
#define BPF_MAX_LOOPS (8u * 1024 * 1024)
#define MAX_BPRINTF_BUF 1024u
#define MAX_BPRINTF_VARARGS 12u
#define SCRATCH_SLOT 4096u
#define MAX_CALLBACK_DEPTH 8u

/* -- arguments --------------------------------------------------------------------------------------- */
struct bpfvm_skb *bpfvm_skb_ctx(struct bpfvm_env *env, uint64_t ctx, const char *what)
{
    if (env->ctx_kind == BPFVM_CTX_SKB && env->skb && ctx == env->ctx_addr)
        return env->skb;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: arg1 %#llx is not this run's __sk_buff context", what,
                 (unsigned long long)ctx);
    return NULL;
}

struct bpfvm_xdp *bpfvm_xdp_ctx(struct bpfvm_env *env, uint64_t ctx, const char *what)
{
    if (env->ctx_kind == BPFVM_CTX_XDP && env->xdp && ctx == env->ctx_addr)
        return env->xdp;
    bpfvm_faultf(env, BPFVM_FAULT_ARG, "%s: arg1 %#llx is not this run's xdp_md context", what,
                 (unsigned long long)ctx);
    return NULL;
}

/* The map slot for a map pointer: a program map (map_ptr_base + index * stride) or a raw handle of a
 * map this run has seen (an inner map a map-in-map lookup returned). */
struct bpfvm_map_slot *bpfvm_map_slot_arg(struct bpfvm_env *env, uint64_t ptr, const char *what)
{
    for (uint32_t i = 0; i < env->nmaps; i++)
        if (BPFVM_U64(env->maps[i].map) == ptr)
            return &env->maps[i];
    return bpfvm_map_arg(env, ptr, what);
}

/* -- maps -------------------------------------------------------------------------------------------- */
HELPER(map_lookup_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_lookup_elem");
    if (!s)
        return 0;
    MEM(r2, s->key_size, 0, "bpf_map_lookup_elem key");
    void *v = bpfvm_map_lookup_elem(s->map, BPFVM_PTR(r2));
    if (v && (s->type == BPFVM_MAP_ARRAY_OF_MAPS || s->type == BPFVM_MAP_HASH_OF_MAPS))
        bpfvm_map_pointer_of(env, (struct bpfvm_map *)v, s);   /* an inner map: helpers accept its handle */
    return BPFVM_U64(v);
}

HELPER(map_lookup_percpu_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_lookup_percpu_elem");
    if (!s)
        return 0;
    MEM(r2, s->key_size, 0, "bpf_map_lookup_percpu_elem key");
    return BPFVM_U64(bpfvm_map_lookup_percpu_elem(s->map, BPFVM_PTR(r2), (uint32_t)r3));
}

/* bpf_spin_lock / bpf_spin_unlock: runs are single-threaded, so taking a lock never waits; the word shows
 * whether it is held, as the kernel's queued spin lock does (and syscall lookups clear it). */
HELPER(spin_lock)
{
    MEM(r1, 4, 1, "bpf_spin_lock lock");
    uint32_t held = 1;
    memcpy(_m_r1, &held, 4);
    return 0;
}

HELPER(spin_unlock)
{
    MEM(r1, 4, 1, "bpf_spin_unlock lock");
    memset(_m_r1, 0, 4);
    return 0;
}

HELPER(map_update_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_update_elem");
    if (!s)
        return 0;
    MEM(r2, s->key_size, 0, "bpf_map_update_elem key");
    MEM(r3, s->value_size, 0, "bpf_map_update_elem value");
    return BPFVM_ERR(bpfvm_map_update_elem(s->map, BPFVM_PTR(r2), BPFVM_PTR(r3), r4));
}

HELPER(map_delete_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_delete_elem");
    if (!s)
        return 0;
    MEM(r2, s->key_size, 0, "bpf_map_delete_elem key");
    return BPFVM_ERR(bpfvm_map_delete_elem(s->map, BPFVM_PTR(r2)));
}

HELPER(map_push_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_push_elem");
    if (!s)
        return 0;
    MEM(r2, s->value_size, 0, "bpf_map_push_elem value");
    return BPFVM_ERR(bpfvm_map_push_elem(s->map, BPFVM_PTR(r2), r3));
}

HELPER(map_pop_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_pop_elem");
    if (!s)
        return 0;
    MEM(r2, s->value_size, 1, "bpf_map_pop_elem value");
    return BPFVM_ERR(bpfvm_map_pop_elem(s->map, BPFVM_PTR(r2)));
}

HELPER(map_peek_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_map_peek_elem");
    if (!s)
        return 0;
    MEM(r2, s->value_size, 1, "bpf_map_peek_elem value");
    return BPFVM_ERR(bpfvm_map_peek_elem(s->map, BPFVM_PTR(r2)));
}

/* -- time, randomness, the current task ---------------------------------------------------------------- */
HELPER(ktime_get_ns) { return bpfvm_ktime(env, 1 /* CLOCK_MONOTONIC */); }
HELPER(ktime_get_boot_ns) { return bpfvm_ktime(env, 7 /* CLOCK_BOOTTIME */); }
HELPER(ktime_get_coarse_ns) { return bpfvm_ktime(env, 6 /* CLOCK_MONOTONIC_COARSE */); }
HELPER(ktime_get_tai_ns) { return bpfvm_ktime(env, 11 /* CLOCK_TAI */); }
HELPER(get_prandom_u32) { return bpfvm_prandom_u32(env); }
HELPER(get_smp_processor_id) { return env->cpu; }
HELPER(get_numa_node_id) { return env->numa_node; }
HELPER(get_current_pid_tgid) { return env->pid_tgid; }

/* bpf_pidns_info of the current task when dev/ino name its pid namespace (bpfvm's process is that task) */
HELPER(get_ns_current_pid_tgid)
{
    uint32_t size = (uint32_t)r4;
    MEM(r3, size, 1, "bpf_get_ns_current_pid_tgid nsdata");
    memset(_m_r3, 0, size);
    if (size != 8 || r1 != env->pidns_dev || r2 != env->pidns_ino || !env->pidns_ino)
        return BPFVM_ERR(-EINVAL);
    uint32_t info[2] = {(uint32_t)env->pid_tgid, (uint32_t)(env->pid_tgid >> 32)};   /* pid, tgid */
    memcpy(_m_r3, info, 8);
    return 0;
}

/* bpfvm runs no kernel code, so there is no stack to walk: the kernel's error path (buffer cleared) */
HELPER(get_stack)
{
    uint32_t size = (uint32_t)r3;
    MEM(r2, size, 1, "bpf_get_stack buf");
    memset(_m_r2, 0, size);
    return BPFVM_ERR(-EFAULT);
}

/* no attachment, so no cookie: 0, as for a program attached without one */
HELPER(get_attach_cookie) { return 0; }
HELPER(get_current_uid_gid) { return env->uid_gid; }

HELPER(get_current_comm)
{
    MEM(r1, r2, 1, "bpf_get_current_comm buf");
    char *buf = BPFVM_PTR(r1);
    if (!r2)
        return 0;
    uint64_t n = strnlen(env->comm, sizeof(env->comm));
    if (n > r2 - 1)
        n = r2 - 1;
    memcpy(buf, env->comm, n);
    memset(buf + n, 0, r2 - n);  /* strscpy_pad */
    return 0;
}

/* -- probes: the source is untrusted, so a bad one is an error with the destination zeroed -------------- */
#define TASK_SIZE_MAX 0x00007ffffffff000ull

/* Why a source outside every region cannot be read: kernel reads refuse user addresses (and the guard
 * page above them) with -ERANGE, as copy_from_kernel_nofault_allowed() does; anything else faults. */
static int probe_error(uint64_t src, int kernel)
{
    return kernel && src < TASK_SIZE_MAX + 4096 ? -ERANGE : -EFAULT;
}

static uint64_t probe_read(struct bpfvm_env *env, uint64_t dst, uint64_t size, uint64_t src, int kernel,
                           const char *what)
{
    MEM(dst, size, 1, what);
    const void *from = bpfvm_mem(env, src, size, 0);
    if (!from) {
        memset(BPFVM_PTR(dst), 0, size);
        return BPFVM_ERR(probe_error(src, kernel));
    }
    memmove(BPFVM_PTR(dst), from, size);
    return 0;
}

static uint64_t probe_read_str(struct bpfvm_env *env, uint64_t dst, uint64_t size, uint64_t src, int kernel,
                               const char *what)
{
    MEM(dst, size, 1, what);
    if (!size)
        return 0;
    char *to = BPFVM_PTR(dst);
    uint64_t avail = bpfvm_mem_avail(env, src, 0);
    const char *from = BPFVM_PTR(src);
    for (uint64_t i = 0; i < size - 1; i++) {
        if (i >= avail) {             /* ran off the memory before the NUL: the kernel's fault */
            memset(to, 0, size);
            return BPFVM_ERR(i ? -EFAULT : probe_error(src, kernel));
        }
        to[i] = from[i];
        if (!from[i])
            return i + 1;
    }
    to[size - 1] = 0;
    return size;
}

HELPER(probe_read) { return probe_read(env, r1, (uint32_t)r2, r3, 0, "bpf_probe_read dst"); }
HELPER(probe_read_kernel) { return probe_read(env, r1, (uint32_t)r2, r3, 1, "bpf_probe_read_kernel dst"); }
HELPER(probe_read_user) { return probe_read(env, r1, (uint32_t)r2, r3, 0, "bpf_probe_read_user dst"); }
HELPER(probe_read_str) { return probe_read_str(env, r1, (uint32_t)r2, r3, 0, "bpf_probe_read_str dst"); }
HELPER(probe_read_kernel_str)
{
    return probe_read_str(env, r1, (uint32_t)r2, r3, 1, "bpf_probe_read_kernel_str dst");
}
HELPER(probe_read_user_str) { return probe_read_str(env, r1, (uint32_t)r2, r3, 0, "bpf_probe_read_user_str dst"); }

HELPER(strncmp)
{
    MEM(r1, (uint32_t)r2, 0, "bpf_strncmp s1");
    const unsigned char *a = BPFVM_PTR(r1), *b = BPFVM_PTR(r3);
    uint64_t avail = bpfvm_mem_avail(env, r3, 0);
    for (uint32_t i = 0; i < (uint32_t)r2; i++) {
        if (i >= avail)
            return bpfvm_faultf(env, BPFVM_FAULT_MEMORY, "bpf_strncmp s2: string at %#llx runs past its region",
                                (unsigned long long)r3);
        if (a[i] != b[i])
            return a[i] < b[i] ? BPFVM_ERR(-1) : 1;
        if (!a[i])
            return 0;
    }
    return 0;
}

/* -- printing ---------------------------------------------------------------------------------------- */
static void printk_line(struct bpfvm_env *env, const char *line, uint64_t n)
{
    if (bpfvm_out_append((uint8_t **)&env->printk_buf, &env->printk_len, &env->printk_cap, line, n) == 0 &&
        bpfvm_out_append((uint8_t **)&env->printk_buf, &env->printk_len, &env->printk_cap, "", 1) == 0)
        env->printk_lines++;
}

static uint64_t printk(struct bpfvm_env *env, uint64_t fmt, uint64_t fmt_size, const uint64_t *args,
                       uint32_t nargs)
{
    char buf[MAX_BPRINTF_BUF];
    int64_t n = bpfvm_bprintf(env, BPFVM_PTR(fmt), fmt_size, args, nargs, buf, sizeof(buf));
    if (n < 0)
        return BPFVM_ERR(n);
    printk_line(env, buf, strnlen(buf, sizeof(buf)));
    return (uint64_t)n;
}

HELPER(trace_printk)
{
    MEM(r1, (uint32_t)r2, 0, "bpf_trace_printk fmt");
    uint64_t args[3] = {r3, r4, r5};
    return printk(env, r1, (uint32_t)r2, args, 3);
}

HELPER(trace_vprintk)
{
    MEM(r1, (uint32_t)r2, 0, "bpf_trace_vprintk fmt");
    uint32_t data_len = (uint32_t)r4;
    if (data_len % 8 || data_len > MAX_BPRINTF_VARARGS * 8 || (data_len && !r3))
        return BPFVM_ERR(-EINVAL);
    MEM(r3, data_len, 0, "bpf_trace_vprintk args");
    uint64_t args[MAX_BPRINTF_VARARGS];
    memcpy(args, BPFVM_PTR(r3), data_len);
    return printk(env, r1, (uint32_t)r2, args, data_len / 8);
}

HELPER(snprintf)
{
    uint32_t str_size = (uint32_t)r2, data_len = (uint32_t)r5;
    if (r1 || str_size) {
        MEM(r1, str_size, 1, "bpf_snprintf str");
    }
    uint64_t fmt_size = bpfvm_mem_avail(env, r3, 0);
    if (!fmt_size)
        return bpfvm_faultf(env, BPFVM_FAULT_MEMORY, "bpf_snprintf fmt: %#llx is outside every region",
                            (unsigned long long)r3);
    if (data_len % 8 || data_len > MAX_BPRINTF_VARARGS * 8 || (data_len && !r4))
        return BPFVM_ERR(-EINVAL);
    uint64_t args[MAX_BPRINTF_VARARGS] = {0};
    if (data_len) {
        MEM(r4, data_len, 0, "bpf_snprintf data");
        memcpy(args, BPFVM_PTR(r4), data_len);
    }
    int64_t n = bpfvm_bprintf(env, BPFVM_PTR(r3), fmt_size, args, data_len / 8, BPFVM_PTR(r1), r1 ? str_size : 0);
    return n < 0 ? BPFVM_ERR(n) : (uint64_t)n + 1;
}

/* -- tail calls ------------------------------------------------------------------------------------------ */
HELPER(tail_call)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r2, "bpf_tail_call");
    if (!s)
        return 0;
    if (s->type != BPFVM_MAP_PROG_ARRAY)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_tail_call: map is not a prog array");
    uint32_t index = (uint32_t)r3;
    if (index >= s->max_entries)
        return BPFVM_ERR(-ENOENT);
    if (env->tail_call_cnt >= MAX_TAIL_CALL_CNT)
        return BPFVM_ERR(-ENOENT);
    env->tail_call_cnt++;              /* counted before the slot is read, as the kernel does */
    uint64_t target = bpfvm_fd_array_lookup(s->map, index);
    if (!target)
        return BPFVM_ERR(-ENOENT);
    env->tail_call_target = target;
    env->fault = BPFVM_FAULT_TAIL_CALL;
    return 0;
}

/* -- callbacks into BPF code ------------------------------------------------------------------------------ */
static uint64_t call_bpf(struct bpfvm_env *env, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                         uint64_t a5)
{
    if (!env->call_bpf_function) {
        bpfvm_faultf(env, BPFVM_FAULT_ARG, "this engine cannot call BPF callbacks");
        return 0;
    }
    return env->call_bpf_function(env, fn, a1, a2, a3, a4, a5);
}

static int callback_failed(const struct bpfvm_env *env)
{
    return env->fault && env->fault != BPFVM_FAULT_TAIL_CALL;
}

HELPER(loop)
{
    uint32_t nr_loops = (uint32_t)r1;
    if (r4)
        return BPFVM_ERR(-EINVAL);
    if (nr_loops > BPF_MAX_LOOPS)
        return BPFVM_ERR(-E2BIG);
    for (uint32_t i = 0; i < nr_loops; i++) {
        uint64_t ret = call_bpf(env, r2, i, r3, 0, 0, 0);
        if (callback_failed(env))
            return 0;
        if (ret)
            return (uint64_t)i + 1;
    }
    return nr_loops;
}

HELPER(for_each_map_elem)
{
    struct bpfvm_map_slot *s = bpfvm_map_slot_arg(env, r1, "bpf_for_each_map_elem");
    if (!s)
        return 0;
    if (r4)
        return BPFVM_ERR(-EINVAL);
    if (s->key_size > SCRATCH_SLOT || !env->scratch || env->callback_depth >= MAX_CALLBACK_DEPTH)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_for_each_map_elem: no scratch room for the key");
    uint8_t *key = env->scratch + (uint64_t)env->callback_depth * SCRATCH_SLOT;
    uint64_t num = 0;
    int is_array = s->type == BPFVM_MAP_ARRAY || s->type == BPFVM_MAP_PERCPU_ARRAY;
    int is_hash = s->type == BPFVM_MAP_HASH || s->type == BPFVM_MAP_PERCPU_HASH || s->type == BPFVM_MAP_LRU_HASH ||
                  s->type == BPFVM_MAP_LRU_PERCPU_HASH;
    if (!is_array && !is_hash)
        return bpfvm_faultf(env, BPFVM_FAULT_ARG, "bpf_for_each_map_elem: map type %u cannot be iterated", s->type);
    env->callback_depth++;
    if (is_array) {
        for (uint32_t i = 0; i < s->max_entries; i++) {
            memcpy(key, &i, 4);
            void *val = bpfvm_map_lookup_elem(s->map, key);
            num++;
            uint64_t ret = call_bpf(env, r2, r1, BPFVM_U64(key), BPFVM_U64(val), r3, 0);
            if (callback_failed(env) || ret)
                break;
        }
    } else {
        /* the keys as they are now: elements deleted by the callback are skipped, new ones not visited */
        uint32_t n = 0, cap = 16;
        uint8_t *keys = malloc((uint64_t)cap * s->key_size), *prev = NULL;
        while (keys) {
            if (n == cap) {
                uint8_t *k = realloc(keys, (uint64_t)(cap *= 2) * s->key_size);
                if (!k)
                    break;
                keys = k;
            }
            uint8_t *next = keys + (uint64_t)n * s->key_size;
            if (bpfvm_map_get_next_key(s->map, prev, next))
                break;
            prev = next;
            n++;
        }
        for (uint32_t i = 0; keys && i < n; i++) {
            memcpy(key, keys + (uint64_t)i * s->key_size, s->key_size);
            void *val = bpfvm_map_lookup_elem(s->map, key);
            if (!val)
                continue;
            num++;
            uint64_t ret = call_bpf(env, r2, r1, BPFVM_U64(key), BPFVM_U64(val), r3, 0);
            if (callback_failed(env) || ret)
                break;
        }
        free(keys);
    }
    env->callback_depth--;
    return callback_failed(env) ? 0 : num;
}

/* -- the table ------------------------------------------------------------------------------------------- */
#define H(id, name, flags) {id, "bpf_" #name, bpfvm_helper_##name, flags}

const struct bpfvm_native_entry bpfvm_helper_table[] = {
    H(1, map_lookup_elem, 0), H(2, map_update_elem, 0), H(3, map_delete_elem, 0), H(4, probe_read, 0),
    H(5, ktime_get_ns, 0), H(6, trace_printk, BPFVM_NATIVE_OUTPUT), H(7, get_prandom_u32, 0),
    H(8, get_smp_processor_id, 0), H(9, skb_store_bytes, 0), H(10, l3_csum_replace, 0), H(11, l4_csum_replace, 0),
    H(12, tail_call, BPFVM_NATIVE_TAIL_CALL), H(14, get_current_pid_tgid, 0), H(15, get_current_uid_gid, 0),
    H(16, get_current_comm, 0), H(20, skb_get_tunnel_key, 0), H(21, skb_set_tunnel_key, 0), H(23, redirect, 0),
    H(25, perf_event_output, BPFVM_NATIVE_OUTPUT), H(26, skb_load_bytes, 0), H(28, csum_diff, 0),
    H(38, skb_change_tail, 0), H(39, skb_pull_data, 0), H(40, csum_update, 0), H(41, set_hash_invalid, 0),
    H(42, get_numa_node_id, 0), H(43, skb_change_head, 0), H(44, xdp_adjust_head, 0), H(45, probe_read_str, 0),
    H(48, set_hash, 0), H(50, skb_adjust_room, 0), H(54, xdp_adjust_meta, 0), H(65, xdp_adjust_tail, 0),
    H(67, get_stack, 0), H(68, skb_load_bytes_relative, 0), H(69, fib_lookup, 0), H(87, map_push_elem, 0),
    H(88, map_pop_elem, 0), H(89, map_peek_elem, 0), H(93, spin_lock, 0), H(94, spin_unlock, 0),
    H(112, probe_read_user, 0), H(113, probe_read_kernel, 0), H(114, probe_read_user_str, 0),
    H(115, probe_read_kernel_str, 0), H(120, get_ns_current_pid_tgid, 0), H(125, ktime_get_boot_ns, 0),
    H(130, ringbuf_output, 0), H(131, ringbuf_reserve, 0), H(132, ringbuf_submit, 0), H(133, ringbuf_discard, 0),
    H(134, ringbuf_query, 0), H(135, csum_level, 0), H(160, ktime_get_coarse_ns, 0),
    H(164, for_each_map_elem, BPFVM_NATIVE_CALLBACK), H(165, snprintf, 0), H(174, get_attach_cookie, 0),
    H(177, trace_vprintk, BPFVM_NATIVE_OUTPUT), H(181, loop, BPFVM_NATIVE_CALLBACK), H(182, strncmp, 0),
    H(188, xdp_get_buff_len, 0), H(189, xdp_load_bytes, 0), H(190, xdp_store_bytes, 0),
    H(195, map_lookup_percpu_elem, 0), H(197, dynptr_from_mem, 0), H(198, ringbuf_reserve_dynptr, 0),
    H(199, ringbuf_submit_dynptr, 0), H(200, ringbuf_discard_dynptr, 0), H(201, dynptr_read, 0),
    H(202, dynptr_write, 0), H(203, dynptr_data, 0), H(208, ktime_get_tai_ns, 0),
};

const uint32_t bpfvm_helper_count = sizeof(bpfvm_helper_table) / sizeof(bpfvm_helper_table[0]);
