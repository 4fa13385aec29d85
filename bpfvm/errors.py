"""Typed errors. Every error a user can cause is a `BpfvmError` whose message is one line that the CLI prints as is."""

from __future__ import annotations


# what would break the line: C0 controls, DEL, NEL and the Unicode line and paragraph separators
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]}
_CONTROL |= {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class BpfvmError(Exception):
    """Base of every error this package raises on bad input or a failing program.

    Its text is always one line: names taken from the input (a section called "a\\nb") are shown escaped."""

    def __str__(self) -> str:
        return super().__str__().translate(_CONTROL)


class LoadError(BpfvmError):
    """A file, object or program that cannot be loaded (malformed ELF, unknown section, bad hex ...)."""


class AsmError(BpfvmError):
    """Assembler input that does not parse. The message names the line."""


class VerifierError(BpfvmError):
    """The verifier rejected the program."""


class VMFault(BpfvmError):
    """A run-time fault of a BPF program; `pc` is the index of the faulting instruction slot."""

    def __init__(self, message: str, pc: int | None = None):
        self.pc = pc
        self.reason = message
        super().__init__(message if pc is None else f"insn {pc}: {message}")


class MemoryFault(VMFault):
    """An access outside every region the program was given, or a write to a read-only region."""


class CallDepthExceeded(VMFault):
    """More than the kernel's 8 nested bpf-to-bpf call frames."""


class InstructionLimitExceeded(VMFault):
    """The run executed more instructions than its budget allows (a runaway program)."""


class HelperError(VMFault):
    """A helper or kfunc was called with arguments it cannot serve, or is unknown."""
