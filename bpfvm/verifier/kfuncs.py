"""kfunc calls: prototypes from BTF (the program's extern declarations, else the kernel's), argument checks
driven by parameter types and name suffixes (`__sz`, `__szk`, `__k`, `__opt`, `__nullable`, `__uninit`,
`__ign`), and the kfuncs with verifier semantics of their own: dynptrs (from_skb/from_xdp/slice/slice_rdwr/
size/is_null/is_rdonly/adjust/clone) and open-coded iterators (bpf_iter_<kind>_new/next/destroy)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..btf import Btf, Kind, kfunc_arg_suffix, load_vmlinux
from ..isa import Insn
from .regs import (
    KERNEL_VALUE, MAYBE_NULL, PTR_TO_CTX, PTR_TO_MEM, PTR_TO_STACK, SCALAR, Reg, set_kernel_value, set_not_init, set_pointer,
    set_unknown, type_str,
)
from .state import State

CTX_STRUCTS = {"__sk_buff", "xdp_md", "bpf_perf_event_data", "pt_regs", "bpf_raw_tracepoint_args"}
MAX_VAR_SIZE = 1 << 29


@dataclass
class KParam:
    name: str
    kind: str  # scalar, dynptr, iter, ctx, mem, ptr
    suffix: str | None = None
    size: int = 0  # pointee size for fixed-size memory
    struct: str = ""
    const: bool = False


@dataclass
class KProto:
    name: str
    params: list[KParam] = field(default_factory=list)
    ret: str = "scalar"  # void, scalar, mem, ptr
    ret_size: int = 0


def _strip(btf: Btf, tid: int) -> tuple[int, bool]:
    """Skip typedefs and modifiers; report whether a `const` was seen."""
    const = False
    for _ in range(32):
        t = btf.type(tid) if tid else None
        if t is None:
            return 0, const
        if t.kind == Kind.CONST:
            const = True
        if t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            tid = t.type
            continue
        return tid, const
    return tid, const


def proto_from_btf(btf: Btf, name: str) -> KProto | None:
    func = btf.find_func(name)
    if func is None:
        return None
    fp = btf.func_proto(func.id)
    proto = KProto(name)
    rid, _ = _strip(btf, fp.type)
    if rid == 0:
        proto.ret = "void"
    else:
        rt = btf.type(rid)
        if rt.kind == Kind.PTR:
            pid, _ = _strip(btf, rt.type)
            proto.ret = "ptr"
            if pid and btf.type(pid).kind in (Kind.INT, Kind.ENUM, Kind.ENUM64):
                proto.ret = "mem"
                proto.ret_size = btf.size_of(pid)
            elif pid == 0:
                proto.ret = "void_ptr"
        else:
            proto.ret = "scalar"
    for p in fp.params:
        if not p.type and not p.name:
            break  # varargs
        suffix = kfunc_arg_suffix(p.name)
        tid, _ = _strip(btf, p.type)
        t = btf.type(tid) if tid else None
        if t is None or t.kind != Kind.PTR:
            proto.params.append(KParam(p.name, "scalar", suffix))
            continue
        pid, const = _strip(btf, t.type)
        pt = btf.type(pid) if pid else None
        if pt is None:
            proto.params.append(KParam(p.name, "mem", suffix, 0, "", const))
        elif pt.kind in (Kind.STRUCT, Kind.FWD) and pt.name == "bpf_dynptr":
            proto.params.append(KParam(p.name, "dynptr", suffix, 16, pt.name, const))
        elif pt.kind == Kind.STRUCT and pt.name.startswith("bpf_iter_"):
            proto.params.append(KParam(p.name, "iter", suffix, pt.size, pt.name[len("bpf_iter_"):], const))
        elif pt.kind == Kind.STRUCT and pt.name in CTX_STRUCTS:
            proto.params.append(KParam(p.name, "ctx", suffix, pt.size, pt.name, const))
        elif pt.kind in (Kind.INT, Kind.ENUM, Kind.ENUM64):
            proto.params.append(KParam(p.name, "mem", suffix, btf.size_of(pid), "", const))
        else:
            proto.params.append(KParam(p.name, "ptr", suffix, 0, pt.name, const))
    return proto


class KfuncMixin:
    def init_kfuncs(self) -> None:
        self._kprotos: dict[str, KProto | None] = {}
        self._kbtf = self.opts.kernel_btf

    def kernel_btf(self) -> Btf | None:
        if self._kbtf is None:
            self._kbtf = load_vmlinux() or False
        return self._kbtf or None

    def kfunc_proto(self, name: str) -> KProto | None:
        if name in self._kprotos:
            return self._kprotos[name]
        # The program's extern declaration, if its parameters carry names (their suffixes matter); else the
        # kernel's prototype, as the kernel itself uses; else the unnamed declaration.
        local = None
        btf = self.program.btf
        if btf is not None:
            try:
                local = proto_from_btf(btf, name)
            except Exception:  # noqa: BLE001 - malformed program BTF: use the kernel's
                local = None
        proto = local if local is not None and all(p.name for p in local.params) else None
        for library_btf in self.opts.kfunc_btfs:
            if proto is None:
                proto = proto_from_btf(library_btf, name)
        if proto is None:
            kb = self.kernel_btf()
            if kb is not None:
                proto = proto_from_btf(kb, name)
        if proto is None:
            proto = local
        self._kprotos[name] = proto
        return proto

    def kfunc_name(self, insn: Insn) -> str:
        if 0 <= insn.imm < len(self.program.kfuncs):
            return self.program.kfuncs[insn.imm]
        raise self.reject(f"kernel btf_id {insn.imm} is not a function")

    def kfunc_nparams(self) -> dict[int, int]:
        out = {}
        for i, insn in enumerate(self.insns):
            if insn.is_kfunc_call() and 0 <= insn.imm < len(self.program.kfuncs):
                p = self.kfunc_proto(self.program.kfuncs[insn.imm])
                if p is not None:
                    out[i] = len(p.params)
        return out

    def kfunc_is_iter_next(self, i: int) -> bool:
        insn = self.insns[i]
        if not (0 <= insn.imm < len(self.program.kfuncs)):
            return False
        name = self.program.kfuncs[insn.imm]
        return name.startswith("bpf_iter_") and name.endswith("_next")

    # -- the call ------------------------------------------------------------------------------------------
    def check_kfunc_call(self, st: State, insn: Insn) -> None:
        i = self.cur_insn
        name = self.kfunc_name(insn)
        self.aux[i].kfunc = name
        if st.instance >= 0 and self.is_internal_call(name):
            self.check_internal_call(st, name)
            return
        proto = self.kfunc_proto(name)
        if proto is None:
            raise self.reject(f"kfunc {name}: no BTF prototype in the program or the kernel")
        regs = st.frames[-1].regs
        meta: dict = {"consts": {}, "dynptr": None, "iter": None, "buf_size": None}
        for k, p in enumerate(proto.params):
            self._check_kfunc_arg(st, proto, k, p, meta)
        if i in self.instance_starts and st.instance < 0:
            self.push_instance(st, i, proto)
        special = self.special_kfunc(st, name, proto, meta)
        if special == "next":
            return  # the iterator's next: r0 and the paths are set up already
        for r in range(1, 6):
            set_not_init(regs[r])
        r0 = regs[0]
        if special is not None:
            special(r0)
        elif proto.ret == "void":
            set_not_init(r0)
        elif proto.ret == "scalar":
            set_unknown(r0)
        elif proto.ret == "mem" and proto.ret_size:
            set_pointer(r0, PTR_TO_MEM | MAYBE_NULL)
            r0.mem_size = proto.ret_size
            r0.id = self.new_id()
        elif st.instance >= 0:
            set_kernel_value(r0)
        else:
            raise self.reject(f"kfunc {name} returns a pointer type bpfvm does not model")

    def _check_kfunc_arg(self, st: State, proto: KProto, k: int, p: KParam, meta: dict) -> None:
        regno = k + 1
        reg = self.read_reg(st, regno)
        label = f"arg#{k}"
        if reg.type == KERNEL_VALUE and st.instance >= 0:
            return
        if p.suffix == "__ign":
            return
        if p.kind == "scalar":
            if reg.type != SCALAR:
                raise self.reject(f"R{regno} is not a scalar")
            if p.suffix == "__k" or p.suffix == "__szk":
                if not reg.is_const():
                    raise self.reject(f"R{regno} must be a known constant")
                self.mark_precise(st, regno)
                meta["consts"][k] = reg.var.value
            if p.suffix in ("__sz", "__szk"):
                self._kfunc_mem_size(st, proto, k, regno, reg)
            elif reg.is_const():
                meta["consts"][k] = reg.var.value
            return
        if p.kind == "dynptr":
            self.check_kfunc_dynptr_arg(st, regno, reg, p, meta)
            return
        if p.kind == "iter":
            self.check_iter_arg(st, regno, reg, p, proto, meta)
            return
        if p.kind == "ctx":
            if reg.type != PTR_TO_CTX:
                raise self.reject(f"{label} expected pointer to ctx, but got {type_str(reg.type)}")
            if reg.off or reg.var.mask or reg.var.value:
                raise self.reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
            return
        if p.kind == "mem":
            nxt = proto.params[k + 1] if k + 1 < len(proto.params) else None
            if nxt is not None and nxt.suffix in ("__sz", "__szk"):
                return  # checked with its size
            if (p.suffix in ("__opt", "__nullable")) and reg.is_null():
                return
            if not p.size:
                raise self.reject(f"{label} pointer type void must point to scalar, or struct with scalar")
            self._kfunc_mem(st, regno, reg, p.size, not p.const)
            return
        raise self.reject(f"{label} pointer type struct {p.struct} is not supported by bpfvm")

    def _kfunc_mem(self, st: State, regno: int, reg: Reg, size: int, write: bool) -> None:
        if reg.is_null():
            return  # the kernel's check_mem_reg() allows zero size, so a NULL scalar passes
        if reg.type & MAYBE_NULL or not reg.is_pointer():
            raise self.reject(f"R{regno} type={type_str(reg.type)} expected=fp, pkt, pkt_meta, map_key, "
                              "map_value, mem, ringbuf_mem, buf, trusted_ptr_")
        self.check_helper_mem(st, regno, size, write, True, False)

    def _kfunc_mem_size(self, st: State, proto: KProto, k: int, regno: int, reg: Reg) -> None:
        mem_p = proto.params[k - 1] if k else None
        mem = st.frames[-1].regs[regno - 1]
        if reg.smin < 0:
            raise self.reject(f"R{regno} min value is negative, either use unsigned or 'var &= const'")
        if reg.umax >= MAX_VAR_SIZE:
            raise self.reject(f"R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'")
        if mem_p is not None and mem_p.suffix in ("__opt", "__nullable") and mem.is_null():
            return
        if mem.type == KERNEL_VALUE:
            return
        write = mem_p is None or not mem_p.const
        self._kfunc_mem(st, regno - 1, mem, reg.umax, write)
        self.mark_precise(st, regno)

    # -- instance bodies (RFC patch 08) ---------------------------------------------------------------------
    def is_internal_call(self, name: str) -> bool:
        if name in self.internal_kfuncs:
            return True
        return self.kfunc_proto(name) is None

    def check_internal_call(self, st: State, name: str) -> None:
        """A call from an instance body to a kernel-internal function: pointers to stack passed to it make
        that frame's stack KERNEL_VALUEs; r0 becomes a KERNEL_VALUE."""
        proto = self.kfunc_proto(name)
        nargs = len(proto.params) if proto is not None else 5
        regs = st.frames[-1].regs
        for r in range(1, nargs + 1):
            reg = regs[r]
            if reg.type in (SCALAR, KERNEL_VALUE, 0):
                continue
            if reg.base == PTR_TO_STACK:
                self.stack_to_kernel_values(st.frames[reg.frameno])
                continue
            raise self.reject(f"verifier bug: arg#{r - 1} unexpected register type {type_str(reg.type)}")
        for r in range(1, 6):
            set_not_init(regs[r])
        set_kernel_value(regs[0])

    @staticmethod
    def stack_to_kernel_values(frame) -> None:
        from .state import REG_SIZE, SPILL

        for slot in frame.stack:
            set_kernel_value(slot.reg)
            slot.types = [SPILL] * REG_SIZE


