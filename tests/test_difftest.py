"""Differential testing: specs, the ELF writer, inputs, comparison, minimisation, and `bpfvm diff` finding a
rewrite broken on purpose and reporting the smallest input that shows it."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

import bpfvm.api as api
from bpfvm import isa
from bpfvm.asm import assemble
from bpfvm.cli import main
from bpfvm.difftest import packets
from bpfvm.difftest.compare import compare
from bpfvm.difftest.genprog import program_elf
from bpfvm.difftest.inputs import RunCase, generate
from bpfvm.difftest.minimise import minimise
from bpfvm.difftest.observe import ObjectSource, Observation
from bpfvm.difftest.programs import random_program
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import Spec, parse_spec
from bpfvm.elf import load_object
from bpfvm.errors import BpfvmError
from bpfvm.kernel import KernelObject, kernel_unavailable_reason

REPO = Path(__file__).resolve().parents[1]


def test_specs_parse_and_bad_specs_are_one_line_errors() -> None:
    assert parse_spec("interp,none") == Spec("interp", "none")
    assert parse_spec("jit,pruned") == Spec("jit", "pruned")
    assert parse_spec("jit") == Spec("jit", "none")
    assert parse_spec(" Kernel ").is_kernel
    assert not parse_spec("interp,raw").verify
    for bad in ("warp,none", "interp,fast", "jit,raw", "interp,none,extra", ""):
        with pytest.raises(BpfvmError) as exc:
            parse_spec(bad)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("seed", range(25))
def test_written_objects_load_as_the_linked_program(seed: int) -> None:
    """The ELF writer and bpfvm's loader agree with the generator's own linking, slot for slot."""
    gen = random_program(seed)
    linked = gen.to_program()
    loaded = load_object(gen.to_elf()).programs[gen.name]
    assert loaded.insns == linked.insns
    assert loaded.kfuncs == linked.kfuncs
    assert [m.name for m in loaded.maps] == [m.name for m in linked.maps]
    assert loaded.prog_type == linked.prog_type
    assert [f.insn for f in loaded.funcs] == [f.insn for f in linked.funcs]


def test_generated_programs_call_every_kind_of_helper_and_verify() -> None:
    """The generator's call statements all occur within 300 seeds (bpf_loop with its callback through a lddw
    of a function, packet-changing helpers, ...), and every program it makes passes the verifier."""
    from bpfvm.verifier import verify

    wanted = {"bpf_loop": 181, "bpf_skb_adjust_room": 50, "bpf_skb_change_head": 43, "bpf_skb_change_tail": 38,
              "bpf_xdp_adjust_head": 44, "bpf_xdp_adjust_tail": 65, "bpf_xdp_adjust_meta": 54,
              "bpf_ringbuf_reserve": 131, "bpf_map_lookup_elem": 1, "bpf_skb_load_bytes": 26}
    seen: set[int] = set()
    callbacks = 0
    for seed in range(300):
        program = load_object(random_program(seed).to_elf()).programs["prog"]
        verify(program)
        seen |= {i.imm for i in program.insns if i.opcode == isa.OP_CALL and i.src == 0}
        callbacks += any(i.opcode == isa.OP_LDDW and i.src == isa.PSEUDO_FUNC for i in program.insns)
    assert {name for name, helper in wanted.items() if helper not in seen} == set()
    assert callbacks >= 10


def test_written_objects_load_into_the_kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")
    for seed in range(6):
        gen = random_program(seed, kernel_safe=True, max_stmts=10)
        source = ObjectSource(elf=gen.to_elf())
        try:
            with KernelObject(source.file()) as k:
                k.run(gen.name, data_in=bytes(64))
        finally:
            source.cleanup()


def test_packets_are_well_formed() -> None:
    rng = random.Random(3)
    seen = set()
    for _ in range(300):
        frame = packets.ethernet(rng)
        off = 12
        while struct.unpack_from("!H", frame, off)[0] in (packets.ETH_P_8021Q, packets.ETH_P_8021AD):
            off += 4
        ethertype = struct.unpack_from("!H", frame, off)[0]
        l3 = frame[off + 2:]
        if ethertype == packets.ETH_P_IP:
            ihl = (l3[0] & 0xF) * 4
            assert packets.checksum(l3[:ihl]) == 0  # the header checksum verifies
            total = struct.unpack_from("!H", l3, 2)[0]
            if l3[9] == packets.IPPROTO_UDP:
                seg = l3[ihl:total]
                pseudo = l3[12:20] + struct.pack("!BBH", 0, 17, len(seg))
                assert packets.checksum(pseudo + seg) == 0
            seen.add(("ipv4", l3[9]))
        elif ethertype == packets.ETH_P_IPV6:
            assert l3[0] >> 4 == 6
            assert struct.unpack_from("!H", l3, 4)[0] == len(l3) - 40 or len(frame) > off + 2 + 40
            seen.add(("ipv6", l3[6]))
    assert ("ipv4", packets.IPPROTO_TCP) in seen and ("ipv4", packets.IPPROTO_UDP) in seen
    assert any(kind == "ipv6" for kind, _ in seen)


def test_inputs_cover_the_models_options() -> None:
    rng = random.Random(1)
    cases = [generate(rng, "sched_cls") for _ in range(200)]
    assert any(c.skb_linear is not None for c in cases) and any(c.ctx is not None for c in cases)
    assert {len(c.data) for c in cases} > {0, 14}
    xdp = [generate(rng, "xdp") for _ in range(200)]
    assert any(c.xdp_frags is not None for c in xdp)
    assert all(c.kernel_ok for c in (generate(rng, "xdp", kernel=True) for _ in range(50)))
    for case in cases[:20]:
        assert RunCase.from_json(case.to_json()) == case


def test_comparison_rules() -> None:
    ran = Observation(retval=1, r0=1, data_out=b"ab", ctx_out=b"", maps={"m": {"00": "01"}}, output=[])
    assert compare(ran, Observation(**ran.fields())) == []
    other = Observation(**{**ran.fields(), "maps": {"m": {"00": "02"}}})
    assert [d.field for d in compare(ran, other)] == ["map m"]
    kernel_view = Observation(retval=1, data_out=b"ab", ctx_out=b"", maps={"m": {"00": "01"}})
    assert compare(ran, kernel_view, kernel=True) == []  # what the kernel cannot show is not compared
    fault = Observation(error="MemoryFault", detail="insn 3: out of bounds")
    refused = Observation(error="KernelRunError", detail="EINVAL")
    assert compare(fault, refused, kernel=True) == []
    assert [d.field for d in compare(fault, Observation(error="HelperError"))] == ["error"]
    assert [d.field for d in compare(fault, ran)] == ["error"]


def test_minimiser_keeps_only_what_the_difference_needs() -> None:
    def differs(case: RunCase) -> bool:
        return case.data is not None and len(case.data) > 20 and case.data[20] & 1 == 1

    start = RunCase(bytes(range(1, 201)), ctx=bytes(range(192)), skb_linear=50,
                    maps={"m": [(b"\0\0\0\0", b"\xff" * 8), (b"\1\0\0\0", b"\1" * 8)]})
    assert differs(start)
    small = minimise(start, differs)
    assert small.data == bytes(20) + b"\x01"
    assert small.ctx is None and small.skb_linear is None and small.maps == {}


def test_session_agrees_on_the_examples() -> None:
    for obj, prog in (("xdp_counter.o", "xdp_counter"), ("dynptr_slice_sum.o", "dynptr_slice_sum_buf")):
        source = ObjectSource(path=str(REPO / "examples" / obj))
        session = DiffSession(source, prog, Spec("interp", "raw"), Spec("interp", "pruned"))
        summary = session.run(15, seed=4)
        assert summary.mismatch is None, summary.mismatch
        assert summary.inputs == 15


def test_observation_matches_the_api() -> None:
    """The session's fresh-object runner sees what ProgramHandle.run sees."""
    path = REPO / "examples" / "xdp_counter.o"
    session = DiffSession(ObjectSource(path=str(path)), "xdp_counter", Spec("interp", "none"), Spec("jit", "none"))
    rng = random.Random(9)
    for _ in range(10):
        case = generate(rng, "xdp", kernel=True)
        case.maps = {}
        obs = session.a.run(case)
        obj = api.load(path)
        try:
            result = obj.programs["xdp_counter"].run(case.data)
        except BpfvmError as exc:
            assert obs.error == type(exc).__name__
            continue
        assert (obs.retval, obs.r0, obs.data_out) == (result.retval, result.r0, result.data_out)
        counts = obj.maps["proto_packets"]  # an array: the observation keeps its non-zero elements
        assert obs.maps["proto_packets"] == {k.hex(): v.hex() for k, v in counts.items() if any(v)}


# -- bpfvm diff on rewrites broken on purpose ------------------------------------------------------------------
DEAD_BRANCH = """
    r0 = 0
    r2 = *(u32 *)(r1 + 76)
    r3 = *(u32 *)(r1 + 80)
    r4 = r2
    r4 += 21
    if r4 > r3 goto done
    r5 = *(u8 *)(r2 + 20)
    r5 &= 1
    if r5 == 0 goto done
    r1 = 5
    if r1 > 10 goto done
    r0 = 2
done:
    exit
"""


def _object(tmp_path: Path, text: str, prog_type: str = "sched_cls") -> Path:
    program = assemble(text)
    program.prog_type, program.name = prog_type, "prog"
    path = tmp_path / "prog.o"
    path.write_bytes(program_elf(program))
    return path


def test_diff_finds_a_broken_dead_code_pass_and_a_minimal_input(tmp_path: Path, monkeypatch) -> None:
    """Hard-wire never-taken branches as taken: `bpfvm diff` must see it, and shrink the packet to the 21
    bytes the branch depends on, all zero but the odd byte 20."""
    from bpfvm.rewrites import dead_code

    path = _object(tmp_path, DEAD_BRANCH)
    runner = CliRunner()
    ok = runner.invoke(main, ["diff", str(path), "--a", "interp,raw", "--b", "interp,none", "--inputs", "40"])
    assert ok.exit_code == 0, ok.output
    assert "40 inputs: interp,raw and interp,none agree" in ok.output

    def broken(program, analysis=None):
        aux = dead_code._facts(program, analysis)
        for i, insn in enumerate(program.insns):
            facts = aux.get(i, {})
            if insn.is_cond_jump() and facts.get("false_branch_taken") and not facts.get("true_branch_taken"):
                program.insns[i] = isa.Insn(isa.OP_JA, 0, 0, insn.off, 0)  # wrong: the branch is never taken
        return 0

    monkeypatch.setattr(dead_code, "hard_wire_dead_branches", broken)
    bad = runner.invoke(main, ["diff", str(path), "--a", "interp,raw", "--b", "interp,none", "--inputs", "40"])
    assert bad.exit_code == 1, bad.output
    out = bad.output
    assert "MISMATCH" in out and "differ in retval" in out
    assert "packet (21 bytes):" in out
    assert "0000: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00" in out
    assert "0010: 00 00 00 00 01" in out
    assert "xlated (interp,raw):" in out and "xlated (interp,none):" in out
    assert "goto pc+1" in out.split("xlated (interp,none):")[1]  # the wrongly hard-wired jump


INLINED_SLICE = """
    r6 = r1
    *(u64 *)(r10 -8) = 7
    r1 = r6
    r2 = 0
    r3 = r10
    r3 += -32
    call bpf_dynptr_from_skb
    r1 = r10
    r1 += -32
    r2 = 0
    r3 = 0
    r4 = 1
    call bpf_dynptr_slice
    r0 = *(u64 *)(r10 -8)
    exit
"""


def test_diff_finds_a_broken_inliner_stack_shift(tmp_path: Path, monkeypatch) -> None:
    """Inline kfunc bodies without moving their stack below the caller's: the body's spills land on the
    caller's slot at r10-8, which the program returns."""
    from bpfvm.rewrites import inline

    path = _object(tmp_path, INLINED_SLICE)
    runner = CliRunner()
    ok = runner.invoke(main, ["diff", str(path), "--a", "interp,none", "--b", "interp,plain", "--inputs", "10"])
    assert ok.exit_code == 0, ok.output

    real = inline._expand
    monkeypatch.setattr(inline, "_expand", lambda body, saved, base, stack_off: real(body, saved, 0, 0))
    bad = runner.invoke(main, ["diff", str(path), "--a", "interp,none", "--b", "interp,plain", "--inputs", "10"])
    assert bad.exit_code == 1, bad.output
    assert "differ in retval" in bad.output
    assert "packet (14 bytes):" in bad.output  # the smallest packet an skb test run takes
    assert "*(u64 *)(r10 -8) = r" in bad.output.split("xlated (interp,plain):")[1]  # the clobbering spill


def test_diff_bad_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in ((["diff", str(tmp_path / "missing.o")], "no such file"),
                          (["diff", str(REPO / "examples/xdp_counter.o"), "--a", "warp"], "bad spec"),
                          (["diff", str(REPO / "examples/xdp_counter.o"), "--prog", "nope"], "no program 'nope'"),
                          (["diff", str(REPO / "README.md")], "not an ELF object")):
        done = runner.invoke(main, args)
        assert done.exit_code == 1, done.output
        assert message in done.output
        assert "Traceback" not in done.output


def test_diff_against_the_kernel(tmp_path: Path) -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")
    done = CliRunner().invoke(main, ["diff", str(REPO / "examples/xdp_counter.o"), "--a", "interp,none", "--b",
                                     "kernel", "--inputs", "8"])
    assert done.exit_code == 0, done.output
    assert "8 inputs: interp,none and kernel agree" in done.output


def test_diff_reports_a_verdict_mismatch(tmp_path: Path) -> None:
    """The verifier refuses `exit` with r0 unset; the unverified interpreter runs it: a difference in verdict."""
    path = _object(tmp_path, "r1 = 1\nexit", "socket_filter")
    done = CliRunner().invoke(main, ["diff", str(path), "--a", "interp,raw", "--b", "interp,none"])
    assert done.exit_code == 1
    assert "VERDICT MISMATCH" in done.output and "interp,none: insn 1: R0 !read_ok" in done.output
    both = CliRunner().invoke(main, ["diff", str(path), "--a", "interp,none", "--b", "jit,none"])
    assert both.exit_code == 1 and "both targets refuse prog" in both.output
