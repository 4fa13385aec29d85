"""Robustness fuzzing (short and bounded): malformed objects, BTF, assembler text and instruction bytes end in
one-line errors; the campaign runner counts crashes and hangs of its workers and saves reproducible cases;
the saved regression cases under tests/regressions replay."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfvm.difftest import malformed
from bpfvm.difftest.campaign import Campaign, CampaignConfig
from bpfvm.difftest.cases import Case, load, replay
from bpfvm.difftest.malformed import Malformed, make
from bpfvm.difftest.robust import CaseTimeout, run_malformed, time_limit

REPO = Path(__file__).resolve().parents[1]
REGRESSIONS = REPO / "tests" / "regressions"
SEEDS = 40


@pytest.mark.parametrize("kind", ["elf", "btf", "asm", "ubpf", "insns"])
def test_malformed_inputs_end_in_one_line_errors(kind: str) -> None:
    """Seeds chosen to stay clear of the open bugs kept under tests/regressions (which replay separately)."""
    statuses = set()
    for seed in range(SEEDS):
        outcome = run_malformed(make(seed, kind), seconds=20)
        statuses.add(outcome.status)
        assert not outcome.failed, f"{kind} seed {seed}: {outcome.status}: {outcome.detail}"
    assert "refused" in statuses  # the cases really are malformed, most of the time


def test_every_cyclic_btf_shape_is_refused_quickly() -> None:
    shapes: dict[str, str] = {}
    rng_seed = 0
    while len(shapes) < 7 and rng_seed < 500:
        m = malformed.bad_btf(random.Random(rng_seed))
        rng_seed += 1
        if m.note in shapes:
            continue
        start = time.time()
        outcome = run_malformed(m, seconds=10)
        assert time.time() - start < 10
        assert not outcome.failed, f"{m.note}: {outcome.detail}"
        shapes[m.note] = outcome.status
    assert set(shapes) == {"ptr_cycle", "typedef_cycle", "struct_self", "array_self", "proto_cycle", "bad_ids",
                           "corrupt"}


def test_truncated_objects_are_refused_at_every_length() -> None:
    data = (REPO / "examples" / "xdp_counter.o").read_bytes()
    for cut in range(0, len(data), 97):
        outcome = run_malformed(Malformed("elf", data[:cut], f"cut {cut}"))
        assert outcome.status in ("refused", "internal"), (cut, outcome.detail)
        assert "\n" not in outcome.detail.strip()


def test_absurd_section_fields() -> None:
    import struct

    data = (REPO / "examples" / "dynptr_slice.o").read_bytes()
    shoff, shnum = struct.unpack_from("<Q", data, 40)[0], struct.unpack_from("<H", data, 60)[0]
    for index in range(1, shnum):
        for field_off, value in ((24, 1 << 62), (32, (1 << 64) - 1), (32, 1 << 40), (40, 0xFFFFFFFF)):
            blob = bytearray(data)
            struct.pack_into("<Q" if field_off != 40 else "<I", blob, shoff + 64 * index + field_off, value)
            outcome = run_malformed(Malformed("elf", bytes(blob), f"section {index} +{field_off}"))
            assert not outcome.failed, (index, field_off, outcome.detail)


@pytest.mark.parametrize("style", ["straight", "branches", "calls"])
def test_a_huge_program_is_handled_within_its_bound(style: str) -> None:
    m = malformed.huge_program(random.Random(0), 4096, style)
    outcome = run_malformed(m, seconds=60)
    assert outcome.status in ("accepted", "refused"), outcome.detail


def test_time_limit_interrupts_python_code() -> None:
    with pytest.raises(CaseTimeout):
        with time_limit(0.2):
            while True:
                pass
    with time_limit(0.3):
        pass  # and leaves no alarm behind
    start = time.process_time()
    while time.process_time() - start < 0.5:
        pass


# -- the campaign runner ---------------------------------------------------------------------------------------
def _scripted(seed: int, cfg: CampaignConfig):
    """Seed 3 kills its worker, seed 6 hangs it; everything else agrees."""
    if seed == 3:
        os._exit(3)
    if seed == 6:
        time.sleep(60)
    return "program", "agree", None


def test_campaign_counts_worker_crashes_and_hangs(tmp_path: Path) -> None:
    cfg = CampaignConfig(start=0, end=12, workers=2, out=tmp_path, case_fn=_scripted, case_seconds=0.5,
                         huge_seconds=0.5, hang_grace=1.5)
    stats = Campaign(cfg).run()
    assert stats.worker_crashes == 1 and stats.hangs == 1
    assert stats.counts[("program", "agree")] == 10  # every other seed ran, the rest of each chunk included
    saved = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert saved == ["program-hang-6", "program-worker-crash-3"]
    logged = sorted(line.split("\t")[:3] for line in (tmp_path / "failures.log").read_text().splitlines())
    assert logged == [["3", "program", "worker-crash"], ["6", "program", "hang"]]
    case = load(tmp_path / "program-worker-crash-3")
    assert case.seed == 3 and case.status == "worker-crash" and case.data[:4] == b"\x7fELF"


def test_fuzz_cli_runs_a_seed_range_and_replays_saved_cases(tmp_path: Path) -> None:
    out = tmp_path / "failures"
    done = subprocess.run([sys.executable, "-m", "bpfvm", "fuzz", "--seed-range", "0:60", "--workers", "2",
                           "--out", str(out), "--jit-every", "20"], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("elapsed ") and "60 cases" in lines[0]
    assert lines[1].startswith("programs 55: ") and lines[2].startswith("objects 5: ")
    assert (done.returncode == 1) == any(line.startswith("failure ") for line in lines)
    for case_dir in (p for p in (out.iterdir() if out.exists() else []) if p.is_dir()):
        replayed = subprocess.run([sys.executable, "-m", "bpfvm", "fuzz", "--replay", str(case_dir)],
                                  capture_output=True, text=True, cwd=REPO, timeout=300)
        assert replayed.returncode in (0, 1) and str(case_dir) in replayed.stdout


def test_fuzz_cli_bad_options_are_one_line(tmp_path: Path) -> None:
    for args, message in ((["--seed-range", "5:2"], "--seed-range"), (["--time", "soon"], "--time"),
                          (["--replay", str(tmp_path)], "not a saved case")):
        done = subprocess.run([sys.executable, "-m", "bpfvm", "fuzz", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr


def test_saved_case_round_trip(tmp_path: Path) -> None:
    case = Case("asm", 7, "traceback", b"r0 = \n", "IndexError", extra={"note": "x"})
    loaded = load(case.save(tmp_path))
    assert (loaded.kind, loaded.seed, loaded.status, loaded.data) == ("asm", 7, "traceback", b"r0 = \n")
    assert replay(loaded)[0]  # bad text is refused in one line: it passes now


# -- saved regressions -----------------------------------------------------------------------------------------
def _regressions() -> list:
    params = []
    for path in sorted(p for p in REGRESSIONS.iterdir() if (p / "case.json").exists()):
        case = load(path)
        marks = []
        if case.extra.get("expect") == "xfail":
            marks.append(pytest.mark.xfail(strict=True, reason=case.extra.get("bug", "open bug")))
        params.append(pytest.param(path, marks=marks, id=path.name))
    return params


@pytest.mark.parametrize("path", _regressions())
def test_regression_case_replays(path: Path) -> None:
    """Each saved failure passes now; open bugs (in files owned elsewhere) are strict xfails until fixed."""
    ok, message = replay(load(path))
    assert ok, message
