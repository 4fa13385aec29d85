"""Compile the C test programs under tests/progs with clang-19 for the BPF target, at test time."""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

CLANG = "clang-19"
PROGS = Path(__file__).parent / "progs"


def include_dir() -> str:
    """Where Debian keeps the arch-specific uapi headers (asm/types.h) that linux/bpf.h pulls in."""
    return f"/usr/include/{platform.machine()}-linux-gnu"


@functools.cache
def missing_reason() -> str | None:
    """Why BPF programs cannot be compiled here, or None if they can."""
    if shutil.which(CLANG) is None:
        return f"{CLANG} is not installed"
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        return "libbpf headers (/usr/include/bpf/bpf_helpers.h, Debian package libbpf-dev) are not installed"
    if not Path("/usr/include/linux/bpf.h").exists():
        return "kernel uapi headers (/usr/include/linux/bpf.h) are not installed"
    return None


def require_clang() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)


def compile_bpf(src_path: str | Path, out_dir: str | Path, *defines: str, target: str = "bpf",
                debug: bool = True) -> Path:
    """`clang-19 -O2 -g -target bpf -c src -o out_dir/<stem>.o`; extra `-D` defines select variants,
    `debug=False` drops -g (no .BTF/.BTF.ext, like objects built before BTF existed)."""
    require_clang()
    src = Path(src_path)
    if not src.is_absolute() and not src.exists():
        src = PROGS / src
    suffix = "".join(f"-{d.lower()}" for d in defines) + ("" if target == "bpf" else f"-{target}")
    suffix += "" if debug else "-nodebug"
    out = Path(out_dir) / f"{src.stem}{suffix}.o"
    cmd = [CLANG, "-O2", *(["-g"] if debug else []), "-target", target, f"-I{include_dir()}",
           *(f"-D{d}" for d in defines), "-c", str(src), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return out
