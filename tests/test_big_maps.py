"""Maps of millions of elements, as real load balancers declare them: reading an array skips its all-zero
elements in bulk, in bpfvm (`ArrayMap.items(skip_zero=True)`, `run --dump-maps`) and in the kernel
(`bpfvm.bpfsys`, BPF_MAP_LOOKUP_BATCH), so `bpfvm diff --b kernel` on such a program stays in memory and time.

Expected values are worked out by hand from tests/progs/big_maps.c."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

import bpfvm.api as api
from bpfvm import bpfsys
from bpfvm.cli import main
from bpfvm.difftest.observe import ObjectSource
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import Spec, parse_spec
from bpfvm.kernel import KernelObject, kernel_unavailable_reason
from bpfvm.memory import Memory
from bpfvm.program import MapSpec
from clang import compile_bpf
from helpers.maps import ARRAY, PERCPU_ARRAY, Map, create_map

RING_SIZE = 1 << 22
XDP_PASS, XDP_TX = 2, 3


@pytest.fixture(scope="module")
def big_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf("big_maps.c", tmp_path_factory.mktemp("big"))


@pytest.fixture(scope="module")
def kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


def packet(slot: int, word1: int, size: int = 64) -> bytes:
    return struct.pack("<II", slot, word1).ljust(size, b"\xee")


@pytest.mark.parametrize("map_type,ncpus", [(ARRAY, 1), (PERCPU_ARRAY, 3)])
def test_skip_zero_keeps_exactly_the_non_zero_elements(map_type: int, ncpus: int) -> None:
    """17-byte values sit in 24-byte slots: a byte written into the padding alone does not make a value."""
    m = create_map(MapSpec("m", map_type, 4, 17, 5000), Memory(), ncpus=ncpus)
    value = bytes(range(1, 18))
    for index in (0, 2730, 2731, 4999):  # 2730 * 24 bytes is where a 64 KiB scan block ends
        m[index] = value
    m[17] = bytes(17)
    elem = 24 * ncpus
    m.region.view[elem * 9 + 20] = b"\x7f"  # the padding of element 9
    by_lookup = Map.items(m)  # element by element, through the syscall-style lookup
    assert m.items() == by_lookup
    full = [(k, v) for k, v in by_lookup if any(b"".join(v) if isinstance(v, list) else v)]
    assert m.items(skip_zero=True) == full
    assert [int.from_bytes(k, "little") for k, _ in full] == [0, 2730, 2731, 4999]
    assert len(m.items()) == 5000
    dump = m.dump(skip_zero=True)
    assert (len(dump["entries"]), dump["zero_entries_not_shown"]) == (4, 4996)


def test_run_dump_maps_shows_non_zero_array_elements(big_maps: Path, tmp_path: Path) -> None:
    (tmp_path / "pkt").write_bytes(packet(RING_SIZE - 1, 4))
    result = CliRunner().invoke(main, ["run", str(big_maps), "--data-in", str(tmp_path / "pkt"), "--dump-maps",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["retval"] == XDP_TX  # the last slot is odd
    ring = report["maps"]["ring"]
    assert ring["entries"] == [{"key": (RING_SIZE - 1).to_bytes(4, "little").hex(), "value": "05000000"}]
    assert ring["zero_entries_not_shown"] == RING_SIZE - 1
    totals = report["maps"]["totals"]["entries"]
    assert totals == [{"key": "04000000", "value": (struct.pack("<QQ", 1, 0) + b"\0").hex()}]


def test_kernel_reads_of_a_large_array_agree_with_bpfvm(big_maps: Path, kernel: None) -> None:
    pkt = packet(2, 0xFFFF_FFFF)
    batch = bpfsys.BATCH_ELEMENTS
    preset = {batch - 1: 7, batch: 8, RING_SIZE - 1: 9}
    obj = api.load(big_maps)
    for index, value in preset.items():
        obj.maps["ring"][index] = value.to_bytes(4, "little")
    ours = obj.programs["ring_writer"].run(pkt)
    with KernelObject(big_maps) as k:
        for index, value in preset.items():
            k.map_update("ring", index.to_bytes(4, "little"), value.to_bytes(4, "little"))
        theirs = k.run("ring_writer", data_in=pkt)
        ring = k.map_dump("ring", skip_zero_array_values=True)
        stats = k.map_dump("stats", skip_zero_array_values=True)
        totals = k.map_dump("totals", skip_zero_array_values=True)
    expected_ring = {i.to_bytes(4, "little"): v.to_bytes(4, "little") for i, v in {**preset, 2: 0xFFFF_FFFF}.items()}
    assert ours.retval == theirs.retval == XDP_PASS
    assert ring == expected_ring == dict(obj.maps["ring"].items(skip_zero=True))
    assert totals == dict(obj.maps["totals"].items(skip_zero=True))
    assert totals == {(1023).to_bytes(4, "little"): struct.pack("<QQ", 1, 0) + b"\xff"}
    # per-CPU: the kernel gives every possible CPU's value; the run counted on exactly one of them
    (key, values), = stats.items()
    per_cpu = [struct.unpack_from("<QQ", values, off) for off in range(0, len(values), 17)]  # unpadded values
    assert key == (1023).to_bytes(4, "little") and sorted(per_cpu)[-1] == (1, 64) and sum(p for p, _ in per_cpu) == 1


def test_diff_against_the_kernel_on_large_maps(big_maps: Path, kernel: None) -> None:
    """Generated inputs fill random elements of the 4M-element ring; every array is compared afterwards."""
    session = DiffSession(ObjectSource(path=str(big_maps)), "ring_writer", Spec("jit", "pruned"), parse_spec("kernel"))
    summary = session.run(6, seed=11)
    assert summary.mismatch is None, summary.mismatch
    assert summary.inputs == 6


def test_a_dropped_objects_maps_are_freed_before_more_storage_is_taken(big_maps: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects hold reference cycles; loading more map storage than the threshold runs the cyclic collector,
    so a loop of loads (bpfvm diff, one object per input) does not pile up gigabytes of dead maps."""
    import gc
    import weakref

    gc.collect()
    monkeypatch.setattr(api, "COLLECT_AFTER_MAP_BYTES", 8 << 20)  # the 16 MiB ring is over it
    gc.disable()  # only the explicit pass may free it
    try:
        first = api.load(big_maps)
        ring = weakref.ref(first.maps["ring"])
        del first
        assert ring() is not None  # kept alive by the object's cycles
        api.load(big_maps)
        assert ring() is None
    finally:
        gc.enable()


def test_kernel_loads_leave_no_pins_behind(tmp_path: Path, kernel: None) -> None:
    """libbpf pins LIBBPF_PIN_BY_NAME maps at /sys/fs/bpf/<name>, outside bpfvm's private directory: the
    kernel oracle removes those its load created, whether the load succeeds or bpftool gives up."""
    from bpfvm.kernel import BPFFS, KernelUnavailable, kernel_verdicts

    obj = compile_bpf("xdp_maps.c", tmp_path)  # hash_map is pinned by name
    before = set(BPFFS.iterdir())
    assert set(kernel_verdicts(obj)) == {"xdp_main", "tail_target"}
    try:
        KernelObject(obj).close()
    except KernelUnavailable:
        pass  # bpftool's pinmaps cannot re-pin a map libbpf pinned by name
    assert set(BPFFS.iterdir()) == before
