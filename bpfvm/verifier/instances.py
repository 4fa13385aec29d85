"""Inlinable kfunc instances (RFC patches 06-08), the hook the inliner builds on.

An instance is a hidden subprogram appended to the program: a copy of an inlinable kfunc's body made for
one call site. `verify(..., instances={call_slot: body_start})` (or an `InstanceSpec`) declares them. The
call at `call_slot` is checked as a normal kfunc call (prototype from BTF); right after, the body is queued
as an independent path in a *distilled* context:

  * its own call stack: a fake frame 0 and the body's frame 1, no caller frame;
  * scalars and NULL pointers in r1-r5 are copied as they are (their ids dropped);
  * a pointer to a dynptr becomes a pointer into the fake frame, which holds the dynptr's
    `struct bpf_dynptr_kern { void *data; u32 size; u32 offset; }`: `data` a KERNEL_VALUE spill, `size` a
    precise scalar spill whose bits 28..30 are the dynptr type (1 local, 2 ringbuf, 3 skb, 4 xdp), bit 31
    (read-only) and the low 24 bits (the size) unknown, bits 24..27 zero; `offset` unknown;
  * every other argument is a KERNEL_VALUE; r0 and r6-r9 are not initialised.

Inside an instance, kfunc calls to kernel-internal functions (names in `internal_kfuncs`, or kfuncs with no
BTF prototype) are not checked: pointers to stack passed to them turn that frame's stack into
KERNEL_VALUEs, and r0 becomes a KERNEL_VALUE. `exit` in the body's frame ends the path (there is no return
into the caller: the call site's r0 comes from the kfunc's prototype). The call's scalar arguments are marked
precise, so that a pruned path of the caller cannot reach the call with other values. Branch facts and
`seen` inside bodies are recorded like anywhere else, so the dead-code passes simplify them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import tnum as tn
from .bounds import sync
from .errors import Reject
from .regs import (
    CONST_PTR_TO_DYNPTR, PTR_TO_STACK, SCALAR, Reg, mark_unbounded, set_const, set_kernel_value, set_pointer,
)
from .state import MISC, REG_SIZE, SPILL, Slot, State, new_frame

DYNPTR_TYPE_SHIFT = 28
DYNPTR_RDONLY_BIT = 31
DYNPTR_SIZE_BITS = 24


@dataclass
class InstanceSpec:
    """One instance: the start slot of its body and, optionally, names of kernel-internal functions the
    body may call (in addition to the verify-wide `internal_kfuncs`)."""

    start: int
    internal_kfuncs: frozenset[str] = field(default_factory=frozenset)


def dynptr_size_reg(dtype: int, rdonly: bool | None = None) -> Reg:
    """The `size` field of a distilled dynptr: type known, size unknown (24 bits), read-only bit unknown
    unless given."""
    r = Reg()
    r.type = SCALAR
    value = dtype << DYNPTR_TYPE_SHIFT
    mask = (1 << DYNPTR_SIZE_BITS) - 1
    if rdonly is None:
        mask |= 1 << DYNPTR_RDONLY_BIT
    elif rdonly:
        value |= 1 << DYNPTR_RDONLY_BIT
    r.var = tn.Tnum(value, mask)
    mark_unbounded(r)
    sync(r)
    r.precise = True
    return r


class InstanceMixin:
    def init_instances(self, instances: dict) -> None:
        self.instance_starts: dict[int, int] = {}
        self.internal_kfuncs: set[str] = set()
        for call, spec in instances.items():
            if isinstance(spec, InstanceSpec):
                self.instance_starts[call] = spec.start
                self.internal_kfuncs |= set(spec.internal_kfuncs)
            else:
                self.instance_starts[call] = int(spec)
        for call, start in self.instance_starts.items():
            if not (0 <= call < self.n) or not self.insns[call].is_kfunc_call():
                raise Reject(call, f"instance declared for insn {call}, which is not a kfunc call")
            if not (0 <= start < self.n):
                raise Reject(call, f"instance body start {start} is outside the program")
            self.aux[call].instance = start

    def push_instance(self, st: State, call: int, proto) -> None:
        """push_inlinable_kfunc(): queue the instance body in its distilled context."""
        start = self.instance_starts[call]
        caller = st.frames[-1].regs
        fake = new_frame(0, -1, -1)
        fake.fake = True
        body = new_frame(1, call, start)
        body.in_instance = True
        fake_spi = 0
        for k, p in enumerate(proto.params[:5]):
            reg = caller[k + 1]
            sh = body.regs[k + 1]
            if p.kind == "dynptr" and (reg.type == PTR_TO_STACK or reg.type == CONST_PTR_TO_DYNPTR):
                head = self.dynptr_at(st, k + 1, reg)
                fake.grow((fake_spi + 2) * REG_SIZE)
                size_slot = Slot()
                size_slot.reg = dynptr_size_reg(head.dyn_type)
                # bytes 7..4 (the low addresses) hold `size`, bytes 3..0 `offset`
                size_slot.types = [MISC] * 4 + [SPILL] * 4
                fake.stack[fake_spi] = size_slot
                data_slot = Slot()
                set_kernel_value(data_slot.reg)
                data_slot.types = [SPILL] * REG_SIZE
                fake.stack[fake_spi + 1] = data_slot
                fake_spi += 2
                set_pointer(sh, PTR_TO_STACK, -fake_spi * REG_SIZE)
                sh.frameno = 0
            elif reg.is_null() and p.kind != "scalar":
                set_const(sh, 0)
            elif reg.type == SCALAR:
                sh.assign(reg)
                sh.id = 0
            else:
                set_kernel_value(sh)
        # registers beyond the prototype's parameters stay uninitialised
        new = State()
        new.frames = [fake, body]
        new.insn = start
        new.instance = call
        new.instance_base = 1
        new.refs = []
        for k, p in enumerate(proto.params[:5]):
            if caller[k + 1].type == SCALAR:
                self.mark_precise(st, k + 1)
        self.push_new(new)
        if self.log:
            self.log.line(f"{call}: queued instance body at {start}")
