"""Lowering of a `Program` to LLVM IR (text), with exactly the reference interpreter's semantics.

Each BPF subprogram becomes one LLVM function `i64 @bpf_<start>(ptr %st, r1..r5, r10, depth)`; registers are
allocas that LLVM promotes to SSA. Basic blocks are the interpreter's blocks (same leaders), so the
instruction count kept in the run state is the interpreter's `steps`, checked against the limit at each block
head as the interpreter does. Jumps resolve to blocks with the interpreter's dispatch rule (the last block
starting at or before the target, clamped to the function's first block), so even odd programs agree.

Loads and stores go through `jit.guards`; helpers and kfuncs are calls through a per-bind slot table (C
functions, or trampolines into Python); callx, LD_ABS and slow memory paths reach Python through the
services whose addresses the run state holds. Every call out is followed by a check of the state's error
word, and a set error makes each function return at once, so a fault unwinds the whole BPF call chain.

The IR is written as text: it is cheap to produce in Python and lets us attach the alias-scope metadata and
call-site attributes the optimiser needs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from bpfvm import isa
from bpfvm.errors import LoadError
from bpfvm.interp import CALLBACK_HELPER_IDS, FUNC_PTR_BASE, MAX_CALL_FRAMES, MAX_LOOPS
from bpfvm.isa import Insn
from bpfvm.program import Program

from . import guards as g
from . import native_inline as ni

M64 = isa.U64
M32 = isa.U32

_ICMP = {
    isa.JEQ: "eq", isa.JNE: "ne", isa.JGT: "ugt", isa.JGE: "uge", isa.JLT: "ult", isa.JLE: "ule",
    isa.JSGT: "sgt", isa.JSGE: "sge", isa.JSLT: "slt", isa.JSLE: "sle",
}
_BINOPS = {isa.ADD: "add", isa.SUB: "sub", isa.MUL: "mul", isa.OR: "or", isa.AND: "and", isa.XOR: "xor"}
_SHIFTS = {isa.LSH: "shl", isa.RSH: "lshr", isa.ARSH: "ashr"}
_ATOMIC_OPS = {isa.ATOMIC_ADD: g.A_ADD, isa.ATOMIC_OR: g.A_OR, isa.ATOMIC_AND: g.A_AND, isa.ATOMIC_XOR: g.A_XOR}


def lit(value: int, bits: int = 64) -> str:
    """An LLVM integer literal for the low `bits` bits of value (printed signed, as LLVM prefers)."""
    return str(isa.to_signed(value, bits))


# -- analysis ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuncPlan:
    start: int
    end: int
    blocks: tuple[int, ...]

    def block_for(self, target: int) -> int:
        """The block the interpreter's `if pc < N` dispatch tree reaches for `pc = target`."""
        k = bisect.bisect_right(self.blocks, target) - 1
        return self.blocks[max(k, 0)]


@dataclass
class Plan:
    """What lowering and binding need to know about a program; cheap to recompute (no LLVM involved)."""

    funcs: list[FuncPlan]
    leaders: set[int]
    slots: list[tuple[str, int | str]] = field(default_factory=list)  # ("helper", id) or ("kfunc", name)
    map_refs: list[tuple[int, int]] = field(default_factory=list)  # (map index, value offset or -1)
    proved: frozenset[int] = frozenset()

    @property
    def starts(self) -> list[int]:
        return [f.start for f in self.funcs]

    def slot(self, kind: str, key: int | str) -> int:
        return self.slots.index((kind, key))

    def map_ref(self, index: int, offset: int) -> int:
        return self.map_refs.index((index, offset))


def _reads_src_register(insn: Insn) -> bool:
    cls = insn.cls
    if cls in (isa.ALU, isa.ALU64, isa.JMP, isa.JMP32):
        return bool(insn.opcode & isa.X) and not (cls in (isa.ALU, isa.ALU64) and insn.opcode & 0xF0 == isa.END)
    if cls in (isa.LDX, isa.STX):
        return True
    return cls == isa.LD and insn.opcode != isa.OP_LDDW and isa.mem_mode(insn.opcode) != isa.ABS


def analyse(program: Program) -> Plan:
    """Check the program as the interpreter's translation does (same LoadErrors) and plan its lowering."""
    insns = program.insns
    if not insns:
        raise LoadError("program has no instructions")
    starts = program.subprog_starts()
    is_start = isa.instruction_starts(insns)
    for s in starts:
        if not is_start[s]:
            raise LoadError(f"insn {s}: call or function pointer targets the middle of lddw")
    leaders = isa.block_leaders(insns, starts)
    bounds = starts + [len(insns)]
    funcs = [
        FuncPlan(s, bounds[k + 1], tuple(sorted(b for b in leaders if s <= b < bounds[k + 1] and is_start[b])))
        for k, s in enumerate(starts)
    ]
    helpers: set[int] = set()
    kfuncs: set[str] = set()
    maps: set[tuple[int, int]] = set()
    n = len(insns)

    def target(i: int, off: int) -> None:
        t = i + 1 + off
        if not (0 <= t < n) or not is_start[t]:
            raise LoadError(f"insn {i}: jump out of range to insn {t}")

    i = 0
    while i < n:
        insn = insns[i]
        cls, op = insn.cls, insn.opcode & 0xF0
        if insn.dst > isa.MAX_REG or (_reads_src_register(insn) and insn.src > isa.MAX_REG):
            raise LoadError(f"insn {i}: invalid register r{max(insn.dst, insn.src)}")
        if isa.writes_frame_pointer(insn):
            raise LoadError(f"insn {i}: frame pointer is read only")
        if cls in (isa.ALU, isa.ALU64):
            if op not in isa.ALU_NAMES:
                raise LoadError(f"insn {i}: unknown opcode {insn.opcode:#04x}")
            if op == isa.END and insn.imm not in (16, 32, 64):
                raise LoadError(f"insn {i}: byte swap: invalid width imm={insn.imm}")
            if op == isa.MOV and insn.opcode & isa.X and not 0 <= insn.off <= 64:
                raise LoadError(f"insn {i}: movsx: invalid offset {insn.off}")
        elif cls in (isa.JMP, isa.JMP32):
            if insn.opcode == isa.OP_CALL:
                if insn.src == isa.PSEUDO_CALL:
                    target(i, insn.imm)
                elif insn.src == isa.PSEUDO_KFUNC_CALL:
                    if not 0 <= insn.imm < len(program.kfuncs):
                        raise LoadError(f"insn {i}: kfunc call #{insn.imm} names no kfunc of this program")
                    kfuncs.add(program.kfuncs[insn.imm])
                else:
                    if insn.imm < 0:
                        raise LoadError(f"insn {i}: invalid helper id {insn.imm}")
                    helpers.add(insn.imm)
            elif insn.opcode in (isa.OP_EXIT, isa.OP_CALLX):
                pass
            elif insn.opcode in (isa.OP_JA, isa.OP_JA32, isa.OP_MAY_GOTO) or (
                op in _ICMP or op == isa.JSET
            ) and not (insn.opcode & 0x07 == isa.JMP32 and op == isa.JCOND):
                target(i, insn.jump_offset())
            else:
                raise LoadError(f"insn {i}: unknown opcode {insn.opcode:#04x}")
        elif cls == isa.LDX:
            if isa.mem_mode(insn.opcode) == isa.MEMSX and isa.mem_size(insn.opcode) == isa.DW:
                raise LoadError(f"insn {i}: unknown opcode {insn.opcode:#04x}")
        elif cls == isa.STX and isa.mem_mode(insn.opcode) != isa.MEM:
            imm = insn.imm
            if imm not in (isa.ATOMIC_LOAD_ACQ, isa.ATOMIC_STORE_REL, isa.ATOMIC_CMPXCHG, isa.ATOMIC_XCHG) and (
                imm & ~isa.FETCH not in _ATOMIC_OPS
            ):
                raise LoadError(f"insn {i}: atomic: unknown operation imm={imm:#x}")
        elif insn.opcode == isa.OP_LDDW:
            if i + 1 >= n:
                raise LoadError(f"insn {i}: lddw is missing its second slot")
            src = insn.src
            if src == isa.PSEUDO_FUNC:
                target(i, insn.imm)
            elif src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX):
                maps.add((insn.imm & M32, -1))
            elif src in (isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX_VALUE):
                maps.add((insn.imm & M32, insns[i + 1].imm & M32))
            elif src not in (0, isa.PSEUDO_BTF_ID):
                raise LoadError(f"insn {i}: lddw with unknown pseudo source {src}")
        i += isa.insn_slots(insn)
    slots: list[tuple[str, int | str]] = [("helper", h) for h in sorted(helpers)]
    slots += [("kfunc", k) for k in sorted(kfuncs)]
    proved = frozenset(k for k, aux in program.aux.items() if isinstance(aux, dict) and aux.get("proved_safe")
                       and aux.get("mem_region") not in ("ctx", "mixed"))  # contexts are hooked regions
    return Plan(funcs, leaders, slots, sorted(maps), proved)


# -- one function's IR ---------------------------------------------------------------------------------------
class FunctionBuilder:
    """Accumulates the text of one LLVM function: fresh names, blocks, state access, faults."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._n = 0
        self.current = "entry"
        self._shared: dict[int, list[tuple[int, str]]] = {}  # fault code -> [(pc, predecessor block)]

    def tmp(self) -> str:
        self._n += 1
        return f"%t{self._n}"

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def start(self, label: str) -> None:
        self.lines.append(f"{label}:")
        self.current = label

    def _field(self, field_index: int) -> str:
        p = self.tmp()
        self.emit(f"{p} = getelementptr i64, ptr %st, i64 {field_index}")
        return p

    def sload(self, field_index: int) -> str:
        p, v = self._field(field_index), self.tmp()
        self.emit(f"{v} = load i64, ptr {p}, align 8, {g.VM}")
        return v

    def sstore(self, field_index: int, value: str) -> None:
        p = self._field(field_index)
        self.emit(f"store i64 {value}, ptr {p}, align 8, {g.VM}")

    def fault_if(self, cond: str, code: int, pc: int) -> None:
        """If `cond`, record fault `code` at `pc` and unwind; continues in a fresh block otherwise.

        All sites of one code share a fault block (the pc arrives through a phi), which keeps the IR, and
        so LLVM's compile time, small: every BPF block has an instruction-limit check.
        """
        ok = self.label()
        self._shared.setdefault(code, []).append((pc, self.current))
        self.emit(f"br i1 {cond}, label %F{code}, label %{ok}")
        self.start(ok)

    def shared_faults(self) -> None:
        for code, sites in self._shared.items():
            self.start(f"F{code}")
            pcs = ", ".join(f"[{pc}, %{pred}]" for pc, pred in sites)
            self.emit(f"%fpc{code} = phi i64 {pcs}")
            self.emit(f"call void @bpfvm_fault(ptr %st, i64 {code}, i64 %fpc{code}, i64 0)")
            self.emit("br label %unwind")

    def fault(self, code: int, pc: int, arg: str = "0") -> None:
        self.emit(f"call void @bpfvm_fault(ptr %st, i64 {code}, i64 {pc}, i64 {arg})")
        self.emit("br label %unwind")

    def call(self, text: str) -> None:
        """Emit a call out of this function, with the instruction count (kept in %STEPS) synced around it."""
        self.sstore(g.F_STEPS, self.steps())
        self.emit(text)
        self.emit(f"store i64 {self.sload(g.F_STEPS)}, ptr %STEPS")

    def steps(self) -> str:
        v = self.tmp()
        self.emit(f"{v} = load i64, ptr %STEPS")
        return v

    def ret(self, value: str) -> None:
        self.sstore(g.F_STEPS, self.steps())
        self.emit(f"ret i64 {value}")

    def unwind_if_error(self) -> str:
        """Return up the call chain if a callee recorded a fault; returns the label of the continuation."""
        e, bad, ok = self.sload(g.F_ERROR), self.tmp(), self.label()
        self.emit(f"{bad} = icmp ne i64 {e}, 0")
        self.emit(f"br i1 {bad}, label %unwind, label %{ok}")
        self.start(ok)
        return ok


class FunctionLowerer:
    """Lowers the blocks of one subprogram."""

    def __init__(self, program: Program, plan: Plan, func: FuncPlan):
        self.insns = program.insns
        self.kfuncs = program.kfuncs
        self.plan = plan
        self.func = func
        self.b = FunctionBuilder()

    # registers
    def reg(self, r: int) -> str:
        v = self.b.tmp()
        self.b.emit(f"{v} = load i64, ptr %R{r}")
        return v

    def set(self, r: int, value: str) -> None:
        self.b.emit(f"store i64 {value}, ptr %R{r}")

    def op(self, text: str) -> str:
        v = self.b.tmp()
        self.b.emit(f"{v} = {text}")
        return v

    def args(self) -> str:
        return ", ".join(f"i64 {self.reg(r)}" for r in range(1, 6))

    def lower(self) -> str:
        b, f = self.b, self.func
        head = [f"define internal i64 @bpf_{f.start}(ptr %st, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5, "
                "i64 %a10, i64 %depth) {", "entry:"]
        for r in range(11):
            b.emit(f"%R{r} = alloca i64, align 8")
        # The instruction count lives in a local between calls (LLVM keeps it in a register); the limit
        # cannot change during a run.
        b.emit("%STEPS = alloca i64, align 8")
        b.emit(f"store i64 {b.sload(g.F_STEPS)}, ptr %STEPS")
        b.emit(f"%LIMIT = add i64 {b.sload(g.F_LIMIT)}, 0")
        for r in range(11):
            b.emit(f"store i64 {'%a' + str(r) if r in (1, 2, 3, 4, 5, 10) else '0'}, ptr %R{r}")
        b.emit(f"br label %B{f.start}")
        for start in f.blocks:
            self.block(start)
        b.shared_faults()
        b.start("unwind")
        b.ret("0")
        return "\n".join(head + b.lines + ["}", ""])

    def block(self, start: int) -> None:
        b, insns, leaders, end = self.b, self.insns, self.plan.leaders, self.func.end
        count = 0
        i = start
        while i < end:
            if i != start and i in leaders:
                break
            count += 1
            terminated = insns[i].cls in (isa.JMP, isa.JMP32) and (insns[i].opcode & 0xF0) not in (isa.CALL,)
            i += isa.insn_slots(insns[i])
            if terminated:
                break
        b.start(f"B{start}")
        new = self.op(f"add i64 {b.steps()}, {count}")
        b.emit(f"store i64 {new}, ptr %STEPS")
        b.fault_if(self.op(f"icmp ugt i64 {new}, %LIMIT"), g.E_LIMIT, start)
        i = start
        for _ in range(count):
            insn = insns[i]
            done = self.insn(i, insn)
            i += isa.insn_slots(insn)
            if done:
                return
        if i >= end:
            b.fault(g.E_FELL, i - 1)
        else:
            b.emit(f"br label %B{i}")

    def goto(self, target: int) -> str:
        return f"%B{self.func.block_for(target)}"

    # -- instructions -------------------------------------------------------------------------------------
    def insn(self, i: int, insn: Insn) -> bool:
        """Emit one instruction; True if control never falls through."""
        cls = insn.cls
        if cls in (isa.ALU, isa.ALU64):
            self.alu(insn)
            return False
        if cls in (isa.JMP, isa.JMP32):
            return self.jump(i, insn)
        if cls == isa.LDX:
            self.ldx(i, insn)
        elif cls in (isa.ST, isa.STX):
            self.store(i, insn)
        else:
            self.ld(i, insn)
        return False

    def alu(self, insn: Insn) -> None:
        op, is64, x = insn.opcode & 0xF0, insn.cls == isa.ALU64, insn.opcode & isa.X
        bits = 64 if is64 else 32
        ty = f"i{bits}"
        dst = insn.dst
        if op == isa.END:
            width = insn.imm
            d = self.reg(dst)
            t = d if width == 64 else self.op(f"trunc i64 {d} to i{width}")
            if is64 or insn.opcode & isa.TO_BE:
                t = self.op(f"call i{width} @llvm.bswap.i{width}(i{width} {t})")
            self.set(dst, t if width == 64 else self.op(f"zext i{width} {t} to i64"))
            return
        if op == isa.MOV:
            if x:
                s = self.reg(insn.src)
                if insn.off:
                    s = self.op(f"trunc i64 {s} to i{insn.off}") if insn.off < 64 else s
                    s = self.op(f"sext i{insn.off} {s} to i64") if insn.off < 64 else s
                if not is64:
                    s = self.op(f"zext i32 {self.op(f'trunc i64 {s} to i32')} to i64")
                self.set(dst, s)
            else:
                self.set(dst, lit(insn.imm & (M64 if is64 else M32)))
            return
        d = self.reg(dst)
        if not is64:
            d = self.op(f"trunc i64 {d} to i32")
        if x:
            s = self.reg(insn.src)
            if not is64:
                s = self.op(f"trunc i64 {s} to i32")
            const = None
        else:
            const = insn.imm & (M64 if is64 else M32)
            s = lit(const, bits)
        if op in _BINOPS:
            r = self.op(f"{_BINOPS[op]} {ty} {d}, {s}")
        elif op == isa.NEG:
            r = self.op(f"sub {ty} 0, {d}")
        elif op in _SHIFTS:
            amount = lit(const & (bits - 1), bits) if const is not None else self.op(f"and {ty} {s}, {bits - 1}")
            r = self.op(f"{_SHIFTS[op]} {ty} {d}, {amount}")
        else:  # DIV, MOD
            r = self.divmod(op, insn.off == 1, ty, bits, d, s)
        self.set(dst, r if is64 else self.op(f"zext i32 {r} to i64"))

    def divmod(self, op: int, signed: bool, ty: str, bits: int, a: str, b: str) -> str:
        """Division and modulo without LLVM's undefined cases: x/0 = 0, x%0 = x, INT_MIN/-1 = INT_MIN, %-1 = 0."""
        zero = self.op(f"icmp eq {ty} {b}, 0")
        bad = zero
        if signed:
            is_min = self.op(f"icmp eq {ty} {a}, {-(1 << (bits - 1))}")
            is_m1 = self.op(f"icmp eq {ty} {b}, -1")
            bad = self.op(f"or i1 {zero}, {self.op(f'and i1 {is_min}, {is_m1}')}")
        safe = self.op(f"select i1 {bad}, {ty} 1, {ty} {b}")
        if op == isa.DIV:
            q = self.op(f"{'sdiv' if signed else 'udiv'} {ty} {a}, {safe}")
            return self.op(f"select i1 {zero}, {ty} 0, {ty} {q}")
        r = self.op(f"{'srem' if signed else 'urem'} {ty} {a}, {safe}")
        return self.op(f"select i1 {zero}, {ty} {a}, {ty} {r}")

    def jump(self, i: int, insn: Insn) -> bool:
        b = self.b
        op = insn.opcode & 0xF0
        if insn.opcode == isa.OP_EXIT:
            b.ret(self.reg(0))
            return True
        if insn.opcode in (isa.OP_JA, isa.OP_JA32):
            b.emit(f"br label {self.goto(i + 1 + insn.jump_offset())}")
            return True
        if insn.opcode == isa.OP_CALL:
            self.call(i, insn)
            return False
        if insn.opcode == isa.OP_CALLX:
            self.depth_check(i)
            target = self.reg(insn.dst)
            r10, depth = self.callee_frame()
            args = self.args()
            r0 = b.tmp()
            b.call(f"{r0} = call i64 @bpfvm_callx(ptr %st, i64 {target}, {args}, i64 {r10}, i64 {depth}, i64 {i})")
            b.unwind_if_error()
            self.set(0, r0)
            return False
        taken, fall = self.goto(i + 1 + insn.off), self.goto(i + 1)
        if insn.opcode == isa.OP_MAY_GOTO:
            loops = b.sload(g.F_LOOPS)
            dec = b.label()
            b.emit(f"br i1 {self.op(f'icmp eq i64 {loops}, 0')}, label {taken}, label %{dec}")
            b.start(dec)
            b.sstore(g.F_LOOPS, self.op(f"sub i64 {loops}, 1"))
            b.emit(f"br label {fall}")
            return True
        is32 = insn.cls == isa.JMP32
        ty = "i32" if is32 else "i64"
        d = self.reg(insn.dst)
        if is32:
            d = self.op(f"trunc i64 {d} to i32")
        if insn.opcode & isa.X:
            s = self.reg(insn.src)
            if is32:
                s = self.op(f"trunc i64 {s} to i32")
        else:
            s = lit(insn.imm & (M32 if is32 else M64), 32 if is32 else 64)
        if op == isa.JSET:
            cond = self.op(f"icmp ne {ty} {self.op(f'and {ty} {d}, {s}')}, 0")
        else:
            cond = self.op(f"icmp {_ICMP[op]} {ty} {d}, {s}")
        b.emit(f"br i1 {cond}, label {taken}, label {fall}")
        return True

    def depth_check(self, pc: int) -> None:
        self.b.fault_if(self.op(f"icmp uge i64 %depth, {MAX_CALL_FRAMES - 1}"), g.E_DEPTH, pc)

    def callee_frame(self) -> tuple[str, str]:
        frame = self.b.sload(g.F_FRAME)
        return self.op(f"sub i64 {self.reg(10)}, {frame}"), self.op("add i64 %depth, 1")

    def call(self, i: int, insn: Insn) -> None:
        b = self.b
        if insn.src == isa.PSEUDO_CALL:
            self.depth_check(i)
            r10, depth = self.callee_frame()
            args = self.args()
            r0 = b.tmp()
            b.call(f"{r0} = call i64 @bpf_{i + 1 + insn.imm}(ptr %st, {args}, i64 {r10}, i64 {depth})")
            b.unwind_if_error()
            self.set(0, r0)
            return
        if insn.src == isa.PSEUDO_KFUNC_CALL:
            slot = self.plan.slot("kfunc", self.kfuncs[insn.imm])
        else:
            slot = self.plan.slot("helper", insn.imm)
            if insn.imm in CALLBACK_HELPER_IDS:
                b.sstore(g.F_CB_R10, self.reg(10))
                b.sstore(g.F_CB_DEPTH, "%depth")
        # Every helper is a native function in the slot table: a C helper, or a ctypes trampoline into the
        # Python callable. fn(env, r1..r5), then the helper's own fault word (if it has one), then ours.
        regs = [self.reg(r) for r in range(1, 6)]
        table = self.op(f"inttoptr i64 {b.sload(g.F_HELPERS)} to ptr")
        entry = self.op(f"getelementptr i64, ptr {table}, i64 {slot * ni.SLOT_FIELDS}")
        env_p = self.op(f"getelementptr i64, ptr {entry}, i64 1")
        env = self.op(f"inttoptr i64 {self.op(f'load i64, ptr {env_p}, align 8, {g.VM}')} to ptr")
        expanded = self.inline_native(insn, entry, env, regs)
        fn = self.op(f"inttoptr i64 {self.op(f'load i64, ptr {entry}, align 8, {g.VM}')} to ptr")
        fault_p = self.op(f"getelementptr i64, ptr {entry}, i64 2")
        fault_at = self.op(f"load i64, ptr {fault_p}, align 8, {g.VM}")
        r0 = b.tmp()
        b.call(f"{r0} = call i64 {fn}(ptr {env}, {', '.join('i64 ' + r for r in regs)})")
        has_word, failed, ok = b.label(), b.label(), b.label()
        b.emit(f"br i1 {self.op(f'icmp ne i64 {fault_at}, 0')}, label %{has_word}, label %{ok}")
        b.start(has_word)
        word = self.op(f"load i32, ptr {self.op(f'inttoptr i64 {fault_at} to ptr')}, align 4")
        b.emit(f"br i1 {self.op(f'icmp ne i32 {word}, 0')}, label %{failed}, label %{ok}")
        b.start(failed)
        b.fault(g.E_NATIVE, i, str(slot))
        b.start(ok)
        called = b.unwind_if_error()
        if expanded is None:
            self.set(0, r0)
            return
        inline_block, inline_r0, join = expanded
        b.emit(f"br label %{join}")
        b.start(join)
        self.set(0, self.op(f"phi i64 [{inline_r0}, %{inline_block}], [{r0}, %{called}]"))

    def inline_native(self, insn: Insn, entry: str, env: str, regs: list[str]) -> tuple[str, str, str] | None:
        """Expand a kernel-internal kfunc (`jit.native_inline`) when its slot is bound to the native library's
        function and the arguments are what the expansion covers; otherwise fall through to the call.
        Returns (the expansion's block, its r0, the join block it branches to) for the caller to start after
        the call, or None if nothing was emitted."""
        if insn.src != isa.PSEUDO_KFUNC_CALL or self.kfuncs[insn.imm] not in ni.INLINE_KFUNCS:
            return None
        layout = ni.native_layout()
        if layout is None:
            return None
        b = self.b
        tag_p = self.op(f"getelementptr i64, ptr {entry}, i64 3")
        tagged = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {tag_p}, align 8, {g.VM}')}, "
                         f"{ni.TAG_SKB_POINTER_IF_LINEAR}")
        check, inline, call = b.label(), b.label(), b.label()
        b.emit(f"br i1 {tagged}, label %{check}, label %{call}")
        b.start(check)
        applies, skb = ni.skb_of_run(self, layout, env, regs[0])
        b.emit(f"br i1 {applies}, label %{inline}, label %{call}")
        b.start(inline)
        r0 = ni.skb_pointer_if_linear(self, layout, skb, regs[1], regs[2])
        join = b.label()
        b.emit(f"br label %{join}")
        b.start(call)
        return inline, r0, join

    def service(self, field_index: int, args: list[str]) -> str:
        """Call a Python service (see `guards.SERVICES`) with the instruction count synced."""
        fn = self.op(f"inttoptr i64 {self.b.sload(field_index)} to ptr")
        r = self.b.tmp()
        self.b.call(f"{r} = call i64 {fn}({', '.join('i64 ' + a for a in args)})")
        return r

    # -- memory -------------------------------------------------------------------------------------------
    def _direct(self, i: int, base: int, off: int, size: int) -> bool:
        if i in self.plan.proved:
            return True
        return base == isa.FRAME_POINTER and -512 <= off and off + size <= 0  # r10 is read only

    def _addr(self, reg: int, off: int) -> str:
        base = self.reg(reg)
        return self.op(f"add i64 {base}, {lit(off)}") if off else base

    def ldx(self, i: int, insn: Insn) -> None:
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        signed = isa.mem_mode(insn.opcode) == isa.MEMSX
        addr = self._addr(insn.src, insn.off)
        direct = self._direct(i, insn.src, insn.off, size)
        self.set(insn.dst, g.emit_load(self.b, addr, size, signed, i, direct))

    def store(self, i: int, insn: Insn) -> None:
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        if insn.cls == isa.ST:
            addr = self._addr(insn.dst, insn.off)
            direct = isa.mem_mode(insn.opcode) == isa.MEM and self._direct(i, insn.dst, insn.off, size)
            g.emit_store(self.b, addr, size, lit(insn.imm & M64), i, direct)
            return
        if isa.mem_mode(insn.opcode) == isa.MEM:
            addr = self._addr(insn.dst, insn.off)
            direct = self._direct(i, insn.dst, insn.off, size)
            g.emit_store(self.b, addr, size, self.reg(insn.src), i, direct)
            return
        op = insn.imm
        proved = i in self.plan.proved
        if op == isa.ATOMIC_LOAD_ACQ:
            addr = self._addr(insn.src, insn.off)
            self.set(insn.dst, g.emit_load(self.b, addr, size, False, i, proved))
            return
        addr = self._addr(insn.dst, insn.off)
        if op == isa.ATOMIC_STORE_REL:
            g.emit_store(self.b, addr, size, self.reg(insn.src), i, proved)
            return
        if op == isa.ATOMIC_CMPXCHG:
            old = g.emit_atomic(self.b, addr, size, g.A_CMPXCHG, self.reg(insn.src), self.reg(0), i, proved)
            self.set(0, old)
            return
        code = g.A_XCHG if op == isa.ATOMIC_XCHG else _ATOMIC_OPS[op & ~isa.FETCH]
        old = g.emit_atomic(self.b, addr, size, code, self.reg(insn.src), "0", i, proved)
        if op & isa.FETCH:
            self.set(insn.src, old)

    def ld(self, i: int, insn: Insn) -> None:
        b = self.b
        if insn.opcode == isa.OP_LDDW:
            nxt = self.insns[i + 1]
            src = insn.src
            if src == 0:
                self.set(insn.dst, lit(isa.lddw_value(insn, nxt)))
            elif src == isa.PSEUDO_FUNC:
                self.set(insn.dst, lit(FUNC_PTR_BASE + (i + 1 + insn.imm) * 8))
            elif src == isa.PSEUDO_BTF_ID:
                b.fault(g.E_BTF, i)
                b.start(b.label())  # unreachable continuation keeps the block well-formed
            else:
                offset = -1 if src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX) else nxt.imm & M32
                k = self.plan.map_ref(insn.imm & M32, offset)
                table = self.op(f"inttoptr i64 {b.sload(g.F_CONSTS)} to ptr")
                p = self.op(f"getelementptr i64, ptr {table}, i64 {k}")
                self.set(insn.dst, self.op(f"load i64, ptr {p}, align 8, {g.VM}"))
            return
        # Legacy packet loads: r0 = ld_abs(r6, offset, size) through the runtime's callback.
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        if isa.mem_mode(insn.opcode) == isa.ABS:
            offset = lit(insn.imm & M64)
        else:
            offset = self.op(f"add i64 {self.reg(insn.src)}, {lit(insn.imm)}")
        r0 = self.service(g.F_SVC_LDABS, [self.reg(6), offset, str(size), str(i)])
        b.unwind_if_error()
        self.set(0, r0)


# -- the module ---------------------------------------------------------------------------------------------
def _callx_ir(starts: list[int]) -> str:
    cases = " ".join(f"i64 {s}, label %c{s}" for s in starts)
    params = "i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5, i64 %a10, i64 %d"
    args = "ptr %st, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5, i64 %a10, i64 %d"
    calls = "\n".join(f"c{s}:\n  %v{s} = call i64 @bpf_{s}({args}) #0\n  ret i64 %v{s}" for s in starts)
    svc = (
        f"  %f.p = getelementptr i64, ptr %st, i64 {g.F_SVC_CALLX}\n  %f.i = load i64, ptr %f.p, align 8, {g.VM}\n"
        "  %f = inttoptr i64 %f.i to ptr\n"
        "  %r = call i64 %f(i64 %t, i64 %a1, i64 %a2, i64 %a3, i64 %a4, i64 %a5, i64 %pc)\n  ret i64 %r"
    )
    return f"""
define i64 @bpfvm_callx(ptr %st, i64 %t, {params}, i64 %pc) noinline {{
entry:
  %isf = icmp uge i64 %t, {lit(FUNC_PTR_BASE)}
  br i1 %isf, label %fn, label %helper
fn:
  %o = sub i64 %t, {lit(FUNC_PTR_BASE)}
  %lo = and i64 %o, 7
  %al = icmp eq i64 %lo, 0
  %idx = lshr i64 %o, 3
  br i1 %al, label %sw, label %bad
sw:
  switch i64 %idx, label %bad [ {cases} ]
{calls}
bad:
  call void @bpfvm_fault(ptr %st, i64 {g.E_CALLX}, i64 %pc, i64 %t)
  ret i64 0
helper:
{svc}
}}
"""


def _entry_ir() -> str:
    se = f"%se.p = getelementptr i64, ptr %st, i64 {g.F_STACK_END}\n  %se = load i64, ptr %se.p, align 8, {g.VM}"
    return f"""
define i64 @bpfvm_run_repeat(ptr %st, i64 %r1, i64 %n, ptr %out) {{
entry:
  %ts0 = alloca {{ i64, i64 }}, align 8
  %ts1 = alloca {{ i64, i64 }}, align 8
  %c0 = call i32 @clock_gettime(i32 1, ptr %ts0)
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %next]
  %r = phi i64 [0, %entry], [%v, %next]
  %more = icmp ult i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %steps.p = getelementptr i64, ptr %st, i64 {g.F_STEPS}
  store i64 0, ptr %steps.p, align 8, {g.VM}
  %loops.p = getelementptr i64, ptr %st, i64 {g.F_LOOPS}
  store i64 {MAX_LOOPS}, ptr %loops.p, align 8, {g.VM}
  {se}
  %v = call i64 @bpf_0(ptr %st, i64 %r1, i64 0, i64 0, i64 0, i64 0, i64 %se, i64 0) #0
  %e.p = getelementptr i64, ptr %st, i64 {g.F_ERROR}
  %e = load i64, ptr %e.p, align 8, {g.VM}
  %bad = icmp ne i64 %e, 0
  br i1 %bad, label %done, label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
done:
  %rr = phi i64 [%r, %loop], [%v, %body]
  %c1 = call i32 @clock_gettime(i32 1, ptr %ts1)
  %s0.p = getelementptr {{ i64, i64 }}, ptr %ts0, i32 0, i32 0
  %s0 = load i64, ptr %s0.p, align 8
  %n0.p = getelementptr {{ i64, i64 }}, ptr %ts0, i32 0, i32 1
  %n0 = load i64, ptr %n0.p, align 8
  %s1.p = getelementptr {{ i64, i64 }}, ptr %ts1, i32 0, i32 0
  %s1 = load i64, ptr %s1.p, align 8
  %n1.p = getelementptr {{ i64, i64 }}, ptr %ts1, i32 0, i32 1
  %n1 = load i64, ptr %n1.p, align 8
  %ds = sub i64 %s1, %s0
  %dn = sub i64 %n1, %n0
  %dsn = mul i64 %ds, 1000000000
  %ns = add i64 %dsn, %dn
  store i64 %ns, ptr %out, align 8
  %o1 = getelementptr i64, ptr %out, i64 1
  store i64 %i, ptr %o1, align 8
  ret i64 %rr
}}
"""


def lower(program: Program, plan: Plan, *, triple: str = "", datalayout: str = "") -> str:
    """The whole LLVM module for `program` as text."""
    parts = []
    if datalayout:
        parts.append(f'target datalayout = "{datalayout}"')
    if triple:
        parts.append(f'target triple = "{triple}"')
    parts.append("declare i32 @clock_gettime(i32, ptr)")
    parts += [f"declare i{w} @llvm.bswap.i{w}(i{w})" for w in (16, 32, 64)]
    parts.append(g.support_declarations())
    for func in plan.funcs:
        parts.append(FunctionLowerer(program, plan, func).lower())
    parts.append(_callx_ir(plan.starts))
    parts.append(_entry_ir())
    parts.append("attributes #0 = { noinline }")
    parts.append(g.ALIAS_METADATA)
    return "\n".join(parts)
