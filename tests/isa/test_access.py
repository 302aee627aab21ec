"""The exact memory footprint of a command (tcc_compiler/isa/access.py): a two-level strided
pattern is one :class:`Access` whose bytes, runs, ``covers`` and ``overlaps`` agree with the
pattern's definition (specs/isa.md, DMA_LOAD: ``run_bytes`` bytes at ``base + i2 * stride2 +
i1 * stride1``), enumerated byte by byte here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.access import Access, Space, box_accesses, strided


def _bytes_of(base, run, n1, s1, n2, s2) -> set[int]:
    """The pattern's bytes by its definition."""
    return {base + i2 * s2 + i1 * s1 + k
            for i2 in range(n2) for i1 in range(n1) for k in range(run)}


def _covered(accs: list[Access]) -> set[int]:
    return {b for a in accs for lo, hi in a.runs() for b in range(lo, hi)}


def _patterns(count: int, seed: int):
    """Random small patterns, rows apart, interleaving, overlapping, repeated (stride 0)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        run, n1, n2 = (int(v) for v in rng.integers(0, 5, 3))
        s1, s2 = (int(v) for v in rng.integers(0, 20, 2))
        yield int(rng.integers(0, 8)), run, n1, s1, n2, s2


def test_strided_is_exact_and_canonical():
    for base, run, n1, s1, n2, s2 in _patterns(600, 0):
        accs = strided(Space.ACT, base, run, n1, s1, n2, s2, False)
        want = _bytes_of(base, run, n1, s1, n2, s2)
        assert _covered(accs) == want, (base, run, n1, s1, n2, s2)
        assert len(accs) == (1 if want else 0)
        for a in accs:
            assert (a.start, a.end) == (min(want), max(want) + 1)   # the hull
            for b in range(a.start - 2, a.end + 2):
                assert a.covers(b) == (b in want), (a, b)
            if a.run:   # runs touching or overlapping along one level are merged
                assert a.s1 > a.run and a.n1 > 1 and (a.n2 == 1) == (a.s2 == 0)
            else:
                assert want == set(range(a.start, a.end))


def test_overlaps_is_exact():
    pats = list(_patterns(60, 1))
    for p, q in itertools.product(pats, pats):
        a = strided(Space.SRAM, *p, False)
        b = strided(Space.SRAM, *q, True)
        if a and b:
            assert a[0].overlaps(b[0]) == bool(_bytes_of(*p) & _bytes_of(*q)), (p, q)
    a = strided(Space.SRAM, 0, 4, 3, 8, 1, 0, False)[0]
    assert not a.overlaps(a._replace(space=Space.ACT))   # another memory


def test_channel_slice_of_a_concat_is_not_its_neighbours():
    """A Split half (channels 16..31 of a 48-channel int8 NHWC tensor, 25600 pixels) reads
    every third 16-byte run: none of the channels 32..47 another command writes later."""
    [half] = strided(Space.ACT, 16, 16, 25600, 48, 1, 0, False)
    [beside] = strided(Space.ACT, 32, 16, 25600, 48, 1, 0, True)
    assert not half.overlaps(beside) and half.end > beside.start
    assert half.covers(16 + 48 * 25599) and not half.covers(32 + 48 * 12345)


def test_box_accesses():
    """A 2x3-pixel, 4-byte box of a 5-column, 8-byte-pixel tensor; a packed box is one range;
    a stride below the packed one is refused."""
    [box] = box_accesses(100, 2, 3, 4, 8, 40, True)
    assert box.runs() == [(100, 104), (108, 112), (116, 120), (140, 144), (148, 152),
                          (156, 160)]
    assert box_accesses(100, 2, 3, 4, 0, 0, False) == [Access(Space.SRAM, 100, 124, False)]
    with pytest.raises(ExecutionError, match="smaller than the packed"):
        box_accesses(0, 2, 3, 4, 2, 0, False)
