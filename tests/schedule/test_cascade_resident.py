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
