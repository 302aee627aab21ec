"""Cascading to free SRAM (``plan_memory(..., cascade_resident=True)``, schedule/memory.py): a
chain whose large intermediates would be resident is cascaded in short bands, so the SRAM they
would hold is free for cross-op weight prefetch; the program stays bit-exact."""

from __future__ import annotations

import numpy as np
from conftest import run_program_impl

from tcc_compiler.frontend import import_onnx
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.quant import collect_ranges, quantize_graph, run_golden
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import FREEING_BAND_FRACTION, plan_memory
from tcc_compiler.target import load_target

SRAM = 192 * 1024


def _block():
    """An inverted residual block at 32x32 (16 -> 96 -> 16 channels): its 96 KB expand and
    depthwise outputs fit a 144 KB resident zone of a 192 KB SRAM one at a time."""
    from e2e.test_depthwise import inverted_residual

    g = PassManager(default_pipeline()).run(
        import_onnx(inverted_residual(16, (32, 32), 6, 3, 1, (1, 1, 1, 1), 3)))
    r = np.random.default_rng(1)
    xs = [r.uniform(-2, 2, (1, 16, 32, 32)).astype(np.float32) for _ in range(3)]
    quantize_graph(g, collect_ranges(g, xs[:2]))
    return g, xs[2]


def test_large_resident_intermediates_are_cascaded_in_short_bands():
    g, x = _block()
    t = load_target().with_sram(SRAM)
    zone = SRAM * 3 // 4
    plain = plan_memory(g, t, zone, True)
    assert not plain.chains and plain.res   # resident intermediates: nothing to save
    freed = plan_memory(g, t, zone, True, cascade_resident=True)
    (chain,) = freed.chains.values()
    assert len(chain.nodes) == 3
    assert chain.sram_peak_bytes <= FREEING_BAND_FRACTION * SRAM
    assert not any(id(m.output) in freed.res for m in chain.inner())
    prog = Lowering(g, t, zone, cascade=True, mem=freed).run()
    assert prog.sram_peak_bytes < Lowering(g, t, zone, cascade=True, mem=plain).run() \
        .sram_peak_bytes
    for schedule, seed in (("inorder", 0), ("random", 1)):
        got, hazards = run_program_impl(prog, SRAM, g, x, schedule, seed)
        assert hazards == []
        gold = run_golden(g, x)
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))


def test_arena_by_time_keeps_early_tensors_low():
    """plan_arena: largest first puts a small early tensor above the large later ones that
    overlap it in time; by first use it sits at 0, so the tops summed over the steps
    (top_sum, what the resident zone keeps from the tile areas) drop."""
    from tcc_compiler.schedule.arena import Buffer, plan_arena, top_sum

    def bufs():   # a small tensor live over steps 0..2, two large ones over 2..5 and 2..3
        return [Buffer("small", 1000, 0, 2), Buffer("big0", 5000, 2, 5),
                Buffer("big1", 4000, 2, 3)]

    by_size, by_time = bufs(), bufs()
    assert plan_arena(by_size, 64) <= plan_arena(by_time, 64, by_time=True)
    assert next(b for b in by_size if b.key == "small").offset >= 5000
    assert next(b for b in by_time if b.key == "small").offset == 0
    for placed in (by_size, by_time):   # never two live buffers on one byte
        for a in placed:
            for b in placed:
                if a is not b and not (a.last < b.first or b.last < a.first):
                    assert a.offset + a.size_bytes <= b.offset or \
                        b.offset + b.size_bytes <= a.offset
    assert top_sum(by_time) < top_sum(by_size)


def test_compact_plan_never_raises_the_bases_and_stays_bit_exact():
    """plan_memory(compact=True) (schedule/memory.py): its resident placement is kept only
    when it lowers top_sum, so the tile-area bases summed over the ops are no higher than the
    cascade_resident plan's; the program it lowers is bit-exact in order and in a random
    legal interleaving, hazard-free."""
    g, x = _block()
    t = load_target().with_sram(SRAM)
    zone = SRAM * 3 // 4
    freed = plan_memory(g, t, zone, True, cascade_resident=True)
    tight = plan_memory(g, t, zone, True, cascade_resident=True, compact=True)
    assert sum(tight.op_base.values()) <= sum(freed.op_base.values())
    assert tight.zone_used <= zone
    prog = Lowering(g, t, zone, cascade=True, mem=tight).run()
    for schedule, seed in (("inorder", 0), ("random", 2)):
        got, hazards = run_program_impl(prog, SRAM, g, x, schedule, seed)
        assert hazards == []
        gold = run_golden(g, x)
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))


def test_search_plans_compact_only_for_depthwise_networks():
    """The schedule search plans a compact variant per zone for a network with depthwise
    layers (schedule/search.py): each is a candidate of its own (marked, ranked apart) or
    equal to one planned already (dropped as the same program); a network without depthwise
    layers (the ResNets, whose golden binaries stay as recorded) gets none."""
    from helpers.prefetch_net import quantized_prefetch_net

    from tcc_compiler.schedule import rank, search

    g, _ = _block()
    t = load_target().with_sram(SRAM)
    assert search.has_depthwise(g, t)
    zones = (0.0, 0.75)
    cands = search._zone_candidates(g, t, zones, True, True)
    without = search._zone_candidates(g, t, zones, True, False)
    assert len(cands) >= len(without) and not any(c[4] for c in without)
    keys = {rank.plan_key(c[2]) for c in cands}
    zone = int(SRAM * 0.75) // 64 * 64
    tight = plan_memory(g, t, zone, True, cascade_resident=True, compact=True)
    assert rank.plan_key(tight) in keys
    plain_net, _ = quantized_prefetch_net()
    assert not search.has_depthwise(plain_net, t)
