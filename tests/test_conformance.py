"""The public bpf_conformance suite, run through the library and through the CLI (both must be green)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bpfvm.conformance import iter_data_files, parse_data, run_file

BPFVM = [sys.executable, "-m", "bpfvm"]


def test_every_conformance_test_passes_on_the_interpreter(conformance_dir: Path) -> None:
    files = list(iter_data_files(conformance_dir / "tests"))
    assert len(files) == 313
    failures = [o for o in (run_file(f, "interp") for f in files) if o.status != "passed"]
    assert failures == []


def test_reserved_field_cases_are_refused_with_a_message(conformance_dir: Path) -> None:
    files = sorted((conformance_dir / "negative").glob("unused-*.data"))
    assert len(files) == 45
    for f in files:
        outcome = run_file(f)
        assert outcome.status == "passed", (f.name, outcome.reason)
        assert "reserved field" in outcome.reason or "invalid offset" in outcome.reason
        field = f.stem.rsplit("-", 1)[1]
        assert {"offset": "off"}.get(field, field) in outcome.reason


def test_cli_summary_line_and_exit_status(conformance_dir: Path) -> None:
    done = subprocess.run([*BPFVM, "conformance", str(conformance_dir / "tests")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "313 passed, 0 failed, 0 skipped"


def test_cli_reports_failures_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "wrong.data").write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    (tmp_path / "right.data").write_text("-- asm\nmov %r0, 2\nexit\n-- result\n0x2\n")
    done = subprocess.run([*BPFVM, "conformance", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "r0 = 0x1, expected 0x2" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "1 passed, 1 failed, 0 skipped"


def test_data_file_parsing_follows_the_upstream_rules() -> None:
    text = "# header\n-- asm\nmov %r0, 1 # trailing comment\nexit\n-- mem\naa bb\n0c\n-- result\n1\n0x2\n"
    test = parse_data(text)
    assert test.mem == bytes([0xAA, 0xBB, 0x0C])
    assert test.result == 2  # the last line wins
    assert len(test.insns) == 2


@pytest.mark.parametrize(
    "stdin, args, expected_out, expected_code",
    [
        ("b7 00 00 00 2a 00 00 00 95 00 00 00 00 00 00 00\n", [], "2a", 0),
        # r0 = *(u32 *)(r1 + 0) with memory from the first argument
        ("61 10 00 00 00 00 00 00 95 00 00 00 00 00 00 00\n", ["11  22  33  44  "], "44332211", 0),
        ("zz\n", [], "invalid hex", 1),
        ("b7 00 00 00 2a 00 00\n", [], "not a multiple of 8", 1),
        ("ff 00 00 00 00 00 00 00\n", [], "unknown opcode 0xff", 1),
        ("\n", [], "empty program", 1),
    ],
)
def test_conformance_plugin_protocol(stdin: str, args: list[str], expected_out: str, expected_code: int) -> None:
    done = subprocess.run([*BPFVM, "conformance-plugin", *args], input=stdin, capture_output=True, text=True)
    assert done.returncode == expected_code
    out = done.stdout if expected_code == 0 else done.stderr
    assert expected_out in out
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 1
