"""The xdp_buff model of a test run: built from data_in/ctx_in as the kernel's bpf_prog_test_run_xdp() builds it.

    ctx = make_xdp_context(memory, runtime, packet, ctx_in, frags=None)
    r0 = program(ctx.address)          # r1 is the uapi `struct xdp_md` (with converted=True: the model)
    data_out, ctx_out = ctx.finish()

An unverified program reads `xdp_md` through a hooked region (`XdpCtxHook`); a verified one had its context
loads converted into loads of `struct bpfvm_xdp` (helpers/ctx_convert.py) and gets the model itself.

The frame is one 4096-byte page: XDP_PACKET_HEADROOM (256) of headroom (less any metadata, which ctx_in's
`data` field sizes and data_in's first bytes fill), the linear packet, and the skb_shared_info tailroom
(320) at the end. ctx_in's `data_end` chooses the linear size, and whatever data_in holds past it (or past
what the page can take) goes into page fragments (multi-buffer XDP). `frags` sets how many bytes each
fragment holds (4096, one page, by default, as in the kernel).
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from bpfvm.errors import MemoryFault
from bpfvm.memory import Memory, Region

from .registry import native_env
from .skb import TestRunError

ETH_HLEN = 14
XDP_MD_SIZE = 24  # sizeof(struct xdp_md)
PAGE_SIZE = 4096
XDP_PACKET_HEADROOM = 256
TAILROOM = 320  # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
XDP_FRAME_SIZE = 40  # sizeof(struct xdp_frame): headroom metadata may not use
MAX_FRAGS = 17
XDP_MD_FIELDS = {"data": 0, "data_end": 4, "data_meta": 8, "ingress_ifindex": 12, "rx_queue_index": 16,
                 "egress_ifindex": 20}
_NAMES = {off: name for name, off in XDP_MD_FIELDS.items()}


def _metalen_invalid(n: int) -> bool:
    return n % 4 != 0 or n > 255


class XdpCtxHook:
    """Loads of `struct xdp_md` as the kernel converts them; XDP programs may not write their context."""

    def __init__(self, ctx: "XdpContext"):
        self.ctx = ctx

    def load(self, offset: int, size: int, pc: int) -> int:
        name = _NAMES.get(offset)
        if name is None or size != 4:
            raise MemoryFault(f"invalid {size}-byte access to xdp_md at offset {offset}", pc)
        ctx, xdp = self.ctx, self.ctx.xdp
        if name in ("data", "data_end", "data_meta"):
            return ctx.addr(getattr(xdp, name))
        if name == "ingress_ifindex":
            return xdp.ingress_ifindex
        if name == "rx_queue_index":
            return xdp.rx_queue_index
        return xdp.egress_ifindex

    def store(self, offset: int, size: int, value: int, pc: int) -> None:
        raise MemoryFault(f"XDP programs may not write xdp_md (offset {offset})", pc)


class XdpContext:
    """One test run's xdp_buff: the frame page, fragment pages and the uapi context a program gets in r1."""

    def __init__(self, memory: Memory, runtime: Any, data_in: bytes, ctx_in: bytes | None, frags: int | None,
                 converted: bool = False):
        self.memory = memory
        self.runtime = runtime
        self.state = native_env(runtime)
        ffi = self.ffi = self.state.ffi
        self.regions: list[Region] = []
        self._keep: list[Any] = []
        data_in = bytes(data_in)
        frag_size = PAGE_SIZE if frags is None else frags
        if not 1 <= frag_size <= PAGE_SIZE:
            raise TestRunError(errno.EINVAL, f"an XDP fragment holds 1..{PAGE_SIZE} bytes, not {frag_size}")
        headroom, meta, linear = XDP_PACKET_HEADROOM, 0, len(data_in)
        ingress, queue = 1, 0
        self.ctx_in: bytes | None = None
        if ctx_in is not None:
            if len(ctx_in) > XDP_MD_SIZE and any(ctx_in[XDP_MD_SIZE:]):
                raise TestRunError(errno.E2BIG, "ctx_in: nonzero bytes past struct xdp_md")
            ctx = bytes(ctx_in[:XDP_MD_SIZE].ljust(XDP_MD_SIZE, b"\0"))
            self.ctx_in = ctx
            data, data_end, data_meta, ing, queue, egress = struct.unpack("<6I", ctx)
            if data_meta or data_end > len(data_in) or data > data_end:
                raise TestRunError(errno.EINVAL, "ctx_in: data_meta must be 0 and data <= data_end <= data_size_in")
            if _metalen_invalid(data) or data > headroom - XDP_FRAME_SIZE:
                raise TestRunError(errno.EINVAL, f"ctx_in: {data} bytes of metadata is not allowed")
            headroom -= data
            meta, linear = data, data_end
            if egress:
                raise TestRunError(errno.EINVAL, "ctx_in: egress_ifindex may not be set")
            if not ing and queue:
                raise TestRunError(errno.EINVAL, "ctx_in: rx_queue_index needs an ingress_ifindex")
            if ing:
                if ing not in tuple(getattr(self.state.options, "ifindexes", (1,))):
                    raise TestRunError(errno.ENODEV, f"ctx_in: no device with ifindex {ing}")
                if queue >= 1:
                    raise TestRunError(errno.EINVAL, f"ctx_in: the device has no rx queue {queue}")
                ingress = ing
        max_linear = PAGE_SIZE - headroom - TAILROOM
        linear = min(linear, max_linear)
        if len(data_in) - meta < ETH_HLEN:
            raise TestRunError(errno.EINVAL, f"data_in holds {len(data_in) - meta} bytes after the metadata, "
                                             "less than an Ethernet header")
        rest = data_in[linear:]
        nfrags = (len(rest) + frag_size - 1) // frag_size
        if nfrags > MAX_FRAGS:
            raise TestRunError(errno.ENOMEM, f"the packet needs more than {MAX_FRAGS} fragments")

        xdp = self.xdp = ffi.new("struct bpfvm_xdp *")
        frame = ffi.new("uint8_t[]", PAGE_SIZE)
        self._keep.append(frame)
        self._add_region("xdp frame", frame, PAGE_SIZE, True)
        ffi.memmove(frame + headroom, data_in[:linear], linear)
        xdp.data_hard_start = frame
        xdp.data_meta = frame + headroom
        xdp.data = xdp.data_meta + meta
        xdp.data_end = xdp.data_meta + linear
        xdp.frame_sz = PAGE_SIZE
        xdp.frag_size = PAGE_SIZE
        xdp.ingress_ifindex, xdp.rx_queue_index = ingress, queue
        for i in range(nfrags):
            chunk = rest[i * frag_size : (i + 1) * frag_size]
            page = ffi.new("uint8_t[]", PAGE_SIZE)
            ffi.memmove(page, chunk, len(chunk))
            self._keep.append(page)
            self._add_region(f"xdp frag {i}", page, PAGE_SIZE, True)
            frag = xdp.frags[i]
            frag.data, frag.off, frag.size = page, 0, len(chunk)
        xdp.nr_frags = nfrags
        xdp.frags_size = len(rest)
        if nfrags:
            xdp.flags |= 1  # XDP_FLAGS_HAS_FRAGS

        model = self._add_region("xdp_buff", xdp, ffi.sizeof("struct bpfvm_xdp"), False)
        if converted:  # converted loads read the model; XDP programs never write their context
            self.address = model.start
        else:
            ctx_buf = ffi.new("uint8_t[]", XDP_MD_SIZE)
            self._keep.append(ctx_buf)
            region = memory.add_cdata("xdp_md", ctx_buf, XDP_MD_SIZE, writable=True, hook=XdpCtxHook(self))
            self.regions.append(region)
            self.address = region.start
        env = self.state.env
        env.ctx_kind, env.ctx_addr, env.xdp = 2, self.address, xdp
        env.pkt_writable = 1

    def _add_region(self, name: str, cdata: Any, size: int, writable: bool) -> Region:
        region = self.memory.add_cdata(name, cdata, size, writable=writable)
        self.regions.append(region)
        return region

    def addr(self, pointer: Any) -> int:
        return int(self.ffi.cast("uintptr_t", pointer))

    def packet(self) -> bytes:
        """data_meta .. data_end, then the fragments: what the kernel copies to data_out."""
        xdp, ffi = self.xdp, self.ffi
        out = bytes(ffi.buffer(xdp.data_meta, self.addr(xdp.data_end) - self.addr(xdp.data_meta)))
        for i in range(xdp.nr_frags):
            frag = xdp.frags[i]
            out += bytes(ffi.buffer(frag.data + frag.off, frag.size))
        return out

    def finish(self) -> tuple[bytes, bytes]:
        self.state.sync_output()
        ctx_out = b""
        if self.ctx_in is not None:
            xdp = self.xdp
            out = bytearray(self.ctx_in)
            meta = self.addr(xdp.data_meta)
            struct.pack_into("<II", out, 0, self.addr(xdp.data) - meta, self.addr(xdp.data_end) - meta)
            ctx_out = bytes(out)
        return self.packet(), ctx_out

    def release(self) -> None:
        env = self.state.env
        if env.xdp == self.xdp:
            env.ctx_kind, env.ctx_addr, env.xdp = 0, 0, self.ffi.NULL
        for region in self.regions:
            self.memory.remove(region)
        self.regions.clear()


def make_xdp_context(memory: Memory, runtime: Any, data_in: bytes, ctx_in: bytes | None,
                     frags: int | None, *, converted: bool = False) -> XdpContext:
    """The context of a test run of an XDP program: `ctx.address` is r1 (the uapi context, or with `converted`
    the model), `ctx.finish()` gives the outputs."""
    return XdpContext(memory, runtime, data_in, ctx_in, frags, converted)


__all__ = ["XDP_MD_FIELDS", "XdpContext", "XdpCtxHook", "make_xdp_context"]
