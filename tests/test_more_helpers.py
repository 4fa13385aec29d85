"""Helpers whose prototypes the verifier gained after the runtime implemented them (tests/progs/more_helpers.c):
verified programs using them run the same on every engine and mode as on the kernel."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bpfvm.api as api
from bpfvm.difftest.observe import ObjectSource
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import parse_spec
from bpfvm.kernel import kernel_unavailable_reason
from clang import compile_bpf


@pytest.fixture(scope="module")
def more_helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bpf("more_helpers.c", tmp_path_factory.mktemp("helpers"))


def seen(obj: api.BpfObject) -> list[int]:
    return [struct.unpack("<q", obj.maps["seen"][i])[0] for i in range(8)]


@pytest.mark.parametrize("engine,inline", [("interp", "none"), ("jit", "pruned")])
def test_tc_helpers_by_hand(more_helpers: Path, engine: str, inline: str) -> None:
    obj = api.load(more_helpers)
    packet = bytes([5]) + bytes(59)
    result = obj.programs["tc_helpers"].run(packet, engine=engine, inline=inline)
    values = seen(obj)
    assert result.retval == 0  # TC_ACT_OK
    assert values[0] == 0x12345678 and values[1] == 0  # bpf_set_hash, then bpf_set_hash_invalid
    # the key set, then read back: get reports the tunnel's source as remote_ipv4, and set wrote only its destination
    assert values[4] == 0 and values[5] == 42 << 32
    assert values[6] == 0 and values[7] == 65  # bpf_skb_change_head(skb, 5, 0) grew the packet
    assert result.data_out == bytes(5) + packet


@pytest.mark.parametrize("engine,inline", [("interp", "none"), ("jit", "pruned")])
def test_adjust_room_encapsulates_once_by_hand(more_helpers: Path, engine: str, inline: str) -> None:
    """+20 bytes after the MAC header with ENCAP_L3_IPV4, then a second encapsulation and a tail change, which
    an encapsulated skb refuses (-EALREADY, -ENOTSUPP)."""
    obj = api.load(more_helpers)
    eth = bytes(12) + b"\x08\x00"
    ip = bytes([0x45]) + bytes(19)
    knobs = bytes([20, 1 << 6, 0x01, 0x10])  # len_diff 20, BPF_ADJ_ROOM_MAC, ENCAP_L3_IPV4, try again
    packet = eth + ip + bytes(range(1, 23)) + knobs
    result = obj.programs["adjust_room"].run(packet, engine=engine, inline=inline)
    values = seen(obj)
    assert values[:3] == [0, 80, 0x0008]  # ok, 60 + 20 bytes, still ETH_P_IP (network byte order)
    assert values[3:5] == [-114, -524]
    assert result.retval == 2  # TC_ACT_SHOT: the second change failed
    assert result.data_out == eth + bytes(20) + packet[14:]


@pytest.mark.parametrize("engine,inline", [("interp", "none"), ("jit", "pruned")])
def test_fib_lookup_by_hand(more_helpers: Path, engine: str, inline: str) -> None:
    """No route is ever looked up: the test run's device does not forward; bad arguments are refused first."""
    obj = api.load(more_helpers)
    assert obj.programs["fib"].run(bytes(64), engine=engine, inline=inline).retval == 2  # XDP_PASS
    assert seen(obj)[:5] == [5, -97, -19, -22, -22]  # FWD_DISABLED, -EAFNOSUPPORT, -ENODEV, -EINVAL x2


def lo_forwards() -> bool:
    try:
        return Path("/proc/sys/net/ipv4/conf/lo/forwarding").read_text().strip() != "0"
    except OSError:
        return False


@pytest.mark.parametrize("prog", ["tc_helpers", "xdp_helpers", "adjust_room", "fib"])
@pytest.mark.parametrize("spec", ["interp,none", "jit,pruned"])
def test_more_helpers_agree_with_the_kernel(more_helpers: Path, prog: str, spec: str) -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")
    if prog == "fib" and lo_forwards():
        pytest.skip("this host's loopback device forwards IPv4, so the kernel does a real route lookup")
    session = DiffSession(ObjectSource(path=str(more_helpers)), prog, parse_spec(spec), parse_spec("kernel"))
    summary = session.run(25, seed=3)
    assert summary.mismatch is None, summary.mismatch


def test_tracing_helpers(tmp_path: Path) -> None:
    """The pid namespace of bpfvm's own process gives its ids; any other gives -EINVAL and zeros. There is no
    kernel stack (-EFAULT, buffer cleared) and no attach cookie (0)."""
    import os
    import threading

    obj = api.load(compile_bpf("tracing_helpers.c", tmp_path))
    st = os.stat("/proc/self/ns/pid")
    for dev, ino, ret, ids in ((st.st_dev, st.st_ino, 0, (os.getpid() << 32) | threading.get_native_id()),
                               (st.st_dev, st.st_ino + 1, -22, 0)):
        obj.maps["pidns"][0], obj.maps["pidns"][1] = struct.pack("<Q", dev), struct.pack("<Q", ino)
        assert obj.programs["task_ids"].run(ctx=bytes(16)).retval == 0
        assert seen(obj)[:5] == [ret, ids, -14, 0, 0]
