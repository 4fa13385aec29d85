"""Memory accesses: loads and stores through every pointer type (check_mem_access), the stack's spill/fill
rules, and the memory arguments of helpers (check_helper_mem_access).

Every access that passes records in the slot's facts whether its address was proved inside a region of
known size (`proved_safe`) and, for the context, which field it touches (`ctx_field`).
"""

from __future__ import annotations

from . import bounds
from . import tnum as tn
from .ctx import PKT_WRITE, check_ctx
from .regs import (
    CONST_PTR_TO_DYNPTR, CONST_PTR_TO_MAP, KERNEL_VALUE, MAYBE_NULL, NOT_INIT, PTR_TO_BTF_ID, PTR_TO_CTX,
    PTR_TO_FUNC, PTR_TO_MAP_KEY, PTR_TO_MAP_VALUE, PTR_TO_MEM, PTR_TO_PACKET, PTR_TO_PACKET_END,
    PTR_TO_PACKET_META, PTR_TO_STACK, RDONLY, SCALAR, Reg, set_const,
    set_kernel_value, set_pointer, set_unknown, type_str,
)
from .state import DYNPTR, INVALID, ITER, MISC, REG_SIZE, SPILL, ZERO, Frame, State

MAX_VAR_OFF = 1 << 29
_NO_ACCESS = frozenset({PTR_TO_PACKET_END, PTR_TO_FUNC, PTR_TO_BTF_ID, CONST_PTR_TO_DYNPTR})
MAX_STACK = 512
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8


# fentry/fexit/tp_btf/iter ("tracing") and lsm programs get kernel objects as BTF-typed arguments; bpfvm gives
# them u64 values (as raw tracepoints), so a dereference of an argument is refused with this explanation.
BTF_ARG_TYPES = frozenset({"tracing", "lsm"})
BTF_ARGS_HINT = (" (bpfvm passes fentry/fexit/tp_btf/iter/lsm arguments as plain u64 values, not BTF-typed kernel "
                 "pointers)")


def tnum_text(t: tn.Tnum) -> str:
    """How the kernel prints a var_off in error messages: the value when constant, else (value; mask)."""
    if t.mask == 0:
        return str(bounds.s64(t.value))
    return f"({t.value:#x}; {t.mask:#x})"


class MemoryMixin:
    """Mixed into the Verifier; uses Core's state and helpers."""

    # -- dispatch ---------------------------------------------------------------------------------------------
    def check_mem_access(self, st: State, regno: int, off: int, size: int, write: bool, value_regno: int,
                         *, imm: int | None = None, sign_ext: bool = False, atomic: bool = False) -> None:
        """A load (`value_regno` receives the value, -1 to only check) or a store (`value_regno` holds the
        value, or `imm` for BPF_ST) of `size` bytes at `regs[regno] + off`."""
        regs = st.frames[-1].regs
        reg = regs[regno]
        aux = self.aux[self.cur_insn]
        t = reg.type
        base = t & 0xFF
        if t & MAYBE_NULL or t in (SCALAR, NOT_INIT, CONST_PTR_TO_MAP) or base in _NO_ACCESS:
            hint = BTF_ARGS_HINT if t == SCALAR and self.prog_type in BTF_ARG_TYPES else ""
            raise self.reject(f"R{regno} invalid mem access '{type_str(t)}'{hint}")
        if base == KERNEL_VALUE:
            aux.note_access(False, "kernel")
            if not write and value_regno >= 0:
                set_kernel_value(regs[value_regno])
            return
        total = off + reg.off
        if base == PTR_TO_STACK:
            self._stack_access(st, regno, reg, off, size, write, value_regno, imm)
            aux.note_access(True, "stack")
        elif base == PTR_TO_MAP_VALUE:
            self._map_value_access(st, regno, reg, total, size, write, value_regno)
            aux.note_access(True, "map_value")
        elif base == PTR_TO_MAP_KEY:
            if write:
                raise self.reject(f"write to change key R{regno} not allowed")
            spec = self.maps[reg.map]
            self.check_region(regno, reg, total, size, spec.key_size, False)
            if value_regno >= 0:
                set_unknown(regs[value_regno])
            aux.note_access(True, "map_key")
        elif base == PTR_TO_MEM:
            if write and t & RDONLY:
                raise self.reject(f"R{regno} cannot write into {type_str(t)}")
            self.check_region(regno, reg, total, size, reg.mem_size, False)
            if not write and value_regno >= 0:
                set_unknown(regs[value_regno])
            aux.note_access(True, "mem")
        elif base == PTR_TO_CTX:
            if atomic:
                raise self.reject(f"BPF_ATOMIC stores into R{regno} {type_str(t)} is not allowed")
            self._ctx_access(st, regno, reg, off, size, write, value_regno)
        elif base in (PTR_TO_PACKET, PTR_TO_PACKET_META):
            if atomic:
                raise self.reject(f"BPF_ATOMIC stores into R{regno} {type_str(t)} is not allowed")
            if write and self.prog_type not in PKT_WRITE:
                raise self.reject("cannot write into packet")
            self.check_packet_access(regno, reg, total, size, False)
            if not write and value_regno >= 0:
                set_unknown(regs[value_regno])
            aux.note_access(True, "packet")
        else:
            raise self.reject(f"R{regno} invalid mem access '{type_str(t)}'")
        self._save_ptr_type(base)
        if not write and value_regno >= 0 and size < REG_SIZE and regs[value_regno].type == SCALAR:
            if sign_ext:
                bounds.coerce_to_size_sx(regs[value_regno], size)
            else:
                bounds.coerce_to_size(regs[value_regno], size)

    def _save_ptr_type(self, base: int) -> None:
        aux = self.aux[self.cur_insn]
        if aux.ptr_type < 0:
            aux.ptr_type = base
        elif aux.ptr_type != base and PTR_TO_CTX in (aux.ptr_type, base):
            raise self.reject("same insn cannot be used with different pointers")

    # -- regions of known size ----------------------------------------------------------------------------
    def mem_error(self, regno: int, reg: Reg, off: int, size: int, mem_size: int) -> str:
        base = reg.type & 0xFF
        if base == PTR_TO_MAP_KEY:
            return f"invalid access to map key, key_size={mem_size} off={off} size={size}"
        if base == PTR_TO_MAP_VALUE:
            return f"invalid access to map value, value_size={mem_size} off={off} size={size}"
        if base in (PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END):
            return f"invalid access to packet, off={off} size={size}, R{regno}(id={reg.id},off={off},r={mem_size})"
        return f"invalid access to memory, mem_size={mem_size} off={off} size={size}"

    def _in_bounds(self, off: int, size: int, mem_size: int, zero_ok: bool) -> bool:
        size_ok = size > 0 or (size == 0 and zero_ok)
        return off >= 0 and size_ok and off + size <= mem_size

    def check_region(self, regno: int, reg: Reg, off: int, size: int, mem_size: int, zero_ok: bool) -> None:
        """check_mem_region_access(): both ends of the variable offset must stay inside [0, mem_size)."""
        if reg.smin < 0 and (reg.smin == bounds.S64_MIN or not (-(1 << 31) <= off + reg.smin < (1 << 31))
                             or reg.smin + off < 0):
            raise self.reject(f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) "
                              "check.")
        if not self._in_bounds(reg.smin + off, size, mem_size, zero_ok):
            raise self.reject(self.mem_error(regno, reg, reg.smin + off, size, mem_size),
                              f"R{regno} min value is outside of the allowed memory range")
        if reg.umax >= MAX_VAR_OFF:
            raise self.reject(f"R{regno} unbounded memory access, make sure to bounds check any such access")
        if not self._in_bounds(reg.umax + off, size, mem_size, zero_ok):
            raise self.reject(self.mem_error(regno, reg, reg.umax + off, size, mem_size),
                              f"R{regno} max value is outside of the allowed memory range")

    def check_packet_access(self, regno: int, reg: Reg, off: int, size: int, zero_ok: bool) -> None:
        if reg.smin < 0:
            raise self.reject(f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) "
                              "check.")
        if reg.range < 0 or not self._in_bounds(off, size, reg.range, zero_ok):
            raise self.reject(self.mem_error(regno, reg, off, size, max(reg.range, 0)),
                              f"R{regno} offset is outside of the packet")

    def _map_value_access(self, st: State, regno: int, reg: Reg, off: int, size: int, write: bool,
                          value_regno: int) -> None:
        spec = self.maps[reg.map]
        flags = getattr(spec, "flags", 0)
        readonly = bool(flags & BPF_F_RDONLY_PROG) or getattr(spec, "readonly", False)
        if write and readonly:
            raise self.reject(f"write into map forbidden, value_size={spec.value_size} off={off} size={size}")
        if not write and flags & BPF_F_WRONLY_PROG:
            raise self.reject(f"read from map forbidden, value_size={spec.value_size} off={off} size={size}")
        self.check_region(regno, reg, off, size, spec.value_size, False)
        self.check_special_fields(reg, off, size)
        if write or value_regno < 0:
            return
        dst = st.frames[-1].regs[value_regno]
        init = getattr(spec, "initial", None)
        if readonly and init is not None and reg.var.mask == 0 and size in (1, 2, 4, 8):
            start = off + reg.var.value
            chunk = bytes(init[start:start + size]).ljust(size, b"\0")
            set_const(dst, int.from_bytes(chunk, "little"))
        else:
            set_unknown(dst)

    def check_special_fields(self, reg: Reg, off: int, size: int) -> None:
        """Neither loads, stores nor helpers may touch a map value's `struct bpf_spin_lock` (the kernel's
        check_map_access over the value's btf_record)."""
        lock = getattr(self.maps[reg.map], "spin_lock_off", None)
        if lock is not None and reg.smin + off < lock + 4 and lock < reg.umax + off + size:
            raise self.reject("bpf_spin_lock cannot be accessed directly by load/store")

    # -- context ------------------------------------------------------------------------------------------------
    def _ctx_access(self, st: State, regno: int, reg: Reg, off: int, size: int, write: bool,
                    value_regno: int) -> None:
        if reg.off:
            raise self.reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
        if reg.var.mask or reg.var.value:
            raise self.reject(f"variable ctx access var_off={tnum_text(reg.var)} off={off} size={size}")
        field = check_ctx(self.prog_type, off, size, write)
        if field is None:
            raise self.reject(f"invalid bpf_context access off={off} size={size}")
        if field.unsupported:
            raise self.reject(f"ctx field {field.name} (off={off} size={size}) is not modelled by bpfvm")
        aux = self.aux[self.cur_insn]
        prev = aux.ctx_field
        if prev is not None and (prev.off, prev.size) != (field.off, field.size):
            aux.ctx_field = "mixed"
        elif prev != "mixed":
            aux.ctx_field = field
        aux.note_access(True, "ctx")
        if write or value_regno < 0:
            return
        dst = st.frames[-1].regs[value_regno]
        if field.reg_type == SCALAR:
            set_unknown(dst)
        else:
            set_pointer(dst, field.reg_type)
            dst.range = 0

    # -- stack -----------------------------------------------------------------------------------------------
    def check_stack_bounds(self, regno: int, reg: Reg, off: int, size: int, write: bool,
                           kind: str = "") -> tuple[int, int]:
        """check_stack_access_within_bounds(); returns [min_off, max_off) relative to the frame pointer."""
        extra = kind or (" write to" if write else " read from")
        if reg.var.mask == 0:
            min_off = bounds.s64(reg.var.value) + off
            max_off = min_off + size
        else:
            if reg.smax >= MAX_VAR_OFF or reg.smin <= -MAX_VAR_OFF:
                raise self.reject(f"invalid unbounded variable-offset{extra} stack R{regno}")
            min_off = reg.smin + off
            max_off = reg.smax + off + size
        lo = -MAX_STACK
        if not (write or self.opts.privileged):
            lo = -self.stack_frame_of(reg).allocated
        bad = min_off < lo or min_off > -1 or max_off > 0 or size < 0
        if bad:
            if reg.var.mask == 0:
                raise self.reject(f"invalid{extra} stack R{regno} off={off} size={size}")
            raise self.reject(f"invalid variable-offset{extra} stack R{regno} var_off={tnum_text(reg.var)} "
                              f"off={off} size={size}")
        return min_off, max_off

    def stack_frame_of(self, reg: Reg) -> Frame:
        return self._cur_state.frames[reg.frameno]

    def _stack_access(self, st: State, regno: int, reg: Reg, off: int, size: int, write: bool,
                      value_regno: int, imm: int | None) -> None:
        total = off + reg.off
        self._cur_state = st
        # check_ptr_alignment(): stack accesses are always strictly aligned.
        if not tn.is_aligned(tn.add(reg.var, tn.const(total)), size):
            raise self.reject(f"misaligned stack access off {tnum_text(reg.var)}+{reg.off}+{off} size {size}")
        min_off, max_off = self.check_stack_bounds(regno, reg, total, size, write)
        frame = st.frames[reg.frameno]
        frame.grow(-min_off)
        self.note_stack_depth(st, reg.frameno, -min_off)
        if reg.var.mask == 0:
            if write:
                self.stack_write_fixed(st, frame, min_off, size, value_regno, imm)
            else:
                self.stack_read_fixed(st, frame, min_off, size, value_regno)
        else:
            if write:
                self.stack_write_var(st, frame, min_off, max_off, size, value_regno, imm)
            else:
                self.stack_read_var(st, regno, frame, reg, total, min_off, max_off, size, value_regno)

    def note_stack_depth(self, st: State, frameno: int, depth: int) -> None:
        sub = st.frames[frameno].subprog
        if depth > self.stack_depth.get(sub, 0):
            self.stack_depth[sub] = depth

    def stack_write_fixed(self, st: State, frame: Frame, off: int, size: int, value_regno: int,
                          imm: int | None) -> None:
        """check_stack_write_fixed_off()."""
        slot_idx = -off - 1
        spi = slot_idx // REG_SIZE
        slot = frame.stack[spi]
        cur = st.frames[-1]
        vreg = cur.regs[value_regno] if value_regno >= 0 else None
        if slot.types[0] in (DYNPTR, ITER) or slot.types[REG_SIZE - 1] in (DYNPTR, ITER):
            self.destroy_special_slot(st, frame, spi)
        aligned = off % REG_SIZE == 0
        if vreg is not None and aligned and vreg.type == SCALAR:
            spilled = vreg.copy()
            if self._reg_width(vreg) <= size * 8:
                if vreg.id == 0 and vreg.var.mask:
                    vreg.id = self.new_id()
                    spilled.id = vreg.id
            else:
                spilled.id = 0
            self._save_spill(slot, spilled, size)
            self.hist_extra = ("stack", frame.frameno, spi)
        elif vreg is None and aligned and imm is not None and self.opts.privileged:
            r = Reg()
            set_const(r, imm)
            self._save_spill(slot, r, size)
            self.hist_extra = ("stack", frame.frameno, spi)
        elif vreg is not None and vreg.type != SCALAR:
            if size != REG_SIZE:
                raise self.reject("invalid size of register spill")
            if frame is not cur and vreg.base == PTR_TO_STACK:
                raise self.reject("cannot spill pointers to stack into stack frame of the caller")
            self._save_spill(slot, vreg.copy(), size)
            self.hist_extra = ("stack", frame.frameno, spi)
        else:
            kind = MISC
            if slot.is_special():
                slot.types = [INVALID if k == INVALID else MISC for k in slot.types]
            set_unknown(slot.reg)
            slot.reg.type = NOT_INIT
            if (vreg is not None and vreg.is_null()) or (vreg is None and imm == 0):
                if vreg is not None:
                    self.mark_precise(st, value_regno)
                kind = ZERO
            for i in range(size):
                slot.types[(slot_idx - i) % REG_SIZE] = kind

    @staticmethod
    def _reg_width(r: Reg) -> int:
        return max(r.umax.bit_length(), 1) if r.smin >= 0 else 64

    @staticmethod
    def _save_spill(slot, reg: Reg, size: int) -> None:
        slot.reg = reg
        for k in range(REG_SIZE, REG_SIZE - size, -1):
            slot.types[k - 1] = SPILL
        for k in range(REG_SIZE - size, 0, -1):
            if slot.types[k - 1] in (SPILL, DYNPTR, ITER):
                slot.types[k - 1] = MISC

    def stack_read_fixed(self, st: State, frame: Frame, off: int, size: int, value_regno: int) -> None:
        """check_stack_read_fixed_off()."""
        slot_idx = -off - 1
        spi = slot_idx // REG_SIZE
        slot = frame.stack[spi]
        regs = st.frames[-1].regs
        dst = regs[value_regno] if value_regno >= 0 else None
        if slot.is_spill():
            sreg = slot.reg
            spill_size = slot.spill_size()
            if size != REG_SIZE or spill_size != REG_SIZE:
                if sreg.type != SCALAR:
                    raise self.reject("invalid size of register fill")
                if dst is None:
                    return
                if size <= spill_size and off % REG_SIZE == 0:
                    dst.assign(sreg)
                    if self._reg_width(sreg) > size * 8:
                        dst.id = 0
                    self.hist_extra = ("stack", frame.frameno, spi)
                else:
                    spill_cnt = zero_cnt = 0
                    for i in range(size):
                        k = slot.types[(slot_idx - i) % REG_SIZE]
                        if k == SPILL:
                            spill_cnt += 1
                        elif k == ZERO:
                            zero_cnt += 1
                        elif k == MISC or (k == INVALID and self.opts.privileged):
                            pass
                        else:
                            raise self.reject(f"invalid read from stack off {off}+{i} size {size}")
                    if spill_cnt == size and sreg.var == tn.ZERO:
                        set_const(dst, 0)
                        self.hist_extra = ("stack", frame.frameno, spi)
                    elif zero_cnt == size:
                        set_const(dst, 0)
                    else:
                        set_unknown(dst)
            elif dst is not None:
                dst.assign(sreg)
                self.hist_extra = ("stack", frame.frameno, spi)
            return
        zeros = 0
        for i in range(size):
            k = slot.types[(slot_idx - i) % REG_SIZE]
            if k == ZERO:
                zeros += 1
            elif k == MISC or (k == INVALID and self.opts.privileged):
                pass
            else:
                raise self.reject(f"invalid read from stack off {off}+{i} size {size}")
        if dst is not None:
            if zeros == size:
                set_const(dst, 0)
            else:
                set_unknown(dst)

    def stack_write_var(self, st: State, frame: Frame, min_off: int, max_off: int, size: int,
                        value_regno: int, imm: int | None) -> None:
        """check_stack_write_var_off(): every byte that may be written becomes MISC (ZERO if a zero)."""
        vreg = st.frames[-1].regs[value_regno] if value_regno >= 0 else None
        zero = (vreg is not None and vreg.is_null()) or (vreg is None and imm == 0)
        if zero and vreg is not None:
            self.mark_precise(st, value_regno)
        for i in range(min_off, max_off):
            k = -i - 1
            spi, idx = k // REG_SIZE, k % REG_SIZE
            slot = frame.stack[spi]
            if slot.types[idx] in (DYNPTR, ITER):
                self.destroy_special_slot(st, frame, spi)
            if slot.is_special():
                slot.types = [INVALID if t == INVALID else MISC for t in slot.types]
                slot.reg.type = NOT_INIT
            # A write that may or may not touch a byte leaves ZERO only if it writes zero.
            if not (zero and slot.types[idx] == ZERO):
                slot.types[idx] = MISC

    def stack_read_var(self, st: State, regno: int, frame: Frame, reg: Reg, off: int, min_off: int,
                       max_off: int, size: int, value_regno: int) -> None:
        self.check_stack_initialized(st, regno, frame, reg, off, min_off, max_off - min_off, False, size)
        if value_regno < 0:
            return
        dst = st.frames[-1].regs[value_regno]
        zeros = all(self._byte_kind(frame, i) == ZERO for i in range(min_off, max_off))
        if zeros:
            set_const(dst, 0)
        else:
            set_unknown(dst)

    @staticmethod
    def _byte_kind(frame: Frame, off: int) -> int:
        k = -off - 1
        return frame.stack[k // REG_SIZE].types[k % REG_SIZE]

    def check_stack_initialized(self, st: State, regno: int, frame: Frame, reg: Reg, off: int, min_off: int,
                                length: int, clobber: bool, access_size: int | None = None) -> None:
        """check_stack_range_initialized() for the bytes [min_off, min_off + length)."""
        size = length if access_size is None else access_size
        for i in range(min_off, min_off + length):
            k = -i - 1
            spi, idx = k // REG_SIZE, k % REG_SIZE
            slot = frame.stack[spi]
            kind = slot.types[idx]
            if kind == MISC:
                continue
            if kind == ZERO or (kind == INVALID and self.opts.privileged):
                if clobber:
                    slot.types[idx] = MISC
                continue
            if slot.is_spill() and kind == SPILL and (slot.reg.type == SCALAR or self.opts.privileged):
                if clobber:
                    set_unknown(slot.reg)
                    slot.reg.type = NOT_INIT
                    slot.types = [MISC if t == SPILL else t for t in slot.types]
                continue
            if reg.var.mask == 0:
                raise self.reject(f"invalid read from stack R{regno} off {min_off}+{i - min_off} size {size}")
            raise self.reject(f"invalid read from stack R{regno} var_off {tnum_text(reg.var)}+{i - min_off} "
                              f"size {size}")

    # -- helper memory arguments ----------------------------------------------------------------------------
    def check_helper_mem(self, st: State, regno: int, size: int, write: bool, zero_ok: bool,
                         raw: bool) -> None:
        """check_helper_mem_access(): `size` bytes at regs[regno] read (or written) by a helper. With `raw`
        the helper fully writes them (uninitialised stack is fine and becomes MISC)."""
        regs = st.frames[-1].regs
        reg = regs[regno]
        base = reg.type & 0xFF
        if reg.type & MAYBE_NULL:
            base = -1
        if base in (PTR_TO_PACKET, PTR_TO_PACKET_META):
            if write and self.prog_type not in PKT_WRITE:
                raise self.reject("helper access to the packet is not allowed")
            self.check_packet_access(regno, reg, reg.off, size, zero_ok)
        elif base == PTR_TO_MAP_KEY:
            if write:
                raise self.reject(f"R{regno} cannot write into {type_str(reg.type)}")
            self.check_region(regno, reg, reg.off, size, self.maps[reg.map].key_size, False)
        elif base == PTR_TO_MAP_VALUE:
            spec = self.maps[reg.map]
            flags = getattr(spec, "flags", 0)
            if write and (flags & BPF_F_RDONLY_PROG or getattr(spec, "readonly", False)):
                raise self.reject(f"write into map forbidden, value_size={spec.value_size} off={reg.off} "
                                  f"size={size}")
            self.check_region(regno, reg, reg.off, size, spec.value_size, zero_ok)
            self.check_special_fields(reg, reg.off, size)
        elif base == PTR_TO_MEM:
            if write and reg.type & RDONLY:
                raise self.reject(f"R{regno} cannot write into {type_str(reg.type)}")
            self.check_region(regno, reg, reg.off, size, reg.mem_size, zero_ok)
        elif base == PTR_TO_STACK:
            if size == 0 and not zero_ok:
                raise self.reject("invalid zero-sized read")
            self._cur_state = st
            min_off, max_off = self.check_stack_bounds(regno, reg, reg.off, size, write,
                                                       " write to" if write else " read from")
            frame = st.frames[reg.frameno]
            frame.grow(-min_off)
            self.note_stack_depth(st, reg.frameno, -min_off)
            if reg.var.mask == 0 and raw:
                for i in range(min_off, max_off):
                    k = -i - 1
                    slot = frame.stack[k // REG_SIZE]
                    if slot.types[k % REG_SIZE] == DYNPTR:
                        raise self.reject(f"potential write to dynptr at off={i} disallowed")
                for i in range(min_off, max_off):
                    self.stack_write_fixed(st, frame, i, 1, -1, None)
            else:
                self.check_stack_initialized(st, regno, frame, reg, reg.off, min_off, max_off - min_off, write)
        elif base == KERNEL_VALUE:
            return
        else:
            if zero_ok and size == 0 and reg.is_null():
                return
            raise self.reject(f"R{regno} type={type_str(reg.type)} expected=fp")

