"""Program types: everything that depends on a program's type, implemented once per type behind `ProgType`.

A type answers four groups of questions (the kernel spreads them over bpf_verifier_ops and bpf_prog_ops):

  context      `ctx_struct` (the uapi context's BTF name), `ctx_size`, `ctx_fields`; `check_ctx_access` says
               which offsets and sizes a program may read or write, `return_range` what it may return (the
               verifier asks both through the hook in bpfvm.verifier.ctx, so a registered type is obeyed)
  calls        `helpers` and `kfuncs`: allow-lists checked before verification (None: whatever the
               verifier's prototypes allow), by `check_calls`
  test runs    `make_context` builds the context (and packet) of BPF_PROG_TEST_RUN from a `RunInput`
  rewrites     after verification (bpfvm.rewrites.ctx_access, the kernel's convert_ctx_accesses):
               `convert_ctx_access` turns a uapi context access into accesses of the internal model when
               `converts_ctx` is set; `gen_prologue` / `gen_epilogue` give trusted code run before the
               program and at every exit of its main function

The built-in types delegate their context rules to the verifier's tables (bpfvm.verifier.ctx) and their
contexts to the sk_buff / xdp_buff models in helpers/. `register_prog_type` adds a type from Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import BpfvmError, LoadError
from .isa import Insn
from .memory import Memory, Region
from .program import Program
from .verifier import ctx as vctx
from .verifier.ctx import CtxField


@dataclass
class RunInput:
    """What BPF_PROG_TEST_RUN takes: packet, context and options of the models."""

    data_in: bytes | None = None
    ctx_in: bytes | None = None
    skb_linear: int | None = None  # keep only this many bytes of an skb linear; the rest goes to fragments
    xdp_frags: int | None = None  # XDP multi-buffer: bytes per fragment after the first buffer
    extra: dict[str, Any] = field(default_factory=dict)
    ctx_converted: bool = False  # the program's context accesses were converted: r1 must be the model


class RunContext(Protocol):
    """The context of one test run: `address` is what r1 holds; `finish` returns (data_out, ctx_out)."""

    address: int

    def finish(self) -> tuple[bytes, bytes]: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class CtxFieldSpec:
    """One field of a context layout, for types that describe their context as a table."""

    name: str
    off: int
    size: int
    write: bool = False  # programs may store the whole field


@dataclass(frozen=True)
class Snippet:
    """Trusted instructions a type injects after verification (prologue, epilogue). The imm of a kfunc call
    indexes `kfuncs`; helper calls are plain `call N`. No maps, subprograms or bpf-to-bpf calls."""

    insns: tuple[Insn, ...]
    kfuncs: tuple[str, ...] = ()

    @classmethod
    def asm(cls, text: str) -> "Snippet":
        """From kernel/LLVM assembler text, e.g. `r1 = 2; call bpf_test_inline_kfunc1; exit`."""
        from .asm import assemble

        program = assemble(text)
        return cls(tuple(program.insns), tuple(program.kfuncs))


class ProgType:
    """Base of every program type. The defaults describe a context that is a plain byte buffer given by
    ctx_in, laid out by `ctx_fields`, with no packet, no conversion and no prologue or epilogue."""

    name: str = "unspec"
    aliases: tuple[str, ...] = ()
    ctx_struct: str | None = None  # the uapi context struct in BTF, e.g. "__sk_buff"
    ctx_size: int = 0  # bytes of the context (0: as many as ctx_in holds)
    ctx_fields: tuple[CtxFieldSpec, ...] = ()
    ret_range: tuple[int, int] | None = None
    helpers: frozenset[int] | None = None  # helper ids programs may call (None: no list of our own)
    kfuncs: frozenset[str] | None = None  # kfuncs programs may call (None: no list of our own)
    takes_packet: bool = False
    supports_repeat: bool = True
    # verified programs get the internal model in r1 and every ctx access is converted. A type that leaves
    # them alone must give a plain context region: verified accesses are proved safe and run unguarded.
    converts_ctx: bool = False

    # -- the verifier's questions ---------------------------------------------------------------------------
    def check_ctx_access(self, off: int, size: int, write: bool) -> CtxField | None:
        """The field an access touches, or None for `invalid bpf_context access`. Default: `ctx_fields`, with
        aligned loads of a power-of-two size inside one field and stores of a whole writable field."""
        if size not in (1, 2, 4, 8) or off < 0 or off % size:
            return None
        for f in self.ctx_fields:
            if f.off <= off < f.off + f.size:
                if off + size > f.off + f.size or (write and (not f.write or (off, size) != (f.off, f.size))):
                    return None
                return CtxField(f.name, f.off, f.size, off, size)
        return None

    def return_range(self, attach_type: str) -> tuple[int, int] | None:
        """The [min, max] r0 must lie in at program exit (check_return_code), or None for no check."""
        return self.ret_range

    def check_calls(self, program: Program) -> None:
        """Refuse helper and kfunc calls outside `helpers` / `kfuncs` (one line naming the instruction)."""
        if self.helpers is None and self.kfuncs is None:
            return
        for i, insn in enumerate(program.insns):
            if insn.is_helper_call() and self.helpers is not None and insn.imm not in self.helpers:
                raise LoadError(f"insn {i}: {self.name} programs may not call helper #{insn.imm}")
            if insn.is_kfunc_call() and self.kfuncs is not None:
                name = program.kfuncs[insn.imm] if 0 <= insn.imm < len(program.kfuncs) else f"#{insn.imm}"
                if name not in self.kfuncs:
                    raise LoadError(f"insn {i}: {self.name} programs may not call kfunc {name}")

    # -- test runs --------------------------------------------------------------------------------------------
    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        if run_input.data_in and not self.takes_packet:
            raise BpfvmError(f"{self.name} programs take no packet (data_in); pass the context with ctx_in")
        data = run_input.ctx_in or b""
        if self.ctx_size and len(data) > self.ctx_size:
            raise BpfvmError(f"ctx_in is {len(data)} bytes; {self.name} contexts hold at most {self.ctx_size}")
        return BufferContext(memory, f"ctx ({self.name})", data, self.ctx_size or len(data), self.ctx_writable)

    @property
    def ctx_writable(self) -> bool:
        """Whether the run context's region takes stores (the verifier decides which)."""
        return any(f.write for f in self.ctx_fields)

    # -- after verification -----------------------------------------------------------------------------------
    def convert_ctx_access(self, insn: Insn, ctx_field: CtxField) -> list[Insn] | None:
        """The model accesses replacing one verified context access (`converts_ctx` types), or None."""
        return None

    def gen_prologue(self, program: Program, direct_write: bool) -> Snippet | None:
        """Code run before the program's first instruction; it must leave r1 (the context) as it was."""
        return None

    def gen_epilogue(self, program: Program, ctx_stack_off: int) -> Snippet | None:
        """Code run at every exit of the main function instead of `exit`; it must end with `exit`. r0 holds
        the program's return value; the context pointer is at `*(u64 *)(r10 + ctx_stack_off)`. It runs on
        every program exit, so it must be cheap: its kfunc calls are inlined under --inline plain/pruned."""
        return None

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


class KernelRules:
    """Context rules and return ranges from the verifier's tables of the kernel's types (by `name`)."""

    name: str

    def check_ctx_access(self, off: int, size: int, write: bool) -> CtxField | None:
        rules = vctx.RULES.get(self.name)
        return rules(off, size, write) if rules is not None else None

    def return_range(self, attach_type: str) -> tuple[int, int] | None:
        if self.name == "cgroup_skb" and attach_type == "cgroup_inet_egress":
            return (0, 3)  # egress may also ask for congestion notification (NET_XMIT_CN)
        return vctx.RETURN_RANGES.get(self.name)


class BufferProgType(KernelRules, ProgType):
    """Kernel types whose context is a byte buffer given by ctx_in (ProgType's default test run)."""

    ctx_writable = False


class RawTracepointType(BufferProgType):
    name = "raw_tracepoint"
    aliases = ("raw_tp", "raw_tracepoint_writable", "tracing")
    ctx_struct = "bpf_raw_tracepoint_args"
    ctx_size = 12 * 8  # up to MAX_BPF_FUNC_ARGS u64 arguments
    supports_repeat = False


class SyscallType(BufferProgType):
    name = "syscall"
    ctx_size = 0xFFFF
    ctx_writable = True
    supports_repeat = False


class TracingType(BufferProgType):
    """kprobe, tracepoint and perf_event programs: the kernel has no test run for them; we run with ctx_in bytes."""

    def __init__(self, name: str, ctx_struct: str | None = None):
        self.name = name
        self.ctx_struct = ctx_struct


class SkbType(KernelRules, ProgType):
    """Programs whose context is `struct __sk_buff` over the sk_buff model (helpers/skb.py)."""

    ctx_struct = "__sk_buff"
    ctx_size = 192
    takes_packet = True
    converts_ctx = True

    def __init__(self, name: str, aliases: tuple[str, ...] = ()):
        self.name = name
        self.aliases = aliases

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        from helpers.skb import make_skb_context

        return make_skb_context(memory, runtime, self.name, run_input.data_in or b"", run_input.ctx_in,
                                run_input.skb_linear, converted=run_input.ctx_converted)

    def convert_ctx_access(self, insn: Insn, ctx_field: CtxField) -> list[Insn] | None:
        from helpers.ctx_convert import convert_skb_access

        return convert_skb_access(insn, ctx_field)


class XdpType(KernelRules, ProgType):
    """Programs whose context is `struct xdp_md` over the xdp_buff model (helpers/xdp.py)."""

    name = "xdp"
    ctx_struct = "xdp_md"
    ctx_size = 24
    takes_packet = True
    converts_ctx = True

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        from helpers.xdp import make_xdp_context

        return make_xdp_context(memory, runtime, run_input.data_in or b"", run_input.ctx_in, run_input.xdp_frags,
                                converted=run_input.ctx_converted)

    def convert_ctx_access(self, insn: Insn, ctx_field: CtxField) -> list[Insn] | None:
        from helpers.ctx_convert import convert_xdp_access

        return convert_xdp_access(insn, ctx_field)


class FlowDissectorType(KernelRules, ProgType):
    """Verified by the kernel's rules, but there is no model of the flow keys to test-run it with."""

    name = "flow_dissector"
    ctx_struct = "__sk_buff"
    takes_packet = True

    def make_context(self, memory: Memory, runtime: Any, run_input: RunInput) -> RunContext:
        raise BpfvmError("flow_dissector programs cannot be test-run: bpfvm has no model of struct bpf_flow_keys")


_TYPES: dict[str, ProgType] = {}


def register_prog_type(prog_type: ProgType) -> ProgType:
    """Make a program type available by its name and aliases (replacing any of the same name)."""
    if not isinstance(prog_type, ProgType):
        raise BpfvmError(f"register_prog_type takes a ProgType, not {type(prog_type).__name__}")
    if not prog_type.name or not prog_type.name.replace("_", "a").isalnum():
        raise BpfvmError(f"program type name must be a C identifier, not {prog_type.name!r}")
    for name in (prog_type.name, *prog_type.aliases):
        _TYPES[name] = prog_type
    return prog_type


def unregister_prog_type(name: str) -> None:
    """Forget a registered type and its aliases (tests register types of their own)."""
    prog_type = _TYPES.get(name)
    if prog_type is not None:
        for key in [k for k, v in _TYPES.items() if v is prog_type]:
            del _TYPES[key]


def find_prog_type(name: str) -> ProgType | None:
    return _TYPES.get(name)


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
    FlowDissectorType(),
    RawTracepointType(),
    SyscallType(),
    TracingType("kprobe", "pt_regs"),
    TracingType("tracepoint"),
    TracingType("perf_event", "bpf_perf_event_data"),
):
    register_prog_type(_builtin)

vctx.set_prog_type_lookup(find_prog_type)
