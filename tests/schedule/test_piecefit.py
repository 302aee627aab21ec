"""Prefetch pieces fitted to whole weight blocks (schedule/piecefit.py): a boundary between two
pieces of one consumer's area moves down to whole blocks of the piece above, so blocks that
fit the area whole are all prefetched; the union of the areas is the same, the program stays
bit-exact and hazard-free, and the search keeps it only when its replay is faster."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import assert_bit_exact_schedules
from helpers.prefetch_net import PREFETCH_BUDGET as BUDGET

from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.piecefit import (block_sizes, blocks_held, fit_hoists, fit_pieces,
                                            lifted_fitted)
from tcc_compiler.schedule.prefetch import Prefetcher


def test_block_sizes_last_block_narrower_and_aligned():
    # 10 channels in blocks of 4: 4, 4, 2 channels of 30 bytes, aligned to 64
    assert block_sizes(10, 4, 30, 64) == [128, 128, 64]
    assert block_sizes(8, 8, 16, 64) == [128]


def test_blocks_held_fills_areas_in_order():
    """A block that does not fit what is left of an area goes to the next one; the areas are
    never reordered (the Prefetcher's fill)."""
    assert blocks_held([10, 10, 10, 10], [15, 25]) == 3
    assert blocks_held([10, 10, 10, 10], [10, 30]) == 4
    assert blocks_held([10, 10, 5], [10, 10, 4]) == 2   # the last area is too small
    assert blocks_held([20], [10, 10]) == 0


@pytest.fixture(scope="module")
def split(prefetch_plain):
    """The prefetch net's conv3 hoist split by hand into two packed pieces whose boundary is
    not at a whole block: the top piece (the whole window) 1.5 blocks, the lower one (the last
    window op) the rest of the area, 2.5 blocks, so 1 + 2 of conv3's 4 blocks fit them."""
    base = prefetch_plain()
    g, x, t, lw, h = base.g, base.x, base.t, base.lw, base.hoist()
    n = next(m for m in g.nodes if m.name == h.consumer)
    geom = conv_geom(n, t)
    ocb = Prefetcher((dataclasses.replace(h, pack=True),), g).consumer_plan(n, lw.mem, t).ocb
    sizes = block_sizes(geom.o, min(ocb, geom.o), geom.kernel_bytes + 16, t.sram_align_bytes)
    assert h.consumer == "conv3" and len(set(sizes)) == 1 and h.area_bytes == sum(sizes)
    top_bytes = sizes[0] * 3 // 2 // t.sram_align_bytes * t.sram_align_bytes
    top = dataclasses.replace(h, area_bytes=top_bytes, pack=True)
    low = dataclasses.replace(h, window=h.window[-1:], gaps=h.gaps[-1:],
                              area_bytes=h.area_bytes - top_bytes,
                              area_end=BUDGET - top_bytes, pack=True)
    assert blocks_held(sizes, [top.area_bytes, low.area_bytes]) == len(sizes) - 1
    return g, x, t, lw, (top, low), sizes


def test_fit_moves_the_boundary_to_whole_blocks(split):
    """The top piece shrinks to one block, the lower one takes the rest and keeps its bottom:
    the same union of SRAM, every block held."""
    g, _, t, lw, (top, low), sizes = split
    ftop, flow = fit_pieces((top, low), g, lw.mem, t)
    assert ftop.area_bytes == sizes[0] and ftop.area(t)[1] == top.area(t)[1]
    assert flow.area(t) == (low.area(t)[0], ftop.area(t)[0])
    assert ftop.window == top.window and flow.window == low.window
    assert blocks_held(sizes, [ftop.area_bytes, flow.area_bytes]) == len(sizes)
    assert fit_hoists((top, low), g, lw.mem, t) == (ftop, flow)


def test_fit_leaves_pieces_that_already_hold_every_block(split):
    g, _, t, lw, (top, low), sizes = split
    whole_top = dataclasses.replace(top, area_bytes=2 * sizes[0])
    whole_low = dataclasses.replace(low, area_bytes=low.area_bytes + top.area_bytes
                                    - 2 * sizes[0], area_end=BUDGET - 2 * sizes[0])
    pieces = (whole_top, whole_low)
    assert fit_pieces(pieces, g, lw.mem, t) is pieces
    assert fit_hoists(pieces, g, lw.mem, t) is pieces
    assert fit_pieces((top,), g, lw.mem, t) == (top,)
    gap = (top, dataclasses.replace(low, area_end=low.area(t)[1] - 64))   # not edge to edge
    assert fit_pieces(gap, g, lw.mem, t) is gap


def _prefetch_loads(prog) -> int:
    return sum(1 for c in prog.comments if "prefetch" in c)


def test_fitted_pieces_prefetch_every_block_bit_exact(split):
    """Lowered with the fitted pieces, all 4 of conv3's blocks are prefetched (3 before) and the
    replay is faster; bit-exact and hazard-free in order and in random interleavings."""
    g, x, t, lw, pieces, sizes = split
    before = Lowering(g, t, 0, hoist=pieces).run()
    after = Lowering(g, t, 0, hoist=fit_pieces(pieces, g, lw.mem, t)).run()
    assert _prefetch_loads(before) == len(sizes) - 1
    assert _prefetch_loads(after) == len(sizes)
    cyc = [max(e for _, e in replay(p.commands, t)) for p in (before, after)]
    assert cyc[1] < cyc[0]
    assert_bit_exact_schedules(after, BUDGET, g, x)


def test_lifted_fitted_lowers_and_lifts_the_fitted_hoists(split):
    """The search's variant (:func:`lifted_fitted`): the fitted hoists lowered from the plan's
    recorded lowering and lifted, no slower than the fitted program unlifted; None when
    nothing changes."""
    g, _, t, _, pieces, _ = split
    memo: dict = {}
    lw = Lowering(g, t, 0, memo=memo, record=True)
    lw.run()
    got = lifted_fitted(g, t, None, lw, pieces, memo)
    assert got is not None and got[0] is lw
    plain = Lowering(g, t, 0, hoist=fit_pieces(pieces, g, lw.mem, t)).run()
    assert got[2] <= max(e for _, e in replay(plain.commands, t))
    fitted = fit_hoists(pieces, g, lw.mem, t)
    assert lifted_fitted(g, t, None, lw, fitted, memo) is None
