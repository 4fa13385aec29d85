"""The running kernel as the verifier's oracle: every hand-written case of test_verifier_cases.py is loaded with
bpf(BPF_PROG_LOAD) (as root, so with the privileged rules bpfvm applies by default); bpfvm must accept exactly
what the kernel accepts, and when both reject, the kernel's log must contain bpfvm's reason (ids aside).
Also random programs from a small generator (differential testing), and processed-instruction counts that
show pruning as effective as the kernel's."""

from __future__ import annotations

import random
import re

import pytest

from bpfvm.asm import assemble
from bpfvm.errors import VerifierError
from bpfvm.verifier import verify
from bpfvm.verifier.oracle import kernel_verify, oracle_unavailable_reason
from test_verifier_cases import CASES, Case, run_case

pytestmark = pytest.mark.kernel

_REASON = None


@pytest.fixture(scope="module", autouse=True)
def _oracle() -> None:
    global _REASON
    _REASON = oracle_unavailable_reason()
    if _REASON:
        pytest.skip(f"kernel oracle unavailable: {_REASON}")


def _pattern(reason: str) -> str:
    """bpfvm's reason as a regex over the kernel's log: reference and register ids may be numbered apart."""
    text = re.escape(reason)
    return re.sub(r"(id=|ref_obj_id=)\\?\d+", r"\1\\d+", text).replace(r"id=\d+", r"id=\d+")


KERNEL_CASES = [c for c in CASES if c.kernel]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[c.id for c in KERNEL_CASES])
def test_same_verdict_as_kernel(case: Case) -> None:
    prog = case.program()
    k = kernel_verify(prog, case.prog_type)
    try:
        run_case(case)
        ours, reason = True, ""
    except VerifierError as exc:
        ours, reason = False, exc.reason
    assert ours == k.accepted, f"bpfvm {'accepts' if ours else 'rejects: ' + reason}; kernel: {k.error_line}"
    if not ours:
        assert re.search(_pattern(reason), k.log), f"bpfvm: {reason!r}; kernel log ends: {k.error_line!r}"


def _stats(log: str) -> dict[str, int]:
    m = re.search(r"processed (\d+) insns \(limit \d+\) max_states_per_insn (\d+) total_states (\d+)", log)
    assert m, log[-500:]
    return {"processed": int(m.group(1)), "total_states": int(m.group(3))}


@pytest.mark.parametrize("blocks", [50, 400])
def test_processed_insns_match_kernel(blocks: int) -> None:
    """Pruning as the kernel's: on branchy straight-line code the processed counts agree exactly."""
    from bpfvm.verifier.synth import branchy_program

    prog = branchy_program(blocks, seed=blocks, early_exits=False)
    k = kernel_verify(prog, "socket_filter", log_size=1 << 24)
    assert k.accepted, k.error_line
    ours = verify(prog)
    assert ours.stats.processed == _stats(k.log)["processed"]


def test_loop_processed_close_to_kernel() -> None:
    src = ("r0 = 0; r1 = 0; l: r0 += r1; call bpf_get_prandom_u32; if r0 > 7 goto +1; r6 = r0;"
           "r1 = r6; r1 += 1; r6 = r1; if r6 < 300 goto l; r0 = 0; exit")
    prog = assemble(src.replace("r1 = r6; r1 += 1; r6 = r1", "r6 += 1; r1 = r6"))
    k = kernel_verify(prog, "socket_filter", log_size=1 << 24)
    try:
        ours = verify(prog).stats.processed
    except VerifierError as exc:
        assert not k.accepted, str(exc)
        return
    assert k.accepted
    theirs = _stats(k.log)["processed"]
    assert 0.5 * theirs <= ours <= 2 * theirs


# --- differential testing ------------------------------------------------------------------------------------

def _random_program(rnd: random.Random) -> str:
    """Small programs over a few registers, the stack, a map value and the packet: mostly safe, sometimes not."""
    lines = [
        "r6 = r1",
        "r8 = *(u32 *)(r6 + 76)",
        "r9 = *(u32 *)(r6 + 80)",
        "call bpf_get_prandom_u32",
        "r7 = r0",
        "r1 = 0",
        "*(u32 *)(r10 - 4) = r1",
        "r2 = r10",
        "r2 += -4",
        "r1 = map[big]",
        "call bpf_map_lookup_elem",
        "if r0 == 0 goto out",
        "r5 = r0",
    ]
    regs = ["r1", "r2", "r3", "r4", "r7"]
    for r in ("r1", "r2", "r3", "r4"):
        lines.append(f"{r} = {rnd.randrange(-4, 70)}")
    n = rnd.randrange(4, 14)
    for i in range(n):
        k = rnd.randrange(10)
        a, b = rnd.choice(regs), rnd.choice(regs)
        if k < 3:
            op = rnd.choice(["+=", "-=", "&=", "|=", "^=", "*=", ">>=", "<<=", "s>>="])
            if op in (">>=", "<<=", "s>>="):
                lines.append(f"{a} {op} {rnd.randrange(0, 8)}")
            elif rnd.random() < 0.5:
                lines.append(f"{a} {op} {rnd.randrange(-70, 70)}")
            else:
                lines.append(f"{a} {op} {b}")
        elif k < 4:
            w = rnd.choice(["w", "r"])
            lines.append(f"{w}{a[1:]} = {w}{b[1:]}")
        elif k < 6:
            op = rnd.choice([">", ">=", "<", "<=", "s>", "s<", "==", "!=", "&"])
            if rnd.random() < 0.6:
                lines.append(f"if {a} {op} {rnd.randrange(-4, 70)} goto L{i}")
            else:
                lines.append(f"if {a} {op} {b} goto L{i}")
            lines.append(f"{a} = {rnd.randrange(0, 64)}")
            lines.append(f"L{i}: {b} &= {rnd.choice([7, 15, 63, 255])}")
        elif k < 7:
            lines.append(f"*(u64 *)(r10 - 16) = {a}")
            lines.append(f"{b} = *(u64 *)(r10 - 16)")
        elif k < 8:
            size = rnd.choice(["u8", "u16", "u32", "u64"])
            lines.append(f"r0 = r5")
            lines.append(f"r0 += {a}")
            lines.append(f"{b} = *({size} *)(r0 + {rnd.randrange(0, 8)})")
        elif k < 9:
            lines.append("r0 = r8")
            lines.append(f"r0 += {rnd.randrange(0, 40)}")
            lines.append(f"if r0 > r9 goto P{i}")
            lines.append(f"{b} = *(u8 *)(r8 + {rnd.randrange(0, 40)})")
            lines.append(f"P{i}: {a} |= 1")
        else:
            lines.append(f"{a} = {rnd.choice(['r8', 'r5', 'r10'])}")
            lines.append(f"{a} -= {rnd.choice(['r8', 'r5', 'r10'])}")
    lines += ["out: r0 = 0", "exit"]
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(150))
def test_random_programs_match_kernel(seed: int) -> None:
    from test_verifier_cases import MAPS

    rnd = random.Random(seed)
    src = _random_program(rnd)
    prog = assemble(src)
    prog.prog_type = "sched_cls"
    prog.maps = [MAPS["big"]]
    k = kernel_verify(prog, "sched_cls")
    try:
        verify(prog)
        ours, reason = True, ""
    except VerifierError as exc:
        ours, reason = False, str(exc)
    # Soundness: never accept what the kernel rejects.
    assert not (ours and not k.accepted), f"bpfvm accepts; kernel: {k.error_line}\n{src}"
    assert ours == k.accepted, f"bpfvm rejects ({reason}); kernel accepts\n{src}"


def _random_program2(rnd: random.Random) -> str:
    """Loops, subprograms taking stack pointers, spilled pointers, 32-bit ops and jumps, divisions."""
    L = ["r6 = r1", "r8 = *(u32 *)(r6 + 76)", "r9 = *(u32 *)(r6 + 80)",
         "r1 = 0", "*(u32 *)(r10 - 4) = r1", "r2 = r10", "r2 += -4", "r1 = map[big]", "call bpf_map_lookup_elem",
         "if r0 == 0 goto out", "r7 = r0", "call bpf_get_prandom_u32", "r5 = r0"]
    regs = ["r1", "r2", "r3", "r4", "r5"]
    for r in ("r1", "r2", "r3", "r4"):
        L.append(f"{r} = {rnd.randrange(-4, 70)}")
    subs = []
    for i in range(rnd.randrange(3, 12)):
        k = rnd.randrange(12)
        a, b = rnd.choice(regs), rnd.choice(regs)
        w = rnd.choice(["r", "w"])
        if k == 0:
            op = rnd.choice(["+=", "-=", "&=", "|=", "^=", "*=", "/=", "%="])
            L.append(f"{w}{a[1:]} {op} {w}{b[1:]}" if rnd.random() < .5 else f"{w}{a[1:]} {op} {rnd.randrange(1, 70)}")
        elif k == 1:
            L.append(f"{w}{a[1:]} {rnd.choice(['>>=', '<<=', 's>>='])} {rnd.randrange(0, 32)}")
        elif k == 2:
            op = rnd.choice([">", ">=", "<", "<=", "s>", "s<", "s>=", "s<=", "==", "!=", "&"])
            rhs = f"{w}{b[1:]}" if rnd.random() < .4 else str(rnd.randrange(-4, 70))
            L += [f"if {w}{a[1:]} {op} {rhs} goto L{i}", f"{a} = {rnd.randrange(0, 64)}", f"L{i}: {b} &= {rnd.choice([7, 15, 63, 127])}"]
        elif k == 3:
            L += [f"*(u64 *)(r10 - 16) = {a}", f"*(u32 *)(r10 - 24) = {b}", f"{b} = *(u64 *)(r10 - 16)", f"{a} = *(u32 *)(r10 - 24)"]
        elif k == 4:
            size = rnd.choice(["u8", "u16", "u32", "u64"])
            L += ["r0 = r7", f"r0 += {a}", f"{b} = *({size} *)(r0 + {rnd.randrange(0, 8)})"]
        elif k == 5:
            L += ["r0 = r8", f"r0 += {rnd.randrange(0, 40)}", f"if r0 > r9 goto P{i}", f"{b} = *(u8 *)(r8 + {rnd.randrange(0, 40)})", f"P{i}: {a} |= 1"]
        elif k == 6:  # bounded loop
            n = rnd.randrange(1, 20)
            L += [f"r0 = 0", f"Q{i}: {a} += 1", "r0 += 1", f"if r0 < {n} goto Q{i}"]
        elif k == 7:  # subprog with stack pointer
            L += [f"*(u64 *)(r10 - 32) = {a}", "r1 = r10", "r1 += -32", f"r2 = {b}", f"call S{i}", f"{a} = *(u64 *)(r10 - 32)", f"{b} = r0"]
            subs += [f"S{i}: r0 = *(u64 *)(r1 + 0)", f"r0 &= {rnd.choice([3, 7, 255])}", f"if r2 > {rnd.randrange(0, 64)} goto +1", "r0 += r2", "*(u64 *)(r1 + 0) = r0", "exit"]
        elif k == 8:  # spill pointer, fill, use
            L += ["*(u64 *)(r10 - 40) = r7", "r0 = *(u64 *)(r10 - 40)", f"{a} &= 7", f"r0 += {a}", f"{b} = *(u8 *)(r0 + 0)"]
        elif k == 9:
            L += [f"{a} = -{a}"]
        elif k == 10:
            L += [f"{a} = (s8){b}" if rnd.random() < .5 else f"{a} = be16 {a}"]
        else:
            L += [f"r0 = r10", f"r0 += -64", f"{a} &= 31", f"r0 += {a}", f"{b} = *(u8 *)(r0 + {rnd.randrange(0, 40)})"]
    L += ["out: r0 = 0", "exit"] + subs
    return "\n".join(L)


@pytest.mark.parametrize("seed", range(100))
def test_random_programs_with_calls_and_loops_match_kernel(seed: int) -> None:
    from test_verifier_cases import MAPS

    src = _random_program2(random.Random(10_000 + seed))
    prog = assemble(src)
    prog.prog_type = "sched_cls"
    prog.maps = [MAPS["big"]]
    k = kernel_verify(prog, "sched_cls", log_size=1 << 22)
    try:
        verify(prog)
        ours, reason = True, ""
    except VerifierError as exc:
        ours, reason = False, str(exc)
    assert not (ours and not k.accepted), f"bpfvm accepts; kernel: {k.error_line}\n{src}"
    assert ours == k.accepted, f"bpfvm rejects ({reason}); kernel accepts\n{src}"
