"""Native BPF maps: the build, every map type and error path, and (where bpf() works) the kernel as oracle."""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bpfvm.errors import BpfvmError, MemoryFault
from bpfvm.memory import Memory
from bpfvm.program import MapSpec
from helpers import maps as M
from helpers import native_build
from helpers.maps import MapError, MapKeyError, create_map
import kernel_maps

ENOTSUPP = 524


def k4(i: int) -> bytes:
    return i.to_bytes(4, "little")


def u64(i: int) -> bytes:
    return i.to_bytes(8, "little")


@pytest.fixture
def mem() -> Memory:
    return Memory()


@pytest.fixture
def mk(mem):
    def make(type_: int, key_size: int, value_size: int, max_entries: int, flags: int = 0, **kw):
        spec_kw = {k: kw.pop(k) for k in ("initial", "inner", "readonly") if k in kw}
        return create_map(MapSpec(kw.pop("name", "m"), type_, key_size, value_size, max_entries, flags, **spec_kw),
                          mem, **kw)

    return make


def err_of(fn, *args, **kw) -> int:
    """0, or the errno of the MapError the call raises."""
    try:
        fn(*args, **kw)
    except MapError as exc:
        return exc.errno
    return 0


# -- the build ---------------------------------------------------------------------------------------------
def test_load_native_is_cached_per_process():
    assert native_build.load_native() is native_build.load_native()
    ffi, lib = native_build.load_native()
    assert lib.BPFVM_MAP_RINGBUF == 27


def test_cache_dir_follows_env_and_sources(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "a.cdef").write_text("int a(void);\n")
    monkeypatch.setenv("BPFVM_CACHE", str(tmp_path / "cache"))
    first = native_build.cache_dir(src)
    assert first.parent == tmp_path / "cache" and first.name.startswith("native-")
    (src / "a.c").write_text("int a(void) { return 2; }\n")
    assert native_build.cache_dir(src) != first


def test_build_from_any_sources_and_reuse(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "twice.c").write_text('#include "twice.cdef"\nint twice(int x) { return 2 * x; }\n')
    (src / "twice.cdef").write_text("int twice(int x);\n")
    target = tmp_path / "cache" / "native-x"
    ffi, lib = native_build.load_from(src, target)
    assert lib.twice(21) == 42
    assert sorted(p.name for p in target.iterdir()) == [native_build._built_module(target).name]
    native_build.load_from(src, target)  # reuses the built module


def test_no_compiler_is_a_typed_one_line_error(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.c").write_text("int x(void) { return 0; }\n")
    (src / "x.cdef").write_text("int x(void);\n")
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(BpfvmError) as info:
        native_build.load_from(src, tmp_path / "cache" / "native-y")
    assert "no C compiler" in str(info.value) and "\n" not in str(info.value)


def test_compile_error_is_a_typed_one_line_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.c").write_text("int bad(void) { return undefined_thing; }\n")
    (src / "bad.cdef").write_text("int bad(void);\n")
    with pytest.raises(BpfvmError) as info:
        native_build.load_from(src, tmp_path / "cache" / "native-z")
    assert "undefined_thing" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "native-z").exists()


def test_concurrent_builds_are_safe(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("maps.c", "maps.cdef"):
        shutil.copy(native_build.NATIVE_DIR / name, src / name)
    target = tmp_path / "cache" / "native-race"
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(native_build.__file__).parents[1])!r})
        from pathlib import Path
        from helpers import native_build
        ffi, lib = native_build.load_from(Path({str(src)!r}), Path({str(target)!r}))
        print(lib.BPFVM_MAP_STACK)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["23", "23"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".build-")]


# -- errors and conversions -------------------------------------------------------------------------------
def test_map_error_names_the_errno(mk):
    m = mk(M.HASH, 4, 8, 1)
    m[1] = 1
    with pytest.raises(MapError) as info:
        m[2] = 2
    exc = info.value
    assert isinstance(exc, BpfvmError) and exc.errno == errno.E2BIG and exc.errname == "E2BIG"
    assert str(exc).startswith("map 'm': update: E2BIG")
    with pytest.raises(KeyError):
        m[3]
    with pytest.raises(MapKeyError) as missing:
        del m[3]
    assert missing.value.errname == "ENOENT" and "ENOENT" in str(missing.value)


def test_bad_keys_and_values_are_typed_errors(mk):
    m = mk(M.HASH, 4, 8, 4)
    for bad_key in (b"abc", b"abcde", "text", 1 << 40, 3.5, None):
        with pytest.raises(MapError) as info:
            m[bad_key] = 1
        assert info.value.errname == "EINVAL"
    with pytest.raises(MapError):
        m[1] = b"short"
    m[-1] = -2
    assert m[b"\xff\xff\xff\xff"] == b"\xfe" + b"\xff" * 7


def test_oversized_preallocation_is_refused(mem):
    assert err_of(create_map, MapSpec("huge", M.HASH, 8, 8, 1 << 31), mem) == errno.ENOMEM
    assert err_of(create_map, MapSpec("huge", M.PERCPU_ARRAY, 4, 4096, 1 << 20), mem, ncpus=64) == errno.ENOMEM


def test_unsupported_type_and_bad_ncpus(mem):
    assert err_of(create_map, MapSpec("x", 99, 4, 4, 1), mem) == errno.EINVAL
    assert err_of(create_map, MapSpec("x", M.HASH, 4, 4, 1), mem, ncpus=0) == errno.EINVAL
    m = create_map(MapSpec("x", M.PERCPU_ARRAY, 4, 4, 1), mem, ncpus=2)
    with pytest.raises(MapError):
        m.cpu = 2
    m.cpu = 1
    assert m.cpu == 1


@pytest.mark.parametrize("type_, ks, vs, max_entries, flags, expected", [
    (M.ARRAY, 8, 4, 1, 0, errno.EINVAL),
    (M.ARRAY, 4, 0, 1, 0, errno.EINVAL),
    (M.ARRAY, 4, 4, 0, 0, errno.EINVAL),
    (M.ARRAY, 4, 4, 1, M.BPF_F_ZERO_SEED, errno.EINVAL),
    (M.PERCPU_ARRAY, 4, 40000, 1, 0, errno.E2BIG),
    (M.PERCPU_ARRAY, 4, 4, 1, M.BPF_F_INNER_MAP, errno.EINVAL),
    (M.HASH, 0, 4, 1, 0, errno.EINVAL),
    (M.HASH, 4, 0, 1, 0, errno.EINVAL),
    (M.HASH, 4, 4, 0, 0, errno.EINVAL),
    (M.HASH, 4, 4, 1, M.BPF_F_NO_COMMON_LRU, errno.EINVAL),
    (M.HASH, 4, 4, 1, M.BPF_F_RDONLY | M.BPF_F_WRONLY, errno.EINVAL),
    (M.HASH, 4, 4, 1, 1 << 20, errno.EINVAL),
    (M.HASH, 4, 1 << 22, 1, 0, errno.E2BIG),
    (M.PERCPU_HASH, 4, 40000, 1, 0, errno.E2BIG),
    (M.LRU_HASH, 4, 4, 1, M.BPF_F_NO_PREALLOC, ENOTSUPP),
    (M.PROG_ARRAY, 4, 8, 1, 0, errno.EINVAL),
    (M.QUEUE, 4, 4, 1, 0, errno.EINVAL),
    (M.STACK, 0, 0, 1, 0, errno.EINVAL),
    (M.QUEUE, 0, 4, 0, 0, errno.EINVAL),
    (M.RINGBUF, 0, 0, 3 * 4096, 0, errno.EINVAL),
    (M.RINGBUF, 0, 0, 1024, 0, errno.EINVAL),
    (M.RINGBUF, 4, 0, 4096, 0, errno.EINVAL),
    (M.RINGBUF, 0, 0, 4096, M.BPF_F_RDONLY, errno.EINVAL),
    (M.HASH, 4, 4, 1, M.BPF_F_NO_PREALLOC | M.BPF_F_ZERO_SEED, 0),
    (M.STACK, 0, 8, 4, 0, 0),
])
def test_create_checks_attributes_as_the_kernel(mem, type_, ks, vs, max_entries, flags, expected):
    assert err_of(create_map, MapSpec("c", type_, ks, vs, max_entries, flags), mem) == expected


# -- arrays ------------------------------------------------------------------------------------------------
def test_array_semantics(mk):
    m = mk(M.ARRAY, 4, 8, 4)
    assert len(m) == 4 and m.keys() == [k4(i) for i in range(4)] and m[3] == bytes(8)
    m[1] = 0x1122
    m.update(2, u64(7), M.BPF_EXIST)
    assert m[1] == u64(0x1122) and m.get(2) == u64(7) and 3 in m and 4 not in m
    assert err_of(m.update, 1, 1, M.BPF_NOEXIST) == errno.EEXIST
    assert err_of(m.update, 1, 1, 8) == errno.EINVAL
    assert err_of(m.update, 4, 1) == errno.E2BIG
    assert err_of(m.update, 1, 1, M.BPF_F_LOCK) == errno.EINVAL
    assert err_of(m.delete, 1) == errno.EINVAL
    assert err_of(m.lookup, 4) == errno.ENOENT and m.get(9, "x") == "x"
    assert m.get_next_key(None) == k4(0) and m.get_next_key(2) == k4(3)
    assert m.get_next_key(3) is None and m.get_next_key(77) == k4(0)
    assert err_of(m.lookup_and_delete, 1) == ENOTSUPP
    assert json.loads(json.dumps(m.dump()))["entries"][1] == {"key": "01000000", "value": u64(0x1122).hex()}


def test_array_native_entry_points(mk, mem):
    m = mk(M.ARRAY, 4, 8, 4)
    buf = mem.add("scratch", 32)
    mem.write(buf.start, k4(2) + u64(99))
    assert m.native.update(buf.start, buf.start + 4, 0) == 0 and m[2] == u64(99)
    addr = m.native.lookup(buf.start)
    assert m.region is not None and m.region.start + 16 == addr
    mem.store[8](addr, 1234, 0)  # the program writes through the pointer
    assert m[2] == u64(1234)
    assert m.native.update(buf.start, buf.start + 4, M.BPF_NOEXIST) == -errno.EEXIST
    assert m.native.delete(buf.start) == -errno.EINVAL
    mem.write(buf.start, k4(9))
    assert m.native.lookup(buf.start) == 0
    assert m.native.update(buf.start, buf.start + 4, 0) == -errno.E2BIG
    assert m.native.get_next_key(0, buf.start + 16) == 0 and mem.read(buf.start + 16, 4) == k4(0)
    assert m.native.get_next_key(buf.start, buf.start + 16) == 0 and mem.read(buf.start + 16, 4) == k4(0)


def test_native_entry_points_check_addresses(mk, mem):
    m = mk(M.ARRAY, 4, 8, 4)
    q = mk(M.QUEUE, 0, 8, 4, name="q")
    ro = mem.add("ro", 16, writable=False)
    for call in (lambda: m.native.lookup(0x10), lambda: m.native.update(ro.start, 0x20, 0),
                 lambda: m.native.get_next_key(0, ro.start), lambda: m.native.delete(ro.end - 2),
                 lambda: q.native.pop(ro.start), lambda: q.native.push(0x30, 0)):
        with pytest.raises(MemoryFault):
            call()
    assert m.native.lookup(ro.start) != 0  # reading a key from read-only memory is fine


def test_global_data_array(mk, mem):
    data = mk(M.ARRAY, 4, 12, 1, initial=b"hello", name=".data")
    assert data[0] == b"hello" + bytes(7)
    assert mem.read(data.value_address(0), 5) == b"hello" and data.value_address(4) == data.value_address(0) + 4
    assert err_of(data.value_address, 12) == errno.EINVAL
    rodata = mk(M.ARRAY, 4, 4, 1, initial=b"ro", readonly=True, name=".rodata")
    assert rodata.region is not None and not rodata.region.writable
    with pytest.raises(MemoryFault):
        mem.store[1](rodata.value_address(0), 1, 0)
    buf = mem.add("scratch", 8)
    assert rodata.native.update(buf.start, buf.start + 4, 0) == -errno.EPERM
    rodata[0] = b"RO\0\0"  # user space may still write (before freezing, as with libbpf)
    assert mem.read(rodata.value_address(0), 2) == b"RO"
    assert err_of(mk(M.ARRAY, 4, 4, 2, name="two").value_address, 0) == ENOTSUPP
    assert err_of(mk(M.HASH, 4, 4, 2, name="h").value_address, 0) == ENOTSUPP
    assert err_of(mk, M.ARRAY, 4, 4, 1, initial=b"too long") == errno.EINVAL


def test_spin_lock_values(mk, mem):
    m = mk(M.HASH, 4, 16, 4, spin_lock_offset=0)
    m.update(1, b"\x01\x02\x03\x04" + b"A" * 12)
    assert m[1] == bytes(4) + b"A" * 12  # the lock is neither copied in nor out
    key = mem.add("k", 4, data=k4(1))
    addr = m.native.lookup(key.start)
    m.update(1, bytes(4) + b"B" * 12, M.BPF_F_LOCK)
    assert m.native.lookup(key.start) == addr  # BPF_F_LOCK updates in place
    assert m[1] == bytes(4) + b"B" * 12 and m.lookup(1, M.BPF_F_LOCK) == m[1]
    assert err_of(m.update, 2, bytes(16), M.BPF_F_LOCK | M.BPF_EXIST) == errno.ENOENT
    a = mk(M.ARRAY, 4, 8, 1, spin_lock_offset=4, name="a")
    a.update(0, b"abcdwxyz", M.BPF_F_LOCK)
    assert a[0] == b"abcd\0\0\0\0"
    assert err_of(mk, M.PERCPU_ARRAY, 4, 8, 1, spin_lock_offset=0) == errno.EOPNOTSUPP
    assert err_of(mk, M.HASH, 4, 8, 1, spin_lock_offset=6) == errno.EINVAL


def test_percpu_array(mk, mem):
    m = mk(M.PERCPU_ARRAY, 4, 4, 2, ncpus=3)
    m[0] = [1, 2, 3]
    assert m[0] == [k4(1), k4(2), k4(3)]
    assert m.lookup_raw(0) == b"".join(k4(i) + bytes(4) for i in (1, 2, 3))  # 8-byte padded per CPU
    m[1] = 5
    assert m[1] == [k4(5)] * 3
    key = mem.add("key", 8, data=k4(0) + k4(77))
    assert mem.read(m.native.lookup(key.start), 4) == k4(1)
    m.cpu = 2
    assert mem.read(m.native.lookup(key.start), 4) == k4(3)
    assert m.native.update(key.start, key.start + 4, 0) == 0
    assert m[0] == [k4(1), k4(2), k4(77)]  # a program updates its own CPU's copy only
    assert mem.read(m.native.lookup_percpu(key.start, 0), 4) == k4(1)
    assert m.native.lookup_percpu(key.start, 3) == 0
    assert err_of(m.update, 0, [1, 2]) == errno.EINVAL
    assert err_of(m.update, 0, 1, M.BPF_F_LOCK) == errno.EINVAL
    assert err_of(m.update, 0, 1, M.BPF_NOEXIST) == errno.EEXIST
    assert m.dump()["entries"][0]["value"] == ["01000000", "02000000", "4d000000"]


# -- hash maps ---------------------------------------------------------------------------------------------
def test_hash_semantics(mk):
    m = mk(M.HASH, 4, 8, 3)
    m[1] = 10
    m.update(2, 20, M.BPF_NOEXIST)
    assert err_of(m.update, 2, 21, M.BPF_NOEXIST) == errno.EEXIST
    assert err_of(m.update, 9, 1, M.BPF_EXIST) == errno.ENOENT
    assert err_of(m.update, 9, 1, 3) == errno.EINVAL
    assert err_of(m.update, 9, 1, M.BPF_F_LOCK) == errno.EINVAL
    m.update(2, 22, M.BPF_EXIST)
    m[3] = 30
    assert err_of(m.update, 4, 40) == errno.E2BIG
    m[3] = 33  # replacing works when full
    assert len(m) == 3 and m[3] == u64(33) and 3 in m and 4 not in m
    assert err_of(m.delete, 4) == errno.ENOENT
    assert m.lookup_and_delete(1) == u64(10) and len(m) == 2 and m.get(1) is None
    assert sorted(m.keys()) == [k4(2), k4(3)]
    assert m.get_next_key(99) == m.keys()[0] and m.get_next_key(m.keys()[-1]) is None
    assert dict(m.items()) == {k4(2): u64(22), k4(3): u64(33)}
    assert json.loads(json.dumps(m.dump()))["type"] == "hash"


def test_hash_update_replaces_the_element(mk, mem):
    """As the kernel's preallocated hash: a value pointer from before an update goes stale."""
    m = mk(M.HASH, 4, 8, 4)
    key = mem.add("key", 4, data=k4(5))
    m[5] = 1
    before = m.native.lookup(key.start)
    m[5] = 2
    after = m.native.lookup(key.start)
    assert before != after and mem.read(after, 8) == u64(2) and mem.read(before, 8) == u64(1)
    assert m.region is not None and m.region.start <= before < m.region.end


def _rol(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def _jhash(key: bytes) -> int:
    """The kernel's htab hash with seed 0 (jhash2 for whole words, jhash otherwise), written independently."""
    def mix(a, b, c):
        for x, y, z, r in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4)):
            v = [a, b, c]
            v[x] = (v[x] - v[y]) & 0xFFFFFFFF
            v[x] ^= _rol(v[y], r)
            v[y] = (v[y] + v[z]) & 0xFFFFFFFF
            a, b, c = v
        return a, b, c

    def final(a, b, c):
        for x, y, r in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24)):
            v = [a, b, c]
            v[x] ^= v[y]
            v[x] = (v[x] - _rol(v[y], r)) & 0xFFFFFFFF
            a, b, c = v
        return c

    n = len(key)
    a = b = c = (0xDEADBEEF + n) & 0xFFFFFFFF
    while n > 12:
        w = struct.unpack_from("<3I", key, len(key) - n)
        a, b, c = (a + w[0]) & 0xFFFFFFFF, (b + w[1]) & 0xFFFFFFFF, (c + w[2]) & 0xFFFFFFFF
        a, b, c = mix(a, b, c)
        n -= 12
    if n == 0:
        return c
    tail = key[len(key) - n:] + bytes(12 - n)
    w = struct.unpack("<3I", tail)
    return final((a + w[0]) & 0xFFFFFFFF, (b + w[1]) & 0xFFFFFFFF, (c + w[2]) & 0xFFFFFFFF)


def test_hash_iteration_order_is_the_documented_one(mk):
    """Buckets in index order (jhash of the key, seed 0, masked by the power-of-two bucket count), newest
    first within a bucket. (jhash2 on whole words equals jhash on their bytes, so one model covers both.)"""
    for key_size in (3, 8, 12, 20):
        m = mk(M.HASH, key_size, 4, 50, name=f"k{key_size}")
        inserted = [bytes((i * 37 + j * 11) & 0xFF for j in range(key_size)) for i in range(40)]
        for key in inserted:
            m[key] = 1
        n_buckets = 64
        expected = sorted(inserted, key=lambda k: (_jhash(k) & (n_buckets - 1), -inserted.index(k)))
        assert m.keys() == expected


def test_percpu_hash(mk, mem):
    m = mk(M.PERCPU_HASH, 4, 4, 2, ncpus=2)
    buf = mem.add("buf", 8, data=k4(7) + k4(70))
    m.cpu = 1
    assert m.native.update(buf.start, buf.start + 4, 0) == 0
    assert m[7] == [bytes(4), k4(70)]  # a new element from a program: other CPUs zeroed
    first = m.native.lookup(buf.start)
    m[7] = [1, 2]
    assert m.native.lookup(buf.start) == first and mem.read(first, 4) == k4(2)  # updated in place
    m[8] = 0
    assert err_of(m.update, 9, 0) == errno.E2BIG
    assert m.native.update(buf.start, buf.start + 4, M.BPF_F_LOCK) == -errno.EINVAL
    assert m.lookup_and_delete(8) == [bytes(4), bytes(4)] and len(m) == 1


def test_lru_hash_evicts_least_recently_used(mk, mem):
    m = mk(M.LRU_HASH, 4, 8, 8, ncpus=1)
    for i in range(8):
        m[i] = i
    key = mem.add("key", 4)
    for hot in (0, 1):  # a program's lookup marks an element used
        mem.write(key.start, k4(hot))
        assert m.native.lookup(key.start)
    m.lookup(2)  # a syscall lookup does not
    m[100] = 100
    keys = {int.from_bytes(k, "little") for k in m.keys()}
    assert {0, 1, 100} <= keys and 2 not in keys and len(keys) < 9
    for i in range(200, 260):  # never fails: LRU maps evict instead
        m[i] = i
        assert len(m) <= 8


def test_lru_update_flags(mk):
    m = mk(M.LRU_HASH, 4, 8, 4, ncpus=1)
    m[1] = 1
    assert err_of(m.update, 1, 2, M.BPF_NOEXIST) == errno.EEXIST
    assert err_of(m.update, 2, 2, M.BPF_EXIST) == errno.ENOENT
    assert err_of(m.update, 1, 2, M.BPF_F_LOCK) == errno.EINVAL
    assert err_of(m.update, 1, 2, 3) == errno.EINVAL
    m.update(1, 5, M.BPF_EXIST)
    assert m[1] == u64(5) and len(m) == 1
    del m[1]
    assert err_of(m.delete, 1) == errno.ENOENT and len(m) == 0


def test_lru_per_cpu_lists(mk):
    m = mk(M.LRU_HASH, 4, 8, 5, M.BPF_F_NO_COMMON_LRU, ncpus=2)
    assert m.max_entries == 6  # rounded up to a multiple of the CPU count
    for i in range(3):
        m[i] = i
    assert len(m) == 3  # CPU 0's list holds max_entries / ncpus nodes ...
    m[3] = 3
    assert len(m) == 1  # ... and, full, evicts up to 4 unreferenced ones at once (the kernel's batch)
    m.cpu = 1
    for i in range(10, 13):
        m[i] = i
    assert len(m) == 4 and 3 in m  # CPU 1's own nodes: nothing of CPU 0's is evicted


def test_lru_percpu_hash(mk, mem):
    m = mk(M.LRU_PERCPU_HASH, 4, 8, 4, ncpus=2)
    buf = mem.add("buf", 12, data=k4(1) + u64(11))
    assert m.native.update(buf.start, buf.start + 4, 0) == 0
    assert m[1] == [u64(11), bytes(8)]
    m.update(1, [3, 4], M.BPF_EXIST)
    assert m[1] == [u64(3), u64(4)]
    for i in range(2, 30):
        m[i] = i
    assert len(m) <= 4


# -- queue and stack ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_, order", [(M.QUEUE, [1, 2, 3]), (M.STACK, [3, 2, 1])])
def test_queue_and_stack(mk, type_, order):
    m = mk(type_, 0, 4, 3)
    for v in (1, 2, 3):
        m.push(v)
    assert err_of(m.push, 4) == errno.E2BIG
    assert m.values() == [k4(v) for v in order] and len(m) == 3
    assert m.peek() == k4(order[0]) and m[None] == k4(order[0])
    assert [m.pop() for _ in range(3)] == [k4(v) for v in order]
    assert err_of(m.pop) == errno.ENOENT and err_of(m.peek) == errno.ENOENT
    assert err_of(m.push, 1, M.BPF_NOEXIST) == errno.EINVAL and err_of(m.push, 1, 4) == errno.EINVAL
    for v in (1, 2, 3, 4):  # BPF_EXIST makes room by dropping the oldest
        m.push(v, M.BPF_EXIST)
    assert sorted(m.values()) == [k4(2), k4(3), k4(4)]
    assert err_of(m.delete, None) == errno.EINVAL and err_of(m.get_next_key, None) == errno.EINVAL
    assert err_of(m.update, 1, 1) == errno.EINVAL  # a queue has no keys
    assert m.dump()["values"] == [v.hex() for v in m.values()]


def test_queue_native_entry_points(mk, mem):
    m = mk(M.QUEUE, 0, 8, 2)
    buf = mem.add("buf", 16, data=u64(5) + u64(0xFF))
    assert m.native.push(buf.start, 0) == 0 and m.native.push(buf.start, 0) == 0
    assert m.native.push(buf.start, 0) == -errno.E2BIG
    assert m.native.peek(buf.start + 8) == 0 and mem.read(buf.start + 8, 8) == u64(5)
    assert m.native.pop(buf.start + 8) == 0 and m.native.pop(buf.start + 8) == 0
    mem.write(buf.start + 8, u64(0xFF))
    assert m.native.pop(buf.start + 8) == -errno.ENOENT and mem.read(buf.start + 8, 8) == bytes(8)
    assert m.native.lookup(buf.start) == 0 and m.native.update(buf.start, buf.start, 0) == -errno.EINVAL
    h = mk(M.HASH, 4, 8, 2, name="h")
    assert h.native.push(buf.start, 0) == -errno.EINVAL and h.native.pop(buf.start + 8) == -errno.EINVAL


# -- ring buffer --------------------------------------------------------------------------------------------
def header(mem: Memory, sample: int) -> tuple[int, int]:
    return struct.unpack("<II", mem.read(sample - 8, 8))


def test_ringbuf_records_and_header_layout(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    a = rb.native.reserve(5, 0)
    b = rb.native.reserve(3, 0)
    assert a and b == a + 16  # 8-byte header + 5 bytes rounded up to 8
    assert header(mem, a)[0] == 5 | M.RINGBUF_BUSY_BIT
    assert rb.query(M.BPF_RB_PROD_POS) == 32 and rb.query(M.BPF_RB_AVAIL_DATA) == 32
    mem.write(a, b"hello")
    mem.write(b, b"bye")
    assert rb.native.submit(b, 0) == 0
    assert rb.drain() == []  # the first record is still reserved
    assert rb.native.submit(a, 0) == 0
    assert header(mem, a)[0] == 5
    # the page offset restores the ring buffer's start from a record, as the kernel's submit does
    assert rb.region is not None and header(mem, a)[1] == header(mem, b)[1] == 3
    assert ((a - 8) & ~4095) - 3 * 4096 == rb.region.start - 3 * 4096
    assert rb.peek_records() == [b"hello", b"bye"] and len(rb) == 2
    assert rb.drain() == [b"hello", b"bye"] and rb.drain() == []
    assert rb.query(M.BPF_RB_CONS_POS) == 32 and rb.query(M.BPF_RB_AVAIL_DATA) == 0
    assert rb.query(M.BPF_RB_RING_SIZE) == 4096 and rb.query(99) == 0


def test_ringbuf_discard_output_and_errors(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    d = rb.native.reserve(8, 0)
    assert rb.native.discard(d, 0) == 0
    assert header(mem, d)[0] == 8 | M.RINGBUF_DISCARD_BIT
    assert rb.native.submit(d, 0) == -errno.EINVAL  # no longer reserved
    assert rb.native.submit(d + 8, 0) == -errno.EINVAL and rb.native.submit(0x1000, 0) == -errno.EINVAL
    src = mem.add("src", 16, data=b"0123456789abcdef")
    assert rb.native.output(src.start, 16, 0) == 0
    assert rb.native.output(src.start, 16, 4) == -errno.EINVAL
    assert rb.native.reserve(8, 1) == 0 and rb.native.reserve(4096, 0) == 0
    with pytest.raises(MemoryFault):
        rb.native.output(0x10, 4, 0)
    assert rb.drain() == [b"0123456789abcdef"]
    assert err_of(rb.lookup, None) == ENOTSUPP and err_of(rb.get_next_key, None) == ENOTSUPP
    assert err_of(rb.delete, None) == ENOTSUPP


def test_ringbuf_full_and_pending_records(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    first = rb.native.reserve(100, 0)  # stays reserved
    count = 1
    while rb.native.reserve(100, 0):
        count += 1
    assert count == 4095 // 112 and rb.query(M.BPF_RB_AVAIL_DATA) == 4032
    assert rb.native.output(mem.add("s", 64).start, 64, 0) == -errno.EAGAIN  # 72 bytes would fill it
    assert rb.drain() == []
    assert rb.native.submit(first, 0) == 0
    assert rb.drain() == [bytes(100)]  # the next one is still reserved


def test_ringbuf_wraparound_is_contiguous(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    payload = bytes(range(256)) * 8
    for round_ in range(7):
        rec = rb.native.reserve(1500, 0)
        assert rec
        data = payload[round_ : round_ + 1500]
        mem.write(rec, data)  # one contiguous write, even across the end of the data area
        assert rb.native.submit(rec, 0) == 0
        assert rb.drain() == [data]
    assert rb.query(M.BPF_RB_CONS_POS) > 4096


def test_ringbuf_wakeups_and_lookup_by_address(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    other = mk(M.RINGBUF, 0, 0, 8192, name="other")
    r = rb.native.reserve(4, 0)
    assert M.ringbuf_from_address(r) is rb and M.ringbuf_from_address(other.native.reserve(4, 0)) is other
    assert M.ringbuf_from_address(mem.add("x", 8).start) is None
    rb.native.submit(r, M.BPF_RB_NO_WAKEUP)
    assert rb.wakeups == 0
    rb.native.submit(rb.native.reserve(4, 0), M.BPF_RB_FORCE_WAKEUP)
    assert rb.wakeups == 1
    rb.drain()
    rb.output(b"x")  # the consumer caught up: wake it
    assert rb.wakeups == 2
    assert json.loads(json.dumps(rb.dump()))["records"] == ["78"]


def test_ringbuf_corrupt_header_is_a_typed_error(mk, mem):
    rb = mk(M.RINGBUF, 0, 0, 4096)
    r = rb.native.reserve(8, 0)
    rb.native.submit(r, 0)
    mem.write(r - 8, struct.pack("<I", 5000))  # a program wrote over a committed header
    with pytest.raises(MapError) as info:
        rb.drain()
    assert info.value.errname == "EFAULT"


# -- slots: prog array, perf event array, map-in-map ---------------------------------------------------------
def test_prog_array(mk, mem):
    m = mk(M.PROG_ARRAY, 4, 4, 4)
    prog = object()
    m[1] = prog
    assert m[1] is prog and m.get_prog(1) is prog and m.get_prog(0) is None and m.get_prog(99) is None
    assert 1 in m and 0 not in m and len(m) == 1 and m.keys() == [k4(1)]
    assert err_of(m.update, 0, prog, M.BPF_NOEXIST) == errno.EINVAL
    assert err_of(m.update, 4, prog) == errno.E2BIG
    assert err_of(m.update, 0, None) == errno.EBADF
    assert err_of(m.delete, 0) == errno.ENOENT and err_of(m.delete, 9) == errno.E2BIG
    key = mem.add("k", 4, data=k4(1))
    assert m.native.lookup(key.start) == 0 and m.native.delete(key.start) == -errno.EINVAL
    m[1] = "replacement"
    assert m[1] == "replacement" and len(m._objects) == 1
    del m[1]
    assert m.get_prog(1) is None and not m._objects
    assert m.get_next_key(None) == k4(0)


def test_perf_event_array(mk):
    m = mk(M.PERF_EVENT_ARRAY, 4, 4, 0, ncpus=3)
    assert m.max_entries == 3
    m.emit(1, b"abc")
    m.emit(0, b"d")
    assert m.dump()["records"] == [{"index": 1, "data": "616263"}, {"index": 0, "data": "64"}]
    assert m.drain() == [(1, b"abc"), (0, b"d")] and m.records == []
    assert err_of(m.lookup, 0) == errno.ENOENT


def test_array_of_maps(mk, mem):
    inner_spec = MapSpec("inner", M.HASH, 4, 8, 4)
    outer = mk(M.ARRAY_OF_MAPS, 4, 4, 2, inner=inner_spec)
    inner = outer.new_inner("inner")
    inner[5] = 55
    outer[0] = inner
    assert outer[0] is inner and 0 in outer and 1 not in outer and len(outer) == 1
    key = mem.add("k", 4, data=k4(0))
    handle = outer.native.lookup(key.start)
    assert handle == inner.handle_addr and M.map_from_handle(handle) is inner
    mem.write(key.start, k4(1))
    assert outer.native.lookup(key.start) == 0
    wrong = create_map(MapSpec("wrong", M.HASH, 4, 16, 4), mem)
    assert err_of(outer.update, 1, wrong) == errno.EINVAL
    assert err_of(outer.update, 1, inner, M.BPF_NOEXIST) == errno.EINVAL
    assert err_of(outer.update, 2, inner) == errno.E2BIG
    assert err_of(outer.update, 1, "not a map") == errno.EBADF
    assert outer.dump()["entries"] == [{"key": "00000000", "value": "inner"}]
    del outer[0]
    assert err_of(outer.lookup, 0) == errno.ENOENT and err_of(outer.delete, 0) == errno.ENOENT
    assert err_of(mk, M.ARRAY_OF_MAPS, 4, 4, 2) == errno.EINVAL  # no inner template
    nested = MapSpec("n", M.ARRAY_OF_MAPS, 4, 4, 1, inner=inner_spec)
    assert err_of(mk, M.ARRAY_OF_MAPS, 4, 4, 2, inner=nested) == errno.EINVAL


def test_array_inner_maps_must_match_max_entries_unless_inner_map_flag(mk, mem):
    outer = mk(M.ARRAY_OF_MAPS, 4, 4, 2, inner=MapSpec("i", M.ARRAY, 4, 4, 8))
    assert err_of(outer.update, 0, create_map(MapSpec("a", M.ARRAY, 4, 4, 9), mem)) == errno.EINVAL
    outer[0] = create_map(MapSpec("b", M.ARRAY, 4, 4, 8), mem)
    flexible = mk(M.ARRAY_OF_MAPS, 4, 4, 2, inner=MapSpec("i", M.ARRAY, 4, 4, 8, M.BPF_F_INNER_MAP), name="f")
    flexible[0] = create_map(MapSpec("c", M.ARRAY, 4, 4, 100, M.BPF_F_INNER_MAP), mem)


def test_hash_of_maps(mk, mem):
    outer = mk(M.HASH_OF_MAPS, 8, 4, 2, inner=MapSpec("i", M.QUEUE, 0, 4, 4))
    q1, q2 = outer.new_inner("q1"), outer.new_inner("q2")
    outer.update(1, q1, M.BPF_NOEXIST)
    assert err_of(outer.update, 1, q2, M.BPF_NOEXIST) == errno.EEXIST
    assert err_of(outer.update, 2, q2, M.BPF_EXIST) == errno.ENOENT
    outer[1] = q2
    outer[2] = q1
    assert err_of(outer.update, 3, q1) == errno.E2BIG
    key = mem.add("k", 8, data=u64(1))
    assert outer.native.lookup(key.start) == q2.handle_addr
    assert outer[1] is q2 and sorted(outer.keys()) == [u64(1), u64(2)] and len(outer) == 2
    assert outer.region is None  # inner pointers are never program-writable memory
    del outer[1]
    assert outer.native.lookup(key.start) == 0 and outer.native.update(key.start, key.start, 0) == -errno.EINVAL


def test_storage_outlives_the_python_object(mem):
    m = create_map(MapSpec("gone", M.ARRAY, 4, 8, 1), mem)
    m[0] = 0xABCD
    region = m.region
    del m
    gc.collect()
    assert region is not None and mem.read(region.start, 8) == u64(0xABCD)


# -- the kernel as oracle ------------------------------------------------------------------------------------
@pytest.fixture
def kernel():
    """Skip without bpf(); pin to CPU 0 so per-CPU state (LRU lists, per-CPU values) is deterministic."""
    reason = kernel_maps.unavailable_reason()
    if reason:
        pytest.skip(reason)
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield kernel_maps.possible_cpus()
    finally:
        os.sched_setaffinity(0, saved)


class Pair:
    """The same map in the kernel and in bpfvm (on CPU 0, with the kernel's CPU count)."""

    def __init__(self, mem: Memory, ncpus: int, type_: int, ks: int, vs: int, max_entries: int, flags: int = 0):
        self.k = kernel_maps.KernelMap(type_, ks, vs, max_entries, flags)
        self.m = create_map(MapSpec("oracle", type_, ks, vs, max_entries, flags), mem, ncpus=ncpus)
        self.key = mem.add("oracle-key", max(ks, 1))
        self.mem = mem
        self.log: list[str] = []

    def close(self) -> None:
        self.k.close()

    def _ours(self, fn, *args):
        try:
            return 0, fn(*args)
        except MapError as exc:
            return exc.errno, None

    def update(self, key, value: bytes, flags: int = 0):
        kres = self.k.update(key, value, flags)
        ores = self._ours(self.m.update, key, value, flags)[0] if key is not None else self._ours(
            self.m.push, value, flags)[0]
        return self.check(("update", key, flags), kres, ores)

    def lookup(self, key):
        kerr, kval = self.k.lookup(key)
        oerr, oval = self._ours(self.m.lookup_raw, key)
        return self.check(("lookup", key), (kerr, kval), (oerr, oval))

    def delete(self, key):
        return self.check(("delete", key), self.k.delete(key), self._ours(self.m.delete, key)[0])

    def pop(self):
        kerr, kval = self.k.lookup_and_delete(None)
        oerr, oval = self._ours(self.m.lookup_and_delete, None)
        return self.check(("pop",), (kerr, kval), (oerr, oval))

    def next_key(self, key):
        err, nxt = self._ours(self.m.get_next_key, key)
        return self.check(("next", key), self.k.get_next_key(key), (errno.ENOENT, None) if (err, nxt) == (0, None) else (err, nxt))

    def prog_lookup(self, key: bytes):
        self.mem.write(self.key.start, key)
        return self.check(("prog_lookup", key), self.k.prog_lookup(key), int(self.m.native.lookup(self.key.start) != 0))

    def keys(self):
        return self.check(("keys",), self.k.keys(), self.m.keys())

    def check(self, op, kres, ores):
        self.log.append(f"{op} -> kernel {kres!r} bpfvm {ores!r}")
        assert kres == ores, "\n".join(self.log[-12:])
        return kres


@pytest.fixture
def pair(kernel, mem):
    made: list[Pair] = []

    def make(*args, **kw) -> Pair:
        p = Pair(mem, kernel, *args, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.mark.kernel
@pytest.mark.parametrize("type_, ks, vs, max_entries, flags", [
    (M.ARRAY, 8, 4, 1, 0), (M.ARRAY, 4, 4, 0, 0), (M.ARRAY, 4, 4, 1, M.BPF_F_ZERO_SEED),
    (M.HASH, 0, 4, 1, 0), (M.HASH, 4, 4, 1, M.BPF_F_NO_COMMON_LRU), (M.HASH, 4, 4, 1, M.BPF_F_RDONLY | M.BPF_F_WRONLY),
    (M.HASH, 4, 1 << 22, 1, 0), (M.PERCPU_HASH, 4, 40000, 1, 0), (M.PERCPU_ARRAY, 4, 40000, 1, 0),
    (M.LRU_HASH, 4, 4, 1, M.BPF_F_NO_PREALLOC), (M.PROG_ARRAY, 4, 8, 1, 0), (M.QUEUE, 4, 4, 1, 0),
    (M.STACK, 0, 0, 1, 0), (M.RINGBUF, 0, 0, 3 * 4096, 0), (M.RINGBUF, 0, 0, 1024, 0), (M.RINGBUF, 4, 0, 4096, 0),
    (M.HASH, 4, 4, 1, 1 << 20), (M.HASH, 4, 4, 1, M.BPF_F_ZERO_SEED), (M.QUEUE, 0, 4, 2, 0), (99, 4, 4, 1, 0),
])
def test_kernel_create_errors(kernel, mem, type_, ks, vs, max_entries, flags):
    kerr = kernel_maps.KernelMap.create_errno(type_, ks, vs, max_entries, flags)
    assert kerr == err_of(create_map, MapSpec("c", type_, ks, vs, max_entries, flags), mem, ncpus=kernel)


@pytest.mark.kernel
def test_kernel_array(pair):
    p = pair(M.ARRAY, 4, 8, 3)
    for key, flags in ((0, 0), (1, M.BPF_EXIST), (1, M.BPF_NOEXIST), (3, 0), (2, 3), (2, M.BPF_F_LOCK)):
        p.update(k4(key), u64(key + 100), flags)
    for key in (0, 1, 2, 3, 1 << 31):
        p.lookup(k4(key))
        p.next_key(k4(key))
        p.delete(k4(key))
    p.next_key(None)
    p.keys()


@pytest.mark.kernel
@pytest.mark.parametrize("key_size", [4, 3, 12, 13])
def test_kernel_hash(pair, key_size):
    p = pair(M.HASH, key_size, 8, 10, M.BPF_F_ZERO_SEED)
    rng = random.Random(key_size)
    keys = [bytes(rng.randrange(256) for _ in range(key_size)) for _ in range(14)]
    for step in range(120):
        key = rng.choice(keys)
        op = rng.randrange(6)
        if op <= 2:
            p.update(key, u64(step), rng.choice([0, 0, M.BPF_NOEXIST, M.BPF_EXIST, 5]))
        elif op == 3:
            p.delete(key)
        elif op == 4:
            p.lookup(key)
        else:
            p.next_key(key)
        p.keys()  # the exact iteration order, after every step


@pytest.mark.kernel
def test_kernel_percpu_maps(pair, kernel):
    stride = 8
    for type_ in (M.PERCPU_ARRAY, M.PERCPU_HASH):
        p = pair(type_, 4, 6, 2, M.BPF_F_ZERO_SEED if type_ == M.PERCPU_HASH else 0)
        blob = lambda seed: bytes((seed + i) & 0xFF for i in range(stride * kernel))  # noqa: E731
        for key, flags in ((0, 0), (1, M.BPF_NOEXIST), (1, M.BPF_NOEXIST), (2, 0), (0, M.BPF_EXIST), (5, 0)):
            p.update(k4(key), blob(key * 7 + flags), flags)
            p.lookup(k4(key))
        p.update(k4(0), blob(1), M.BPF_F_LOCK)
        p.keys()


@pytest.mark.kernel
@pytest.mark.parametrize("type_, flags, max_entries", [
    (M.LRU_HASH, 0, 8), (M.LRU_HASH, 0, 32), (M.LRU_HASH, M.BPF_F_NO_COMMON_LRU, 8),
    (M.LRU_HASH, M.BPF_F_NO_COMMON_LRU, 12), (M.LRU_PERCPU_HASH, 0, 8), (M.LRU_PERCPU_HASH, M.BPF_F_NO_COMMON_LRU, 8),
])
def test_kernel_lru_eviction(pair, kernel, type_, flags, max_entries):
    """Eviction order, including program lookups that mark elements used, matches the kernel on one CPU."""
    p = pair(type_, 4, 8, max_entries, flags | M.BPF_F_ZERO_SEED)
    value = u64(1) * (kernel if type_ == M.LRU_PERCPU_HASH else 1)
    for i in range(max_entries + 4):  # a deterministic fill past capacity
        p.update(k4(i), value)
        p.keys()
    rng = random.Random(max_entries * 10 + flags)
    for _ in range(250):
        key = k4(rng.randrange(3 * max_entries))
        op = rng.randrange(10)
        if op < 5:
            p.update(key, value, rng.choice([0, 0, 0, M.BPF_NOEXIST, M.BPF_EXIST]))
        elif op < 8:
            p.prog_lookup(key)
        elif op == 8:
            p.lookup(key)
        else:
            p.delete(key)
        p.keys()


@pytest.mark.kernel
@pytest.mark.parametrize("type_", [M.QUEUE, M.STACK])
def test_kernel_queue_stack(pair, type_):
    p = pair(type_, 0, 4, 3)
    p.pop()
    for v in range(5):
        p.update(None, k4(v))
    p.lookup(None)
    p.update(None, k4(9), M.BPF_EXIST)
    p.update(None, k4(9), M.BPF_NOEXIST)
    for _ in range(4):
        p.pop()
    p.next_key(None)
    p.check(("delete",), p.k.delete(None), err_of(p.m.delete, None))


@pytest.mark.kernel
def test_kernel_ringbuf_syscalls(pair):
    p = pair(M.RINGBUF, 0, 0, 4096)
    p.check(("lookup",), p.k.lookup(None)[0], err_of(p.m.lookup, None))
    p.check(("update",), p.k.update(None, b""), err_of(p.m.update, None, b""))
    p.check(("next",), p.k.get_next_key(None)[0], err_of(p.m.get_next_key, None))
