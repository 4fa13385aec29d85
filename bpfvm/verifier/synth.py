"""Synthetic programs of a chosen size, for the verification-speed benchmark and the pruning tests.

`branchy_program(blocks)` strings together blocks of the shapes compiled code is made of: two-way diamonds on
fresh unknown values, bounds-checked stack indexing with a variable offset, spills and fills, and early-exit
checks. Each block's values are fresh, so the kernel's pruning keeps verification linear in the size; with
`early_exits` most branches are `if (...) return` checks, which keeps the verifier's queue of pending
branches short even for 100k instructions (the kernel refuses more than 8192 pending branches).
"""

from __future__ import annotations

import random

from ..asm import assemble
from ..program import Program


def branchy_program(blocks: int, *, seed: int = 1, early_exits: bool = True) -> Program:
    rnd = random.Random(seed)
    lines = ["r6 = r1", "r8 = 0", "r9 = 0", "*(u64 *)(r10 - 8) = r8"]
    diamonds = 0
    for b in range(blocks):
        k = rnd.randrange(5)
        if k == 0 and (not early_exits or diamonds < 4000):
            diamonds += 1
            lines += ["call bpf_get_prandom_u32", "r7 = r0", f"if r7 > {rnd.randrange(1000)} goto L{b}",
                      "r8 += 1", f"goto M{b}", f"L{b}: r8 += 2", f"M{b}: r9 ^= r8"]
        elif k == 1:
            lines += ["call bpf_get_prandom_u32", "r1 = r0", "r1 &= 0xff", f"if r1 < {rnd.randrange(255)} goto L{b}",
                      "r9 += r1", f"L{b}: *(u64 *)(r10 - 16) = r9"]
        elif k == 2:
            lines += ["r2 = *(u64 *)(r10 - 8)", "r2 += 3", "*(u64 *)(r10 - 8) = r2", "r3 = r9", "r3 <<= 2",
                      "r9 -= r3"]
        elif k == 3:
            lines += ["call bpf_get_prandom_u32", "r1 = r0", "r1 &= 7", "r2 = r10", "r2 += -64", "r2 += r1",
                      "r3 = *(u8 *)(r2 + 0)", "r9 |= r3"]
        else:
            lines += ["call bpf_get_prandom_u32", f"if r0 != {rnd.randrange(1 << 20)} goto L{b}", "r0 = 1",
                      "exit", f"L{b}: r9 += r0"]
    lines += ["r0 = 0", "exit"]
    return assemble("\n".join(lines))
