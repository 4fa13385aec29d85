"""A minimal BTF encoder: just the kinds an object of generated programs needs (BTF-defined maps in `.maps`,
extern kfunc declarations in `.ksyms`), plus raw access so the robustness fuzzer can write cyclic or absurd
type graphs that clang never would."""

from __future__ import annotations

import struct

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT = 1, 2, 3, 4
KIND_TYPEDEF, KIND_CONST, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 8, 10, 12, 13, 14, 15
LINKAGE_GLOBAL, LINKAGE_EXTERN = 1, 2


class BtfBuilder:
    """Types are appended in order; each `add_*` returns the new type id (ids start at 1, 0 is void)."""

    def __init__(self) -> None:
        self._types: list[bytes] = []
        self._strings = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def string(self, text: str) -> int:
        if text not in self._offsets:
            self._offsets[text] = len(self._strings)
            self._strings += text.encode() + b"\0"
        return self._offsets[text]

    def raw(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"", kflag: int = 0) -> int:
        """Append any type record; used directly by the fuzzer for malformed graphs."""
        info = (kflag << 31) | ((kind & 0x1F) << 24) | (vlen & 0xFFFF)
        self._types.append(struct.pack("<III", self.string(name), info, size_or_type & 0xFFFFFFFF) + extra)
        return len(self._types)

    def int_(self, name: str, size: int, signed: bool = False) -> int:
        return self.raw(name, KIND_INT, 0, size, struct.pack("<I", (int(signed) << 24) | (size * 8)))

    def ptr(self, target: int) -> int:
        return self.raw("", KIND_PTR, 0, target)

    def const(self, target: int) -> int:
        return self.raw("", KIND_CONST, 0, target)

    def typedef(self, name: str, target: int) -> int:
        return self.raw(name, KIND_TYPEDEF, 0, target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.raw("", KIND_ARRAY, 0, 0, struct.pack("<III", elem, index, nelems))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        """members: (name, type id, bit offset)."""
        extra = b"".join(struct.pack("<III", self.string(m), t, off) for m, t, off in members)
        return self.raw(name, KIND_STRUCT, len(members), size, extra)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra = b"".join(struct.pack("<II", self.string(p), t) for p, t in params)
        return self.raw("", KIND_FUNC_PROTO, len(params), ret, extra)

    def func(self, name: str, proto: int, linkage: int) -> int:
        return self.raw(name, KIND_FUNC, linkage, proto)

    def var(self, name: str, type_id: int, linkage: int = LINKAGE_GLOBAL) -> int:
        return self.raw(name, KIND_VAR, 0, type_id, struct.pack("<I", linkage))

    def datasec(self, name: str, size: int, entries: list[tuple[int, int, int]]) -> int:
        """entries: (type id, offset, size)."""
        extra = b"".join(struct.pack("<III", t, off, sz) for t, off, sz in entries)
        return self.raw(name, KIND_DATASEC, len(entries), size, extra)

    def encode(self) -> bytes:
        types = b"".join(self._types)
        strings = bytes(self._strings)
        header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
        return header + types + strings


# Parameter types of the kfuncs generated programs call; names as in vmlinux, unnamed parameters as clang emits
# them for `extern ... __ksym` declarations (so the kernel's prototype, with its suffixes, is the one checked).
KFUNC_PROTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bpf_dynptr_from_skb": ("int", ("ctx:__sk_buff", "u64", "dynptr")),
    "bpf_dynptr_from_xdp": ("int", ("ctx:xdp_md", "u64", "dynptr")),
    "bpf_dynptr_slice": ("ptr", ("dynptr", "u32", "ptr", "u32")),
    "bpf_dynptr_slice_rdwr": ("ptr", ("dynptr", "u32", "ptr", "u32")),
    "bpf_dynptr_size": ("u32", ("dynptr",)),
    "bpf_dynptr_is_null": ("bool", ("dynptr",)),
    "bpf_dynptr_is_rdonly": ("bool", ("dynptr",)),
    "bpf_dynptr_adjust": ("int", ("dynptr", "u32", "u32")),
}
_STRUCT_SIZES = {"__sk_buff": 192, "xdp_md": 24, "bpf_dynptr": 16}


def object_btf(maps: list[tuple[str, dict[str, int]]], kfuncs: list[str]) -> tuple[bytes, dict[str, int]]:
    """The .BTF of an object: `maps` as (name, {"type": .., "key_size": .., ...}) in `.maps` order, and the
    extern `kfuncs`. Returns the encoded BTF and each map's byte size in `.maps`."""
    b = BtfBuilder()
    int_t = b.int_("int", 4, signed=True)
    index_t = b.int_("__ARRAY_SIZE_TYPE__", 4)
    sized: dict[int, int] = {}

    def uint_ptr(n: int) -> int:
        if n not in sized:
            sized[n] = b.ptr(b.array(int_t, index_t, n))
        return sized[n]

    var_ids: list[tuple[int, int]] = []
    sizes: dict[str, int] = {}
    for name, fields in maps:
        members = [(field, uint_ptr(value), 64 * k) for k, (field, value) in enumerate(fields.items())]
        size = 8 * len(members)
        sizes[name] = size
        var_ids.append((b.var(name, b.struct("", size, members)), size))
    if var_ids:
        entries, offset = [], 0
        for var_id, size in var_ids:
            entries.append((var_id, offset, size))
            offset += size
        b.datasec(".maps", offset, entries)
    if kfuncs:
        scalars = {"u32": b.int_("unsigned int", 4), "u64": b.int_("unsigned long long", 8),
                   "bool": b.int_("_Bool", 1), "int": int_t}
        structs: dict[str, int] = {}

        def ptr_to(struct_name: str) -> int:
            if struct_name not in structs:
                structs[struct_name] = b.ptr(b.struct(struct_name, _STRUCT_SIZES[struct_name], []))
            return structs[struct_name]

        def type_of(spec: str) -> int:
            if spec == "ptr":
                return b.ptr(0)
            if spec == "dynptr":
                return ptr_to("bpf_dynptr")
            if spec.startswith("ctx:"):
                return ptr_to(spec[4:])
            return scalars[spec]

        func_ids = []
        for name in kfuncs:
            ret, params = KFUNC_PROTOS[name]
            proto = b.func_proto(type_of(ret), [("", type_of(p)) for p in params])
            func_ids.append(b.func(name, proto, LINKAGE_EXTERN))
        b.datasec(".ksyms", 0, [(f, 0, 0) for f in func_ids])
    return b.encode(), sizes
