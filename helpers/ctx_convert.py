"""convert_ctx_accesses for `struct __sk_buff` and `struct xdp_md`: one verified context access becomes
accesses of the internal model (`struct bpfvm_skb`, `struct bpfvm_xdp`), as the kernel's
bpf_convert_ctx_access() and xdp_convert_ctx_access() turn them into accesses of sk_buff and xdp_buff.

A converted program gets the model's address in r1, so its context accesses are plain loads and stores (no
hooked region). The values are exactly those SkbCtxHook and XdpCtxHook give unverified runs:

  * packet pointers are 64-bit loads of the model's pointers; `__sk_buff.data_end` (data + len - data_len)
    and `data_meta` (data - meta_len) need a second register, which is saved to a scratch word the model
    region has past the struct and restored, as the kernel's bpf_convert_data_end_access() saves one in
    skb->cb (two when the destination is the context register itself, swapped back with xor);
  * a load narrower than the kernel's field (SKB_KERNEL_SIZE) loads it and shifts and masks, one at least as
    wide gives the whole value (the kernel's narrow loads); a sign-extending load ends with movsx; `cb`
    accesses of any size go straight to the model's cb[];
  * stores write the model field as wide as the kernel's (tc_index, tc_classid and queue_mapping 16 bits;
    queue_mapping only when the 64-bit value is below NO_QUEUE_MAPPING, as the kernel compares it).
"""

from __future__ import annotations

import functools

from bpfvm import isa
from bpfvm.errors import BpfvmError
from bpfvm.isa import Insn

from .native_build import load_native
from .skb import SKB_FIELDS, SKB_KERNEL_SIZE

_SIZE_CODE = {1: isa.B, 2: isa.H, 4: isa.W, 8: isa.DW}
NO_QUEUE_MAPPING = 0xFFFF
MIN_NAPI_ID = 0x100  # napi ids below this are sender cpus, which the kernel reports as 0

# __sk_buff field -> (model field, element index) for the fields that are one model field
_SKB_SIMPLE: dict[str, tuple[str, int]] = {
    **{n: (n, 0) for n in ("len", "pkt_type", "mark", "queue_mapping", "protocol", "vlan_present", "vlan_tci",
                           "vlan_proto", "priority", "ifindex", "tc_index", "hash", "tc_classid", "tstamp",
                           "gso_segs", "gso_size", "hwtstamp", "tstamp_type")},
    "ingress_ifindex": ("skb_iif", 0), "family": ("sk_family", 0), "remote_ip4": ("sk_daddr", 0),
    "local_ip4": ("sk_rcv_saddr", 0), "local_port": ("sk_num", 0), "wire_len": ("pkt_len", 0),
    **{f"cb{i}": ("cb", i) for i in range(5)},
    **{f"remote_ip6_{i}": ("sk_v6_daddr", i) for i in range(4)},
    **{f"local_ip6_{i}": ("sk_v6_rcv_saddr", i) for i in range(4)},
}
_SKB_WRITABLE = frozenset({"mark", "priority", "tc_index", "tc_classid", "tstamp", "queue_mapping"})
_SKB_BY_OFFSET = {off: name for name, (off, _size) in SKB_FIELDS.items()}
_CB_START, _CB_END = SKB_FIELDS["cb0"][0], SKB_FIELDS["cb4"][0] + 4
_XDP_FIELDS = {0: "data", 4: "data_end", 8: "data_meta", 12: "ingress_ifindex", 16: "rx_queue_index",
               20: "egress_ifindex"}


@functools.cache
def model_layout(struct: str) -> dict[str, tuple[int, int]]:
    """Field name -> (offset, size of one element) of a model struct, from the cffi declarations."""
    ffi, _ = load_native()
    out = {}
    for name, f in ffi.typeof(f"struct {struct}").fields:
        item = f.type.item if f.type.kind == "array" else f.type
        out[name] = (f.offset, ffi.sizeof(item))
    return out


@functools.cache
def skb_scratch_offset() -> int:
    """Offset of the two scratch words that follow `struct bpfvm_skb` in a converted run's model region."""
    ffi, _ = load_native()
    return (ffi.sizeof("struct bpfvm_skb") + 7) // 8 * 8


def skb_model_size() -> int:
    """Bytes of the model region of a converted sk_buff run: the struct and its scratch words."""
    return skb_scratch_offset() + 16


# -- instruction builders -------------------------------------------------------------------------------------
def _ldx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.LDX | isa.MEM | _SIZE_CODE[size], dst, src, off)


def _stx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(isa.STX | isa.MEM | _SIZE_CODE[size], dst, src, off)


def _alu64(op: int, dst: int, imm: int = 0, src: int | None = None) -> Insn:
    if src is None:
        return Insn(isa.ALU64 | op | isa.K, dst, 0, 0, imm)
    return Insn(isa.ALU64 | op | isa.X, dst, src)


def _temps(avoid: set[int], count: int) -> list[int]:
    """Registers to borrow, from r9 down as the kernel picks them."""
    return [r for r in range(9, -1, -1) if r not in avoid][:count]


def _pointer_sum(dst: int, src: int, base_off: int, terms: list[tuple[int, int, int]], scratch: int) -> list[Insn]:
    """dst = *(u64 *)(src + base_off) +/- each u32/u16 term (sign, offset, size), borrowing registers that are
    saved in the scratch words at `scratch` and restored."""
    if dst != src:
        (tmp,) = _temps({dst, src}, 1)
        out = [_stx(8, src, tmp, scratch), _ldx(8, dst, src, base_off)]
        for sign, off, size in terms:
            out += [_ldx(size, tmp, src, off), _alu64(isa.ADD if sign > 0 else isa.SUB, dst, src=tmp)]
        return out + [_ldx(8, tmp, src, scratch)]
    acc, tmp = _temps({src}, 2)
    out = [_stx(8, src, acc, scratch), _stx(8, src, tmp, scratch + 8), _ldx(8, acc, src, base_off)]
    for sign, off, size in terms:
        out += [_ldx(size, tmp, src, off), _alu64(isa.ADD if sign > 0 else isa.SUB, acc, src=tmp)]
    out.append(_ldx(8, tmp, src, scratch + 8))
    # swap acc and src (the model pointer) with xor, then restore acc through the model pointer
    out += [_alu64(isa.XOR, acc, src=src), _alu64(isa.XOR, src, src=acc), _alu64(isa.XOR, acc, src=src)]
    return out + [_ldx(8, acc, acc, scratch)]


def _narrow(insn: Insn, dst: int, field_off: int, target_size: int, off: int, size: int) -> list[Insn]:
    """Shift and mask a whole field's value down to the bytes a load narrower than the kernel's field
    (`target_size`) asked for; movsx for ldsx."""
    out = []
    if size < target_size:
        shift = 8 * (off - field_off)
        if shift:
            out.append(_alu64(isa.RSH, dst, shift))
        if size == 4:
            out.append(Insn(isa.ALU | isa.MOV | isa.X, dst, dst))
        elif size < 8:
            out.append(_alu64(isa.AND, dst, (1 << (8 * size)) - 1))
    if isa.mem_mode(insn.opcode) == isa.MEMSX and size < 8:
        out.append(Insn(isa.ALU64 | isa.MOV | isa.X, dst, dst, 8 * size))
    return out


# -- struct __sk_buff -------------------------------------------------------------------------------------------
def convert_skb_access(insn: Insn, ctx_field) -> list[Insn]:
    """The model accesses replacing a verified `__sk_buff` access."""
    layout = model_layout("bpfvm_skb")
    off, size = ctx_field.off, ctx_field.size
    mode = isa.mem_mode(insn.opcode)
    if _CB_START <= off < _CB_END:  # qdisc_skb_cb.data: any size, straight through
        cb_off = layout["cb"][0] + off - _CB_START
        return [insn._replace(off=cb_off)]
    name = _SKB_BY_OFFSET.get(ctx_field.field_off)
    if name is None:
        raise BpfvmError(f"no conversion for __sk_buff access off={off} size={size}")
    if insn.cls in (isa.ST, isa.STX):
        return _skb_store(insn, name, layout)
    dst, src = insn.dst, insn.src
    if name in _SKB_SIMPLE:
        member, index = _SKB_SIMPLE[name]
        moff, msize = layout[member]
        out = [_ldx(msize, dst, src, moff + index * msize)]
    elif name == "napi_id":
        moff, msize = layout["napi_id"]
        out = [_ldx(msize, dst, src, moff), Insn(isa.JMP | isa.JGE | isa.K, dst, 0, 1, MIN_NAPI_ID),
               Insn(isa.ALU64 | isa.MOV | isa.K, dst, 0, 0, 0)]
    elif name == "remote_port":
        moff, msize = layout["sk_dport"]
        out = [_ldx(msize, dst, src, moff), _alu64(isa.AND, dst, 0xFFFF), _alu64(isa.LSH, dst, 16)]
    elif name == "data":
        out = [_ldx(8, dst, src, layout["data"][0])]
    elif name == "data_end":
        out = _pointer_sum(dst, src, layout["data"][0], [(1, *layout["len"]), (-1, *layout["data_len"])],
                           skb_scratch_offset())
    elif name == "data_meta":
        out = _pointer_sum(dst, src, layout["data"][0], [(-1, *layout["meta_len"])], skb_scratch_offset())
    else:
        raise BpfvmError(f"no conversion for a load of __sk_buff.{name}")
    field_off, field_size = SKB_FIELDS[name]
    if mode not in (isa.MEM, isa.MEMSX):
        raise BpfvmError(f"no conversion for a {mode:#x}-mode access of __sk_buff.{name}")
    return out + _narrow(insn, dst, field_off, SKB_KERNEL_SIZE.get(name, field_size), off, size)


def _skb_store(insn: Insn, name: str, layout: dict[str, tuple[int, int]]) -> list[Insn]:
    if name not in _SKB_WRITABLE or isa.mem_mode(insn.opcode) != isa.MEM:
        raise BpfvmError(f"no conversion for a store to __sk_buff.{name}")
    member, _index = _SKB_SIMPLE[name]
    moff, msize = layout[member]
    width = SKB_KERNEL_SIZE.get(name, msize)
    store = insn._replace(opcode=(insn.opcode & ~0x18) | _SIZE_CODE[width], off=moff)
    if name != "queue_mapping":
        return [store]
    if insn.cls == isa.ST:  # known at conversion time (the kernel compares the signed imm)
        return [store] if insn.imm < NO_QUEUE_MAPPING else [Insn(isa.OP_JA)]
    return [Insn(isa.JMP | isa.JGE | isa.K, insn.src, 0, 1, NO_QUEUE_MAPPING), store]


# -- struct xdp_md ----------------------------------------------------------------------------------------------
def convert_xdp_access(insn: Insn, ctx_field) -> list[Insn]:
    """The model load replacing a verified `xdp_md` load (XDP programs may not write their context)."""
    name = _XDP_FIELDS.get(ctx_field.field_off)
    if name is None or insn.cls != isa.LDX or isa.mem_mode(insn.opcode) not in (isa.MEM, isa.MEMSX):
        raise BpfvmError(f"no conversion for xdp_md access off={ctx_field.off} size={ctx_field.size}")
    moff, msize = model_layout("bpfvm_xdp")[name]
    out = [_ldx(msize, insn.dst, insn.src, moff)]  # the verifier allows whole fields only: no narrowing
    return out + _narrow(insn, insn.dst, ctx_field.field_off, 4, ctx_field.off, ctx_field.size)


__all__ = ["convert_skb_access", "convert_xdp_access", "model_layout", "skb_model_size", "skb_scratch_offset"]
