"""BPF maps for programs and for Python: thin classes over the native maps of `helpers/native/maps.c`.

Each map is created from a `MapSpec`, and its value storage (the memory that lookups hand to programs) is
registered as a region of a `Memory`, so programs, helpers in C and JIT code all reach the same bytes. Two
APIs, as in the kernel:

- `m.native`: the program side, for the helper layer, with raw addresses checked against the memory's
  regions before C sees them: `lookup(key_addr) -> value_addr or 0`, `update(key_addr, value_addr, flags)`,
  `delete`, `get_next_key`, `push`/`pop`/`peek` (0 or -errno). Per-CPU maps use the map's current CPU
  (`m.cpu`); a lookup marks an LRU element used. `m.handle` is the C `struct bpfvm_map *` for native code.
- the Python API, with the syscall's semantics: `m[key]`, `m[key] = value`, `del m[key]`, `key in m`,
  `len(m)`, `keys()`, `items()`, `get()`, `update(key, value, flags)`, `dump()`. Keys and values are bytes or
  ints (packed little-endian to key_size/value_size); per-CPU values are lists with one value per CPU.
  Failures raise `MapError` naming the errno (`MapKeyError`, also a `KeyError`, for a missing key); like
  bpf(2), these lookups do not mark LRU elements used.

Hash maps iterate in the kernel's order for a map created with BPF_F_ZERO_SEED (see maps.c).
"""

from __future__ import annotations

import errno as _errno
import itertools
import weakref
from typing import Any, Iterator

from bpfvm.errors import BpfvmError, MemoryFault
from bpfvm.memory import Memory, Region
from bpfvm.program import MapSpec

from .native_build import load_native

# map types (uapi BPF_MAP_TYPE_*)
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, PERCPU_HASH, PERCPU_ARRAY = 1, 2, 3, 4, 5, 6
LRU_HASH, LRU_PERCPU_HASH, ARRAY_OF_MAPS, HASH_OF_MAPS = 9, 10, 12, 13
QUEUE, STACK, RINGBUF = 22, 23, 27
TYPE_NAMES = {
    HASH: "hash", ARRAY: "array", PROG_ARRAY: "prog_array", PERF_EVENT_ARRAY: "perf_event_array",
    PERCPU_HASH: "percpu_hash", PERCPU_ARRAY: "percpu_array", LRU_HASH: "lru_hash",
    LRU_PERCPU_HASH: "lru_percpu_hash", ARRAY_OF_MAPS: "array_of_maps", HASH_OF_MAPS: "hash_of_maps",
    QUEUE: "queue", STACK: "stack", RINGBUF: "ringbuf",
}
PERCPU_TYPES = frozenset({PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH})

# update flags and map flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
BPF_F_NO_PREALLOC, BPF_F_NO_COMMON_LRU, BPF_F_RDONLY, BPF_F_WRONLY = 1, 2, 8, 16
BPF_F_ZERO_SEED, BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG, BPF_F_INNER_MAP = 64, 128, 256, 4096

# ring buffer
RINGBUF_HDR_SZ = 8
RINGBUF_BUSY_BIT = 1 << 31
RINGBUF_DISCARD_BIT = 1 << 30
BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP = 1, 2
BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS = 0, 1, 2, 3

ENOTSUPP = 524  # kernel-internal; bpf(2) returns it for operations a map type lacks
_REASONS = {
    _errno.ENOENT: "no such element",
    _errno.EEXIST: "the element exists",
    _errno.E2BIG: "the map is full or the index is out of range",
    _errno.EINVAL: "invalid argument or flags",
    _errno.EPERM: "not permitted by the map's access flags",
    _errno.ENOMEM: "out of memory",
    _errno.EOPNOTSUPP: "not supported",
    _errno.EFAULT: "corrupt record header (a program wrote over it)",
    ENOTSUPP: "not supported by this map type",
}


def errno_name(err: int) -> str:
    """ENOENT for 2 (sign ignored); ENOTSUPP for the kernel-internal 524."""
    err = abs(err)
    return "ENOTSUPP" if err == ENOTSUPP else _errno.errorcode.get(err, f"E{err}")


class MapError(BpfvmError):
    """A map operation or creation the kernel would refuse; `errno` is positive, `errname` its name."""

    def __init__(self, map_name: str, op: str, err: int, detail: str = ""):
        self.errno = abs(err)
        self.errname = errno_name(err)
        self.op = op
        self.map_name = map_name
        reason = detail or _REASONS.get(self.errno, "")
        super().__init__(f"map {map_name!r}: {op}: {self.errname}" + (f" ({reason})" if reason else ""))


class MapKeyError(MapError, KeyError):
    """A missing key (ENOENT): also a KeyError, so dict-style code works."""

    __str__ = BpfvmError.__str__


_registry: "weakref.WeakValueDictionary[int, Map]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def map_from_handle(address: int) -> "Map | None":
    """The live map whose C handle is at `address` (what a map-in-map lookup hands a program), or None."""
    return _registry.get(address)


def ringbuf_from_address(address: int) -> "RingBuf | None":
    """The ring buffer whose data area holds `address` (bpf_ringbuf_submit/discard get no map argument)."""
    ffi, lib = load_native()
    handle = lib.bpfvm_ringbuf_of(ffi.cast("void *", address))
    found = _registry.get(int(ffi.cast("uintptr_t", handle))) if handle != ffi.NULL else None
    return found if isinstance(found, RingBuf) else None


def _pack(data: Any, size: int, what: str, name: str) -> bytes:
    """bytes of exactly `size`, from bytes-like or an int packed little-endian."""
    if isinstance(data, bool):
        data = int(data)
    if isinstance(data, int):
        try:
            return data.to_bytes(size, "little", signed=data < 0)
        except OverflowError:
            raise MapError(name, what, _errno.EINVAL, f"{data} does not fit in {size} bytes") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) != size:
            raise MapError(name, what, _errno.EINVAL, f"expected {size} bytes, got {len(raw)}")
        return raw
    raise MapError(name, what, _errno.EINVAL, f"expected bytes or int, got {type(data).__name__}")


class NativeOps:
    """The program-side entry points over raw addresses; every address is checked against the regions first."""

    def __init__(self, m: "Map"):
        self._m = m
        self._ffi = m._ffi
        self._lib = m._lib
        self._h = m.handle

    def _ptr(self, addr: int, size: int, write: bool, what: str):
        if size == 0:
            return self._ffi.NULL
        region = self._m.memory.find(addr, size)
        if region is None or (write and not region.writable):
            where = "is outside every region" if region is None else f"is in read-only region {region.name}"
            raise MemoryFault(f"map {self._m.name!r}: {what} of {size} bytes at {addr:#x} {where}")
        return self._ffi.cast("void *", addr)

    def _addr(self, p) -> int:
        return int(self._ffi.cast("uintptr_t", p))

    def lookup(self, key_addr: int) -> int:
        return self._addr(self._lib.bpfvm_map_lookup_elem(self._h, self._ptr(key_addr, self._m.key_size, False, "key")))

    def lookup_percpu(self, key_addr: int, cpu: int) -> int:
        key = self._ptr(key_addr, self._m.key_size, False, "key")
        return self._addr(self._lib.bpfvm_map_lookup_percpu_elem(self._h, key, cpu & 0xFFFFFFFF))

    def update(self, key_addr: int, value_addr: int, flags: int) -> int:
        key = self._ptr(key_addr, self._m.key_size, False, "key")
        value = self._ptr(value_addr, self._m.value_size, False, "value")
        return self._lib.bpfvm_map_update_elem(self._h, key, value, flags & 0xFFFFFFFFFFFFFFFF)

    def delete(self, key_addr: int) -> int:
        return self._lib.bpfvm_map_delete_elem(self._h, self._ptr(key_addr, self._m.key_size, False, "key"))

    def get_next_key(self, key_addr: int, next_key_addr: int) -> int:
        key = self._ffi.NULL if key_addr == 0 else self._ptr(key_addr, self._m.key_size, False, "key")
        nxt = self._ptr(next_key_addr, self._m.key_size, True, "next key")
        return self._lib.bpfvm_map_get_next_key(self._h, key, nxt)

    def push(self, value_addr: int, flags: int) -> int:
        value = self._ptr(value_addr, self._m.value_size, False, "value")
        return self._lib.bpfvm_map_push_elem(self._h, value, flags & 0xFFFFFFFFFFFFFFFF)

    def pop(self, value_addr: int) -> int:
        return self._lib.bpfvm_map_pop_elem(self._h, self._ptr(value_addr, self._m.value_size, True, "value"))

    def peek(self, value_addr: int) -> int:
        return self._lib.bpfvm_map_peek_elem(self._h, self._ptr(value_addr, self._m.value_size, True, "value"))


class Map:
    """A native map with kernel semantics, its storage registered in `memory`."""

    native_class: type[NativeOps] = NativeOps

    def __init__(self, spec: MapSpec, memory: Memory, *, ncpus: int = 1, spin_lock_offset: int | None = None):
        self._ffi, self._lib = load_native()
        ffi, lib = self._ffi, self._lib
        self.spec = spec
        self.name = spec.name
        self.type = spec.type
        self.key_size = spec.key_size
        self.value_size = spec.value_size
        self.memory = memory
        self.ncpus = ncpus
        self.readonly = bool(spec.readonly or spec.flags & BPF_F_RDONLY_PROG)
        self.spin_lock_offset = spin_lock_offset
        self.flags = spec.flags | (BPF_F_RDONLY_PROG if spec.readonly else 0)
        self.percpu = spec.type in PERCPU_TYPES
        if not 1 <= ncpus <= 4096:
            raise MapError(self.name, "create", _errno.EINVAL, f"ncpus must be 1..4096, got {ncpus}")
        lock_off = -1 if spin_lock_offset is None else spin_lock_offset
        err = ffi.new("int *")
        handle = lib.bpfvm_map_create(spec.type & 0xFFFFFFFF, spec.key_size & 0xFFFFFFFF,
                                      spec.value_size & 0xFFFFFFFF, spec.max_entries & 0xFFFFFFFF,
                                      self.flags & 0xFFFFFFFF, ncpus, lock_off, err)
        if handle == ffi.NULL:
            raise MapError(self.name, f"create {TYPE_NAMES.get(spec.type, spec.type)}", err[0])
        free = lib.bpfvm_map_free
        values, size = lib.bpfvm_map_values(handle), lib.bpfvm_map_values_size(handle)
        # The region's cdata owns the map, so the memory stays valid as long as the Memory or this object do.
        if values != ffi.NULL:
            self._owner = ffi.gc(values, lambda _p, h=handle: free(h))
        else:
            self._owner = ffi.gc(handle, free)
        self.handle = handle
        self.handle_addr = int(ffi.cast("uintptr_t", handle))
        self.max_entries = lib.bpfvm_map_max_entries(handle)
        self.region: Region | None = None
        if size:
            self.region = memory.add_cdata(f"map:{self.name}", self._owner, size, writable=not self.readonly)
        self._sys_value_size = lib.bpfvm_map_sys_value_size(handle)
        self._stride = (self.value_size + 7) & ~7
        self.native = self.native_class(self)
        _registry[self.handle_addr] = self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {TYPE_NAMES.get(self.type, self.type)} max_entries={self.max_entries}>"

    # -- the current CPU -----------------------------------------------------------------------------
    @property
    def cpu(self) -> int:
        """The CPU whose per-CPU values programs see and whose LRU lists updates use."""
        return self._lib.bpfvm_map_cpu(self.handle)

    @cpu.setter
    def cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.ncpus or self._lib.bpfvm_map_set_cpu(self.handle, cpu):
            raise MapError(self.name, "set cpu", _errno.EINVAL, f"cpu must be 0..{self.ncpus - 1}, got {cpu}")

    # -- conversions ---------------------------------------------------------------------------------
    def _key(self, key: Any, op: str):
        if self.key_size == 0:
            if key is not None:
                raise MapError(self.name, op, _errno.EINVAL, "this map has no keys")
            return self._ffi.NULL
        return self._ffi.from_buffer(_pack(key, self.key_size, op, self.name))

    def _value_blob(self, value: Any, op: str) -> bytes:
        """The syscall value: value_size bytes, or for per-CPU maps ncpus copies padded to 8 bytes."""
        if not self.percpu:
            return _pack(value, self.value_size, op, self.name)
        blob_size = self._stride * self.ncpus
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == blob_size:
            return bytes(value)
        if isinstance(value, (list, tuple)):
            if len(value) != self.ncpus:
                raise MapError(self.name, op, _errno.EINVAL, f"expected {self.ncpus} per-CPU values, got {len(value)}")
            parts = [_pack(v, self.value_size, op, self.name) for v in value]
        else:
            parts = [_pack(value, self.value_size, op, self.name)] * self.ncpus
        pad = b"\0" * (self._stride - self.value_size)
        return b"".join(p + pad for p in parts)

    def _decode(self, blob: bytes) -> Any:
        if not self.percpu:
            return blob
        return [blob[i * self._stride : i * self._stride + self.value_size] for i in range(self.ncpus)]

    def _raise(self, op: str, ret: int) -> None:
        if ret == -_errno.ENOENT and op in ("lookup", "delete"):
            raise MapKeyError(self.name, op, ret)
        raise MapError(self.name, op, ret)

    # -- the syscall-style Python API ----------------------------------------------------------------
    def lookup_raw(self, key: Any = None, flags: int = 0) -> bytes:
        """The value as bpf(BPF_MAP_LOOKUP_ELEM) returns it (per-CPU: every CPU, padded to 8 bytes)."""
        out = self._ffi.new("uint8_t[]", max(self._sys_value_size, 1))
        ret = self._lib.bpfvm_map_sys_lookup(self.handle, self._key(key, "lookup"), out, flags)
        if ret:
            self._raise("lookup", ret)
        return bytes(self._ffi.buffer(out, self._sys_value_size))

    def lookup(self, key: Any = None, flags: int = 0) -> Any:
        """The value (per-CPU maps: a list of one value per CPU); MapKeyError if missing."""
        return self._decode(self.lookup_raw(key, flags))

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except MapKeyError:
            return default

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        blob = self._ffi.from_buffer(self._value_blob(value, "update"))
        ret = self._lib.bpfvm_map_sys_update(self.handle, self._key(key, "update"), blob, flags & 0xFFFFFFFFFFFFFFFF)
        if ret:
            self._raise("update", ret)

    def delete(self, key: Any) -> None:
        ret = self._lib.bpfvm_map_sys_delete(self.handle, self._key(key, "delete"))
        if ret:
            self._raise("delete", ret)

    def lookup_and_delete(self, key: Any = None, flags: int = 0) -> Any:
        out = self._ffi.new("uint8_t[]", max(self._sys_value_size, 1))
        ret = self._lib.bpfvm_map_sys_lookup_and_delete(self.handle, self._key(key, "lookup_and_delete"), out, flags)
        if ret:
            self._raise("lookup_and_delete", ret)
        return self._decode(bytes(self._ffi.buffer(out, self._sys_value_size)))

    def get_next_key(self, key: Any = None) -> bytes | None:
        """The key after `key` (the first key for None or a missing key); None after the last."""
        out = self._ffi.new("uint8_t[]", max(self.key_size, 1))
        keyp = self._ffi.NULL if key is None else self._key(key, "get_next_key")
        ret = self._lib.bpfvm_map_get_next_key(self.handle, keyp, out)
        if ret == -_errno.ENOENT:
            return None
        if ret:
            self._raise("get_next_key", ret)
        return bytes(self._ffi.buffer(out, self.key_size))

    def keys(self) -> list[bytes]:
        result: list[bytes] = []
        key = None
        for _ in range(self.max_entries + self.ncpus + 1):  # bounded even if keys change meanwhile
            key = self.get_next_key(key)
            if key is None:
                break
            result.append(key)
        return result

    def items(self) -> list[tuple[bytes, Any]]:
        out = []
        for key in self.keys():
            try:
                out.append((key, self.lookup(key)))
            except MapKeyError:
                continue
        return out

    def values(self) -> list[Any]:
        return [value for _, value in self.items()]

    def __getitem__(self, key: Any) -> Any:
        return self.lookup(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value, BPF_ANY)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        out = self._ffi.new("uint8_t[]", max(self._sys_value_size, 1))
        return self._lib.bpfvm_map_sys_lookup(self.handle, self._key(key, "lookup"), out, 0) == 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    def __len__(self) -> int:
        return self._lib.bpfvm_map_count(self.handle)

    def __bool__(self) -> bool:
        return True

    def value_address(self, offset: int) -> int:
        """Address of element 0 + offset, for `lddw` map-value loads: only global-data style arrays."""
        raise MapError(self.name, "direct value access", ENOTSUPP, "only for an ARRAY of one element")

    def _describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": TYPE_NAMES.get(self.type, str(self.type)), "key_size": self.key_size,
            "value_size": self.value_size, "max_entries": self.max_entries, "flags": self.flags,
        }

    def _hex(self, value: Any) -> Any:
        return [v.hex() for v in value] if isinstance(value, list) else value.hex()

    def dump(self) -> dict[str, Any]:
        """JSON-friendly contents: hex keys and values (per-CPU: a list per key)."""
        d = self._describe()
        d["entries"] = [{"key": k.hex(), "value": self._hex(v)} for k, v in self.items()]
        return d


class ArrayMap(Map):
    """ARRAY and PERCPU_ARRAY; an ARRAY with `spec.initial` is a global-data section (.data, .rodata, .bss)."""

    def __init__(self, spec: MapSpec, memory: Memory, **kw: Any):
        super().__init__(spec, memory, **kw)
        if spec.initial:
            if len(spec.initial) > self.value_size or self.type != ARRAY:
                raise MapError(self.name, "initialise", _errno.EINVAL,
                               f"{len(spec.initial)} bytes of initial data for a {self.value_size}-byte value")
            self._ffi.memmove(self._owner, spec.initial, len(spec.initial))

    def keys(self) -> list[bytes]:
        """Every index: array elements always exist."""
        return [i.to_bytes(4, "little") for i in range(self.max_entries)]

    def items(self, *, skip_zero: bool = False) -> list[tuple[bytes, Any]]:
        """Every (index, value), read straight from the storage; with `skip_zero`, only elements with a
        non-zero byte, found block by block: arrays of millions of elements are mostly zero."""
        storage = self._storage()
        if storage is None:
            pairs = super().items()
            return [(k, v) for k, v in pairs if not skip_zero or any(b"".join(v) if self.percpu else v)]
        elem = self._stride * (self.ncpus if self.percpu else 1)
        per_block = max(1, (1 << 16) // elem)
        zero_block = bytes(per_block * elem)
        out: list[tuple[bytes, Any]] = []
        for first in range(0, self.max_entries, per_block):
            block = storage[first * elem : min(self.max_entries, first + per_block) * elem]
            if skip_zero and block == zero_block[: len(block)]:
                continue
            for i in range(len(block) // elem):
                raw = block[i * elem : (i + 1) * elem]
                if skip_zero and not any(raw):
                    continue
                value = [raw[c * self._stride : c * self._stride + self.value_size] for c in range(self.ncpus)] \
                    if self.percpu else raw[: self.value_size]
                if skip_zero and not any(b"".join(value) if self.percpu else value):  # a write into padding only
                    continue
                out.append(((first + i).to_bytes(4, "little"), value))
        return out

    def _storage(self) -> Any:
        """The element storage (slicing it copies bytes) when a syscall lookup would return an element
        unchanged: no spin lock, whose word lookups clear."""
        if self.spin_lock_offset is not None or self.region is None:
            return None
        elem = self._stride * (self.ncpus if self.percpu else 1)
        if self.region.size < self.max_entries * elem:
            return None
        return self.region.view

    def dump(self, *, skip_zero: bool = False) -> dict[str, Any]:
        """JSON-friendly contents; with `skip_zero`, only non-zero elements and how many were left out."""
        d = self._describe()
        pairs = self.items(skip_zero=skip_zero)
        d["entries"] = [{"key": k.hex(), "value": self._hex(v)} for k, v in pairs]
        if skip_zero:
            d["zero_entries_not_shown"] = self.max_entries - len(pairs)
        return d

    def value_address(self, offset: int) -> int:
        """As the kernel's direct value access: an ARRAY of one element, 0 <= offset < value_size."""
        if self.type != ARRAY or self.max_entries != 1:
            return super().value_address(offset)
        if not 0 <= offset < self.value_size:
            raise MapError(self.name, "direct value access", _errno.EINVAL,
                           f"offset {offset} outside the {self.value_size}-byte value")
        return self.region.start + offset if self.region else 0


class QueueMap(Map):
    """QUEUE (FIFO) and STACK (LIFO): push/pop/peek; BPF_EXIST on push overwrites the oldest when full."""

    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        blob = self._ffi.from_buffer(_pack(value, self.value_size, "push", self.name))
        ret = self._lib.bpfvm_map_sys_update(self.handle, self._ffi.NULL, blob, flags & 0xFFFFFFFFFFFFFFFF)
        if ret:
            self._raise("push", ret)

    def pop(self) -> bytes:
        return self.lookup_and_delete(None)

    def peek(self) -> bytes:
        return self.lookup(None)

    def values(self) -> list[bytes]:
        """The elements in pop order, without removing them."""
        out = self._ffi.new("uint8_t[]", self.value_size)
        result = []
        for i in range(len(self)):
            if self._lib.bpfvm_map_qs_item(self.handle, i, out) == 0:
                result.append(bytes(self._ffi.buffer(out, self.value_size)))
        return result

    def dump(self) -> dict[str, Any]:
        d = self._describe()
        d["values"] = [v.hex() for v in self.values()]
        return d


class RingBufOps(NativeOps):
    """Ring buffer helpers over raw addresses: reserve returns the sample address or 0."""

    def reserve(self, size: int, flags: int) -> int:
        return self._addr(self._lib.bpfvm_ringbuf_reserve(self._h, size & 0xFFFFFFFFFFFFFFFF, flags & 0xFFFFFFFFFFFFFFFF))

    def submit(self, sample_addr: int, flags: int) -> int:
        """0, or -EINVAL when `sample_addr` is not an outstanding reservation of this ring buffer."""
        return self._lib.bpfvm_ringbuf_submit(self._h, self._ffi.cast("void *", sample_addr), flags & 0xFFFFFFFFFFFFFFFF)

    def discard(self, sample_addr: int, flags: int) -> int:
        return self._lib.bpfvm_ringbuf_discard(self._h, self._ffi.cast("void *", sample_addr), flags & 0xFFFFFFFFFFFFFFFF)

    def output(self, data_addr: int, size: int, flags: int) -> int:
        data = self._ptr(data_addr, size, False, "data")
        return self._lib.bpfvm_ringbuf_output(self._h, data, size, flags & 0xFFFFFFFFFFFFFFFF)

    def query(self, flags: int) -> int:
        return self._lib.bpfvm_ringbuf_query(self._h, flags & 0xFFFFFFFFFFFFFFFF)


class RingBuf(Map):
    """RINGBUF: records with the kernel's 8-byte header in a power-of-two, page-multiple data area."""

    native_class = RingBufOps

    @property
    def size(self) -> int:
        return self.max_entries

    @property
    def wakeups(self) -> int:
        """How many times a commit would have woken a consumer (kernel rules for the wakeup flags)."""
        return self._lib.bpfvm_ringbuf_wakeups(self.handle)

    def query(self, flags: int = BPF_RB_AVAIL_DATA) -> int:
        return self._lib.bpfvm_ringbuf_query(self.handle, flags)

    def output(self, data: bytes, flags: int = 0) -> None:
        """Write one record from Python (as bpf_ringbuf_output)."""
        ret = self._lib.bpfvm_ringbuf_output(self.handle, self._ffi.from_buffer(bytes(data)), len(data), flags)
        if ret:
            raise MapError(self.name, "output", ret)

    def _records(self, consume: bool) -> list[bytes]:
        pos = self._ffi.new("uint64_t *", self._lib.bpfvm_ringbuf_query(self.handle, BPF_RB_CONS_POS))
        buf = self._ffi.new("uint8_t[]", self.max_entries)
        out: list[bytes] = []
        while True:
            n = self._lib.bpfvm_ringbuf_read(self.handle, pos, buf, self.max_entries)
            if consume:
                self._lib.bpfvm_ringbuf_advance(self.handle, pos[0])
            if n < 0:
                if n == -_errno.EFAULT:
                    raise MapError(self.name, "read", n)
                return out
            out.append(bytes(self._ffi.buffer(buf, n)))

    def drain(self) -> list[bytes]:
        """Consume the submitted records in order (skipping discarded ones), up to the first still reserved."""
        return self._records(consume=True)

    def peek_records(self) -> list[bytes]:
        """The records `drain()` would return, without consuming them."""
        return self._records(consume=False)

    def __len__(self) -> int:
        return len(self.peek_records())

    def dump(self) -> dict[str, Any]:
        d = self._describe()
        d.update(consumer_pos=self.query(BPF_RB_CONS_POS), producer_pos=self.query(BPF_RB_PROD_POS),
                 records=[r.hex() for r in self.peek_records()])
        return d


class SlotArray(Map):
    """PROG_ARRAY and PERF_EVENT_ARRAY: slots holding Python objects (programs, event targets) by opaque id."""

    def __init__(self, spec: MapSpec, memory: Memory, **kw: Any):
        super().__init__(spec, memory, **kw)
        self._objects: dict[int, Any] = {}

    def _index(self, key: Any, op: str) -> int:
        return int.from_bytes(_pack(key, 4, op, self.name), "little")

    def get_object(self, index: int) -> Any:
        """The object at `index`, or None (what bpf_tail_call needs)."""
        if not 0 <= index <= 0xFFFFFFFF:
            return None
        return self._objects.get(self._lib.bpfvm_fd_array_lookup(self.handle, index))

    get_prog = get_object

    def lookup(self, key: Any = None, flags: int = 0) -> Any:
        if flags:
            raise MapError(self.name, "lookup", _errno.EINVAL)
        obj = self.get_object(self._index(key, "lookup"))
        if obj is None:
            raise MapKeyError(self.name, "lookup", _errno.ENOENT)
        return obj

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        if value is None:
            raise MapError(self.name, "update", _errno.EBADF, "a slot needs an object")
        index = self._index(key, "update")
        old = self._lib.bpfvm_fd_array_lookup(self.handle, index)
        new = next(_ids)
        ret = self._lib.bpfvm_fd_array_update(self.handle, self._key(key, "update"), new, flags & 0xFFFFFFFFFFFFFFFF)
        if ret:
            self._raise("update", ret)
        self._objects[new] = value
        self._objects.pop(old, None)

    def delete(self, key: Any) -> None:
        old = self._lib.bpfvm_fd_array_lookup(self.handle, self._index(key, "delete"))
        super().delete(key)
        self._objects.pop(old, None)

    def __contains__(self, key: Any) -> bool:
        return self.get_object(self._index(key, "lookup")) is not None

    def keys(self) -> list[bytes]:
        """The indices of filled slots."""
        return [i.to_bytes(4, "little") for i in range(self.max_entries) if self.get_object(i) is not None]

    def __len__(self) -> int:
        return len(self.keys())

    def dump(self) -> dict[str, Any]:
        d = self._describe()
        d["entries"] = [
            {"key": i, "value": getattr(obj, "name", repr(obj))}
            for i in range(self.max_entries) if (obj := self.get_object(i)) is not None
        ]
        return d


class ProgArray(SlotArray):
    """PROG_ARRAY: tail-call targets."""


class PerfEventArray(SlotArray):
    """PERF_EVENT_ARRAY: event slots plus the records bpf_perf_event_output produced, as (index, data)."""

    def __init__(self, spec: MapSpec, memory: Memory, **kw: Any):
        super().__init__(spec, memory, **kw)
        self.records: list[tuple[int, bytes]] = []

    def emit(self, index: int, data: bytes) -> None:
        self.records.append((index, bytes(data)))

    def drain(self) -> list[tuple[int, bytes]]:
        out, self.records = self.records, []
        return out

    def dump(self) -> dict[str, Any]:
        d = super().dump()
        d["records"] = [{"index": i, "data": data.hex()} for i, data in self.records]
        return d


class MapOfMaps(Map):
    """ARRAY_OF_MAPS and HASH_OF_MAPS: slots holding inner maps compatible with `spec.inner`.

    On the program side, `native.lookup` returns the inner map's C handle (a map pointer), or 0;
    `map_from_handle` turns it back into the Map.
    """

    def __init__(self, spec: MapSpec, memory: Memory, **kw: Any):
        if spec.inner is None:
            raise MapError(spec.name, "create", _errno.EINVAL, "a map-in-map needs an inner map template")
        super().__init__(spec, memory, **kw)
        inner = spec.inner
        iflags = inner.flags | (BPF_F_RDONLY_PROG if inner.readonly else 0)
        ret = self._lib.bpfvm_map_set_inner_meta(self.handle, inner.type & 0xFFFFFFFF, inner.key_size & 0xFFFFFFFF,
                                                 inner.value_size & 0xFFFFFFFF, inner.max_entries & 0xFFFFFFFF,
                                                 iflags & 0xFFFFFFFF)
        if ret:
            raise MapError(self.name, "create (inner map template)", ret)
        self._held: dict[int, Map] = {}  # every map ever stored: a program may still hold its pointer

    def new_inner(self, name: str | None = None) -> Map:
        """A fresh map made from the inner template, in the same memory, ready to store."""
        tmpl = self.spec.inner
        assert tmpl is not None
        spec = MapSpec(name or f"{self.name}.inner", tmpl.type, tmpl.key_size, tmpl.value_size, tmpl.max_entries,
                       tmpl.flags, tmpl.initial, tmpl.inner, tmpl.readonly, spin_lock_off=tmpl.spin_lock_off)
        return create_map(spec, self.memory, ncpus=self.ncpus)

    def lookup(self, key: Any = None, flags: int = 0) -> "Map":
        if flags:
            raise MapError(self.name, "lookup", _errno.EINVAL)
        handle = self._lib.bpfvm_map_inner_lookup(self.handle, self._key(key, "lookup"))
        inner = self._held.get(int(self._ffi.cast("uintptr_t", handle))) if handle != self._ffi.NULL else None
        if inner is None:
            raise MapKeyError(self.name, "lookup", _errno.ENOENT)
        return inner

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        if not isinstance(value, Map):
            raise MapError(self.name, "update", _errno.EBADF, "the value must be a map")
        ret = self._lib.bpfvm_map_inner_update(self.handle, self._key(key, "update"), value.handle,
                                               flags & 0xFFFFFFFFFFFFFFFF)
        if ret:
            self._raise("update", ret)
        self._held[value.handle_addr] = value

    def __contains__(self, key: Any) -> bool:
        return self._lib.bpfvm_map_inner_lookup(self.handle, self._key(key, "lookup")) != self._ffi.NULL

    def keys(self) -> list[bytes]:
        if self.type == ARRAY_OF_MAPS:
            return [k for k in super().keys() if k in self]
        return super().keys()

    def __len__(self) -> int:
        return len(self.keys()) if self.type == ARRAY_OF_MAPS else super().__len__()

    def dump(self) -> dict[str, Any]:
        d = self._describe()
        d["entries"] = [{"key": k.hex(), "value": v.name} for k, v in self.items()]
        return d


_CLASSES: dict[int, type[Map]] = {
    HASH: Map, PERCPU_HASH: Map, LRU_HASH: Map, LRU_PERCPU_HASH: Map,
    ARRAY: ArrayMap, PERCPU_ARRAY: ArrayMap,
    QUEUE: QueueMap, STACK: QueueMap, RINGBUF: RingBuf,
    PROG_ARRAY: ProgArray, PERF_EVENT_ARRAY: PerfEventArray,
    ARRAY_OF_MAPS: MapOfMaps, HASH_OF_MAPS: MapOfMaps,
}


def create_map(spec: MapSpec, memory: Memory, *, ncpus: int = 1, spin_lock_offset: int | None = None) -> Map:
    """Instantiate `spec` with kernel semantics; its values become a region of `memory`.

    `ncpus` is the number of possible CPUs (per-CPU values, LRU lists); `spin_lock_offset` (default: the
    spec's `spin_lock_off`, from BTF) is where a `struct bpf_spin_lock` sits in the value, which enables
    BPF_F_LOCK on HASH and ARRAY maps.
    A PERF_EVENT_ARRAY with max_entries 0 gets one slot per CPU, as libbpf does.
    """
    cls = _CLASSES.get(spec.type)
    if cls is None:
        raise MapError(spec.name, "create", _errno.EINVAL, f"unsupported map type {spec.type}")
    if spec.type == PERF_EVENT_ARRAY and spec.max_entries == 0:
        spec = MapSpec(spec.name, spec.type, spec.key_size, spec.value_size, ncpus, spec.flags, spec.initial,
                       spec.inner, spec.readonly, spec.section, spec.btf_key_type, spec.btf_value_type, spec.pinning)
    if spin_lock_offset is None:
        spin_lock_offset = spec.spin_lock_off
    return cls(spec, memory, ncpus=ncpus, spin_lock_offset=spin_lock_offset)
