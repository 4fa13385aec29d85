// SPDX-License-Identifier: Apache-2.0
/*
 * The dynptr_slice benchmark written by hand: per run, a fresh view of the packet (what bpf_dynptr_from_skb
 * builds), 100 one-byte reads at offsets 0..99 each behind the bounds check a slice of a linear packet keeps
 * after pruning, their sum, and the atomic add of 100 to `hits`. The empty asm after each read keeps the reads
 * one by one, as the BPF program's does, so the compiler cannot fold them into a vector sum.
 *
 * It is the "by hand" reference for the JIT's pruned mode: compiled with the machine's C compiler at -O2 and
 * timed around its own repeat loop, as the JIT times its native repeat loop.
 */
#include <stdint.h>
#include <time.h>

#define SLICES 100

struct view {
	const uint8_t *data;
	uint32_t size;
};

static inline const uint8_t *slice(const struct view *v, uint32_t offset, uint32_t len)
{
	if (len > v->size || offset > v->size - len)
		return 0;
	return v->data + offset;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* `repeat` runs over `data`; returns the nanoseconds they took, leaves the last run's sum in *sum. */
uint64_t bpfvm_by_hand_slices(const uint8_t *data, uint32_t size, uint32_t repeat, uint64_t *hits, uint32_t *sum)
{
	uint64_t start = now_ns();
	uint32_t total = 0;

	for (uint32_t run = 0; run < repeat; run++) {
		struct view v = { data, size };

		__asm__ volatile("" : "+r"(v.data), "+r"(v.size)); /* a new dynptr per run, as the program makes */
		total = 0;
		for (uint32_t offset = 0; offset < SLICES; offset++) {
			const uint8_t *byte = slice(&v, offset, 1);

			total += byte ? *byte : 0x100;
			__asm__ volatile("" : "+r"(total));
		}
		__atomic_fetch_add(hits, SLICES, __ATOMIC_SEQ_CST);
	}
	*sum = total;
	return now_ns() - start;
}
