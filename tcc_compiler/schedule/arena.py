"""Placement primitives of the memory planner: the liveness arena and the per-op SRAM
allocator.

:func:`plan_arena` places buffers live over op steps at the lowest offset clear of the
buffers live at the same time (the TFLite arena planner's strategy): the DRAM tensors and the
SRAM resident zone (schedule/memory.py), a core's bands (schedule/corebands.py).
:class:`SramAllocator` hands out one op's tile buffers (schedule/emitter.py). Offsets and sizes
are in bytes.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass

from tcc_compiler.errors import InternalError
from tcc_compiler.schedule.tiling import align_up



@dataclass
class Buffer:
    """A tensor to place: ``size_bytes`` live over op steps [first, last] (inclusive)."""

    key: str
    size_bytes: int
    first: int
    last: int
    offset: int = -1


def plan_arena(buffers: list[Buffer], align: int, by_time: bool = False,
               by_life: bool = False) -> int:
    """Assign ``offset`` to every buffer; return the arena size (bytes, aligned).

    Each buffer goes to the lowest offset clear of the placed buffers live at the same time,
    largest first (the TFLite arena planner's order), or with ``by_time`` earliest first use
    first (then largest): the tensors live at each step then tend to sit low, at some cost in
    arena size; or with ``by_life`` largest first, of equal sizes the longest-lived first (a
    residual chain sharing one buffer over a whole stage, schedule/overwrite.py, then sits
    below the short-lived tensors of its size). Deterministic: ties broken by first use,
    then key.
    """
    placed: list[Buffer] = []   # by offset; equal offsets in placement order (insort_right)
    offsets: list[int] = []     # their offsets, kept beside them (no key call per probe)
    order = ((lambda b: (b.first, -b.size_bytes, b.key)) if by_time
             else (lambda b: (-b.size_bytes, b.first - b.last, b.first, b.key)) if by_life
             else (lambda b: (-b.size_bytes, b.first, b.key)))
    for b in sorted(buffers, key=order):
        off, size, first, last = 0, b.size_bytes, b.first, b.last
        for p in placed:   # the buffers live with b, in offset order
            if p.last < first or last < p.first:
                continue
            if off + size <= p.offset:
                break
            end = align_up(p.offset + p.size_bytes, align)
            if end > off:
                off = end
        b.offset = off
        i = bisect.bisect_right(offsets, off)   # after the equal offsets: insort_right's place
        offsets.insert(i, off)
        placed.insert(i, b)
    return align_up(max((b.offset + b.size_bytes for b in buffers), default=0), align)


@functools.lru_cache(maxsize=1 << 12)
def arena_bytes(buffers: tuple[tuple[str, int, int, int], ...], align: int) -> int:
    """The arena size (bytes, aligned) :func:`plan_arena` gives ``buffers``, each
    ``(key, size_bytes, first, last)``: a pure function of them, memoised (the resident-zone
    planner, schedule/memory.py, tries growing sets of tensors for every zone size, cascading
    variant and band slack of the schedule search, mostly the same sets again: EfficientNetV2-S
    224 asked 26,719 times in one compile)."""
    return plan_arena([Buffer(*b) for b in buffers], align)


def top_sum(buffers: list[Buffer]) -> int:
    """Sum over the op steps of the highest end (bytes) of the placed ``buffers`` live at that
    step: how much SRAM the resident zone keeps from the tile areas above it, summed over
    time (every op's tile area starts at that top, schedule/memory.py ``op_base``)."""
    top: dict[int, int] = {}
    for b in buffers:
        for i in range(b.first, b.last + 1):
            top[i] = max(top.get(i, 0), b.offset + b.size_bytes)
    return sum(top.values())


def lower_tops(placed: list[Buffer], align: int, limit: int, used: int,
               **order: bool) -> tuple[list[Buffer], int]:
    """(buffers, arena bytes): copies of ``placed`` (whose arena takes ``used`` bytes) placed
    again by :func:`plan_arena` in the ``order`` given (``by_time`` or ``by_life``) when that
    fits ``limit`` bytes and lowers :func:`top_sum` (every op's tile area, and so the SRAM
    above it, starts at the top of the resident tensors live around it); else ``placed``."""
    alt = [Buffer(b.key, b.size_bytes, b.first, b.last) for b in placed]
    got = plan_arena(alt, align, **order)
    if got <= limit and top_sum(alt) < top_sum(placed):
        return alt, got
    return placed, used


class SramAllocator:
    """Bump allocator of one op's SRAM buffers, aligned; upwards from address 0 or, with
    ``from_top``, downwards from the end of the SRAM (so consecutive ops use opposite ends and
    their buffers overlap only when together they exceed the SRAM).

    Attributes:
        top: bytes used so far (the op's SRAM footprint, for the report).
        lo, hi: the SRAM byte interval [lo, hi) the op's buffers cover.
    """

    def __init__(self, size: int, align: int, from_top: bool = False, base: int = 0):
        self.size, self.align, self.top, self.from_top = size - base, align, 0, from_top
        self.lo = self.hi = size if from_top else base

    def alloc(self, nbytes: int, what: str) -> int:
        """Reserve ``nbytes``; return the SRAM offset.

        Raises:
            InternalError: the op's buffers exceed the SRAM (the tile planner checks first).
        """
        n = align_up(max(nbytes, 1), self.align)
        self.top += n
        if self.top > self.size:
            raise InternalError(f"SRAM overflow allocating {what}: {self.top} > {self.size}")
        if self.from_top:
            self.lo -= n
            return self.lo
        off = self.hi
        self.hi += n
        return off
