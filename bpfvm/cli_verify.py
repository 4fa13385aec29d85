"""Subcommands of the verifier and rewrites: verify, xlated."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cli import INLINE_OPTION, KFUNCS_OPTION, main
from .errors import BpfvmError, VerifierError

OBJECT = click.argument("path", metavar="PROG.o", type=click.Path(path_type=Path))
PROG_OPTION = click.option("--prog", "prog_name", metavar="NAME", help="Program to use (default: every program).")
TYPE_OPTION = click.option("--type", "prog_type", metavar="TYPE",
                           help="Program type for sections bpfvm cannot infer (e.g. xdp, sched_cls, socket_filter).")


def _programs(path: Path, prog_type: str | None, prog_name: str | None):
    from .cli_commands import _load_object_file

    objfile = _load_object_file(path, prog_type)
    if prog_name:
        if prog_name not in objfile.programs:
            raise BpfvmError(f"no program {prog_name!r} in {path} (programs: {', '.join(objfile.programs)})")
        return [(prog_name, objfile.programs[prog_name])]
    if not objfile.programs:
        raise BpfvmError(f"{path}: no programs")
    return list(objfile.programs.items())


@main.command("verify")
@OBJECT
@PROG_OPTION
@TYPE_OPTION
@click.option("--log-level", type=click.IntRange(0, 2), default=0, show_default=True,
              help="1: every processed instruction with the registers it wrote; 2: also full states.")
@click.option("--stats", is_flag=True, help="Print the kernel's stats line (processed insns, states).")
@click.option("--unprivileged", is_flag=True, help="Apply the rules for loaders without CAP_BPF/CAP_PERFMON.")
@click.option("--kernel", "against_kernel", is_flag=True,
              help="Also load the object into the running kernel (pinned privately, never attached) and print "
                   "its verdict and processed count next to bpfvm's.")
def verify_cmd(path: Path, prog_name: str | None, prog_type: str | None, log_level: int, stats: bool,
               unprivileged: bool, against_kernel: bool) -> None:
    """Verify programs of PROG.o as the kernel's verifier would, printing its log.

    Exits 1 on the first rejection, after the one-line reason `insn N: ... (file.c:LINE: source)`.
    With --kernel, every program is verified by both and compared; exits 1 if bpfvm rejected any.
    """
    from .verifier import verify

    progs = _programs(path, prog_type, prog_name)
    if against_kernel:
        _verify_against_kernel(path, prog_type, progs, unprivileged)
        return
    for name, prog in progs:
        try:
            analysis = verify(prog, log_level=log_level, privileged=not unprivileged)
        except VerifierError as exc:
            log = getattr(exc, "log", "")
            if log:
                click.echo(log, nl=False)
            click.echo(f"bpfvm: error: {name}: {exc}", err=True)
            sys.exit(1)
        if log_level:
            click.echo(analysis.log, nl=False)
        elif stats:
            click.echo(analysis.stats_line())
        prefix = f"{name}: " if len(progs) > 1 or not (log_level or stats) else ""
        if not log_level and not stats:
            click.echo(f"{prefix}verified, {analysis.stats.processed} insns processed")
        elif len(progs) > 1:
            click.echo(f"{name}: verified")


def _verify_against_kernel(path: Path, prog_type: str | None, progs: list, unprivileged: bool) -> None:
    """One line per program: bpfvm's verdict and processed count, then the kernel's, and whether they agree."""
    from .kernel import KernelUnavailable, kernel_unavailable_reason, kernel_verdicts
    from .verifier import verify

    if unprivileged:
        raise click.UsageError("--kernel loads as root: it cannot be combined with --unprivileged")
    reason = kernel_unavailable_reason()
    if reason:
        raise BpfvmError(f"the kernel cannot verify here: {reason}")
    types = {prog.prog_type for _, prog in progs}
    try:
        try:
            theirs = kernel_verdicts(path, prog_type=prog_type)
        except KernelUnavailable as exc:
            if prog_type or len(types) != 1 or "section" not in str(exc):
                raise
            # libbpf could not name a section bpfvm inferred a type for: give it that type
            theirs = kernel_verdicts(path, prog_type=types.pop())
        unloaded = "not loaded: libbpf stopped at an earlier program"
    except KernelUnavailable as exc:
        theirs, unloaded = {}, str(exc)
    refused = False
    for name, prog in progs:
        try:
            ours = f"verified, {verify(prog).stats.processed} insns"
            accepted = True
        except VerifierError as exc:
            ours, accepted, refused = f"refused: {exc.reason}", False, True
        kernel = theirs.get(name)
        if kernel is None:
            click.echo(f"{name}: bpfvm {ours} | kernel {unloaded}")
            continue
        said = f"verified, {kernel.processed} insns" if kernel.accepted else f"refused: {kernel.reason}"
        agree = "agree" if accepted == kernel.accepted else "DISAGREE"
        click.echo(f"{name}: bpfvm {ours} | kernel {said} | {agree}")
    if refused:
        sys.exit(1)


@main.command()
@OBJECT
@PROG_OPTION
@TYPE_OPTION
@INLINE_OPTION
@KFUNCS_OPTION
@click.option("--opcodes", is_flag=True, help="Show each instruction's opcode byte as the verifier log does.")
def xlated(path: Path, prog_name: str | None, prog_type: str | None, inline: str,
           kfunc_libraries: tuple[str, ...], opcodes: bool) -> None:
    """Print programs of PROG.o after verification and the rewrites (dead branches hard-wired, dead code and
    no-ops removed; with --inline, kfunc bodies inlined), as `bpftool prog dump xlated` shows them."""
    from .api import _kfunc_library
    from .disasm import disasm
    from .pipeline import prepare

    progs = _programs(path, prog_type, prog_name)
    library = _kfunc_library(kfunc_libraries) if inline != "none" or kfunc_libraries else None
    for name, prog in progs:
        try:
            prepared = prepare(prog, mode=inline, library=library)
        except VerifierError as exc:
            raise BpfvmError(f"{name}: {exc}") from None
        if len(progs) > 1:
            click.echo(f"{name}:")
        click.echo(disasm(prepared.program, opcodes=opcodes, kfunc_names=True, map_names=True), nl=False)
        sys.stdout.flush()
