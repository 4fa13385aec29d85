"""`extern ... __kconfig` variables (tests/progs/kconfig.c): values from the kernel configuration and libbpf's
virtual options, laid out in a read-only `.kconfig` map exactly as libbpf lays it out."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm import kconfig
from bpfvm.elf import load_object
from bpfvm.errors import LoadError
from bpfvm.kernel import KernelObject, kernel_unavailable_reason
from clang import compile_bpf

VALUES = {"LINUX_KERNEL_VERSION": str((6 << 16) + (1 << 8) + 7), "LINUX_HAS_BPF_COOKIE": "y",
          "CONFIG_BPF_SYSCALL": "y", "CONFIG_BPF_JIT": "n", "CONFIG_NET": "m", "CONFIG_HZ": "1000",
          "CONFIG_DEFAULT_HOSTNAME": '"bpfvm-host"'}


@pytest.fixture(scope="module")
def kconfig_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf("kconfig.c", tmp_path_factory.mktemp("kconfig"))


def test_kernel_version_is_libbpfs_encoding() -> None:
    assert kconfig.kernel_version("6.18.44-fc-v769") == (6 << 16) + (18 << 8) + 44
    assert kconfig.kernel_version("5.4.300") == (5 << 16) + (4 << 8) + 255  # the patch level saturates


def test_kernel_config_file_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "config.gz"
    with gzip.open(path, "wt") as f:
        f.write("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_HZ=250\nCONFIG_S=\"x y\"\n# comment\n")
    assert kconfig.read_kernel_config((str(tmp_path / "absent"), str(path))) == {
        "CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_HZ": "250", "CONFIG_S": '"x y"'}


def test_layout_follows_libbpf(kconfig_obj: Path) -> None:
    """Descending alignment, then ascending size, then name; worked out by hand for kconfig.c."""
    loaded = load_object(kconfig_obj)
    externs = [kconfig.Extern(t.name, t.type, t.name.startswith("CONFIG_") and t.name != "CONFIG_BPF_SYSCALL")
               for t, _ in loaded.btf.datasec_vars(".kconfig")]
    placed = kconfig.layout(loaded.btf, externs, VALUES)
    assert placed.offsets == {"CONFIG_BPFVM_NO_SUCH_OPTION": 0, "CONFIG_BPF_SYSCALL": 4, "CONFIG_HZ": 8,
                              "LINUX_KERNEL_VERSION": 12, "CONFIG_BPF_JIT": 16, "CONFIG_NET": 17,
                              "LINUX_HAS_BPF_COOKIE": 18, "CONFIG_DEFAULT_HOSTNAME": 19}
    assert placed.data == struct.pack("<IIII", 0, 1, 1000, 0x060107) + b"\x00m\x01" + b"bpfvm-h\x00"


@pytest.mark.parametrize("kind,value,reason", [
    ("bool", "m", "implies bool, tristate, or char type"),
    ("int", "y", "implies bool, tristate, or char type"),
    ("str", "7", "implies an integer type"),
    ("char", "300", "doesn't fit in 1 bytes"),
])
def test_values_that_do_not_fit_their_type_are_refused(kind: str, value: str, reason: str) -> None:
    with pytest.raises(LoadError, match=reason):
        kconfig._encode("CONFIG_X", kind, 8 if kind == "str" else 1 if kind in ("bool", "char") else 4, value)


def test_a_strong_extern_without_a_value_does_not_load(tmp_path: Path) -> None:
    obj = compile_bpf("kconfig.c", tmp_path, "STRONG_MISSING")
    with pytest.raises(LoadError, match="extern \\(kcfg\\) 'CONFIG_BPFVM_NOT_THERE_EITHER': value not found"):
        load_object(obj)


def test_a_program_reads_the_same_values_as_on_the_kernel(kconfig_obj: Path) -> None:
    obj = api.load(kconfig_obj)
    assert obj.programs["read_kconfig"].run(bytes(64), engine="jit").retval == 0
    seen = [struct.unpack("<Q", obj.maps["seen"][i])[0] for i in range(8)]
    assert seen[0] == kconfig.kernel_version() and seen[1] == 1 and seen[7] == 0
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")
    with KernelObject(kconfig_obj) as k:
        k.run("read_kconfig", data_in=bytes(64))
        theirs = k.map_dump("seen")
        their_kconfig = k.map_dump(".kconfig")
    assert theirs == dict(obj.maps["seen"].items())
    assert their_kconfig[bytes(4)] == obj.maps[".kconfig"][0]


def test_bpfvm_kconfig_names_another_kernels_configuration(kconfig_obj: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text("CONFIG_BPF_SYSCALL=y\nCONFIG_HZ=100\nCONFIG_NET=y\n# CONFIG_BPF_JIT is not set\n")
    monkeypatch.setenv("BPFVM_KCONFIG", str(config))
    obj = api.load(kconfig_obj)
    obj.programs["read_kconfig"].run(bytes(64))
    seen = [struct.unpack("<Q", obj.maps["seen"][i])[0] for i in range(6)]
    assert seen[2:6] == [1, 0, ord("y"), 100]  # tristate y, bool n, char 'y', int 100
    for name, content in (("missing", None), ("truncated.gz", b"\x1f\x8b\x08\x00garbage"),
                          ("random.gz", bytes(range(256)))):
        if content is not None:
            (tmp_path / name).write_bytes(content)
        monkeypatch.setenv("BPFVM_KCONFIG", str(tmp_path / name))
        with pytest.raises(LoadError, match=f"BPFVM_KCONFIG=.*{name}: cannot read it: "):
            api.load(kconfig_obj)
