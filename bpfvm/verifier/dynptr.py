"""Dynptr and iterator objects on the stack (process_dynptr_func, mark_stack_slots_dynptr, process_iter_arg,
process_iter_next_call).

A dynptr takes two stack slots (16 bytes) marked DYNPTR; the first (lower) slot holds its type, its id (for
the slices taken from it) and, for ring buffer dynptrs, the reference that must be submitted or discarded.
An iterator takes its struct's size in ITER slots and holds a reference released by its `destroy`. The
`next` call forks the path: the iterator drained (r0 = NULL) and active (r0 = a pointer, one level deeper).
"""

from __future__ import annotations

from .ctx import PKT_WRITE
from .regs import (
    CONST_PTR_TO_DYNPTR, MAYBE_NULL, PTR_TO_MEM, PTR_TO_STACK, RDONLY, Reg, set_const, set_not_init,
    set_pointer, set_unknown,
)
from .state import DYNPTR, INVALID, ITER, ITER_ACTIVE, ITER_DRAINED, REG_SIZE, Frame, State

LOCAL, RINGBUF, SKB, XDP = 1, 2, 3, 4
DYNPTR_NAMES = {LOCAL: "local", RINGBUF: "ringbuf", SKB: "skb", XDP: "xdp"}
_HELPER_KIND_TYPE = {"dynptr_local_uninit": LOCAL, "dynptr_ringbuf_uninit": RINGBUF,
                     "dynptr_ringbuf_release": RINGBUF}


class DynptrMixin:
    # -- locating the object -----------------------------------------------------------------------------
    def _obj_spi(self, st: State, regno: int, reg: Reg, nslots: int, what: str) -> tuple[Frame, int, int]:
        if reg.type != PTR_TO_STACK:
            raise self.reject(f"arg#{regno - 1} expected pointer to stack or {what}")
        if reg.var.mask:
            raise self.reject(f"{what} has to be at a constant offset")
        off = reg.off + (reg.var.value - (1 << 64) if reg.var.value >> 63 else reg.var.value)
        if off % REG_SIZE or off >= 0 or off < -512:
            raise self.reject(f"cannot pass in {what} at an offset={off}")
        spi = (-off - 1) // REG_SIZE
        if spi - nslots + 1 < 0:
            raise self.reject(f"cannot pass in {what} at an offset={off}")
        frame = st.frames[reg.frameno]
        return frame, spi, off

    def _dynptr_valid(self, frame: Frame, spi: int) -> bool:
        if spi >= len(frame.stack):
            return False
        a, b = frame.stack[spi], frame.stack[spi - 1]
        return (all(t == DYNPTR for t in a.types) and all(t == DYNPTR for t in b.types) and a.reg.dyn_first
                and not b.reg.dyn_first)

    def dynptr_at(self, st: State, regno: int, reg: Reg) -> Reg:
        """The state of an initialised dynptr argument (its first slot's register)."""
        if reg.type == CONST_PTR_TO_DYNPTR:
            return reg
        frame, spi, _ = self._obj_spi(st, regno, reg, 2, "dynptr")
        if not self._dynptr_valid(frame, spi):
            raise self.reject(f"Expected an initialized dynptr as arg #{regno - 1}")
        return frame.stack[spi].reg

    def _mark_dynptr(self, st: State, regno: int, reg: Reg, dtype: int, ref: int) -> int:
        frame, spi, off = self._obj_spi(st, regno, reg, 2, "dynptr")
        frame.grow(-off)
        self.note_stack_depth(st, reg.frameno, -off)
        for s in (spi, spi - 1):
            self.destroy_special_slot(st, frame, s)
        did = self.new_id()
        for s, first in ((spi, True), (spi - 1, False)):
            slot = frame.stack[s]
            slot.types = [DYNPTR] * REG_SIZE
            r = Reg()
            set_pointer(r, PTR_TO_STACK)
            r.dyn_type = dtype
            r.dyn_first = first
            r.id = did
            r.ref_obj_id = ref
            slot.reg = r
        return did

    def destroy_special_slot(self, st: State, frame: Frame, spi: int) -> None:
        """destroy_if_dynptr_stack_slot(): overwriting part of a dynptr destroys all of it (and its slices);
        a referenced one may not be overwritten. Iterator slots just lose their contents (their reference
        stays and is reported as unreleased)."""
        if spi >= len(frame.stack):
            return
        slot = frame.stack[spi]
        if slot.types[0] == DYNPTR:
            first = spi if slot.reg.dyn_first else spi + 1
            head = frame.stack[first].reg
            if head.ref_obj_id:
                raise self.reject("cannot overwrite referenced dynptr")
            did = head.id
            for s in (first, first - 1):
                frame.stack[s].types = [INVALID] * REG_SIZE
                set_not_init(frame.stack[s].reg)
            self._invalidate_slices(st, did)
        elif slot.types[0] == ITER:
            slot.types = [INVALID] * REG_SIZE
            set_not_init(slot.reg)

    def _invalidate_slices(self, st: State, did: int) -> None:
        for _, _, _, r in list(st.all_regs()):
            if (r.type & 0xFF) == PTR_TO_MEM and r.parent_id == did:
                set_unknown(r) if self.opts.privileged else set_not_init(r)

    # -- helper arguments -------------------------------------------------------------------------------------
    def check_dynptr_arg(self, st: State, regno: int, reg: Reg, kind: str, meta) -> None:
        if kind.endswith("_uninit"):
            self._obj_spi(st, regno, reg, 2, "dynptr")
            meta.dynptr = ("init", regno, _HELPER_KIND_TYPE[kind])
            return
        head = self.dynptr_at(st, regno, reg)
        if kind == "dynptr_ringbuf_release":
            if head.dyn_type != RINGBUF:
                raise self.reject(f"Expected a dynptr of type ringbuf but got a dynptr of type "
                                  f"{DYNPTR_NAMES.get(head.dyn_type, '?')}")
            if reg.type == CONST_PTR_TO_DYNPTR:
                raise self.reject("cannot release unowned const bpf_dynptr")
            meta.dynptr = ("release", regno, head.ref_obj_id, head.id)
            return
        meta.dynptr = ("use", regno, head.dyn_type, head.id, head.ref_obj_id)

    def after_dynptr_helper(self, st: State, proto, meta) -> None:
        what = meta.dynptr
        regs = st.frames[-1].regs
        if what[0] == "init":
            _, regno, dtype = what
            ref = self.acquire_reference(st, self.cur_insn, "dynptr") if dtype == RINGBUF else 0
            self._mark_dynptr(st, regno, regs[regno], dtype, ref)
        elif what[0] == "release":
            _, regno, ref, did = what
            frame, spi, _ = self._obj_spi(st, regno, regs[regno], 2, "dynptr")
            for s in (spi, spi - 1):
                frame.stack[s].types = [INVALID] * REG_SIZE
                set_not_init(frame.stack[s].reg)
            self._invalidate_slices(st, did)
            if ref:
                self.release_reference(st, ref)

    def dynptr_data_result(self, st: State, r0: Reg, meta) -> None:
        _, _, dtype, did, ref = meta.dynptr
        set_pointer(r0, PTR_TO_MEM | MAYBE_NULL)
        r0.mem_size = max(meta.mem_size, 0)
        r0.id = self.new_id()
        r0.parent_id = did
        r0.ref_obj_id = ref
        r0.dyn_type = dtype

    # -- kfunc arguments ------------------------------------------------------------------------------------
    def check_kfunc_dynptr_arg(self, st: State, regno: int, reg: Reg, p, meta: dict) -> None:
        if p.suffix == "__uninit":
            self._obj_spi(st, regno, reg, 2, "dynptr")
            meta["uninit_dynptr"] = regno
            return
        head = self.dynptr_at(st, regno, reg)
        meta["dynptr"] = (regno, head.dyn_type, head.id, head.ref_obj_id)

    def check_iter_arg(self, st: State, regno: int, reg: Reg, p, proto, meta: dict) -> None:
        nslots = max(p.size // REG_SIZE, 1)
        frame, spi, off = self._obj_spi(st, regno, reg, nslots, f"iter_{p.struct}")
        name = proto.name
        if name.endswith("_new"):
            for s in range(spi, spi - nslots, -1):
                if s < len(frame.stack) and frame.stack[s].types[0] == ITER:
                    raise self.reject(f"expected uninitialized iter_{p.struct} as arg #{regno - 1}")
            meta["iter"] = ("new", frame, spi, off, nslots, p.struct, reg.frameno)
            return
        ok = spi < len(frame.stack) and all(
            s < len(frame.stack) and frame.stack[s].types[0] == ITER and frame.stack[s].reg.iter_kind == p.struct
            for s in range(spi, spi - nslots, -1))
        if not ok:
            raise self.reject(f"expected an initialized iter_{p.struct} as arg #{regno - 1}")
        kind = "destroy" if name.endswith("_destroy") else "next" if name.endswith("_next") else "use"
        meta["iter"] = (kind, frame, spi, off, nslots, p.struct, reg.frameno)

    # -- kfuncs with their own semantics ---------------------------------------------------------------------
    def special_kfunc(self, st: State, name: str, proto, meta: dict):
        regs = st.frames[-1].regs
        it = meta.get("iter")
        if it is not None:
            kind, frame, spi, off, nslots, struct, frameno = it
            if kind == "new":
                frame.grow(-off)
                self.note_stack_depth(st, frameno, -off)
                for s in range(spi, spi - nslots, -1):
                    self.destroy_special_slot(st, frame, s)
                ref = self.acquire_reference(st, self.cur_insn, "iter")
                for k, s in enumerate(range(spi, spi - nslots, -1)):
                    slot = frame.stack[s]
                    slot.types = [ITER] * REG_SIZE
                    r = Reg()
                    set_pointer(r, PTR_TO_STACK)
                    r.iter_kind = struct
                    r.iter_state = ITER_ACTIVE
                    r.iter_depth = 0
                    r.ref_obj_id = ref if k == 0 else 0
                    slot.reg = r
            elif kind == "destroy":
                head = frame.stack[spi].reg
                ref = head.ref_obj_id
                for s in range(spi, spi - nslots, -1):
                    frame.stack[s].types = [INVALID] * REG_SIZE
                    set_not_init(frame.stack[s].reg)
                if ref:
                    self.release_reference(st, ref)
            elif kind == "next":
                self._iter_next(st, frame, spi, proto)
                return "next"
        if "uninit_dynptr" in meta:
            regno = meta["uninit_dynptr"]
            if name == "bpf_dynptr_from_skb":
                dtype, ref = SKB, 0
            elif name == "bpf_dynptr_from_xdp":
                dtype, ref = XDP, 0
            elif name == "bpf_dynptr_clone" and meta.get("dynptr") is not None:
                _, dtype, _, ref = meta["dynptr"]
            else:
                dtype, ref = LOCAL, 0
            self._mark_dynptr(st, regno, regs[regno], dtype, ref)
            return None
        if name in ("bpf_dynptr_slice", "bpf_dynptr_slice_rdwr") and meta.get("dynptr") is not None:
            _, dtype, did, ref = meta["dynptr"]
            size = meta["consts"].get(3, 0)
            rdwr = name.endswith("_rdwr")
            if rdwr and dtype in (SKB, XDP) and self.prog_type not in PKT_WRITE:
                raise self.reject("the prog does not allow writes to packet data")

            def slice_result(r0: Reg) -> None:
                set_pointer(r0, PTR_TO_MEM | MAYBE_NULL | (0 if rdwr else RDONLY))
                r0.mem_size = size
                r0.id = self.new_id()
                r0.parent_id = did
                r0.ref_obj_id = ref
                r0.dyn_type = dtype

            return slice_result
        return None

    def _iter_next(self, st: State, frame: Frame, spi: int, proto) -> None:
        """process_iter_next_call(): the drained path continues here; the active one is queued."""
        i = self.cur_insn
        regs = st.frames[-1].regs
        head = frame.stack[spi].reg
        fi = frame.frameno
        if head.iter_state == ITER_ACTIVE:
            prev = self.find_prev_entry(st, i)
            self.record(st)
            active = self.push(st, i + 1)
            ahead = active.frames[fi].stack[spi].reg
            ahead.iter_state = ITER_ACTIVE
            ahead.iter_depth += 1
            if prev is not None:
                self.widen_imprecise(prev, active)
            aregs = active.frames[-1].regs
            for r in range(1, 6):
                set_not_init(aregs[r])
            set_pointer(aregs[0], PTR_TO_MEM | RDONLY)
            aregs[0].mem_size = proto.ret_size or 4
        head.iter_state = ITER_DRAINED
        for r in range(1, 6):
            set_not_init(regs[r])
        set_const(regs[0], 0)
        st.insn = i + 1


