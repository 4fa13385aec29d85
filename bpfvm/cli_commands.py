"""Subcommands that work on object files: run, info, disasm."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from .cli import ENGINE_OPTION, INLINE_OPTION, KFUNCS_OPTION, main
from .errors import BpfvmError

OBJECT = click.argument("path", metavar="PROG.o", type=click.Path(path_type=Path))
PROG_OPTION = click.option("--prog", "prog_name", metavar="NAME", help="Program to use (default: the first).")
TYPE_OPTION = click.option("--type", "prog_type", metavar="TYPE",
                           help="Program type for sections bpfvm cannot infer (e.g. xdp, sched_cls, socket_filter).")


def parse_bytes(text: str, size: int | None = None, what: str = "value") -> bytes:
    """A key or value from the command line: an integer (`42`, `-1`, `0x2a`) packed little-endian to `size`
    bytes, or hex bytes (`2a 00 00 00` or `2a000000`)."""
    text = text.strip()
    if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", text):
        if size is None:
            raise BpfvmError(f"{what} {text!r}: give hex bytes when the size is unknown")
        number = int(text, 0)
        if not (-(1 << (8 * size - 1)) <= number < (1 << (8 * size))):
            raise BpfvmError(f"{what} {text} does not fit in {size} bytes")
        return (number & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    try:
        data = bytes.fromhex(text.replace(" ", ""))
    except ValueError:
        raise BpfvmError(f"{what} {text!r} is neither an integer nor hex bytes") from None
    if size is not None and len(data) != size:
        raise BpfvmError(f"{what} {text!r} is {len(data)} bytes; the map wants {size}")
    return data


def _read_input(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BpfvmError(f"cannot read {what} {path}: {exc.strerror}") from None


def _write_output(path: Path | None, data: bytes, what: str) -> None:
    if path is None:
        return
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise BpfvmError(f"cannot write {what} {path}: {exc.strerror}") from None


def _load_object_file(path: Path, prog_type: str | None):
    """The parsed object (no maps created): for commands that only look at it."""
    from .elf import load_object

    if path.is_dir():
        raise BpfvmError(f"{path}: is a directory, not an object file")
    return load_object(path, prog_type=prog_type) if prog_type else load_object(path)


def _load(path: Path, prog_type: str | None, options: dict[str, Any] | None = None):
    from .api import load

    return load(path, prog_type=prog_type, **(options or {}))


@main.command()
@OBJECT
@PROG_OPTION
@TYPE_OPTION
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 10**9), help="Runs, as BPF_PROG_TEST_RUN's repeat.")
@click.option("--data-in", type=click.Path(path_type=Path), help="Packet bytes (skb and XDP programs).")
@click.option("--data-size", type=click.IntRange(0, 1 << 20), help="Use a zero-filled packet of this many bytes instead of --data-in.")
@click.option("--data-out", type=click.Path(path_type=Path), help="Write the packet after the run here.")
@click.option("--ctx-in", type=click.Path(path_type=Path), help="Context bytes (__sk_buff, xdp_md, raw tracepoint args ...).")
@click.option("--ctx-out", type=click.Path(path_type=Path), help="Write the context after the run here.")
@click.option("--map", "map_updates", nargs=3, multiple=True, metavar="NAME KEY VALUE",
              help="Set a map element before the run (integers or hex bytes). Repeatable.")
@click.option("--dump-maps", is_flag=True, help="Print every map's contents after the run (arrays: their non-zero elements).")
@click.option("--skb-linear", type=click.IntRange(0), help="Keep only this many bytes of an skb linear (the rest in fragments).")
@click.option("--xdp-frags", type=click.IntRange(1), help="XDP multi-buffer: bytes per fragment after the first buffer.")
@click.option("--max-insns", type=click.IntRange(1), default=None, help="Instruction budget per run (runaway guard).")
@click.option("--helpers", "helper_files", multiple=True, type=click.Path(exists=True),
              help="Python file registering helpers/kfuncs with @bpfvm.helper / @bpfvm.kfunc. Repeatable.")
@ENGINE_OPTION
@INLINE_OPTION
@KFUNCS_OPTION
@click.option("--no-verify", is_flag=True, help="Run without the verifier (interpreter only: it checks every access).")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def run(path: Path, prog_name: str | None, prog_type: str | None, repeat: int, data_in: Path | None,
        data_size: int | None, data_out: Path | None, ctx_in: Path | None, ctx_out: Path | None,
        map_updates: tuple[tuple[str, str, str], ...], dump_maps: bool, skb_linear: int | None,
        xdp_frags: int | None, max_insns: int | None, helper_files: tuple[str, ...], engine: str,
        inline: str, kfunc_libraries: tuple[str, ...], no_verify: bool, as_json: bool) -> None:
    """Load PROG.o and test-run a program the way BPF_PROG_TEST_RUN does.

    Prints `Return value: R, duration (average): Nns` as bpftool does.
    """
    from .engines import get_engine
    from .extensions import load_helper_files

    get_engine(engine)  # an unknown engine is refused before any work
    load_helper_files(helper_files)
    if data_in is not None and data_size is not None:
        raise click.UsageError("give --data-in or --data-size, not both")
    options: dict[str, Any] = {"kfunc_libraries": kfunc_libraries}
    if max_insns:
        options["insn_limit"] = max_insns
    obj = _load(path, prog_type, options)
    handle = obj.program(prog_name)
    for name, key, value in map_updates:
        bpf_map = obj.map(name)
        bpf_map[parse_bytes(key, bpf_map.key_size, "key")] = parse_bytes(value, bpf_map.value_size, "value")
    data = _read_input(data_in, "packet") if data_in else (bytes(data_size) if data_size is not None else None)
    result = handle.run(data, ctx=_read_input(ctx_in, "context"), repeat=repeat, engine=engine, inline=inline,
                        verify=not no_verify, skb_linear=skb_linear, xdp_frags=xdp_frags)
    _write_output(data_out, result.data_out, "packet")
    _write_output(ctx_out, result.ctx_out, "context")
    if as_json:
        report = {"program": handle.name, "engine": engine, "inline": inline, **result.to_json()}
        if dump_maps:
            report["maps"] = {name: _dump_map(m) for name, m in obj.maps.items()}
        click.echo(json.dumps(report, indent=2))
        return
    for line in result.output:
        click.echo(line.rstrip("\n"))
    click.echo(f"Return value: {result.retval}, duration (average): {round(result.duration_ns)}ns")
    if dump_maps:
        for name, bpf_map in obj.maps.items():
            click.echo(f"map {name}: {json.dumps(_dump_map(bpf_map))}")


def _dump_map(bpf_map: Any) -> dict[str, Any]:
    """A map's contents for --dump-maps; an array lists its non-zero elements, since real programs declare
    arrays of millions of elements."""
    from helpers.maps import ArrayMap

    return bpf_map.dump(skip_zero=True) if isinstance(bpf_map, ArrayMap) else bpf_map.dump()


@main.command()
@OBJECT
@TYPE_OPTION
def info(path: Path, prog_type: str | None) -> None:
    """Programs, maps and a BTF summary of PROG.o."""
    objfile = _load_object_file(path, prog_type)
    click.echo(f"{path}: license {objfile.license or '(none)'!r}")
    click.echo("programs:")
    for name, prog in objfile.programs.items():
        subprogs = len(prog.subprog_starts()) - 1
        extra = f", {subprogs} subprograms" if subprogs else ""
        kfuncs = f", kfuncs: {', '.join(prog.kfuncs)}" if prog.kfuncs else ""
        click.echo(f"  {name}: {prog.prog_type} (section {prog.section}), {len(prog)} insns{extra}{kfuncs}")
    click.echo("maps:" if objfile.maps else "maps: none")
    from .uapi import map_type_name

    for spec in objfile.maps:
        click.echo(f"  {spec.name}: {map_type_name(spec.type)} key {spec.key_size} value {spec.value_size} "
                   f"max_entries {spec.max_entries}{' readonly' if spec.readonly else ''}")
    btf = getattr(objfile, "btf", None)
    if btf is not None:
        click.echo(f"btf: {len(btf)} types")


@main.command()
@OBJECT
@PROG_OPTION
@TYPE_OPTION
@click.option("--opcodes", is_flag=True, help="Show each instruction's opcode byte as the verifier log does.")
@click.option("--no-source", is_flag=True, help="Don't interleave C source lines from BTF line info.")
def disasm(path: Path, prog_name: str | None, prog_type: str | None, opcodes: bool, no_source: bool) -> None:
    """Disassemble programs of PROG.o in the kernel's `bpftool prog dump xlated` syntax."""
    from .disasm import disasm as render

    objfile = _load_object_file(path, prog_type)
    names = [prog_name] if prog_name else list(objfile.programs)
    for name in names:
        if name not in objfile.programs:
            raise BpfvmError(f"no program {name!r} in {path} (programs: {', '.join(objfile.programs)})")
        prog = objfile.programs[name]
        if len(names) > 1:
            click.echo(f"{name}:")
        click.echo(render(prog, opcodes=opcodes, source=not no_source), nl=False)
        sys.stdout.flush()
