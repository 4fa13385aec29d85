"""The running kernel as an oracle: load an object with bpftool and run it with BPF_PROG_TEST_RUN.

Only test runs: programs are loaded and pinned under a private directory of bpffs, run with `bpftool prog run`,
and unpinned (which unloads them) when the `KernelObject` closes. Maps are read and written through their pins
with bpf() (bpfvm.bpfsys). Nothing is ever attached to a hook.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import bpfsys
from .errors import BpfvmError

BPFFS = Path("/sys/fs/bpf")


class KernelUnavailable(BpfvmError):
    """The kernel cannot serve as an oracle here (no bpftool, no bpffs, or bpf() refused)."""


@dataclass
class KernelRunResult:
    retval: int
    duration_ns: int
    data_out: bytes = b""
    ctx_out: bytes = b""


def _ensure_bpffs() -> None:
    if os.path.ismount(BPFFS):
        return
    if os.geteuid() != 0:
        raise KernelUnavailable("bpffs is not mounted at /sys/fs/bpf and we are not root to mount it")
    done = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True)
    if done.returncode != 0:
        raise KernelUnavailable(f"cannot mount bpffs: {done.stderr.strip() or done.returncode}")


def kernel_unavailable_reason() -> str | None:
    """None when the kernel can load and test-run programs here; otherwise why not (for pytest skips)."""
    if shutil.which("bpftool") is None:
        return "bpftool is not installed"
    try:
        _ensure_bpffs()
    except KernelUnavailable as exc:
        return str(exc)
    return _probe_prog_load()


def _probe_prog_load() -> str | None:
    """Load `r0 = 0; exit` as a socket filter with bpf(BPF_PROG_LOAD); None if the kernel accepts it."""
    import ctypes
    import struct

    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))
    license_ = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license
    attr = struct.pack("<IIQQ", 1, 2, ctypes.addressof(insns), ctypes.addressof(license_))
    try:
        fd, err, _ = bpfsys.bpf(bpfsys.PROG_LOAD, attr)
    except bpfsys.BpfSyscallError as exc:
        return str(exc)
    if fd < 0:
        return f"bpf(BPF_PROG_LOAD) refused: {os.strerror(err)}"
    os.close(fd)
    return None


# bpftool's `type` argument is a libbpf section name; bpfvm's type names differ for some.
_BPFTOOL_TYPES = {"socket_filter": "socket", "sched_cls": "tc", "sched_act": "action", "cgroup_skb": "cgroup/skb",
                  "raw_tracepoint_writable": "raw_tracepoint.w"}


def _type_args(prog_type: str | None) -> list[str]:
    """`type NAME` for bpftool loadall, or nothing to let libbpf use the section names."""
    return ["type", _BPFTOOL_TYPES.get(prog_type, prog_type)] if prog_type else []


class KernelObject:
    """An object loaded into the kernel with all its programs and maps pinned in a private bpffs directory."""

    def __init__(self, path: str | Path, *, prog_type: str | None = None):
        _ensure_bpffs()
        self.path = Path(path)
        self.pin_dir = BPFFS / f"bpfvm-{uuid.uuid4().hex[:12]}"
        self.map_dir = self.pin_dir / "maps"
        cmd = ["bpftool", "prog", "loadall", str(self.path), str(self.pin_dir)]
        cmd += _type_args(prog_type)
        cmd += ["pinmaps", str(self.map_dir)]
        self._name_pins = _new_name_pins(self.path)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            self.close()
            raise KernelUnavailable(f"the kernel refused {self.path.name}: {_refusal_reason(done.stderr)}")

    def __enter__(self) -> "KernelObject":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        _unpin(self.pin_dir, self._name_pins)

    # -- programs --------------------------------------------------------------------------------------------------
    def run(
        self,
        prog: str,
        *,
        data_in: bytes | None = None,
        ctx_in: bytes | None = None,
        repeat: int = 1,
        data_size_out: int | None = None,
        ctx_size_out: int | None = None,
    ) -> KernelRunResult:
        pin = self.pin_dir / prog
        if not pin.exists():
            raise BpfvmError(f"the kernel has no program {prog!r} from {self.path.name}")
        with tempfile.TemporaryDirectory() as tmp:
            cmd = ["bpftool", "-j", "prog", "run", "pinned", str(pin)]
            if data_in is not None:
                (Path(tmp) / "in").write_bytes(data_in)
                cmd += ["data_in", str(Path(tmp) / "in"), "data_out", str(Path(tmp) / "out")]
                if data_size_out is not None:
                    cmd += ["data_size_out", str(data_size_out)]
            if ctx_in is not None:
                (Path(tmp) / "ctx").write_bytes(ctx_in)
                cmd += ["ctx_in", str(Path(tmp) / "ctx"), "ctx_out", str(Path(tmp) / "ctxout")]
                if ctx_size_out is not None:
                    cmd += ["ctx_size_out", str(ctx_size_out)]
            if repeat > 1:
                cmd += ["repeat", str(repeat)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            report = _json_or_none(done.stdout)
            if done.returncode != 0 or report is None or "error" in report:
                message = (report or {}).get("error") or done.stderr.strip() or f"exit {done.returncode}"
                raise BpfvmError(f"kernel test run of {prog} failed: {message}")
            out = Path(tmp) / "out"
            ctx_out = Path(tmp) / "ctxout"
            return KernelRunResult(
                retval=int(report["retval"]) & 0xFFFFFFFF,
                duration_ns=int(report.get("duration", 0)),
                data_out=out.read_bytes() if out.exists() else b"",
                ctx_out=ctx_out.read_bytes() if ctx_out.exists() else b"",
            )

    def xlated(self, prog: str) -> list[str]:
        """The kernel's xlated program, one instruction per entry as bpftool prints it without the opcode
        byte (`r1 = 0`, `call pc+34#bpf_prog_..._cb`): what bpfvm's own xlated listing is compared with."""
        pin = self.pin_dir / prog
        if not pin.exists():
            raise BpfvmError(f"the kernel has no program {prog!r} from {self.path.name}")
        done = subprocess.run(["bpftool", "-j", "prog", "dump", "xlated", "pinned", str(pin)],
                              capture_output=True, text=True)
        listing = _json_or_none(done.stdout)
        if done.returncode != 0 or not isinstance(listing, list):
            raise BpfvmError(f"cannot dump the kernel's xlated {prog}: {done.stderr.strip() or done.returncode}")
        return [entry["disasm"].split(") ", 1)[-1] for entry in listing if "disasm" in entry]

    # -- maps ------------------------------------------------------------------------------------------------------
    def _map_pin(self, name: str) -> Path:
        """Maps are pinned by libbpf's name: global data as `<obj>_bss`, `<obj>_data`, `<obj>_rodata` ..."""
        pins = {pin.name: pin for pin in self.map_dir.iterdir()}  # bpffs refuses stat() of some absent names
        if name in pins:
            return pins[name]
        wanted = "_" + name.lstrip(".").replace(".", "_")
        for pin_name, pin in pins.items():
            if name.startswith(".") and pin_name.endswith(wanted):
                return pin
        raise BpfvmError(f"the kernel has no map {name!r} from {self.path.name}")

    def map_dump(self, name: str, *, skip_zero_array_values: bool = False) -> dict[bytes, bytes]:
        """Every key and value of a map, read with bpf() (per-CPU maps: the values of all possible CPUs
        concatenated, each `value_size` bytes); an array's all-zero elements are left out when asked."""
        try:
            with bpfsys.KernelMapFd(self._map_pin(name)) as kmap:
                entries = dict(kmap.items(skip_zero_array_values=skip_zero_array_values))
                info = kmap.info
        except bpfsys.BpfSyscallError as exc:
            raise BpfvmError(f"kernel map dump of {name} failed: {exc.strerror}") from None
        if info.type in bpfsys.PERCPU_TYPES:
            stride = (info.value_size + 7) & ~7
            entries = {k: b"".join(v[i : i + info.value_size] for i in range(0, len(v), stride))
                       for k, v in entries.items()}
        return entries

    def map_update(self, name: str, key: bytes, value: bytes) -> None:
        """Set one element; a per-CPU map given one `value_size` value gets it on every CPU (as bpftool does)."""
        try:
            with bpfsys.KernelMapFd(self._map_pin(name)) as kmap:
                info = kmap.info
                if info.type in bpfsys.PERCPU_TYPES and len(value) == info.value_size:
                    padded = value.ljust((info.value_size + 7) & ~7, b"\0")
                    value = padded * (info.syscall_value_size // len(padded))
                kmap.update(key, value)
        except bpfsys.BpfSyscallError as exc:
            raise BpfvmError(f"kernel map update of {name} failed: {exc.strerror}") from None


def _new_name_pins(path: Path) -> list[Path]:
    """Pins that loading `path` will create outside the private directory: libbpf pins maps declared
    LIBBPF_PIN_BY_NAME at /sys/fs/bpf/<name>. Those not there yet are this load's to remove."""
    return [pin for pin in _name_pins(str(path), path.stat().st_mtime_ns if path.exists() else 0) if not pin.exists()]


@functools.lru_cache(maxsize=16)
def _name_pins(path: str, _mtime: int) -> tuple[Path, ...]:
    from .elf import load_object

    try:
        maps = load_object(path).maps
    except BpfvmError:
        return ()
    return tuple(BPFFS / spec.name for spec in maps if spec.pinning == 1)


def _unpin(pin_dir: Path, name_pins: list[Path]) -> None:
    """Unpin (and so unload) what a load pinned: the private directory, and the maps pinned by name."""
    if pin_dir.exists():
        for p in sorted(pin_dir.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        pin_dir.rmdir()
    for pin in name_pins:
        if pin.exists():
            pin.unlink()


@dataclass
class LoadVerdict:
    """What the kernel's verifier said of one program of an object: accepted or not, with its processed count
    and, for a refusal, the reason (the last line of its log before the stats)."""

    accepted: bool
    processed: int | None = None
    reason: str = ""


def kernel_verdicts(path: str | Path, *, prog_type: str | None = None) -> dict[str, LoadVerdict]:
    """Load every program of an object into the kernel with `bpftool -d prog loadall` (pinned privately, then
    unpinned; never attached) and read each program's verifier log. A program libbpf did not get to (it stops
    at the first refusal) is absent."""
    _ensure_bpffs()
    pin_dir = BPFFS / f"bpfvm-{uuid.uuid4().hex[:12]}"
    cmd = ["bpftool", "-d", "prog", "loadall", str(path), str(pin_dir)] + _type_args(prog_type)
    name_pins = _new_name_pins(Path(path))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        _unpin(pin_dir, name_pins)
    verdicts: dict[str, LoadVerdict] = {}
    current: str | None = None
    log: list[str] = []
    for line in done.stderr.splitlines():
        begin = re.match(r"libbpf: prog '([^']+)': -- BEGIN PROG LOAD LOG --", line)
        if begin:
            current, log = begin.group(1), []
            continue
        if current is not None:
            if line.strip() == "-- END PROG LOAD LOG --":
                stats = next((re.match(r"processed (\d+) insns", ln) for ln in reversed(log)
                              if ln.startswith("processed ")), None)
                reasons = [ln.strip() for ln in log if ln.strip() and not ln.startswith(
                    ("processed ", "verification time", "stack depth"))]
                verdicts[current] = LoadVerdict(True, int(stats.group(1)) if stats else None,
                                                reasons[-1] if reasons else "")
                current = None
            else:
                log.append(line)
            continue
        failed = re.match(r"libbpf: prog '([^']+)': failed to load", line)
        if failed:
            verdict = verdicts.setdefault(failed.group(1), LoadVerdict(False))
            verdict.accepted = False
            verdict.reason = verdict.reason or _refusal_reason(done.stderr)
    for verdict in verdicts.values():
        if verdict.accepted:
            verdict.reason = ""
    if not verdicts and done.returncode != 0:
        raise KernelUnavailable(f"the kernel refused {Path(path).name}: {_refusal_reason(done.stderr)}")
    return verdicts


def _refusal_reason(stderr: str) -> str:
    """The verifier's reason from bpftool's output: the last line of the program load log before its stats,
    or else bpftool's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    begin = [i for i, ln in enumerate(lines) if ln.endswith("-- BEGIN PROG LOAD LOG --")]
    if begin:
        log = lines[begin[-1] + 1:]
        log = log[: log.index("-- END PROG LOAD LOG --")] if "-- END PROG LOAD LOG --" in log else log
        reasons = [ln for ln in log if not ln.startswith(("processed ", "verification time", "stack depth"))]
        if reasons:
            return reasons[-1]
    failed = [ln for ln in lines if "load failed: " in ln]  # "libbpf: prog 'x': BPF program load failed: EPERM"
    if failed:
        return re.sub(r"^libbpf: prog '[^']*': ", "", failed[-1])
    noise = ("Warning:", "If it used to work", "libbpf: supported section", "Error: failed to load object file",
             "libbpf: failed to load object")
    useful = [ln for ln in lines if not ln.startswith(noise)]
    return useful[-1] if useful else (lines[-1] if lines else "bpftool failed")


def _json_or_none(text: str):
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None
