"""The memory a command touches: byte ranges and two-level strided patterns of one space.

A command's :meth:`~tcc_compiler.isa.commands.Command.accesses` lists :class:`Access` records,
which the hazard checker (:mod:`tcc_compiler.sim.hazards`) tracks byte by byte. A strided DMA
(specs/isa.md, DMA_LOAD: ``run_bytes`` bytes at ``base + i2 * stride2 + i1 * stride1``) or a
strided tile operand (a box of a wider resident tensor) is one :class:`Access` holding its
pattern, never a hull of it: a Split half of a channel concat in DRAM reads every third
16-byte run, not the channels beside it that other commands write later.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import spec


class Space(str, enum.Enum):
    """A memory a command can touch: the SRAM or one DRAM region (offsets inside the region)."""

    SRAM = "SRAM"
    WEIGHTS = "WEIGHTS"
    ACT = "ACT"
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"

    @classmethod
    def of_region(cls, region: spec.Region) -> "Space":
        """The space of DRAM region ``region``."""
        return cls(spec.Region(region).name)


class Access(NamedTuple):
    """Bytes of ``space`` read (or written if ``is_write``) by a command.

    ``run == 0``: the contiguous range ``[start, end)``. Otherwise the two-level pattern of
    ``run``-byte runs at ``start + i2 * s2 + i1 * s1`` (``i1 < n1``, ``i2 < n2``; byte offsets
    inside ``space``), and ``end`` is the end of its last run (``[start, end)`` is the hull).
    :func:`strided` builds the canonical form: a pattern whose runs touch or overlap is
    contiguous, a one-level pattern has ``n2 == 1``.
    """

    space: Space
    start: int
    end: int
    is_write: bool
    run: int = 0
    n1: int = 1
    s1: int = 0
    n2: int = 1
    s2: int = 0

    def runs(self) -> list[tuple[int, int]]:
        """The exact byte ranges ``[start, end)`` touched, ascending, adjacent ones merged
        (one range per run: for tests and small patterns; the checker uses numpy views)."""
        if not self.run:
            return [(self.start, self.end)]
        starts = sorted(self.start + i2 * self.s2 + i1 * self.s1
                        for i2 in range(self.n2) for i1 in range(self.n1))
        out: list[list[int]] = []
        for a in starts:
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], a + self.run)
            else:
                out.append([a, a + self.run])
        return [(a, b) for a, b in out]

    def covers(self, byte: int) -> bool:
        """True if the access touches byte offset ``byte`` of its space."""
        if not self.start <= byte < self.end:
            return False
        if not self.run:
            return True
        off = byte - self.start
        if self.n2 == 1 or self.s2 == 0:
            rows: range | tuple[int, ...] = (0,)
        elif self.s2 >= (self.n1 - 1) * self.s1 + self.run:   # rows apart: one candidate
            rows = (min(off // self.s2, self.n2 - 1),)
        else:                                                  # rows interleave
            rows = range(min(off // self.s2, self.n2 - 1) + 1)
        for i2 in rows:
            o = off - i2 * self.s2
            i1 = o // self.s1            # canonical patterns have s1 > run: one candidate
            if i1 < self.n1 and o - i1 * self.s1 < self.run:
                return True
        return False

    def overlaps(self, other: "Access") -> bool:
        """True if the two accesses touch a common byte of one space (exact)."""
        if self.space != other.space or self.end <= other.start or other.end <= self.start:
            return False
        if not self.run and not other.run:
            return True
        mine, theirs = self.runs(), other.runs()
        i = k = 0
        while i < len(mine) and k < len(theirs):
            (a, b), (c, d) = mine[i], theirs[k]
            if a < d and c < b:
                return True
            if b <= d:
                i += 1
            else:
                k += 1
        return False


def strided(space: Space, base: int, run: int, n1: int, s1: int, n2: int, s2: int,
            is_write: bool) -> list[Access]:
    """The bytes of a two-level strided pattern (``run``-byte runs at ``base + i2 * s2 +
    i1 * s1``; strides >= 0, as the ISA's unsigned fields) as at most one :class:`Access` in
    canonical form: [] when empty, a contiguous range when the runs touch or overlap (exact:
    a union of runs ``s1 <= run`` apart has no gap), else the pattern itself."""
    if run <= 0 or n1 <= 0 or n2 <= 0:
        return []
    if n1 == 1 or s1 <= run:            # the inner runs form one run
        run, n1, s1 = (n1 - 1) * s1 + run, 1, 0
    if n1 == 1:                         # one level left: n2 runs s2 apart
        n1, s1, n2, s2 = n2, s2, 1, 0
        if n1 == 1 or s1 <= run:
            return [Access(space, base, base + (n1 - 1) * s1 + run, is_write)]
    if n2 == 1 or s2 == 0:              # one row, or every row the same bytes
        n2, s2 = 1, 0
    elif s2 == n1 * s1:                 # the rows continue the inner stride evenly
        n1, n2, s2 = n1 * n2, 1, 0
    end = base + (n2 - 1) * s2 + (n1 - 1) * s1 + run
    return [Access(space, base, end, is_write, run, n1, s1, n2, s2)]


def box_strides(w: int, px_bytes: int, px_stride: int, row_stride: int) -> tuple[int, int]:
    """Effective (pixel stride, row stride) in bytes of a strided tile operand.

    Args:
        w: columns of the box. px_bytes: bytes of one pixel's channels (channels x element
            bytes). px_stride, row_stride: the command's fields; 0 = packed.

    Raises:
        ExecutionError: a non-zero stride smaller than the packed one (the box would overlap
            itself).
    """
    px = px_stride or px_bytes
    row = row_stride or w * px
    if px < px_bytes or row < w * px:
        raise ExecutionError(f"operand strides {px_stride}/{row_stride} smaller than the packed "
                             f"{px_bytes}/{w * px} bytes")
    return px, row


def box_accesses(addr: int, h: int, w: int, px_bytes: int, px_stride: int, row_stride: int,
                 is_write: bool) -> list[Access]:
    """SRAM bytes of an [h, w, px_bytes] box (NHWC) at ``addr`` with the given strides
    (bytes; 0 = packed): at most one exact :class:`Access`.

    Raises:
        ExecutionError: a stride below the packed one (:func:`box_strides`).
    """
    px, row = box_strides(w, px_bytes, px_stride, row_stride)
    return strided(Space.SRAM, addr, px_bytes, w, px, h, row, is_write)
