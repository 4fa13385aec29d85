"""BTF / BTF.ext parsing: agreement with bpftool on compiled objects and vmlinux, lookups, malformed input."""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfvm.btf import (
    Btf, BtfExt, BtfType, CoreKind, CoreRelo, Kind, core_relocate, essential_name, kfunc_arg_suffix, load_vmlinux,
)
from bpfvm.errors import LoadError

from clang import PROGS, compile_bpf

VMLINUX = Path("/sys/kernel/btf/vmlinux")
needs_vmlinux = pytest.mark.skipif(not VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux on this machine")


def section_bytes(obj: Path, name: str) -> bytes:
    with open(obj, "rb") as f:
        sec = ELFFile(f).get_section_by_name(name)
        assert sec is not None, name
        return sec.data()


@pytest.fixture(scope="module")
def objs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("btf_objs")
    return {src.stem: compile_bpf(src, out) for src in sorted(PROGS.glob("*.c"))}


# ---- bpftool's raw dump, and ours in its words ----------------------------------------------------------
_HEAD = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_ATTR = re.compile(r"(\w+)=([^\s,]+)")
_NAMED_ENTRY = re.compile(r"^\t'([^']*)'(.*)$")
_DATASEC_ENTRY = re.compile(r"^\ttype_id=(\d+) offset=(\d+) size=(\d+)")

Rendered = tuple[str, str, dict[str, str], list[tuple]]


def require_bpftool() -> str:
    path = shutil.which("bpftool")
    if path is None:
        pytest.skip("bpftool is not installed")
    return path


def dump_raw(path: str | Path) -> dict[int, Rendered]:
    """Every type of a BTF file or ELF object as bpftool prints it: id -> (kind, name, attrs, entries)."""
    tool = require_bpftool()
    out = subprocess.run([tool, "btf", "dump", "file", str(path), "format", "raw"], capture_output=True,
                         text=True, check=True).stdout
    types: dict[int, Rendered] = {}
    current: list[tuple] | None = None
    for line in out.splitlines():
        head = _HEAD.match(line)
        if head:
            type_id, kind, name, rest = head.groups()
            current = []
            types[int(type_id)] = (kind, "" if name == "(anon)" else name, dict(_ATTR.findall(rest)), current)
            continue
        if current is None:
            continue
        sec = _DATASEC_ENTRY.match(line)
        if sec:
            current.append(tuple(int(x) for x in sec.groups()))
            continue
        entry = _NAMED_ENTRY.match(line)
        if entry:
            name, rest = entry.groups()
            current.append(("" if name == "(anon)" else name, dict(_ATTR.findall(rest))))
    return types


_INT_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def render(btf: Btf, t: BtfType) -> Rendered:
    """Our decoding of one type, in bpftool's raw-format vocabulary."""
    k = t.kind
    attrs: dict[str, str] = {}
    entries: list[tuple] = []
    if k == Kind.INT:
        attrs = {"size": str(t.size), "bits_offset": str(t.int_offset), "nr_bits": str(t.bits),
                 "encoding": _INT_ENC.get(t.encoding, "UNKN")}
    elif k in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG):
        attrs = {"type_id": str(t.type)}
    elif k == Kind.ARRAY:
        attrs = {"type_id": str(t.elem_type), "index_type_id": str(t.index_type), "nr_elems": str(t.nelems)}
    elif k in (Kind.STRUCT, Kind.UNION):
        attrs = {"size": str(t.size), "vlen": str(t.vlen)}
        for m in t.members:
            a = {"type_id": str(m.type), "bits_offset": str(m.bit_offset)}
            if m.bitfield_size:
                a["bitfield_size"] = str(m.bitfield_size)
            entries.append((m.name, a))
    elif k in (Kind.ENUM, Kind.ENUM64):
        attrs = {"encoding": "SIGNED" if t.kind_flag else "UNSIGNED", "size": str(t.size), "vlen": str(t.vlen)}
        suffix = ("LL" if t.kind_flag else "ULL") if k == Kind.ENUM64 else ""
        entries = [(v.name, {"val": f"{v.value}{suffix}"}) for v in t.enum_values]
    elif k == Kind.FWD:
        attrs = {"fwd_kind": "union" if t.kind_flag else "struct"}
    elif k == Kind.FUNC:
        attrs = {"type_id": str(t.type), "linkage": _LINKAGE.get(t.linkage, "UNKN")}
    elif k == Kind.FUNC_PROTO:
        attrs = {"ret_type_id": str(t.type), "vlen": str(t.vlen)}
        entries = [(p.name, {"type_id": str(p.type)}) for p in t.params]
    elif k == Kind.VAR:
        attrs = {"type_id": str(t.type), "linkage": {0: "static", 1: "global", 2: "extern"}.get(t.linkage, "?")}
    elif k == Kind.DATASEC:
        attrs = {"size": str(t.size), "vlen": str(t.vlen)}
        entries = [(s.type, s.offset, s.size) for s in t.secinfos]
    elif k == Kind.FLOAT:
        attrs = {"size": str(t.size)}
    elif k == Kind.DECL_TAG:
        attrs = {"type_id": str(t.type), "component_idx": str(t.component_idx)}
    return t.kind_name, t.name, attrs, entries


def compare(btf: Btf, expected: dict[int, Rendered], ids=None) -> list[str]:
    """Differences between our decoding and bpftool's, as readable lines (empty when they agree)."""
    problems = []
    for type_id in ids if ids is not None else expected:
        kind, name, attrs, entries = expected[type_id]
        ours = render(btf, btf.type(type_id))
        if ours[0] != kind or ours[1] != name:
            problems.append(f"[{type_id}] ours {ours[0]} '{ours[1]}' bpftool {kind} '{name}'")
            continue
        for key, value in ours[2].items():
            if key in attrs and attrs[key] != value:
                problems.append(f"[{type_id}] {key}: ours {value} bpftool {attrs[key]}")
        if ours[3] != entries:
            problems.append(f"[{type_id}] entries differ: ours {ours[3][:3]}... bpftool {entries[:3]}...")
        if len(problems) > 20:
            break
    return problems


# ---- agreement with bpftool --------------------------------------------------------------------------------

@pytest.mark.clang
@pytest.mark.parametrize("name", ["xdp_maps", "calls", "globals", "legacy", "iproute", "kfunc", "core", "sections",
                                  "tags"])
def test_object_btf_matches_bpftool(objs, name):
    btf = Btf(section_bytes(objs[name], ".BTF"))
    expected = dump_raw(objs[name])
    assert len(btf) == len(expected) == max(expected)
    assert compare(btf, expected) == []


@needs_vmlinux
def test_vmlinux_matches_bpftool():
    btf = Btf.from_file(VMLINUX)
    expected = dump_raw(VMLINUX)
    assert len(btf) == len(expected) == max(expected)
    assert compare(btf, expected) == []
    kinds = {btf.kind_of(i) for i in btf.ids()}
    assert {Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FUNC, Kind.FUNC_PROTO, Kind.VAR, Kind.DATASEC} <= kinds


@needs_vmlinux
def test_vmlinux_named_structs():
    btf = load_vmlinux()
    assert btf is load_vmlinux()  # cached
    expected = dump_raw(VMLINUX)
    for name in ("__sk_buff", "xdp_md", "bpf_sock", "task_struct"):
        sid = btf.find(name, Kind.STRUCT)
        kind, bname, attrs, members = expected[sid]
        assert (kind, bname) == ("STRUCT", name)
        assert str(btf.size_of(sid)) == attrs["size"]
        assert [(m.name, str(m.bit_offset)) for m in btf.members(sid)] == [
            (mname, a["bits_offset"]) for mname, a in members
        ]
    # Hand-checked against include/uapi/linux/bpf.h.
    xdp = btf.find_struct("xdp_md")
    assert [(m.name, m.byte_offset) for m in xdp.members][:6] == [
        ("data", 0), ("data_end", 4), ("data_meta", 8), ("ingress_ifindex", 12), ("rx_queue_index", 16),
        ("egress_ifindex", 20),
    ]
    skb = btf.find("__sk_buff", Kind.STRUCT)
    assert btf.member(skb, "len").byte_offset == 0
    assert btf.member(skb, "cb").byte_offset == 48
    assert btf.member(skb, "flow_keys").byte_offset == 144  # inside an anonymous union
    assert btf.size_of(btf.member(skb, "cb").type) == 20


@needs_vmlinux
def test_vmlinux_kfunc_prototype_param_names():
    btf = load_vmlinux()
    slice_id = btf.find("bpf_dynptr_slice", Kind.FUNC)
    if slice_id is None:
        pytest.skip("kernel has no bpf_dynptr_slice kfunc")
    names = btf.param_names(slice_id)
    assert names == ["p", "offset", "buffer__opt", "buffer__szk"]
    assert [kfunc_arg_suffix(n) for n in names] == [None, None, "__opt", "__szk"]


# ---- lookups on object BTF ---------------------------------------------------------------------------------

@pytest.mark.clang
def test_resolve_sizes_and_datasecs(objs):
    btf = Btf(section_bytes(objs["globals"], ".BTF"))
    ro_limit = btf.type(btf.find("ro_limit", Kind.VAR))
    assert btf.type(ro_limit.type).kind == Kind.CONST
    resolved = btf.resolve(ro_limit.type)  # const volatile __u32 -> unsigned int
    assert (resolved.kind, resolved.name, resolved.size) == (Kind.INT, "unsigned int", 4)
    assert btf.size_of(btf.find("bss_array", Kind.VAR)) == 32
    assert btf.size_of(btf.find("ro_name", Kind.VAR)) == 8
    assert btf.type_name(ro_limit.type) == "__u32"  # typedef names are kept for messages
    assert [t.name for t, _ in btf.datasec_vars(".bss")] == ["bss_hits", "bss_array"]
    assert [t.name for t, _ in btf.datasec_vars(".data.custom")] == ["custom_data"]
    assert btf.func_linkage(btf.find("tc_main", Kind.FUNC)) == "global"
    assert btf.param_names(btf.find("tc_main", Kind.FUNC)) == ["skb"]
    skb = btf.find_struct("__sk_buff")
    assert btf.field(skb.id, "cb").byte_offset == 48
    assert btf.field(skb.id, "sk").byte_offset == 168
    with pytest.raises(LoadError, match="no member 'nope'"):
        btf.field(skb.id, "nope")


@pytest.mark.clang
def test_tags_bitfields_float_enum64(objs):
    btf = Btf(section_bytes(objs["tags"], ".BTF"))
    tagged = btf.find_struct("tagged")
    assert btf.decl_tags(tagged.id) == ["struct_tag"]
    assert btf.decl_tags(tagged.id, 1) == ["member_tag"]
    func = btf.find("tagged_func", Kind.FUNC)
    assert btf.decl_tags(func) == ["func_tag"] and btf.decl_tags(func, 0) == ["arg_tag"]
    assert btf.decl_tags(btf.find("tagged_var", Kind.VAR)) == ["var_tag"]
    assert btf.param_names(func) == ["arg"] and btf.func_linkage(func) == "global"
    members = {m.name: m for m in tagged.members}
    assert (members["low"].bit_offset, members["low"].bitfield_size) == (64, 3)
    assert (members["high"].bit_offset, members["high"].bitfield_size) == (67, 13)
    assert members["plain"].bitfield_size == 0
    uptr = btf.type(members["uptr"].type)
    assert uptr.kind == Kind.PTR and btf.type(uptr.type).kind == Kind.TYPE_TAG and btf.type(uptr.type).name == "user"
    assert btf.resolve(uptr.type).name == "int"
    ratio = btf.resolve(members["ratio"].type)
    assert (ratio.kind, ratio.name, ratio.size) == (Kind.FLOAT, "double", 8)
    big = btf.resolve(members["big"].type)
    assert big.kind == Kind.ENUM64 and [(v.name, v.value) for v in big.enum_values] == [
        ("BIG_SMALL", 1), ("BIG_LARGE", 0x1234567890)]
    sign = btf.resolve(members["sign"].type)
    assert sign.is_signed and [(v.name, v.value) for v in sign.enum_values] == [("NEG_ONE", -1), ("POS_TWO", 2)]
    assert btf.size_of(tagged.id) == 48


@pytest.mark.clang
def test_kfunc_extern_params_and_linkage(objs):
    btf = Btf(section_bytes(objs["kfunc"], ".BTF"))
    from_skb = btf.find("bpf_dynptr_from_skb", Kind.FUNC)
    assert btf.func_linkage(from_skb) == "extern"
    # clang keeps no parameter names on extern declarations (bpftool shows '(anon)'): a kfunc's names, and
    # so its __sz/__k/__opt suffixes, come from the kernel's BTF (see test_vmlinux_kfunc_prototype_param_names).
    assert btf.param_names(from_skb) == ["", "", ""]
    assert [btf.type_name(p.type) for p in btf.params(from_skb)] == [
        "struct __sk_buff *", "__u64", "struct bpf_dynptr *",
    ]
    assert btf.param_names(btf.find("bpf_rcu_read_lock")) == []
    assert [t.name for t, _ in btf.datasec_vars(".ksyms")] == [
        "bpf_dynptr_from_skb", "bpf_dynptr_slice", "bpf_rcu_read_lock", "bpf_rcu_read_unlock",
    ]
    assert kfunc_arg_suffix("ptr__uninit") == "__uninit"
    assert kfunc_arg_suffix("size__sz") == "__sz"
    assert kfunc_arg_suffix("flags__k") == "__k"
    assert kfunc_arg_suffix("plain") is None


@pytest.mark.clang
def test_map_definition_struct_layout(objs):
    btf = Btf(section_bytes(objs["xdp_maps"], ".BTF"))
    pair = btf.find_struct("pair")
    assert [(m.name, m.byte_offset) for m in pair.members] == [("a", 0), ("b", 8)]
    assert btf.size_of(pair.id) == 16
    hash_def = btf.resolve(btf.type(btf.find("hash_map", Kind.VAR)).type)
    assert [m.name for m in hash_def.members] == ["type", "key", "value", "max_entries", "pinning"]


@pytest.mark.clang
def test_btf_ext_func_and_line_info(objs):
    obj = objs["calls"]
    btf = Btf(section_bytes(obj, ".BTF"))
    ext = BtfExt(section_bytes(obj, ".BTF.ext"), btf)
    assert set(ext.func_info) == {".text", "raw_tp/sys_enter", "raw_tracepoint/sched_switch"}
    assert [(f.insn_off % 8, btf.name_of(f.type_id)) for f in ext.func_info["raw_tp/sys_enter"]] == [
        (0, "enter_a"), (0, "enter_b"),
    ]
    source = (PROGS / "calls.c").read_text().splitlines()
    count = 0
    for sec, lines in ext.line_info.items():
        for li in lines:
            assert li.file.endswith("calls.c")
            assert li.text == source[li.line - 1]
            assert li.col <= len(li.text) + 1
            count += 1
    assert count > 10
    assert ext.core_relos == {}


@pytest.mark.clang
def test_btf_ext_core_relos_local(objs):
    obj = objs["core"]
    btf = Btf(section_bytes(obj, ".BTF"))
    ext = BtfExt(section_bytes(obj, ".BTF.ext"), btf)
    relos = ext.core_relos["raw_tp/sched_switch"]
    # llvm-objdump -r shows them as: byte_off pid (0:0), tgid (0:1), comm[1] (0:2:1), field_exists, type_size.
    assert [(r.kind, r.access) for r in relos] == [(0, "0:0"), (0, "0:1"), (0, "0:2:1"), (2, "0:0"), (9, "0")]
    assert [core_relocate(btf, r).target for r in relos] == [0, 4, 9, 1, 24]


@needs_vmlinux
@pytest.mark.clang
def test_core_against_vmlinux(objs):
    obj = objs["core"]
    btf = Btf(section_bytes(obj, ".BTF"))
    kernel = load_vmlinux()
    relos = BtfExt(section_bytes(obj, ".BTF.ext"), btf).core_relos["raw_tp/sched_switch"]
    task = kernel.find("task_struct", Kind.STRUCT)
    pid, tgid, comm = (kernel.member(task, n).byte_offset for n in ("pid", "tgid", "comm"))
    outcomes = [core_relocate(btf, r, kernel) for r in relos]
    assert [o.target for o in outcomes] == [pid, tgid, comm + 1, 0, kernel.size_of(task)]
    assert [o.local for o in outcomes] == [0, 4, 9, 1, 24]
    assert outcomes[0].target_size == 4


def test_essential_name():
    assert essential_name("task_struct___old") == "task_struct"
    assert essential_name("task_struct") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("x____") == "x____"


# ---- malformed BTF -----------------------------------------------------------------------------------------

def build_btf(types: list[bytes], strings: bytes = b"\0a\0b\0", *, layout: bytes = b"") -> bytes:
    """A little-endian BTF blob: 24-byte header (32 with a kind layout section), types, layout, strings."""
    type_data = b"".join(types)
    hdr_len = 32 if layout else 24
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(type_data), len(type_data) + len(layout),
                      len(strings))
    if layout:
        hdr += struct.pack("<II", len(type_data), len(layout))
    return hdr + type_data + layout + strings


def btf_type(kind: int, ref: int = 0, name: int = 0, vlen: int = 0, kflag: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, ref) + extra


INT32 = btf_type(Kind.INT, 4, name=1, extra=struct.pack("<I", (1 << 24) | 32))


def test_minimal_btf_parses():
    btf = Btf(build_btf([INT32, btf_type(Kind.PTR, 1), btf_type(Kind.TYPEDEF, 1, name=3)]))
    assert len(btf) == 3
    assert btf.resolve(3).name == "a"
    assert btf.size_of(2) == 8
    assert btf.type(1).is_signed


@pytest.mark.parametrize("data, message", [
    (b"", "truncated header"),
    (b"\x12\x34" + bytes(30), "bad magic"),
    (b"\xeb\x9f" + bytes(30), "big-endian"),
    (build_btf([INT32])[:-3], "out of bounds"),
    (build_btf([INT32, btf_type(Kind.PTR, 99)]), "out of range"),
    (build_btf([btf_type(Kind.INT, 4, name=999, extra=bytes(4))]), "past the string section"),
    (build_btf([btf_type(Kind.STRUCT, 8, vlen=1000)]), "runs past the type section"),
    (build_btf([btf_type(25)]), "unknown kind 25"),
    (build_btf([INT32], strings=b"\0a"), "not NUL-terminated"),
    (build_btf([btf_type(Kind.FUNC, 1, name=1), INT32]), "does not refer to a FUNC_PROTO"),
    (build_btf([btf_type(Kind.STRUCT, 4, vlen=1, extra=struct.pack("<III", 77, 1, 0))]), "past the string"),
])
def test_malformed_btf_is_refused(data, message):
    with pytest.raises(LoadError, match=message) as info:
        Btf(data)
    assert "\n" not in str(info.value)


def test_cyclic_types_raise_instead_of_looping():
    btf = Btf(build_btf([btf_type(Kind.TYPEDEF, 2, name=1), btf_type(Kind.CONST, 1)]))
    with pytest.raises(LoadError, match="cyclic"):
        btf.resolve(1)
    with pytest.raises(LoadError, match="cyclic"):
        btf.size_of(2)
    arr = Btf(build_btf([btf_type(Kind.ARRAY, extra=struct.pack("<III", 1, 1, 3))]))
    with pytest.raises(LoadError, match="cyclic"):
        arr.size_of(1)
    anon_loop = Btf(build_btf([btf_type(Kind.STRUCT, 4, vlen=1, extra=struct.pack("<III", 0, 1, 0))]))
    with pytest.raises(LoadError, match="cyclic"):
        anon_loop.member(1, "x")
    assert anon_loop.type_name(1) == "struct (struct)"


def test_shared_anonymous_members_take_linear_time():
    """60 levels of structs each holding two anonymous copies of the level below: a naive member search
    would visit 2**60 structs."""
    types = [INT32, btf_type(Kind.STRUCT, 4, vlen=1, extra=struct.pack("<III", 1, 1, 0))]
    for level in range(3, 63):
        types.append(btf_type(Kind.STRUCT, 4, vlen=2, extra=struct.pack("<III", 0, level - 1, 0) * 2))
    btf = Btf(build_btf(types))
    started = time.monotonic()
    assert btf.member(62, "b") is None
    assert btf.member(62, "a").bit_offset == 0
    assert time.monotonic() - started < 1


def test_unknown_kind_described_by_layout_section_is_skipped():
    layout = bytes(4 * 20) + struct.pack("<BBH", 4, 8, 0)  # kind 20: 4 fixed bytes, 8 per vlen entry
    btf = Btf(build_btf([btf_type(20, vlen=2, extra=bytes(4 + 16)), INT32], layout=layout))
    assert len(btf) == 2
    assert btf.type(2).name == "a"
    assert btf.type(1).kind == Kind.UNKN


def test_bad_type_id_lookups():
    btf = Btf(build_btf([INT32]))
    with pytest.raises(LoadError, match="out of range"):
        btf.type(2)
    with pytest.raises(LoadError, match="has no size"):
        btf.size_of(0)
    with pytest.raises(LoadError, match="not a struct"):
        btf.members(1)


def test_malformed_btf_ext():
    btf = Btf(build_btf([INT32]))
    with pytest.raises(LoadError, match="bad magic"):
        BtfExt(b"\x00\x00" + bytes(30), btf)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 0, 0)
    with pytest.raises(LoadError, match="bad func info record size"):
        BtfExt(hdr + struct.pack("<III", 4, 1, 1), btf)
    with pytest.raises(LoadError, match="bad record count"):
        BtfExt(hdr + struct.pack("<III", 8, 1, 50), btf)
    with pytest.raises(LoadError, match="out of bounds"):
        BtfExt(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 400, 0, 0), btf)


def test_core_relocation_refusals():
    btf = Btf(build_btf([INT32]))
    with pytest.raises(LoadError, match="type_matches"):
        core_relocate(btf, CoreRelo(0, 1, "0", CoreKind.TYPE_MATCHES))
    with pytest.raises(LoadError, match="malformed access"):
        core_relocate(btf, CoreRelo(0, 1, "x:y", CoreKind.FIELD_BYTE_OFFSET))
    with pytest.raises(LoadError, match="access step"):
        core_relocate(btf, CoreRelo(0, 1, "0:1", CoreKind.FIELD_BYTE_OFFSET))


@pytest.mark.clang
def test_fuzzed_btf_never_crashes(objs):
    """Bit flips and truncations of a real .BTF: parse and walk every type, or LoadError; bounded time."""
    good = section_bytes(objs["xdp_maps"], ".BTF")
    rng = random.Random(20240521)
    start = time.monotonic()
    outcomes = {"ok": 0, "refused": 0}
    for attempt in range(400):
        data = bytearray(good)
        if attempt % 4 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        try:
            btf = Btf(bytes(data))
            for t in btf:
                for probe in (btf.resolve, btf.type_name):
                    try:
                        probe(t.id)
                    except LoadError:
                        pass
                try:
                    btf.size_of(t.id)
                except LoadError:
                    pass
            outcomes["ok"] += 1
        except LoadError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert time.monotonic() - start < 60
    assert outcomes["ok"] and outcomes["refused"]


def test_struct_offsets_of_nested_and_malformed_structs() -> None:
    """Where a value keeps its bpf_spin_lock: nested members count; a struct nested in itself, or one struct nested
    many times over, answers at once (memoised) instead of walking an exponential or endless tree."""
    from bpfvm.difftest.btfwriter import BtfBuilder

    b = BtfBuilder()
    u32 = b.int_("u32", 4)
    lock = b.struct("bpf_spin_lock", 4, [("val", u32, 0)])
    inner = b.struct("inner", 8, [("x", u32, 0), ("l", lock, 32)])
    outer = b.struct("outer", 16, [("a", u32, 0), ("in", inner, 64)])
    layer = inner
    for depth in range(40):  # 2^40 paths to the lock if every member were walked
        layer = b.struct(f"wide{depth}", 16, [("left", layer, 0), ("right", layer, 64)])
    selfish = len(b._types) + 1
    b.struct("selfish", 8, [("me", selfish, 0), ("l", lock, 32)])
    btf = Btf(b.encode())
    assert btf.struct_offsets(outer, "bpf_spin_lock") == [12]
    assert btf.struct_offsets(u32, "bpf_spin_lock") == []
    visits = []
    resolve = btf.resolve
    btf.resolve = lambda tid: visits.append(tid) or resolve(tid)  # type: ignore[method-assign]
    assert btf.struct_offsets(layer, "bpf_spin_lock") == [4, 12]  # two found: enough to refuse a map
    assert btf.struct_offsets(selfish, "bpf_spin_lock") == [4]
    assert len(visits) < 200  # each type once or twice, not once per path
