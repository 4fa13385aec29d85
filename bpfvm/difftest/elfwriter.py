"""A small ELF64 writer for BPF objects, laid out as clang lays them out, so one generated program can be loaded
by bpfvm and by libbpf (bpftool) alike: the program in its own section, subprograms in `.text`, BTF-defined maps
in `.maps`, extern kfuncs as undefined symbols with `R_BPF_64_32` relocations, and a `license` section."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .btfwriter import object_btf

EM_BPF, ET_REL = 247, 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL = 1, 2, 3, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
R_BPF_64_64, R_BPF_64_32 = 1, 10
_SYM = struct.Struct("<IBBHQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")


@dataclass
class ElfFunc:
    """One function's code. `relocs` maps a slot to (relocation type, symbol name)."""

    name: str
    code: bytes
    section: str  # the program's section, or ".text" for subprograms
    is_global: bool
    relocs: dict[int, tuple[int, str]] = field(default_factory=dict)


@dataclass
class _Sec:
    name: str
    type: int
    flags: int
    data: bytes
    link: int = 0
    info: int = 0
    align: int = 8
    entsize: int = 0


def write_object(funcs: list[ElfFunc], maps: list[tuple[str, dict[str, int]]], kfuncs: list[str],
                 license_: str = "GPL") -> bytes:
    """The bytes of a relocatable BPF object holding `funcs`, `maps` and extern `kfuncs`."""
    secs: list[_Sec] = [_Sec("", 0, 0, b"", align=0)]
    strtab = _Strings()
    code_secs: dict[str, int] = {}
    offsets: dict[str, tuple[int, int]] = {}  # function -> (section index, byte offset)
    for f in funcs:
        if f.section not in code_secs:
            code_secs[f.section] = len(secs)
            secs.append(_Sec(f.section, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, b""))
        sec = secs[code_secs[f.section]]
        offsets[f.name] = (code_secs[f.section], len(sec.data))
        sec.data += f.code
    btf, map_sizes = object_btf(maps, kfuncs) if (maps or kfuncs) else (b"", {})
    maps_idx = lic_idx = 0
    if maps:
        maps_idx = len(secs)
        secs.append(_Sec(".maps", SHT_PROGBITS, SHF_WRITE | SHF_ALLOC, bytes(sum(map_sizes.values()))))
    lic = license_.encode() + b"\0"
    lic_idx = len(secs)
    secs.append(_Sec("license", SHT_PROGBITS, SHF_WRITE | SHF_ALLOC, lic, align=1))
    if btf:
        secs.append(_Sec(".BTF", SHT_PROGBITS, 0, btf, align=4))

    # symbols: locals (sections, static functions) first, then globals
    local_syms: list[tuple[str, int, int, int, int]] = []  # name, type, shndx, value, size
    global_syms: list[tuple[str, int, int, int, int]] = []
    for name, idx in code_secs.items():
        local_syms.append(("", STT_SECTION, idx, 0, 0))
    for f in funcs:
        entry = (f.name, STT_FUNC, offsets[f.name][0], offsets[f.name][1], len(f.code))
        (global_syms if f.is_global else local_syms).append(entry)
    map_off = 0
    for name, _fields in maps:
        global_syms.append((name, STT_OBJECT, maps_idx, map_off, map_sizes[name]))
        map_off += map_sizes[name]
    global_syms.append(("LICENSE", STT_OBJECT, lic_idx, 0, len(lic)))
    for name in kfuncs:
        global_syms.append((name, STT_NOTYPE, 0, 0, 0))
    symbols = [("", STT_NOTYPE, 0, 0, 0)] + local_syms + global_syms
    sym_index = {s[0]: i for i, s in enumerate(symbols) if s[0]}
    symtab_idx = len(secs) + len(code_secs)  # after one .rel section per code section
    for sec_name, idx in list(code_secs.items()):
        rel = b""
        for f in funcs:
            if f.section != sec_name:
                continue
            base = offsets[f.name][1]
            for slot, (rtype, target) in sorted(f.relocs.items()):
                rel += struct.pack("<QQ", base + 8 * slot, (sym_index[target] << 32) | rtype)
        secs.append(_Sec(".rel" + sec_name, SHT_REL, 0, rel, link=symtab_idx, info=idx, entsize=16))
    symdata = b"".join(_SYM.pack(strtab.add(n), (STB_GLOBAL if i > len(local_syms) else STB_LOCAL) << 4 | t, 0,
                                 shndx, value, size)
                       for i, (n, t, shndx, value, size) in enumerate(symbols))
    secs.append(_Sec(".symtab", SHT_SYMTAB, 0, symdata, info=len(local_syms) + 1, entsize=_SYM.size))
    strtab_idx = len(secs)
    secs[-1].link = strtab_idx
    secs.append(_Sec(".strtab", SHT_STRTAB, 0, b"", align=1))
    names = [strtab.add(s.name) for s in secs]
    secs[strtab_idx].data = strtab.data()
    return _layout(secs, names, strtab_idx)


class _Strings:
    def __init__(self) -> None:
        self._data = bytearray(b"\0")
        self._at: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        if text not in self._at:
            self._at[text] = len(self._data)
            self._data += text.encode() + b"\0"
        return self._at[text]

    def data(self) -> bytes:
        return bytes(self._data)


def _layout(secs: list[_Sec], names: list[int], shstrndx: int) -> bytes:
    body = bytearray(64)
    offsets = []
    for sec in secs:
        if sec.type == 0:
            offsets.append(0)
            continue
        body += bytes(-len(body) % max(sec.align, 1))
        offsets.append(len(body))
        body += sec.data
    body += bytes(-len(body) % 8)
    shoff = len(body)
    for sec, off, name in zip(secs, offsets, names):
        body += _SHDR.pack(name, sec.type, sec.flags, 0, off, len(sec.data), sec.link, sec.info, sec.align,
                           sec.entsize)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", ET_REL, EM_BPF, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(secs),
                                 shstrndx)
    body[:64] = header
    return bytes(body)
