"""Where the bytes of the reference executor's SRAM came from: which ranges still hold an
unchanged copy of read-only WEIGHTS data (a DMA_LOAD_Z block, or a DMA_LOAD from WEIGHTS that
writes one contiguous range).

Why: a conv tile's weights and parameter records are prepared once (GEMM-ready weights, the
epilogue's factors) and reused. Knowing that the SRAM bytes a tile reads are exactly bytes
``[off, off + n)`` of a given load's data lets the executor find its prepared form by that
*source* instead of comparing the bytes with the ones it was prepared from (a memcmp of every
weight tile, about a tenth of ResNet-50's run time). The source determines the bytes: WEIGHTS
is read-only (no command writes it) and a DMA_LOAD_Z block decodes to the same bytes every
time (specs/weights.md).

Soundness: every command that writes SRAM reports its written byte ranges
(:meth:`~tcc_compiler.isa.commands.Command.accesses`, the same description the hazard checker
uses); the executor calls :meth:`Provenance.written` with their hull after each such command,
which forgets every source range it overlaps, before recording the new source of a weight
load. So a range is looked up only while no command has written any of its bytes since the
load that filled it.
"""

from __future__ import annotations

from collections.abc import Hashable

from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import Access, Command, DmaLoad, DmaLoadZ, Space


class Provenance:
    """The SRAM ranges of one core that hold unchanged copies of WEIGHTS data.

    Ranges are ``[start, end)`` in SRAM bytes, each with a hashable *source* naming the load
    that filled it (:func:`weight_source`); they never overlap.
    """

    def __init__(self) -> None:
        self._ranges: list[tuple[int, int, Hashable]] = []

    def written(self, start: int, end: int) -> None:
        """Forget every source range overlapping SRAM bytes ``[start, end)`` (written)."""
        if self._ranges:
            self._ranges = [r for r in self._ranges if r[1] <= start or r[0] >= end]

    def loaded(self, start: int, end: int, source: Hashable) -> None:
        """SRAM ``[start, end)`` now holds the data of ``source`` (and nothing older)."""
        self.written(start, end)
        if end > start:
            self._ranges.append((start, end, source))

    def source_of(self, addr: int, nbytes: int) -> tuple[Hashable, int] | None:
        """(source, offset into its data) of SRAM ``[addr, addr + nbytes)`` when one source
        range holds all of it, else None."""
        end = addr + nbytes
        for start, stop, src in self._ranges:
            if start <= addr and end <= stop:
                return src, addr - start
        return None


def weight_source(cmd: Command) -> Hashable | None:
    """The source of the SRAM bytes a weight load writes, or None when the command is not one
    (another command, a DMA_LOAD from another region, or one whose destination runs leave
    gaps or overlap): DMA_LOAD_Z -> its block (WEIGHTS offset and sizes); a DMA_LOAD from
    WEIGHTS whose runs fill ``[sram, sram + total_bytes)`` contiguously -> its DRAM pattern."""
    if isinstance(cmd, DmaLoadZ):
        return ("Z", cmd.dram, cmd.src_bytes, cmd.dst_bytes)
    if not isinstance(cmd, DmaLoad):
        return None
    region, _ = spec.split_dram_address(cmd.dram)
    if region is not spec.Region.WEIGHTS:
        return None
    run, n1 = cmd.run_bytes, cmd.n1
    row = (n1 - 1) * cmd.sram_stride1 + run
    if (n1 > 1 and cmd.sram_stride1 != run) or (cmd.n2 > 1 and cmd.sram_stride2 != row):
        return None
    return ("D", cmd.dram, run, n1, cmd.n2, cmd.dram_stride1, cmd.dram_stride2)


def sram_write_hull(accesses: list[Access]) -> tuple[int, int] | None:
    """The hull ``(start, end)`` of the SRAM bytes written among ``accesses``, or None."""
    lo = hi = None
    for a in accesses:
        if a.is_write and a.space is Space.SRAM and a.end > a.start:
            lo = a.start if lo is None else min(lo, a.start)
            hi = a.end if hi is None else max(hi, a.end)
    return None if lo is None else (lo, hi)
