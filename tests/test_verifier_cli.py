"""`bpfvm verify` and `bpfvm xlated` on the example objects and on a rejected program."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bpfvm.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_verify_ok_and_stats() -> None:
    r = run("verify", str(EXAMPLES / "xdp_counter.o"))
    assert r.exit_code == 0, r.output
    assert "xdp_counter: verified" in r.output
    r = run("verify", "--stats", str(EXAMPLES / "xdp_counter.o"))
    assert r.output.startswith("processed ") and "(limit 1000000)" in r.output


def test_verify_log_level() -> None:
    r = run("verify", "--log-level", "1", "--prog", "xdp_counter", str(EXAMPLES / "xdp_counter.o"))
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].startswith("0: (")
    assert lines[-1].startswith("processed ")


def test_verify_rejection_is_one_line() -> None:
    from test_verifier_clang import compile_one

    path = compile_one("slice_oob")  # skips without clang-19
    r = CliRunner().invoke(main, ["verify", str(path)])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith(
        "bpfvm: error: slice_oob: insn 13: invalid access to memory, mem_size=8 off=8 size=1 (<stdin>:")
    r = CliRunner().invoke(main, ["verify", "--log-level", "1", str(path)])
    assert "R0 min value is outside of the allowed memory range" in r.output
    r = run("verify", "--prog", "nope", str(EXAMPLES / "xdp_counter.o"))
    assert r.exit_code == 1 and "no program 'nope'" in r.output


def test_xlated_lists_rewritten_program() -> None:
    r = run("xlated", str(EXAMPLES / "xdp_counter.o"))
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("0: ")
    assert "goto pc+0" not in r.output
