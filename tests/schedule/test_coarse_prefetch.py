"""Coarse blocks of a prefetch consumer (schedule/prefetch.py ``Prefetcher`` ``coarse``,
``Lowering.coarse_wide``): in a lowering with coarse blocks a packed consumer's weight blocks
are capped by :data:`COARSE_PER_AREA` blocks per area instead of :data:`BLOCKS_PER_AREA`
(EfficientNet-Lite0 224's conv head, 320 -> 1280 at 7x7: 128-channel blocks instead of 64),
so half as many blocks where its smallest area holds them; an area too small for four
one-array-wide blocks keeps them. The lowering is bit-exact and hazard-free in stream order
and in random legal interleavings."""

from __future__ import annotations

import onnx
import pytest
from conftest import assert_bit_exact_schedules, quantized_model
from helpers.models import conv_relu_chain

from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.prefetch import BLOCKS_PER_AREA, COARSE_PER_AREA, block_cap
from tcc_compiler.target import load_target

#: SRAM of the tests' target: the head conv's 7x7x128 tiles fit under its prefetch area
BUDGET = 256 * 1024


def head_net() -> onnx.ModelProto:
    """x[1, 32, 7, 7] -> Conv1x1 32 -> 320 + Relu -> Conv1x1 320 -> 1280 + Relu (a conv
    head's shape: :func:`helpers.models.conv_relu_chain`)."""
    return conv_relu_chain(32, 7, [(320, 1, 1), (1280, 1, 1)], "head")


@pytest.fixture(scope="module")
def packed():
    """(quantized graph, fresh input, target, conv1's packed prefetch over conv0 whose area
    holds exactly four 64-channel blocks, conv1's geometry)."""
    g, x = quantized_model(head_net())
    t = load_target().with_sram(BUDGET)
    geom = conv_geom(next(n for n in g.nodes if n.name == "conv1"), t)
    al = t.sram_align_bytes
    area = -(-BLOCKS_PER_AREA * t.array_out_channels * (geom.kernel_bytes + 16) // al) * al
    hoist = Hoist(consumer="conv1", window=("conv0",), area_bytes=area, gaps=((),),
                  eager=True, pack=True)
    return g, x, t, hoist, geom


def _plan(prog, name: str) -> str:
    return next(li.plan for li in prog.layers if li.name == name)


def test_block_cap_per_area(packed):
    _, _, t, h, geom = packed
    ao = t.array_out_channels
    assert COARSE_PER_AREA * 2 == BLOCKS_PER_AREA
    assert block_cap(geom, h.area_bytes, t) == ao
    assert block_cap(geom, h.area_bytes, t, COARSE_PER_AREA) == 2 * ao
    # too small for four one-array-wide blocks (a classifier's): one array width either way
    assert block_cap(geom, h.area_bytes // 3, t, COARSE_PER_AREA) == ao


def test_coarse_lowering_widens_the_consumer_blocks(packed):
    g, _, t, h, _ = packed
    ao = t.array_out_channels
    p0 = Lowering(g, t, 0, hoist=h).run()
    coarse = Lowering(g, t, 0, hoist=h, coarse_wide=True)
    p1 = coarse.run()
    assert _plan(p0, "conv1").startswith(f"7x7x{ao} tiles")
    assert _plan(p1, "conv1").startswith(f"7x7x{2 * ao} tiles")
    assert coarse.coarsened
    n0, n1 = (sum("conv1 prefetch" in c for c in p.comments) for p in (p0, p1))
    assert n1 > 0 and n0 == 2 * n1   # the same area, half as many blocks in it


def test_coarse_consumer_bit_exact(packed):
    g, x, t, h, _ = packed
    prog = Lowering(g, t, 0, hoist=h, coarse_wide=True).run()
    assert_bit_exact_schedules(prog, BUDGET, g, x)
