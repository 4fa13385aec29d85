"""The reference interpreter.

A program is translated once into Python source: one Python function per BPF subprogram, the eleven
registers as local variables, and the basic blocks dispatched through a binary tree of `if pc < N` tests.
CPython then runs that code several times faster than a decode-and-dispatch loop would, while every
instruction keeps exactly the semantics of RFC 9669 (see `_Emitter`). The translation is pure: the same
`Translation` serves any number of runs; `Runtime` supplies memory, helpers, kfuncs and maps per run.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Callable

from . import isa
from .errors import CallDepthExceeded, HelperError, InstructionLimitExceeded, LoadError, VMFault
from .isa import Insn
from .program import Program

MAX_CALL_FRAMES = 8
FRAME_SIZE = 512
MAX_LOOPS = 8 * 1024 * 1024  # the kernel's BPF_MAX_LOOPS, the budget of `may_goto`
DEFAULT_INSN_LIMIT = 100_000_000

# Function pointers (`lddw rX, func` with src PSEUDO_FUNC) are opaque values that no region covers.
FUNC_PTR_BASE = 0xFFFF_FFFF_C000_0000
# Map pointers (`lddw rX, map`) likewise.
MAP_PTR_BASE = 0xFFFF_8880_0000_0000
MAP_PTR_STRIDE = 0x1_0000

M64 = isa.U64
M32 = isa.U32
S63 = 1 << 63
S31 = 1 << 31

# Helpers that call back into the program (bpf_loop, for_each_map_elem, find_vma, user_ringbuf_drain, ...)
# need the caller's frame; the interpreter publishes it before calling them.
CALLBACK_HELPER_IDS = frozenset({164, 170, 180, 181, 209})


class ProgramExit(Exception):
    """Raised by a helper (or LD_ABS) to end the whole program at once with `value` in r0."""

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value


class TailCall(ProgramExit):
    """Raised by bpf_tail_call: the current program ends and `target` (a program from a PROG_ARRAY) starts
    with the same context. The test-run driver performs the jump and enforces the kernel's limit of 33."""

    def __init__(self, target: Any):
        super().__init__(0)
        self.target = target


MAX_TAIL_CALLS = 33

HelperFn = Callable[..., int]


def _sdiv(a: int, b: int, bits: int) -> int:
    mask = (1 << bits) - 1
    a = isa.to_signed(a, bits)
    b = isa.to_signed(b, bits)
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q & mask


def _smod(a: int, b: int, bits: int) -> int:
    mask = (1 << bits) - 1
    sa = isa.to_signed(a, bits)
    sb = isa.to_signed(b, bits)
    if sb == 0:
        return a & mask
    r = abs(sa) % abs(sb)
    if sa < 0:
        r = -r
    return r & mask


def _bswap(value: int, nbytes: int) -> int:
    return int.from_bytes((value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


def _sext(value: int, bits: int) -> int:
    """Sign-extend the low `bits` bits of value to an unsigned 64-bit pattern."""
    return isa.to_signed(value, bits) & M64


_COND_OPS = {
    isa.JEQ: "==", isa.JNE: "!=", isa.JGT: ">", isa.JGE: ">=", isa.JLT: "<", isa.JLE: "<=",
    isa.JSGT: ">", isa.JSGE: ">=", isa.JSLT: "<", isa.JSLE: "<=",
}
_SIGNED_JUMPS = frozenset({isa.JSGT, isa.JSGE, isa.JSLT, isa.JSLE})
_ATOMIC_NAMES = {isa.ATOMIC_ADD: "add", isa.ATOMIC_OR: "or", isa.ATOMIC_AND: "and", isa.ATOMIC_XOR: "xor"}


@dataclass
class Translation:
    """The Python code object of a program, and what it needs bound at run time."""

    code: Any
    source: str
    helper_ids: frozenset[int]
    kfunc_names: tuple[str, ...]
    map_refs: tuple[tuple[str, int, int], ...]  # (global name, map index, value offset or -1 for the map pointer)
    subprogs: tuple[int, ...]


def translate(program: Program) -> Translation:
    """Translate `program` into Python. Structural errors (a jump out of range ...) raise LoadError."""
    insns = program.insns
    if not insns:
        raise LoadError("program has no instructions")
    starts = program.subprog_starts()
    slot_is_start = isa.instruction_starts(insns)
    for s in starts:
        if not slot_is_start[s]:
            raise LoadError(f"insn {s}: call or function pointer targets the middle of lddw")
    emitter = _Emitter(program, slot_is_start)
    leaders = emitter.leaders
    lines: list[str] = []
    bounds = starts + [len(insns)]
    for k, start in enumerate(starts):
        end = bounds[k + 1]
        blocks = sorted(b for b in leaders if start <= b < end and slot_is_start[b])
        lines.extend(emitter.function(start, end, blocks))
    source = "\n".join(lines) + "\n"
    code = compile(source, f"<bpf {program.name}>", "exec")
    return Translation(
        code=code,
        source=source,
        helper_ids=frozenset(emitter.helper_ids),
        kfunc_names=tuple(sorted(emitter.kfunc_names)),
        map_refs=tuple(sorted(emitter.map_refs)),
        subprogs=tuple(starts),
    )


class _Emitter:
    """Turns instructions into Python statements. Registers hold unsigned 64-bit ints at all times."""

    def __init__(self, program: Program, slot_is_start: list[bool]):
        self.program = program
        self.insns = program.insns
        self.slot_is_start = slot_is_start
        self.helper_ids: set[int] = set()
        self.kfunc_names: set[str] = set()
        self.map_refs: set[tuple[str, int, int]] = set()
        self.leaders = isa.block_leaders(self.insns, program.subprog_starts())

    # -- structure --------------------------------------------------------------------------------------
    def function(self, start: int, end: int, blocks: list[int]) -> list[str]:
        out = [
            f"def f{start}(r1, r2, r3, r4, r5, r10, depth):",
            "    global steps, loops",
            "    r0 = r6 = r7 = r8 = r9 = 0",
            f"    pc = {start}",
            "    while True:",
        ]
        self._tree(out, blocks, end, 2)
        return out

    def _tree(self, out: list[str], blocks: list[int], end: int, depth: int) -> None:
        pad = "    " * depth
        if len(blocks) == 1:
            out.extend(pad + line for line in self._block(blocks[0], end))
            return
        mid = len(blocks) // 2
        out.append(f"{pad}if pc < {blocks[mid]}:")
        self._tree(out, blocks[:mid], end, depth + 1)
        out.append(f"{pad}else:")
        self._tree(out, blocks[mid:], end, depth + 1)

    def _block(self, start: int, end: int) -> list[str]:
        """The block starting at `start`: it runs to the first jump, exit or leader before `end`."""
        leaders = self.leaders
        body: list[str] = []
        i = start
        count = 0
        terminated = False
        while i < end:
            if i != start and i in leaders:
                break
            insn = self.insns[i]
            count += 1
            stmts, terminated = self.insn(i, insn)
            body.extend(stmts)
            i += isa.insn_slots(insn)
            if terminated:
                break
        head = [f"steps += {count}", f"if steps > LIMIT: limit_exceeded({start})"]
        if not terminated:
            if i >= end:
                body.append(f"fault('fell off the end of the subprogram', {i - 1})")
            else:
                body.append(f"pc = {i}")
                body.append("continue")
        return head + body

    # -- one instruction ------------------------------------------------------------------------------------
    def insn(self, i: int, insn: Insn) -> tuple[list[str], bool]:
        """Python statements for `insn` at slot i, and whether control never falls through."""
        if isa.writes_frame_pointer(insn):
            raise LoadError(f"insn {i}: frame pointer is read only")
        cls = insn.cls
        if cls in (isa.ALU, isa.ALU64):
            return [self.alu(insn)], False
        if cls in (isa.JMP, isa.JMP32):
            return self.jump(i, insn)
        if cls == isa.LDX:
            return [self.ldx(i, insn)], False
        if cls in (isa.ST, isa.STX):
            return self.store(i, insn), False
        if cls == isa.LD:
            return [self.ld(i, insn)], False
        raise LoadError(f"insn {i}: unknown opcode {insn.opcode:#04x}")  # pragma: no cover

    def alu(self, insn: Insn) -> str:
        op = insn.opcode & 0xF0
        is64 = insn.cls == isa.ALU64
        d = f"r{insn.dst}"
        mask = "M64" if is64 else "M32"
        bits = 64 if is64 else 32
        if insn.opcode & isa.X:
            s = f"r{insn.src}"
        else:
            s = str(insn.imm & (M64 if is64 else M32))
        if op == isa.END:
            width = insn.imm
            if is64 or insn.opcode & isa.TO_BE:
                return f"{d} = bswap({d}, {width // 8})"
            return f"{d} = {d} & {(1 << width) - 1}"
        if op == isa.MOV:
            if insn.off and insn.opcode & isa.X:
                return f"{d} = sext({s}, {insn.off}) & {mask}"
            return f"{d} = {s}" if is64 else f"{d} = {s} & M32"
        if op == isa.NEG:
            return f"{d} = -{d} & {mask}"
        if op in (isa.ADD, isa.SUB, isa.MUL):
            sym = {isa.ADD: "+", isa.SUB: "-", isa.MUL: "*"}[op]
            return f"{d} = ({d} {sym} {s}) & {mask}"
        if op in (isa.OR, isa.AND, isa.XOR):
            sym = {isa.OR: "|", isa.AND: "&", isa.XOR: "^"}[op]
            if is64:
                return f"{d} = {d} {sym} {s}"
            return f"{d} = ({d} {sym} {s}) & M32"
        if op in (isa.LSH, isa.RSH, isa.ARSH):
            shift_mask = bits - 1
            amount = f"({s} & {shift_mask})" if insn.opcode & isa.X else str(int(s) & shift_mask)
            if op == isa.LSH:
                return f"{d} = ({d} << {amount}) & {mask}"
            if op == isa.RSH:
                return f"{d} = {d} >> {amount}" if is64 else f"{d} = ({d} & M32) >> {amount}"
            sign = "S63" if is64 else "S31"
            low = d if is64 else f"({d} & M32)"
            return f"{d} = ((({low} ^ {sign}) - {sign}) >> {amount}) & {mask}"
        if op in (isa.DIV, isa.MOD):
            if insn.off == 1:
                fn = "sdiv" if op == isa.DIV else "smod"
                return f"{d} = {fn}({d}, {s}, {bits})"
            a = d if is64 else f"({d} & M32)"
            b = s if is64 or not (insn.opcode & isa.X) else f"({s} & M32)"
            if op == isa.DIV:
                if b == "0":
                    return f"{d} = 0"
                return f"{d} = {a} // {b} if {b} else 0"
            if b == "0":
                return f"{d} = {a}" if not is64 else f"{d} = {d}"
            return f"{d} = {a} % {b} if {b} else {a}"
        raise AssertionError(f"alu op {op:#x}")  # pragma: no cover

    def _target(self, i: int, off: int) -> int:
        target = i + 1 + off
        if not (0 <= target < len(self.insns)) or not self.slot_is_start[target]:
            raise LoadError(f"insn {i}: jump out of range to insn {target}")
        return target

    def jump(self, i: int, insn: Insn) -> tuple[list[str], bool]:
        op = insn.opcode & 0xF0
        if insn.opcode == isa.OP_EXIT:
            return ["return r0"], True
        if insn.opcode in (isa.OP_JA, isa.OP_JA32):
            return [f"pc = {self._target(i, insn.jump_offset())}", "continue"], True
        if insn.opcode == isa.OP_CALL:
            return self.call(i, insn), False
        if insn.opcode == isa.OP_CALLX:
            return [
                f"if depth >= {MAX_CALL_FRAMES - 1}: too_deep({i})",
                f"r0 = callx(r{insn.dst}, r1, r2, r3, r4, r5, r10 - FRAME, depth + 1, {i}) & M64",
            ], False
        target = self._target(i, insn.off)
        fall = i + 1
        if insn.opcode == isa.OP_MAY_GOTO:
            return [
                "if loops == 0:",
                f"    pc = {target}",
                "else:",
                "    loops -= 1",
                f"    pc = {fall}",
                "continue",
            ], True
        is32 = insn.cls == isa.JMP32
        d = f"r{insn.dst}" if not is32 else f"(r{insn.dst} & M32)"
        if insn.opcode & isa.X:
            s = f"r{insn.src}" if not is32 else f"(r{insn.src} & M32)"
            const = None
        else:
            const = insn.imm & (M32 if is32 else M64)
            s = str(const)
        if op == isa.JSET:
            cond = f"{d} & {s}"
        elif op in _SIGNED_JUMPS:
            sign = "S31" if is32 else "S63"
            rhs = str(const ^ (S31 if is32 else S63)) if const is not None else f"({s} ^ {sign})"
            cond = f"({d} ^ {sign}) {_COND_OPS[op]} {rhs}"
        else:
            cond = f"{d} {_COND_OPS[op]} {s}"
        return [f"pc = {target} if {cond} else {fall}", "continue"], True

    def call(self, i: int, insn: Insn) -> list[str]:
        if insn.src == isa.PSEUDO_CALL:
            target = self._target(i, insn.imm)
            return [
                f"if depth >= {MAX_CALL_FRAMES - 1}: too_deep({i})",
                f"r0 = f{target}(r1, r2, r3, r4, r5, r10 - FRAME, depth + 1)",
            ]
        if insn.src == isa.PSEUDO_KFUNC_CALL:
            if not (0 <= insn.imm < len(self.program.kfuncs)):
                raise LoadError(f"insn {i}: kfunc call #{insn.imm} names no kfunc of this program")
            name = self.program.kfuncs[insn.imm]
            self.kfunc_names.add(name)
            return [f"r0 = KF_{_ident(name)}(r1, r2, r3, r4, r5) & M64"]
        helper_id = insn.imm
        if helper_id < 0:
            raise LoadError(f"insn {i}: invalid helper id {helper_id}")
        self.helper_ids.add(helper_id)
        pre = [f"frame[0] = r10; frame[1] = depth"] if helper_id in CALLBACK_HELPER_IDS else []
        return pre + [f"r0 = H{helper_id}(r1, r2, r3, r4, r5) & M64"]

    @staticmethod
    def _in_frame(reg: int, off: int, size: int) -> bool:
        """An r10-relative access that provably stays inside the current 512-byte frame needs no region lookup."""
        return reg == isa.FRAME_POINTER and -FRAME_SIZE <= off and off + size <= 0

    def ldx(self, i: int, insn: Insn) -> str:
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        if self._in_frame(insn.src, insn.off, size):
            kind = "SS" if isa.mem_mode(insn.opcode) == isa.MEMSX else "SU"
            value = f"{kind}{size}(SV, r10 - SB + {insn.off})[0]"
            return f"r{insn.dst} = {value} & M64" if kind == "SS" else f"r{insn.dst} = {value}"
        addr = f"(r{insn.src} + {insn.off}) & M64" if insn.off else f"r{insn.src}"
        if isa.mem_mode(insn.opcode) == isa.MEMSX:
            return f"r{insn.dst} = lds{size}({addr}, {i})"
        return f"r{insn.dst} = ld{size}({addr}, {i})"

    def store(self, i: int, insn: Insn) -> list[str]:
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        addr = f"(r{insn.dst} + {insn.off}) & M64" if insn.off else f"r{insn.dst}"
        if isa.mem_mode(insn.opcode) == isa.MEM and self._in_frame(insn.dst, insn.off, size):
            mask = (1 << (8 * size)) - 1
            if insn.cls == isa.ST:
                return [f"SP{size}(SV, r10 - SB + {insn.off}, {insn.imm & mask})"]
            value = f"r{insn.src}" if size == 8 else f"r{insn.src} & {mask}"
            return [f"SP{size}(SV, r10 - SB + {insn.off}, {value})"]
        if insn.cls == isa.ST:
            return [f"st{size}({addr}, {insn.imm & M64}, {i}, {insn.imm})"]
        if isa.mem_mode(insn.opcode) == isa.MEM:
            return [f"st{size}({addr}, r{insn.src}, {i})"]
        op = insn.imm
        if op == isa.ATOMIC_LOAD_ACQ:
            src_addr = f"(r{insn.src} + {insn.off}) & M64" if insn.off else f"r{insn.src}"
            return [f"r{insn.dst} = ld{size}({src_addr}, {i})"]
        if op == isa.ATOMIC_STORE_REL:
            return [f"st{size}({addr}, r{insn.src}, {i})"]
        if op == isa.ATOMIC_CMPXCHG:
            return [f"r0 = amo({size}, 'cmpxchg', {addr}, r{insn.src}, {i}, r0)"]
        if op == isa.ATOMIC_XCHG:
            return [f"r{insn.src} = amo({size}, 'xchg', {addr}, r{insn.src}, {i})"]
        name = _ATOMIC_NAMES[op & ~isa.FETCH]
        if op & isa.FETCH:
            return [f"r{insn.src} = amo({size}, '{name}', {addr}, r{insn.src}, {i})"]
        return [f"amo({size}, '{name}', {addr}, r{insn.src}, {i})"]

    def ld(self, i: int, insn: Insn) -> str:
        if insn.opcode == isa.OP_LDDW:
            nxt = self.insns[i + 1] if i + 1 < len(self.insns) else None
            if nxt is None:
                raise LoadError(f"insn {i}: lddw is missing its second slot")
            value = isa.lddw_value(insn, nxt)
            d = f"r{insn.dst}"
            src = insn.src
            if src == 0:
                return f"{d} = {value}"
            if src == isa.PSEUDO_FUNC:
                target = self._target(i, insn.imm)
                return f"{d} = {FUNC_PTR_BASE + target * 8}"
            if src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX):
                name = f"MAP_{insn.imm & M32}"
                self.map_refs.add((name, insn.imm & M32, -1))
                return f"{d} = {name}"
            if src in (isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX_VALUE):
                name = f"MAPV_{insn.imm & M32}_{nxt.imm & M32}"
                self.map_refs.add((name, insn.imm & M32, nxt.imm & M32))
                return f"{d} = {name}"
            if src == isa.PSEUDO_BTF_ID:
                return f"{d} = btf_var({insn.imm}, {i})"
            raise LoadError(f"insn {i}: lddw with unknown pseudo source {src}")
        # Legacy packet loads: r0 = ntoh(*(size *)(skb->data + imm [+ src])); r1-r5 are clobbered.
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        offset = str(insn.imm) if isa.mem_mode(insn.opcode) == isa.ABS else f"r{insn.src} + {insn.imm}"
        return f"r0 = ld_abs(r6, {offset}, {size}, {i})"


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


class Runtime:
    """What a running program can reach: memory, the stack, helpers, kfuncs, maps and output.

    Helpers and kfuncs are called as `fn(runtime, r1, r2, r3, r4, r5) -> int`.
    """

    def __init__(
        self,
        memory,
        *,
        helpers: dict[int, HelperFn] | None = None,
        kfuncs: dict[str, HelperFn] | None = None,
        insn_limit: int = DEFAULT_INSN_LIMIT,
        frame_size: int = FRAME_SIZE,
    ):
        self.memory = memory
        self.helpers = dict(helpers or {})
        self.kfuncs = dict(kfuncs or {})
        if frame_size < FRAME_SIZE:
            raise ValueError(f"a stack frame must hold at least {FRAME_SIZE} bytes")
        self.insn_limit = insn_limit
        self.frame_size = frame_size
        self.stack = memory.add("stack", frame_size * MAX_CALL_FRAMES)
        self.ld_abs_fn: Callable[[int, int, int, int], int] | None = None
        self.maps: list[Any] = []  # map instances by handle
        self._map_specs: list[Any] = []
        self._map_handles: dict[int, int] = {}
        self.frame = [0, 0]  # r10 and depth of the frame calling a callback helper
        self.tail_calls = 0  # tail calls taken in the current run (bpf_tail_call fails past MAX_TAIL_CALLS)
        self.output: list[str] = []
        self._bound: BoundProgram | None = None

    def add_map(self, spec: Any, instance: Any) -> int:
        """Make a map instance reachable; `spec` is the `MapSpec` programs reference it by. Returns its handle."""
        key = id(spec)
        if key in self._map_handles:
            return self._map_handles[key]
        self.maps.append(instance)
        self._map_specs.append(spec)  # keeps `spec` alive so its id stays unique
        self._map_handles[key] = len(self.maps) - 1
        return self._map_handles[key]

    def map_handle(self, spec: Any) -> int:
        handle = self._map_handles.get(id(spec))
        if handle is None:
            name = getattr(spec, "name", spec)
            raise LoadError(f"map {name!r} has no instance in this run (was the object's map created?)")
        return handle

    def map_pointer(self, spec: Any) -> int:
        """The opaque value `lddw rX, map` gives a program: no region covers it, helpers decode it."""
        return MAP_PTR_BASE + self.map_handle(spec) * MAP_PTR_STRIDE

    def map_from_pointer(self, value: int) -> Any:
        index, rem = divmod(value - MAP_PTR_BASE, MAP_PTR_STRIDE)
        if rem or not (0 <= index < len(self.maps)):
            return None
        return self.maps[index]

    def map_value_address(self, spec: Any, offset: int) -> int:
        return self.maps[self.map_handle(spec)].value_address(offset)

    def call_function(self, pointer: int, *args: int) -> int:
        """Call a BPF subprogram by function pointer from a helper (a callback), in a new frame."""
        if self._bound is None:
            raise HelperError("no program is running")
        return self._bound.call_pointer(pointer, args, self.frame[0], self.frame[1], -1)


class BoundProgram:
    """A translation bound to a runtime: callable many times."""

    def __init__(self, translation: Translation, program: Program, runtime: Runtime):
        self.translation = translation
        self.program = program
        self.runtime = runtime
        g: dict[str, Any] = {"__builtins__": {}}
        mem = runtime.memory
        for n in (1, 2, 4, 8):
            g[f"ld{n}"] = mem.load[n]
            g[f"st{n}"] = mem.store[n]
        for n in (1, 2, 4):
            g[f"lds{n}"] = mem.load_signed[n]
        for n, code in ((1, "B"), (2, "H"), (4, "I"), (8, "Q")):
            g[f"SU{n}"] = struct.Struct("<" + code).unpack_from
            g[f"SS{n}"] = struct.Struct("<" + code.lower()).unpack_from
            g[f"SP{n}"] = struct.Struct("<" + code).pack_into
        g["SV"], g["SB"] = runtime.stack.view, runtime.stack.start
        g.update(
            M64=M64, M32=M32, S63=S63, S31=S31, FRAME=runtime.frame_size, LIMIT=runtime.insn_limit,
            steps=0, loops=MAX_LOOPS, frame=runtime.frame,
            amo=mem.atomic, sdiv=_sdiv, smod=_smod, bswap=_bswap, sext=_sext,
            fault=self._fault, too_deep=self._too_deep, limit_exceeded=self._limit_exceeded,
            callx=self._callx, ld_abs=self._ld_abs, btf_var=self._btf_var,
        )
        for hid in translation.helper_ids:
            fn = runtime.helpers.get(hid)
            g[f"H{hid}"] = functools.partial(fn, runtime) if fn else self._missing_helper(hid)
        for name in translation.kfunc_names:
            fn = runtime.kfuncs.get(name)
            g[f"KF_{_ident(name)}"] = functools.partial(fn, runtime) if fn else self._missing_kfunc(name)
        for gname, index, offset in translation.map_refs:
            if not (0 <= index < len(program.maps)):
                raise LoadError(f"lddw references map #{index}, but the program has {len(program.maps)} maps")
            spec = program.maps[index]
            g[gname] = runtime.map_pointer(spec) if offset < 0 else runtime.map_value_address(spec, offset)
        exec(translation.code, g)
        self._globals = g
        self._entry = g["f0"]
        self._funcs = {start: g[f"f{start}"] for start in translation.subprogs}

    @property
    def steps(self) -> int:
        """Instructions executed by the last run."""
        return self._globals["steps"]

    def __call__(self, r1: int = 0, r2: int = 0, r3: int = 0, r4: int = 0, r5: int = 0) -> int:
        g = self._globals
        g["steps"] = 0
        g["loops"] = MAX_LOOPS
        runtime = self.runtime
        runtime._bound = self
        try:
            return self._entry(r1 & M64, r2 & M64, r3 & M64, r4 & M64, r5 & M64, runtime.stack.end, 0)
        except TailCall:
            raise
        except ProgramExit as stop:
            return stop.value & M64
        except RecursionError:
            raise CallDepthExceeded("the host's recursion limit was reached") from None

    # -- run-time services for the generated code -----------------------------------------------------------
    def call_pointer(self, pointer: int, args: tuple[int, ...], r10: int, depth: int, pc: int) -> int:
        start, rem = divmod(pointer - FUNC_PTR_BASE, 8)
        fn = self._funcs.get(start) if rem == 0 else None
        if fn is None:
            raise VMFault(f"call to {pointer:#x}, which is not a function of this program", pc)
        if depth >= MAX_CALL_FRAMES - 1:
            self._too_deep(pc)
        regs = (list(args) + [0] * 5)[:5]
        return fn(*regs, r10 - self.runtime.frame_size, depth + 1) & M64

    def _callx(self, target: int, r1: int, r2: int, r3: int, r4: int, r5: int, r10: int, depth: int, pc: int) -> int:
        if target >= FUNC_PTR_BASE:
            fn = self._funcs.get((target - FUNC_PTR_BASE) // 8) if target % 8 == 0 else None
            if fn is None:
                raise VMFault(f"callx to {target:#x}, which is not a function of this program", pc)
            return fn(r1, r2, r3, r4, r5, r10, depth)
        helper = self.runtime.helpers.get(target)
        if helper is None:
            raise HelperError(f"callx to unknown helper #{target}", pc)
        if target in CALLBACK_HELPER_IDS:
            self.runtime.frame[0], self.runtime.frame[1] = r10 + self.runtime.frame_size, depth - 1
        return helper(self.runtime, r1, r2, r3, r4, r5)

    def _ld_abs(self, ctx: int, offset: int, size: int, pc: int) -> int:
        fn = self.runtime.ld_abs_fn
        if fn is None:
            raise VMFault("BPF_LD_ABS/BPF_LD_IND need a socket buffer, and this run has none", pc)
        return fn(ctx, offset & M64, size, pc)

    def _btf_var(self, btf_id: int, pc: int) -> int:
        raise VMFault(f"lddw of kernel variable btf_id {btf_id} is not supported", pc)

    @staticmethod
    def _fault(message: str, pc: int) -> None:
        raise VMFault(message, pc)

    @staticmethod
    def _too_deep(pc: int) -> None:
        raise CallDepthExceeded(f"the call stack of {MAX_CALL_FRAMES + 1} frames is too deep", pc)

    def _limit_exceeded(self, pc: int) -> None:
        raise InstructionLimitExceeded(
            f"instruction limit of {self.runtime.insn_limit} exceeded (runaway program?)", pc
        )

    @staticmethod
    def _missing_helper(hid: int) -> Callable[..., int]:
        def missing(*_args: int) -> int:
            raise HelperError(f"call to unknown helper #{hid}")

        return missing

    @staticmethod
    def _missing_kfunc(name: str) -> Callable[..., int]:
        def missing(*_args: int) -> int:
            raise HelperError(f"call to unknown kfunc {name}")

        return missing


class Interpreter:
    """Translate once, bind per runtime, run many times."""

    def __init__(self, program: Program):
        self.program = program
        self.translation = translate(program)

    def bind(self, runtime: Runtime) -> BoundProgram:
        """Bind to a runtime that holds an instance (`Runtime.add_map`) of every map the program uses."""
        return BoundProgram(self.translation, self.program, runtime)
