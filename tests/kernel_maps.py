"""Kernel maps through bpf(2) (bpfvm.bpfsys), for comparing bpfvm's maps with the running kernel's.

Only what the map oracle tests need: create a map, the element commands, and a tiny socket-filter program
that looks a 4-byte key up from BPF (the only way to mark an LRU element used: syscall lookups never do).
Every call returns errno values (0 on success) rather than raising, so results compare directly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from bpfvm.bpfsys import (MAP_CREATE, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, MAP_LOOKUP_AND_DELETE_ELEM,
                          MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, PERCPU_TYPES, PROG_LOAD, PROG_TEST_RUN, BpfSyscallError,
                          bpf, possible_cpus)

PROG_TYPE_SOCKET_FILTER = 1


def unavailable_reason() -> str | None:
    """Why the kernel cannot serve as an oracle here, or None when bpf() works."""
    try:
        ret, err, _ = bpf(MAP_CREATE, struct.pack("<5I", 2, 4, 4, 1, 0))
    except BpfSyscallError as exc:
        return str(exc)
    if ret < 0:
        return f"bpf(BPF_MAP_CREATE) refused: {errno.errorcode.get(err, err)}"
    os.close(ret)
    return None


def _ptr(buf) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


class KernelMap:
    """A kernel map; operations mirror bpf(2) and return errnos."""

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0):
        self.type, self.key_size, self.value_size = map_type, key_size, value_size
        self.sys_value_size = ((value_size + 7) & ~7) * possible_cpus() if map_type in PERCPU_TYPES else value_size
        ret, err, _ = bpf(MAP_CREATE, struct.pack("<5I", map_type, key_size, value_size, max_entries, flags))
        if ret < 0:
            raise OSError(err, f"BPF_MAP_CREATE: {os.strerror(err)}")
        self.fd = ret
        self._progs: dict[bytes, int] = {}

    @staticmethod
    def create_errno(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0) -> int:
        ret, err, _ = bpf(MAP_CREATE, struct.pack("<5I", map_type, key_size, value_size, max_entries, flags))
        if ret >= 0:
            os.close(ret)
        return err

    def close(self) -> None:
        for fd in self._progs.values():
            os.close(fd)
        os.close(self.fd)

    def __enter__(self) -> "KernelMap":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _elem(self, cmd: int, key: bytes | None, value, flags: int = 0) -> int:
        kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
        attr = struct.pack("<IIQQQ", self.fd, 0, _ptr(kbuf), _ptr(value), flags)
        return bpf(cmd, attr)[1]

    def lookup(self, key: bytes | None, flags: int = 0) -> tuple[int, bytes | None]:
        out = ctypes.create_string_buffer(max(self.sys_value_size, 1))
        err = self._elem(MAP_LOOKUP_ELEM, key, out, flags)
        return err, (out.raw[: self.sys_value_size] if err == 0 else None)

    def update(self, key: bytes | None, value: bytes, flags: int = 0) -> int:
        return self._elem(MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)), flags)

    def delete(self, key: bytes) -> int:
        return self._elem(MAP_DELETE_ELEM, key, None)

    def lookup_and_delete(self, key: bytes | None, flags: int = 0) -> tuple[int, bytes | None]:
        out = ctypes.create_string_buffer(max(self.sys_value_size, 1))
        err = self._elem(MAP_LOOKUP_AND_DELETE_ELEM, key, out, flags)
        return err, (out.raw[: self.sys_value_size] if err == 0 else None)

    def get_next_key(self, key: bytes | None) -> tuple[int, bytes | None]:
        out = ctypes.create_string_buffer(max(self.key_size, 1))
        err = self._elem(MAP_GET_NEXT_KEY, key, out)
        return err, (out.raw[: self.key_size] if err == 0 else None)

    def keys(self) -> list[bytes]:
        keys: list[bytes] = []
        key = None
        while True:
            err, key = self.get_next_key(key)
            if err:
                return keys
            keys.append(key)

    def prog_lookup(self, key: bytes) -> int:
        """Run bpf_map_lookup_elem(map, key) in a BPF program on this CPU: 1 if found, else 0."""
        if key not in self._progs:
            self._progs[key] = self._load_lookup_prog(key)
        data = ctypes.create_string_buffer(64)
        attr = struct.pack("<IIIIQQII", self._progs[key], 0, 64, 0, ctypes.addressof(data), 0, 1, 0)
        ret, err, out = bpf(PROG_TEST_RUN, attr)
        if ret < 0:
            raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
        return struct.unpack_from("<I", out, 4)[0]

    def _load_lookup_prog(self, key: bytes) -> int:
        if len(key) != 4:
            raise ValueError("prog_lookup takes 4-byte keys")

        def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
            return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)

        code = b"".join([
            insn(0x62, 10, 0, -4, struct.unpack("<i", key)[0]),  # *(u32 *)(r10 - 4) = key
            insn(0xBF, 2, 10),                                   # r2 = r10
            insn(0x07, 2, 0, 0, -4),                             # r2 += -4
            insn(0x18, 1, 1, 0, self.fd), insn(0, 0, 0, 0, 0),   # r1 = map (BPF_PSEUDO_MAP_FD)
            insn(0x85, 0, 0, 0, 1),                              # call bpf_map_lookup_elem
            insn(0x15, 0, 0, 2, 0),                              # if r0 == 0 goto +2
            insn(0xB7, 0, 0, 0, 1),                              # r0 = 1
            insn(0x95),                                          # exit
            insn(0xB7, 0, 0, 0, 0),                              # r0 = 0
            insn(0x95),                                          # exit
        ])
        insns = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(65536)
        attr = struct.pack("<IIQQIIQ", PROG_TYPE_SOCKET_FILTER, len(code) // 8, ctypes.addressof(insns),
                           ctypes.addressof(license_), 1, len(log), ctypes.addressof(log))
        ret, err, _ = bpf(PROG_LOAD, attr)
        if ret < 0:
            raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)}: {log.value.decode(errors='replace')[-300:]}")
        return ret
