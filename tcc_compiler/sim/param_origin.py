"""Where in ``quantized_network.bin`` a parameter record the executor refuses came from.

A CONV_TILE's parameter records are read from SRAM, but their bytes were put there by a weight
load (:mod:`tcc_compiler.sim.provenance`): when the records are wrong, the bytes to blame are
in the weight file, not in ``npu_cmd.bin``, and the message says so (file, byte offset, layer
table entry and record). Records that no single unchanged weight load put there (SRAM a
command overwrote, or bytes spread over several loads) are the command stream's fault: the
caller names the command as before.
"""

from __future__ import annotations

from collections.abc import Hashable

from tcc_compiler.binfmt.weightfile import WeightFile
from tcc_compiler.isa import spec


def record_origin(weights: WeightFile | None, source: tuple[Hashable, int] | None,
                  record: int) -> str | None:
    """``"<weight file>: byte N (layer table entry L, ...)"`` for record ``record`` (0-based,
    16 bytes each) of parameter bytes whose provenance is ``source`` (``(load source, offset
    of the first record in its data)`` from :meth:`Provenance.source_of`); None when the bytes
    did not come from one weight load, or there is no weight file.

    A DMA_LOAD source maps the record's place in the loaded bytes back through the load's
    DRAM pattern (``run_bytes`` x ``n1`` x ``n2`` with its strides) to its WEIGHTS offset; a
    DMA_LOAD_Z source names the compressed block's first byte and the record's place in the
    block's decompressed bytes (a compressed record has no byte of its own in the file).
    """
    if weights is None or source is None:
        return None
    (src, offset) = source
    at = offset + record * spec.PARAM_RECORD_BYTES
    region_off = src[1] & spec.REGION_OFFSET_MASK
    if src[0] == "Z":
        return (f"{weights.locate(region_off)}: a DEFLATE block whose decompressed bytes "
                f"{at}..{at + spec.PARAM_RECORD_BYTES - 1} hold the record")
    _, _, run, n1, _, ds1, ds2 = src
    i2, rest = divmod(at, n1 * run)
    i1, j = divmod(rest, run)
    return weights.locate(region_off + i2 * ds2 + i1 * ds1 + j)
