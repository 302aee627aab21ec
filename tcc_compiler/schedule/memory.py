"""DRAM buffer planning for activations: liveness + greedy-by-size placement.

Each tensor produced by an NPU op lives from its producer to its last reader (views alias their
source). Tensors are placed largest first at the lowest offset that does not overlap any
already-placed tensor whose lifetime overlaps (the TFLite arena planner's strategy), so memory
of dead tensors is reused.
"""

from __future__ import annotations

from dataclasses import dataclass


def align_up(n: int, a: int) -> int:
    """Round ``n`` up to a multiple of ``a``."""
    return (n + a - 1) // a * a


@dataclass
class Buffer:
    """A tensor to place: ``size_bytes`` live over op steps [first, last] (inclusive)."""

    key: str
    size_bytes: int
    first: int
    last: int
    offset: int = -1


def plan_arena(buffers: list[Buffer], align: int) -> int:
    """Assign ``offset`` to every buffer; return the arena size (bytes, aligned).

    Deterministic: ties broken by first use, then key.
    """
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size_bytes, b.first, b.key)):
        live = sorted((p for p in placed if not (p.last < b.first or b.last < p.first)),
                      key=lambda p: p.offset)
        off = 0
        for p in live:
            if off + b.size_bytes <= p.offset:
                break
            off = max(off, align_up(p.offset + p.size_bytes, align))
        b.offset = off
        placed.append(b)
    return align_up(max((b.offset + b.size_bytes for b in buffers), default=0), align)
