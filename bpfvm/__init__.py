"""bpfvm: a userspace BPF virtual machine.

    import bpfvm
    obj = bpfvm.load("prog.o")
    result = obj.programs["xdp_prog"].run(data=packet, repeat=64)
"""

from .errors import AsmError, BpfvmError, LoadError, MemoryFault, VMFault, VerifierError
from .extensions import helper, kfunc
from .isa import Insn, decode, encode
from .program import MapSpec, Program

__version__ = "0.1.0"


def load(path, **options):  # noqa: ANN001, ANN201 - the signature of bpfvm.api.load
    """Load a clang-compiled BPF object: `bpfvm.load("prog.o").programs["name"].run(data, repeat=64)`."""
    from .api import load as load_object

    return load_object(path, **options)

__all__ = [
    "AsmError", "BpfvmError", "Insn", "LoadError", "MapSpec", "MemoryFault", "Program", "VMFault",
    "VerifierError", "decode", "encode", "helper", "kfunc", "load",
]
