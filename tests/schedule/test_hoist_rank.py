"""The prefetch search ranks each greedy round's hoist sets with the cost model
(schedule/hoistsearch.py ``hoist_estimate``) and lowers only the finalists
(``hoist_finalists``), and a twin differing only in an ``eager`` flag that decided nothing
not at all: fewer lowerings than lowering every candidate, the same program on a depthwise
network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import record_lowerings

from tcc_compiler import zoo
from tcc_compiler.errors import ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import collect_ranges, quantize_graph
from tcc_compiler.schedule import cost, hoistsearch, lowering, search
from tcc_compiler.schedule.hoist import Hoist, plan_hoist, stalled_convs
from tcc_compiler.target import load_target


def _hoist(consumer: str, area: int, gaps=((100, 200),), eager=False) -> Hoist:
    return Hoist(consumer, ("a",) * len(gaps), area, gaps, eager)


def test_estimate_is_the_stall_capped_by_what_area_and_idle_time_carry():
    t = load_target()
    big = _hoist("c", 10 ** 9)   # the idle time (300 cycles) bounds it
    assert hoistsearch.hoist_estimate(t, (big,), 10 ** 6) == pytest.approx(300.0)
    assert hoistsearch.hoist_estimate(t, (big,), 120) == 120.0   # the stall bounds it
    small = _hoist("c", 64)      # the area bounds it
    assert hoistsearch.hoist_estimate(t, (small,), 10 ** 6) == \
        pytest.approx(cost.transfer_cycles(64, t))
    # pieces add up
    assert hoistsearch.hoist_estimate(t, (small, small), 10 ** 6) == \
        pytest.approx(2 * cost.transfer_cycles(64, t))


def test_finalists_keep_the_order_drop_repeats_and_far_estimates(monkeypatch):
    monkeypatch.setattr(hoistsearch, "HOIST_FINALIST_SHARE", 0.8)
    a, b, c = (_hoist("a", 1 << 16),), (_hoist("b", 1 << 16),), (_hoist("c", 1 << 16),)
    got = hoistsearch.hoist_finalists([(50.0, a), (100.0, b), (85.0, c), (100.0, b), (79.0, a)])
    assert got == [b, c]
    assert hoistsearch.hoist_finalists([]) == []
    monkeypatch.setattr(hoistsearch, "HOIST_FINALIST_SHARE", 0.0)   # every distinct one
    assert hoistsearch.hoist_finalists([(50.0, a), (100.0, b), (0.0, a)]) == [a, b]


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
    runs = record_lowerings(monkeypatch)
    got = search.search(mbv2, t)
    ranked = len(runs)
    runs.clear()
    monkeypatch.setattr(hoistsearch, "HOIST_FINALIST_SHARE", 0.0, raising=False)
    want = search.search(mbv2, t)   # every candidate of every round lowered
    assert got.commands == want.commands
    assert got.weights.data == want.weights.data
    assert ranked < len(runs), (ranked, len(runs))


def _flipped(hoists):
    return tuple(dataclasses.replace(h, eager=not h.eager) for h in hoists)


def test_eager_flag_that_decided_nothing_gives_the_same_program(mbv2):
    """Prefetcher.eager_decided: a lowering whose hoists are not in it lowers, with their
    ``eager`` flipped, to the very same program (the search lowers such twins once)."""
    t = load_target().with_sram(512 * 1024)
    base = lowering.Lowering(mbv2, t, 0, cascade=True)
    prog0 = base.run()
    spans = cost.replay(prog0.commands, t)
    checked = moot = 0
    for eager, share in hoistsearch.HOIST_VARIANTS:
        for ci in sorted({i for _, i in stalled_convs(prog0, spans, span_share=0.1,
                                                       program_share=0.002)}):
            h = plan_hoist(mbv2, base.mem, prog0, spans, t, eager, share, ci)
            if h is None:
                continue
            lw = lowering.Lowering(mbv2, t, 0, cascade=True, hoist=(h,), mem=base.mem)
            try:
                prog = lw.run()
            except ScheduleError:
                continue
            checked += 1
            twin = lowering.Lowering(mbv2, t, 0, cascade=True, hoist=_flipped((h,)),
                                     mem=base.mem).run()
            if h not in lw.eager_decided:
                moot += 1
                assert twin.commands == prog.commands
    assert checked and moot, (checked, moot)


def test_search_lowers_an_eager_twin_once_and_keeps_the_program(mbv2, monkeypatch):
    """A try that differs from an earlier one of its round only in ``Hoist.eager``, whose
    flag decided nothing there (Prefetcher.eager_decided), is not lowered: the same program,
    fewer lowerings (here one of 81)."""
    t = load_target().with_sram(256 * 1024)
    runs = record_lowerings(monkeypatch)
    got = search.search(mbv2, t)
    pruned = len(runs)
    runs.clear()
    monkeypatch.setattr(hoistsearch, "_eager_free", lambda hoists: hoists)   # no twin found
    want = search.search(mbv2, t)
    assert got.commands == want.commands
    assert got.weights.data == want.weights.data
    assert pruned < len(runs), (pruned, len(runs))
