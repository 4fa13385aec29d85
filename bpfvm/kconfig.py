"""Values of `extern ... __kconfig` variables, laid out as libbpf lays out its `.kconfig` map.

A program reads them through an `lddw` of the extern, which the loader points into a read-only one-element array
called `.kconfig`. Values come from the running kernel's configuration (/proc/config.gz or /boot/config-<release>,
or the file $BPFVM_KCONFIG names, to load for another kernel) and from libbpf's virtual options (LINUX_KERNEL_VERSION, LINUX_HAS_BPF_COOKIE, LINUX_HAS_SYSCALL_WRAPPER, which
describe the kernel bpfvm stands in for). A weak extern without a value reads as zero; a strong one fails to load.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
import zlib
from dataclasses import dataclass
from typing import Callable

from .btf import INT_BOOL, INT_SIGNED, Btf, Kind
from .errors import LoadError

TRISTATE = {"n": 0, "y": 1, "m": 2}  # enum libbpf_tristate


@dataclass(frozen=True)
class Extern:
    """One `.kconfig` extern: its BTF VAR's type and whether the symbol is weak."""

    name: str
    type_id: int
    weak: bool


@dataclass(frozen=True)
class Layout:
    """Where each extern's value sits in the `.kconfig` value, and the value's initial bytes."""

    offsets: dict[str, int]
    data: bytes


def kernel_version(release: str | None = None) -> int:
    """KERNEL_VERSION(a, b, c) of a release string such as 6.18.44-fc, the patch level capped at 255."""
    nums = [int(n) for n in re.findall(r"\d+", (release or platform.release()).split("-")[0])[:3]]
    a, b, c = (nums + [0, 0, 0])[:3]
    return (a << 16) + (b << 8) + min(c, 255)


def read_kernel_config(paths: tuple[str, ...] | None = None) -> dict[str, str]:
    """CONFIG_* = value ("n" for `# CONFIG_X is not set`) of $BPFVM_KCONFIG (a .config file, gzipped or not),
    else of the running kernel; empty if none is readable. A file named by $BPFVM_KCONFIG must be readable."""
    override = os.environ.get("BPFVM_KCONFIG") if paths is None else None
    if override:
        try:
            return _parse_config(_read_text(override))
        except (OSError, EOFError, zlib.error, UnicodeError) as exc:
            raise LoadError(f"BPFVM_KCONFIG={override}: cannot read it: {exc}") from None
    for path in paths or ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        try:
            return _parse_config(_read_text(path))
        except (OSError, EOFError, zlib.error, UnicodeError):
            continue
    return {}


def _read_text(path: str) -> str:
    opener: Callable = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        return f.read()


def _parse_config(text: str) -> dict[str, str]:
    config = {}
    for line in text.splitlines():
        m = re.match(r"(CONFIG_\w+)=(.*)$", line) or re.match(r"# (CONFIG_\w+) is not set$", line)
        if m:
            config[m.group(1)] = m.group(2) if m.lastindex == 2 else "n"
    return config


def virtual_values() -> dict[str, str]:
    """libbpf's LINUX_* options, for the kernel bpfvm emulates (cookies and syscall wrappers, as since 5.15)."""
    return {"LINUX_KERNEL_VERSION": str(kernel_version()), "LINUX_HAS_BPF_COOKIE": "y",
            "LINUX_HAS_SYSCALL_WRAPPER": "y" if platform.machine() in ("x86_64", "aarch64", "s390x") else "n"}


def _kind(btf: Btf, ext: Extern) -> tuple[str, int, int]:
    """(kind, size, alignment) of an extern's type, as libbpf's find_kcfg_type() classifies it: bool, char (any
    other 1-byte integer), int/uint (2, 4 or 8 bytes), tristate (enum libbpf_tristate) or str (char array)."""
    t = btf.resolve(ext.type_id)
    if t.kind == Kind.INT and t.encoding & INT_BOOL and t.size == 1:
        return "bool", 1, 1
    if t.kind == Kind.INT and t.size == 1:
        return "char", 1, 1
    if t.kind == Kind.INT and t.size in (2, 4, 8):
        return ("int" if t.encoding & INT_SIGNED else "uint"), t.size, t.size
    if t.kind == Kind.ENUM and t.name == "libbpf_tristate":
        return "tristate", 4, 4
    if t.kind == Kind.ARRAY and t.nelems:
        elem = btf.resolve(t.elem_type)
        if elem.kind == Kind.INT and elem.size == 1 and not elem.encoding & INT_BOOL:
            return "str", t.nelems, 1
    raise LoadError(f"extern (kcfg) '{ext.name}': type {t.kind_name} '{t.name}' is not supported")


def _encode(name: str, kind: str, size: int, value: str) -> bytes:
    """libbpf's set_kcfg_value_{tri,str,num}(): how a config value becomes the extern's bytes."""
    if value in TRISTATE:
        if kind == "bool" and value != "m":
            return bytes([value == "y"])
        if kind == "tristate":
            return TRISTATE[value].to_bytes(4, "little")
        if kind == "char":
            return value.encode()
        raise LoadError(f"extern (kcfg) '{name}': value '{value}' implies bool, tristate, or char type")
    if value.startswith('"'):
        if kind != "str" or len(value) < 2 or not value.endswith('"'):
            raise LoadError(f"extern (kcfg) '{name}': value {value} implies a char array type")
        return value[1:-1].encode()[: size - 1].ljust(size, b"\0")
    try:
        number = int(value, 0)
    except ValueError:
        raise LoadError(f"extern (kcfg) '{name}': value '{value}' is not understood") from None
    if kind not in ("int", "uint", "char", "bool") or (kind == "bool" and number > 1):
        raise LoadError(f"extern (kcfg) '{name}': value {value} implies an integer type")
    bits = 8 * size
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "int" else (0, (1 << bits) - 1)
    if not lo <= number <= hi:
        raise LoadError(f"extern (kcfg) '{name}': value {value} doesn't fit in {size} bytes")
    return (number & ((1 << bits) - 1)).to_bytes(size, "little")


def layout(btf: Btf, externs: list[Extern], values: dict[str, str] | None = None) -> Layout:
    """Offsets and bytes of the `.kconfig` value: descending alignment, then ascending size, then name."""
    if values is None:
        values = {**read_kernel_config(), **virtual_values()}
    kinds = {e.name: _kind(btf, e) for e in externs}
    ordered = sorted(externs, key=lambda e: (-kinds[e.name][2], kinds[e.name][1], e.name))
    offsets: dict[str, int] = {}
    data = bytearray()
    for ext in ordered:
        kind, size, align = kinds[ext.name]
        data.extend(bytes(-len(data) % align))
        offsets[ext.name] = len(data)
        value = values.get(ext.name)
        if value is None:
            if not ext.weak:
                raise LoadError(f"extern (kcfg) '{ext.name}': value not found (declare it __weak to read 0)")
            data.extend(bytes(size))
        else:
            data.extend(_encode(ext.name, kind, size, value))
    return Layout(offsets, bytes(data))
