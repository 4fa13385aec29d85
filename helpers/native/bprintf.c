/* printf for bpf_trace_printk, bpf_trace_vprintk and bpf_snprintf, with the kernel's rules.
 *
 * Validation follows bpf_bprintf_prepare(): the format must be NUL-terminated within its size, printable
 * ASCII, and use only %d %i %u %x %X (with l/ll), %c, %s, %p[KxsSB], %pI4/%pi4/%pI6/%pi6, %pks/%pus and %%,
 * with optional [0 +-] flags and a width; at most num_args conversions; arguments fit a 512-byte budget.
 * Output follows the kernel's vsnprintf for that subset. Strings and IP addresses are read from program
 * memory through the region table; an unreadable one prints as empty (strings) or zeros (addresses), as
 * the kernel's nofault copies do. Plain %p prints the raw value, where the kernel prints a hashed one.
 */
#include <stdio.h>

#include "bprintf.h"

#define BIN_ARGS_MAX 512u

struct out {
    char *buf;
    uint64_t size, len;                /* len counts every character, written or not */
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void puts_n(struct out *o, const char *s, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        put(o, s[i]);
}

struct spec {
    int left, zero, plus, space;
    uint32_t width;
};

static void pad(struct out *o, uint64_t n, char c)
{
    while (n--)
        put(o, c);
}

static void put_field(struct out *o, const struct spec *sp, const char *s, uint64_t n)
{
    uint64_t fill = sp->width > n ? sp->width - n : 0;
    if (!sp->left)
        pad(o, fill, ' ');
    puts_n(o, s, n);
    if (sp->left)
        pad(o, fill, ' ');
}

static void put_number(struct out *o, const struct spec *sp, uint64_t v, int is_signed, int bits, int base,
                       int upper)
{
    char digits[32], sign = 0;
    int n = 0;
    if (bits == 32)
        v = is_signed ? (uint64_t)(int64_t)(int32_t)v : (uint32_t)v;
    if (is_signed && (int64_t)v < 0) {
        sign = '-';
        v = (uint64_t)-(int64_t)v;
    } else if (is_signed && sp->plus) {
        sign = '+';
    } else if (is_signed && sp->space) {
        sign = ' ';
    }
    const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        digits[n++] = set[v % (uint64_t)base];
        v /= (uint64_t)base;
    } while (v);
    uint64_t len = (uint64_t)n + (sign ? 1 : 0);
    uint64_t fill = sp->width > len ? sp->width - len : 0;
    if (!sp->left && !sp->zero)
        pad(o, fill, ' ');
    if (sign)
        put(o, sign);
    if (!sp->left && sp->zero)
        pad(o, fill, '0');
    while (n)
        put(o, digits[--n]);
    if (sp->left)
        pad(o, fill, ' ');
}

/* Copy a NUL-terminated string from program memory into dst (at most cap bytes with the NUL); its length with
 * the NUL, or -EFAULT when addr is not readable. */
static int64_t copy_string(const struct bpfvm_env *env, uint64_t addr, char *dst, uint64_t cap)
{
    uint64_t avail = bpfvm_mem_avail(env, addr, 0);
    if (!avail || !cap)
        return -EFAULT;
    const char *src = BPFVM_PTR(addr);
    uint64_t n = 0;
    while (n + 1 < cap && n < avail && src[n])
        n++;
    memcpy(dst, src, n);
    dst[n] = 0;
    return (int64_t)n + 1;
}

static int is_print(char c) { return c >= 0x20 && c < 0x7f; }
static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_punct(char c) { return is_print(c) && c != ' ' && !((c >= '0' && c <= '9') ||
                                     (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')); }

static void format_ip(char *dst, uint64_t cap, const uint8_t *ip, char kind, char ver)
{
    if (ver == '4') {
        snprintf(dst, cap, kind == 'i' ? "%03u.%03u.%03u.%03u" : "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        return;
    }
    uint64_t n = 0;
    for (int i = 0; i < 16; i += 2) {
        if (kind == 'I' && i)
            n += (uint64_t)snprintf(dst + n, cap - n, ":");
        n += (uint64_t)snprintf(dst + n, cap - n, "%02x%02x", ip[i], ip[i + 1]);
    }
}

int64_t bpfvm_bprintf(struct bpfvm_env *env, const char *fmt, uint64_t fmt_size, const uint64_t *args,
                      uint32_t num_args, char *out_buf, uint64_t out_size)
{
    const char *end = memchr(fmt, 0, fmt_size);
    if (!end)
        return -EINVAL;
    uint64_t n = (uint64_t)(end - fmt), used = 0;
    uint32_t spec_i = 0;
    struct out o = {out_buf, out_size, 0};
    char strbuf[BIN_ARGS_MAX + 1];

    /* first pass: the kernel's validation, so nothing is printed for a format it refuses */
    for (int pass = 0; pass < 2; pass++) {
        spec_i = 0;
        used = 0;
        o.len = 0;
        for (uint64_t i = 0; i < n; i++) {
            char c = fmt[i];
            if ((!is_print(c) && !is_space(c)) || (unsigned char)c > 0x7f)
                return -EINVAL;
            if (c != '%') {
                if (pass)
                    put(&o, c);
                continue;
            }
            if (fmt[i + 1] == '%') {
                if (pass)
                    put(&o, '%');
                i++;
                continue;
            }
            if (spec_i >= num_args)
                return -EINVAL;
            struct spec sp = {0};
            i++;
            while (fmt[i] == '0' || fmt[i] == '+' || fmt[i] == '-' || fmt[i] == ' ') {
                sp.zero |= fmt[i] == '0';
                sp.plus |= fmt[i] == '+';
                sp.left |= fmt[i] == '-';
                sp.space |= fmt[i] == ' ';
                i++;
            }
            if (fmt[i] >= '1' && fmt[i] <= '9') {
                while (fmt[i] >= '0' && fmt[i] <= '9') {
                    sp.width = sp.width * 10 + (uint32_t)(fmt[i] - '0');
                    if (sp.width > 4096)
                        sp.width = 4096;
                    i++;
                }
            }
            uint64_t arg = args ? args[spec_i] : 0;
            if (fmt[i] == 'p') {
                char next = fmt[i + 1];
                if ((next == 'k' || next == 'u') && fmt[i + 2] == 's') {
                    i += 2;
                    goto string;
                }
                if (next == 0 || is_space(next) || is_punct(next) || next == 'K' || next == 'x' || next == 's' ||
                    next == 'S') {
                    if (next == 'K' || next == 'x' || next == 's' || next == 'S')
                        i++;
                    used = ((used + 3) & ~3ull) + 8;
                    if (used > BIN_ARGS_MAX)
                        return -ENOSPC;
                    if (pass) {
                        char hex[24];
                        int len = (next == 's' || next == 'S')
                                      ? snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)arg)
                                      : snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)arg);
                        put_field(&o, &sp, hex, (uint64_t)len);
                    }
                    spec_i++;
                    continue;
                }
                if (next == 'B') {        /* a backtrace symbol: no symbols here, so the raw address */
                    char hex[24];
                    int len = snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)arg);
                    used += (uint64_t)len + 1;
                    if (pass)
                        put_field(&o, &sp, hex, (uint64_t)len);
                    i++;
                    spec_i++;
                    continue;
                }
                if ((next != 'i' && next != 'I') || (fmt[i + 2] != '4' && fmt[i + 2] != '6'))
                    return -EINVAL;
                i += 2;
                uint64_t ipsize = fmt[i] == '4' ? 4 : 16;
                if (BIN_ARGS_MAX - (used < BIN_ARGS_MAX ? used : BIN_ARGS_MAX) < ipsize)
                    return -ENOSPC;
                uint8_t ip[16] = {0};
                const void *src = bpfvm_mem(env, arg, ipsize, 0);
                if (src)
                    memcpy(ip, src, ipsize);
                char text[48];
                format_ip(text, sizeof(text), ip, next, fmt[i]);
                used += strlen(text) + 1;
                if (pass)
                    put_field(&o, &sp, text, strlen(text));
                spec_i++;
                continue;
            } else if (fmt[i] == 's') {
            string:
                if (fmt[i + 1] != 0 && !is_space(fmt[i + 1]) && !is_punct(fmt[i + 1]))
                    return -EINVAL;
                if (used >= BIN_ARGS_MAX)
                    return -ENOSPC;
                int64_t got = copy_string(env, arg, strbuf, BIN_ARGS_MAX - used);
                if (got < 0) {
                    strbuf[0] = 0;
                    got = 1;
                }
                used += (uint64_t)got;
                if (pass)
                    put_field(&o, &sp, strbuf, (uint64_t)got - 1);
                spec_i++;
                continue;
            } else if (fmt[i] == 'c') {
                if (used >= BIN_ARGS_MAX)
                    return -ENOSPC;
                used++;
                char ch = (char)arg;
                if (pass)
                    put_field(&o, &sp, &ch, 1);
                spec_i++;
                continue;
            }
            int bits = 32;
            if (fmt[i] == 'l') {
                bits = 64;
                i++;
            }
            if (fmt[i] == 'l')
                i++;
            char conv = fmt[i];
            if (conv != 'i' && conv != 'd' && conv != 'u' && conv != 'x' && conv != 'X')
                return -EINVAL;
            used = ((used + 3) & ~3ull) + (uint64_t)bits / 8;
            if (used > BIN_ARGS_MAX)
                return -ENOSPC;
            if (pass)
                put_number(&o, &sp, arg, conv == 'd' || conv == 'i', bits, conv == 'x' || conv == 'X' ? 16 : 10,
                           conv == 'X');
            spec_i++;
        }
    }
    if (out_size)
        out_buf[o.len < out_size ? o.len : out_size - 1] = 0;
    return (int64_t)o.len;
}
