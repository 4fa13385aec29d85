"""The internal rejection signal: raised anywhere in the verifier with the slot and the kernel's wording, and
turned into one `VerifierError` line (`insn N: ... (file.c:LINE: text)`) at the top."""

from __future__ import annotations


class Reject(Exception):
    """The program is unsafe (or beyond what the verifier can prove) at slot `insn`."""

    def __init__(self, insn: int, message: str, *extra_lines: str):
        super().__init__(message)
        self.insn = insn
        self.message = message
        self.extra_lines = extra_lines


class Fallback(Exception):
    """Precision backtracking met something it does not follow; mark every scalar precise instead."""
