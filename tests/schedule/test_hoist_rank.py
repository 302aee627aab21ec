"""The prefetch search ranks each greedy round's hoist sets with the cost model
(schedule/search.py ``hoist_estimate``) and lowers only the finalists
(``hoist_finalists``): fewer lowerings than lowering every candidate, the same program on a
depthwise network."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler import zoo
from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import collect_ranges, quantize_graph
from tcc_compiler.schedule import cost, lowering, search
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.target import load_target


def _hoist(consumer: str, area: int, gaps=((100, 200),), eager=False) -> Hoist:
    return Hoist(consumer, ("a",) * len(gaps), area, gaps, eager)


def test_estimate_is_the_stall_capped_by_what_area_and_idle_time_carry():
    t = load_target()
    big = _hoist("c", 10 ** 9)   # the idle time (300 cycles) bounds it
    assert search.hoist_estimate(t, (big,), 10 ** 6) == pytest.approx(300.0)
    assert search.hoist_estimate(t, (big,), 120) == 120.0   # the stall bounds it
    small = _hoist("c", 64)      # the area bounds it
    assert search.hoist_estimate(t, (small,), 10 ** 6) == \
        pytest.approx(cost.transfer_cycles(64, t))
    # pieces add up
    assert search.hoist_estimate(t, (small, small), 10 ** 6) == \
        pytest.approx(2 * cost.transfer_cycles(64, t))


def test_finalists_keep_the_order_drop_repeats_and_far_estimates(monkeypatch):
    monkeypatch.setattr(search, "HOIST_FINALIST_SHARE", 0.8)
    a, b, c = (_hoist("a", 1 << 16),), (_hoist("b", 1 << 16),), (_hoist("c", 1 << 16),)
    got = search.hoist_finalists([(50.0, a), (100.0, b), (85.0, c), (100.0, b), (79.0, a)])
    assert got == [b, c]
    assert search.hoist_finalists([]) == []
    monkeypatch.setattr(search, "HOIST_FINALIST_SHARE", 0.0)   # every distinct one
    assert search.hoist_finalists([(50.0, a), (100.0, b), (0.0, a)]) == [a, b]


@pytest.fixture(scope="module")
def mbv2(run_pipeline):
    """The zoo MobileNetV2 at 96x96x3 (depthwise layers: the wide prefetch search), passed
    and quantized."""
    g = run_pipeline(import_onnx(zoo.build("mobilenet-v2", width=96, height=96)))
    xs = [np.random.default_rng(5).uniform(-2, 2, (1, 3, 96, 96)).astype(np.float32)]
    quantize_graph(g, collect_ranges(g, xs))
    return g


def test_ranked_prefetch_search_keeps_the_program_with_fewer_lowerings(mbv2, monkeypatch):
    t = load_target().with_sram(512 * 1024)
    runs = []
    real = lowering.Lowering.run

    def run(self):
        runs.append(self.hoist)
        return real(self)

    monkeypatch.setattr(lowering.Lowering, "run", run)
    got = search.search(mbv2, t)
    ranked = len(runs)
    runs.clear()
    monkeypatch.setattr(search, "HOIST_FINALIST_SHARE", 0.0, raising=False)
    want = search.search(mbv2, t)   # every candidate of every round lowered
    assert got.commands == want.commands
    assert got.weights.data == want.weights.data
    assert ranked < len(runs), (ranked, len(runs))
