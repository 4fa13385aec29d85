"""The main pass (do_check): a depth-first walk over a worklist of paths, one instruction at a time, with
pruning at prune points; and `verify()`, the entry point that ties everything together.

Loops, pruning and precision follow the kernel (see prune.py and precision.py). Branch and access facts
are gathered per slot; on rejection a `VerifierError` with one line `insn N: <reason> (file.c:L: text)`.
"""

from __future__ import annotations

import gc
from typing import Any

from .. import isa
from ..errors import VerifierError
from ..isa import Insn
from ..program import Program
from . import cfg as cfgmod
from .alu import AluMixin
from .analysis import Analysis, Stats
from .branches import BranchMixin
from .calls import CallMixin
from .core import Core, Options
from .dynptr import DynptrMixin
from .errors import Reject
from .instances import InstanceMixin, InstanceSpec
from .kfuncs import KfuncMixin
from .log import frame_str, state_str
from .memory import MemoryMixin
from .precision import PrecisionMixin
from .prune import PruneMixin
from .protos import proto_for
from .regs import PTR_TO_CTX, PTR_TO_PACKET, PTR_TO_PACKET_META, set_pointer, type_str
from .state import MAX_STACK, State, new_frame

MAX_COMBINED_STACK = 512


class Verifier(Core, AluMixin, MemoryMixin, BranchMixin, CallMixin, PrecisionMixin, PruneMixin, KfuncMixin,
               DynptrMixin, InstanceMixin):
    def __init__(self, program: Program, options: Options, instances: dict[int, Any] | None = None) -> None:
        super().__init__(program, options)
        self.maps = list(program.maps)
        self.max_states_per_insn = 0
        self.init_instances(instances or {})
        self.init_kfuncs()

    def map_index(self, spec: Any) -> int:
        for k, m in enumerate(self.maps):
            if m is spec:
                return k
        self.maps.append(spec)
        return len(self.maps) - 1

    # -- entry ------------------------------------------------------------------------------------------------
    def run(self) -> Analysis:
        if not self.insns:
            raise Reject(0, "empty program")
        extra = [f.insn for f in self.program.funcs] + list(self.instance_starts.values())
        self.cfg = cfgmod.build(self.insns, extra, self.kfunc_nparams(), privileged=self.opts.privileged,
                                instance_calls=self.instance_starts)
        self.convergence_points = self.find_convergence_points()
        st = self.initial_state()
        self.do_check(st)
        self.check_combined_stack()
        return self.analysis()

    def initial_state(self) -> State:
        st = State()
        f = new_frame(0, -1, 0)
        set_pointer(f.regs[1], PTR_TO_CTX)
        st.frames.append(f)
        st.insn = 0
        return st

    def find_convergence_points(self) -> set[int]:
        pts = set()
        for i, insn in enumerate(self.insns):
            if not self.cfg.insn_start[i]:
                continue
            if insn.opcode == isa.OP_MAY_GOTO:
                pts.add(i)
            elif insn.is_helper_call():
                p = proto_for(insn.imm)
                if p is not None and p.callback is not None:
                    pts.add(i)
            elif insn.is_kfunc_call() and self.kfunc_is_iter_next(i):
                pts.add(i)
                self.cfg.force_checkpoint.add(i)
        for p in pts:
            self.cfg.prune.add(p)
        return pts

    # -- the walk ----------------------------------------------------------------------------------------------
    def do_check(self, st: State | None) -> None:
        log = self.log
        limit = self.opts.max_insns
        while st is not None:
            i = st.insn
            self.cur_insn = i
            self.insn_processed += 1
            if self.insn_processed > limit:
                raise Reject(i, f"BPF program is too large. Processed {self.insn_processed} insn")
            if i in self.cfg.prune and self.is_state_visited(st, i):
                self.path_done(st)
                st = self.next_path()
                continue
            aux = self.aux[i]
            aux.seen = True
            insn = self.insns[i]
            self.recorded = False
            self.hist_extra = None
            if log:
                if log.level > 1:
                    log.line(f"{i}: {state_str(st, log.map_names)}")
                line_no = len(log.lines)
                log.line(f"{i}: {log.insn_text(i)}")
            ended = self.step(st, insn, i)
            if not self.recorded:
                st.history.append((i, len(st.frames) - 1, self.hist_extra))
            if log and not ended:
                changed = frame_str(st.frames[-1], log.map_names, only=self._written_regs(insn))
                if changed:
                    log.lines[line_no] = f"{log.lines[line_no]:<37} ; {changed}"
            if ended:
                self.path_done(st)
                st = self.next_path()

    def next_path(self) -> State | None:
        st = self.pop()
        if st is not None and self.log:
            self.log.line(f"from {st.history[-1][0] if st.history else '?'} to {st.insn}: "
                          f"{state_str(st, self.log.map_names)}")
        return st

    @staticmethod
    def _written_regs(insn: Insn) -> set[int]:
        cls = insn.cls
        if cls in (isa.ALU, isa.ALU64, isa.LDX) or insn.opcode == isa.OP_LDDW:
            return {insn.dst}
        if insn.opcode == isa.OP_CALL:
            return {0}
        return set()

    def step(self, st: State, insn: Insn, i: int) -> bool:
        """Process one instruction; True when the path ends."""
        cls = insn.cls
        if cls in (isa.ALU, isa.ALU64):
            self.check_alu(st, insn)
            st.insn = i + 1
            return False
        if cls == isa.LDX:
            self.read_reg(st, insn.src)
            self.write_reg(st, insn.dst)
            self.check_mem_access(st, insn.src, insn.off, isa.SIZE_BYTES[isa.mem_size(insn.opcode)], False,
                                  insn.dst, sign_ext=isa.mem_mode(insn.opcode) == isa.MEMSX)
            st.insn = i + 1
            return False
        if cls == isa.STX:
            if isa.mem_mode(insn.opcode) == isa.ATOMIC:
                self.check_atomic(st, insn)
            else:
                self.read_reg(st, insn.src)
                self.read_reg(st, insn.dst)
                self.check_mem_access(st, insn.dst, insn.off, isa.SIZE_BYTES[isa.mem_size(insn.opcode)], True,
                                      insn.src)
            st.insn = i + 1
            return False
        if cls == isa.ST:
            self.read_reg(st, insn.dst)
            self.check_mem_access(st, insn.dst, insn.off, isa.SIZE_BYTES[isa.mem_size(insn.opcode)], True, -1,
                                  imm=insn.imm)
            st.insn = i + 1
            return False
        if cls == isa.LD:
            if insn.opcode == isa.OP_LDDW:
                self.check_lddw(st, insn)
                st.insn = i + 2
            else:
                self.check_ld_abs(st, insn)
                st.insn = i + 1
            return False
        # jumps
        self.jmps_processed += 1
        op = insn.opcode & 0xF0
        if insn.opcode in (isa.OP_JA, isa.OP_JA32):
            st.insn = i + 1 + insn.jump_offset()
            return False
        if insn.opcode == isa.OP_EXIT:
            return self.check_exit(st)
        if insn.opcode == isa.OP_CALLX:
            raise self.reject("unknown opcode 8d")
        if op == isa.CALL:
            self.check_call_while_locked(st, insn)
            if insn.src == isa.PSEUDO_CALL:
                self.check_subprog_call(st, insn)
                return False
            if insn.src == isa.PSEUDO_KFUNC_CALL:
                self.check_kfunc_call(st, insn)
            else:
                self.check_helper_call(st, insn)
            st.insn = i + 1
            return False
        self.check_cond_jmp(st, insn)
        return False

    def check_atomic(self, st: State, insn: Insn) -> None:
        size = isa.SIZE_BYTES[isa.mem_size(insn.opcode)]
        imm = insn.imm
        if imm == isa.ATOMIC_LOAD_ACQ:
            self.read_reg(st, insn.src)
            self.write_reg(st, insn.dst)
            self.check_mem_access(st, insn.src, insn.off, size, False, insn.dst)
            return
        if imm == isa.ATOMIC_STORE_REL:
            self.read_reg(st, insn.src)
            self.read_reg(st, insn.dst)
            self.check_mem_access(st, insn.dst, insn.off, size, True, insn.src)
            return
        self.read_reg(st, insn.src)
        self.read_reg(st, insn.dst)
        if imm == isa.ATOMIC_CMPXCHG:
            self.read_reg(st, 0)
        load_reg = -1
        if imm & isa.FETCH:
            load_reg = 0 if imm == isa.ATOMIC_CMPXCHG else insn.src
            self.write_reg(st, load_reg)
        dst = st.frames[-1].regs[insn.dst]
        if dst.type & 0xFF in (PTR_TO_CTX, PTR_TO_PACKET_META, PTR_TO_PACKET):
            raise self.reject(f"BPF_ATOMIC stores into R{insn.dst} {type_str(dst.type)} is not allowed")
        self.check_mem_access(st, insn.dst, insn.off, size, False, -1, atomic=True)
        if load_reg >= 0:
            self.check_mem_access(st, insn.dst, insn.off, size, False, load_reg, atomic=True)
        self.check_mem_access(st, insn.dst, insn.off, size, True, -1, atomic=True)

    # -- after the walk ------------------------------------------------------------------------------------------
    def check_combined_stack(self) -> None:
        """check_max_stack_depth(): along every chain of bpf-to-bpf calls, the frames fit in 512 bytes."""
        starts = self.cfg.starts
        depth = {s: _round_stack(self.stack_depth.get(s, 0)) for s in starts}
        calls: dict[int, list[tuple[int, int]]] = {s: [] for s in starts}
        for i, insn in enumerate(self.insns):
            if self.cfg.insn_start[i] and insn.is_local_call() and self.aux[i].seen:
                calls[starts[self.cfg.subprog_of[i]]].append((i, i + 1 + insn.imm))
        best: dict[int, tuple[int, int]] = {}

        def walk(s: int, seen: tuple[int, ...]) -> tuple[int, int]:
            if s in seen:
                return 0, 0
            got = best.get(s)
            if got is not None:
                return got
            total, frames = 0, 0
            for _, t in calls[s]:
                d, n = walk(t, seen + (s,))
                if d > total:
                    total, frames = d, n
            res = (depth[s] + total, frames + 1)
            best[s] = res
            return res

        for s in starts:
            total, frames = walk(s, ())
            if total > MAX_COMBINED_STACK and frames > 1:
                raise Reject(s, f"combined stack size of {frames} calls is {total}. Too large")

    def analysis(self) -> Analysis:
        facts: dict[int, dict[str, Any]] = {}
        for i, a in enumerate(self.aux):
            if not self.cfg.insn_start[i]:
                continue
            d: dict[str, Any] = {"seen": a.seen}
            insn = self.insns[i]
            if insn.is_cond_jump():
                d["true_branch_taken"] = a.true_taken
                d["false_branch_taken"] = a.false_taken
            if a.proved_safe is not None:
                d["proved_safe"] = a.proved_safe
                d["mem_region"] = a.region
            if a.ctx_field is not None and a.ctx_field != "mixed":
                d["ctx_field"] = a.ctx_field
            if a.instance >= 0:
                d["kfunc_instance"] = a.instance
            if a.loop_callback >= 0:
                d["bpf_loop_callback"] = a.loop_callback
            facts[i] = d
            if insn.opcode == isa.OP_LDDW:
                facts[i + 1] = {"seen": a.seen}
        stats = Stats(self.insn_processed, self.max_states_per_insn, self.total_states, self.peak_states, 0)
        if self.log:
            self.log.line(stats.line(self.opts.max_insns))
        return Analysis(self.program, facts, {s: self.stack_depth.get(s, 0) for s in self.cfg.starts},
                        self.log.text(), stats, dict(self.instance_starts), self.opts.max_insns)


def _round_stack(depth: int) -> int:
    return (max(depth, 1) + 31) // 32 * 32 if depth else 0


def verify(program: Program, *, log_level: int = 0, kernel_btf: Any = None, prog_type: str | None = None,
           privileged: bool = True, max_insns: int = 1_000_000,
           instances: dict[int, int | InstanceSpec] | None = None, kfunc_btfs: tuple = (),
           internal_kfuncs: Any = ()) -> Analysis:
    """Verify `program`; return its Analysis or raise VerifierError (one line).

    `instances` maps a kfunc call slot to the start slot of its instance body (a hidden subprogram appended
    to the program) or to an `InstanceSpec`; see instances.py. kfunc prototypes come from the program's BTF
    (extern declarations with parameter names), then `kfunc_btfs` (e.g. inlinable kfunc libraries), then
    `kernel_btf` (default: /sys/kernel/btf/vmlinux). `internal_kfuncs` names kernel-internal functions that
    instance bodies may call unchecked (RFC patch 08).
    """
    opts = Options(privileged=privileged, max_insns=max_insns, log_level=log_level, kernel_btf=kernel_btf,
                   prog_type=prog_type or "", kfunc_btfs=tuple(kfunc_btfs))
    try:
        v = Verifier(program, opts, instances)
    except Reject as exc:
        raise VerifierError(format_error(program, exc)) from None
    v.internal_kfuncs |= set(internal_kfuncs or ())
    # The walk allocates many small acyclic objects: the cyclic collector only adds superlinear pauses.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return v.run()
    except Reject as exc:
        if v.log:
            v.log.line(exc.message)
            for extra in exc.extra_lines:
                v.log.line(extra)
            v.log.line(f"processed {v.insn_processed} insns (limit {max_insns}) max_states_per_insn "
                       f"{v.max_states_per_insn} total_states {v.total_states} peak_states {v.peak_states} "
                       "mark_read 0")
        err = VerifierError(format_error(program, exc))
        err.insn = exc.insn  # type: ignore[attr-defined]
        err.log = v.log.text()  # type: ignore[attr-defined]
        err.reason = exc.message  # type: ignore[attr-defined]
        raise err from None
    except RecursionError:
        raise VerifierError("insn 0: program too complex to verify") from None
    finally:
        if gc_was_enabled:
            gc.enable()


def format_error(program: Program, exc: Reject) -> str:
    msg = f"insn {exc.insn}: {exc.message}"
    li = program.source_line(exc.insn) if program.line_info else None
    if li is not None:
        name = li.file.rsplit("/", 1)[-1]
        msg += f" ({name}:{li.line}: {li.text.strip()})"
    return msg


__all__ = ["verify", "Verifier", "format_error", "MAX_STACK"]
