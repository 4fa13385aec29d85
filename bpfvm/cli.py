"""The `bpfvm` command line. Every error a user can cause ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import BpfvmError

EXIT_FAILURE = 1
EXIT_INTERNAL = 70


def _fail(message: str, code: int = EXIT_FAILURE) -> None:
    click.echo(f"bpfvm: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns every error into one line: BpfvmError as it is, anything else as an internal error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except BpfvmError as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # the reader went away (`bpfvm disasm x.o | head`): stop quietly
            sys.stdout = open(os.devnull, "w")
            sys.exit(141)
        except (OSError, MemoryError, RecursionError) as exc:
            _fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in bpfvm: say so in one line, keep the traceback for developers
            if os.environ.get("BPFVM_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set BPFVM_DEBUG=1 for the traceback)", EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bpfvm")
def main() -> None:
    """bpfvm: load, verify, run, inline, JIT and benchmark BPF programs without a kernel.

    \b
    Examples:
      bpfvm run --repeat 64 --data-size 1000 examples/dynptr_slice.o
      bpfvm conformance ../shared/conformance/tests
      bpfvm disasm prog.o
    """


ENGINE_OPTION = click.option(
    "--engine", default="interp", show_default=True, metavar="ENGINE",
    help="Execution engine: interp (reference interpreter) or jit (native code via llvmlite).",
)


INLINE_OPTION = click.option(
    "--inline", "inline", type=click.Choice(["none", "plain", "pruned"]), default="none", show_default=True,
    help="Inlinable kfuncs: none (calls stay calls), plain (bodies copied in after verification) or pruned "
         "(bodies instantiated per call site, verified, dead branches removed, then copied in).",
)
KFUNCS_OPTION = click.option(
    "--kfuncs", "kfunc_libraries", multiple=True, type=click.Path(exists=True, dir_okay=False),
    help="A BPF object whose global functions are further inlinable kfuncs. Repeatable.",
)


def _load_user_helpers(paths: tuple[str, ...]) -> dict[int, Callable[..., int]]:
    from .extensions import load_helper_files

    return load_helper_files(paths)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@ENGINE_OPTION
@click.option("--quiet", "-q", is_flag=True, help="Print only failures and the summary line.")
def conformance(path: Path, engine: str, quiet: bool) -> None:
    """Run every bpf_conformance `.data` test under PATH (recursively).

    Prints each failure with its reason and ends with `N passed, N failed, N skipped`; exits 1 on any failure.
    """
    from .conformance import iter_data_files, run_file
    from .engines import get_engine
    from .progress import progress_iter

    get_engine(engine)  # an unknown engine is a usage error before any work starts
    files = list(iter_data_files(path))
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for file in progress_iter(files, "conformance"):
        outcome = run_file(file, engine)
        counts[outcome.status] += 1
        if outcome.status == "failed":
            click.echo(f"FAIL {file}: {outcome.reason}")
        elif outcome.status == "skipped" and not quiet:
            click.echo(f"SKIP {file}: {outcome.reason}")
    click.echo(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    sys.exit(1 if counts["failed"] else 0)


@main.command("conformance-plugin", context_settings={"ignore_unknown_options": True})
@click.argument("memory", required=False, default="")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@ENGINE_OPTION
@click.option("--helpers", "helper_files", multiple=True, type=click.Path(exists=True),
              help="Python file registering extra helpers with @bpfvm.helper(id). Repeatable.")
def conformance_plugin(memory: str, extra: tuple[str, ...], engine: str, helper_files: tuple[str, ...]) -> None:
    """Plugin for the upstream bpf_conformance runner.

    Reads the program as hex bytes on stdin, takes the memory as hex in the first argument, runs the program and
    prints r0 in hex. Use: `bpf_conformance_runner --plugin_path bpfvm --plugin_options conformance-plugin`.
    """
    from . import isa
    from .conformance import plugin_decode, run_insns

    if "--elf" in extra:
        _fail("--elf input is not supported by this plugin; pass raw instructions")
    program_text = sys.stdin.read()
    code = plugin_decode(program_text)
    insns = isa.decode(code)
    mem = plugin_decode(memory) if memory else b""
    r0 = run_insns(insns, mem, engine=engine, helpers=_load_user_helpers(helper_files))
    click.echo(f"{r0:x}")


# Each stage registers its subcommands on `main` from a module of its own.
from . import cli_bench, cli_commands, cli_diff, cli_verify  # noqa: E402,F401
