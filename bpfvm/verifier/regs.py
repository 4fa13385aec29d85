"""Register types and the abstract state of one register (the kernel's `struct bpf_reg_state`).

A register is NOT_INIT, a SCALAR (tnum + signed/unsigned 64- and 32-bit bounds), a pointer of some type
(fixed offset `off` plus a variable part kept in the same tnum/bounds fields, as the kernel does), or a
KERNEL_VALUE (RFC patch 06: an opaque value inside an inlinable kfunc instance). Type flags (MAYBE_NULL,
RDONLY, RINGBUF) are or-ed into `type` like the kernel's `enum bpf_type_flag`.
"""

from __future__ import annotations

from . import tnum as tn
from .tnum import Tnum

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1

# Base types.
NOT_INIT = 0
SCALAR = 1
PTR_TO_CTX = 2
CONST_PTR_TO_MAP = 3
PTR_TO_MAP_VALUE = 4
PTR_TO_MAP_KEY = 5
PTR_TO_STACK = 6
PTR_TO_PACKET_META = 7
PTR_TO_PACKET = 8
PTR_TO_PACKET_END = 9
PTR_TO_MEM = 10
PTR_TO_FUNC = 11
KERNEL_VALUE = 12
PTR_TO_BTF_ID = 13
CONST_PTR_TO_DYNPTR = 14

BASE_MASK = 0xFF
MAYBE_NULL = 0x100
RDONLY = 0x200
RINGBUF = 0x400

_NAMES = {
    NOT_INIT: "?", SCALAR: "scalar", PTR_TO_CTX: "ctx", CONST_PTR_TO_MAP: "map_ptr", PTR_TO_MAP_VALUE: "map_value",
    PTR_TO_MAP_KEY: "map_key", PTR_TO_STACK: "fp", PTR_TO_PACKET_META: "pkt_meta", PTR_TO_PACKET: "pkt",
    PTR_TO_PACKET_END: "pkt_end", PTR_TO_MEM: "mem", PTR_TO_FUNC: "func", KERNEL_VALUE: "kval",
    PTR_TO_BTF_ID: "ptr_", CONST_PTR_TO_DYNPTR: "dynptr_ptr",
}

PKT_TYPES = frozenset({PTR_TO_PACKET, PTR_TO_PACKET_META})


def type_str(t: int) -> str:
    """The kernel's reg_type_str(): `map_value_or_null`, `rdonly_mem`, `ringbuf_mem_or_null` ..."""
    prefix = ("rdonly_" if t & RDONLY else "") + ("ringbuf_" if t & RINGBUF else "")
    postfix = "_or_null" if t & MAYBE_NULL else ""
    return f"{prefix}{_NAMES.get(t & BASE_MASK, '?')}{postfix}"


class Reg:
    """Abstract value of a register or of a spilled stack slot."""

    __slots__ = ("type", "off", "var", "smin", "smax", "umin", "umax", "s32min", "s32max", "u32min", "u32max",
                 "id", "ref_obj_id", "range", "map", "mem_size", "frameno", "precise", "subprog",
                 "dyn_type", "dyn_first", "iter_state", "iter_depth", "iter_kind", "btf_name", "parent_id")

    def __init__(self) -> None:
        self.type = NOT_INIT
        self.off = 0
        self.var = tn.UNKNOWN
        self.smin, self.smax, self.umin, self.umax = S64_MIN, S64_MAX, 0, U64
        self.s32min, self.s32max, self.u32min, self.u32max = S32_MIN, S32_MAX, 0, U32
        self.id = 0
        self.ref_obj_id = 0
        self.range = 0
        self.map = -1  # index into Program.maps for map pointers and map values
        self.mem_size = 0
        self.frameno = 0
        self.precise = False
        self.subprog = -1
        self.dyn_type = 0
        self.dyn_first = False
        self.iter_state = 0
        self.iter_depth = 0
        self.iter_kind = ""
        self.btf_name = ""
        self.parent_id = 0  # dynptr slices: id of the dynptr they came from

    def copy(self) -> "Reg":  # replaced below by a generated, attribute-by-attribute version
        raise NotImplementedError

    def assign(self, other: "Reg") -> None:  # likewise
        raise NotImplementedError

    # -- type predicates -------------------------------------------------------------------------------------
    @property
    def base(self) -> int:
        return self.type & BASE_MASK

    def is_scalar(self) -> bool:
        return self.type == SCALAR

    def is_pointer(self) -> bool:
        return self.type not in (NOT_INIT, SCALAR, KERNEL_VALUE)

    def is_const(self) -> bool:
        return self.type == SCALAR and self.var.mask == 0

    def is_const32(self) -> bool:
        return self.type == SCALAR and not (self.var.mask & U32)

    def is_null(self) -> bool:
        return self.type == SCALAR and self.var == tn.ZERO

    def value(self) -> int:
        return self.var.value

    def __repr__(self) -> str:
        from .log import reg_str

        return f"<Reg {reg_str(self)}>"


def _generate_copiers() -> None:
    """Copying registers is the verifier's hottest operation: generate straight-line copy functions."""
    body = "\n".join(f"    r.{n} = self.{n}" for n in Reg.__slots__)
    src = f"def copy(self):\n    r = _new(Reg)\n{body}\n    return r\n"
    src += "def assign(r, self):\n" + body + "\n"
    ns: dict = {"_new": object.__new__, "Reg": Reg}
    exec(src, ns)
    Reg.copy = ns["copy"]  # type: ignore[method-assign]
    Reg.assign = ns["assign"]  # type: ignore[method-assign]


_generate_copiers()


# -- constructors ----------------------------------------------------------------------------------------------

def mark_unbounded(r: Reg) -> None:
    r.smin, r.smax, r.umin, r.umax = S64_MIN, S64_MAX, 0, U64
    r.s32min, r.s32max, r.u32min, r.u32max = S32_MIN, S32_MAX, 0, U32


def mark_64_unbounded(r: Reg) -> None:
    r.smin, r.smax, r.umin, r.umax = S64_MIN, S64_MAX, 0, U64


def mark_32_unbounded(r: Reg) -> None:
    r.s32min, r.s32max, r.u32min, r.u32max = S32_MIN, S32_MAX, 0, U32


def mark_known(r: Reg, value: int) -> None:
    """Make the numeric part of r the constant `value` (type is left alone, as the kernel's __mark_reg_known)."""
    value &= U64
    r.var = tn.Tnum(value, 0)
    s = value - (1 << 64) if value >> 63 else value
    v32 = value & U32
    s32 = v32 - (1 << 32) if v32 >> 31 else v32
    r.smin = r.smax = s
    r.umin = r.umax = value
    r.s32min = r.s32max = s32
    r.u32min = r.u32max = v32


def mark_known32(r: Reg, value: int) -> None:
    value &= U32
    r.var = tn.const_subreg(r.var, value)
    s32 = value - (1 << 32) if value >> 31 else value
    r.s32min = r.s32max = s32
    r.u32min = r.u32max = value


def _reset_ptr_fields(r: Reg) -> None:
    r.off = 0
    r.id = 0
    r.ref_obj_id = 0
    r.range = 0
    r.map = -1
    r.mem_size = 0
    r.frameno = 0
    r.subprog = -1
    r.dyn_type = 0
    r.dyn_first = False
    r.iter_state = 0
    r.iter_depth = 0
    r.iter_kind = ""
    r.btf_name = ""
    r.parent_id = 0


def set_unknown(r: Reg, precise: bool = False) -> None:
    """An unknown scalar (the kernel's __mark_reg_unknown)."""
    r.type = SCALAR
    _reset_ptr_fields(r)
    r.var = tn.UNKNOWN
    mark_unbounded(r)
    r.precise = precise


def set_const(r: Reg, value: int, precise: bool = False) -> None:
    r.type = SCALAR
    _reset_ptr_fields(r)
    mark_known(r, value)
    r.precise = precise


def set_not_init(r: Reg) -> None:
    set_unknown(r)
    r.type = NOT_INIT


def set_kernel_value(r: Reg) -> None:
    set_unknown(r)
    r.type = KERNEL_VALUE


def set_pointer(r: Reg, type_: int, off: int = 0) -> None:
    """A pointer with a fixed offset and no variable part."""
    r.type = type_
    _reset_ptr_fields(r)
    mark_known(r, 0)
    r.off = off
    r.precise = False


def unknown() -> Reg:
    r = Reg()
    set_unknown(r)
    return r


def const_reg(value: int) -> Reg:
    r = Reg()
    set_const(r, value)
    return r


def not_init() -> Reg:
    return Reg()


def pointer(type_: int, off: int = 0) -> Reg:
    r = Reg()
    set_pointer(r, type_, off)
    return r
