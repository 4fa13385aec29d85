"""The running kernel's verifier as an oracle: load raw instructions with bpf(BPF_PROG_LOAD) and a log buffer.

Tests use this to check that bpfvm accepts what the kernel accepts and rejects what it rejects, and to take the
kernel's exact wording. Maps of the program are created with BPF_MAP_CREATE and referenced by fd (lddw src 5/6
become src 1/2); kfunc calls are resolved to vmlinux BTF ids by name. Nothing is attached; every fd is closed.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from .. import bpfsys, isa, uapi
from ..btf import load_vmlinux
from ..isa import Insn
from ..program import MapSpec, Program



@dataclass
class KernelVerdict:
    accepted: bool
    log: str
    errno: int = 0

    @property
    def error_line(self) -> str:
        """The line of the log that says why (the last non-empty line before the stats line)."""
        lines = [ln for ln in self.log.splitlines() if ln.strip()]
        for ln in reversed(lines):
            if ln.startswith(("processed ", "verification time")):
                continue
            return ln
        return ""


class OracleUnavailable(Exception):
    """bpf() cannot be used here."""


def _bpf(cmd: int, attr: bytes, what: str) -> tuple[int, int]:
    """(return value, errno) of bpf(cmd, attr); OracleUnavailable where there is no bpf() at all."""
    try:
        ret, err, _ = bpfsys.bpf(cmd, attr)
    except bpfsys.BpfSyscallError as exc:
        raise OracleUnavailable(f"{what}: {exc.strerror}") from None
    return ret, err


def _create_map(spec: MapSpec) -> int:
    attr = struct.pack("<IIIII", spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags)
    fd, err = _bpf(bpfsys.MAP_CREATE, attr, "BPF_MAP_CREATE")
    if fd < 0:
        raise OracleUnavailable(f"BPF_MAP_CREATE {spec.name}: {os.strerror(err)}")
    return fd


def _kfunc_ids(names: list[str]) -> list[int]:
    btf = load_vmlinux()
    ids = []
    for name in names:
        t = btf.find_func(name) if btf else None
        ids.append(t.id if t is not None else 0)
    return ids


def kernel_verify(program: Program | list[Insn], prog_type: str | None = None, *, log_level: int = 1,
                  maps: list[MapSpec] | None = None, expected_attach_type: int = 0,
                  log_size: int = 1 << 22) -> KernelVerdict:
    """Load `program` into the kernel (then unload it) and return the verdict and the verifier log."""
    if isinstance(program, Program):
        insns, prog_type = list(program.insns), prog_type or program.prog_type
        maps = maps if maps is not None else list(program.maps)
        kfuncs = list(program.kfuncs)
    else:
        insns, kfuncs = list(program), []
        maps = maps or []
    prog_type = prog_type or "socket_filter"
    fds: list[int] = []
    try:
        for spec in maps:
            fds.append(_create_map(spec))
        kf = _kfunc_ids(kfuncs) if kfuncs else []
        out: list[Insn] = []
        for insn in insns:
            if insn.opcode == isa.OP_LDDW and insn.src in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_IDX_VALUE):
                src = isa.PSEUDO_MAP_FD if insn.src == isa.PSEUDO_MAP_IDX else isa.PSEUDO_MAP_VALUE
                insn = insn._replace(src=src, imm=fds[insn.imm] if 0 <= insn.imm < len(fds) else -1)
            elif insn.is_kfunc_call() and 0 <= insn.imm < len(kf):
                insn = insn._replace(imm=kf[insn.imm])
            out.append(insn)
        code = ctypes.create_string_buffer(isa.encode(out))
        lic = ctypes.create_string_buffer(b"GPL")
        logbuf = ctypes.create_string_buffer(log_size if log_level else 1)
        attr = bytearray(72)
        struct.pack_into("<IIQQIIQ", attr, 0, uapi.prog_type_id(prog_type), len(out), ctypes.addressof(code),
                         ctypes.addressof(lic), log_level, log_size if log_level else 0,
                         ctypes.addressof(logbuf) if log_level else 0)
        struct.pack_into("<I", attr, 68, expected_attach_type)
        fd, err = _bpf(bpfsys.PROG_LOAD, bytes(attr), "BPF_PROG_LOAD")
        if fd >= 0:
            os.close(fd)
        return KernelVerdict(fd >= 0, logbuf.value.decode(errors="replace"), err)
    finally:
        for fd in fds:
            os.close(fd)


def oracle_unavailable_reason() -> str | None:
    """None if bpf(BPF_PROG_LOAD) works here, else why not."""
    try:
        v = kernel_verify([Insn(0xB7, 0, 0, 0, 0), Insn(isa.OP_EXIT)], "socket_filter", log_level=0)
    except OracleUnavailable as exc:
        return str(exc)
    except OSError as exc:
        return f"bpf() unusable: {exc}"
    if not v.accepted:
        return f"bpf(BPF_PROG_LOAD) refused: {os.strerror(v.errno)}"
    return None
