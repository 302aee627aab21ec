"""The stream program's files (``--cores 2``; specs/manifest.md "Stream program").

:func:`stream_files` encodes ``program.stream`` (schedule/corestream.py: several images per run,
each core on its own images) as ``npu_cmd_stream.bin`` and, when its WEIGHTS region differs
from the main program's, ``quantized_network_stream.bin``; the manifest's ``stream`` object
says which files, how many images a run takes and where each image's input and output sit.
"""

from __future__ import annotations

import zlib

from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.emit.files import STREAM_CMD_FILE, STREAM_WEIGHT_FILE, WEIGHT_FILE
from tcc_compiler.schedule import Program
from tcc_compiler.target import Target


def stream_files(program: Program, weight_bin: bytes, tgt: Target, tool_version: str
                 ) -> tuple[dict[str, bytes], dict | None]:
    """(file name -> bytes, the manifest's ``stream`` object) of ``program.stream``; ({},
    None) without one. ``weight_bin`` is the main program's quantized_network.bin: the stream
    program reads it when its own weight file would be the same bytes.

    Raises:
        InternalError: a command field outside its width (a compiler bug; isa/codec.py).
    """
    sp = program.stream
    if sp is None:
        return {}, None
    cmd_bin, w_bin = encode_binaries(sp.program, tool_version)
    files = {STREAM_CMD_FILE: cmd_bin}
    weights = WEIGHT_FILE
    if w_bin != weight_bin:
        files[STREAM_WEIGHT_FILE] = w_bin
        weights = STREAM_WEIGHT_FILE
    p = sp.program
    return files, {
        "commands": STREAM_CMD_FILE, "weights": weights, "cores": p.cores,
        "images": sp.images, "images_per_core": sp.batch,
        "input_stride_bytes": sp.input_stride_bytes,
        "output_stride_bytes": sp.output_stride_bytes,
        "act_arena_bytes": p.act_arena_bytes, "input_bytes": p.input_bytes,
        "output_bytes": p.output_bytes,
        "input_offsets": {x.name: x.offset for x in p.inputs},
        "output_offsets": {x.name: x.offset for x in p.outputs},
        "tail_from": sp.tail_from,
        "run_cycles": sp.run_cycles, "period_cycles": sp.period_cycles,
        "period_ms": sp.period_cycles / tgt.clock_hz * 1e3,
        "files": {name: {"bytes": len(b), "crc32": zlib.crc32(b)} for name, b in files.items()},
    }
