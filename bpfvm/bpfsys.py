"""The bpf(2) system call through ctypes, for the kernel oracles (bpfvm.kernel, bpfvm.verifier.oracle) and tests.

Objects are loaded and run with bpftool (bpfvm.kernel); their maps are read here because bpftool's JSON dump of a
large array (tens of millions of elements in real load balancers) would take gigabytes of text. An array is read
with BPF_MAP_LOOKUP_BATCH, thousands of elements per call, and its all-zero elements are skipped in bulk.

Every function returns or raises with the errno of the call; nothing here attaches a program anywhere.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import struct
from dataclasses import dataclass
from typing import Iterator

SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 2, 3, 4, 5
OBJ_GET, PROG_TEST_RUN, OBJ_GET_INFO_BY_FD, BTF_LOAD, MAP_LOOKUP_AND_DELETE_ELEM = 7, 10, 15, 18, 21
MAP_LOOKUP_BATCH = 24

ATTR_SIZE = 256  # larger than any union bpf_attr member used here; the kernel checks the tail is zero
ARRAY_TYPES = {2, 6}  # ARRAY, PERCPU_ARRAY
PERCPU_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
BATCH_ELEMENTS = 1 << 14


class BpfSyscallError(OSError):
    """A bpf() command failed; `errno` is its error number."""


_libc: ctypes.CDLL | None = None


def _syscall_number() -> int:
    number = SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise BpfSyscallError(_errno.ENOSYS, f"no bpf() syscall number known for {platform.machine()}")
    return number


def bpf(cmd: int, attr: bytes | bytearray) -> tuple[int, int, bytes]:
    """Issue bpf(cmd, attr): (return value, errno or 0, the attr as the kernel left it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(bytes(attr).ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    ret = _libc.syscall(ctypes.c_long(_syscall_number()), ctypes.c_int(cmd), buf, ctypes.c_uint(ATTR_SIZE))
    return ret, (ctypes.get_errno() if ret < 0 else 0), buf.raw


def _checked(cmd: int, attr: bytes, what: str) -> tuple[int, bytes]:
    ret, err, out = bpf(cmd, attr)
    if ret < 0:
        raise BpfSyscallError(err, f"{what}: {os.strerror(err)}")
    return ret, out


def possible_cpus() -> int:
    """The kernel's num_possible_cpus(), which sizes the values of per-CPU maps in syscalls."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


@dataclass(frozen=True)
class MapInfo:
    """The fields of struct bpf_map_info that reading a map needs."""

    type: int
    key_size: int
    value_size: int
    max_entries: int

    @property
    def syscall_value_size(self) -> int:
        """Bytes per value in a syscall: per-CPU maps give every possible CPU's copy, each padded to 8 bytes."""
        if self.type in PERCPU_TYPES:
            return ((self.value_size + 7) & ~7) * possible_cpus()
        return self.value_size


class KernelMapFd:
    """An open kernel map (by a pinned path), read and written element by element or in batches."""

    def __init__(self, pinned: str | os.PathLike[str]):
        path = ctypes.create_string_buffer(os.fsencode(pinned))
        self.fd, _ = _checked(OBJ_GET, struct.pack("<Q", ctypes.addressof(path)), f"BPF_OBJ_GET {pinned}")
        try:
            self.info = self._info()
        except BaseException:
            os.close(self.fd)
            raise

    def _info(self) -> MapInfo:
        raw = ctypes.create_string_buffer(80)
        _checked(OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", self.fd, len(raw), ctypes.addressof(raw)),
                 "BPF_OBJ_GET_INFO_BY_FD")
        map_type, _id, key_size, value_size, max_entries = struct.unpack_from("<5I", raw.raw)
        return MapInfo(map_type, key_size, value_size, max_entries)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "KernelMapFd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _elem(self, cmd: int, key: bytes | None, value: ctypes.Array | None, flags: int, what: str) -> None:
        kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
        _checked(cmd, struct.pack("<IIQQQ", self.fd, 0, _addr(kbuf), _addr(value), flags), what)

    def lookup(self, key: bytes) -> bytes:
        size = self.info.syscall_value_size
        out = ctypes.create_string_buffer(max(size, 1))
        self._elem(MAP_LOOKUP_ELEM, key, out, 0, "BPF_MAP_LOOKUP_ELEM")
        return out.raw[:size]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._elem(MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)), flags, "BPF_MAP_UPDATE_ELEM")

    def next_key(self, key: bytes | None) -> bytes | None:
        out = ctypes.create_string_buffer(max(self.info.key_size, 1))
        try:
            self._elem(MAP_GET_NEXT_KEY, key, out, 0, "BPF_MAP_GET_NEXT_KEY")
        except BpfSyscallError as exc:
            if exc.errno == _errno.ENOENT:
                return None
            raise
        return out.raw[: self.info.key_size]

    def items(self, *, skip_zero_array_values: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) in the kernel's order; an array's all-zero values are left out when asked."""
        if self.info.type in ARRAY_TYPES:
            yield from self._array_items(skip_zero_array_values)
            return
        key = None
        for _ in range(self.info.max_entries + 1):  # bounded even while a program changes the map
            key = self.next_key(key)
            if key is None:
                return
            try:
                yield key, self.lookup(key)
            except BpfSyscallError as exc:
                if exc.errno != _errno.ENOENT:  # deleted since get_next_key
                    raise

    def _array_items(self, skip_zero: bool) -> Iterator[tuple[bytes, bytes]]:
        size = self.info.syscall_value_size
        count = min(BATCH_ELEMENTS, self.info.max_entries)
        keys = ctypes.create_string_buffer(4 * count)
        values = ctypes.create_string_buffer(max(size, 1) * count)
        batch_in, batch_out = ctypes.c_uint32(0), ctypes.c_uint32(0)
        zero = bytes(size * count)
        first = True
        while True:
            attr = struct.pack("<QQQQIIQQ", 0 if first else ctypes.addressof(batch_in), ctypes.addressof(batch_out),
                               ctypes.addressof(keys), ctypes.addressof(values), count, self.fd, 0, 0)
            ret, err, out = bpf(MAP_LOOKUP_BATCH, attr)
            if ret < 0 and err != _errno.ENOENT:
                raise BpfSyscallError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
            got = struct.unpack_from("<I", out, 32)[0]
            block = values.raw[: got * size]
            if not (skip_zero and block == zero[: len(block)]):
                key_block = keys.raw[: 4 * got]
                for i in range(got):
                    value = block[i * size : (i + 1) * size]
                    if not (skip_zero and not any(value)):
                        yield key_block[4 * i : 4 * i + 4], value
            if ret < 0:  # ENOENT: that was the last batch
                return
            batch_in.value, first = batch_out.value, False
