"""Build and load bpfvm's one native library: every `helpers/native/*.c`, compiled once with cffi's API mode.

Maps, helpers, kfuncs and context models are written in C once, so the interpreter (through cffi) and
JIT-compiled code (through direct calls to `ffi.addressof(lib, name)`) run the same code on the same memory.

Conventions for `helpers/native/`:
  - `NAME.c` is a source file; `NAME.cdef` holds its declarations for cffi, in plain C (no preprocessor
    lines, no cffi-only syntax such as `...`), because the generated module also includes every `.cdef`
    as a C header. A `.c` file should `#include "NAME.cdef"` so the compiler checks the declarations.
  - `.h` files may be added and included; the directory is on the include path.

The library is compiled with gcc (or `$CC`) at `-O2` on first use into
`$BPFVM_CACHE/native-<hash>` (default `~/.cache/bpfvm/native-<hash>`), where the hash covers every source,
this file, the Python version and the cffi version; later imports load it from there. The compiler runs in
a subprocess so that its output never reaches the caller's terminal, in a private temporary directory that
is renamed into place atomically, so concurrent first uses from several processes are safe.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any

try:  # the build subprocess runs this file as a script, possibly without the package on its path
    from bpfvm.errors import BpfvmError
except ImportError:  # pragma: no cover - only in the build subprocess
    BpfvmError = RuntimeError  # type: ignore[misc,assignment]

NATIVE_DIR = Path(__file__).resolve().parent / "native"
MODULE_NAME = "_bpfvm_native"
# Calls between the library's own functions (kfunc wrapper -> region check -> body) are the hot path of JIT
# code: hidden visibility and no semantic interposition let the compiler call (and inline) them directly
# instead of through the PLT. Python reaches the library only through cffi's module, compiled into the same
# object, and the module's init function is exported explicitly (PyMODINIT_FUNC), so nothing else is needed.
COMPILE_ARGS = [
    "-O2", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function",
    "-fvisibility=hidden", "-fno-semantic-interposition", "-fno-plt",
]
PREAMBLE_HEADERS = ("<stdint.h>", "<stddef.h>", "<stdbool.h>")

_lock = threading.Lock()
_loaded: tuple[Any, Any] | None = None


def _files(native_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """The .c, .cdef and .h files, sorted by name so every build sees them in the same order."""
    return (
        sorted(native_dir.glob("*.c")),
        sorted(native_dir.glob("*.cdef")),
        sorted(native_dir.glob("*.h")),
    )


def source_hash(native_dir: Path = NATIVE_DIR) -> str:
    """Identity of a build: sources, the build recipe, Python and cffi versions, machine."""
    import cffi

    h = hashlib.sha256()
    for part in (sys.version, sys.implementation.cache_tag or "", platform.machine(), cffi.__version__,
                 " ".join(COMPILE_ARGS)):
        h.update(part.encode() + b"\0")
    for path in [Path(__file__).resolve(), *[p for group in _files(native_dir) for p in group]]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cache_dir(native_dir: Path = NATIVE_DIR) -> Path:
    """Where the library for the current sources lives (built or not)."""
    root = os.environ.get("BPFVM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bpfvm")
    return Path(root) / f"native-{source_hash(native_dir)}"


def _compiler() -> str:
    """The C compiler setuptools will run, or a one-line BpfvmError when the machine has none."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "gcc"
    words = shlex.split(cc) or ["gcc"]
    if shutil.which(words[0]) is None:
        raise BpfvmError(f"no C compiler found ({words[0]}): install gcc to build bpfvm's native maps and helpers")
    return cc


def _built_module(directory: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{MODULE_NAME}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _first_error(log: str) -> str:
    """The compiler's first diagnostic (`file.c:3:5: error: ...`), else the last line of the log."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for marker in (": error:", ": fatal error:", "error:", "Error"):
        for line in lines:
            if marker in line:
                head, sep, rest = line.partition(": ")
                return f"{os.path.basename(head)}{sep}{rest}" if sep and os.sep in head else line
    return lines[-1] if lines else "no output"


def _build(native_dir: Path, target: Path) -> None:
    """Compile in a private directory, then rename it to `target` (losing a race to another process is fine)."""
    cc = _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        env = dict(os.environ, CC=cc, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--compile", str(native_dir), str(work / "tmp")],
            capture_output=True, text=True, env=env, cwd=str(work),
        )
        built = _built_module(work / "tmp")
        if proc.returncode != 0 or built is None:
            log = proc.stdout + proc.stderr
            log_path = target.parent / f"{target.name}.log"
            log_path.write_text(log)
            raise BpfvmError(f"building bpfvm's native library failed: {_first_error(log)} (full log: {log_path})")
        stage = work / "stage"
        stage.mkdir()
        shutil.copy2(built, stage / built.name)
        try:
            os.rename(stage, target)
        except OSError:
            if _built_module(target) is None:  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _import(path: Path) -> Any:
    loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load_from(native_dir: Path, target: Path) -> tuple[Any, Any]:
    """Load the library built from `native_dir` at `target`, building it first if needed."""
    path = _built_module(target)
    if path is None:
        _build(native_dir, target)
        path = _built_module(target)
        if path is None:
            raise BpfvmError(f"native library missing from {target} after building")
    try:
        module = _import(path)
    except ImportError as exc:  # e.g. a declared function that no .c file defines
        raise BpfvmError(f"bpfvm's native library does not load: {str(exc).splitlines()[0]}") from None
    return module.ffi, module.lib


def load_native() -> tuple[Any, Any]:
    """`(ffi, lib)` of the native library, built on first use and cached per process."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = load_from(NATIVE_DIR, cache_dir(NATIVE_DIR))
        return _loaded


# -- the build subprocess ---------------------------------------------------------------------------------
def _compile(native_dir: Path, tmpdir: Path) -> None:
    from cffi import FFI

    sources, cdefs, _headers = _files(native_dir)
    ffi = FFI()
    ffi.cdef("\n".join(p.read_text() for p in cdefs))
    preamble = "".join(f"#include {h}\n" for h in PREAMBLE_HEADERS)
    preamble += "".join(f'#include "{p.name}"\n' for p in cdefs)
    ffi.set_source(
        MODULE_NAME, preamble,
        sources=[str(p) for p in sources], include_dirs=[str(native_dir)], extra_compile_args=COMPILE_ARGS,
    )
    ffi.compile(tmpdir=str(tmpdir), verbose=False)


if __name__ == "__main__":  # pragma: no cover - exercised through _build
    if len(sys.argv) == 4 and sys.argv[1] == "--compile":
        _compile(Path(sys.argv[2]), Path(sys.argv[3]))
        for leftover in glob.glob(os.path.join(sys.argv[3], "*.o")):
            os.unlink(leftover)
    else:
        sys.exit("usage: native_build.py --compile NATIVE_DIR OUT_DIR")
