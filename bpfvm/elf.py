"""Load BPF ELF objects (`clang -O2 -g -target bpf -c`) into `Program`s, the way libbpf prepares them.

What happens, in order:
  1. ELF header and section headers (pyelftools), symbols and relocations (fixed-size records, bounds-checked).
  2. `.BTF` / `.BTF.ext`, the license, and maps: BTF-defined `.maps`, the legacy `maps` section (libbpf's
     20-byte `struct bpf_map_def` or iproute2's 28/36-byte `struct bpf_elf_map`), and global data sections
     as one-element ARRAY maps.
  3. Code relocations are resolved per section; CO-RE relocations are applied to the section's code.
  4. Each entry function of a program section becomes a `Program`: its code, then every subprogram it
     reaches (depth first, in the order libbpf appends them), with calls, callback addresses, map and
     global-data references and kfunc calls rewritten to the kernel's pseudo forms.

Everything read from the file is bounds-checked and every loop is bounded by the file's size, so a
malformed object gives a one-line `LoadError` and never a traceback or a hang.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from . import kconfig, uapi
from .btf import Btf, BtfExt, CoreOutcome, CoreRelo, Kind, core_kind_name, core_relocate, load_vmlinux
from .errors import LoadError
from .isa import (
    ALU, ALU64, LDX, OP_CALL, OP_LDDW, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_IDX,
    PSEUDO_MAP_IDX_VALUE, ST, STX, X, DecodeError, Insn, decode, to_signed, validate_program,
)
from .program import FuncInfo, LineInfo, MapSpec, Program

EM_BPF = 247
ET_REL = 1
SHT_PROGBITS, SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 1, 2, 4, 8, 9
SHF_EXECINSTR = 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_LORESERVE = 0, 0xFF00

R_BPF_NONE, R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = 0, 1, 2, 3, 4, 10
RELOC_NAMES = {0: "R_BPF_NONE", 1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
               4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}

# libbpf poisons an instruction whose CO-RE relocation has no target with a call to this invalid helper.
CORE_POISON_HELPER = 0xBAD2310
# Bigger global-data sections than this are refused (the kernel caps array values at a few MiB anyway).
MAX_GLOBAL_DATA = 64 << 20

_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")

# Section names -> program type, in libbpf's order (first match wins). "x+" is `x` or `x/...`, "x/" a
# prefix, anything else exact. Beyond libbpf: any `tc/...`, `tcx/...` and `xdp/...`, as the brief asks.
SECTION_DEFS: tuple[tuple[str, str], ...] = (
    ("socket", "socket_filter"), ("sk_reuseport/migrate", "sk_reuseport"), ("sk_reuseport", "sk_reuseport"),
    ("kprobe+", "kprobe"), ("uprobe+", "kprobe"), ("uprobe.s+", "kprobe"), ("kretprobe+", "kprobe"),
    ("uretprobe+", "kprobe"), ("uretprobe.s+", "kprobe"), ("kprobe.multi+", "kprobe"),
    ("kretprobe.multi+", "kprobe"), ("kprobe.session+", "kprobe"), ("uprobe.multi+", "kprobe"),
    ("uretprobe.multi+", "kprobe"), ("uprobe.session+", "kprobe"), ("uprobe.multi.s+", "kprobe"),
    ("uretprobe.multi.s+", "kprobe"), ("uprobe.session.s+", "kprobe"), ("ksyscall+", "kprobe"),
    ("kretsyscall+", "kprobe"), ("usdt+", "kprobe"), ("usdt.s+", "kprobe"),
    ("tc/", "sched_cls"), ("tcx/", "sched_cls"), ("tc", "sched_cls"), ("classifier", "sched_cls"),
    ("action", "sched_act"), ("netkit/primary", "sched_cls"), ("netkit/peer", "sched_cls"),
    ("tracepoint+", "tracepoint"), ("tp+", "tracepoint"), ("tracepoint.s+", "tracepoint"), ("tp.s+", "tracepoint"),
    ("raw_tracepoint+", "raw_tracepoint"), ("raw_tp+", "raw_tracepoint"), ("raw_tracepoint.s+", "raw_tracepoint"),
    ("raw_tp.s+", "raw_tracepoint"), ("raw_tracepoint.w+", "raw_tracepoint_writable"),
    ("raw_tp.w+", "raw_tracepoint_writable"), ("tp_btf+", "tracing"), ("tp_btf.s+", "tracing"),
    ("fentry+", "tracing"), ("fmod_ret+", "tracing"), ("fexit+", "tracing"), ("fentry.s+", "tracing"),
    ("fmod_ret.s+", "tracing"), ("fexit.s+", "tracing"), ("fsession+", "tracing"), ("fsession.s+", "tracing"),
    ("fsession.multi+", "tracing"), ("fsession.multi.s+", "tracing"), ("fentry.multi+", "tracing"),
    ("fexit.multi+", "tracing"), ("fentry.multi.s+", "tracing"), ("fexit.multi.s+", "tracing"),
    ("freplace+", "ext"), ("lsm+", "lsm"), ("lsm.s+", "lsm"), ("lsm_cgroup+", "lsm"), ("iter+", "tracing"),
    ("iter.s+", "tracing"), ("syscall", "syscall"), ("xdp.frags/devmap", "xdp"), ("xdp/", "xdp"),
    ("xdp.frags/cpumap", "xdp"), ("xdp.frags", "xdp"), ("xdp", "xdp"), ("perf_event", "perf_event"),
    ("lwt_in", "lwt_in"), ("lwt_out", "lwt_out"), ("lwt_xmit", "lwt_xmit"), ("lwt_seg6local", "lwt_seg6local"),
    ("sockops", "sock_ops"), ("sk_skb/stream_parser", "sk_skb"), ("sk_skb/stream_verdict", "sk_skb"),
    ("sk_skb/verdict", "sk_skb"), ("sk_skb", "sk_skb"), ("sk_msg", "sk_msg"), ("lirc_mode2", "lirc_mode2"),
    ("flow_dissector", "flow_dissector"), ("cgroup_skb/ingress", "cgroup_skb"),
    ("cgroup_skb/egress", "cgroup_skb"), ("cgroup/skb", "cgroup_skb"), ("cgroup/sock_create", "cgroup_sock"),
    ("cgroup/sock_release", "cgroup_sock"), ("cgroup/sock", "cgroup_sock"), ("cgroup/post_bind4", "cgroup_sock"),
    ("cgroup/post_bind6", "cgroup_sock"), ("cgroup/bind4", "cgroup_sock_addr"),
    ("cgroup/bind6", "cgroup_sock_addr"), ("cgroup/connect4", "cgroup_sock_addr"),
    ("cgroup/connect6", "cgroup_sock_addr"), ("cgroup/connect_unix", "cgroup_sock_addr"),
    ("cgroup/sendmsg4", "cgroup_sock_addr"), ("cgroup/sendmsg6", "cgroup_sock_addr"),
    ("cgroup/sendmsg_unix", "cgroup_sock_addr"), ("cgroup/recvmsg4", "cgroup_sock_addr"),
    ("cgroup/recvmsg6", "cgroup_sock_addr"), ("cgroup/recvmsg_unix", "cgroup_sock_addr"),
    ("cgroup/getpeername4", "cgroup_sock_addr"), ("cgroup/getpeername6", "cgroup_sock_addr"),
    ("cgroup/getpeername_unix", "cgroup_sock_addr"), ("cgroup/getsockname4", "cgroup_sock_addr"),
    ("cgroup/getsockname6", "cgroup_sock_addr"), ("cgroup/getsockname_unix", "cgroup_sock_addr"),
    ("cgroup/sysctl", "cgroup_sysctl"), ("cgroup/getsockopt", "cgroup_sockopt"),
    ("cgroup/setsockopt", "cgroup_sockopt"), ("cgroup/dev", "cgroup_device"), ("struct_ops+", "struct_ops"),
    ("struct_ops.s+", "struct_ops"), ("sk_lookup", "sk_lookup"), ("netfilter", "netfilter"),
)


_ATTACH_TYPES = {"cgroup_skb/ingress": "cgroup_inet_ingress", "cgroup_skb/egress": "cgroup_inet_egress",
                 "xdp.frags": "xdp", "tcx/ingress": "tcx_ingress", "tcx/egress": "tcx_egress"}


def attach_type_for_section(name: str) -> str:
    """The expected attach type libbpf sets for a section, where it changes verification (else "")."""
    return _ATTACH_TYPES.get(name, "")


# Section-name prefixes that libbpf before 1.0 (and the kernel's samples/bpf loader) accepted: the older
# objects libbpf no longer takes, such as `socket1`, `xdp_prog` or `kprobe_something`.
LEGACY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("socket", "socket_filter"), ("xdp", "xdp"), ("classifier", "sched_cls"), ("action", "sched_act"),
    ("kprobe", "kprobe"), ("kretprobe", "kprobe"), ("tracepoint", "tracepoint"), ("raw_tracepoint", "raw_tracepoint"),
    ("cgroup/skb", "cgroup_skb"), ("cgroup/sock", "cgroup_sock"), ("cgroup/dev", "cgroup_device"),
    ("sk_skb", "sk_skb"), ("sk_msg", "sk_msg"), ("lwt_in", "lwt_in"), ("lwt_out", "lwt_out"),
    ("lwt_xmit", "lwt_xmit"), ("lwt_seg6local", "lwt_seg6local"), ("sockops", "sock_ops"),
    ("perf_event", "perf_event"), ("flow_dissector", "flow_dissector"),
)


def prog_type_for_section(name: str) -> str | None:
    """The program type libbpf gives a section name (lowercase BPF_PROG_TYPE_* name), or None. Names libbpf
    1.x does not know fall back to the prefixes older loaders accepted."""
    strict = _strict_prog_type(name)
    if strict is not None:
        return strict
    for prefix, prog_type in LEGACY_PREFIXES:
        if name.startswith(prefix):
            return prog_type
    return None


def _strict_prog_type(name: str) -> str | None:
    for pattern, prog_type in SECTION_DEFS:
        if pattern.endswith("/"):
            if name.startswith(pattern) and len(name) > len(pattern):
                return prog_type
        elif pattern.endswith("+"):
            stem = pattern[:-1]
            if name == stem or name.startswith(stem + "/"):
                return prog_type
        elif name == pattern:
            return prog_type
    return None


@dataclass
class ObjectFile:
    """Everything an object file declares. `map_init` holds the initial slots of map-in-map and prog-array
    maps given in `.maps` (`values = { [1] = &inner }`): map name -> {slot: map or program name}."""

    programs: dict[str, Program]
    maps: list[MapSpec]
    license: str = ""
    btf: Btf | None = None
    btf_ext: BtfExt | None = None
    kfuncs: list[str] = field(default_factory=list)
    kern_version: int | None = None
    map_init: dict[str, dict[int, str]] = field(default_factory=dict)
    path: str = ""

    def map(self, name: str) -> MapSpec:
        for spec in self.maps:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass
class _Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    data: bytes  # empty for SHT_NOBITS

    @property
    def is_code(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True)
class _Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


@dataclass(frozen=True)
class _Func:
    """A function: `size` bytes at `start` of code section `sec`. Programs and subprograms alike."""

    sec: int
    start: int
    size: int
    name: str
    bind: int


@dataclass(frozen=True)
class _Ref:
    """A resolved code relocation, independent of which program the code ends up in."""

    kind: str  # "map", "data", "func" (callback address), "call", "kfunc"
    map: MapSpec | None = None
    offset: int = 0  # data: offset in the value; func/call: byte offset of the target in `sec`
    sec: int = 0
    name: str = ""


def load_library(source: str | os.PathLike | bytes | bytearray | memoryview) -> ObjectFile:
    """Load a function library: every global function of `.text` becomes a program of type "unspec".

    This is how kfunc libraries (inlinable kfunc bodies compiled to BPF) are read: calls to undefined
    symbols become kfunc calls by name, as in any object.
    """
    return load_object(source, kernel_btf=False, _library=True)


def load_object(source: str | os.PathLike | bytes | bytearray | memoryview, *, prog_type: str | None = None,
                kernel_btf: Btf | str | os.PathLike | bool | None = None, _library: bool = False) -> ObjectFile:
    """Load a BPF ELF object (a path or its bytes).

    `prog_type` overrides the program type of every program section (and lets sections libbpf does not
    know load). `kernel_btf` is the CO-RE target: a `Btf` or a path; None uses /sys/kernel/btf/vmlinux when
    readable; False relocates against the object's own BTF.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "<bytes>"
    else:
        label = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise LoadError(f"cannot read {label}: {exc.strerror or exc}") from None
    if prog_type is not None:
        canonical = uapi.normalize_prog_type(prog_type)
        if canonical is None:
            raise LoadError(f"unknown program type '{prog_type}'")
        prog_type = canonical
    try:
        obj = _Loader(data, prog_type, kernel_btf, library=_library).load()
    except LoadError as exc:
        raise LoadError(f"{label}: {exc}") from None
    except RecursionError:
        raise LoadError(f"{label}: object too deeply nested to load") from None
    except (ELFError, ConstructError, struct.error) as exc:  # pyelftools on bad headers / past-EOF reads
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise LoadError(f"{label}: malformed ELF object ({message})") from None
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, TypeError, AttributeError,
            MemoryError) as exc:
        # Not expected: every check above should have named the problem. Still one line, never a traceback.
        message = " ".join(str(exc).split())
        raise LoadError(f"{label}: malformed ELF object (internal {type(exc).__name__}: {message})") from None
    obj.path = label
    return obj


def _read_ident(data: bytes) -> None:
    """Refuse non-ELF, 32-bit and big-endian files with a clear word before pyelftools looks at them."""
    if len(data) < 64:
        raise LoadError(f"not an ELF object: file is {len(data)} bytes")
    if data[:4] != b"\x7fELF":
        raise LoadError("not an ELF object: bad magic")
    if data[4] != 2:
        raise LoadError("32-bit ELF objects are not supported (BPF objects are ELF64)")
    if data[5] != 1:
        raise LoadError("big-endian ELF objects are not supported (use -target bpfel or bpf on little-endian)")
    _check_section_table(data)


def _check_section_table(data: bytes) -> None:
    """Check that the section header table and the section-name table lie within the file, so a corrupt
    header is named here and not met as an overflow deep inside pyelftools (little-endian ELF64 layout)."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shnum == 0:
        return
    if shentsize != 64:
        raise LoadError(f"ELF section header size is {shentsize}, not 64")
    if shoff + shnum * shentsize > len(data):
        raise LoadError(f"ELF section header table {shoff:#x}+{shnum}*64 lies past the end of the file "
                        f"({len(data)} bytes)")
    if shstrndx >= shnum:
        raise LoadError(f"ELF section-name table index {shstrndx} is not a section (there are {shnum})")
    name_offset, name_size = struct.unpack_from("<QQ", data, shoff + shstrndx * 64 + 24)
    if name_offset + name_size > len(data):
        raise LoadError(f"ELF section-name table {name_offset:#x}+{name_size} lies past the end of the file")


class _Loader:
    def __init__(self, data: bytes, prog_type: str | None, kernel_btf: Any, library: bool = False):
        self.library = library
        self.data = data
        self.forced_type = prog_type
        self.kernel_btf_arg = kernel_btf
        self._target_btf: Btf | None | bool = False  # False: not looked up yet
        self.sections: list[_Section] = []
        self.by_name: dict[str, _Section] = {}
        self.symbols: list[_Symbol] = []
        self.btf: Btf | None = None
        self.btf_ext: BtfExt | None = None
        self.maps: list[MapSpec] = []
        self.map_at: dict[tuple[int, int], MapSpec] = {}  # (section, offset) -> map
        self.data_maps: dict[int, MapSpec] = {}  # section index -> global-data map
        self.map_init: dict[str, dict[int, str]] = {}
        self._map_spans: list[tuple[MapSpec, int, int]] = []  # BTF maps: (spec, offset in .maps, size)
        self.funcs: dict[int, list[_Func]] = {}  # code section -> functions sorted by start
        self.func_at: dict[tuple[int, int], _Func] = {}
        self.code: dict[int, list[Insn]] = {}
        self.refs: dict[int, dict[int, _Ref]] = {}  # code section -> slot -> resolved relocation
        self.poisoned: dict[tuple[int, int], str] = {}
        self.kfuncs: list[str] = []
        self.kconfig_externs: list[kconfig.Extern] = []
        self.kconfig_map: MapSpec | None = None
        self.kconfig_offsets: dict[str, int] = {}

    # ---- driver -------------------------------------------------------------------------------------------

    def load(self) -> ObjectFile:
        self._read_sections()
        self._read_symbols()
        self._read_btf()
        self._check_externs()
        license_ = self._read_license()
        kern_version = self._read_version()
        self._read_legacy_maps()
        self._read_btf_maps()
        self._read_data_maps()
        self._make_kconfig_map()
        self._find_functions()
        self._read_relocations()
        self._apply_core()
        programs: dict[str, Program] = {}
        for sec_idx, funcs in self.funcs.items():
            sec = self.sections[sec_idx]
            if sec.name == ".text":
                if self.library:
                    for func in funcs:
                        if func.bind != STB_LOCAL:
                            programs[func.name] = self._link(func, "unspec", license_)
                continue
            if self.library:
                raise LoadError(f"section '{sec.name}': a function library holds code only in .text")
            prog_type = self.forced_type or prog_type_for_section(sec.name)
            if prog_type is None:
                raise LoadError(
                    f"section '{sec.name}': unknown program section (give its type: --type TYPE, or prog_type= in the API)"
                )
            for func in funcs:  # static programs load too, as libbpf loads them
                if func.name in programs:
                    raise LoadError(f"section '{sec.name}': duplicate program name '{func.name}'")
                programs[func.name] = self._link(func, prog_type, license_)
        return ObjectFile(programs=programs, maps=self.maps, license=license_, btf=self.btf, btf_ext=self.btf_ext,
                          kfuncs=self.kfuncs, kern_version=kern_version, map_init=self.map_init)

    # ---- ELF structure ------------------------------------------------------------------------------------

    def _read_sections(self) -> None:
        data = self.data
        _read_ident(data)
        elf = ELFFile(io.BytesIO(data))
        if elf["e_machine"] not in ("EM_BPF", EM_BPF):
            raise LoadError(f"ELF machine is {elf['e_machine']}, not BPF")
        if elf["e_type"] not in ("ET_REL", ET_REL):
            raise LoadError(f"ELF type is {elf['e_type']}, not a relocatable object (ET_REL)")
        count = elf.num_sections()
        if count > len(data) // 64 + 1:
            raise LoadError(f"ELF claims {count} sections, more than the file can hold")
        for index in range(count):
            sec = elf.get_section(index)
            hdr = sec.header
            sh_type = hdr["sh_type"]
            type_no = sh_type if isinstance(sh_type, int) else _SHT_BY_NAME.get(sh_type, -1)
            offset, size = int(hdr["sh_offset"]), int(hdr["sh_size"])
            if type_no == SHT_NOBITS or type_no == 0:
                blob = b""
            else:
                if offset + size > len(data):
                    raise LoadError(f"section {index} ({sec.name or '?'}): data {offset}+{size} past end of file")
                blob = data[offset:offset + size]
            entry = _Section(index, sec.name, type_no, int(hdr["sh_flags"]), offset, size, int(hdr["sh_link"]),
                             int(hdr["sh_info"]), blob)
            self.sections.append(entry)
            self.by_name.setdefault(entry.name, entry)

    def _read_symbols(self) -> None:
        symtabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if len(symtabs) != 1:
            raise LoadError(f"expected one symbol table, found {len(symtabs)}")
        symtab = symtabs[0]
        if not 0 < symtab.link < len(self.sections):
            raise LoadError(f"symbol table links to bad string table section {symtab.link}")
        strtab = self.sections[symtab.link].data
        count = symtab.size // _SYM.size
        for index, (name_off, info, _other, shndx, value, size) in enumerate(
                _SYM.iter_unpack(symtab.data[:count * _SYM.size])):
            self.symbols.append(_Symbol(index, _cstr(strtab, name_off, "symbol name"), value, size,
                                        info & 0xF, info >> 4, shndx))

    def _section_of(self, sym: _Symbol) -> _Section | None:
        if sym.shndx == SHN_UNDEF or sym.shndx >= SHN_LORESERVE or sym.shndx >= len(self.sections):
            return None
        return self.sections[sym.shndx]

    def _sym_name(self, sym: _Symbol) -> str:
        if sym.name:
            return sym.name
        sec = self._section_of(sym)
        return sec.name if sec is not None else f"#{sym.index}"

    # ---- BTF, license, externs ----------------------------------------------------------------------------

    def _read_btf(self) -> None:
        sec = self.by_name.get(".BTF")
        if sec is not None:
            self.btf = Btf(sec.data, what=".BTF")
        ext = self.by_name.get(".BTF.ext")
        if ext is not None:
            if self.btf is None:
                raise LoadError(".BTF.ext present without .BTF")
            self.btf_ext = BtfExt(ext.data, self.btf)

    def _check_externs(self) -> None:
        """Collect kconfig externs and extern kfunc declarations; refuse ksym variables."""
        if self.btf is None:
            return
        weak = {s.name for s in self.symbols if s.shndx == SHN_UNDEF and s.bind == STB_WEAK}
        for name in (".kconfig", ".ksyms"):
            for t, _info in self.btf.datasec_vars(name):
                if t.kind == Kind.VAR and name == ".kconfig":
                    self.kconfig_externs.append(kconfig.Extern(t.name, t.type, t.name in weak))
                elif t.kind == Kind.VAR:
                    raise LoadError(f"extern ksym variable '{t.name}' ({name}) is not supported")
                if t.kind == Kind.FUNC and t.name not in self.kfuncs:
                    self.kfuncs.append(t.name)

    def _make_kconfig_map(self) -> None:
        """libbpf's `.kconfig` map: one read-only element holding every kconfig extern's value."""
        if not self.kconfig_externs:
            return
        assert self.btf is not None
        placed = kconfig.layout(self.btf, self.kconfig_externs)
        self.kconfig_offsets = placed.offsets
        self.kconfig_map = MapSpec(name=".kconfig", type=uapi.BPF_MAP_TYPE_ARRAY, key_size=4,
                                   value_size=max(len(placed.data), 1), max_entries=1,
                                   flags=uapi.BPF_F_MMAPABLE | uapi.BPF_F_RDONLY_PROG,
                                   initial=placed.data or b"\0", readonly=True, section=".kconfig")
        self.maps.append(self.kconfig_map)

    def _read_license(self) -> str:
        sec = self.by_name.get("license")
        if sec is None:
            return ""
        return sec.data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _read_version(self) -> int | None:
        sec = self.by_name.get("version")
        if sec is None:
            return None
        if len(sec.data) != 4:
            raise LoadError(f"section 'version': size {len(sec.data)}, expected 4")
        return struct.unpack("<I", sec.data)[0]

    # ---- maps ---------------------------------------------------------------------------------------------

    def _read_legacy_maps(self) -> None:
        """`maps` section of fixed-size records: libbpf's bpf_map_def (20 B) or iproute2's bpf_elf_map."""
        sec = self.by_name.get("maps")
        if sec is None or sec.size == 0:
            return
        syms = sorted((s for s in self.symbols if s.shndx == sec.index and s.type != STT_SECTION and s.name),
                      key=lambda s: s.value)
        if not syms:
            raise LoadError("section 'maps': no map symbols")
        if sec.type == SHT_NOBITS or sec.size % len(syms):
            raise LoadError(f"section 'maps': size {sec.size} is not a multiple of {len(syms)} map records")
        rec = sec.size // len(syms)
        if rec < 20 or rec % 4:
            raise LoadError(f"section 'maps': record size {rec} is not a bpf_map_def (20) or bpf_elf_map (28)")
        by_id: dict[int, MapSpec] = {}
        inner_ids: list[tuple[MapSpec, int]] = []
        for sym in syms:
            if sym.value % rec or sym.value + rec > sec.size:
                raise LoadError(f"section 'maps': map '{sym.name}' at offset {sym.value} is not a record start")
            fields = struct.unpack_from(f"<{rec // 4}I", sec.data, sym.value)
            spec = MapSpec(name=sym.name, type=fields[0], key_size=fields[1], value_size=fields[2],
                           max_entries=fields[3], flags=fields[4], section="maps")
            if rec >= 28:  # iproute2: id, pinning, then inner_id, inner_idx
                spec.pinning = fields[6]
                if fields[5]:
                    by_id[fields[5]] = spec
                if rec >= 36 and fields[7]:
                    inner_ids.append((spec, fields[7]))
            self._add_map(spec, sec.index, sym.value)
        for spec, inner_id in inner_ids:
            if inner_id not in by_id:
                raise LoadError(f"section 'maps': map '{spec.name}' names inner map id {inner_id}, which no map has")
            spec.inner = by_id[inner_id]

    def _add_map(self, spec: MapSpec, sec_idx: int, offset: int) -> None:
        self.maps.append(spec)
        self.map_at[(sec_idx, offset)] = spec

    def _read_btf_maps(self) -> None:
        sec = self.by_name.get(".maps")
        if sec is None:
            return
        if self.btf is None or self.btf.datasec(".maps") is None:
            raise LoadError("section '.maps': BTF-defined maps need .BTF with a '.maps' DATASEC")
        symbols = {s.name: s for s in self.symbols if s.shndx == sec.index and s.type != STT_SECTION}
        spans = self._map_spans
        for var, _info in self.btf.datasec_vars(".maps"):
            if var.kind != Kind.VAR or not var.name:
                raise LoadError(f"section '.maps': entry [{var.id}] is not a named variable")
            sym = symbols.get(var.name)
            if sym is None:
                raise LoadError(f"section '.maps': map '{var.name}' has no symbol")
            size = max(self.btf.size_of(var.type), sym.size)  # an initialised `values` extends past the struct
            if sym.value + size > sec.size:
                raise LoadError(f"section '.maps': map '{var.name}' runs past the section")
            spec = _parse_btf_map(self.btf, var.name, var.type, inner=False)
            self._add_map(spec, sec.index, sym.value)
            spans.append((spec, sym.value, size))

    def _read_data_maps(self) -> None:
        for sec in self.sections:
            kind = _data_section_kind(sec.name)
            if kind is None or sec.type not in (SHT_PROGBITS, SHT_NOBITS) or sec.is_code:
                if sec.name.startswith((".addr_space", ".arena")):
                    raise LoadError(f"section '{sec.name}': arena global data is not supported")
                if sec.name.startswith(".struct_ops"):
                    raise LoadError(f"section '{sec.name}': struct_ops maps are not supported")
                continue
            if sec.size == 0:
                continue
            if sec.size > MAX_GLOBAL_DATA:
                raise LoadError(f"section '{sec.name}': {sec.size} bytes of global data is too large")
            initial = bytes(sec.size) if sec.type == SHT_NOBITS else sec.data
            readonly = kind == "rodata"
            flags = uapi.BPF_F_MMAPABLE | (uapi.BPF_F_RDONLY_PROG if readonly else 0)
            btf_id = 0
            if self.btf is not None:
                btf_id = self.btf.find(sec.name, Kind.DATASEC) or 0
            spec = MapSpec(name=sec.name, type=uapi.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=sec.size,
                           max_entries=1, flags=flags, initial=initial, readonly=readonly, section=sec.name,
                           btf_value_type=btf_id)
            self.maps.append(spec)
            self.data_maps[sec.index] = spec

    # ---- code ---------------------------------------------------------------------------------------------

    def _find_functions(self) -> None:
        """Split every code section into functions by its FUNC symbols (the whole section if it has none)."""
        for sec in self.sections:
            if not sec.is_code or sec.size == 0:
                continue
            if sec.size % 8:
                raise LoadError(f"section '{sec.name}': size {sec.size} is not a multiple of 8")
            self.code[sec.index] = decode(sec.data, validate=False)
            syms = sorted((s for s in self.symbols if s.shndx == sec.index and s.type == STT_FUNC),
                          key=lambda s: s.value)
            if not syms:
                syms = [s for s in self.symbols if s.shndx == sec.index and s.type == STT_NOTYPE
                        and s.bind != STB_LOCAL and s.value == 0 and s.name][:1]
                name = syms[0].name if syms else sec.name
                funcs = [_Func(sec.index, 0, sec.size, name, STB_GLOBAL)]
            else:
                funcs = []
                for i, s in enumerate(syms):
                    end = syms[i + 1].value if i + 1 < len(syms) else sec.size
                    size = s.size or end - s.value
                    if s.value % 8 or size % 8 or size <= 0 or s.value + size > sec.size:
                        raise LoadError(f"section '{sec.name}': function '{s.name}' at {s.value}+{s.size} is "
                                        f"not within the section or not 8-byte aligned")
                    if funcs and funcs[-1].start + funcs[-1].size > s.value:
                        raise LoadError(f"section '{sec.name}': function '{s.name}' overlaps '{funcs[-1].name}'")
                    funcs.append(_Func(sec.index, s.value, size, s.name, s.bind))
            self.funcs[sec.index] = funcs
            for f in funcs:
                self.func_at[(sec.index, f.start)] = f

    def _read_relocations(self) -> None:
        for rel_sec in self.sections:
            if rel_sec.type not in (SHT_REL, SHT_RELA):
                continue
            if not 0 < rel_sec.info < len(self.sections):
                raise LoadError(f"relocation section '{rel_sec.name}' targets bad section {rel_sec.info}")
            target = self.sections[rel_sec.info]
            if _ignored_reloc_target(target.name):
                continue
            if rel_sec.type == SHT_RELA:
                raise LoadError(f"section '{rel_sec.name}': RELA relocations are not supported")
            relocs = self._parse_rel(rel_sec)
            if target.is_code:
                self.refs[target.index] = self._code_refs(target, relocs)
            elif target.name == ".maps":
                self._map_slot_refs(target, relocs)
            else:
                raise LoadError(f"section '{rel_sec.name}': relocations in section '{target.name}' are not supported")

    def _parse_rel(self, rel_sec: _Section) -> list[tuple[int, int, _Symbol]]:
        out = []
        count = rel_sec.size // _REL.size
        for offset, info in _REL.iter_unpack(rel_sec.data[:count * _REL.size]):
            sym_idx, rtype = info >> 32, info & 0xFFFFFFFF
            if sym_idx >= len(self.symbols):
                raise LoadError(f"section '{rel_sec.name}': relocation at {offset} names bad symbol #{sym_idx}")
            out.append((offset, rtype, self.symbols[sym_idx]))
        return out

    def _code_refs(self, sec: _Section, relocs: list[tuple[int, int, _Symbol]]) -> dict[int, _Ref]:
        insns = self.code.get(sec.index, [])
        refs: dict[int, _Ref] = {}
        for offset, rtype, sym in relocs:
            if rtype == R_BPF_NONE:
                continue
            where = f"section '{sec.name}' offset {offset}"
            if offset % 8 or offset // 8 >= len(insns):
                raise LoadError(f"{where}: relocation is not at an instruction")
            slot = offset // 8
            if slot in refs:
                raise LoadError(f"{where}: two relocations for one instruction")
            name = self._sym_name(sym)
            if rtype == R_BPF_64_64:
                refs[slot] = self._lddw_ref(sec, slot, insns, sym, name, where)
            elif rtype == R_BPF_64_32:
                refs[slot] = self._call_ref(sec, slot, insns[slot], sym, name, where)
            else:
                rname = RELOC_NAMES.get(rtype, f"relocation type {rtype}")
                raise LoadError(f"{where}: {rname} against '{name}' is not supported in code")
        return refs

    def _lddw_ref(self, sec: _Section, slot: int, insns: list[Insn], sym: _Symbol, name: str, where: str) -> _Ref:
        insn = insns[slot]
        if insn.opcode != OP_LDDW or slot + 1 >= len(insns):
            raise LoadError(f"{where}: R_BPF_64_64 against '{name}' on an instruction that is not lddw")
        target = self._section_of(sym)
        if target is None and name in self.kconfig_offsets and self.kconfig_map is not None:
            if insns[slot + 1].imm:
                raise LoadError(f"{where}: lddw of '{name}' has a nonzero upper half")
            return _Ref("data", map=self.kconfig_map, offset=self.kconfig_offsets[name] + insn.imm, name=name)
        if target is None:
            raise LoadError(f"{where}: reference to undefined symbol '{name}' (extern variables other than "
                            "__kconfig ones are not supported)")
        if target.is_code:
            off = sym.value + insn.imm
            if off % 8 or (target.index, off) not in self.func_at:
                raise LoadError(f"{where}: address of '{name}'+{insn.imm} is not the start of a function")
            return _Ref("func", sec=target.index, offset=off, name=name)
        spec = self.map_at.get((target.index, sym.value))
        if spec is not None and target.index not in self.data_maps:
            return _Ref("map", map=spec, name=name)
        data_map = self.data_maps.get(target.index)
        if data_map is None:
            raise LoadError(f"{where}: '{name}' in section '{target.name}' is neither a map nor global data")
        off = sym.value + insn.imm
        if not 0 <= off < data_map.value_size:
            raise LoadError(f"{where}: '{name}'+{insn.imm} is outside section '{target.name}'")
        if insns[slot + 1].imm:
            raise LoadError(f"{where}: lddw of '{name}' has a nonzero upper half")
        return _Ref("data", map=data_map, offset=off, name=name)

    def _call_ref(self, sec: _Section, slot: int, insn: Insn, sym: _Symbol, name: str, where: str) -> _Ref:
        if insn.opcode != OP_CALL:
            raise LoadError(f"{where}: R_BPF_64_32 against '{name}' on an instruction that is not a call")
        target = self._section_of(sym)
        if target is None:
            if sym.shndx != SHN_UNDEF or not sym.name:
                raise LoadError(f"{where}: call to '{name}' in a special section")
            if sym.name not in self.kfuncs:
                self.kfuncs.append(sym.name)
            return _Ref("kfunc", name=sym.name)
        if not target.is_code:
            raise LoadError(f"{where}: call to '{name}' in non-code section '{target.name}'")
        if insn.src != PSEUDO_CALL:
            raise LoadError(f"{where}: call relocation against '{name}' on a helper call (src {insn.src})")
        off = sym.value + (insn.imm + 1) * 8
        if (target.index, off) not in self.func_at:
            raise LoadError(f"{where}: call to '{name}'+{off - sym.value} which is not the start of a function")
        return _Ref("call", sec=target.index, offset=off, name=name)

    def _map_slot_refs(self, sec: _Section, relocs: list[tuple[int, int, _Symbol]]) -> None:
        """`.rel.maps`: initial slots of map-in-map / prog-array maps, recorded in `map_init`."""
        spans = self._map_spans
        for offset, rtype, sym in relocs:
            name = self._sym_name(sym)
            where = f"section '.maps' offset {offset}"
            if rtype not in (R_BPF_64_64, R_BPF_64_ABS64):
                raise LoadError(f"{where}: {RELOC_NAMES.get(rtype, rtype)} against '{name}' is not supported")
            owner = next((s for s in spans if s[1] <= offset < s[1] + s[2]), None)
            if owner is None or self.btf is None:
                raise LoadError(f"{where}: relocation against '{name}' is outside every map")
            spec, start, _size = owner
            values = self.btf.member(self.btf.resolve_id(_var_type(self.btf, spec.name)), "values")
            if values is None or (offset - start) * 8 < values.bit_offset or (offset - start - values.byte_offset) % 8:
                raise LoadError(f"{where}: relocation against '{name}' is not in map '{spec.name}' values")
            target = self._section_of(sym)
            if target is not None and target.index == sec.index and (sec.index, sym.value) in self.map_at:
                ref_name = self.map_at[(sec.index, sym.value)].name
            elif target is not None and target.is_code and sym.type == STT_FUNC:
                ref_name = sym.name
            else:
                raise LoadError(f"{where}: '{name}' in map '{spec.name}' values is neither a map nor a program")
            self.map_init.setdefault(spec.name, {})[(offset - start - values.byte_offset) // 8] = ref_name

    # ---- CO-RE --------------------------------------------------------------------------------------------

    def _core_target(self) -> Btf | None:
        if self._target_btf is False:
            arg = self.kernel_btf_arg
            if arg is False:
                self._target_btf = None
            elif isinstance(arg, Btf):
                self._target_btf = arg
            elif arg is None:
                self._target_btf = load_vmlinux()
            else:
                self._target_btf = Btf.from_file(arg)
        return self._target_btf  # type: ignore[return-value]

    def _apply_core(self) -> None:
        if self.btf_ext is None or self.btf is None:
            return
        for sec_name, relos in self.btf_ext.core_relos.items():
            sec = self.by_name.get(sec_name)
            if sec is None or sec.index not in self.code:
                raise LoadError(f"CO-RE relocations for section '{sec_name}', which has no code")
            insns = self.code[sec.index]
            for relo in relos:
                self._apply_one_core(sec, insns, relo)

    def _apply_one_core(self, sec: _Section, insns: list[Insn], relo: CoreRelo) -> None:
        slot = relo.insn_off // 8
        where = f"section '{sec.name}' insn {slot}: CO-RE relocation {core_kind_name(relo.kind)} " \
                f"'{relo.access}'"
        if relo.insn_off % 8 or slot >= len(insns):
            raise LoadError(f"{where}: not at an instruction")
        assert self.btf is not None
        try:
            outcome = core_relocate(self.btf, relo, self._core_target())
        except LoadError as exc:
            raise LoadError(f"section '{sec.name}' insn {slot}: {exc}") from None
        insn = insns[slot]
        if outcome.target is None:
            self.poisoned[(sec.index, slot)] = where + ": no match in the target BTF"
            poison = Insn(OP_CALL, 0, 0, 0, CORE_POISON_HELPER)
            insns[slot] = poison
            if insn.opcode == OP_LDDW and slot + 1 < len(insns):
                insns[slot + 1] = poison
            return
        insns[slot] = _patch_core_insn(insn, outcome, where)
        if insn.opcode == OP_LDDW:
            if slot + 1 >= len(insns):
                raise LoadError(f"{where}: lddw is missing its second slot")
            insns[slot + 1] = insns[slot + 1]._replace(imm=to_signed(outcome.target >> 32, 32))

    # ---- linking ------------------------------------------------------------------------------------------

    def _link(self, entry: _Func, prog_type: str, license_: str) -> Program:
        """Build one program: the entry function, then each subprogram it reaches, appended depth first."""
        insns: list[Insn] = []
        base: dict[_Func, int] = {}
        maps: list[MapSpec] = []
        kfuncs: list[str] = []
        aux: dict[int, dict[str, Any]] = {}

        def append(func: _Func) -> None:
            base[func] = len(insns)
            first = func.start // 8
            insns.extend(self.code[func.sec][first:first + func.size // 8])
            for (sec_idx, slot), why in self.poisoned.items():
                if sec_idx == func.sec and first <= slot < first + func.size // 8:
                    aux[base[func] + slot - first] = {"core_poison": why}

        append(entry)
        stack: list[tuple[_Func, int]] = [(entry, 0)]
        budget = 8 * sum(len(c) for c in self.code.values()) + 16  # every slot is visited a bounded number of times
        while stack:
            budget -= 1
            if budget < 0:
                raise LoadError(f"program '{entry.name}': linking does not terminate")
            func, i = stack.pop()
            pushed = False
            n = func.size // 8
            while i < n:
                pos = base[func] + i
                ref = self._ref_for(func, i)
                if ref is None:
                    i += 2 if insns[pos].opcode == OP_LDDW else 1
                    continue
                if ref.kind in ("map", "data", "func") and i + 1 >= n:
                    raise LoadError(f"program '{entry.name}': lddw of '{ref.name}' is cut off at the end of "
                                    f"function '{func.name}'")
                if ref.kind in ("call", "func"):
                    callee = self.func_at[(ref.sec, ref.offset)]
                    if callee not in base:
                        append(callee)
                        stack.append((func, i))
                        stack.append((callee, 0))
                        pushed = True
                        break
                    rel = base[callee] - pos - 1
                    insns[pos] = insns[pos]._replace(imm=rel, src=PSEUDO_CALL if ref.kind == "call" else PSEUDO_FUNC)
                elif ref.kind == "kfunc":
                    if ref.name not in kfuncs:
                        kfuncs.append(ref.name)
                    insns[pos] = insns[pos]._replace(src=PSEUDO_KFUNC_CALL, imm=kfuncs.index(ref.name))
                else:
                    assert ref.map is not None
                    idx = next((k for k, m in enumerate(maps) if m is ref.map), None)
                    if idx is None:
                        maps.append(ref.map)
                        idx = len(maps) - 1
                    if ref.kind == "map":
                        insns[pos] = insns[pos]._replace(src=PSEUDO_MAP_IDX, imm=idx)
                        insns[pos + 1] = insns[pos + 1]._replace(imm=0)
                    else:
                        insns[pos] = insns[pos]._replace(src=PSEUDO_MAP_IDX_VALUE, imm=idx)
                        insns[pos + 1] = insns[pos + 1]._replace(imm=to_signed(ref.offset, 32))
                i += 2 if insns[pos].opcode == OP_LDDW else 1
            if pushed:
                continue
        try:  # after relocation: the loader decodes raw, so this is where bad opcodes and registers are named
            validate_program(insns)
        except DecodeError as exc:
            raise LoadError(f"program '{entry.name}': {exc}") from None
        funcs, lines = self._debug_info(base)
        section = self.sections[entry.sec].name
        return Program(insns=insns, name=entry.name, prog_type=prog_type, section=section,
                       attach_type=attach_type_for_section(section),
                       funcs=funcs, line_info=lines, maps=maps, kfuncs=kfuncs, aux=aux, license=license_,
                       btf=self.btf)

    def _ref_for(self, func: _Func, i: int) -> _Ref | None:
        """The relocation of slot `i` of `func`, or a same-section call that needs no relocation."""
        slot = func.start // 8 + i
        ref = self.refs.get(func.sec, {}).get(slot)
        if ref is not None:
            return ref
        insn = self.code[func.sec][slot]
        if insn.opcode == OP_CALL and insn.src == PSEUDO_CALL:
            off = (slot + insn.imm + 1) * 8
            if (func.sec, off) not in self.func_at:
                raise LoadError(f"section '{self.sections[func.sec].name}' insn {slot}: call to offset {off} "
                                f"which is not the start of a function")
            return _Ref("call", sec=func.sec, offset=off)
        if insn.opcode == OP_LDDW and insn.src == PSEUDO_FUNC:
            raise LoadError(f"section '{self.sections[func.sec].name}' insn {slot}: function address without a "
                            f"relocation")
        return None

    def _debug_info(self, base: dict[_Func, int]) -> tuple[list[FuncInfo], list[LineInfo]]:
        """BTF func and line info of every function placed in the program, at their final slots."""
        funcs: list[FuncInfo] = []
        lines: list[LineInfo] = []
        ext = self.btf_ext
        for func, start in base.items():
            sec_name = self.sections[func.sec].name
            end = func.start + func.size
            infos = [r for r in (ext.func_info.get(sec_name, []) if ext else []) if func.start <= r.insn_off < end]
            if infos and self.btf is not None:
                for r in infos:
                    funcs.append(FuncInfo(start + (r.insn_off - func.start) // 8, self.btf.name_of(r.type_id),
                                          r.type_id))
            else:
                funcs.append(FuncInfo(start, func.name))
            for li in (ext.line_info.get(sec_name, []) if ext else []):
                if func.start <= li.insn_off < end:
                    lines.append(LineInfo(start + (li.insn_off - func.start) // 8, li.file, li.line, li.col, li.text))
        funcs.sort(key=lambda f: f.insn)
        lines.sort(key=lambda li: li.insn)
        return funcs, lines


_SHT_BY_NAME = {
    "SHT_NULL": 0, "SHT_PROGBITS": SHT_PROGBITS, "SHT_SYMTAB": SHT_SYMTAB, "SHT_STRTAB": 3,
    "SHT_RELA": SHT_RELA, "SHT_NOBITS": SHT_NOBITS, "SHT_REL": SHT_REL,
}


def _cstr(table: bytes, off: int, what: str) -> str:
    if off == 0:
        return ""
    if off >= len(table):
        raise LoadError(f"{what} offset {off} past the string table ({len(table)} bytes)")
    end = table.find(b"\0", off)
    if end < 0:
        raise LoadError(f"{what} at offset {off} is not NUL-terminated")
    return table[off:end].decode("utf-8", "replace")


def _data_section_kind(name: str) -> str | None:
    for kind in ("data", "rodata", "bss"):
        if name == "." + kind or name.startswith("." + kind + "."):
            return kind
    return None


def _ignored_reloc_target(name: str) -> bool:
    """Sections whose relocations only matter to debuggers (DWARF, BTF, frame info)."""
    return name.startswith((".debug", ".BTF", ".eh_frame", ".llvm")) or name in (".BTF", ".BTF.ext")


def _var_type(btf: Btf, var_name: str) -> int:
    for t, _info in btf.datasec_vars(".maps"):
        if t.name == var_name:
            return t.type
    raise LoadError(f"section '.maps': no BTF variable '{var_name}'")


def _map_int(btf: Btf, map_name: str, member_name: str, type_id: int) -> int:
    """`__uint(name, N)` is `int (*name)[N]`: the number is the array's element count."""
    t = btf.resolve(type_id)
    if t.kind == Kind.PTR:
        arr = btf.type(t.type)
        if arr.kind == Kind.ARRAY:
            return arr.nelems
    if t.is_enum and len(t.enum_values) == 1:  # __ulong(name, N)
        return t.enum_values[0].value & ((1 << 64) - 1)
    raise LoadError(f"map '{map_name}': attribute '{member_name}' is not an __uint() (got {t.kind_name})")


def _map_pointee(btf: Btf, map_name: str, member_name: str, type_id: int) -> tuple[int, int]:
    """`__type(key, T)` is `T *key`: (size of T, id of T)."""
    t = btf.type(type_id)
    if t.kind != Kind.PTR:
        raise LoadError(f"map '{map_name}': '{member_name}' is not a pointer (got {t.kind_name})")
    return btf.size_of(t.type), t.type


def _parse_btf_map(btf: Btf, name: str, type_id: int, *, inner: bool) -> MapSpec:
    """A `.maps` variable's struct of `__uint`/`__type`/`__array` members, as libbpf's parse_btf_map_def."""
    t = btf.resolve(type_id)
    if t.kind != Kind.STRUCT:
        raise LoadError(f"map '{name}': definition is a {t.kind_name}, not a struct")
    spec = MapSpec(name=name, type=0, key_size=0, value_size=0, max_entries=0, section=".maps")
    for i, m in enumerate(t.members):
        if m.name in ("type", "max_entries", "map_flags", "pinning", "key_size", "value_size",
                      "numa_node", "map_extra"):
            value = _map_int(btf, name, m.name, m.type)
            if m.name == "type":
                spec.type = value
            elif m.name == "max_entries":
                spec.max_entries = value
            elif m.name == "map_flags":
                spec.flags = value
            elif m.name == "pinning":
                if inner:
                    raise LoadError(f"map '{name}': an inner map definition cannot be pinned")
                spec.pinning = value  # libbpf knows 0 and 1; other loaders (iproute2, cilium) use more. No effect here.
            elif m.name in ("key_size", "value_size"):
                _set_size(spec, name, m.name, value)
        elif m.name in ("key", "value"):
            size, pointee = _map_pointee(btf, name, m.name, m.type)
            _set_size(spec, name, m.name + "_size", size)
            if m.name == "key":
                spec.btf_key_type = pointee
            else:
                spec.btf_value_type = pointee
        elif m.name == "values":
            _parse_map_values(btf, spec, m.type, inner=inner, last=i == len(t.members) - 1)
    if spec.type == 0:
        raise LoadError(f"map '{name}': map type isn't specified")
    if spec.btf_value_type:
        spec.spin_lock_off = _spin_lock_offset(btf, name, spec)
    return spec


SPIN_LOCK_MAP_TYPES = frozenset({uapi.BPF_MAP_TYPE_HASH, uapi.BPF_MAP_TYPE_ARRAY})


def _spin_lock_offset(btf: Btf, name: str, spec: MapSpec) -> int | None:
    """The offset of the value's `struct bpf_spin_lock`, refused where the kernel's map_check_btf refuses it."""
    offsets = btf.struct_offsets(spec.btf_value_type, "bpf_spin_lock")
    if not offsets:
        return None
    if len(offsets) > 1:
        raise LoadError(f"map '{name}': a value may hold only one struct bpf_spin_lock, not {len(offsets)}")
    if spec.type not in SPIN_LOCK_MAP_TYPES:
        raise LoadError(f"map '{name}': struct bpf_spin_lock is supported in hash and array maps only")
    return offsets[0]


def _set_size(spec: MapSpec, name: str, attr: str, value: int) -> None:
    current = getattr(spec, attr)
    if current and current != value:
        raise LoadError(f"map '{name}': conflicting {attr.replace('_', ' ')} {current} != {value}")
    setattr(spec, attr, value)


def _parse_map_values(btf: Btf, spec: MapSpec, type_id: int, *, inner: bool, last: bool) -> None:
    """`__array(values, struct inner)`: map-in-map inner template, or a prog-array's program type."""
    name = spec.name
    if inner:
        raise LoadError(f"map '{name}': multi-level inner maps are not supported")
    if not last:
        raise LoadError(f"map '{name}': 'values' member should be last")
    is_prog_array = spec.type == uapi.BPF_MAP_TYPE_PROG_ARRAY
    if not uapi.is_map_in_map(spec.type) and not is_prog_array:
        raise LoadError(f"map '{name}': 'values' needs a map-in-map or prog-array map type")
    _set_size(spec, name, "value_size", 4)
    arr = btf.type(type_id)
    if arr.kind != Kind.ARRAY or arr.nelems:
        raise LoadError(f"map '{name}': 'values' is not a zero-sized array")
    ptr = btf.resolve(arr.elem_type)
    if ptr.kind != Kind.PTR:
        raise LoadError(f"map '{name}': 'values' element is a {ptr.kind_name}, not a pointer")
    target = btf.resolve(ptr.type)
    if is_prog_array:
        if target.kind != Kind.FUNC_PROTO:
            raise LoadError(f"map '{name}': prog-array 'values' element is not a function pointer")
        return
    if target.kind != Kind.STRUCT:
        raise LoadError(f"map '{name}': inner map definition is a {target.kind_name}, not a struct")
    spec.inner = _parse_btf_map(btf, f"{name}.inner", target.id, inner=True)
    spec.inner.section = ".maps"


def _patch_core_insn(insn: Insn, outcome: CoreOutcome, where: str) -> Insn:
    """Put a CO-RE value where the instruction keeps it: ALU imm, memory offset or lddw imm (libbpf's rules)."""
    value = outcome.target
    assert value is not None
    cls = insn.cls
    if cls in (ALU, ALU64):
        if insn.opcode & X:
            raise LoadError(f"{where}: ALU instruction with a register source cannot take a relocated value")
        if not -(1 << 31) <= value < (1 << 32):
            raise LoadError(f"{where}: value {value} does not fit an ALU immediate")
        return insn._replace(imm=to_signed(value, 32))
    if cls in (LDX, ST, STX):
        if not -(1 << 15) <= value < (1 << 15):
            raise LoadError(f"{where}: offset {value} does not fit a memory instruction")
        patched = insn._replace(off=value)
        if outcome.local_size and outcome.target_size and outcome.local_size != outcome.target_size:
            size_bits = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}.get(outcome.target_size)
            insn_size = {0x10: 1, 0x08: 2, 0x00: 4, 0x18: 8}[insn.opcode & 0x18]
            if size_bits is None or insn_size != outcome.local_size:
                raise LoadError(f"{where}: field size changes from {outcome.local_size} to {outcome.target_size}")
            patched = patched._replace(opcode=(insn.opcode & ~0x18) | size_bits)
        return patched
    if insn.opcode == OP_LDDW:
        return insn._replace(imm=to_signed(value & 0xFFFFFFFF, 32))
    raise LoadError(f"{where}: unexpected instruction opcode {insn.opcode:#04x}")
