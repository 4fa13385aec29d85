// SPDX-License-Identifier: Apache-2.0
/*
 * The eight test kfuncs of the inlinable-kfuncs RFC (patch 10/11) as a bpfvm kfunc library: bodies that are
 * nothing but BPF asm, so that the tests control the exact code of both the caller and the callee. They are
 * ordinary (not naked) functions so that their BTF keeps parameter names such as p__sz; KFUNC_BODY ends
 * each one where its asm does.
 *   kfunc1: branches on a scalar parameter     kfunc5: switches on a dynptr's type
 *   kfunc2: tests a pointer parameter for NULL kfunc6: uses the stack and r6
 *   kfunc3: dereferences a memory parameter    kfunc7: stores r10 (r10 escapes: not inlinable)
 *   kfunc4: clobbers r1, r2, r6, r7            kfunc8: copies r10 (r10 escapes: not inlinable)
 * Rebuild: clang-19 -O2 -g -target bpf -mcpu=v3 -c test_inlinable_kfuncs.c -o test_inlinable_kfuncs.o
 */
#define DYNPTR_TYPE_SHIFT 28
#define DYNPTR_RDONLY_BIT (1u << 31)
#define DYNPTR_TYPE_SKB 3
#define DYNPTR_TYPE_XDP 4

struct bpf_dynptr;

#define KFUNC_BODY(...) do { asm volatile(__VA_ARGS__); __builtin_unreachable(); } while (0)

int bpf_test_inline_kfunc1(int p)
{
	KFUNC_BODY("r0 = 42;"
		     "if r1 != 1 goto +1;"
		     "r0 = 11;"
		     "if r1 != 2 goto +1;"
		     "r0 = 22;"
		     "exit;");
}

int bpf_test_inline_kfunc2(int *p)
{
	KFUNC_BODY("r0 = 42;"
		     "if r1 != 0 goto +1;"
		     "r0 = 24;"
		     "exit;");
}

int bpf_test_inline_kfunc3(void *p, unsigned long p__sz)
{
	KFUNC_BODY("r1 = *(u64 *)(r1 + 0);"
		     "*(u64 *)(r1 + 0) = 42;"
		     "r0 = 0;"
		     "exit;");
}

int bpf_test_inline_kfunc4(void)
{
	KFUNC_BODY("r0 = 0;"
		     "r1 = 1;"
		     "r2 = 2;"
		     "r6 = 3;"
		     "r7 = 4;"
		     "exit;");
}

int bpf_test_inline_kfunc5(struct bpf_dynptr *d)
{
	KFUNC_BODY("   r1 = *(u32 *)(r1 + 8);"
		     "   r1 &= %[not_rdonly];"
		     "   r1 >>= %[type_shift];"
		     "   if r1 != %[skb] goto 1f;"
		     "   r0 = 1;"
		     "   goto 3f;"
		     "1: if r1 != %[xdp] goto 2f;"
		     "   r0 = 2;"
		     "   goto 3f;"
		     "2: r0 = 3;"
		     "3: exit;"
		     :: [skb]"i"(DYNPTR_TYPE_SKB), [xdp]"i"(DYNPTR_TYPE_XDP),
		        [not_rdonly]"i"(~DYNPTR_RDONLY_BIT), [type_shift]"i"(DYNPTR_TYPE_SHIFT));
}

int bpf_test_inline_kfunc6(void)
{
	KFUNC_BODY("r0 = 0;"
		     "*(u64 *)(r10 - 8) = r0;"
		     "r0 = *(u64 *)(r10 - 8);"
		     "r6 = 1;"
		     "exit;");
}

int bpf_test_inline_kfunc7(void)
{
	KFUNC_BODY("r0 = 0;"
		     "*(u64 *)(r10 - 8) = r10;"
		     "exit;");
}

int bpf_test_inline_kfunc8(void)
{
	KFUNC_BODY("r0 = 0;"
		     "r1 = r10;"
		     "exit;");
}
