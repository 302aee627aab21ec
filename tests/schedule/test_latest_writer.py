"""The emitter's read-after-write index (schedule/written.py) gives the answer of the scan it
replaced: the latest added extent overlapping a query, on random extents (nested, touching
and overlapping ones; a DMA's extent is never empty)."""

from __future__ import annotations

import random

import pytest

from tcc_compiler.schedule.written import LatestWriter


def _scan(added, lo, hi):
    for s_lo, s_hi, tag in reversed(added):
        if s_lo < hi and lo < s_hi:
            return tag
    return None


@pytest.mark.parametrize("seed", range(6))
def test_latest_matches_a_scan_of_every_extent(seed):
    rng = random.Random(seed)
    lw, added = LatestWriter(), []
    span = rng.choice((16, 64, 1000))
    for k in range(400):
        lo = rng.randrange(span)
        hi = lo + rng.choice((1, 2, 1 + rng.randrange(span // 4 + 1), 1 + rng.randrange(span)))
        lw.add(lo, hi, ("store", k))
        added.append((lo, hi, ("store", k)))
        for _ in range(3):
            q0 = rng.randrange(-2, span + 2)
            q1 = q0 + rng.randrange(1, span // 2 + 2)
            assert lw.latest(q0, q1) == _scan(added, q0, q1), (added[-5:], q0, q1)


def test_empty_and_disjoint():
    lw = LatestWriter()
    assert lw.latest(0, 10) is None
    lw.add(10, 20, "a")
    lw.add(5, 5, "empty")
    assert lw.latest(0, 10) is None and lw.latest(20, 30) is None
    assert lw.latest(19, 20) == "a" and lw.latest(5, 6) is None
    lw.add(12, 14, "b")
    assert lw.latest(10, 12) == "a" and lw.latest(0, 100) == "b" and lw.latest(14, 15) == "a"
