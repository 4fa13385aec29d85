"""One memory model for every engine: real host buffers and a table of the regions a program may touch.

Every region is a buffer allocated with cffi, so a pointer a BPF program holds is a real host address: the
interpreter and native code (helpers in C, the JIT) see the same values. The interpreter checks each access
against the region table; an access outside every region, or a write to a read-only region, raises a
`MemoryFault` naming the instruction. Nothing is ever read or written outside a region.
"""

from __future__ import annotations

import bisect
import struct
from typing import Callable, Protocol

from cffi import FFI

from .errors import MemoryFault

ffi = FFI()
# The region table as native code sees it (helpers in C, JIT guards); `helpers/native/vm.h` declares the same.
REGION_TABLE_CDEF = """
struct bpfvm_region { uint64_t start; uint64_t end; uint64_t writable; };
struct bpfvm_region_table { uint64_t count; uint64_t capacity; struct bpfvm_region *regions; };
"""
ffi.cdef(REGION_TABLE_CDEF)

_UNPACK = {n: struct.Struct(f) .unpack_from for n, f in ((1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"))}
_UNPACK_SIGNED = {n: struct.Struct(f).unpack_from for n, f in ((1, "<b"), (2, "<h"), (4, "<i"), (8, "<q"))}
_PACK = {n: struct.Struct(f).pack_into for n, f in ((1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"))}
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
U64 = 0xFFFFFFFFFFFFFFFF


class AccessHook(Protocol):
    """Field-aware access to a region, for contexts whose uapi layout differs from the model behind them.

    This is the run-time form of the kernel's convert_ctx_accesses: e.g. a 32-bit load of `__sk_buff.data`
    yields the 64-bit packet pointer. Accesses to a hooked region never take the fast path.
    """

    def load(self, offset: int, size: int, pc: int) -> int: ...

    def store(self, offset: int, size: int, value: int, pc: int) -> None:
        """`value` is the whole operand, as the kernel's conversion sees it: the 64-bit register of a BPF_STX
        or the signed immediate of a BPF_ST, not yet cut to `size` bytes (queue_mapping's rule reads all of
        it); the hook masks what it stores."""


class Region:
    """A host buffer a program may access: [start, end) with a name for error messages."""

    __slots__ = ("name", "start", "end", "cdata", "view", "writable", "hook")

    def __init__(self, name: str, cdata, size: int, writable: bool, hook: AccessHook | None = None):
        self.hook = hook
        self.name = name
        self.cdata = cdata
        self.start = int(ffi.cast("uintptr_t", cdata))
        self.end = self.start + size
        self.view = ffi.buffer(cdata, size)
        self.writable = writable

    @property
    def size(self) -> int:
        return self.end - self.start

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        size = self.size - offset if size is None else size
        return bytes(self.view[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        self.view[offset : offset + len(data)] = data

    def __repr__(self) -> str:
        return f"Region({self.name!r}, {self.start:#x}+{self.size})"


def allocate(size: int):
    """Zeroed host memory that lives as long as the returned cdata object."""
    return ffi.new("uint8_t[]", max(size, 1))


class Memory:
    """The region table of one execution environment, with fast checked load/store closures."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._regions: list[Region] = []
        # One-entry caches of the last region hit, for loads and for stores: [start, end, view].
        self._rcache: list = [1, 0, None]
        self._wcache: list = [1, 0, None]
        self._native_regions = ffi.new("struct bpfvm_region[]", 16)
        self.native_table = ffi.new("struct bpfvm_region_table *")
        self.native_table.capacity = 16
        self.native_table.regions = self._native_regions
        self._build_accessors()

    # -- the region table -------------------------------------------------------------------------------
    def add(self, name: str, size: int, *, data: bytes = b"", writable: bool = True) -> Region:
        """Allocate a zeroed region of `size` bytes (optionally initialised with `data`)."""
        cdata = allocate(size)
        region = Region(name, cdata, size, writable)
        if data:
            region.view[0 : len(data)] = data
        self._insert(region)
        return region

    def add_cdata(
        self, name: str, cdata, size: int, *, writable: bool = True, hook: AccessHook | None = None
    ) -> Region:
        """Make existing host memory (owned by `cdata`) accessible to the program."""
        region = Region(name, cdata, size, writable, hook)
        self._insert(region)
        return region

    def _insert(self, region: Region) -> None:
        i = bisect.bisect_left(self._starts, region.start)
        for neighbour in self._regions[max(i - 1, 0) : i + 1]:
            if neighbour.start < region.end and region.start < neighbour.end:
                raise ValueError(f"region {region.name} overlaps {neighbour.name}")
        self._starts.insert(i, region.start)
        self._regions.insert(i, region)
        self._sync_native()

    def remove(self, region: Region) -> None:
        i = bisect.bisect_left(self._starts, region.start)
        if i < len(self._regions) and self._regions[i] is region:
            del self._starts[i]
            del self._regions[i]
        self._rcache[:] = [1, 0, None]
        self._wcache[:] = [1, 0, None]
        self._sync_native()

    def _sync_native(self) -> None:
        """Mirror the plain (unhooked) regions into the C-visible table, sorted by start address.

        Hooked regions are left out: native code must not bypass their field rules.
        """
        plain = [r for r in self._regions if r.hook is None]
        if len(plain) > self.native_table.capacity:
            capacity = max(2 * len(plain), 16)
            self._native_regions = ffi.new("struct bpfvm_region[]", capacity)
            self.native_table.regions = self._native_regions
            self.native_table.capacity = capacity
        for k, region in enumerate(plain):
            slot = self._native_regions[k]
            slot.start, slot.end, slot.writable = region.start, region.end, int(region.writable)
        self.native_table.count = len(plain)

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    def find(self, addr: int, size: int = 1) -> Region | None:
        """The region holding all of [addr, addr+size), or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            region = self._regions[i]
            if addr + size <= region.end:
                return region
        return None

    def _locate(self, addr: int, size: int, write: bool, pc: int) -> Region:
        region = self.find(addr, size)
        if region is None:
            kind = "write" if write else "read"
            raise MemoryFault(f"invalid memory access: {kind} of {size} bytes at {addr:#x} is outside every region", pc)
        if write and not region.writable:
            raise MemoryFault(f"invalid memory access: write of {size} bytes to read-only region {region.name} at {addr:#x}", pc)
        if region.hook is None:
            cache = self._wcache if write else self._rcache
            cache[0], cache[1], cache[2] = region.start, region.end, region.view
        return region

    # -- byte-level helpers for helpers and models ------------------------------------------------------
    def read(self, addr: int, size: int, pc: int = -1) -> bytes:
        if size == 0:
            return b""
        region = self._locate(addr, size, False, pc)
        off = addr - region.start
        return bytes(region.view[off : off + size])

    def write(self, addr: int, data: bytes, pc: int = -1) -> None:
        if not data:
            return
        region = self._locate(addr, len(data), True, pc)
        off = addr - region.start
        region.view[off : off + len(data)] = data

    def read_cstr(self, addr: int, limit: int, pc: int = -1) -> bytes:
        region = self._locate(addr, 1, False, pc)
        off = addr - region.start
        raw = bytes(region.view[off : min(off + limit, region.size)])
        end = raw.find(b"\0")
        return raw if end < 0 else raw[:end]

    # -- fast accessors used by the interpreter -----------------------------------------------------------
    def _build_accessors(self) -> None:
        rcache, wcache, locate = self._rcache, self._wcache, self._locate

        def make_load(size: int, unpack: Callable) -> Callable[[int, int], int]:
            def load(addr: int, pc: int) -> int:
                start, end, view = rcache
                if start <= addr and addr + size <= end:
                    return unpack(view, addr - start)[0]
                region = locate(addr, size, False, pc)
                if region.hook is not None:
                    return region.hook.load(addr - region.start, size, pc) & U64
                return unpack(region.view, addr - region.start)[0]

            return load

        def make_load_signed(size: int, unpack: Callable) -> Callable[[int, int], int]:
            def load(addr: int, pc: int) -> int:
                start, end, view = rcache
                if start <= addr and addr + size <= end:
                    return unpack(view, addr - start)[0] & U64
                region = locate(addr, size, False, pc)
                if region.hook is not None:
                    bits = 8 * size
                    value = region.hook.load(addr - region.start, size, pc) & ((1 << bits) - 1)
                    return (value - (1 << bits) if value >> (bits - 1) else value) & U64
                return unpack(region.view, addr - region.start)[0] & U64

            return load

        def make_store(size: int, pack: Callable, mask: int) -> Callable[[int, int, int], None]:
            def store(addr: int, value: int, pc: int, operand: int | None = None) -> None:
                """`operand`: a BPF_ST's signed immediate, for hooks (`value` is it sign-extended)."""
                start, end, view = wcache
                if start <= addr and addr + size <= end:
                    pack(view, addr - start, value & mask)
                    return
                region = locate(addr, size, True, pc)
                if region.hook is not None:
                    region.hook.store(addr - region.start, size, value if operand is None else operand, pc)
                    return
                pack(region.view, addr - region.start, value & mask)

            return store

        self.load = {n: make_load(n, _UNPACK[n]) for n in (1, 2, 4, 8)}
        self.load_signed = {n: make_load_signed(n, _UNPACK_SIGNED[n]) for n in (1, 2, 4)}
        self.store = {n: make_store(n, _PACK[n], _MASK[n]) for n in (1, 2, 4, 8)}

    def atomic(self, size: int, op: str, addr: int, value: int, pc: int, expected: int = 0) -> int:
        """Read-modify-write at `addr`; returns the old value (zero-extended). The VM is single-threaded."""
        old = self.load[size](addr, pc)
        mask = _MASK[size]
        value &= mask
        if op == "add":
            new = (old + value) & mask
        elif op == "or":
            new = old | value
        elif op == "and":
            new = old & value
        elif op == "xor":
            new = old ^ value
        elif op == "xchg":
            new = value
        elif op == "cmpxchg":
            new = value if old == (expected & mask) else old
        else:  # pragma: no cover - the decoder admits no other operation
            raise ValueError(op)
        self.store[size](addr, new, pc)
        return old
