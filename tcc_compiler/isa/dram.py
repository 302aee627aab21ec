"""DRAM addresses of the command set (specs/isa.md "Machine model"): a u32 address is a region
(bits 31..30, :class:`Region`) and a byte offset inside it (bits 29..0). Re-exported by
:mod:`tcc_compiler.isa.spec`.
"""

from __future__ import annotations

import enum

from tcc_compiler.errors import InternalError


class Region(enum.IntEnum):
    """DRAM region selected by bits 31..30 of a DRAM address; bits 29..0 are the byte offset."""

    WEIGHTS = 0   # data section of quantized_network.bin, read-only
    ACT = 1       # activation arena
    INPUT = 2     # network input
    OUTPUT = 3    # network outputs


REGION_SHIFT = 30
#: Mask of the byte offset inside a region (bits 29..0); a region holds at most 1 GiB.
REGION_OFFSET_MASK = (1 << REGION_SHIFT) - 1


def dram_address(region: Region, offset: int) -> int:
    """Compose a u32 DRAM address from a region and a byte offset.

    Raises:
        InternalError: ``offset`` is negative or does not fit in 30 bits.
    """
    if not 0 <= offset <= REGION_OFFSET_MASK:
        raise InternalError(f"DRAM offset {offset:#x} in region {Region(region).name} "
                            "outside 0..0x3fffffff")
    return (int(region) << REGION_SHIFT) | offset


def split_dram_address(address: int) -> tuple[Region, int]:
    """Split a u32 DRAM address into (region, byte offset)."""
    return Region((address >> REGION_SHIFT) & 3), address & REGION_OFFSET_MASK
