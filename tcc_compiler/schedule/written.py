"""Which store last wrote each DRAM byte, for the emitter's read-after-write waits.

:meth:`~tcc_compiler.schedule.emitter.Emitter.load` asks for the latest store whose DRAM byte
extent overlaps a load's. Scanning every earlier store made a lowering quadratic in its
stores: MobileOne-S1 at 200x136 on an 8 KiB SRAM (92,336 loads) spent 20.7 of its 64 s there,
and on a 4 KiB SRAM its lowering ran for minutes. :class:`LatestWriter` keeps instead, per byte,
the latest extent that covers it (disjoint segments, "painted" over by each new extent), so a
query looks only at the segments inside its own extent.

Why it gives the same answer as the scan: if extent S overlaps the query at byte b and a later
extent S' covers b too, S' also overlaps the query and is later. So the latest overlapping
extent is the latest one still covering some byte of the query, which is the largest tag among
the painted segments the query overlaps.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any


class LatestWriter:
    """Disjoint byte segments ``[start, end)`` of one address space, each tagged with the
    latest extent that covered it. Tags are compared by the order they were added.

    Cost: :meth:`add` is a binary search plus a list splice (O(log n) + a memmove of the
    segment lists); :meth:`latest` a binary search plus one step per segment it overlaps.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._tags: list[tuple[int, Any]] = []   # (order added, tag)
        self._n = 0

    def _span(self, lo: int, hi: int) -> tuple[int, int]:
        """Indices ``[a, b)`` of the segments overlapping ``[lo, hi)``."""
        i = bisect_right(self._starts, lo) - 1
        a = i if i >= 0 and self._ends[i] > lo else i + 1
        return a, bisect_left(self._starts, hi, a)

    def add(self, lo: int, hi: int, tag: Any) -> None:
        """Bytes ``[lo, hi)`` were last written by ``tag`` (an empty extent covers nothing)."""
        self._n += 1
        if hi <= lo:
            return
        a, b = self._span(lo, hi)
        starts, ends, tags = [lo], [hi], [(self._n, tag)]
        if a < b and self._starts[a] < lo:   # the part of the first segment before lo
            starts.insert(0, self._starts[a])
            ends.insert(0, lo)
            tags.insert(0, self._tags[a])
        if a < b and self._ends[b - 1] > hi:   # the part of the last segment after hi
            starts.append(hi)
            ends.append(self._ends[b - 1])
            tags.append(self._tags[b - 1])
        self._starts[a:b], self._ends[a:b], self._tags[a:b] = starts, ends, tags

    def copy(self) -> LatestWriter:
        """An independent copy (the schedule search's lowering checkpoints,
        :meth:`~tcc_compiler.schedule.emitter.Emitter.checkpoint`)."""
        out = LatestWriter()
        out._starts, out._ends, out._tags = list(self._starts), list(self._ends), list(self._tags)
        out._n = self._n
        return out

    def latest(self, lo: int, hi: int) -> Any:
        """The tag of the latest extent overlapping ``[lo, hi)``, or None."""
        if hi <= lo:
            return None
        a, b = self._span(lo, hi)
        if a >= b:
            return None
        return max(self._tags[a:b], key=lambda t: t[0])[1]
