"""bpf_loop() calls become loops in BPF (the kernel's optimize_bpf_loop, run right after verification).

Where the verifier saw flags == 0 and one callback on every path to a `call bpf_loop` (fact
`bpf_loop_callback`), the call is replaced by a counted loop that calls the callback as a bpf-to-bpf call:

    if r1 <= BPF_MAX_LOOPS goto +2        ; too many iterations: -E2BIG, as the helper
    r0 = -E2BIG                           ; (the kernel has w0: see below)
    goto <end>
    spill r6, r7, r8 below the subprogram's verified stack
    r6 = r1 ; w7 = 0 ; r8 = r3           ; limit, counter, callback context
  head:
    if r7 >= r6 goto +5
    r1 = r7 ; r2 = r8
    call <callback>
    r7 += 1
    if r0 == 0 goto head
    r0 = r7                               ; iterations run
    fill r6, r7, r8
  end:

So neither engine goes through the helper (and its trip back into the program per iteration): the JIT
compiles the loop and the call natively. The xlated program matches what the kernel shows for the same
object but for one instruction: the kernel's sequence sets `w0 = -E2BIG`, which leaves the upper half of r0
zero, where the helper returns the long -E2BIG, all ones up there. A program that looks at those bits sees a
different value once the kernel inlines the call (found by the campaign's generator); bpfvm's rewrite keeps
the helper's value, so that it changes nothing a program can observe. The subprogram's stack grows by 24 bytes (plus alignment); a site whose subprogram would then pass
the 512-byte frame keeps its helper call.
"""

from __future__ import annotations

from .. import isa
from ..helper_ids import helper_id
from ..interp import FRAME_SIZE
from ..isa import Insn
from ..patcher import replace
from ..program import Program

BPF_MAX_LOOPS = 8 * 1024 * 1024
E2BIG = 7
FACT = "bpf_loop_callback"
_LOOP_ID = helper_id("bpf_loop")
_LIMIT, _COUNTER, _CTX = 6, 7, 8  # the registers the loop keeps across the callback call (callee-saved)
_CALL_AT = 12  # index of the callback call in the sequence below


def _sequence(base: int) -> list[Insn]:
    """The loop for one call site; `base` is the lowest of its three spill slots (r10-relative). The
    callback call's offset is filled in once the site's final position is known."""
    spills = [Insn(isa.STX | isa.MEM | isa.DW, isa.FRAME_POINTER, r, base + 8 * k)
              for k, r in enumerate((_LIMIT, _COUNTER, _CTX))]
    fills = [Insn(isa.LDX | isa.MEM | isa.DW, r, isa.FRAME_POINTER, base + 8 * k)
             for k, r in enumerate((_LIMIT, _COUNTER, _CTX))]
    head = [
        Insn(isa.JMP | isa.JLE | isa.K, 1, 0, 2, BPF_MAX_LOOPS),
        Insn(isa.ALU64 | isa.MOV | isa.K, 0, 0, 0, -E2BIG),  # the helper's long, not the kernel's w0
    ]
    body = spills + [
        Insn(isa.ALU64 | isa.MOV | isa.X, _LIMIT, 1, 0, 0),
        Insn(isa.ALU | isa.MOV | isa.K, _COUNTER, 0, 0, 0),
        Insn(isa.ALU64 | isa.MOV | isa.X, _CTX, 3, 0, 0),
        Insn(isa.JMP | isa.JGE | isa.X, _COUNTER, _LIMIT, 5, 0),
        Insn(isa.ALU64 | isa.MOV | isa.X, 1, _COUNTER, 0, 0),
        Insn(isa.ALU64 | isa.MOV | isa.X, 2, _CTX, 0, 0),
        Insn(isa.OP_CALL, 0, isa.PSEUDO_CALL, 0, 0),
        Insn(isa.ALU64 | isa.ADD | isa.K, _COUNTER, 0, 0, 1),
        Insn(isa.JMP | isa.JEQ | isa.K, 0, 0, -6, 0),
        Insn(isa.ALU64 | isa.MOV | isa.X, 0, _COUNTER, 0, 0),
    ] + fills
    return head + [Insn(isa.OP_JA, 0, 0, len(body), 0)] + body


def inline_bpf_loops(program: Program, stack_depth: dict[int, int]) -> dict[int, int]:
    """Rewrite every inlinable bpf_loop call of `program` (facts already in `program.aux`; `stack_depth`
    by subprogram start, as verified). Returns the extra stack bytes per subprogram, by its index in
    `program.subprog_starts()` order."""
    starts = program.subprog_starts()
    sites = sorted(i for i, facts in program.aux.items()
                   if facts.get(FACT) is not None and program.insns[i].is_helper_call()
                   and program.insns[i].imm == _LOOP_ID)
    if not sites:
        return {}
    extra: dict[int, int] = {}
    plan: list[tuple[int, int, int]] = []  # (site, callback start, spill base)
    for site in sites:
        sub = max(k for k, s in enumerate(starts) if s <= site)
        depth = stack_depth.get(starts[sub], 0)
        grow = 3 * 8 + (-depth % 8)
        if depth + grow > FRAME_SIZE:
            continue
        extra[sub] = grow
        plan.append((site, program.aux[site][FACT], -(depth + grow)))
    length = len(_sequence(0))
    done: list[int] = []  # sites already rewritten (all after the current one)
    for site, callback, base in reversed(plan):
        new = _sequence(base)
        callback_now = callback + (length - 1) * sum(1 for s in done if s < callback)
        if callback_now > site:
            callback_now += length - 1
        call_at = site + _CALL_AT
        new[_CALL_AT] = new[_CALL_AT]._replace(imm=callback_now - call_at - 1)
        seen = program.aux.get(site, {}).get("seen", True)
        replace(program, site, 1, new, aux=[{"seen": seen, "bpf_loop_inlined": True} for _ in new])
        done.append(site)
    return extra
