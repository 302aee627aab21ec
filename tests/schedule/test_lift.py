"""Lifted tile areas (schedule/lift.py): an op whose usual place overlaps the tile area of
one of the ops just before it is placed clear of them when it fits; the lifted program keeps
every op's tile plan, is hazard-free and bit-exact against the golden integer model, in
stream order and in random legal interleavings."""

from __future__ import annotations

import pytest
from conftest import assert_bit_exact_schedules
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lift import LIFT_DEPTH, OpSpan, plan_lifts, plan_weight_lifts
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.target import load_target

BUDGET = 512 * 1024


def _span(name, lo, hi, base=0, end=1000, liftable=True):
    return OpSpan(name, lo, hi, base, end, liftable)


def test_overlap_with_the_op_two_before_is_lifted_to_the_lowest_clear_place():
    """a (bottom), b (top), c (bottom again, over a): c goes just above a, below b."""
    spans = [_span("a", 0, 100), _span("b", 900, 1000), _span("c", 0, 200)]
    assert plan_lifts(spans, 64) == {"c": 128}


def test_no_lift_without_overlap_or_room_or_when_not_liftable():
    clear = [_span("a", 0, 100), _span("b", 900, 1000), _span("c", 200, 300)]
    assert plan_lifts(clear, 64) == {}
    full = [_span("a", 0, 500), _span("b", 500, 1000), _span("c", 0, 300)]
    assert plan_lifts(full, 64) == {}
    fixed = [_span("a", 0, 100), _span("b", 900, 1000), _span("c", 0, 200, liftable=False)]
    assert plan_lifts(fixed, 64) == {}


def test_lift_stays_above_the_base_and_below_the_end():
    """The area must start at or above the op's base and end at or below its end."""
    spans = [_span("a", 0, 100), _span("b", 700, 800), _span("c", 300, 500, base=300, end=700)]
    assert plan_lifts(spans, 64) == {}   # [300, 500) is clear: no lift needed
    spans = [_span("a", 300, 420), _span("b", 700, 800), _span("c", 300, 500, base=300, end=700)]
    assert plan_lifts(spans, 64) == {"c": 448}   # 420 aligned up
    spans = [_span("a", 300, 420), _span("b", 700, 800), _span("c", 300, 600, base=300, end=700)]
    assert plan_lifts(spans, 64) == {}   # 300 bytes do not fit in [448, 700)


def test_depth_limits_the_ops_kept_clear_of():
    """Only the ``depth`` ops before an op count; a lifted op's new place is what later ops
    avoid."""
    spans = [_span("a", 0, 100), _span("b", 900, 1000), _span("c", 800, 900),
             _span("d", 0, 100)]
    assert plan_lifts(spans, 64, depth=2) == {}
    assert plan_lifts(spans, 64, depth=3) == {"d": 128}
    assert plan_lifts(spans, 64, depth=0) == {}
    assert LIFT_DEPTH >= 2


@pytest.fixture(scope="module")
def lifted():
    """The prefetch net (compute-bound 3x3 convs, then 1x1 convs) lowered plainly and with
    the lifts :func:`plan_lifts` places from the plain program's op spans. Returns (graph,
    input, plain program, its lowering, lifts, lifted program, its lowering)."""
    g, x = quantized_prefetch_net(256, (128, 256, 128))
    t = load_target().with_sram(BUDGET)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    lifts = plan_lifts(lw.op_spans, t.sram_align_bytes)
    lw2 = Lowering(g, t, 0, lifts=lifts)
    return g, x, plain, lw, lifts, lw2.run(), lw2


def test_lifted_ops_keep_their_tiles_and_clear_the_ops_before(lifted):
    _, _, plain, lw, lifts, prog, lw2 = lifted
    assert lifts, "the net has no op overlapping the op two before it"
    def plans(p):
        return [(li.plan, li.tiles) for li in p.layers]

    assert plans(prog) == plans(plain)
    before = {s.name: s for s in lw.op_spans}
    for k, s in enumerate(lw2.op_spans):
        if s.name not in lifts:
            continue
        assert s.lo == lifts[s.name] and s.hi - s.lo == before[s.name].hi - before[s.name].lo
        for p in lw2.op_spans[max(0, k - LIFT_DEPTH):k]:
            assert s.hi <= p.lo or p.hi <= s.lo, (s.name, p.name)


def test_lifted_program_bit_exact_in_order_and_random(lifted):
    g, x, plain, _, _, prog, _ = lifted
    assert_bit_exact_schedules(prog, BUDGET, g, x)


def test_lifted_loads_wait_less(lifted):
    """The point of a lift: the LOAD queue idles no longer than without it."""
    _, _, plain, _, _, prog, _ = lifted
    t = load_target().with_sram(BUDGET)

    def load_idle(p):
        spans = replay(p.commands, t)
        loads = [spans[i] for i, c in enumerate(p.commands) if c.queue is Queue.LOAD]
        return max(e for _, e in spans) - sum(e - s for s, e in loads)

    assert load_idle(prog) <= load_idle(plain)


def test_search_keeps_a_lifted_program_only_when_faster_with_the_same_plans(lifted):
    """schedule/liftsearch.py ``lifted``: the program it returns replays no slower than the one
    given and every op keeps its tile plan (lifts that would change one are dropped)."""
    from tcc_compiler.schedule.liftsearch import lifted as _lifted

    g, _, plain, lw, _, _, _ = lifted
    t = load_target().with_sram(BUDGET)
    cycles = max(e for _, e in replay(plain.commands, t))
    _, prog, cycles2 = _lifted(g, t, None, lw, plain, cycles, (), {})
    assert cycles2 == max(e for _, e in replay(prog.commands, t)) <= cycles
    assert [(li.name, li.plan, li.tiles) for li in prog.layers] == \
        [(li.name, li.plan, li.tiles) for li in plain.layers]


def test_search_lowers_a_variants_lifted_tile_areas_once_for_all_its_depths(lifted,
                                                                            monkeypatch):
    """liftsearch.TIGHT_VARIANTS holds (tight, whole) pairs at two weight-lift depths: the
    lowerings before the weight lifts (as it is, then its tile areas lifted) do not depend on
    the depth, so each pair's are made once; the result is the one made without sharing."""
    from tcc_compiler.schedule import liftsearch

    g, _, plain, lw, _, _, _ = lifted
    t = load_target().with_sram(BUDGET)
    cycles = max(e for _, e in replay(plain.commands, t))
    runs = []
    real = Lowering.run

    def run(self):
        runs.append((self.tight_slots, self.whole_out, tuple(sorted(self.lifts.items())),
                     tuple(sorted(self.wlifts.items()))))
        return real(self)

    monkeypatch.setattr(Lowering, "run", run)
    shared = liftsearch.lifted(g, t, None, lw, plain, cycles, (), {})
    pairs = [v[:2] for v in liftsearch.TIGHT_VARIANTS]
    assert len(set(pairs)) < len(pairs)   # (a pair at two depths)
    unlifted = [r for r in runs if not r[2] and not r[3]]
    assert len(unlifted) == len(set(unlifted)) == len(set(pairs)) + 1   # (and its own)
    assert len(runs) == len(set(runs))   # no lowering made twice
    monkeypatch.setattr(liftsearch, "_lift_variant", _unshared(liftsearch._lift_variant))
    alone = liftsearch.lifted(g, t, None, lw, plain, cycles, (), {})
    assert shared[2] == alone[2] and shared[1].commands == alone[1].commands


def _unshared(f):
    """``_lift_variant`` without its ``tiled`` dict (each variant lowers its own)."""
    return lambda *a: f(*a[:-1], None)


def _wspan(name, lo, hi, wbytes=0, res=(), base=0, end=1000, liftable=True):
    return OpSpan(name, lo, hi, base, end, liftable, wbytes, tuple(res))


def test_weight_slots_lifted_clear_of_the_recent_ops_and_their_resident_tensors():
    """c's area overlaps a's: its 100 weight-slot bytes go to the lowest place clear of a, b,
    the resident tensor b reads ([100, 300)) and c's own area."""
    spans = [_wspan("a", 0, 100), _wspan("b", 900, 1000, res=[(100, 300)]),
             _wspan("c", 0, 200, wbytes=100)]
    assert plan_weight_lifts(spans, 64) == {"c": 320}


def test_no_weight_lift_without_overlap_room_slots_or_when_not_liftable():
    clear = [_wspan("a", 0, 100), _wspan("b", 900, 1000), _wspan("c", 200, 300, wbytes=50)]
    assert plan_weight_lifts(clear, 64) == {}
    full = [_wspan("a", 0, 500), _wspan("b", 500, 1000), _wspan("c", 0, 300, wbytes=50)]
    assert plan_weight_lifts(full, 64) == {}
    noslots = [_wspan("a", 0, 100), _wspan("b", 900, 1000), _wspan("c", 0, 200)]
    assert plan_weight_lifts(noslots, 64) == {}
    fixed = [_wspan("a", 0, 100), _wspan("b", 900, 1000),
             _wspan("c", 0, 200, wbytes=50, liftable=False)]
    assert plan_weight_lifts(fixed, 64) == {}


def test_weight_lifts_avoid_the_next_ops_and_earlier_weight_lifts():
    """d's slots (its area overlaps c's) take neither c's lifted slots [256, 320) nor the
    place of e, the op after it [384, 448)."""
    spans = [_wspan("a", 0, 100), _wspan("b", 900, 1000), _wspan("c", 0, 200, wbytes=64),
             _wspan("d", 0, 100, wbytes=64), _wspan("e", 384, 448)]
    assert plan_weight_lifts(spans, 64) == {"c": 256, "d": 320}
    spans[4] = _wspan("e", 320, 384)
    assert plan_weight_lifts(spans, 64) == {"c": 256, "d": 384}


@pytest.fixture(scope="module")
def wlifted():
    """The prefetch net lowered with the weight lifts planned from its plain program's op
    spans. Returns (graph, input, plain program, its lowering, weight lifts, program, its
    lowering)."""
    g, x = quantized_prefetch_net(256, (128, 256, 128))
    t = load_target().with_sram(BUDGET)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    wl = plan_weight_lifts(lw.op_spans, t.sram_align_bytes)
    lw2 = Lowering(g, t, 0, wlifts=wl)
    return g, x, plain, lw, wl, lw2.run(), lw2


def test_weight_lifted_convs_load_into_their_lifted_slots(wlifted):
    """Each weight-lifted conv keeps its tile plan and loads its weights at its lifted place,
    clear of the tile areas of the ops before it."""
    _, _, plain, lw, wl, prog, lw2 = wlifted
    assert wl, "the net has no conv whose area overlaps the ops before it"
    assert [(li.plan, li.tiles) for li in prog.layers] == \
        [(li.plan, li.tiles) for li in plain.layers]
    names = [s.name for s in lw.op_spans]
    for name, addr in wl.items():
        k = names.index(name)
        size = lw.op_spans[k].wbytes
        loads = [c for i, c in enumerate(prog.commands) if c.queue is Queue.LOAD
                 and name in prog.comments[i] and "weights" in prog.comments[i]]
        assert loads and all(addr <= c.sram < addr + size for c in loads), name
        for p in lw2.op_spans[max(0, k - LIFT_DEPTH):k]:
            assert addr + size <= p.lo or p.hi <= addr, (name, p.name)


def test_weight_lifted_program_bit_exact_in_order_and_random(wlifted):
    g, x, _, _, _, prog, _ = wlifted
    assert_bit_exact_schedules(prog, BUDGET, g, x)
