"""Loading BPF ELF objects: programs, linking, maps, global data, kfuncs, CO-RE, refusals, robustness.

Expectations come from llvm-objdump-19 (instructions, relocations, symbols) and from the C sources.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfvm import uapi
from bpfvm.btf import Kind, load_vmlinux
from bpfvm.elf import CORE_POISON_HELPER, load_object, prog_type_for_section
from bpfvm.errors import LoadError
from bpfvm.isa import (
    OP_CALL, OP_LDDW, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE, Insn,
    decode, validate_program,
)
from bpfvm.program import Program
from clang import PROGS, compile_bpf

OBJDUMP = "llvm-objdump-19"
VMLINUX = Path("/sys/kernel/btf/vmlinux")

pytestmark = pytest.mark.clang


@pytest.fixture(scope="module")
def objs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("elf_objs")
    built = {src.stem: compile_bpf(src, out) for src in sorted(PROGS.glob("*.c"))}
    for define in ("KCONFIG", "KSYM_VAR", "DATA_POINTER", "UNKNOWN_SECTION"):
        built[f"refused-{define}"] = compile_bpf(PROGS / "refused.c", out, define)
    built["calls-bpfeb"] = compile_bpf(PROGS / "calls.c", out, target="bpfeb")
    for name in ("calls", "xdp_maps", "legacy"):
        built[f"{name}-nodebug"] = compile_bpf(PROGS / f"{name}.c", out, debug=False)
    return built


# ---- llvm-objdump ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sym:
    name: str
    section: str
    value: int
    size: int
    kind: str  # objdump's type letter: F function, O object, d section, ' ' none


@dataclass
class Dump:
    code: dict[str, dict[int, bytes]]  # section -> slot -> 8 bytes (lddw split into its two slots)
    relocs: dict[str, dict[int, tuple[str, str]]]  # section -> slot -> (type, symbol)
    symbols: list[Sym]

    def func(self, name: str) -> Sym:
        return next(s for s in self.symbols if s.name == name and s.kind == "F")

    def func_at(self, section: str, value: int) -> Sym:
        return next(s for s in self.symbols if s.section == section and s.value == value and s.kind == "F")

    def symbol(self, name: str) -> Sym:
        return next(s for s in self.symbols if s.name == name)


_INSN_LINE = re.compile(r"^\s*(\d+):\t((?:[0-9a-f]{2} ?)+)\t")
_RELOC_LINE = re.compile(r"^\t\t([0-9a-f]+):  (R_BPF_\w+)\t(\S+)")
_SYM_LINE = re.compile(r"^([0-9a-f]{16}) (.{7}) (.+?)\t([0-9a-f]{16}) (.*)$")


def objdump(path: Path) -> Dump:
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} is not installed")
    text = subprocess.run([OBJDUMP, "-d", "-r", str(path)], capture_output=True, text=True, check=True).stdout
    code: dict[str, dict[int, bytes]] = {}
    relocs: dict[str, dict[int, tuple[str, str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("Disassembly of section "):
            section = line[len("Disassembly of section "):-1]
            code[section], relocs[section] = {}, {}
        elif m := _INSN_LINE.match(line):
            raw = bytes.fromhex(m.group(2).replace(" ", ""))
            slot = int(m.group(1))
            for k in range(0, len(raw), 8):
                code[section][slot + k // 8] = raw[k:k + 8]
        elif m := _RELOC_LINE.match(line):
            relocs[section][int(m.group(1), 16) // 8] = (m.group(2), m.group(3))
    syms_text = subprocess.run([OBJDUMP, "-t", str(path)], capture_output=True, text=True, check=True).stdout
    symbols = []
    for line in syms_text.splitlines():
        if m := _SYM_LINE.match(line):
            value, flags, section, size, name = m.groups()
            symbols.append(Sym(name, section, int(value, 16), int(size, 16), flags[6]))
    return Dump(code, relocs, symbols)


def check_against_objdump(prog: Program, dump: Dump) -> None:
    """Every slot of `prog` is the slot objdump shows for the function it came from, with relocations
    applied as the kernel expects. The program is exactly its functions (per BTF func info) laid end to end."""
    starts = sorted(f.insn for f in prog.funcs)
    placed = {f.insn: dump.func(f.name) for f in prog.funcs}
    assert sum(s.size // 8 for s in placed.values()) == len(prog.insns)
    where_final = {(s.section, s.value): start for start, s in placed.items()}
    for start in starts:
        sym = placed[start]
        slot0 = sym.value // 8
        k = 0
        while k < sym.size // 8:
            final, orig_slot = start + k, slot0 + k
            orig = decode(dump.code[sym.section][orig_slot], validate=False)[0]
            got = prog.insns[final]
            reloc = dump.relocs[sym.section].get(orig_slot)
            if reloc is not None:
                _check_reloc(prog, dump, sym.section, final, orig, reloc, where_final)
            elif orig.opcode == OP_CALL and orig.src == PSEUDO_CALL:
                target = where_final[(sym.section, (orig_slot + orig.imm + 1) * 8)]
                assert got == orig._replace(imm=target - final - 1)
            else:
                assert got == orig, f"slot {final} ({sym.name}+{k})"
                if orig.opcode == OP_LDDW:
                    assert prog.insns[final + 1].pack() == dump.code[sym.section][orig_slot + 1]
            k += 2 if orig.opcode == OP_LDDW else 1


def _check_reloc(prog: Program, dump: Dump, section: str, final: int, orig: Insn, reloc: tuple[str, str],
                 where_final: dict[tuple[str, int], int]) -> None:
    rtype, name = reloc
    got = prog.insns[final]
    target = next((s for s in dump.symbols if s.name == name), None)
    if rtype == "R_BPF_64_32":
        if target is None or target.section == "*UND*":
            assert (got.src, prog.kfuncs[got.imm]) == (PSEUDO_KFUNC_CALL, name)
        else:
            callee = target.value + (orig.imm + 1) * 8
            assert got == orig._replace(imm=where_final[(target.section, callee)] - final - 1)
        return
    assert rtype == "R_BPF_64_64" and orig.opcode == OP_LDDW
    second = prog.insns[final + 1]
    if target.section in (".text",) or target.kind == "F":
        callee = where_final[(target.section, target.value + orig.imm)]
        assert (got.src, got.imm) == (PSEUDO_FUNC, callee - final - 1)
    elif target.section in ("maps", ".maps"):
        assert got.src == PSEUDO_MAP_IDX and prog.maps[got.imm].name == name and second.imm == 0
    else:
        assert got.src == PSEUDO_MAP_IDX_VALUE
        assert prog.maps[got.imm].name == target.section
        assert second.imm == target.value + orig.imm
    assert got._replace(src=0, imm=0) == orig._replace(src=0, imm=0)


@pytest.mark.parametrize("name", ["xdp_maps", "calls", "globals", "legacy", "iproute", "kfunc", "sections", "tags"])
def test_programs_match_objdump(objs, name):
    obj = load_object(objs[name], prog_type="socket_filter" if name == "legacy" else None)
    dump = objdump(objs[name])
    entry_syms = [s for s in dump.symbols if s.kind == "F" and s.section != ".text"]
    assert sorted(obj.programs) == sorted(s.name for s in entry_syms)
    for prog in obj.programs.values():
        assert prog.section == dump.func(prog.name).section
        assert prog.funcs[0].insn == 0 and prog.funcs[0].name == prog.name
        check_against_objdump(prog, dump)
        validate_program(prog.insns)
        assert prog.btf is obj.btf and prog.license == obj.license


# ---- linking -----------------------------------------------------------------------------------------------

def test_subprograms_appended_depth_first(objs):
    obj = load_object(objs["calls"])
    assert set(obj.programs) == {"enter_a", "enter_b", "switch_prog"}
    a, b, sw = obj.programs["enter_a"], obj.programs["enter_b"], obj.programs["switch_prog"]
    # libbpf's order: each subprogram is appended when first reached, then relocated before going on.
    assert [f.name for f in a.funcs] == ["enter_a", "loop_cb", "leaf", "other_cb", "global_helper", "middle"]
    assert [f.name for f in b.funcs] == ["enter_b", "middle", "leaf"]
    assert [f.name for f in sw.funcs] == ["switch_prog"] and len(sw) == 2
    assert a.prog_type == b.prog_type == sw.prog_type == "raw_tracepoint"
    assert a.section == b.section == "raw_tp/sys_enter" and sw.section == "raw_tracepoint/sched_switch"
    starts = {f.name: f.insn for f in a.funcs}
    callbacks = [(i, ins) for i, ins in enumerate(a.insns) if ins.opcode == OP_LDDW and ins.src == PSEUDO_FUNC]
    assert [i + 1 + ins.imm for i, ins in callbacks] == [starts["loop_cb"], starts["other_cb"]]
    assert a.subprog_starts() == sorted(starts.values())
    calls = {i + 1 + ins.imm for i, ins in enumerate(a.insns) if ins.is_local_call()}
    assert calls == {starts["leaf"], starts["global_helper"], starts["middle"]}
    # Every program gets its own copy of `leaf`, at its own position.
    assert {f.name: f.insn for f in b.funcs}["leaf"] != starts["leaf"]
    assert all(f.type_id and obj.btf.type(f.type_id).kind == Kind.FUNC for f in a.funcs)


def test_line_info_follows_appended_code(objs):
    obj = load_object(objs["calls"])
    prog = obj.programs["enter_a"]
    source = (PROGS / "calls.c").read_text().splitlines()
    assert prog.line_info == sorted(prog.line_info, key=lambda li: li.insn)
    for li in prog.line_info:
        assert li.text == source[li.line - 1] and li.file.endswith("calls.c")
    leaf = next(f.insn for f in prog.funcs if f.name == "leaf")
    leaf_line = next(i for i, text in enumerate(source, 1) if "return x * 3 + total;" in text)
    assert prog.source_line(leaf).line in (leaf_line - 1, leaf_line - 2, leaf_line)
    assert any(li.line == leaf_line and li.insn >= leaf for li in prog.line_info)


# ---- maps --------------------------------------------------------------------------------------------------

def test_btf_maps(objs):
    obj = load_object(objs["xdp_maps"])
    maps = {m.name: m for m in obj.maps}
    t = uapi.MAP_TYPES
    got = {n: (m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.pinning) for n, m in maps.items()}
    assert got == {
        "hash_map": (t["hash"], 4, 16, 128, 0, uapi.LIBBPF_PIN_BY_NAME),
        "sized_array": (t["array"], 4, 16, 4, 0, 0),
        "counters": (t["percpu_array"], 4, 8, 1, 0, 0),
        "lru": (t["lru_hash"], 8, 4, 1000, 2, 0),  # BPF_F_NO_COMMON_LRU
        "events": (t["ringbuf"], 0, 0, 4096, 0, 0),
        "inner_a": (t["array"], 4, 4, 8, 0, 0),
        "inner_b": (t["array"], 4, 4, 8, 0, 0),
        "outer": (t["array_of_maps"], 4, 4, 4, 0, 0),
        "jumps": (t["prog_array"], 4, 4, 2, 0, 0),
    }
    inner = maps["outer"].inner
    assert (inner.name, inner.type, inner.key_size, inner.value_size, inner.max_entries) == (
        "outer.inner", t["array"], 4, 4, 8)
    assert obj.map_init == {"outer": {1: "inner_a", 3: "inner_b"}, "jumps": {0: "tail_target"}}
    assert obj.btf.type_name(maps["hash_map"].btf_value_type) == "struct pair"
    assert obj.btf.type_name(maps["hash_map"].btf_key_type) == "__u32"
    assert all(m.section == ".maps" and m.initial is None for m in obj.maps)
    main, tail = obj.programs["xdp_main"], obj.programs["tail_target"]
    assert [m.name for m in main.maps] == ["hash_map", "counters", "lru", "sized_array", "outer", "events", "jumps"]
    assert [m.name for m in tail.maps] == ["counters"]
    assert main.maps[1] is tail.maps[0] is maps["counters"]


def test_global_data_maps(objs):
    obj = load_object(objs["globals"])
    dump = objdump(objs["globals"])
    maps = {m.name: m for m in obj.maps}
    assert set(maps) == {".data", ".rodata", ".bss", ".data.custom", ".rodata.custom", ".rodata.str1.1"}
    for m in obj.maps:
        assert (m.type, m.key_size, m.max_entries, m.section) == (uapi.BPF_MAP_TYPE_ARRAY, 4, 1, m.name)
        assert m.value_size == len(m.initial)
        assert m.readonly == m.name.startswith(".rodata")
        assert m.flags & uapi.BPF_F_RDONLY_PROG == (uapi.BPF_F_RDONLY_PROG if m.readonly else 0)
        assert obj.btf.type(m.btf_value_type).kind == Kind.DATASEC if m.btf_value_type else True

    def var(name: str, size: int) -> bytes:
        sym = dump.symbol(name)
        return maps[sym.section].initial[sym.value:sym.value + size]

    assert struct.unpack("<i", var("data_counter", 4)) == (42,)
    assert struct.unpack("<QQ", var("data_pair", 16)) == (1, 2)
    assert struct.unpack("<I", var("ro_limit", 4)) == (1500,)
    assert var("ro_name", 8) == b"bpfvm\0\0\0"
    assert struct.unpack("<i", var("custom_data", 4)) == (7,)
    assert struct.unpack("<i", var("custom_ro", 4)) == (9,)
    assert struct.unpack("<i", var("static_counter", 4)) == (3,)
    assert maps[".bss"].initial == bytes(maps[".bss"].value_size) and maps[".bss"].value_size == 0x28
    assert maps[".rodata.str1.1"].initial == b"len %d\n\0"
    tc, tcx, cls = obj.programs["tc_main"], obj.programs["tcx_prog"], obj.programs["cls_prog"]
    assert tc.maps[0] is tcx.maps[0] is maps[".bss"]
    assert cls.maps == [maps[".data.custom"]]
    # static_counter is reached through the .data section symbol with its offset (0x18) in the lddw imm.
    data_idx = tc.maps.index(maps[".data"])
    offsets = {tc.insns[i + 1].imm for i, ins in enumerate(tc.insns)
               if ins.opcode == OP_LDDW and ins.src == PSEUDO_MAP_IDX_VALUE and ins.imm == data_idx}
    assert offsets == {dump.symbol("data_counter").value, dump.symbol("data_pair").value,
                       dump.symbol("static_counter").value}
    assert obj.license == "Dual BSD/GPL"
    progs = obj.programs
    assert (progs["tc_main"].prog_type, progs["tcx_prog"].prog_type) == ("sched_cls", "sched_cls")
    assert (progs["cls_prog"].prog_type, progs["act_prog"].prog_type) == ("sched_cls", "sched_act")


def test_legacy_bpf_map_def(objs):
    # `socket1` is a section name libbpf 1.x refuses and older loaders took by prefix: it loads as a socket filter
    assert load_object(objs["legacy"]).programs["old_style"].prog_type == "socket_filter"
    obj = load_object(objs["legacy"], prog_type="socket_filter")
    got = [(m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.section) for m in obj.maps]
    assert got == [("counts", 2, 4, 8, 256, 0, "maps"), ("flows", 1, 8, 4, 1024, 1, "maps")]  # BPF_F_NO_PREALLOC
    assert obj.kern_version == 0x050A00 and obj.license == "GPL"
    assert {p.prog_type for p in obj.programs.values()} == {"socket_filter"}
    assert obj.programs["old_style"].section == "socket1"
    assert obj.programs["old_style"].maps == [obj.maps[1]]
    assert obj.programs["sock_prog"].maps == [obj.maps[0]]
    forced = load_object(objs["globals"], prog_type="BPF_PROG_TYPE_XDP")
    assert {p.prog_type for p in forced.programs.values()} == {"xdp"}
    with pytest.raises(LoadError, match="unknown program type 'nonsense'"):
        load_object(objs["globals"], prog_type="nonsense")


def test_iproute2_bpf_elf_map(objs):
    obj = load_object(objs["iproute"])
    got = [(m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.pinning) for m in obj.maps]
    assert got == [("acc_map", 2, 4, 4, 2, 0, 2), ("tc_hash", 1, 4, 8, 64, 0, 0)]  # PIN_GLOBAL_NS = 2
    assert obj.programs["cls_main"].prog_type == "sched_cls"
    assert obj.programs["act_main"].prog_type == "sched_act"


# ---- kfuncs, CO-RE -----------------------------------------------------------------------------------------

def test_kfunc_calls(objs):
    obj = load_object(objs["kfunc"])
    assert obj.kfuncs == ["bpf_dynptr_from_skb", "bpf_dynptr_slice", "bpf_rcu_read_lock", "bpf_rcu_read_unlock"]
    prog = obj.programs["kfunc_prog"]
    assert prog.kfuncs == ["bpf_dynptr_from_skb", "bpf_dynptr_slice"]
    kcalls = [ins for ins in prog.insns if ins.is_kfunc_call()]
    assert [prog.kfuncs[ins.imm] for ins in kcalls] == ["bpf_dynptr_from_skb", "bpf_dynptr_slice"]
    rcu = obj.programs["rcu_prog"]
    assert rcu.prog_type == "cgroup_skb" and rcu.kfuncs == ["bpf_rcu_read_lock", "bpf_rcu_read_unlock"]
    assert [ins.imm for ins in rcu.insns if ins.is_kfunc_call()] == [0, 1]
    for name in obj.kfuncs:
        assert obj.btf.func_linkage(obj.btf.find(name, Kind.FUNC)) == "extern"


def _core_values(prog: Program) -> list[int]:
    """The relocated slots of core_prog, at the positions llvm-objdump shows the CO-RE relocations."""
    return [prog.insns[2].imm, prog.insns[9].imm, prog.insns[17].imm, prog.insns[27].imm, prog.insns[34].imm]


def test_core_against_local_btf(objs):
    obj = load_object(objs["core"], kernel_btf=False)
    assert _core_values(obj.programs["core_prog"]) == [0, 4, 9, 1, 24]  # as compiled
    assert obj.programs["local_prog"].insns[0].off == 8
    assert not obj.programs["local_prog"].aux


@pytest.mark.skipif(not VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_core_against_kernel_btf(objs):
    kernel = load_vmlinux()
    task = kernel.find("task_struct", Kind.STRUCT)
    pid, tgid, comm = (kernel.member(task, n).byte_offset for n in ("pid", "tgid", "comm"))
    for arg in (None, kernel, VMLINUX):
        obj = load_object(objs["core"], kernel_btf=arg)
        assert _core_values(obj.programs["core_prog"]) == [pid, tgid, comm + 1, 0, kernel.size_of(task)]
    local = obj.programs["local_prog"]  # struct bpfvm_local_type is in no kernel: poisoned like libbpf does
    assert local.insns[0] == Insn(OP_CALL, 0, 0, 0, CORE_POISON_HELPER)
    assert "bpfvm_local_type" in obj.btf.type_name(obj.btf.find("bpfvm_local_type"))
    assert "no match in the target BTF" in local.aux[0]["core_poison"]


def test_core_against_explicit_btf_file(objs, tmp_path):
    """A target BTF whose task_struct has pid at 100 and no tgid: pid moves, tgid is poisoned."""
    names = b"\0task_struct\0pid\0comm\0int\0char\0"
    def t(kind, ref, name=0, vlen=0, extra=b""):
        return struct.pack("<III", name, (kind << 24) | vlen, ref) + extra
    types = [
        t(Kind.INT, 4, names.index(b"int"), extra=struct.pack("<I", (1 << 24) | 32)),          # 1
        t(Kind.INT, 1, names.index(b"char"), extra=struct.pack("<I", (1 << 24) | 8)),          # 2
        t(Kind.ARRAY, 0, extra=struct.pack("<III", 2, 1, 16)),                                  # 3
        t(Kind.STRUCT, 200, names.index(b"task_struct"), 2,
          struct.pack("<III", names.index(b"pid"), 1, 800) + struct.pack("<III", names.index(b"comm"), 3, 1024)),
    ]
    body = b"".join(types)
    raw = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(names)) + body + names
    path = tmp_path / "target.btf"
    path.write_bytes(raw)
    obj = load_object(objs["core"], kernel_btf=path)
    prog = obj.programs["core_prog"]
    assert prog.insns[2].imm == 100 and prog.insns[17].imm == 129 and prog.insns[34].imm == 200
    assert prog.insns[9].imm == CORE_POISON_HELPER and "core_poison" in prog.aux[9]


# ---- section names -----------------------------------------------------------------------------------------

SECTION_TYPES = {
    "p_socket": "socket_filter", "p_tc": "sched_cls", "p_tc_ingress": "sched_cls", "p_tcx_egress": "sched_cls",
    "p_classifier": "sched_cls", "p_action": "sched_act", "p_xdp": "xdp", "p_xdp_frags": "xdp",
    "p_xdp_devmap": "xdp", "p_cgroup_skb_ingress": "cgroup_skb", "p_cgroup_skb_egress": "cgroup_skb",
    "p_raw_tp": "raw_tracepoint", "p_raw_tracepoint": "raw_tracepoint", "p_raw_tp_w": "raw_tracepoint_writable",
    "p_tp": "tracepoint", "p_tracepoint": "tracepoint", "p_flow_dissector": "flow_dissector",
    "p_syscall": "syscall", "p_kprobe": "kprobe", "p_kretprobe": "kprobe", "p_uprobe": "kprobe",
    "p_fentry": "tracing", "p_fexit": "tracing", "p_lsm": "lsm", "p_struct_ops": "struct_ops",
    "p_lwt_in": "lwt_in", "p_lwt_xmit": "lwt_xmit", "p_lwt_seg6local": "lwt_seg6local",
    "p_sk_skb_parser": "sk_skb", "p_sk_skb": "sk_skb", "p_sk_msg": "sk_msg", "p_perf_event": "perf_event",
    "p_sockops": "sock_ops", "p_cgroup_sock": "cgroup_sock", "p_cgroup_connect4": "cgroup_sock_addr",
    "p_cgroup_dev": "cgroup_device", "p_cgroup_sysctl": "cgroup_sysctl", "p_cgroup_getsockopt": "cgroup_sockopt",
    "p_sk_lookup": "sk_lookup", "p_sk_reuseport": "sk_reuseport", "p_lirc": "lirc_mode2", "p_freplace": "ext",
    "p_iter": "tracing", "p_tp_btf": "tracing", "p_netfilter": "netfilter",
}


def test_section_program_types(objs):
    obj = load_object(objs["sections"])
    assert {name: p.prog_type for name, p in obj.programs.items()} == SECTION_TYPES
    assert all(t in uapi.PROG_TYPES for t in SECTION_TYPES.values())


@pytest.mark.parametrize("section, expected", [
    ("socket", "socket_filter"), ("socket1", "socket_filter"), ("kprobe", "kprobe"), ("kprobex", "kprobe"),
    ("xdp_prog", "xdp"), ("filter", None), ("2/1", None), ("ingress_redirect", None),
    ("tc/anything", "sched_cls"), ("tcx/ingress", "sched_cls"), ("xdp/foo", "xdp"), ("xdp.frags", "xdp"),
    ("cgroup_skb/ingress", "cgroup_skb"), ("cgroup_skb/sideways", None), ("raw_tp", "raw_tracepoint"),
    ("tp/a/b", "tracepoint"), ("struct_ops/x", "struct_ops"), ("struct_ops.s/x", "struct_ops"), ("", None),
])
def test_prog_type_for_section(section, expected):
    assert prog_type_for_section(section) == expected


# ---- refusals ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("refused-KCONFIG", "extern (kcfg) 'CONFIG_BPFVM_SURELY_MISSING': value not found"),
    ("refused-KSYM_VAR", "extern ksym variable 'bpf_prog_active'"),
    ("refused-DATA_POINTER", "relocations in section '.data' are not supported"),
    ("refused-UNKNOWN_SECTION", "section 'my_custom_section': unknown program section"),
    ("calls-bpfeb", "big-endian ELF objects are not supported"),
])
def test_refused_objects(objs, name, message):
    with pytest.raises(LoadError, match=re.escape(message)) as info:
        load_object(objs[name])
    assert "\n" not in str(info.value) and str(objs[name]) in str(info.value)


def test_unknown_section_loads_with_explicit_type(objs):
    obj = load_object(objs["refused-UNKNOWN_SECTION"], prog_type="xdp")
    assert obj.programs["custom"].prog_type == "xdp" and obj.programs["custom"].section == "my_custom_section"


def _section(data: bytes, name: str):
    import io
    elf = ELFFile(io.BytesIO(data))
    return elf.get_section_by_name(name).header


def test_patched_headers_and_relocations_are_refused(objs):
    good = objs["globals"].read_bytes()
    bad_machine = bytearray(good)
    bad_machine[18:20] = struct.pack("<H", 62)  # EM_X86_64
    with pytest.raises(LoadError, match="not BPF"):
        load_object(bytes(bad_machine))
    elf32 = bytearray(good)
    elf32[4] = 1
    with pytest.raises(LoadError, match="32-bit ELF"):
        load_object(bytes(elf32))
    rel = _section(good, ".reltc")
    # First relocation of section tc (bss_hits at offset 8): give it type 99, then a symbol index past the end.
    unknown = bytearray(good)
    unknown[rel.sh_offset + 8:rel.sh_offset + 12] = struct.pack("<I", 99)
    with pytest.raises(LoadError, match="section 'tc' offset 8: relocation type 99 against 'bss_hits'"):
        load_object(bytes(unknown))
    abs64 = bytearray(good)
    abs64[rel.sh_offset + 8:rel.sh_offset + 12] = struct.pack("<I", 2)
    with pytest.raises(LoadError, match="R_BPF_64_ABS64 against 'bss_hits' is not supported in code"):
        load_object(bytes(abs64))
    bad_sym = bytearray(good)
    bad_sym[rel.sh_offset + 12:rel.sh_offset + 16] = struct.pack("<I", 5000)
    with pytest.raises(LoadError, match="names bad symbol #5000"):
        load_object(bytes(bad_sym))
    with pytest.raises(LoadError, match="not an ELF object"):
        load_object(b"\0" * 100)
    with pytest.raises(LoadError, match="cannot read"):
        load_object("/nonexistent/object.o")


def test_object_without_function_symbols(objs):
    """Old compilers emitted no STT_FUNC symbols: a program section is then one program named by its
    global symbol at offset 0."""
    data = bytearray(objs["iproute"].read_bytes())
    symtab = _section(bytes(data), ".symtab")
    strtab = _section(bytes(data), ".strtab")
    for off in range(symtab.sh_offset, symtab.sh_offset + symtab.sh_size, 24):
        name_off, info = struct.unpack_from("<IB", data, off)
        end = data.index(b"\0", strtab.sh_offset + name_off)
        if data[strtab.sh_offset + name_off:end] == b"cls_main":
            assert info & 0xF == 2  # STT_FUNC
            data[off + 4] = (1 << 4) | 0  # GLOBAL NOTYPE
    obj = load_object(bytes(data))
    assert obj.programs["cls_main"].prog_type == "sched_cls"
    assert obj.programs["cls_main"].insns == load_object(objs["iproute"]).programs["cls_main"].insns


def test_objects_without_btf(objs):
    """Without -g there is no .BTF: subprograms are named from symbols, legacy maps still load, BTF maps can't."""
    obj = load_object(objs["calls-nodebug"])
    assert obj.btf is None and obj.btf_ext is None
    with_btf = load_object(objs["calls"])
    for name, prog in obj.programs.items():
        assert [(f.insn, f.name) for f in prog.funcs] == [(f.insn, f.name) for f in with_btf.programs[name].funcs]
        assert prog.insns == with_btf.programs[name].insns and prog.line_info == []
        assert all(f.type_id == 0 for f in prog.funcs)
        check_against_objdump(prog, objdump(objs["calls-nodebug"]))
    legacy = load_object(objs["legacy-nodebug"], prog_type="socket_filter")
    assert [m.name for m in legacy.maps] == ["counts", "flows"]
    with pytest.raises(LoadError, match="BTF-defined maps need .BTF"):
        load_object(objs["xdp_maps-nodebug"])


# ---- robustness --------------------------------------------------------------------------------------------

def test_truncated_and_bit_flipped_objects(objs):
    """Every mutation either loads or raises a one-line LoadError, and the whole run stays bounded."""
    rng = random.Random(0xB9F)
    budget = time.monotonic() + 150
    results = {"loaded": 0, "refused": 0}
    for name in ("calls", "xdp_maps", "globals"):
        good = objs[name].read_bytes()
        mutants = [good[:n] for n in sorted(rng.sample(range(len(good)), 60))]
        for _ in range(140):
            data = bytearray(good)
            for _ in range(rng.choice((1, 1, 2, 8))):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            mutants.append(bytes(data))
        for data in mutants:
            started = time.monotonic()
            try:
                obj = load_object(data, kernel_btf=False)
                for prog in obj.programs.values():
                    assert isinstance(prog.insns, list)
                results["loaded"] += 1
            except LoadError as exc:
                message = str(exc)
                assert message and "\n" not in message
                assert "internal" not in message, message  # a check of ours is missing
                results["refused"] += 1
            assert time.monotonic() - started < 10
        assert time.monotonic() < budget
    assert results["loaded"] > 0 and results["refused"] > 0
