"""Encode a scheduled program into the two NPU binaries (specs/isa.md, specs/weights.md)."""

from __future__ import annotations

from tcc_compiler.binfmt.cmdfile import write_cmd_file
from tcc_compiler.binfmt.weightfile import write_weight_file
from tcc_compiler.schedule import Program


def encode_binaries(program: Program, tool_version: str) -> tuple[bytes, bytes]:
    """The bytes of ``npu_cmd.bin`` and ``quantized_network.bin`` for ``program``.

    Args:
        program: the lowered program (commands, DRAM region sizes, SRAM peak in bytes, slot
            table, the frozen weight layout ``program.weights``).
        tool_version: written into both headers.

    Returns:
        (cmd_bin, weight_bin).

    Raises:
        InternalError: a command field outside its width (a compiler bug; isa/codec.py).
    """
    cmd_bin = write_cmd_file(program.commands, sram_peak_bytes=program.sram_peak_bytes,
                             act_arena_bytes=program.act_arena_bytes,
                             input_bytes=program.input_bytes, output_bytes=program.output_bytes,
                             tool_version=tool_version, slots=program.slots,
                             cores=program.cores)
    return cmd_bin, write_weight_file(program.weights, tool_version)
