"""The "jit" engine: native code from LLVM for a `Program`, with the interpreter's call signature and results.

`JitEngine.prepare` analyses and lowers the program (`jit.lower`), optimises it with LLVM's new pass manager
and emits an object file, which is cached in memory and on disk (content hash + options + JIT sources + LLVM
and CPU) and loaded into its own MCJIT engine. `bind(runtime)` gives a `JitRunnable`: a per-run state block,
the region table of the runtime's `Memory`, map constants, helper slots (native helpers, or trampolines into
the Python ones) and the Python services for slow memory accesses, callx to helpers and LD_ABS.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import llvmlite
import llvmlite.binding as llvm

from bpfvm import memory as bpf_memory
from bpfvm.engines import register_engine
from bpfvm.errors import BpfvmError, CallDepthExceeded, HelperError, InstructionLimitExceeded, LoadError, VMFault
from bpfvm.interp import (
    CALLBACK_HELPER_IDS, FRAME_SIZE, FUNC_PTR_BASE, MAX_CALL_FRAMES, MAX_LOOPS, ProgramExit, Runtime, TailCall,
)
from bpfvm.program import Program

from . import guards as g
from . import native_inline as ni
from .lower import Plan, analyse, lower

M64 = (1 << 64) - 1
DEFAULT_OPT_LEVEL = 2
MEMORY_CACHE_SIZE = 256
_MAGIC = b"BPFVMJ01"


_lock = threading.Lock()
_llvm_ready = False


def _init_llvm() -> None:
    global _llvm_ready
    if not _llvm_ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _llvm_ready = True


def _target_machine(opt_level: int) -> Any:
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
        opt=opt_level, reloc="pic", codemodel="jitdefault",
    )


@functools.cache
def _code_version() -> str:
    """Identity of the code generator: our sources, llvmlite/LLVM versions and the host CPU."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("lower.py", "guards.py", "engine.py", "native_inline.py"):
        h.update((here / name).read_bytes())
    h.update(ni.native_version().encode())  # expansions bake the native structures' layout in
    _init_llvm()
    h.update(repr((llvmlite.__version__, llvm.llvm_version_info, llvm.get_process_triple(),
                   llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())).encode())
    return h.hexdigest()


def program_key(program: Program, plan: Plan, opt_level: int) -> str:
    """Content hash of everything the generated code depends on."""
    h = hashlib.sha256(_code_version().encode())
    h.update(repr((opt_level, program.insns, plan.starts, plan.slots, plan.map_refs, sorted(plan.proved))).encode())
    return h.hexdigest()[:40]


# -- compiled code and its caches ---------------------------------------------------------------------------
@dataclass
class CompiledCode:
    """Native code of one program, kept alive by its MCJIT engine."""

    engine: Any
    callx: int
    run_repeat: int
    seconds: float  # lowering + optimisation + code generation (0 for a cache hit)
    source: str  # "compiled", "memory" or "disk"


_memory_cache: OrderedDict[str, CompiledCode] = OrderedDict()


def disk_cache_dir() -> Path | None:
    """`$BPFVM_CACHE/jit` or `~/.cache/bpfvm/jit`; None when `BPFVM_JIT_DISK_CACHE=0`."""
    if os.environ.get("BPFVM_JIT_DISK_CACHE", "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    root = os.environ.get("BPFVM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bpfvm")
    return Path(root) / "jit"


def _disk_read(key: str) -> bytes | None:
    directory = disk_cache_dir()
    if directory is None:
        return None
    try:
        blob = (directory / f"{key}.o").read_bytes()
    except OSError:
        return None
    payload = blob[len(_MAGIC) + 32 :]
    if blob[: len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).digest() != blob[len(_MAGIC) : len(_MAGIC) + 32]:
        return None  # truncated or foreign: recompile and overwrite
    return payload


def _disk_write(key: str, obj: bytes) -> None:
    directory = disk_cache_dir()
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(_MAGIC + hashlib.sha256(obj).digest() + obj)
        os.replace(tmp, directory / f"{key}.o")
    except OSError:
        pass  # the cache is best effort


_support_engine: Any = None


def _ensure_support() -> None:
    """Compile (or load from the disk cache) the shared support module once per process and publish its
    symbols, so that every program object links against one copy."""
    global _support_engine
    if _support_engine is not None:
        return
    _init_llvm()
    key = "support-" + _code_version()[:32]
    obj = _disk_read(key)
    if obj is None:
        tm = _target_machine(2)
        module = llvm.parse_assembly(
            f'target datalayout = "{tm.target_data}"\ntarget triple = "{llvm.get_process_triple()}"\n' + g.support_ir()
        )
        module.verify()
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
        pb.getModulePassManager().run(module, pb)
        obj = tm.emit_object(module)
        _disk_write(key, obj)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine(2))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    # run_repeat times itself with libc's clock_gettime: resolve it explicitly rather than trust the loader
    libc_clock = ctypes.cast(ctypes.CDLL(None).clock_gettime, ctypes.c_void_p).value
    if libc_clock:
        llvm.add_symbol("clock_gettime", libc_clock)
    for name in g.SUPPORT_SYMBOLS:
        address = engine.get_function_address(name)
        if not address:
            raise BpfvmError(f"internal JIT error: support function {name} missing")
        llvm.add_symbol(name, address)
    _support_engine = engine


def _load_object(obj: bytes, opt_level: int) -> tuple[Any, int, int]:
    _ensure_support()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine(opt_level))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    addresses = [engine.get_function_address(name) for name in ("bpfvm_callx", "bpfvm_run_repeat")]
    if not all(addresses):
        raise LoadError("JIT object lacks its entry points")
    return engine, *addresses


def emit_ir(program: Program, plan: Plan) -> str:
    _init_llvm()
    tm = _target_machine(DEFAULT_OPT_LEVEL)
    return lower(program, plan, triple=llvm.get_process_triple(), datalayout=str(tm.target_data))


# LLVM's register coalescing, allocation and IR passes such as InstCombine, LVI and GVN grow faster than
# linearly with the size of one function: a 10k-slot subprogram took ~0.9 s per 1k slots at O2 against ~0.4
# for 1k slots. Past this many slots in one subprogram the JIT compiles in a cheaper tier: O1 IR passes and
# fast instruction selection and register allocation (~0.35 s per 1k slots), trading code quality (about 7x
# slower code) for start-up time, as tiered JITs do for huge functions. The bound stays above the RFC
# benchmark's plain-inlined programs (6.7k-7.2k slots), whose run time is what they are measured for.
LARGE_FUNCTION_SLOTS = 8000


def effective_levels(plan: Plan, opt_level: int) -> tuple[int, int]:
    """(IR optimisation level, code generation level) for `plan` at the requested `opt_level`."""
    largest = max((f.end - f.start for f in plan.funcs), default=0)
    if largest > LARGE_FUNCTION_SLOTS and opt_level > 1:
        return 1, 0
    return opt_level, opt_level


def compile_object(program: Program, plan: Plan, opt_level: int) -> bytes:
    """Lower, verify, optimise and emit an object file."""
    _init_llvm()
    opt_level, codegen_level = effective_levels(plan, opt_level)
    tm = _target_machine(codegen_level)
    text = lower(program, plan, triple=llvm.get_process_triple(), datalayout=str(tm.target_data))
    try:
        module = llvm.parse_assembly(text)
        module.verify()
    except RuntimeError as exc:  # a bug in the lowering, never the user's fault: say so in one line
        raise BpfvmError(f"internal JIT error: invalid IR for {program.name}: {str(exc).splitlines()[0]}") from None
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt_level)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(module, pb)
    return tm.emit_object(module)


def compile_program(program: Program, plan: Plan, opt_level: int = DEFAULT_OPT_LEVEL) -> CompiledCode:
    """Native code for `program`, from the memory cache, the disk cache or LLVM."""
    key = program_key(program, plan, opt_level)
    with _lock:
        hit = _memory_cache.get(key)
        if hit is not None:
            _memory_cache.move_to_end(key)
            return CompiledCode(hit.engine, hit.callx, hit.run_repeat, 0.0, "memory")
        t0 = time.perf_counter()
        obj = _disk_read(key)
        source = "disk"
        if obj is None:
            obj = compile_object(program, plan, opt_level)
            _disk_write(key, obj)
            source = "compiled"
        engine, callx, run_repeat = _load_object(obj, opt_level)
        code = CompiledCode(engine, callx, run_repeat, time.perf_counter() - t0, source)
        _memory_cache[key] = code
        while len(_memory_cache) > MEMORY_CACHE_SIZE:
            _memory_cache.popitem(last=False)  # runnables keep their own reference
        return code


# -- native helpers ------------------------------------------------------------------------------------------
@dataclass
class NativeHelper:
    """A helper or kfunc JIT code calls directly: `uint64_t fn(void *env, u64 r1..r5)`.

    After the call a non-zero 32-bit word at `fault_address` (if not 0) means failure; `to_exception(pc)`
    then says which exception the interpreter would have raised.
    """

    address: int
    env: int = 0
    fault_address: int = 0
    to_exception: Callable[[int], BaseException] | None = None


def native_helper(runtime: Runtime, kind: str, key: int | str, fn: Any) -> NativeHelper | None:
    """The native form of a helper or kfunc callable, if it has one.

    Either the callable says so itself (`fn.native`, a NativeHelper or anything with the same attributes), or
    it is one of `helpers.registry`'s plain wrappers (no callbacks, output or tail calls), whose C function
    JIT code calls with the runtime's native environment and whose fault flag it checks afterwards.
    """
    native = getattr(fn, "native", None)
    if native is not None and getattr(native, "address", 0):
        return native
    if getattr(fn, "_bpfvm_native", False):
        return _registry_native(runtime, kind, getattr(fn, "__name__", ""))
    return None


@functools.cache
def _registry_plain_symbols() -> dict[tuple[str, str], int]:
    """(kind, name) -> address of every built-in helper and kfunc without callbacks, output or tail calls
    (those keep their Python wrappers, which do the bookkeeping around the C call)."""
    from helpers.native_build import load_native

    ffi, lib = load_native()
    plain: dict[tuple[str, str], int] = {}
    for kind, table, count in (("helper", lib.bpfvm_helper_table, lib.bpfvm_helper_count),
                               ("kfunc", lib.bpfvm_kfunc_table, lib.bpfvm_kfunc_count)):
        for i in range(count):
            entry = table[i]
            if entry.flags == 0:
                plain[kind, ffi.string(entry.name).decode()] = int(ffi.cast("uintptr_t", entry.fn))
    return plain


def _inline_tag(kind: str, key: int | str, native: NativeHelper) -> int:
    """The slot's `native_inline` tag: set only when the slot calls the native library's own function with
    the runtime's environment, the one case the JIT's expansion reproduces."""
    tag = ni.tag_for(kind, key)
    if tag == ni.TAG_NONE or not native.env:
        return ni.TAG_NONE
    try:
        own = _registry_plain_symbols().get((kind, str(key)))
    except (ImportError, AttributeError, BpfvmError):
        return ni.TAG_NONE
    return tag if own and native.address == own else ni.TAG_NONE


def _registry_native(runtime: Runtime, kind: str, name: str) -> NativeHelper | None:
    state = getattr(runtime, "native_env", None)
    if state is None:
        return None
    try:
        address = _registry_plain_symbols().get((kind, name))
    except (ImportError, AttributeError, BpfvmError):
        return None
    if not address:
        return None
    env = int(state.ffi.cast("uintptr_t", state.env))

    def to_exception(pc: int) -> BaseException:
        try:
            state.raise_fault()  # exactly what the registry's wrapper raises for the interpreter
        except BaseException as exc:  # noqa: BLE001
            return exc
        return HelperError(f"{name} failed", pc)

    return NativeHelper(address, env, env + state.ffi.offsetof("struct bpfvm_env", "fault"), to_exception)


# Entering native code keeps the GIL (PYFUNCTYPE), so the trampolines back into Python (ctypes callbacks)
# need not re-acquire it: about 120 ns per helper call, against some 280 ns with cffi callbacks.
_U64 = ctypes.c_uint64
_CALLX_FN = ctypes.PYFUNCTYPE(_U64, ctypes.c_void_p, *[_U64] * 8, ctypes.c_int64)
_REPEAT_FN = ctypes.PYFUNCTYPE(_U64, ctypes.c_void_p, _U64, _U64, ctypes.c_void_p)
_HELPER_CB = ctypes.CFUNCTYPE(_U64, ctypes.c_void_p, _U64, _U64, _U64, _U64, _U64)
_SERVICE_CB = {field: ctypes.CFUNCTYPE(_U64, *[_U64] * len(args)) for field, args in g.SERVICES.items()}


def _signed(pc: int) -> int:
    return pc - (1 << 64) if pc >> 63 else pc


class JitRunnable:
    """A compiled program bound to a runtime: `(r1..r5) -> r0`, `steps`, `run_repeat`, `call_pointer`."""

    def __init__(self, program: Program, plan: Plan, code: CompiledCode, runtime: Runtime):
        self.program = program
        self.plan = plan
        self.code = code
        self.runtime = runtime
        self.repeat_done = 0
        self._pending: BaseException | None = None
        self._state = st = (_U64 * g.STATE_FIELDS)()
        self._consts = (_U64 * max(1, len(plan.map_refs)))()
        for k, (index, offset) in enumerate(plan.map_refs):
            if not 0 <= index < len(program.maps):
                raise LoadError(f"lddw references map #{index}, but the program has {len(program.maps)} maps")
            spec = program.maps[index]
            self._consts[k] = runtime.map_pointer(spec) if offset < 0 else runtime.map_value_address(spec, offset)
        self._sites = (ctypes.c_uint32 * max(1, len(program.insns)))()
        width = ni.SLOT_FIELDS
        self._helpers = (_U64 * (width * max(1, len(plan.slots))))()
        self._natives: dict[int, NativeHelper] = {}
        self._keep: list[Any] = []  # ctypes callbacks must outlive the native code that calls them
        for k, (kind, key) in enumerate(plan.slots):
            fn = (runtime.helpers if kind == "helper" else runtime.kfuncs).get(key)
            native = native_helper(runtime, kind, key, fn) if fn is not None else None
            if native is not None:
                self._natives[k] = native
                self._helpers[width * k : width * k + width] = [
                    native.address, native.env, native.fault_address, _inline_tag(kind, key, native)]
                continue
            publish = kind == "helper" and key in CALLBACK_HELPER_IDS
            callback = _HELPER_CB(self._trampoline(fn if fn is not None else _missing(kind, key), publish))
            self._keep.append(callback)
            self._helpers[width * k] = ctypes.cast(callback, ctypes.c_void_p).value
        for field, service in self._services().items():
            callback = _SERVICE_CB[field](service)
            self._keep.append(callback)
            st[field] = ctypes.cast(callback, ctypes.c_void_p).value
        st[g.F_LIMIT] = runtime.insn_limit
        st[g.F_TABLE] = int(bpf_memory.ffi.cast("uintptr_t", runtime.memory.native_table))
        st[g.F_STACK_START], st[g.F_STACK_END] = runtime.stack.start, runtime.stack.end
        st[g.F_FRAME] = runtime.frame_size
        st[g.F_LOOPS] = MAX_LOOPS
        st[g.F_CONSTS] = ctypes.addressof(self._consts)
        st[g.F_SITES] = ctypes.addressof(self._sites)
        st[g.F_HELPERS] = ctypes.addressof(self._helpers)
        self._st = ctypes.addressof(st)
        self._callx = _CALLX_FN(code.callx)
        self._repeat = _REPEAT_FN(code.run_repeat)
        self._starts = frozenset(plan.starts)

    @property
    def steps(self) -> int:
        """Instructions executed by the last run (the interpreter's count)."""
        return self._state[g.F_STEPS]

    @property
    def native_calls(self) -> list[tuple[str, int | str]]:
        """The helpers and kfuncs (kind, id or name) that JIT code calls directly, without Python."""
        return [self.plan.slots[k] for k in sorted(self._natives)]

    def _start(self) -> None:
        st = self._state
        st[g.F_STEPS] = 0
        st[g.F_LOOPS] = MAX_LOOPS
        st[g.F_ERROR] = 0
        self._pending = None
        self.runtime._bound = self  # Runtime.call_function reaches callbacks through it

    def __call__(self, r1: int = 0, r2: int = 0, r3: int = 0, r4: int = 0, r5: int = 0) -> int:
        self._start()
        r0 = self._callx(self._st, FUNC_PTR_BASE, r1 & M64, r2 & M64, r3 & M64, r4 & M64, r5 & M64,
                         self.runtime.stack.end, 0, -1)
        if self._state[g.F_ERROR]:
            exc = self._take_error()
            if isinstance(exc, ProgramExit) and not isinstance(exc, TailCall):
                return exc.value & M64
            raise exc
        return r0

    def run_repeat(self, r1: int, repeat: int) -> tuple[int, int]:
        """Run `repeat` times with r1 in native code; returns (last r0, nanoseconds around the native loop).

        A run that a helper ends with ProgramExit counts with its value. Any other error, and a tail call, is
        raised as `__call__` raises it; `repeat_done` then says how many runs had completed before.
        """
        if repeat < 1:
            raise BpfvmError(f"repeat must be at least 1, not {repeat}")
        out = (_U64 * 2)()
        remaining, elapsed, r0 = repeat, 0, 0
        self.repeat_done = 0
        while remaining:
            self._start()
            r0 = self._repeat(self._st, r1 & M64, remaining, ctypes.addressof(out))
            elapsed += out[0]
            self.repeat_done += out[1]
            if not self._state[g.F_ERROR]:
                break
            exc = self._take_error()
            if not isinstance(exc, ProgramExit) or isinstance(exc, TailCall):
                raise exc
            r0 = exc.value & M64
            self.repeat_done += 1
            remaining -= out[1] + 1
        return r0, elapsed

    def call_pointer(self, pointer: int, args: tuple[int, ...], r10: int, depth: int, pc: int) -> int:
        """Call a subprogram by function pointer for a helper (a callback), as `BoundProgram.call_pointer`."""
        start, rem = divmod(pointer - FUNC_PTR_BASE, 8)
        if rem or start not in self._starts:
            raise VMFault(f"call to {pointer:#x}, which is not a function of this program", pc)
        if depth >= MAX_CALL_FRAMES - 1:
            raise CallDepthExceeded(f"the call stack of {MAX_CALL_FRAMES + 1} frames is too deep", pc)
        r10 -= self.runtime.frame_size
        stack = self.runtime.stack
        if not (stack.start + FRAME_SIZE <= r10 <= stack.end and depth >= 0):
            raise VMFault(f"callback frame {r10:#x} is outside the stack", pc)
        regs = [(a & M64) for a in (list(args) + [0] * 5)[:5]]
        r0 = self._callx(self._st, pointer, *regs, r10, depth + 1, pc)
        if self._state[g.F_ERROR]:
            raise self._take_error()
        return r0

    # -- faults ---------------------------------------------------------------------------------------------
    def _record(self, exc: BaseException) -> int:
        """Keep a Python exception for the wrapper and make native code unwind."""
        self._pending = exc
        self._state[g.F_ERROR] = g.E_PYTHON
        return 0

    def _take_error(self) -> BaseException:
        st = self._state
        code, pc, arg = st[g.F_ERROR], _signed(st[g.F_ERR_PC]), st[g.F_ERR_ARG]
        st[g.F_ERROR] = 0
        if code == g.E_PYTHON:
            exc, self._pending = self._pending, None
            if isinstance(exc, RecursionError):
                return CallDepthExceeded("the host's recursion limit was reached")
            return exc if exc is not None else VMFault("internal JIT error: a fault without its exception", pc)
        if code == g.E_LIMIT:
            return InstructionLimitExceeded(
                f"instruction limit of {self.runtime.insn_limit} exceeded (runaway program?)", pc
            )
        if code == g.E_DEPTH:
            return CallDepthExceeded(f"the call stack of {MAX_CALL_FRAMES + 1} frames is too deep", pc)
        if code == g.E_FELL:
            return VMFault("fell off the end of the subprogram", pc)
        if code == g.E_CALLX:
            return VMFault(f"callx to {arg:#x}, which is not a function of this program", pc)
        if code == g.E_BTF:
            return VMFault(f"lddw of kernel variable btf_id {self.program.insns[pc].imm} is not supported", pc)
        if code == g.E_NATIVE:
            native = self._natives.get(arg)
            if native is not None and native.to_exception is not None:
                return native.to_exception(pc)
            return HelperError(f"native helper in slot {arg} failed", pc)
        return VMFault(f"internal JIT error: unknown fault code {code}", pc)

    # -- the trampolines native code calls ----------------------------------------------------------------------
    def _trampoline(self, fn: Callable[..., int], publish_frame: bool) -> Callable[..., int]:
        """`fn(runtime, r1..r5)` as a native helper `u64 (void *env, u64 r1..r5)` that never raises."""
        runtime, st, record = self.runtime, self._state, self._record
        frame = runtime.frame
        if publish_frame:  # callback helpers (bpf_loop ...) call back into the caller's frame
            def helper(_env: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
                try:
                    frame[0], frame[1] = st[g.F_CB_R10], st[g.F_CB_DEPTH]
                    return fn(runtime, r1, r2, r3, r4, r5) & M64
                except BaseException as exc:  # noqa: BLE001 - re-raised by the wrapper after native code unwinds
                    return record(exc)
        else:
            def helper(_env: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
                try:
                    return fn(runtime, r1, r2, r3, r4, r5) & M64
                except BaseException as exc:  # noqa: BLE001
                    return record(exc)
        return helper

    def _services(self) -> dict[int, Callable[..., int]]:
        """The Python services by state field. Each is one Python frame: they sit on hot paths (hooked
        context loads), so the fault bookkeeping is written out in each rather than shared."""
        runtime, record = self.runtime, self._record
        memory = runtime.memory
        loads, signed_loads, stores = memory.load, memory.load_signed, memory.store

        def load(addr: int, size: int, signed: int, pc: int) -> int:
            try:
                return (signed_loads if signed else loads)[size](addr, pc) & M64
            except BaseException as exc:  # noqa: BLE001 - re-raised by the wrapper after native code unwinds
                return record(exc)

        def store(addr: int, size: int, value: int, pc: int) -> int:
            try:
                stores[size](addr, value, pc)
                return 0
            except BaseException as exc:  # noqa: BLE001
                return record(exc)

        def atomic(addr: int, size: int, op: int, value: int, expected: int, pc: int) -> int:
            try:
                return memory.atomic(size, g.ATOMIC_NAMES[op], addr, value, pc, expected) & M64
            except BaseException as exc:  # noqa: BLE001
                return record(exc)

        def callx(target: int, r1: int, r2: int, r3: int, r4: int, r5: int, pc: int) -> int:
            try:
                helper = runtime.helpers.get(target)
                if helper is None:
                    raise HelperError(f"callx to unknown helper #{target}", _signed(pc))
                return helper(runtime, r1, r2, r3, r4, r5) & M64
            except BaseException as exc:  # noqa: BLE001
                return record(exc)

        def ld_abs(ctx: int, offset: int, size: int, pc: int) -> int:
            try:
                fn = runtime.ld_abs_fn
                if fn is None:
                    raise VMFault("BPF_LD_ABS/BPF_LD_IND need a socket buffer, and this run has none", pc)
                return fn(ctx, offset, size, pc) & M64
            except BaseException as exc:  # noqa: BLE001
                return record(exc)

        return {g.F_SVC_LOAD: load, g.F_SVC_STORE: store, g.F_SVC_ATOMIC: atomic, g.F_SVC_CALLX: callx,
                g.F_SVC_LDABS: ld_abs}


def _missing(kind: str, key: int | str) -> Callable[..., int]:
    message = f"call to unknown helper #{key}" if kind == "helper" else f"call to unknown kfunc {key}"

    def missing(*_args: int) -> int:
        raise HelperError(message)

    return missing


# -- the engine ----------------------------------------------------------------------------------------------
class JitProgram:
    """A program compiled to native code; `bind` it to any number of runtimes."""

    def __init__(self, program: Program, plan: Plan, code: CompiledCode):
        self.program = program
        self.plan = plan
        self.code = code

    def bind(self, runtime: Runtime) -> JitRunnable:
        return JitRunnable(self.program, self.plan, self.code, runtime)


class JitEngine:
    """Compiles with LLVM at `opt_level` (2 by default: as fast as 3 on BPF code, and cheaper to compile)."""

    name = "jit"

    def __init__(self, opt_level: int = DEFAULT_OPT_LEVEL):
        if opt_level not in (0, 1, 2, 3):
            raise BpfvmError(f"JIT optimisation level must be 0..3, not {opt_level}")
        self.opt_level = opt_level

    def prepare(self, program: Program, *, verified: bool = False) -> JitProgram:
        """Compile `program` (guards stay on unless aux data marks an access `proved_safe`)."""
        plan = analyse(program)
        return JitProgram(program, plan, compile_program(program, plan, self.opt_level))


register_engine("jit", JitEngine)
