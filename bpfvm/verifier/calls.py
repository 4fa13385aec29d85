"""Calls and exits: helper calls checked against their prototypes (check_helper_call / check_func_arg),
bpf-to-bpf calls with their frames, callbacks (bpf_loop, for_each_map_elem) verified the kernel's way (the
callback returns to the call site, which is re-checked until the states converge), references, and exits
with the per-program-type return value check."""

from __future__ import annotations

from .. import isa
from ..isa import Insn
from .ctx import return_range
from .protos import LOOP_CALLBACK_HELPERS, TRACING, Proto, helper_label, proto_for
from .regs import (
    CONST_PTR_TO_MAP, KERNEL_VALUE, MAYBE_NULL, NOT_INIT, PKT_TYPES, PTR_TO_CTX, PTR_TO_FUNC, PTR_TO_MAP_KEY,
    PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_PACKET_META, PTR_TO_STACK, RINGBUF, SCALAR,
    Reg, set_const, set_not_init, set_pointer, set_unknown, type_str,
)
from . import bounds
from .state import MAX_FRAMES, REG_SIZE, ZERO, Ref, State, new_frame

_NO_PROTO = Proto("", "void")

MEM_TYPES_TEXT = "fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"
MEM_BASES = frozenset({PTR_TO_STACK, PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE,
                       PTR_TO_MEM, KERNEL_VALUE})
MAX_VAR_SIZE = 1 << 29
ELIDE_NULL_MAPS = frozenset({2, 6})  # ARRAY, PERCPU_ARRAY: a constant in-range key never gives NULL

# Map types (uapi) that helpers require (check_map_func_compatibility, abridged).
MAP_PROG_ARRAY, MAP_PERF_EVENT_ARRAY, MAP_QUEUE, MAP_STACK, MAP_RINGBUF, MAP_BLOOM = 3, 4, 22, 23, 27, 30
_HELPER_MAPS = {
    "tail_call": {MAP_PROG_ARRAY},
    "perf_event_output": {MAP_PERF_EVENT_ARRAY},
    "ringbuf_output": {MAP_RINGBUF}, "ringbuf_reserve": {MAP_RINGBUF}, "ringbuf_query": {MAP_RINGBUF},
    "ringbuf_reserve_dynptr": {MAP_RINGBUF},
    "map_push_elem": {MAP_QUEUE, MAP_STACK, MAP_BLOOM}, "map_pop_elem": {MAP_QUEUE, MAP_STACK},
    "map_peek_elem": {MAP_QUEUE, MAP_STACK, MAP_BLOOM},
    "map_lookup_percpu_elem": {5, 6, 10},  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
}
# Map types that only the helpers above may use.
_SPECIAL_MAPS = {MAP_PROG_ARRAY: {"tail_call"}, MAP_PERF_EVENT_ARRAY: {"perf_event_output"},
                 MAP_RINGBUF: {"ringbuf_output", "ringbuf_reserve", "ringbuf_query", "ringbuf_reserve_dynptr"},
                 MAP_QUEUE: {"map_push_elem", "map_pop_elem", "map_peek_elem"},
                 MAP_STACK: {"map_push_elem", "map_pop_elem", "map_peek_elem"}}


class CallMeta:
    __slots__ = ("map", "mem_size", "func", "release_ref", "dynptr", "raw_regno", "const_key")

    def __init__(self) -> None:
        self.const_key = -1
        self.map = -1
        self.mem_size = -1
        self.func = -1
        self.release_ref = 0
        self.dynptr = None
        self.raw_regno = -1


class CallMixin:
    # -- helpers -------------------------------------------------------------------------------------------
    def check_helper_call(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        hid = insn.imm
        proto = proto_for(hid)
        if proto is None:
            raise self.reject(f"invalid func {helper_label(hid)}")
        if proto.types is not None and self.prog_type not in proto.types:
            raise self.reject(f"program of this type cannot use helper {helper_label(hid)}")
        meta = CallMeta()
        regs = st.frames[-1].regs
        for k, kind in enumerate(proto.args):
            self._check_arg(st, proto, hid, k + 1, kind, meta)
        if proto.name == "dynptr_from_mem" and regs[1].type != PTR_TO_MAP_VALUE:
            raise self.reject(f"Unsupported reg type {type_str(regs[1].type)} for bpf_dynptr_from_mem data")
        if proto.name == "tail_call" and st.has_references():
            raise self.reject("tail_call would lead to reference leak")
        if meta.release_ref:
            self.release_reference(st, meta.release_ref)
        if proto.name == "loop":
            self._note_loop_inline_state(st, meta.func)
        if proto.callback is not None:
            self._push_callback(st, proto, meta)
        if meta.dynptr is not None:
            self.after_dynptr_helper(st, proto, meta)
        # Clobber caller-saved registers and set r0.
        for r in range(1, 6):
            set_not_init(regs[r])
        r0 = regs[0]
        ret = proto.ret
        if ret == "int":
            set_unknown(r0)
        elif ret == "void":
            set_not_init(r0)
        elif ret == "map_value_or_null":
            spec = self.maps[meta.map]
            if proto.name == "map_lookup_elem" and 0 <= meta.const_key < spec.max_entries:
                set_pointer(r0, PTR_TO_MAP_VALUE)  # an array element at a constant, in-range index
                r0.map = meta.map
            else:
                set_pointer(r0, PTR_TO_MAP_VALUE | MAYBE_NULL)
                r0.map = meta.map
                r0.id = self.new_id()
        elif ret == "ringbuf_mem_or_null":
            set_pointer(r0, PTR_TO_MEM | RINGBUF | MAYBE_NULL)
            r0.mem_size = meta.mem_size
            r0.id = self.acquire_reference(st, i)
            r0.ref_obj_id = r0.id
        elif ret == "dynptr_mem_or_null":
            self.dynptr_data_result(st, r0, meta)
        else:  # pragma: no cover
            raise AssertionError(ret)
        if proto.pkt_changing:
            self.clear_pkt_pointers(st)

    def _note_loop_inline_state(self, st: State, callback: int) -> None:
        """A bpf_loop call can become an inline loop (rewrites/bpf_loop.py) when every path that reaches it
        passes flags == 0 and the same callback (the kernel's update_loop_inline_state); flags become precise
        so that pruning cannot merge in a path with other flags."""
        aux = self.aux[self.cur_insn]
        flags_zero = st.frames[-1].regs[4].is_null()
        if flags_zero:
            self.mark_precise(st, 4)
        fits = flags_zero and aux.loop_callback in (-2, callback)
        aux.loop_callback = callback if fits else -1

    def _check_arg(self, st: State, proto: Proto, hid: int, regno: int, kind: str, meta: CallMeta) -> None:
        reg = self.read_reg(st, regno)
        base = reg.type & 0xFF
        if kind == "anything":
            return
        if kind == "map_ptr":
            if reg.type != CONST_PTR_TO_MAP:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected=map_ptr")
            meta.map = reg.map
            self._check_map_compat(proto, hid, reg.map)
            return
        if kind in ("map_key", "map_value", "uninit_map_value"):
            if meta.map < 0:
                raise self.reject(f"invalid map_ptr to access map->{'key' if kind == 'map_key' else 'value'}")
            if reg.type & MAYBE_NULL or base not in MEM_BASES or reg.type == KERNEL_VALUE:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected={MEM_TYPES_TEXT}")
            spec = self.maps[meta.map]
            size = spec.key_size if kind == "map_key" else spec.value_size
            self.check_helper_mem(st, regno, size, kind == "uninit_map_value", False, kind == "uninit_map_value")
            if kind == "map_key" and getattr(spec, "type", 0) in ELIDE_NULL_MAPS and meta.map < len(self.program.maps):
                meta.const_key = self._constant_map_key(st, reg, size)
            return
        if kind in ("mem", "mem_or_null", "mem_rw", "uninit_mem", "uninit_mem_or_null"):
            if kind.endswith("_or_null") and reg.is_null():
                return
            if reg.type & MAYBE_NULL or base not in MEM_BASES or reg.type == SCALAR:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected={MEM_TYPES_TEXT}")
            return  # checked with the size argument that follows
        if kind in ("size", "size_or_zero"):
            self._check_mem_size(st, proto, regno, reg, kind == "size_or_zero")
            return
        if kind == "alloc_size_or_zero":
            if not reg.is_const():
                raise self.reject(f"R{regno} is not a known constant'")
            self.mark_precise(st, regno)
            meta.mem_size = reg.var.value
            return
        if kind == "ctx":
            if base != PTR_TO_CTX or reg.type & MAYBE_NULL:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected=ctx")
            if reg.off or reg.var.mask or reg.var.value:
                raise self.reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
            return
        if kind == "func":
            if reg.type != PTR_TO_FUNC:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected=func")
            meta.func = reg.subprog
            return
        if kind == "stack_or_null":
            if reg.is_null():
                return
            if base != PTR_TO_STACK:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected=fp")
            return
        if kind == "ringbuf_mem":
            if reg.type != PTR_TO_MEM | RINGBUF:
                raise self.reject(f"R{regno} type={type_str(reg.type)} expected=ringbuf_mem")
            if reg.off or reg.var.mask or reg.var.value:
                raise self.reject(f"R{regno} must have zero offset when passed to release func")
            if not reg.ref_obj_id or st.find_ref(reg.ref_obj_id) is None:
                raise self.reject(f"R{regno} must be referenced when passed to release function")
            meta.release_ref = reg.ref_obj_id
            return
        if kind == "const_str":
            self._check_const_str(regno, reg)
            return
        if kind.startswith("dynptr"):
            self.check_dynptr_arg(st, regno, reg, kind, meta)
            return
        if kind == "spin_lock":
            self._process_spin_lock(st, regno, reg, proto.name == "spin_lock")
            return
        raise AssertionError(kind)  # pragma: no cover

    def _process_spin_lock(self, st: State, regno: int, reg: Reg, lock: bool) -> None:
        """process_spin_lock(): the argument points at its map value's lock; a path holds one lock at a time,
        and unlocks the lock it took (named by the map and the value pointer's id)."""
        if reg.type != PTR_TO_MAP_VALUE:
            raise self.reject(f"R{regno} type={type_str(reg.type)} expected=map_value")
        if reg.var.mask:
            raise self.reject(f"R{regno} doesn't have constant offset. bpf_spin_lock has to be at the constant "
                              "offset")
        spec = self.maps[reg.map]
        if not getattr(spec, "btf_value_type", 0):
            raise self.reject(f"map '{spec.name}' has to have BTF in order to use bpf_spin_lock")
        lock_off = getattr(spec, "spin_lock_off", None)
        if lock_off is None:
            raise self.reject(f"map '{spec.name}' has no valid bpf_spin_lock")
        off = bounds.s64(reg.var.value) + reg.off
        if off != lock_off:
            raise self.reject(f"off {off} doesn't point to 'struct bpf_spin_lock' that is at {lock_off}")
        held = st.held_lock()
        if lock:
            if held is not None:
                raise self.reject("Locking two bpf_spin_locks are not allowed")
            st.refs.append(Ref(reg.id, self.cur_insn, "lock", reg.map))
            return
        if held is None:
            raise self.reject("bpf_spin_unlock without taking a lock")
        if held.ptr != reg.map or held.id != reg.id:
            raise self.reject("bpf_spin_unlock of different lock")
        st.refs.remove(held)

    def check_call_while_locked(self, st: State, insn: Insn) -> None:
        """Only bpf_spin_unlock and bpf-to-bpf calls may run while a path holds a lock."""
        if st.held_lock() is None or insn.src == isa.PSEUDO_CALL:
            return
        if insn.src == isa.PSEUDO_KFUNC_CALL or (proto_for(insn.imm) or _NO_PROTO).name != "spin_unlock":
            raise self.reject("function calls are not allowed while holding a lock")

    def _constant_map_key(self, st: State, key: Reg, key_size: int) -> int:
        """get_constant_map_key(): the key's value when it is a known constant on the stack, else -1."""
        if key.type != PTR_TO_STACK or key.var.mask:
            return -1
        off = key.off + bounds.s64(key.var.value)
        frame = st.frames[key.frameno]
        k = -off - 1
        spi, idx = k // REG_SIZE, k % REG_SIZE
        if spi >= len(frame.stack):
            return -1
        slot = frame.stack[spi]
        zeros = 0
        i = idx
        while i >= 0 and slot.types[i] == ZERO:
            zeros += 1
            i -= 1
        if zeros >= key_size:
            return 0
        if not slot.is_spill() or slot.reg.type != SCALAR or slot.spill_size() != key_size:
            return -1
        if idx != REG_SIZE - 1 or slot.reg.var.mask:
            return -1
        self.mark_precise_set(st, {}, {key.frameno: {spi}})
        return slot.reg.var.value

    def _check_map_compat(self, proto: Proto, hid: int, map_idx: int) -> None:
        mtype = getattr(self.maps[map_idx], "type", 0)
        need = _HELPER_MAPS.get(proto.name)
        allowed = _SPECIAL_MAPS.get(mtype)
        if proto.name == "tail_call" and mtype != MAP_PROG_ARRAY:
            raise self.reject("expected prog array map for tail call")
        if (need is not None and mtype not in need) or (allowed is not None and proto.name not in allowed):
            raise self.reject(f"cannot pass map_type {mtype} into func {helper_label(hid)}")

    def _check_mem_size(self, st: State, proto: Proto, regno: int, reg: Reg, zero_ok: bool) -> None:
        """check_mem_size_reg(): the size of the memory argument just before it."""
        mem_kind = proto.args[regno - 2]
        if reg.type != SCALAR:
            raise self.reject(f"R{regno} type={type_str(reg.type)} expected=scalar")
        if reg.smin < 0:
            raise self.reject(f"R{regno} min value is negative, either use unsigned or 'var &= const'")
        if reg.umin == 0 and not zero_ok:
            raise self.reject(f"R{regno} invalid zero-sized read: u64=[{reg.umin},{reg.umax}]")
        if reg.umax >= MAX_VAR_SIZE:
            raise self.reject(f"R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'")
        mem = st.frames[-1].regs[regno - 1]
        if mem_kind.endswith("_or_null") and mem.is_null():
            if reg.umax:
                raise self.reject(f"R{regno - 1} type=scalar expected={MEM_TYPES_TEXT}")
            return
        raw = mem_kind.startswith("uninit")  # the helper fills the memory: it need not be initialised
        write = raw or mem_kind == "mem_rw"   # the helper may change it: what the verifier knew of it is gone
        self.check_helper_mem(st, regno - 1, reg.umax, write, zero_ok, raw and reg.var.mask == 0)
        self.mark_precise(st, regno)

    def _check_const_str(self, regno: int, reg: Reg) -> None:
        if reg.type != PTR_TO_MAP_VALUE:
            raise self.reject(f"R{regno} type={type_str(reg.type)} expected=map_value")
        spec = self.maps[reg.map]
        if not (getattr(spec, "flags", 0) & (1 << 7) or getattr(spec, "readonly", False)):
            raise self.reject(f"R{regno} does not point to a readonly map'")
        if reg.var.mask:
            raise self.reject(f"R{regno} is not a constant address'")
        init = getattr(spec, "initial", None) or b""
        start = reg.off + reg.var.value
        if start >= spec.value_size:
            raise self.reject(f"R{regno} invalid access to map value, value_size={spec.value_size} off={start}")
        if b"\0" not in bytes(init[start:spec.value_size]).ljust(1, b"\0" if len(init) < spec.value_size else b"x"):
            raise self.reject("string is not zero-terminated")

    # -- references -------------------------------------------------------------------------------------------
    def acquire_reference(self, st: State, insn: int, kind: str = "ptr") -> int:
        rid = self.new_id()
        st.refs.append(Ref(rid, insn, kind))
        return rid

    def release_reference(self, st: State, rid: int) -> None:
        if st.find_ref(rid) is None:
            raise self.reject("release reference: reference not found")
        st.refs = [r for r in st.refs if r.id != rid]
        for _, _, _, r in list(st.all_regs()):
            if r.ref_obj_id == rid:
                set_unknown(r) if self.opts.privileged else set_not_init(r)

    def check_leaks(self, st: State, since: set[int] | None = None) -> None:
        for ref in st.refs:
            if (since is not None and ref.id in since) or ref.kind == "lock":
                continue
            raise self.reject(f"Unreleased reference id={ref.id} alloc_insn={ref.insn}",
                              "BPF_EXIT instruction in main prog would lead to reference leak")

    def clear_pkt_pointers(self, st: State) -> None:
        for _, _, _, r in list(st.all_regs()):
            base = r.type & 0xFF
            # packet pointers, and slices of skb/xdp dynptrs, which point into the packet too
            if base in PKT_TYPES or base == PTR_TO_PACKET_END or (base == PTR_TO_MEM and r.dyn_type in (3, 4)):
                set_unknown(r) if self.opts.privileged else set_not_init(r)

    # -- bpf-to-bpf calls -----------------------------------------------------------------------------------------
    def check_subprog_call(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        target = i + 1 + insn.imm
        if len(st.frames) >= MAX_FRAMES:
            raise self.reject(f"the call stack of {len(st.frames) + 1} frames is too deep")
        caller = st.frames[-1]
        callee = new_frame(len(st.frames), i, target)
        for r in range(1, 6):
            callee.regs[r].assign(caller.regs[r])
        callee.in_instance = caller.in_instance
        self.record(st)
        for r in range(0, 6):
            set_not_init(caller.regs[r])
        st.frames.append(callee)
        st.insn = target
        if self.log:
            self.log.line(f"{i}: call to subprog at {target}, frame{callee.frameno}")

    def _push_callback(self, st: State, proto: Proto, meta: CallMeta) -> None:
        """Queue a path that runs the callback once and then returns to the call site (push_callback_call)."""
        i = self.cur_insn
        if meta.func < 0:
            raise self.reject("callback function not static")
        if len(st.frames) >= MAX_FRAMES:
            raise self.reject(f"the call stack of {len(st.frames) + 1} frames is too deep")
        self.record(st)
        cb = self.push(st, meta.func)
        caller = cb.frames[-1]
        callee = new_frame(len(cb.frames), i, meta.func)
        callee.in_callback = True
        callee.callback_ret = (0, proto.callback[2])
        callee.callback_kind = self.insns[i].imm
        callee.entry_refs = frozenset(r.id for r in cb.refs)
        callee.in_instance = caller.in_instance
        if proto.name == "loop":
            set_unknown(callee.regs[1])
            callee.regs[2].assign(caller.regs[3])
        else:  # for_each_map_elem
            m = caller.regs[1].map
            set_pointer(callee.regs[1], CONST_PTR_TO_MAP)
            callee.regs[1].map = m
            set_pointer(callee.regs[2], PTR_TO_MAP_KEY)
            callee.regs[2].map = m
            set_pointer(callee.regs[3], PTR_TO_MAP_VALUE)
            callee.regs[3].map = m
            callee.regs[4].assign(caller.regs[3])
        cb.frames.append(callee)
        cb.callback_depth += 1

    # -- exit ------------------------------------------------------------------------------------------------------
    def check_exit(self, st: State) -> bool:
        """Process `exit`; True when the path ends here."""
        frame = st.frames[-1]
        if st.instance >= 0 and len(st.frames) - 1 == st.instance_base:
            self.record(st)
            return True  # the end of an instance body ends the path (RFC patch 07)
        if len(st.frames) > 1:
            r0 = frame.regs[0]
            if frame.in_callback:
                if r0.type != SCALAR:
                    raise self.reject("R0 not a scalar value" if r0.type != NOT_INIT else "R0 !read_ok")
                self.mark_precise(st, 0)
                lo, hi = frame.callback_ret
                if r0.smin < lo or r0.smax > hi:
                    raise self.reject(f"At callback return the register R0 has smin={r0.smin} smax={r0.smax} "
                                      f"should have been in [{lo}, {hi}]")
                self.check_leaks(st, set(frame.entry_refs))
                self.record(st, ("exit", True))
                st.frames.pop()
                st.insn = frame.callsite
                self.callback_returned(st, frame.callsite)
                return False
            if r0.type & 0xFF == PTR_TO_STACK:
                raise self.reject("cannot return stack pointer to the caller")
            self.record(st, ("exit", False))
            st.frames.pop()
            st.frames[-1].regs[0].assign(r0)
            st.insn = frame.callsite + 1
            return False
        if st.instance >= 0:
            self.record(st)
            return True
        if st.held_lock() is not None:
            raise self.reject("BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region")
        self.check_leaks(st)
        r0 = self.read_reg(st, 0)
        rng = return_range(self.prog_type, self.program.attach_type)
        if self.prog_type == "cgroup_skb" and self.program.attach_type == "cgroup_inet_egress":
            rng = (0, 3)  # egress may also ask for congestion notification (NET_XMIT_CN)
        if rng is not None:
            if r0.type != SCALAR:
                raise self.reject(f"At program exit the register R0 is not a known value ({type_str(r0.type)})")
            self.mark_precise(st, 0)
            lo, hi = rng
            if r0.smin < lo or r0.smax > hi:
                raise self.reject(f"At program exit the register R0 has smin={r0.smin} smax={r0.smax} "
                                  f"should have been in [{lo}, {hi}]")
        self.record(st)
        return True

    def callback_returned(self, st: State, callsite: int) -> None:
        """After a loop callback returns to its call site: widen against the previous visit of the site."""
        helper = self.insns[callsite].imm
        p = proto_for(helper)
        if p is not None and p.name in LOOP_CALLBACK_HELPERS:
            prev = self.find_prev_entry(st, callsite)
            if prev is not None:
                self.widen_imprecise(prev, st)

    # -- ld_abs / ld_ind ---------------------------------------------------------------------------------------
    def check_ld_abs(self, st: State, insn: Insn) -> None:
        if self.prog_type not in ("socket_filter", "sched_cls", "sched_act"):
            raise self.reject("BPF_LD_[ABS|IND] instructions not allowed for this program type")
        regs = st.frames[-1].regs
        ctx = self.read_reg(st, 6)
        if isa.mem_mode(insn.opcode) == isa.IND:
            self.read_reg(st, insn.src)
        if st.held_lock() is not None:
            raise self.reject("BPF_LD_[ABS|IND] cannot be used inside bpf_spin_lock-ed region")
        if st.has_references():
            raise self.reject("BPF_LD_[ABS|IND] cannot be mixed with socket references")
        if len(st.frames) > 1:
            raise self.reject("BPF_LD_[ABS|IND] instructions cannot be mixed with bpf-to-bpf calls")
        if ctx.type != PTR_TO_CTX:
            raise self.reject("at the time of BPF_LD_ABS|IND R6 != pointer to skb")
        for r in range(0, 6):
            set_not_init(regs[r])
        set_unknown(regs[0])

    # -- lddw ------------------------------------------------------------------------------------------------------
    def check_lddw(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        d = self.write_reg(st, insn.dst)
        nxt = self.insns[i + 1]
        src = insn.src
        if src == 0:
            set_const(d, isa.lddw_value(insn, nxt))
            return
        if src in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_IDX_VALUE):
            idx = insn.imm
            if not (0 <= idx < len(self.program.maps)):
                raise self.reject(f"fd {idx} is not pointing to valid bpf_map")
            spec = self.maps[idx]
            if getattr(spec, "spin_lock_off", None) is not None:  # check_map_prog_compatibility()
                if self.prog_type == "socket_filter":
                    raise self.reject("socket filter progs cannot use bpf_spin_lock yet")
                if self.prog_type in TRACING:
                    raise self.reject("tracing progs cannot use bpf_spin_lock yet")
            if src == isa.PSEUDO_MAP_IDX:
                set_pointer(d, CONST_PTR_TO_MAP)
            else:
                off = nxt.imm & 0xFFFFFFFF
                if off >= spec.value_size:
                    raise self.reject(f"invalid access to map value pointer, value_size={spec.value_size} off={off}")
                set_pointer(d, PTR_TO_MAP_VALUE, off)
            d.map = idx
            return
        if src == isa.PSEUDO_FUNC:
            set_pointer(d, PTR_TO_FUNC)
            d.subprog = i + 1 + insn.imm
            return
        if src in (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE):
            raise self.reject(f"fd {insn.imm} is not pointing to valid bpf_map")
        raise self.reject(f"lddw with src {src} (BTF id ksym) is not supported")

