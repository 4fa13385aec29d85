"""The verifier: abstract interpretation in the kernel's style (see check.py for the entry point).

    from bpfvm.verifier import verify
    analysis = verify(program, log_level=1)        # raises VerifierError("insn N: ...") on rejection
    analysis.apply(program)                        # facts into program.aux, for the rewrites

Modules: tnum (tristate numbers), regs (register types and state), bounds (range sync), scalar (ALU and
branch transfer functions), state (frames, stack slots, checkpoints), cfg (structure checks, liveness),
memory (loads/stores), alu, branches, calls (helpers, subprograms, callbacks, exits), kfuncs, dynptr,
instances (inlinable kfunc instances), precision, equiv and prune (state pruning), ctx (context rules),
protos (helper prototypes), log, analysis, oracle (the running kernel's verifier, for tests).
"""

from .analysis import Analysis, Stats
from .check import verify
from .instances import InstanceSpec

__all__ = ["verify", "Analysis", "Stats", "InstanceSpec"]
