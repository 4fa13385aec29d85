"""bpf_spin_lock in map values (tests/progs/spin_lock.c): the lock's place comes from BTF, the verifier applies
the kernel's rules with the kernel's words, and a verified program runs the same as on the kernel."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm.difftest.observe import ObjectSource
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import parse_spec
from bpfvm.elf import load_object
from bpfvm.errors import LoadError, VerifierError
from bpfvm.kernel import KernelObject, KernelUnavailable, kernel_unavailable_reason
from bpfvm.verifier import verify
from clang import compile_bpf

MISUSES = {
    "BAD_TWICE": "function calls are not allowed while holding a lock",
    "BAD_EXIT": "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region",
    "BAD_CALL": "function calls are not allowed while holding a lock",
    "BAD_UNLOCK": "bpf_spin_unlock without taking a lock",
    "BAD_TOUCH": "bpf_spin_lock cannot be accessed directly by load/store",
    "BAD_OFFSET": "off 12 doesn't point to 'struct bpf_spin_lock' that is at 8",
}
TC_ACT_OK, TC_ACT_UNSPEC = 0, 0xFFFFFFFF


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("spin_lock")
    return {"GOOD": compile_bpf("spin_lock.c", out), **{v: compile_bpf("spin_lock.c", out, v) for v in MISUSES}}


def kernel_or_skip() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


def test_the_lock_offset_comes_from_btf(objects: dict[str, Path]) -> None:
    maps = {m.name: m for m in load_object(objects["GOOD"]).maps}
    assert maps["counters"].spin_lock_off == 8 and maps["totals"].spin_lock_off == 8


@pytest.mark.parametrize("variant", sorted(MISUSES))
def test_misuse_is_refused_as_the_kernel_refuses_it(objects: dict[str, Path], variant: str) -> None:
    program = load_object(objects[variant]).programs["count"]
    with pytest.raises(VerifierError) as exc:
        verify(program)
    assert exc.value.reason == MISUSES[variant]
    if kernel_unavailable_reason() is None:
        with pytest.raises(KernelUnavailable) as refused:
            KernelObject(objects[variant])
        assert str(refused.value).endswith(MISUSES[variant])


@pytest.mark.parametrize("engine,inline", [("interp", "none"), ("jit", "pruned")])
def test_locked_update_by_hand(objects: dict[str, Path], engine: str, inline: str) -> None:
    obj = api.load(objects["GOOD"])
    start = struct.pack("<QIIQ", 5, 1, 0, 100)  # the lock word of an update is ignored, as the kernel does
    obj.maps["counters"][0] = start
    result = obj.programs["count"].run(bytes(64), engine=engine, inline=inline)
    assert result.retval == TC_ACT_UNSPEC  # 6 packets: even
    assert obj.maps["counters"][0] == struct.pack("<QIIQ", 6, 0, 64, 164)
    total = obj.maps["totals"].region.view[:24]  # the raw storage: the lock word is released
    assert struct.unpack("<QIIQ", total) == (1, 0, 0, 0)
    fresh = obj.programs["count"].run(bytes(61))  # key 1 is absent: inserted without locking
    assert fresh.retval == TC_ACT_OK and obj.maps["counters"][1] == struct.pack("<QIIQ", 1, 0, 0, 61)


def test_a_spin_lock_needs_a_hash_or_array_map(tmp_path: Path) -> None:
    source = tmp_path / "percpu_lock.c"
    source.write_text((Path(__file__).parent / "progs" / "spin_lock.c").read_text().replace(
        "BPF_MAP_TYPE_ARRAY", "BPF_MAP_TYPE_PERCPU_ARRAY"))
    with pytest.raises(LoadError, match="map 'totals': struct bpf_spin_lock is supported in hash and array"):
        load_object(compile_bpf(source, tmp_path))


@pytest.mark.parametrize("spec", ["interp,none", "jit,pruned"])
def test_locked_counters_agree_with_the_kernel(objects: dict[str, Path], spec: str) -> None:
    kernel_or_skip()
    session = DiffSession(ObjectSource(path=str(objects["GOOD"])), "count", parse_spec(spec), parse_spec("kernel"))
    summary = session.run(60, seed=2)
    assert summary.mismatch is None, summary.mismatch


def test_socket_filters_cannot_use_a_map_with_a_lock(tmp_path: Path) -> None:
    source = tmp_path / "socket_lock.c"
    source.write_text((Path(__file__).parent / "progs" / "spin_lock.c").read_text().replace('SEC("tc")',
                                                                                            'SEC("socket")'))
    obj = compile_bpf(source, tmp_path)
    with pytest.raises(VerifierError) as exc:
        verify(load_object(obj).programs["count"])
    assert exc.value.reason == "socket filter progs cannot use bpf_spin_lock yet"
    if kernel_unavailable_reason() is None:
        with pytest.raises(KernelUnavailable, match="socket filter progs cannot use bpf_spin_lock yet$"):
            KernelObject(obj)


@pytest.mark.parametrize("variant", ["GOOD", "BAD_OFFSET", "BAD_EXIT"])
def test_verify_against_the_kernel_from_the_cli(objects: dict[str, Path], variant: str) -> None:
    """`bpfvm verify --kernel`: one line per program with both verdicts; exit 1 when bpfvm refused."""
    from click.testing import CliRunner

    from bpfvm.cli import main

    kernel_or_skip()
    result = CliRunner().invoke(main, ["verify", "--kernel", str(objects[variant])])
    line = result.output.strip()
    if variant == "GOOD":
        assert result.exit_code == 0, result.output
        assert re.fullmatch(r"count: bpfvm verified, \d+ insns \| kernel verified, \d+ insns \| agree", line), line
    else:
        assert result.exit_code == 1, result.output
        assert line == f"count: bpfvm refused: {MISUSES[variant]} | kernel refused: {MISUSES[variant]} | agree"
    refused = CliRunner().invoke(main, ["verify", "--kernel", "--unprivileged", str(objects[variant])])
    assert refused.exit_code == 2 and "cannot be combined with --unprivileged" in refused.output
