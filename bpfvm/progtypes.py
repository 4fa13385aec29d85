"""Program types: how a test run builds the context (and packet) a program of that type receives.

Each type is implemented once behind `ProgType` and registered by name; the network types delegate to the
sk_buff and xdp_buff models in `helpers/`. Users can register types of their own with `register_prog_type`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import BpfvmError, LoadError
from .memory import Memory, Region


@dataclass
class RunInput:
    """What BPF_PROG_TEST_RUN takes: packet, context and options of the models."""

    data_in: bytes | None = None
    ctx_in: bytes | None = None
    skb_linear: int | None = None  # keep only this many bytes of an skb linear; the rest goes to fragments
    xdp_frags: int | None = None  # XDP multi-buffer: bytes per fragment after the first buffer
    extra: dict[str, Any] = field(default_factory=dict)


class RunContext(Protocol):
    """The context of one test run: `address` is what r1 holds; `finish` returns (data_out, ctx_out)."""

    address: int

    def finish(self) -> tuple[bytes, bytes]: ...

    def release(self) -> None: ...


class ProgType:
    """Base of every program type. Subclasses set the names and build the run context."""

    name: str = "unspec"
    aliases: tuple[str, ...] = ()
    ctx_struct: str | None = None  # the uapi context struct in BTF, e.g. "__sk_buff"
    takes_packet: bool = False
    supports_repeat: bool = True

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<prog type {self.name}>"


class BufferContext:
    """A context that is plain bytes (raw tracepoint arguments, syscall programs' ctx, tracing regs)."""

    def __init__(self, memory: Memory, name: str, data: bytes, size: int, writable: bool):
        self.memory = memory
        self.region: Region = memory.add(name, max(size, len(data), 1), data=data, writable=writable)
        self.address = self.region.start
        self._size = max(size, len(data))

    def finish(self) -> tuple[bytes, bytes]:
        return b"", self.region.read(0, self._size)

    def release(self) -> None:
        self.memory.remove(self.region)


class BufferProgType(ProgType):
    """Types whose context is a byte buffer given by ctx_in."""

    ctx_size = 0
    writable = False

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        if run_input.data_in:
            raise BpfvmError(f"{self.name} programs take no packet (data_in); pass the context with ctx_in")
        data = run_input.ctx_in or b""
        if self.ctx_size and len(data) > self.ctx_size:
            raise BpfvmError(f"ctx_in is {len(data)} bytes; {self.name} contexts hold at most {self.ctx_size}")
        return BufferContext(memory, f"ctx ({self.name})", data, self.ctx_size or len(data), self.writable)


class RawTracepointType(BufferProgType):
    name = "raw_tracepoint"
    aliases = ("raw_tp", "raw_tracepoint_writable", "tracing")
    ctx_size = 12 * 8  # up to MAX_BPF_FUNC_ARGS u64 arguments
    supports_repeat = False


class SyscallType(BufferProgType):
    name = "syscall"
    ctx_size = 0xFFFF
    writable = True
    supports_repeat = False


class TracingType(BufferProgType):
    """kprobe, tracepoint and perf_event programs: the kernel has no test run for them; we run with ctx_in bytes."""

    name = "kprobe"
    aliases = ("tracepoint", "perf_event")
    ctx_size = 0


class SkbType(ProgType):
    """Programs whose context is `struct __sk_buff`; the model lives in helpers/skb.py."""

    ctx_struct = "__sk_buff"
    takes_packet = True

    def __init__(self, name: str, aliases: tuple[str, ...] = ()):
        self.name = name
        self.aliases = aliases

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        from helpers.skb import make_skb_context

        return make_skb_context(memory, runtime, self.name, run_input.data_in or b"", run_input.ctx_in,
                                run_input.skb_linear)


class XdpType(ProgType):
    name = "xdp"
    ctx_struct = "xdp_md"
    takes_packet = True

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        from helpers.xdp import make_xdp_context

        return make_xdp_context(memory, runtime, run_input.data_in or b"", run_input.ctx_in, run_input.xdp_frags)


_TYPES: dict[str, ProgType] = {}


def register_prog_type(prog_type: ProgType) -> ProgType:
    """Make a program type available by its name and aliases (replacing any of the same name)."""
    for name in (prog_type.name, *prog_type.aliases):
        _TYPES[name] = prog_type
    return prog_type


def get_prog_type(name: str) -> ProgType:
    prog_type = _TYPES.get(name)
    if prog_type is None:
        raise LoadError(f"program type {name!r} cannot be test-run (known: {', '.join(prog_type_names())})")
    return prog_type


def prog_type_names() -> list[str]:
    return sorted({t.name for t in _TYPES.values()})


for _builtin in (
    SkbType("socket_filter", ("socket",)),
    SkbType("sched_cls", ("tc", "classifier", "tcx")),
    SkbType("sched_act", ("action",)),
    SkbType("cgroup_skb"),
    SkbType("lwt_in"), SkbType("lwt_out"), SkbType("lwt_xmit"),
    XdpType(),
    RawTracepointType(),
    SyscallType(),
    TracingType(),
):
    register_prog_type(_builtin)
