"""Built-in helpers and kfuncs for a Runtime: thin cffi wrappers over the one C implementation of each.

    attach(runtime, options={"seed": 1, "ktime": 0})   # creates the native env, fills runtime.helpers/kfuncs

Each wrapper only calls the C function with the runtime's native environment and turns the environment's
fault flag into an exception: a bad pointer becomes a MemoryFault, an argument the kernel's verifier would
have refused becomes a HelperError, a successful bpf_tail_call raises TailCall, and an error inside a BPF
callback (bpf_loop, bpf_for_each_map_elem) is re-raised as it was. A JIT calls the same C functions with
the same `env` (see `native_symbols`), so both engines share every helper's semantics.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping, NamedTuple

from bpfvm import isa
from bpfvm.errors import HelperError, LoadError, MemoryFault
from bpfvm.extensions import USER_HELPERS, USER_KFUNCS
from bpfvm.helper_ids import helper_name
from bpfvm.interp import MAP_PTR_BASE, MAP_PTR_STRIDE, TailCall
from bpfvm.memory import ffi as memory_ffi

from .native_build import load_native

FAULT_NONE, FAULT_MEMORY, FAULT_ARG, FAULT_CALLBACK, FAULT_TAIL_CALL = 0, 1, 2, 3, 4
NATIVE_CALLBACK, NATIVE_OUTPUT, NATIVE_TAIL_CALL = 1, 2, 4
SCRATCH_SIZE = 8 * 4096  # one 4 KiB key slot per nesting level of bpf_for_each_map_elem


@functools.cache
def _pid_namespace() -> tuple[int, int]:
    """(st_dev, st_ino) of this process's pid namespace, which bpf_get_ns_current_pid_tgid compares its
    arguments with ((0, 0) where /proc is not mounted)."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return 0, 0
    return st.st_dev, st.st_ino


@dataclass
class HelperOptions:
    """What the "current task" and the clocks look like to helpers. Unknown option keys are ignored.

    seed: prandom state (bpf_get_prandom_u32), reproducible for a given seed.
    ktime: None for the host's clocks, or the first value of a deterministic clock that every ktime helper
        reads and that advances by ktime_step per call.
    pid_tgid / uid_gid: None for this process's ids, as a test run from this process would see.
    perf_strict: like the kernel, bpf_perf_event_output returns -ENOENT for a slot nobody opened;
        otherwise (default) every record is captured.
    """

    seed: int = 0
    ktime: int | None = None
    ktime_step: int = 1000
    cpu: int = 0
    ncpus: int = 1
    numa_node: int = 0
    pid_tgid: int | None = None
    uid_gid: int | None = None
    comm: str | bytes = "bpfvm"
    perf_strict: bool = False
    ifindexes: tuple[int, ...] = (1,)  # devices a test run's ctx_in may name (loopback only, by default)

    @classmethod
    def from_any(cls, options: "HelperOptions | Mapping[str, Any] | None") -> "HelperOptions":
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(options).items() if k in known})


class NativeEnv:
    """The native environment of one Runtime and the Python state its wrappers share."""

    def __init__(self, runtime: Any, options: HelperOptions):
        self.ffi, self.lib = load_native()
        ffi, lib = self.ffi, self.lib
        raw = lib.bpfvm_env_new()
        if raw == ffi.NULL:
            raise MemoryError("cannot allocate the native helper environment")
        self.env = ffi.gc(raw, lib.bpfvm_env_free)
        self.runtime = runtime
        self.options = options
        self.frames: list[tuple[int, int]] = []
        self.pending: BaseException | None = None
        self.perf_records: list[tuple[int, int, bytes]] = []  # (map index, slot index, data)
        env = self.env
        table = int(memory_ffi.cast("uintptr_t", runtime.memory.native_table))
        env.regions = ffi.cast("struct bpfvm_region_table *", table)
        env.map_ptr_base = MAP_PTR_BASE
        env.map_ptr_stride = MAP_PTR_STRIDE
        self.scratch = runtime.memory.add("helper scratch", SCRATCH_SIZE, writable=False)
        env.scratch = ffi.cast("uint8_t *", self.scratch.start)
        env.scratch_size = SCRATCH_SIZE
        self._configure(options)
        self.nmaps_synced = 0
        self.sync_maps()
        self._callback = ffi.callback(
            "uint64_t(struct bpfvm_env *, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t)",
            self._call_bpf,
        )
        env.call_bpf_function = self._callback

    # -- configuration ------------------------------------------------------------------------------------
    def _configure(self, o: HelperOptions) -> None:
        env = self.env
        self.lib.bpfvm_env_seed(env, o.seed & 0xFFFFFFFFFFFFFFFF)
        env.ktime_fixed = int(o.ktime is not None)
        env.ktime_ns = (o.ktime or 0) & 0xFFFFFFFFFFFFFFFF
        env.ktime_step = o.ktime_step & 0xFFFFFFFFFFFFFFFF
        if not 0 <= o.cpu < max(o.ncpus, 1):
            raise HelperError(f"cpu must be 0..{o.ncpus - 1}, not {o.cpu}")
        env.cpu, env.ncpus, env.numa_node = o.cpu, o.ncpus, o.numa_node
        pid_tgid = o.pid_tgid if o.pid_tgid is not None else (os.getpid() << 32) | threading.get_native_id()
        uid_gid = o.uid_gid if o.uid_gid is not None else (os.getgid() << 32) | os.getuid()
        env.pid_tgid = pid_tgid & 0xFFFFFFFFFFFFFFFF
        env.uid_gid = uid_gid & 0xFFFFFFFFFFFFFFFF
        env.pidns_dev, env.pidns_ino = _pid_namespace()
        comm = o.comm.encode() if isinstance(o.comm, str) else bytes(o.comm)
        env.comm = comm[:15].ljust(16, b"\0")
        env.perf_strict = int(o.perf_strict)

    def sync_maps(self) -> None:
        """Give the C side every map the runtime gained since the last call (slot i is runtime.maps[i]).

        Inner maps that map-in-map lookups registered sit after the program's maps; when the runtime gains
        a map they move up, keeping their handles (helpers find inner maps by handle, not by slot)."""
        maps = self.runtime.maps
        if self.nmaps_synced == len(maps):
            return
        env, ffi, lib = self.env, self.ffi, self.lib
        extra = [tuple(getattr(env.maps[i], f) for f in ("map", "type", "key_size", "value_size", "max_entries",
                                                          "inner_type", "inner_key_size", "inner_value_size",
                                                          "inner_max_entries"))
                 for i in range(self.nmaps_synced, env.nmaps)]
        env.nmaps = self.nmaps_synced
        while self.nmaps_synced < len(maps):
            m = maps[self.nmaps_synced]
            handle = ffi.cast("struct bpfvm_map *", int(getattr(m, "handle_addr", 0)))
            index = lib.bpfvm_env_add_map(env, handle, m.type, m.key_size, m.value_size, m.max_entries)
            if index < 0:
                raise MemoryError("cannot grow the native map table")
            inner = getattr(getattr(m, "spec", None), "inner", None)
            if inner is not None:
                lib.bpfvm_env_set_inner_template(env, index, inner.type, inner.key_size, inner.value_size,
                                                 inner.max_entries)
            if hasattr(m, "ncpus") and 0 <= self.options.cpu < m.ncpus:
                m.cpu = self.options.cpu
            self.nmaps_synced += 1
        for handle, mtype, ks, vs, max_entries, *template in extra:
            index = lib.bpfvm_env_add_map(env, handle, mtype, ks, vs, max_entries)
            lib.bpfvm_env_set_inner_template(env, index, *template)

    # -- faults and output ------------------------------------------------------------------------------
    def raise_fault(self) -> None:
        env = self.env
        kind = env.fault
        message = self.ffi.string(env.fault_msg).decode(errors="replace")
        env.fault = FAULT_NONE
        env.fault_msg = b""
        if kind == FAULT_CALLBACK and self.pending is not None:
            exc, self.pending = self.pending, None
            raise exc
        if kind == FAULT_MEMORY:
            raise MemoryFault(message)
        raise HelperError(message or "helper fault")

    def map_object(self, pointer: int) -> Any:
        """The Python map a program's map pointer (or a raw inner map handle) names, or None."""
        index, rem = divmod(pointer - MAP_PTR_BASE, MAP_PTR_STRIDE)
        if pointer >= MAP_PTR_BASE and not rem and 0 <= index < len(self.runtime.maps):
            return self.runtime.maps[index]
        from .maps import map_from_handle

        return map_from_handle(pointer)

    def slot_object(self, index: int) -> Any:
        if index < len(self.runtime.maps):
            return self.runtime.maps[index]
        from .maps import map_from_handle

        return map_from_handle(int(self.ffi.cast("uintptr_t", self.env.maps[index].map)))

    def sync_output(self) -> None:
        """Move printk lines into runtime.output and perf records into their maps (and perf_records)."""
        env, ffi = self.env, self.ffi
        if env.printk_len:
            text = ffi.buffer(env.printk_buf, env.printk_len)[:]
            for line in text.split(b"\0")[:-1]:
                self.runtime.output.append(line.decode(errors="replace"))
        if env.perf_len:
            blob = ffi.buffer(env.perf_buf, env.perf_len)[:]
            pos = 0
            while pos + 16 <= len(blob):
                map_index, slot, size = (int.from_bytes(blob[pos + k : pos + k + 4], "little") for k in (0, 4, 8))
                data = blob[pos + 16 : pos + 16 + size]
                pos += (16 + size + 7) & ~7
                self.perf_records.append((map_index, slot, data))
                target = self.slot_object(map_index)
                if hasattr(target, "emit"):
                    target.emit(slot, data)
        self.lib.bpfvm_env_clear_output(env)

    # -- the engine callback ------------------------------------------------------------------------------
    def _call_bpf(self, _env: Any, fn: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
        runtime = self.runtime
        try:
            if self.frames:
                runtime.frame[0], runtime.frame[1] = self.frames[-1]
            return runtime.call_function(fn, a1, a2, a3, a4, a5) & 0xFFFFFFFFFFFFFFFF
        except BaseException as exc:  # noqa: BLE001 - carried across C and re-raised by the helper's wrapper
            if self.pending is None:
                self.pending = exc
            self.env.fault = FAULT_CALLBACK
            return 0


# -- wrappers -----------------------------------------------------------------------------------------------
HelperFn = Callable[..., int]


def _plain(fn: Any, state: NativeEnv) -> HelperFn:
    env = state.env

    def helper(runtime: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        r0 = fn(env, r1, r2, r3, r4, r5)
        if env.fault:
            state.raise_fault()
        return r0

    return helper


def _output(fn: Any, state: NativeEnv) -> HelperFn:
    env = state.env

    def helper(runtime: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        r0 = fn(env, r1, r2, r3, r4, r5)
        state.sync_output()
        if env.fault:
            state.raise_fault()
        return r0

    return helper


def _callback(fn: Any, state: NativeEnv) -> HelperFn:
    env = state.env

    def helper(runtime: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        state.frames.append((runtime.frame[0], runtime.frame[1]))
        try:
            r0 = fn(env, r1, r2, r3, r4, r5)
        finally:
            state.frames.pop()
        if env.fault:
            state.raise_fault()
        return r0

    return helper


def _tail_call(fn: Any, state: NativeEnv) -> HelperFn:
    env = state.env

    def helper(runtime: Any, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
        env.tail_call_cnt = getattr(runtime, "tail_calls", 0)
        r0 = fn(env, r1, r2, r3, r4, r5)
        if env.fault == FAULT_TAIL_CALL:
            env.fault = FAULT_NONE
            # the count before this jump, attempts on empty slots included (the kernel counts those too)
            runtime.tail_calls = env.tail_call_cnt - 1
            prog_array = state.map_object(r2)
            target = prog_array.get_object(r3 & 0xFFFFFFFF) if prog_array is not None else None
            if target is None:
                raise HelperError(f"bpf_tail_call: slot {r3 & 0xFFFFFFFF} holds no program object")
            raise TailCall(target)
        runtime.tail_calls = env.tail_call_cnt
        if env.fault:
            state.raise_fault()
        return r0

    return helper


def _wrap(flags: int, name: str, fn: Any, state: NativeEnv) -> HelperFn:
    if flags & NATIVE_TAIL_CALL:
        wrapper = _tail_call(fn, state)
    elif flags & NATIVE_CALLBACK:
        wrapper = _callback(fn, state)
    elif flags & NATIVE_OUTPUT:
        wrapper = _output(fn, state)
    else:
        wrapper = _plain(fn, state)
    wrapper.__name__ = name
    wrapper._bpfvm_native = True  # type: ignore[attr-defined]
    return wrapper


class _NativeEntry(NamedTuple):
    key: int | str  # helper id, or kfunc name
    name: str
    symbol: str
    flags: int
    fn: Any  # the cffi function


@functools.cache
def _native_entries() -> tuple[tuple[_NativeEntry, ...], tuple[_NativeEntry, ...]]:
    """The built-in helpers and kfuncs, read from the library's tables once per process (every Runtime
    wraps them anew, and a differential campaign makes a Runtime per run)."""
    ffi, lib = load_native()
    helpers = []
    for i in range(lib.bpfvm_helper_count):
        e = lib.bpfvm_helper_table[i]
        name = ffi.string(e.name).decode()
        symbol = "bpfvm_helper_" + name.removeprefix("bpf_")
        helpers.append(_NativeEntry(e.id, name, symbol, e.flags, getattr(lib, symbol)))
    kfuncs = []
    for i in range(lib.bpfvm_kfunc_count):
        e = lib.bpfvm_kfunc_table[i]
        name = ffi.string(e.name).decode()
        symbol = "bpfvm_kfunc_" + name
        kfuncs.append(_NativeEntry(name, name, symbol, e.flags, getattr(lib, symbol)))
    return tuple(helpers), tuple(kfuncs)


def _native_tables() -> tuple[dict[int, tuple[str, str]], dict[str, str]]:
    """Built-in helpers as {id: (name, C symbol)} and kfuncs as {name: C symbol}."""
    helpers, kfuncs = _native_entries()
    return {e.key: (e.name, e.symbol) for e in helpers}, {e.name: e.symbol for e in kfuncs}


def attach(runtime: Any, *, options: "HelperOptions | Mapping[str, Any] | None" = None) -> None:
    """Create the native environment of `runtime` and install the built-in helpers and kfuncs.

    Helpers the runtime already had that are not built-in wrappers (given explicitly to Runtime) win over
    user helpers registered with `bpfvm.helper`, which win over the built-ins.
    """
    opts = HelperOptions.from_any(options)
    state = NativeEnv(runtime, opts)
    old = getattr(runtime, "native_env", None)
    if old is not None:
        runtime.memory.remove(old.scratch)
    runtime.native_env = state
    native_helpers, native_kfuncs = _native_entries()
    helpers: dict[int, HelperFn] = {e.key: _wrap(e.flags, e.name, e.fn, state) for e in native_helpers}
    kfuncs: dict[str, HelperFn] = {e.key: _wrap(e.flags, e.name, e.fn, state) for e in native_kfuncs}
    helpers.update(USER_HELPERS)
    kfuncs.update(USER_KFUNCS)
    helpers.update({k: v for k, v in runtime.helpers.items() if not getattr(v, "_bpfvm_native", False)})
    kfuncs.update({k: v for k, v in runtime.kfuncs.items() if not getattr(v, "_bpfvm_native", False)})
    runtime.helpers = helpers
    runtime.kfuncs = kfuncs


def native_env(runtime: Any) -> NativeEnv:
    """The runtime's native environment, attaching the built-ins with default options if needed."""
    state = getattr(runtime, "native_env", None)
    if state is None:
        attach(runtime)
        state = runtime.native_env
    state.sync_maps()
    return state


def helper_names() -> dict[int, str]:
    """Built-in and user helpers by uapi id: {id: "bpf_..."}."""
    names = {hid: name for hid, (name, _sym) in _native_tables()[0].items()}
    for hid, fn in USER_HELPERS.items():
        names.setdefault(hid, helper_name(hid) or getattr(fn, "__name__", f"helper_{hid}"))
    return dict(sorted(names.items()))


def kfunc_names() -> list[str]:
    """Built-in and user kfuncs by BTF name."""
    return sorted(set(_native_tables()[1]) | set(USER_KFUNCS))


def native_symbols() -> dict[str, int]:
    """C symbol -> address of every built-in helper and kfunc, for JIT code that calls them natively.

    Each takes (struct bpfvm_env *env, r1..r5) and returns r0; env is `runtime.native_env.env`.
    """
    ffi, lib = load_native()
    helpers, kfuncs = _native_tables()
    symbols = [sym for _name, sym in helpers.values()] + list(kfuncs.values())
    return {sym: int(ffi.cast("uintptr_t", ffi.addressof(lib, sym))) for sym in symbols}


def check_program_helpers(program: Any) -> None:
    """Refuse a program that calls a helper id or a kfunc that neither the built-ins nor user code provide."""
    helpers, kfuncs = _native_tables()
    insns = program.insns
    i = 0
    while i < len(insns):
        insn = insns[i]
        if insn.opcode == isa.OP_CALL and insn.src == isa.PSEUDO_HELPER:
            hid = insn.imm
            if hid not in helpers and hid not in USER_HELPERS:
                name = helper_name(hid)
                what = f"helper {name}#{hid}" if name else f"unknown helper #{hid}"
                raise LoadError(f"insn {i}: program calls {what}, which bpfvm does not provide")
        elif insn.opcode == isa.OP_CALL and insn.src == isa.PSEUDO_KFUNC_CALL:
            kfunc_list = getattr(program, "kfuncs", [])
            name = kfunc_list[insn.imm] if 0 <= insn.imm < len(kfunc_list) else None
            if name is None:
                raise LoadError(f"insn {i}: kfunc call #{insn.imm} names no kfunc of this program")
            if name not in kfuncs and name not in USER_KFUNCS:
                raise LoadError(f"insn {i}: program calls kfunc {name}, which bpfvm does not provide")
        i += isa.insn_slots(insn)


__all__ = [
    "HelperOptions", "NativeEnv", "attach", "check_program_helpers", "helper_names", "kfunc_names",
    "native_env", "native_symbols",
]
