"""ResNet-18 (zoo, 64x64x3 input) scheduled for SRAM budgets from 128 KiB to 8 MiB: every
budget is respected, the stream has no hazard between concurrent queues (static check of every
legal interleaving, :func:`tcc_compiler.sim.hazards.check_stream`) and the reference executor's
output equals the golden integer model byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_program_impl

from tcc_compiler import zoo
from tcc_compiler.frontend import import_onnx
from tcc_compiler.isa.commands import Space
from tcc_compiler.quant import collect_ranges, quantize_graph, run_golden
from tcc_compiler.schedule import lower
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

W = H = 64
BUDGETS = [128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024, 2048 * 1024, 8 * 1024 * 1024]


@pytest.fixture(scope="module")
def r18(run_pipeline):
    """The zoo ResNet-18 at 64x64x3, passed and quantized; plus two test inputs."""
    g = run_pipeline(import_onnx(zoo.build("resnet18", width=W, height=H)))
    rng = np.random.default_rng(3)
    xs = [rng.uniform(-2, 2, (1, 3, H, W)).astype(np.float32) for _ in range(3)]
    quantize_graph(g, collect_ranges(g, xs[:2]))
    return g, xs


@pytest.fixture(scope="module")
def programs(r18):
    """budget -> lowered program."""
    g, _ = r18
    return {b: lower(g, load_target().with_sram(b)) for b in BUDGETS}


@pytest.mark.parametrize("budget", BUDGETS)
def test_resnet18_budget_bit_exact(r18, programs, budget):
    g, xs = r18
    prog = programs[budget]
    assert 0 < prog.sram_peak_bytes <= budget
    assert all(0 < li.sram_peak_bytes <= budget for li in prog.layers)
    x = xs[2]                                  # not a calibration input
    got, hazards = run_program_impl(prog, budget, g, x)
    assert hazards == []
    gold = run_golden(g, x)
    for o in prog.outputs:
        np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))


def test_small_budget_tiles_more(programs):
    tiles = [sum(li.tiles for li in programs[b].layers) for b in BUDGETS]
    assert tiles[0] > tiles[-1]


def test_tile_area_reuses_dead_resident_sram(r18):
    """With a large resident zone, ops whose live resident tensors end low in the zone get
    their tile buffers there (per-op tile area); the stream stays hazard-free."""
    from tcc_compiler.isa import commands as C
    from tcc_compiler.schedule.lowering import Lowering

    g, _ = r18
    budget = 512 * 1024
    lw = Lowering(g, load_target().with_sram(budget), zone_bytes=budget * 3 // 4)
    prog = lw.run()
    assert lw.mem.res and lw.mem.zone_used > 0
    # some DMA fills tile buffers below the top of the resident zone
    low = [c for c in prog.commands if isinstance(c, (C.DmaLoad, C.DmaLoadZ))
           and c.sram < lw.mem.zone_used]
    assert low
    assert all(0 < li.sram_peak_bytes <= budget for li in prog.layers)
    sizes = {Space.SRAM: budget, Space.ACT: prog.act_arena_bytes,
             Space.INPUT: prog.input_bytes, Space.OUTPUT: prog.output_bytes,
             Space.WEIGHTS: len(prog.weights.data)}
    assert check_stream(list(prog.commands), sizes) == []
