"""Binary containers written by the emitter and read by the executor (specs/isa.md, weights.md).

``npu_cmd.bin`` (:mod:`~tcc_compiler.binfmt.cmdfile`) holds the command stream;
``quantized_network.bin`` (:mod:`~tcc_compiler.binfmt.weightfile`) holds weights and parameters.
"""

from tcc_compiler.binfmt.cmdfile import CmdFile, read_cmd_file, write_cmd_file  # noqa: F401
from tcc_compiler.binfmt.weightfile import (  # noqa: F401
    LayerEntry,
    LayerKind,
    WeightFile,
    WeightFileBuilder,
    compression_summary,
    read_weight_file,
)
