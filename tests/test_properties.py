"""Property tests over generated programs (hypothesis; bounded, derandomized so a failure is reproducible):

  * every inline mode (`none`, `plain`, `pruned`) gives what the unverified, unrewritten program gives on
    the interpreter, which checks every access;
  * the JIT gives what the interpreter gives;
  * the interpreter gives what the kernel gives (where bpf() is permitted), kfunc programs included: the
    generated objects carry BTF for their extern kfuncs;
  * random instruction bytes and assembler text end in a one-line BpfvmError or run, never a traceback.

Generated programs avoid a failing `bpf_dynptr_adjust` while its bug is open (see tests/regressions,
kfunc-int-return-zero-extension).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfvm.difftest.malformed import VALID_OPCODES, Malformed
from bpfvm.difftest.malformed import repair
from bpfvm.difftest.observe import ObjectSource
from bpfvm.difftest.progcheck import check_program
from bpfvm.difftest.programs import PROG_TYPES, programs
from bpfvm.difftest.robust import run_malformed
from bpfvm.difftest.session import DiffSession
from bpfvm.difftest.spec import Spec
from bpfvm.disasm import disasm
from bpfvm.errors import VerifierError
from bpfvm.kernel import kernel_unavailable_reason

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


def _explain(program, outcome) -> str:
    return (f"{outcome.status} on {outcome.spec}: {outcome.detail}\n"
            f"{outcome.case.describe() if outcome.case else ''}\n{disasm(program.to_program())}")


@settings(max_examples=60, **SETTINGS)
@given(programs(max_stmts=20))
def test_inline_modes_agree_with_the_unverified_program(program) -> None:
    specs = [Spec("interp", "none"), Spec("interp", "plain"), Spec("interp", "pruned")]
    outcome = check_program(program, specs=specs, inputs=2)
    assert outcome.status == "agree", _explain(program, outcome)


@settings(max_examples=15, **SETTINGS)
@given(programs(max_stmts=15))
def test_jit_agrees_with_the_interpreter(program) -> None:
    outcome = check_program(program, specs=[Spec("jit", "none"), Spec("jit", "pruned")], inputs=2)
    assert outcome.status == "agree", _explain(program, outcome)


@settings(max_examples=20, **SETTINGS)
@given(programs(max_stmts=15), st.sampled_from(PROG_TYPES))
def test_written_objects_behave_like_the_linked_program(program, _type) -> None:
    """The ELF path (writer + bpfvm's loader) and the direct path give the same runs."""
    outcome = check_program(program, specs=[Spec("interp", "none")], inputs=1, via_elf=True)
    assert outcome.status == "agree", _explain(program, outcome)


@pytest.fixture(scope="module")
def kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason:
        pytest.skip(f"kernel oracle unavailable: {reason}")


@settings(max_examples=12, **SETTINGS)
@given(programs(kernel_safe=True, max_stmts=15))
def test_interpreter_agrees_with_the_kernel(kernel, program) -> None:
    session = DiffSession(ObjectSource(elf=program.to_elf()), program.name, Spec("interp", "none"), Spec("kernel"))
    try:
        summary = session.run(2, seed=1, shrink=False)
    finally:
        session.close()
    assert summary.verdicts is not None and summary.verdicts.a is None and summary.verdicts.b is None, \
        f"{summary.verdicts}\n{disasm(program.to_program())}"
    m = summary.mismatch
    assert m is None, f"{m.diffs}\n{m.case.describe()}\n{disasm(program.to_program())}"


@settings(max_examples=200, **SETTINGS)
@given(st.binary(max_size=200), st.sampled_from(["socket_filter", "sched_cls", "xdp", "raw_tracepoint"]))
def test_random_instruction_bytes_never_crash(data: bytes, prog_type: str) -> None:
    outcome = run_malformed(Malformed("insns", data, "hypothesis", prog_type), seconds=20)
    assert not outcome.failed and outcome.status != "multiline", outcome.detail


@settings(max_examples=150, **SETTINGS)
@given(st.text(max_size=300), st.sampled_from(["asm"]))
def test_random_assembler_text_never_crashes(text: str, dialect: str) -> None:
    outcome = run_malformed(Malformed(dialect, text.encode(), "hypothesis"), seconds=20)
    assert not outcome.failed and outcome.status != "multiline", outcome.detail


@settings(max_examples=200, **SETTINGS)
@given(st.lists(st.tuples(st.sampled_from(VALID_OPCODES), st.integers(0, 10), st.integers(0, 10),
                          st.sampled_from([0, 1, -1, 2, -8, 8]), st.integers(-(1 << 31), (1 << 31) - 1)),
                min_size=1, max_size=24),
       st.sampled_from(["socket_filter", "sched_cls", "xdp"]))
def test_the_verifier_rejects_in_one_line(fields, prog_type: str) -> None:
    """Decodable random programs: verified, or refused with a one-line VerifierError, nothing else."""
    from bpfvm import isa
    from bpfvm.errors import BpfvmError
    from bpfvm.pipeline import prepare
    from bpfvm.program import Program

    insns = [repair(isa.Insn(*f)) for f in fields] + [isa.Insn(isa.OP_EXIT)]
    try:
        isa.validate_program(insns)
    except BpfvmError:
        return
    try:
        prepare(Program(insns, prog_type=prog_type))
    except VerifierError as exc:
        assert "\n" not in str(exc).strip()
    except BpfvmError as exc:  # e.g. a call to a helper bpfvm refuses by name at prepare
        assert "\n" not in str(exc).strip()
