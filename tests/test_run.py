"""`bpfvm run` and the Python API on the shipped examples, compared with the kernel's BPF_PROG_TEST_RUN."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm.kernel import KernelObject, kernel_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
BPFVM = [sys.executable, "-m", "bpfvm"]


@pytest.fixture(scope="module")
def kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


def ipv4_frame(proto: int, payload: bytes = b"", dst_mac: bytes = b"\xaa" * 6) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))
    return dst_mac + b"\xbb" * 6 + b"\x08\x00" + ip + payload


PACKETS = [
    ipv4_frame(6, b"x" * 40),
    ipv4_frame(17, b"y" * 8),
    ipv4_frame(1, b""),
    b"\x00" * 6 + b"\x11" * 6 + b"\x86\xdd" + b"\x60" + b"\0" * 47,  # IPv6: dropped
    b"\x01" * 20,  # runt, not IPv4
    bytes(random.Random(7).randrange(256) for _ in range(300)),
]


def test_dynptr_slice_counts_hits(kernel: None) -> None:
    obj = api.load(EXAMPLES / "dynptr_slice.o")
    result = obj.programs["dynptr_slice"].run(bytes(1000), repeat=64)
    with KernelObject(EXAMPLES / "dynptr_slice.o") as k:
        expected = k.run("dynptr_slice", data_in=bytes(1000), repeat=64)
        kernel_hits = k.map_dump(".bss")
    assert result.retval == expected.retval == 0
    assert result.data_out == expected.data_out
    assert obj.maps[".bss"].dump()["entries"][0]["value"] == kernel_hits[b"\0\0\0\0"].hex()
    assert int.from_bytes(bytes.fromhex(obj.maps[".bss"].dump()["entries"][0]["value"]), "little") == 64 * 100


@pytest.mark.parametrize("prog", ["dynptr_slice_sum", "dynptr_slice_sum_buf"])
@pytest.mark.parametrize("size", [1000, 100, 60, 14])
def test_dynptr_slice_sum_matches_kernel(kernel: None, prog: str, size: int) -> None:
    packet = bytes((i * 7 + 3) & 0xFF for i in range(size))
    obj = api.load(EXAMPLES / "dynptr_slice_sum.o")
    result = obj.programs[prog].run(packet)
    with KernelObject(EXAMPLES / "dynptr_slice_sum.o") as k:
        expected = k.run(prog, data_in=packet)
    assert result.retval == expected.retval
    assert result.data_out == expected.data_out


def test_dynptr_slice_sum_on_a_nonlinear_skb() -> None:
    """Hand-checked against bpf_dynptr_slice's semantics: without a buffer, slices past the linear part fail
    (each adds 0x100); with a buffer, they are copied and the sum is that of the linear packet."""
    packet = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    obj = api.load(EXAMPLES / "dynptr_slice_sum.o")
    linear_sum = sum(packet[:100])
    no_buf = obj.programs["dynptr_slice_sum"].run(packet, skb_linear=40)
    assert no_buf.retval == sum(packet[:40]) + 60 * 0x100
    with_buf = obj.programs["dynptr_slice_sum_buf"].run(packet, skb_linear=40)
    assert with_buf.retval == linear_sum


def test_xdp_counter_matches_kernel_packet_by_packet(kernel: None) -> None:
    obj = api.load(EXAMPLES / "xdp_counter.o")
    prog = obj.programs["xdp_counter"]
    with KernelObject(EXAMPLES / "xdp_counter.o") as k:
        for packet in PACKETS:
            mine = prog.run(packet, repeat=3)
            theirs = k.run("xdp_counter", data_in=packet, repeat=3)
            assert (mine.retval, mine.data_out) == (theirs.retval, theirs.data_out), packet[:16].hex()
        kernel_counts = k.map_dump("proto_packets")
        kernel_bytes = k.map_dump(".bss")
    mine_counts = {bytes.fromhex(e["key"]): bytes.fromhex(e["value"]) for e in obj.maps["proto_packets"].dump()["entries"]}
    assert mine_counts == kernel_counts
    assert obj.maps[".bss"][0] == kernel_bytes[b"\0\0\0\0"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*BPFVM, *args], capture_output=True, text=True, input=stdin, cwd=REPO)


def test_cli_run_prints_like_bpftool() -> None:
    done = run_cli("run", "--repeat", "64", "--data-size", "1000", "examples/dynptr_slice.o")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("Return value: 0, duration (average): ")
    assert lines[-1].endswith("ns")


def test_cli_run_json_maps_and_packet_files(tmp_path: Path) -> None:
    packet = ipv4_frame(17, b"z" * 10)
    (tmp_path / "in.bin").write_bytes(packet)
    done = run_cli("run", "examples/xdp_counter.o", "--data-in", str(tmp_path / "in.bin"), "--data-out",
                   str(tmp_path / "out.bin"), "--map", "proto_packets", "17", "41", "--dump-maps", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["retval"] == 2  # XDP_PASS
    entries = {e["key"]: e["value"] for e in report["maps"]["proto_packets"]["entries"]}
    assert entries["11000000"] == (42).to_bytes(8, "little").hex()  # 41 set from the CLI, +1 by the program
    out = (tmp_path / "out.bin").read_bytes()
    assert out[:6] == bytes([2, 0, 0, 0, 0, 1]) and out[6:] == packet[6:]  # the rewritten destination MAC


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "missing.o"], "missing.o: no such file"),
        (["run", "README.md"], "not an ELF object"),
        (["run", "examples/xdp_counter.o", "--prog", "nope"], "no program 'nope'"),
        (["run", "examples/xdp_counter.o", "--map", "nope", "1", "2"], "no map 'nope'"),
        (["run", "examples/xdp_counter.o", "--map", "proto_packets", "1", "zz"], "neither an integer nor hex"),
        (["run", "examples/xdp_counter.o", "--repeat", "0"], "Invalid value for '--repeat'"),
        (["run", "examples/xdp_counter.o", "--engine", "warp"], "unknown engine 'warp'"),
        (["run", "examples/xdp_counter.o", "--data-in", "missing.bin"], "cannot read packet missing.bin"),
        (["info", "examples"], "is a directory"),
        (["disasm", "examples/xdp_counter.o", "--prog", "zzz"], "no program 'zzz'"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len([ln for ln in done.stderr.splitlines() if ln.strip()]) <= 3  # click usage errors print a short usage


def test_truncated_object_is_refused_in_one_line(tmp_path: Path) -> None:
    data = (EXAMPLES / "xdp_counter.o").read_bytes()
    for cut in (10, 64, 200, len(data) // 2, len(data) - 8):
        (tmp_path / "cut.o").write_bytes(data[:cut])
        done = run_cli("run", str(tmp_path / "cut.o"))
        assert done.returncode == 1
        assert done.stderr.startswith("bpfvm: error: ")
        assert len(done.stderr.strip().splitlines()) == 1
