"""Band slack (``plan_memory(..., band_slack=s)``, schedule/memory.py and cascade.plan_chain): a
cascaded chain takes the band height with the smallest buffers among those estimated at most
``s`` slower than the fastest, leaving SRAM to weight prefetch; the search
(schedule/search.py ``BAND_SLACKS``) plans a network with depthwise layers with each slack
and keeps the fastest program. The programs stay bit-exact."""

from __future__ import annotations

import numpy as np
from conftest import run_program_impl

from schedule.test_cascade_resident import SRAM, _block

from tcc_compiler.quant import run_golden
from tcc_compiler.schedule import search
from tcc_compiler.schedule.cascade import band_options
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.schedule.rank import plan_key
from tcc_compiler.schedule.tiling import NO_RESIDENCY
from tcc_compiler.target import load_target


def _chain(mem):
    (chain,) = mem.chains.values()
    return chain


def test_slack_takes_the_smallest_bands_within_it():
    """The 16 -> 96 -> 16 block at 32x32 on a 192 KB SRAM: the fastest band plan (11 rows,
    ~103 KB) against the smallest one within 5 % of its estimate (7 rows, ~71 KB)."""
    g, x = _block()
    t = load_target().with_sram(SRAM)
    fast = plan_memory(g, t, 0, True)
    slack = plan_memory(g, t, 0, True, band_slack=0.05)
    a, b = _chain(fast), _chain(slack)
    assert b.rows < a.rows and b.sram_peak_bytes < a.sram_peak_bytes
    assert a.est_cycles < b.est_cycles <= 1.05 * a.est_cycles
    fitting = [o for o in band_options(tuple(b.geoms), b.sc_from_input, b.side_geom, t,
                                       NO_RESIDENCY)   # zone 0: nothing resident
               if o[0] <= 1.05 * a.est_cycles]
    assert b.sram_peak_bytes == min(o[3] for o in fitting)
    assert plan_key(fast) != plan_key(slack)   # another program: not deduplicated
    assert plan_key(plan_memory(g, t, 0, True, band_slack=0.0)) == plan_key(fast)
    prog = Lowering(g, t, 0, cascade=True, mem=slack).run()
    assert prog.sram_peak_bytes < Lowering(g, t, 0, cascade=True, mem=fast).run() \
        .sram_peak_bytes
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1)):
        got, hazards = run_program_impl(prog, SRAM, g, x, schedule, seed)
        assert hazards == []
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))


def test_search_keeps_the_fastest_over_the_slacks(monkeypatch):
    """The search over BAND_SLACKS is never slower than with slack 0 alone (it keeps the
    fastest program of each slack's search; ties go to the smaller slack)."""
    g, _ = _block()
    t = load_target().with_sram(SRAM)

    def cycles():
        prog = search.search(g, t, compress_weights=True)
        return max(e for _, e in replay(prog.commands, t))

    assert search.BAND_SLACKS[0] == 0.0 and len(search.BAND_SLACKS) > 1
    both = cycles()
    monkeypatch.setattr(search, "BAND_SLACKS", (0.0,))
    assert both <= cycles()


def test_a_slack_that_cannot_be_lowered_is_passed_over(monkeypatch):
    """When no plan of a slack > 0 can be lowered, the search keeps the slack-0 program
    rather than failing (its error is raised only for slack 0)."""
    from tcc_compiler.errors import ScheduleError

    g, _ = _block()
    t = load_target().with_sram(SRAM)
    monkeypatch.setattr(search, "BAND_SLACKS", (0.0,))
    alone = search.search(g, t, compress_weights=True)
    real, calls = search._search_plans, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise ScheduleError("no tile fits")
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "BAND_SLACKS", (0.0, 0.05))
    monkeypatch.setattr(search, "_search_plans", flaky)
    prog = search.search(g, t, compress_weights=True)
    assert len(calls) == 2 and prog.commands == alone.commands


def test_a_larger_slack_prefetch_searches_only_its_new_plans_and_lifts_once(monkeypatch):
    """Slack 0 is searched in full; a slack > 0 prefetch-searches (``_add_hoists``) only
    ``SLACK_BASES`` plans no smaller slack searched, with ``lead`` False, and the ops are
    lifted (``_lifted``) once, on the fastest program of all the slacks."""
    g, _ = _block()
    t = load_target().with_sram(SRAM)
    hoisted, lifted = {}, []
    slack = [None]
    real_hoists, real_lifted = search._add_hoists, search._lifted
    real_cands = search._zone_candidates

    def cands(*args, **kw):
        slack[0] = args[-1]
        return real_cands(*args, **kw)

    def add_hoists(graph, t, compressor, lw, *args):
        hoisted.setdefault(slack[0], []).append((plan_key(lw.mem), args[-1]))
        return real_hoists(graph, t, compressor, lw, *args)

    def lift(*args, **kw):
        lifted.append(args[4])
        return real_lifted(*args, **kw)

    monkeypatch.setattr(search, "BAND_SLACKS", (0.0, 0.05))
    monkeypatch.setattr(search, "_zone_candidates", cands)
    monkeypatch.setattr(search, "_add_hoists", add_hoists)
    monkeypatch.setattr(search, "_lifted", lift)
    search.search(g, t, compress_weights=True)
    assert {False, True} <= {lead for _, lead in hoisted[0.0]}   # slack 0: in full
    late = hoisted[0.05]
    assert 1 <= len(late) <= search.SLACK_BASES and all(lead is False for _, lead in late)
    assert not {k for k, _ in late} & {k for k, _ in hoisted[0.0]}
    assert len(lifted) == 1


def test_a_slack_starting_too_slow_is_not_prefetch_searched(monkeypatch):
    """A slack > 0 whose plan is slower before prefetch than slack 0's fastest by more than
    SLACK_MAX_PRE_LOSS gets no prefetch search (no _add_hoists), and the search then gives
    the slack-0 program; within the bound it is searched."""
    g, _ = _block()
    t = load_target().with_sram(SRAM)
    monkeypatch.setattr(search, "BAND_SLACKS", (0.0,))
    alone = search.search(g, t, compress_weights=True)
    real_hoists, real_cands = search._add_hoists, search._zone_candidates
    slack, hoisted = [None], []

    def cands(*args, **kw):
        slack[0] = args[-1]
        return real_cands(*args, **kw)

    def add_hoists(*args):
        hoisted.append(slack[0])
        return real_hoists(*args)

    monkeypatch.setattr(search, "BAND_SLACKS", (0.0, 0.05))
    monkeypatch.setattr(search, "_zone_candidates", cands)
    monkeypatch.setattr(search, "_add_hoists", add_hoists)
    for loss, searched in ((-0.5, False), (1.0, True)):
        hoisted.clear()
        monkeypatch.setattr(search, "SLACK_MAX_PRE_LOSS", loss)
        prog = search.search(g, t, compress_weights=True)
        assert (0.05 in hoisted) is searched and 0.0 in hoisted
        if not searched:
            assert prog.commands == alone.commands


def test_only_the_fastest_prefetch_base_is_searched_with_lead(monkeypatch):
    """Slack 0's prefetch bases (the fastest plans, fastest first) are each searched with
    ``lead`` False; only the first ``LEAD_BASES`` also with ``lead`` True (a slower base's lead
    search never gave the final program on the bench rows)."""
    g, _ = _block()
    t = load_target().with_sram(SRAM)
    calls = []
    real_hoists = search._add_hoists

    def add_hoists(graph, t, compressor, lw, *args):
        calls.append((plan_key(lw.mem), args[-1]))
        return real_hoists(graph, t, compressor, lw, *args)

    monkeypatch.setattr(search, "BAND_SLACKS", (0.0,))
    monkeypatch.setattr(search, "_add_hoists", add_hoists)
    search.search(g, t, compress_weights=True)
    plain = list(dict.fromkeys(k for k, lead in calls if not lead))
    assert len(plain) >= 2   # more than one base: the rule has something to drop
    assert [k for k, lead in calls if lead] == plain[:search.LEAD_BASES]
