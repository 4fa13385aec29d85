"""BTF (`.BTF`, raw `/sys/kernel/btf/*`) and BTF.ext (`.BTF.ext`) parsing.

The format is the kernel's `include/uapi/linux/btf.h`: a header, a type section of variable-length records
(type ids count from 1 in order, 0 is void), an optional kind-layout section and a string section. Every
offset, id and length read from the data is checked, and every walk is bounded, so that malformed input is
refused with a one-line `LoadError` rather than a traceback or a hang.

Type records are located in one pass and decoded on first use, so that the 100k+ types of a vmlinux BTF
cost little until a later stage asks for a particular struct.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Iterator

from .errors import LoadError

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1
_HDR_MIN = 24  # magic .. str_len
_HDR_LAYOUT = 32  # with layout_off/layout_len
MAX_RESOLVE_DEPTH = 64  # longer modifier/array chains than this are treated as cycles


class Kind(IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Names as `bpftool btf dump ... format raw` prints them.
KIND_NAMES = {k: k.name for k in Kind}

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
LINKAGE_STATIC, LINKAGE_GLOBAL, LINKAGE_EXTERN = 0, 1, 2
LINKAGE_NAMES = {0: "static", 1: "global", 2: "extern"}

_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.DATASEC, Kind.FLOAT})

# Bytes after the 12-byte btf_type header: (fixed part, per-vlen element).
_EXTRA = {
    Kind.UNKN: (0, 0), Kind.INT: (4, 0), Kind.PTR: (0, 0), Kind.ARRAY: (12, 0), Kind.STRUCT: (0, 12),
    Kind.UNION: (0, 12), Kind.ENUM: (0, 8), Kind.FWD: (0, 0), Kind.TYPEDEF: (0, 0), Kind.VOLATILE: (0, 0),
    Kind.CONST: (0, 0), Kind.RESTRICT: (0, 0), Kind.FUNC: (0, 0), Kind.FUNC_PROTO: (0, 8), Kind.VAR: (4, 0),
    Kind.DATASEC: (0, 12), Kind.FLOAT: (0, 0), Kind.DECL_TAG: (4, 0), Kind.TYPE_TAG: (0, 0),
    Kind.ENUM64: (0, 12),
}

# Suffixes of kfunc parameter names that change how the verifier treats the argument (kernel kfunc docs).
KFUNC_ARG_SUFFIXES = (
    "__szk", "__sz", "__k", "__opt", "__uninit", "__nullable", "__ign", "__str", "__map", "__alloc",
    "__refcounted_kptr", "__irq_flag",
)

_U32 = struct.Struct("<I")
_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


@dataclass(frozen=True, slots=True)
class Member:
    """A struct/union member; `bit_offset` from the start of the enclosing struct, `bitfield_size` 0 if none."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0

    @property
    def byte_offset(self) -> int:
        return self.bit_offset // 8


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: int


@dataclass(frozen=True, slots=True)
class EnumValue:
    name: str
    value: int


@dataclass(frozen=True, slots=True)
class VarSecinfo:
    type: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class BtfType:
    """One decoded type record. Fields that a kind does not use keep their defaults.

    `size` is the byte size of sized kinds; `type` the referenced id of PTR, TYPEDEF, modifiers, FUNC, VAR,
    DECL_TAG, TYPE_TAG and the return type of FUNC_PROTO; `linkage` is the FUNC linkage (its vlen) or VAR
    linkage.
    """

    id: int
    kind: Kind
    name: str = ""
    size: int = 0
    type: int = 0
    kind_flag: bool = False
    vlen: int = 0
    encoding: int = 0
    int_offset: int = 0
    bits: int = 0
    elem_type: int = 0
    index_type: int = 0
    nelems: int = 0
    members: tuple[Member, ...] = ()
    enum_values: tuple[EnumValue, ...] = ()
    params: tuple[Param, ...] = ()
    linkage: int = 0
    secinfos: tuple[VarSecinfo, ...] = ()
    component_idx: int = -1

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(int(self.kind)))

    @property
    def is_composite(self) -> bool:
        return self.kind in (Kind.STRUCT, Kind.UNION)

    @property
    def is_enum(self) -> bool:
        return self.kind in (Kind.ENUM, Kind.ENUM64)

    @property
    def is_signed(self) -> bool:
        """Signedness of an INT, or of an ENUM/ENUM64 (kind_flag set means signed values)."""
        if self.kind == Kind.INT:
            return bool(self.encoding & INT_SIGNED)
        if self.is_enum:
            return self.kind_flag
        return False


@dataclass(frozen=True, slots=True)
class ExtFuncInfo:
    """A `.BTF.ext` func info record; `insn_off` as stored (bytes from the section start in an ELF object)."""

    insn_off: int
    type_id: int


@dataclass(frozen=True, slots=True)
class ExtLineInfo:
    insn_off: int
    file: str
    text: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class CoreRelo:
    """A CO-RE relocation: patch the insn at `insn_off` (bytes) per `kind` for type `type_id` and `access`."""

    insn_off: int
    type_id: int
    access: str
    kind: int


class CoreKind(IntEnum):
    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


def core_kind_name(kind: int) -> str:
    try:
        return CoreKind(kind).name.lower()
    except ValueError:
        return f"kind {kind}"


def kfunc_arg_suffix(param_name: str) -> str | None:
    """The verifier-relevant suffix of a kfunc parameter name (`__sz`, `__k`, `__opt` ...), or None."""
    for suffix in KFUNC_ARG_SUFFIXES:
        if param_name.endswith(suffix) and len(param_name) > len(suffix):
            return suffix
    return None


def _u32_at(data: bytes, off: int) -> int:
    return _U32.unpack_from(data, off)[0]


def _s32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


class Btf:
    """Parsed BTF: types by id, names, and the lookups later stages need (resolve, sizes, members, params).

    A split BTF (kernel module) passes its `base`; its ids continue after the base's and its string offsets
    past the base's string section are its own.
    """

    def __init__(self, data: bytes | bytearray | memoryview, *, base: "Btf | None" = None, lazy: bool = False,
                 what: str = "BTF"):
        self._data = bytes(data)
        self.base = base
        self._what = what
        self.start_id = base.max_id + 1 if base else 1
        self._cache: dict[int, BtfType] = {}
        self._names: dict[str, list[int]] | None = None
        self._essential: dict[str, list[int]] | None = None
        self._tags: dict[int, list[tuple[int, str]]] | None = None
        self._str_cache: dict[int, str] = {}
        self._parse_header()
        self._index_types()
        if not lazy:
            self.validate()

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, *, base: "Btf | None" = None, lazy: bool = False) -> "Btf":
        return cls(data, base=base, lazy=lazy)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, base: "Btf | None" = None, lazy: bool = True) -> "Btf":
        """Load a raw BTF file such as /sys/kernel/btf/vmlinux (lazy: types decode on first use)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise LoadError(f"cannot read BTF file {path}: {exc.strerror or exc}") from None
        return cls(data, base=base, lazy=lazy, what=f"BTF {path}")

    def _fail(self, message: str) -> LoadError:
        return LoadError(f"{self._what}: {message}")

    def _parse_header(self) -> None:
        data = self._data
        if len(data) < _HDR_MIN:
            raise self._fail(f"truncated header ({len(data)} bytes)")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data, 0)
        if magic == 0x9FEB:
            raise self._fail("big-endian BTF is not supported")
        if magic != BTF_MAGIC:
            raise self._fail(f"bad magic {magic:#06x} (expected {BTF_MAGIC:#06x})")
        if version != BTF_VERSION:
            raise self._fail(f"unsupported version {version}")
        if hdr_len < _HDR_MIN or hdr_len > len(data):
            raise self._fail(f"bad header length {hdr_len} (data is {len(data)} bytes)")
        layout_off = layout_len = 0
        if hdr_len >= _HDR_LAYOUT:
            layout_off, layout_len = struct.unpack_from("<II", data, 24)
        body = len(data) - hdr_len
        if type_off % 4:
            raise self._fail("type section is not 4-byte aligned")
        if type_off + type_len > str_off or str_off + str_len > body:
            raise self._fail(
                f"sections out of bounds (types {type_off}+{type_len}, strings {str_off}+{str_len}, "
                f"data {body} bytes)"
            )
        self._layout: list[tuple[int, int]] = []
        if layout_len:
            if layout_off % 4 or layout_len % 4 or layout_off < type_off + type_len or \
                    layout_off + layout_len > str_off:
                raise self._fail(f"bad kind layout section {layout_off}+{layout_len}")
            base = hdr_len + layout_off
            self._layout = [(data[base + i], data[base + i + 1]) for i in range(0, layout_len, 4)]
        self._type_start = hdr_len + type_off
        self._type_end = self._type_start + type_len
        self._str_start = hdr_len + str_off
        self._str_len = str_len
        if self.base is None or str_len:
            if str_len == 0 or data[self._str_start + str_len - 1] != 0:
                raise self._fail("string section is empty or not NUL-terminated")
        if self.base is None and data[self._str_start] != 0:
            raise self._fail("string section does not start with an empty string (split BTF without base?)")
        self._str_base = self.base._str_total if self.base else 0
        self._str_total = self._str_base + str_len

    def _index_types(self) -> None:
        """Find where every type record starts: one bounded pass that validates record lengths."""
        data, pos, end = self._data, self._type_start, self._type_end
        offs: list[int] = []
        unpack = _TYPE.unpack_from
        extra = _EXTRA
        str_total = self._str_total
        max_types = (end - pos) // 12
        while pos < end:
            if len(offs) >= max_types or pos + 12 > end:
                raise self._fail(f"truncated type record at offset {pos - self._type_start}")
            name_off, info, _ = unpack(data, pos)
            if name_off >= str_total:
                raise self._fail(
                    f"type [{self.start_id + len(offs)}]: name offset {name_off} past the string section"
                )
            kind = (info >> 24) & 0x7F
            vlen = info & 0xFFFFFF
            fixed_elem = extra.get(kind)
            if fixed_elem is None:
                if kind >= len(self._layout):
                    raise self._fail(f"type [{self.start_id + len(offs)}]: unknown kind {kind}")
                fixed_elem = self._layout[kind]
            size = 12 + fixed_elem[0] + vlen * fixed_elem[1]
            if pos + size > end:
                raise self._fail(f"type [{self.start_id + len(offs)}] ({vlen} entries) runs past the type section")
            offs.append(pos)
            pos += size
        self._offs = offs
        self.max_id = self.start_id + len(offs) - 1

    # ---- strings ------------------------------------------------------------------------------------------

    def string(self, off: int) -> str:
        """The NUL-terminated string at `off` of the (base + own) string section."""
        cached = self._str_cache.get(off)
        if cached is not None:
            return cached
        if off < self._str_base:
            return self.base.string(off)  # type: ignore[union-attr]
        if not 0 <= off < self._str_total:
            raise self._fail(f"string offset {off} past the string section ({self._str_total} bytes)")
        start = self._str_start + off - self._str_base
        stop = self._data.find(b"\0", start, self._str_start + self._str_len)
        if stop < 0:
            raise self._fail(f"string at offset {off} is not NUL-terminated")
        text = self._data[start:stop].decode("utf-8", "replace")
        self._str_cache[off] = text
        return text

    # ---- types --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of types this BTF itself defines (void excluded); bpftool's highest id for a base BTF."""
        return len(self._offs)

    @property
    def type_count(self) -> int:
        return len(self._offs)

    def ids(self) -> range:
        return range(self.start_id, self.max_id + 1)

    def __iter__(self) -> Iterator[BtfType]:
        for type_id in self.ids():
            yield self.type(type_id)

    def __getitem__(self, type_id: int) -> BtfType:
        return self.type(type_id)

    def type(self, type_id: int) -> BtfType:
        """The type with id `type_id` (0 is void); LoadError if out of range."""
        if type_id == 0:
            return _VOID
        cached = self._cache.get(type_id)
        if cached is not None:
            return cached
        if type_id < self.start_id and self.base is not None and type_id > 0:
            return self.base.type(type_id)
        if not isinstance(type_id, int) or not self.start_id <= type_id <= self.max_id:
            raise self._fail(f"type id {type_id} out of range (max {self.max_id})")
        t = self._decode(type_id, self._offs[type_id - self.start_id])
        self._cache[type_id] = t
        return t

    def kind_of(self, type_id: int) -> Kind:
        """The kind of a type without decoding it fully (cheap for name scans)."""
        if type_id == 0:
            return Kind.UNKN
        if type_id < self.start_id and self.base is not None:
            return self.base.kind_of(type_id)
        self._check_id(type_id, type_id)
        info = _u32_at(self._data, self._offs[type_id - self.start_id] + 4)
        kind = (info >> 24) & 0x7F
        return Kind(kind) if kind in _EXTRA else Kind.UNKN

    def name_of(self, type_id: int) -> str:
        if type_id == 0:
            return ""
        if type_id < self.start_id and self.base is not None:
            return self.base.name_of(type_id)
        self._check_id(type_id, type_id)
        return self.string(_u32_at(self._data, self._offs[type_id - self.start_id]))

    def _check_id(self, ref: int, owner: int) -> int:
        if not 0 <= ref <= self.max_id:
            raise self._fail(f"type [{owner}] refers to type id {ref} out of range (max {self.max_id})")
        return ref

    def _decode(self, type_id: int, pos: int) -> BtfType:
        data = self._data
        name_off, info, size_type = _TYPE.unpack_from(data, pos)
        kind_no = (info >> 24) & 0x7F
        vlen = info & 0xFFFFFF
        kflag = bool(info >> 31)
        name = self.string(name_off)
        p = pos + 12
        ref = self._check_id
        if kind_no not in _EXTRA:
            return BtfType(type_id, Kind.UNKN, name, vlen=vlen, kind_flag=kflag)
        kind = Kind(kind_no)
        common = dict(id=type_id, kind=kind, name=name, kind_flag=kflag, vlen=vlen)
        if kind in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG):
            return BtfType(type=ref(size_type, type_id), **common)
        if kind == Kind.INT:
            v = _u32_at(data, p)
            return BtfType(size=size_type, encoding=(v >> 24) & 0x0F, int_offset=(v >> 16) & 0xFF,
                           bits=v & 0xFF, **common)
        if kind == Kind.ARRAY:
            elem, index, nelems = struct.unpack_from("<III", data, p)
            return BtfType(elem_type=ref(elem, type_id), index_type=ref(index, type_id), nelems=nelems, **common)
        if kind in (Kind.STRUCT, Kind.UNION):
            members = []
            for m_name, m_type, m_off in struct.iter_unpack("<III", data[p:p + 12 * vlen]):
                bitfield = (m_off >> 24) if kflag else 0
                bit_off = (m_off & 0xFFFFFF) if kflag else m_off
                members.append(Member(self.string(m_name), ref(m_type, type_id), bit_off, bitfield))
            return BtfType(size=size_type, members=tuple(members), **common)
        if kind == Kind.ENUM:
            values = tuple(
                EnumValue(self.string(n), _s32(v) if kflag else v)
                for n, v in struct.iter_unpack("<II", data[p:p + 8 * vlen])
            )
            return BtfType(size=size_type, enum_values=values, **common)
        if kind == Kind.ENUM64:
            values = []
            for n, lo, hi in struct.iter_unpack("<III", data[p:p + 12 * vlen]):
                v = lo | (hi << 32)
                if kflag and v >> 63:
                    v -= 1 << 64
                values.append(EnumValue(self.string(n), v))
            return BtfType(size=size_type, enum_values=tuple(values), **common)
        if kind == Kind.FWD:
            return BtfType(**common)
        if kind == Kind.FUNC:
            func = BtfType(type=ref(size_type, type_id), linkage=vlen, **common)
            if self.kind_of(size_type) != Kind.FUNC_PROTO:
                raise self._fail(f"FUNC [{type_id}] '{name}' does not refer to a FUNC_PROTO")
            return func
        if kind == Kind.FUNC_PROTO:
            params = tuple(
                Param(self.string(n), ref(t, type_id)) for n, t in struct.iter_unpack("<II", data[p:p + 8 * vlen])
            )
            return BtfType(type=ref(size_type, type_id), params=params, **common)
        if kind == Kind.VAR:
            return BtfType(type=ref(size_type, type_id), linkage=_u32_at(data, p), **common)
        if kind == Kind.DATASEC:
            infos = tuple(
                VarSecinfo(ref(t, type_id), o, s) for t, o, s in struct.iter_unpack("<III", data[p:p + 12 * vlen])
            )
            return BtfType(size=size_type, secinfos=infos, **common)
        if kind == Kind.FLOAT:
            return BtfType(size=size_type, **common)
        if kind == Kind.DECL_TAG:
            return BtfType(type=ref(size_type, type_id), component_idx=_s32(_u32_at(data, p)), **common)
        return BtfType(**common)  # UNKN

    def validate(self) -> None:
        """Decode every type, so that bad ids and string offsets surface now rather than later."""
        for type_id in self.ids():
            self.type(type_id)

    # ---- lookups ------------------------------------------------------------------------------------------

    def resolve_id(self, type_id: int) -> int:
        """Skip typedefs and modifiers (const, volatile, restrict, type tags); LoadError on a cycle."""
        seen = 0
        t = self.type(type_id)
        while t.kind in _MODIFIERS:
            seen += 1
            if seen > MAX_RESOLVE_DEPTH:
                raise self._fail(f"type [{type_id}]: cyclic or too deep typedef/modifier chain")
            type_id = t.type
            t = self.type(type_id)
        return type_id

    def resolve(self, type_id: int) -> BtfType:
        return self.type(self.resolve_id(type_id))

    def size_of(self, type_id: int) -> int:
        """Byte size of a type as C's sizeof sees it (arrays multiplied out, pointers 8); LoadError if none."""
        mult = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.resolve(type_id)
            if t.kind in _SIZED:
                size = t.size
                break
            if t.kind == Kind.PTR:
                size = 8
                break
            if t.kind == Kind.ARRAY:
                mult *= t.nelems
                type_id = t.elem_type
                continue
            if t.kind == Kind.VAR:
                type_id = t.type
                continue
            raise self._fail(f"type [{t.id}] ({t.kind_name} '{t.name}') has no size")
        else:
            raise self._fail(f"type [{type_id}]: cyclic or too deep array chain")
        total = mult * size
        if total > 0xFFFFFFFF:
            raise self._fail(f"type [{type_id}]: size {total} is too large")
        return total

    def find_all(self, name: str, kind: Kind | None = None) -> list[int]:
        """Ids of every type called `name` (optionally of one kind), including base types."""
        if self._names is None:
            names: dict[str, list[int]] = {}
            for type_id in self.ids():
                names.setdefault(self.name_of(type_id), []).append(type_id)
            self._names = names
        found = list(self.base.find_all(name, kind)) if self.base else []
        for type_id in self._names.get(name, ()):
            if kind is None or self.kind_of(type_id) == kind:
                found.append(type_id)
        return found

    def find_essential(self, name: str) -> list[int]:
        """Ids of every type whose name without a `___flavour` suffix is `name` (CO-RE candidates)."""
        if self._essential is None:
            self.find_all("")  # builds the name index
            assert self._names is not None
            index: dict[str, list[int]] = {}
            for full, ids in self._names.items():
                if full:
                    index.setdefault(essential_name(full), []).extend(ids)
            self._essential = index
        found = list(self.base.find_essential(name)) if self.base else []
        return found + self._essential.get(name, [])

    def find(self, name: str, kind: Kind | None = None) -> int | None:
        """The first type called `name` (optionally of `kind`), or None."""
        found = self.find_all(name, kind)
        return found[0] if found else None

    def find_struct(self, name: str) -> BtfType | None:
        type_id = self.find(name, Kind.STRUCT)
        return None if type_id is None else self.type(type_id)

    def members(self, type_id: int) -> tuple[Member, ...]:
        t = self.resolve(type_id)
        if not t.is_composite:
            raise self._fail(f"type [{t.id}] ({t.kind_name} '{t.name}') is not a struct or union")
        return t.members

    def member(self, type_id: int, name: str) -> Member | None:
        """Member `name` of a struct/union, looking through anonymous members; bit offset from the outer start."""
        return self._member(type_id, name, {})

    def _member(self, type_id: int, name: str, memo: dict[int, Member | None]) -> Member | None:
        """Memoised per outer lookup, so shared or cyclic anonymous members cost linear time, not exponential."""
        if type_id in memo:
            found = memo[type_id]
            if found is _IN_PROGRESS:
                raise self._fail(f"type [{type_id}]: cyclic anonymous member nesting")
            return found
        if len(memo) > MAX_RESOLVE_DEPTH * 64:
            raise self._fail(f"type [{type_id}]: too deep anonymous member nesting")
        memo[type_id] = _IN_PROGRESS
        result = None
        for m in self.members(type_id):
            if m.name == name:
                result = m
                break
            if not m.name and self.resolve(m.type).is_composite:
                inner = self._member(m.type, name, memo)
                if inner is not None:
                    result = Member(inner.name, inner.type, m.bit_offset + inner.bit_offset, inner.bitfield_size)
                    break
        memo[type_id] = result
        return result

    def field(self, type_id: int, path: str) -> Member:
        """Member at a dotted path (`"a.b.c"`) through nested structs; its bit offset from the outer start."""
        bits = 0
        found: Member | None = None
        for part in path.split("."):
            found = self.member(type_id, part)
            if found is None:
                raise self._fail(f"type [{type_id}] '{self.name_of(type_id)}' has no member '{part}'")
            bits += found.bit_offset
            type_id = found.type
        assert found is not None
        return Member(found.name, found.type, bits, found.bitfield_size)

    def struct_offsets(self, type_id: int, struct_name: str, most: int = 2) -> list[int]:
        """Byte offsets of members of type `struct <struct_name>` in a struct, nested structs and unions
        included (not arrays or pointers), at most `most` of them: where a map value keeps its
        `struct bpf_spin_lock`, for example. Memoised per type, so malformed BTF that nests one struct many
        times, or in itself, costs linear time."""
        memo: dict[int, list[int]] = {}

        def walk(tid: int, depth: int) -> list[int]:
            t = self.resolve(tid)
            if t.id in memo:
                return memo[t.id]
            if depth > MAX_RESOLVE_DEPTH:
                raise self._fail(f"type [{type_id}]: too deep struct nesting")
            memo[t.id] = []  # a struct inside itself (only malformed BTF has one) adds nothing
            found: list[int] = []
            if t.kind == Kind.STRUCT and t.name == struct_name:
                found = [0]
            elif t.is_composite:
                for m in t.members:
                    found.extend(m.bit_offset // 8 + off for off in walk(m.type, depth + 1))
                    if len(found) >= most:
                        break
            memo[t.id] = sorted(found)[:most]
            return memo[t.id]

        return walk(type_id, 0)

    def func_proto(self, type_id: int) -> BtfType:
        """The FUNC_PROTO of a FUNC id, a FUNC_PROTO id, or a pointer/typedef to one."""
        t = self.resolve(type_id)
        if t.kind == Kind.PTR:
            t = self.resolve(t.type)
        if t.kind == Kind.FUNC:
            t = self.type(t.type)
        if t.kind != Kind.FUNC_PROTO:
            raise self._fail(f"type [{type_id}] ({t.kind_name}) is not a function")
        return t

    def params(self, type_id: int) -> tuple[Param, ...]:
        """Parameters of a function (FUNC or FUNC_PROTO id); a trailing `...` has name '' and type 0."""
        return self.func_proto(type_id).params

    def param_names(self, type_id: int) -> list[str]:
        """Parameter names of a function, suffixes like `__sz`, `__k`, `__opt`, `__uninit` kept as written."""
        return [p.name for p in self.params(type_id)]

    def find_func(self, name: str) -> BtfType | None:
        type_id = self.find(name, Kind.FUNC)
        return None if type_id is None else self.type(type_id)

    def func_linkage(self, type_id: int) -> str:
        t = self.type(type_id)
        if t.kind != Kind.FUNC:
            raise self._fail(f"type [{type_id}] ({t.kind_name}) is not a FUNC")
        return LINKAGE_NAMES.get(t.linkage, str(t.linkage))

    def datasec(self, name: str) -> BtfType | None:
        type_id = self.find(name, Kind.DATASEC)
        return None if type_id is None else self.type(type_id)

    def datasec_vars(self, name: str) -> list[tuple[BtfType, VarSecinfo]]:
        """(VAR or FUNC type, secinfo) pairs of a DATASEC such as `.maps`, `.data` or `.ksyms`."""
        sec = self.datasec(name)
        if sec is None:
            return []
        return [(self.type(info.type), info) for info in sec.secinfos]

    def decl_tags(self, type_id: int, component_idx: int = -1) -> list[str]:
        """DECL_TAG strings attached to a type (component -1) or to one of its members/params."""
        if self._tags is None:
            tags: dict[int, list[tuple[int, str]]] = {}
            for tid in self.ids():
                if self.kind_of(tid) == Kind.DECL_TAG:
                    t = self.type(tid)
                    tags.setdefault(t.type, []).append((t.component_idx, t.name))
            self._tags = tags
        return [name for comp, name in self._tags.get(type_id, ()) if comp == component_idx]

    def type_name(self, type_id: int) -> str:
        """A short C-like name for messages: `struct foo`, `int`, `u32 *`, `void`."""
        parts = []
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.type(type_id)
            if t.kind == Kind.PTR:
                parts.append("*")
                type_id = t.type
                continue
            if t.kind in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
                type_id = t.type
                continue
            prefix = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ", Kind.ENUM64: "enum "}
            if t.kind == Kind.FWD:
                base = ("union " if t.kind_flag else "struct ") + t.name
            elif t.id == 0:
                base = "void"
            else:
                base = prefix.get(t.kind, "") + (t.name or f"({t.kind_name.lower()})")
            return base + (" " + "".join(parts) if parts else "")
        return "(cyclic type)"


_VOID = BtfType(0, Kind.UNKN, "")
_IN_PROGRESS = Member("", 0, -1)  # marks a struct whose members are being searched (cycle detection)


# ---- BTF.ext ------------------------------------------------------------------------------------------------

_EXT_HDR = struct.Struct("<HBBIIIII")


class BtfExt:
    """`.BTF.ext`: func info, line info and CO-RE relocations, each grouped by ELF section name."""

    def __init__(self, data: bytes | bytearray | memoryview, btf: Btf):
        self.func_info: dict[str, list[ExtFuncInfo]] = {}
        self.line_info: dict[str, list[ExtLineInfo]] = {}
        self.core_relos: dict[str, list[CoreRelo]] = {}
        data = bytes(data)
        if len(data) < 24:
            raise LoadError(f".BTF.ext: truncated header ({len(data)} bytes)")
        magic, version, _flags, hdr_len, fi_off, fi_len, li_off, li_len = _EXT_HDR.unpack_from(data, 0)
        if magic == 0x9FEB:
            raise LoadError(".BTF.ext: big-endian BTF is not supported")
        if magic != BTF_MAGIC:
            raise LoadError(f".BTF.ext: bad magic {magic:#06x}")
        if version != BTF_VERSION:
            raise LoadError(f".BTF.ext: unsupported version {version}")
        if hdr_len < 24 or hdr_len > len(data):
            raise LoadError(f".BTF.ext: bad header length {hdr_len}")
        body = data[hdr_len:]
        cr_off = cr_len = 0
        if hdr_len >= 32:
            cr_off, cr_len = struct.unpack_from("<II", data, 24)
        for sec_map, off, length, min_rec, what in (
            (self.func_info, fi_off, fi_len, 8, "func info"),
            (self.line_info, li_off, li_len, 16, "line info"),
            (self.core_relos, cr_off, cr_len, 16, "CO-RE relocation"),
        ):
            if length:
                for sec, rec in _ext_records(body, off, length, min_rec, what, btf):
                    sec_map.setdefault(sec, []).append(self._record(what, rec, btf))

    @staticmethod
    def _record(what: str, rec: bytes, btf: Btf) -> ExtFuncInfo | ExtLineInfo | CoreRelo:
        if what == "func info":
            insn_off, type_id = struct.unpack_from("<II", rec)
            if btf.kind_of(btf._check_id(type_id, 0)) != Kind.FUNC:
                raise LoadError(f".BTF.ext: func info at {insn_off} refers to type [{type_id}] which is not a FUNC")
            return ExtFuncInfo(insn_off, type_id)
        if what == "line info":
            insn_off, file_off, line_off, line_col = struct.unpack_from("<IIII", rec)
            return ExtLineInfo(insn_off, btf.string(file_off), btf.string(line_off), line_col >> 10, line_col & 0x3FF)
        insn_off, type_id, access_off, kind = struct.unpack_from("<IIII", rec)
        btf._check_id(type_id, 0)
        return CoreRelo(insn_off, type_id, btf.string(access_off), kind)


def _ext_records(body: bytes, off: int, length: int, min_rec: int, what: str,
                 btf: Btf) -> Iterator[tuple[str, bytes]]:
    """Walk one `.BTF.ext` info block: a record size, then (section name, count, records) groups."""
    if off % 4 or off + length > len(body) or length < 4:
        raise LoadError(f".BTF.ext: {what} block {off}+{length} out of bounds ({len(body)} bytes)")
    end = off + length
    rec_size = _u32_at(body, off)
    if rec_size < min_rec or rec_size % 4:
        raise LoadError(f".BTF.ext: bad {what} record size {rec_size}")
    pos = off + 4
    while pos < end:
        if pos + 8 > end:
            raise LoadError(f".BTF.ext: truncated {what} section header")
        name_off, count = struct.unpack_from("<II", body, pos)
        sec = btf.string(name_off)
        pos += 8
        if count == 0 or pos + count * rec_size > end:
            raise LoadError(f".BTF.ext: {what} for section '{sec}' has a bad record count {count}")
        for i in range(count):
            yield sec, body[pos + i * rec_size:pos + (i + 1) * rec_size]
        pos += count * rec_size


# ---- vmlinux --------------------------------------------------------------------------------------------------

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_VMLINUX_CACHE: dict[tuple[str, float, int], Btf] = {}


def load_vmlinux(path: str | os.PathLike = VMLINUX_BTF) -> Btf | None:
    """The running kernel's BTF (cached per file), or None where the file is absent or unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_mtime, st.st_size)
    btf = _VMLINUX_CACHE.get(key)
    if btf is None:
        try:
            btf = Btf.from_file(path)
        except LoadError as exc:
            if "cannot read" in str(exc):
                return None
            raise
        _VMLINUX_CACHE[key] = btf
    return btf


# ---- CO-RE ------------------------------------------------------------------------------------------------------

_FIELD_KINDS = frozenset({CoreKind.FIELD_BYTE_OFFSET, CoreKind.FIELD_BYTE_SIZE, CoreKind.FIELD_EXISTS,
                          CoreKind.FIELD_SIGNED, CoreKind.FIELD_LSHIFT_U64, CoreKind.FIELD_RSHIFT_U64})
_TYPE_KINDS = frozenset({CoreKind.TYPE_ID_LOCAL, CoreKind.TYPE_ID_TARGET, CoreKind.TYPE_EXISTS,
                         CoreKind.TYPE_SIZE})
_ENUM_KINDS = frozenset({CoreKind.ENUMVAL_EXISTS, CoreKind.ENUMVAL_VALUE})
MAX_CORE_SPEC = 64


@dataclass(frozen=True, slots=True)
class CoreOutcome:
    """What a CO-RE relocation evaluates to: on the local BTF (the value the compiler emitted) and on the
    target. `target` is None when the field/type/enumerator does not exist there (libbpf then poisons the
    instruction). `*_size` is the byte size of the accessed field for FIELD_BYTE_OFFSET (0 if unknown)."""

    local: int
    target: int | None
    local_size: int = 0
    target_size: int = 0


@dataclass(frozen=True, slots=True)
class _Acc:
    """One step of a field access: a named member (`member` set) or an array element index."""

    type_id: int  # for members: the member's type; for elements: the element type
    idx: int
    member: Member | None = None


@dataclass(frozen=True, slots=True)
class _Spec:
    root: int
    accs: tuple[_Acc, ...]
    bit_offset: int


def essential_name(name: str) -> str:
    """A type name without its CO-RE flavour suffix (`task_struct___old` -> `task_struct`)."""
    pos = name.rfind("___")
    while pos > 0:
        if pos + 3 < len(name) and name[pos + 3] != "_":
            return name[:pos]
        pos = name.rfind("___", 0, pos)
    return name


def _relo_desc(btf: Btf, relo: CoreRelo) -> str:
    return f"CO-RE relocation {core_kind_name(relo.kind)} of {btf.type_name(relo.type_id)} access '{relo.access}'"


def core_relocate(local: Btf, relo: CoreRelo, target: Btf | None = None) -> CoreOutcome:
    """Evaluate a CO-RE relocation against `target` BTF (the local BTF when None); LoadError if unsupported."""
    target = target or local
    desc = _relo_desc(local, relo)
    kind = relo.kind
    if kind in _FIELD_KINDS:
        lspec = _parse_field_spec(local, relo, desc)
        lval, lsize = _field_value(local, lspec, kind, desc)
        if target is local:
            return CoreOutcome(lval, lval, lsize, lsize)
        found = None
        for cand in _candidates(local, lspec.root, target, desc):
            tspec = _match_field_spec(local, lspec, target, cand)
            if tspec is None:
                continue
            value = _field_value(target, tspec, kind, desc)
            if found is not None and found != value:
                raise LoadError(f"{desc}: ambiguous target types disagree ({found[0]} vs {value[0]})")
            found = value
        if kind == CoreKind.FIELD_EXISTS:
            return CoreOutcome(1, 1 if found else 0)
        if found is None:
            return CoreOutcome(lval, None, lsize, 0)
        return CoreOutcome(lval, found[0], lsize, found[1])
    if relo.access != "0" and kind in _TYPE_KINDS:
        raise LoadError(f"{desc}: type relocation with access string other than '0'")
    if kind == CoreKind.TYPE_ID_LOCAL:
        return CoreOutcome(relo.type_id, relo.type_id)
    if kind in _TYPE_KINDS:
        local_val = {CoreKind.TYPE_ID_TARGET: relo.type_id, CoreKind.TYPE_EXISTS: 1,
                     CoreKind.TYPE_SIZE: local.size_of(relo.type_id)}[CoreKind(kind)]
        if target is local:
            return CoreOutcome(local_val, local_val)
        cands = _candidates(local, relo.type_id, target, desc)
        if kind == CoreKind.TYPE_EXISTS:
            return CoreOutcome(1, 1 if cands else 0)
        if not cands:
            return CoreOutcome(local_val, None)
        if kind == CoreKind.TYPE_ID_TARGET:
            return CoreOutcome(local_val, cands[0])
        sizes = {target.size_of(c) for c in cands}
        if len(sizes) > 1:
            raise LoadError(f"{desc}: ambiguous target types disagree on size {sorted(sizes)}")
        return CoreOutcome(local_val, sizes.pop())
    if kind in _ENUM_KINDS:
        return _enumval(local, relo, target, desc)
    raise LoadError(f"{desc}: unsupported relocation kind")


def _parse_field_spec(btf: Btf, relo: CoreRelo, desc: str) -> _Spec:
    try:
        raw = [int(part) for part in relo.access.split(":")]
    except ValueError:
        raise LoadError(f"{desc}: malformed access string") from None
    if not raw or len(raw) > MAX_CORE_SPEC or min(raw) < 0:
        raise LoadError(f"{desc}: malformed access string")
    root = btf.resolve_id(relo.type_id)
    bits = raw[0] * btf.size_of(root) * 8
    accs = [_Acc(root, raw[0])]
    cur = root
    for idx in raw[1:]:
        t = btf.resolve(cur)
        if t.is_composite:
            if idx >= len(t.members):
                raise LoadError(f"{desc}: member index {idx} out of range")
            m = t.members[idx]
            bits += m.bit_offset
            if m.name:
                accs.append(_Acc(m.type, idx, m))
            cur = m.type
        elif t.kind == Kind.ARRAY:
            if t.nelems and idx >= t.nelems:
                raise LoadError(f"{desc}: array index {idx} out of range")
            cur = t.elem_type
            bits += idx * btf.size_of(cur) * 8
            accs.append(_Acc(cur, idx))
        else:
            raise LoadError(f"{desc}: access step {idx} into {t.kind_name}")
    return _Spec(root, tuple(accs), bits)


def _compat_class(t: BtfType) -> str:
    if t.kind in (Kind.STRUCT, Kind.UNION):
        return "composite"
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        return "enum"
    return t.kind_name


def _root_compatible(lt: BtfType, tt: BtfType) -> bool:
    if lt.kind == tt.kind:
        return True
    pair = {lt.kind, tt.kind}
    return pair <= {Kind.ENUM, Kind.ENUM64} or pair in ({Kind.FWD, Kind.STRUCT}, {Kind.FWD, Kind.UNION})


def _candidates(local: Btf, local_id: int, target: Btf, desc: str) -> list[int]:
    """Target ids with the local type's essential name and a compatible kind (libbpf's candidate search)."""
    lt = local.type(local_id)
    if lt.kind in _MODIFIERS and lt.kind != Kind.TYPEDEF:
        lt = local.resolve(local_id)
    name = essential_name(lt.name)
    if not name:
        raise LoadError(f"{desc}: the type is anonymous")
    found = []
    for tid in target.find_essential(name):
        if _root_compatible(lt, target.type(tid)):
            found.append(tid)
    return found


def _fields_compatible(local: Btf, lid: int, target: Btf, tid: int) -> bool:
    for _ in range(MAX_RESOLVE_DEPTH):
        lt, tt = local.resolve(lid), target.resolve(tid)
        if lt.is_composite and tt.is_composite:
            return True
        if _compat_class(lt) != _compat_class(tt):
            return False
        if lt.kind in (Kind.PTR, Kind.FLOAT):
            return True
        if lt.kind in (Kind.FWD, Kind.ENUM, Kind.ENUM64):
            ln, tn = essential_name(lt.name), essential_name(tt.name)
            return not ln or not tn or ln == tn
        if lt.kind == Kind.INT:
            return lt.int_offset == 0 and tt.int_offset == 0
        if lt.kind == Kind.ARRAY:
            lid, tid = lt.elem_type, tt.elem_type
            continue
        return False
    return False


def _match_field_spec(local: Btf, lspec: _Spec, target: Btf, cand: int) -> _Spec | None:
    root = target.resolve_id(cand)
    first = lspec.accs[0]
    bits = first.idx * target.size_of(root) * 8
    accs = [_Acc(root, first.idx)]
    cur = root
    for acc in lspec.accs[1:]:
        t = target.resolve(cur)
        if acc.member is not None:
            if not t.is_composite:
                return None
            m = target.member(cur, acc.member.name)
            if m is None or not _fields_compatible(local, acc.member.type, target, m.type):
                return None
            bits += m.bit_offset
            accs.append(_Acc(m.type, acc.idx, m))
            cur = m.type
        else:
            if t.kind != Kind.ARRAY or (t.nelems and acc.idx >= t.nelems):
                return None
            cur = t.elem_type
            bits += acc.idx * target.size_of(cur) * 8
            accs.append(_Acc(cur, acc.idx))
    return _Spec(root, tuple(accs), bits)


def _elem_size(btf: Btf, type_id: int) -> int:
    """Size of the innermost element for arrays (what a load of one element reads), else the type's size."""
    for _ in range(MAX_RESOLVE_DEPTH):
        t = btf.resolve(type_id)
        if t.kind != Kind.ARRAY:
            return btf.size_of(type_id)
        type_id = t.elem_type
    raise LoadError("BTF: cyclic array type")


def _field_value(btf: Btf, spec: _Spec, kind: int, desc: str) -> tuple[int, int]:
    """(value, accessed field size) of a field relocation on one side, per libbpf's rules."""
    last = spec.accs[-1]
    if kind == CoreKind.FIELD_EXISTS:
        return 1, 0
    if last.member is None:
        if kind == CoreKind.FIELD_BYTE_OFFSET:
            return spec.bit_offset // 8, _elem_size(btf, last.type_id)
        if kind == CoreKind.FIELD_BYTE_SIZE:
            return btf.size_of(last.type_id), 0
        raise LoadError(f"{desc}: cannot be applied to an array element access")
    m = last.member
    mt = btf.resolve(m.type)
    bit_off, bit_sz = spec.bit_offset, m.bitfield_size
    if bit_sz:
        byte_sz = mt.size
        if byte_sz <= 0:
            raise LoadError(f"{desc}: bitfield of zero-sized type")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise LoadError(f"{desc}: bitfield cannot be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = btf.size_of(m.type)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if kind == CoreKind.FIELD_BYTE_OFFSET:
        return byte_off, (0 if m.bitfield_size else _elem_size(btf, m.type))
    if kind == CoreKind.FIELD_BYTE_SIZE:
        return byte_sz, 0
    if kind == CoreKind.FIELD_SIGNED:
        return int(mt.is_signed), 0
    if kind == CoreKind.FIELD_LSHIFT_U64:
        return 64 - (bit_off + bit_sz - byte_off * 8), 0
    return 64 - bit_sz, 0  # FIELD_RSHIFT_U64


def _enumval(local: Btf, relo: CoreRelo, target: Btf, desc: str) -> CoreOutcome:
    lt = local.resolve(relo.type_id)
    try:
        idx = int(relo.access)
    except ValueError:
        raise LoadError(f"{desc}: malformed access string") from None
    if not lt.is_enum or not 0 <= idx < len(lt.enum_values):
        raise LoadError(f"{desc}: not an enumerator of an enum")
    lv = lt.enum_values[idx]
    local_val = 1 if relo.kind == CoreKind.ENUMVAL_EXISTS else lv.value
    if target is local:
        return CoreOutcome(local_val, local_val)
    name = essential_name(lv.name)
    values = set()
    for cand in _candidates(local, local.resolve_id(relo.type_id), target, desc):
        for ev in target.resolve(cand).enum_values:
            if essential_name(ev.name) == name:
                values.add(ev.value)
    if relo.kind == CoreKind.ENUMVAL_EXISTS:
        return CoreOutcome(1, 1 if values else 0)
    if len(values) > 1:
        raise LoadError(f"{desc}: ambiguous target enumerators {sorted(values)}")
    return CoreOutcome(local_val, values.pop() if values else None)
