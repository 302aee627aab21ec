"""The schedule search ranks its zone x cascading candidates with the cost model
(schedule/rank.py) and lowers only the finalists, yet keeps the program the exhaustive search
(every candidate lowered and replayed) chose."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import record_lowerings

from tcc_compiler import zoo
from tcc_compiler.errors import ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import collect_ranges, quantize_graph
from tcc_compiler.schedule import lowering, rank, search
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.target import load_target

#: SRAM budgets: one in the default suite (each exhaustive search lowers up to 14 programs).
BUDGETS = [512 * 1024, pytest.param(256 * 1024, marks=pytest.mark.slow),
           pytest.param(2048 * 1024, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def r18(run_pipeline):
    """The zoo ResNet-18 at 64x64x3, passed and quantized."""
    g = run_pipeline(import_onnx(zoo.build("resnet18", width=64, height=64)))
    xs = [np.random.default_rng(3).uniform(-2, 2, (1, 3, 64, 64)).astype(np.float32)]
    quantize_graph(g, collect_ranges(g, xs))
    return g


def _exhaustive(g, t):
    """The search before ranking: every zone x cascading candidate lowered and replayed, the
    fastest kept, ties to the smaller zone, then to cascading (planned as the search plans a
    network without depthwise layers: residual outputs over their shortcut)."""
    best = None
    for frac in sorted(search.ZONE_FRACTIONS):
        zone = int(t.sram_capacity_bytes * frac) // t.sram_align_bytes * t.sram_align_bytes
        for casc in (True, False):
            try:
                mem = plan_memory(g, t, zone, casc, overwrite=True)
                prog = lowering.Lowering(g, t, zone, cascade=casc, mem=mem).run()
            except ScheduleError:
                continue
            cycles = search._cycles(prog, t)
            if best is None or cycles < best[0]:
                best = (cycles, prog)
    return best[1]


@pytest.mark.parametrize("budget", BUDGETS)
def test_ranked_search_keeps_the_exhaustive_choice(r18, budget, monkeypatch):
    t = load_target().with_sram(budget)
    want = _exhaustive(r18, t)
    runs = record_lowerings(monkeypatch, lambda lw: (lw.zone_bytes, lw.cascade))
    got = search.search(r18, t, prefetch=False)
    assert got.commands == want.commands
    assert got.weights.data == want.weights.data
    cands = search._zone_candidates(r18, t, search.ZONE_FRACTIONS, True)
    assert len(runs) == len(rank.finalists([c[3] for c in cands])) < 2 * len(search.ZONE_FRACTIONS)


def test_equal_plans_are_one_candidate(r18):
    t = load_target()   # 2 MiB: the largest zones hold every tensor they can already
    cands = search._zone_candidates(r18, t, search.ZONE_FRACTIONS, True)
    keys = [rank.plan_key(c[2]) for c in cands]
    assert len(set(keys)) == len(keys) < 2 * len(search.ZONE_FRACTIONS)
    a = plan_memory(r18, t, 0, False)
    assert rank.plan_key(a) == rank.plan_key(plan_memory(r18, t, 0, False))
    assert rank.plan_key(a) != rank.plan_key(plan_memory(r18, t, t.sram_capacity_bytes // 2,
                                                         False))


def test_estimate_follows_the_replay_order_within_a_kind(r18):
    """Without cascades, a plan that keeps more on chip is estimated and replayed faster."""
    t = load_target().with_sram(512 * 1024)
    est, cyc = [], []
    for zone in (0, 256 * 1024):
        mem = plan_memory(r18, t, zone, False)
        est.append(rank.estimate_cycles(r18, mem, t))
        prog = lowering.Lowering(r18, t, zone, mem=mem).run()
        cyc.append(search._cycles(prog, t))
    assert all(e > 0 for e in est)
    assert (est[0] < est[1]) == (cyc[0] < cyc[1])


def test_finalists():
    assert rank.finalists([]) == []
    assert rank.finalists([100, 90, 300, 200, 95], count=2, margin=0.0) == [1, 4]
    assert rank.finalists([100, 90, 300, 200, 95], count=1, margin=0.2) == [0, 1, 4]
    assert rank.finalists([5, 5, 5], count=1, margin=0.0) == [0, 1, 2]   # ties all kept
