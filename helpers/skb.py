"""The sk_buff model of a test run: built from data_in/ctx_in as the kernel's bpf_prog_test_run_skb() builds it.

    ctx = make_skb_context(memory, runtime, "sched_cls", packet, ctx_in, linear=None)
    r0 = program(ctx.address)          # r1 is the uapi `struct __sk_buff`
    data_out, ctx_out = ctx.finish()
    ctx.release()

For an unverified program the uapi `__sk_buff` is a hooked region (`SkbCtxHook`): a load of
data/data_end/data_meta yields the 64-bit model pointers, other loads read the model's fields, and stores reach
only the fields the kernel lets the program type write. A verified program's context accesses were converted
(helpers/ctx_convert.py), so with `converted=True` r1 is the model itself, a plain writable region.

The packet head is one region; with `linear=N` the packet beyond N bytes goes into paged fragments, as
kernels from 6.19 build a non-linear skb from `__sk_buff.data_end` (this kernel generation refuses a nonzero
data_end in ctx_in, and so does this model).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Any

from bpfvm.errors import BpfvmError, MemoryFault
from bpfvm.interp import ProgramExit
from bpfvm.memory import Memory, Region

from .registry import native_env

ETH_HLEN = 14
SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff)
HEADROOM = 64  # NET_SKB_PAD + NET_IP_ALIGN on x86-64
TAILROOM = 320  # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
PAGE_SIZE = 4096
MAX_FRAGS = 17
MAX_LINEAR = PAGE_SIZE - HEADROOM - TAILROOM  # 3712: the largest linear packet bpf_test_init accepts
SKB_MAX_LEN = 16064  # SKB_MAX_ALLOC
RESERVE = 16384  # hidden headroom for pushes beyond the kernel's (skb_change_head, adjust_room)
GSO_LEGACY_MAX_SIZE = 65536
GSO_MAX_SEGS = 65535
ETH_P_IP, ETH_P_IPV6, ETH_P_802_3, ETH_P_802_2 = 0x0800, 0x86DD, 0x0001, 0x0004
PACKET_HOST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 2, 3
AF_INET, AF_INET6 = 2, 10
SKF_NET_OFF, SKF_LL_OFF = -0x100000, -0x200000


class TestRunError(BpfvmError):
    """Input BPF_PROG_TEST_RUN refuses; `errno` is what bpf(2) would return (positive)."""

    __test__ = False  # not a pytest class

    def __init__(self, err: int, message: str):
        self.errno = err
        super().__init__(f"{message} ({errno.errorcode.get(err, err)})")


@dataclass(frozen=True)
class SkbProgType:
    """How a test run treats one program type: L2 data, direct packet access, packet writes, ctx writes."""

    is_l2: bool
    direct_access: bool
    writable: bool
    ctx_writes: frozenset[str]
    lwt: bool = False


_CB = frozenset(f"cb{i}" for i in range(5))
SKB_PROG_TYPES: dict[str, SkbProgType] = {
    "sched_cls": SkbProgType(True, True, True,
                             _CB | {"mark", "tc_index", "priority", "tc_classid", "tstamp", "queue_mapping"}),
    "socket_filter": SkbProgType(False, False, False, _CB),
    "cgroup_skb": SkbProgType(False, True, False, _CB | {"mark", "priority", "tstamp"}),
    "lwt_in": SkbProgType(False, True, False, _CB | {"mark", "priority"}, lwt=True),
    "lwt_out": SkbProgType(False, True, False, _CB | {"mark", "priority"}, lwt=True),
    "lwt_xmit": SkbProgType(False, True, True, _CB | {"mark", "priority"}, lwt=True),
}
SKB_PROG_TYPES["sched_act"] = SKB_PROG_TYPES["sched_cls"]
_ALIASES = {"tc": "sched_cls", "classifier": "sched_cls", "tcx": "sched_cls", "action": "sched_act",
            "socket": "socket_filter"}

# struct __sk_buff: name -> (offset, size)
SKB_FIELDS: dict[str, tuple[int, int]] = {
    "len": (0, 4), "pkt_type": (4, 4), "mark": (8, 4), "queue_mapping": (12, 4), "protocol": (16, 4),
    "vlan_present": (20, 4), "vlan_tci": (24, 4), "vlan_proto": (28, 4), "priority": (32, 4),
    "ingress_ifindex": (36, 4), "ifindex": (40, 4), "tc_index": (44, 4),
    **{f"cb{i}": (48 + 4 * i, 4) for i in range(5)},
    "hash": (68, 4), "tc_classid": (72, 4), "data": (76, 4), "data_end": (80, 4), "napi_id": (84, 4),
    "family": (88, 4), "remote_ip4": (92, 4), "local_ip4": (96, 4),
    **{f"remote_ip6_{i}": (100 + 4 * i, 4) for i in range(4)},
    **{f"local_ip6_{i}": (116 + 4 * i, 4) for i in range(4)},
    "remote_port": (132, 4), "local_port": (136, 4), "data_meta": (140, 4), "flow_keys": (144, 8),
    "tstamp": (152, 8), "wire_len": (160, 4), "gso_segs": (164, 4), "sk": (168, 8), "gso_size": (176, 4),
    "tstamp_type": (180, 1), "hwtstamp": (184, 8),
}
# How wide the kernel's sk_buff field behind each __sk_buff field is (the target_size of its conversion): a
# narrower load of the __sk_buff field is shifted and masked only when it is narrower than this; otherwise it
# gives the whole value, as convert_ctx_accesses() does (a 1-byte load of pkt_type at offset 7 reads pkt_type).
SKB_KERNEL_SIZE: dict[str, int] = {
    "pkt_type": 1, "protocol": 2, "vlan_tci": 2, "vlan_proto": 2, "queue_mapping": 2, "tc_index": 2,
    "tc_classid": 2, "family": 2, "remote_port": 2, "local_port": 2, "gso_segs": 2, "gso_size": 2,
}
# ctx_in fields BPF_PROG_TEST_RUN accepts; every other byte must be zero
SETTABLE = frozenset({"mark", "priority", "ingress_ifindex", "ifindex", "tstamp", "wire_len", "gso_segs", "gso_size",
                      "hwtstamp"} | _CB)
_POINTERS = frozenset({"data", "data_end", "data_meta"})
_CB_START, _CB_END = SKB_FIELDS["cb0"][0], SKB_FIELDS["cb4"][0] + 4
_BY_OFFSET = {off: (name, size) for name, (off, size) in SKB_FIELDS.items()}


def _field_at(offset: int) -> tuple[str, int, int] | None:
    """(name, field offset, field size) of the __sk_buff field holding byte `offset`."""
    for start in range(offset, max(offset - 8, -1), -1):
        hit = _BY_OFFSET.get(start)
        if hit and start + hit[1] > offset:
            return hit[0], start, hit[1]
    return None


def check_skb_ctx_in(ctx_in: bytes) -> bytes:
    """The 192-byte ctx after bpf_ctx_init() and convert___skb_to_skb()'s zero checks; TestRunError if refused."""
    if len(ctx_in) > SKB_CTX_SIZE and any(ctx_in[SKB_CTX_SIZE:]):
        raise TestRunError(errno.E2BIG, f"ctx_in: {len(ctx_in)} bytes with nonzero bytes past struct __sk_buff")
    ctx = bytearray(ctx_in[:SKB_CTX_SIZE].ljust(SKB_CTX_SIZE, b"\0"))
    for i, byte in enumerate(ctx):
        if byte:
            field = _field_at(i)
            if field is None or field[0] not in SETTABLE:
                name = field[0] if field else f"padding at {i}"
                raise TestRunError(errno.EINVAL, f"ctx_in: __sk_buff.{name} may not be set in a test run")
    return bytes(ctx)


class SkbCtxHook:
    """The run-time form of convert_ctx_accesses for `struct __sk_buff` over the sk_buff model."""

    def __init__(self, ctx: "SkbContext"):
        self.ctx = ctx
        self.skb = ctx.skb

    def _value(self, name: str) -> int:
        skb = self.skb
        ctx = self.ctx
        data = ctx.addr(skb.data)
        simple = {
            "len": skb.len, "pkt_type": skb.pkt_type, "mark": skb.mark, "queue_mapping": skb.queue_mapping,
            "protocol": skb.protocol, "vlan_present": skb.vlan_present, "vlan_tci": skb.vlan_tci,
            "vlan_proto": skb.vlan_proto, "priority": skb.priority, "ingress_ifindex": skb.skb_iif,
            "ifindex": skb.ifindex, "tc_index": skb.tc_index, "hash": skb.hash, "tc_classid": skb.tc_classid,
            "napi_id": skb.napi_id if skb.napi_id >= 0x100 else 0, "family": skb.sk_family,
            "remote_ip4": skb.sk_daddr, "local_ip4": skb.sk_rcv_saddr,
            "remote_port": (skb.sk_dport & 0xFFFF) << 16, "local_port": skb.sk_num,
            "tstamp": skb.tstamp, "wire_len": skb.pkt_len, "gso_segs": skb.gso_segs, "gso_size": skb.gso_size,
            "tstamp_type": skb.tstamp_type, "hwtstamp": skb.hwtstamp, "flow_keys": 0, "sk": 0,
        }
        if name in simple:
            return simple[name]
        if name.startswith("cb"):
            return skb.cb[int(name[2:])]
        if name.startswith("remote_ip6_"):
            return skb.sk_v6_daddr[int(name[-1])]
        if name.startswith("local_ip6_"):
            return skb.sk_v6_rcv_saddr[int(name[-1])]
        if name == "data":
            return data
        if name == "data_end":
            return data + skb.len - skb.data_len
        if name == "data_meta":
            return data - skb.meta_len
        raise AssertionError(name)  # pragma: no cover

    def _cb(self, offset: int, size: int) -> Any | None:
        """The model's bytes of a cb[] access (qdisc_skb_cb.data takes any aligned size, 8 bytes too)."""
        if _CB_START <= offset and offset + size <= _CB_END and offset % size == 0:
            return self.ctx.ffi.buffer(self.skb.cb)[offset - _CB_START : offset - _CB_START + size]
        return None

    def load(self, offset: int, size: int, pc: int) -> int:
        cb = self._cb(offset, size)
        if cb is not None:
            return int.from_bytes(cb, "little")
        field = _field_at(offset)
        if field is None:
            raise MemoryFault(f"invalid access to __sk_buff at offset {offset}", pc)
        name, start, fsize = field
        if name in _POINTERS or name in ("flow_keys", "sk"):
            if offset != start or size != fsize:
                raise MemoryFault(f"invalid {size}-byte access to __sk_buff.{name} at offset {offset}", pc)
            return self._value(name)
        if offset + size > start + fsize or offset % size:
            raise MemoryFault(f"invalid {size}-byte access to __sk_buff.{name} at offset {offset}", pc)
        if size >= SKB_KERNEL_SIZE.get(name, fsize):
            return self._value(name)
        return (self._value(name) >> (8 * (offset - start))) & ((1 << (8 * size)) - 1)

    def store(self, offset: int, size: int, value: int, pc: int) -> None:
        if self._cb(offset, size) is not None:
            start = offset - _CB_START
            self.ctx.ffi.buffer(self.skb.cb)[start : start + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(
                size, "little")
            return
        field = _field_at(offset)
        name = field[0] if field else f"+{offset}"
        if field is None or name not in self.ctx.kind.ctx_writes or offset != field[1] or size != field[2]:
            raise MemoryFault(f"{self.ctx.prog_type} programs may not write {size} bytes to __sk_buff.{name}", pc)
        skb = self.skb
        stored = value & ((1 << (8 * size)) - 1)
        if name.startswith("cb"):
            skb.cb[int(name[2:])] = stored
        elif name == "queue_mapping":
            # the kernel compares the whole operand (64-bit register, or signed immediate) with
            # NO_QUEUE_MAPPING and ignores the store at or above it
            if value < 0xFFFF:
                skb.queue_mapping = value & 0xFFFF
        elif name in ("tc_index", "tc_classid"):  # 16-bit fields in the kernel
            setattr(skb, name, stored & 0xFFFF)
        else:
            setattr(skb, name, stored)


class SkbContext:
    """One test run's sk_buff: the model, its regions, and the uapi context a program gets in r1."""

    def __init__(self, memory: Memory, runtime: Any, prog_type: str, data_in: bytes, ctx_in: bytes | None,
                 linear: int | None, converted: bool = False):
        name = _ALIASES.get(prog_type, prog_type)
        if name not in SKB_PROG_TYPES:
            raise BpfvmError(f"{prog_type} programs have no sk_buff test run in this model")
        self.prog_type = name
        self.kind = SKB_PROG_TYPES[name]
        self.memory = memory
        self.runtime = runtime
        self.state = native_env(runtime)
        ffi = self.ffi = self.state.ffi
        self.lib = self.state.lib
        self.regions: list[Region] = []
        self._keep: list[Any] = []
        data_in = bytes(data_in)
        ctx = check_skb_ctx_in(ctx_in) if ctx_in is not None else None
        self.ctx_in = ctx
        if len(data_in) < ETH_HLEN:
            raise TestRunError(errno.EINVAL, f"data_in of {len(data_in)} bytes is shorter than an Ethernet header")
        linear_sz = len(data_in)
        if linear is not None:
            if self.kind.lwt:
                raise TestRunError(errno.EINVAL, "LWT programs cannot be test-run on a non-linear skb")
            linear_sz = min(max(ETH_HLEN, linear), len(data_in))
        if linear_sz > MAX_LINEAR:
            raise TestRunError(errno.EINVAL, f"a linear packet holds at most {MAX_LINEAR} bytes, not {linear_sz}")
        rest = data_in[linear_sz:]
        if len(rest) > MAX_FRAGS * PAGE_SIZE:
            raise TestRunError(errno.ENOMEM, f"the packet needs more than {MAX_FRAGS} page fragments")
        ifindex = struct.unpack_from("<I", ctx, 40)[0] if ctx else 0
        devices = tuple(getattr(self.state.options, "ifindexes", (1,)))
        if ifindex > 1 and ifindex not in devices:
            raise TestRunError(errno.ENODEV, f"ctx_in: no device with ifindex {ifindex}")

        # the model (with the scratch words converted accesses borrow registers in) and its head buffer:
        # [reserve][headroom][linear data][room to grow]
        from .ctx_convert import skb_model_size

        model = ffi.new("uint8_t[]", skb_model_size())
        self._keep.append(model)
        skb = self.skb = ffi.cast("struct bpfvm_skb *", model)
        buf_size = RESERVE + HEADROOM + max(len(data_in), SKB_MAX_LEN) + PAGE_SIZE
        buf = ffi.new("uint8_t[]", buf_size)
        self._keep.append(buf)
        self.head_region = self._add_region("skb head", buf, buf_size, self.kind.writable)
        skb.buf = buf
        skb.buf_size = buf_size
        skb.head = buf + RESERVE
        skb.data = skb.head + HEADROOM
        ffi.memmove(skb.data, data_in[:linear_sz], linear_sz)
        skb.len = len(data_in)
        skb.data_len = len(rest)
        for i in range(0, len(rest), PAGE_SIZE):
            page = ffi.new("uint8_t[]", PAGE_SIZE)
            chunk = rest[i : i + PAGE_SIZE]
            ffi.memmove(page, chunk, len(chunk))
            self._keep.append(page)
            frag = skb.frags[skb.nr_frags]
            frag.data, frag.off, frag.size = page, 0, len(chunk)
            skb.nr_frags += 1
        skb.mac_header = skb.network_header = skb.transport_header = 0xFFFFFFFF
        skb.ifindex = ifindex if ifindex > 1 else 1
        self._eth_type_trans(data_in)
        skb.network_header = self.offset(skb.data)
        self._attach_socket()
        if self.kind.is_l2:
            skb.data -= ETH_HLEN
            skb.len += ETH_HLEN
        self._convert_ctx_in()

        if converted:  # r1 is the model: converted accesses write only what the verifier let them
            self.model_region = self._add_region("sk_buff", model, skb_model_size(), True)
            self.address = self.model_region.start
        else:  # the model itself is readable (inlined kfunc bodies read it), the uapi context is hooked
            self.model_region = self._add_region("sk_buff", model, ffi.sizeof("struct bpfvm_skb"), False)
            ctx_buf = ffi.new("uint8_t[]", SKB_CTX_SIZE)
            self._keep.append(ctx_buf)
            self.ctx_region = memory.add_cdata("__sk_buff", ctx_buf, SKB_CTX_SIZE, writable=True,
                                               hook=SkbCtxHook(self))
            self.regions.append(self.ctx_region)
            self.address = self.ctx_region.start
        env = self.state.env
        env.ctx_kind, env.ctx_addr, env.skb = 1, self.address, skb
        env.pkt_writable = int(self.kind.writable)
        runtime.ld_abs_fn = self.ld_abs

    # -- construction helpers ---------------------------------------------------------------------------
    def _add_region(self, name: str, cdata: Any, size: int, writable: bool) -> Region:
        region = self.memory.add_cdata(name, cdata, size, writable=writable)
        self.regions.append(region)
        return region

    def addr(self, pointer: Any) -> int:
        return int(self.ffi.cast("uintptr_t", pointer))

    def offset(self, pointer: Any) -> int:
        """Offset of a pointer into the head buffer from its start (how header offsets are kept)."""
        return self.addr(pointer) - self.addr(self.skb.buf)

    def _eth_type_trans(self, data: bytes) -> None:
        """eth_type_trans() on the loopback device: pkt_type and protocol from the Ethernet header."""
        skb = self.skb
        skb.mac_header = self.offset(skb.data)
        dest, proto = data[0:6], int.from_bytes(data[12:14], "big")
        skb.data += ETH_HLEN
        skb.len -= ETH_HLEN
        skb.mac_len = ETH_HLEN
        if dest != bytes(6):  # loopback's address, and its broadcast address, are all zeros
            if dest[0] & 1:
                skb.pkt_type = PACKET_MULTICAST
            else:
                skb.pkt_type = PACKET_OTHERHOST
        if proto >= 0x0600:
            value = proto
        elif data[14:16] == b"\xff\xff":
            value = ETH_P_802_3
        else:
            value = ETH_P_802_2
        skb.protocol = int.from_bytes(value.to_bytes(2, "big"), "little")  # kept in network byte order

    def _attach_socket(self) -> None:
        """The dummy socket of the test run takes its family and addresses from the IP header."""
        skb = self.skb
        proto = int.from_bytes(skb.protocol.to_bytes(2, "little"), "big")
        head = bytes(self.ffi.buffer(skb.data, skb.len - skb.data_len))
        if proto == ETH_P_IP:
            skb.sk_family = AF_INET
            if len(head) >= 20:
                skb.sk_rcv_saddr, skb.sk_daddr = struct.unpack_from("<II", head, 12)
        elif proto == ETH_P_IPV6:
            skb.sk_family = AF_INET6
            if len(head) >= 40:
                for i in range(4):
                    skb.sk_v6_rcv_saddr[i] = struct.unpack_from("<I", head, 8 + 4 * i)[0]
                    skb.sk_v6_daddr[i] = struct.unpack_from("<I", head, 24 + 4 * i)[0]

    def _convert_ctx_in(self) -> None:
        """convert___skb_to_skb(): copy the settable fields, check wire_len and gso_segs."""
        skb, ctx = self.skb, self.ctx_in
        if ctx is None:  # the kernel skips the conversion: cb (and wire_len) stay zero
            return
        skb.pkt_len = skb.len
        u32 = lambda off: struct.unpack_from("<I", ctx, off)[0]  # noqa: E731
        u64 = lambda off: struct.unpack_from("<Q", ctx, off)[0]  # noqa: E731
        skb.mark, skb.priority, skb.skb_iif = u32(8), u32(32), u32(36)
        skb.tstamp = u64(152)
        for i in range(5):
            skb.cb[i] = u32(48 + 4 * i)
        wire_len = u32(160)
        if wire_len:
            if wire_len < skb.len or wire_len > GSO_LEGACY_MAX_SIZE:
                raise TestRunError(errno.EINVAL, f"ctx_in: wire_len {wire_len} is not in [{skb.len}, 65536]")
            skb.pkt_len = wire_len
        if u32(164) > GSO_MAX_SEGS:
            raise TestRunError(errno.EINVAL, f"ctx_in: gso_segs {u32(164)} exceeds {GSO_MAX_SEGS}")
        skb.gso_segs, skb.gso_size, skb.hwtstamp = u32(164), u32(176), u64(184)

    # -- LD_ABS / LD_IND -----------------------------------------------------------------------------------
    def ld_abs(self, _ctx: int, offset: int, size: int, pc: int) -> int:
        """bpf_skb_load_helper_N: big-endian bytes at offset; a miss ends the program with r0 = 0."""
        off = offset & 0xFFFFFFFF
        off = off - (1 << 32) if off >> 31 else off
        skb, ffi = self.skb, self.ffi
        buf = ffi.new("uint8_t[]", size)
        if off >= 0:
            if self.lib.bpfvm_skb_copy_bits(skb, off, buf, size) < 0:
                raise ProgramExit(0)
            return int.from_bytes(ffi.buffer(buf, size), "big")
        if off >= SKF_NET_OFF:
            start = skb.network_header + (off - SKF_NET_OFF)
        elif off >= SKF_LL_OFF and skb.mac_header != 0xFFFFFFFF:
            start = skb.mac_header + (off - SKF_LL_OFF)
        else:
            raise ProgramExit(0)
        tail = self.offset(skb.data) + skb.len - skb.data_len
        if start < self.offset(skb.head) or start + size > tail:
            raise ProgramExit(0)
        return int.from_bytes(ffi.buffer(skb.buf + start, size), "big")

    # -- results ----------------------------------------------------------------------------------------------
    def packet(self) -> bytes:
        """The whole packet as the program left it, from skb->data: linear part then fragments."""
        out = self.ffi.new("uint8_t[]", max(self.skb.len, 1))
        self.lib.bpfvm_skb_linear_copy(self.skb, out)
        return bytes(self.ffi.buffer(out, self.skb.len))

    def finish(self) -> tuple[bytes, bytes]:
        """data_out and ctx_out as the kernel reports them after the run."""
        self.state.sync_output()
        data = self.packet()
        if not self.kind.is_l2:  # the L2 header is pushed back, zeroed
            data = bytes(ETH_HLEN) + data
        ctx_out = b""
        if self.ctx_in is not None:
            skb = self.skb
            out = bytearray(self.ctx_in)
            struct.pack_into("<I", out, 8, skb.mark)
            struct.pack_into("<III", out, 32, skb.priority, skb.skb_iif, skb.ifindex)
            struct.pack_into("<Q", out, 152, skb.tstamp)
            struct.pack_into("<5I", out, 48, *skb.cb)
            struct.pack_into("<II", out, 160, skb.pkt_len, skb.gso_segs)
            struct.pack_into("<Q", out, 184, skb.hwtstamp)
            ctx_out = bytes(out)
        return data, ctx_out

    def release(self) -> None:
        env = self.state.env
        if env.skb == self.skb:
            env.ctx_kind, env.ctx_addr, env.skb = 0, 0, self.ffi.NULL
        if getattr(self.runtime, "ld_abs_fn", None) == self.ld_abs:
            self.runtime.ld_abs_fn = None
        for region in self.regions:
            self.memory.remove(region)
        self.regions.clear()


def make_skb_context(memory: Memory, runtime: Any, prog_type: str, data_in: bytes, ctx_in: bytes | None,
                     linear: int | None, *, converted: bool = False) -> SkbContext:
    """The context of a test run of an skb program: `ctx.address` is r1 (the uapi context, or with `converted`
    the model), `ctx.finish()` gives the outputs."""
    return SkbContext(memory, runtime, prog_type, data_in, ctx_in, linear, converted)


__all__ = ["SKB_FIELDS", "SKB_KERNEL_SIZE", "SKB_PROG_TYPES", "SkbContext", "SkbCtxHook", "TestRunError",
           "make_skb_context"]
