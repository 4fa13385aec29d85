"""What to run a program on: `interp,none`, `jit,pruned`, `interp,raw` (unverified, no rewrites at all: the
reference for the rewrites themselves) or `kernel` (BPF_PROG_TEST_RUN through bpftool)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BpfvmError

ENGINES = ("interp", "jit")
MODES = ("none", "plain", "pruned", "raw")


@dataclass(frozen=True)
class Spec:
    engine: str  # "interp", "jit" or "kernel"
    inline: str = "none"  # "none", "plain", "pruned"; "raw" runs the loaded program unverified

    @property
    def is_kernel(self) -> bool:
        return self.engine == "kernel"

    @property
    def verify(self) -> bool:
        return self.inline != "raw"

    @property
    def mode(self) -> str:
        """The inline mode passed to `prepare` ("raw" prepares as "none" without the verifier)."""
        return "none" if self.inline == "raw" else self.inline

    def __str__(self) -> str:
        return "kernel" if self.is_kernel else f"{self.engine},{self.inline}"


def parse_spec(text: str) -> Spec:
    """`ENGINE[,MODE]` or `kernel`; a bad spec is a one-line BpfvmError."""
    parts = [p.strip().lower() for p in text.split(",")]
    if parts == ["kernel"]:
        return Spec("kernel", "none")
    if not 1 <= len(parts) <= 2 or parts[0] not in ENGINES:
        raise BpfvmError(f"bad spec {text!r}: give ENGINE[,MODE] with ENGINE in {', '.join(ENGINES)} "
                         f"and MODE in {', '.join(MODES)}, or 'kernel'")
    mode = parts[1] if len(parts) == 2 else "none"
    if mode not in MODES:
        raise BpfvmError(f"bad spec {text!r}: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if mode == "raw" and parts[0] != "interp":
        raise BpfvmError(f"bad spec {text!r}: only the interpreter runs unverified (raw) programs")
    return Spec(parts[0], mode)
