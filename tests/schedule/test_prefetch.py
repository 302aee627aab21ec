"""Cross-op weight prefetch (schedule/prefetch.py: :class:`Hoist`, :func:`plan_hoist`): the first
weight blocks of a load-bound conv are loaded while earlier, compute-bound ops run, into SRAM
those ops leave free. The prefetched program is bit-exact against the golden integer model in
stream order and in random legal interleavings (hazard-free), moves exactly the DRAM bytes of
the program without prefetch, and :func:`lower` keeps it only when the replay is faster."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import assert_bit_exact_schedules, quantized_model
from helpers.prefetch_net import PREFETCH_BUDGET as BUDGET
from helpers.prefetch_net import prefetch_net, quantized_prefetch_net

from tcc_compiler.isa.spec import Queue, Region
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.prefetch import plan_hoist, plan_pieces
from tcc_compiler.schedule.report import dram_bytes
from tcc_compiler.target import load_target


@pytest.fixture(scope="module")
def net_q(prefetch_plain):
    """The net quantized, a fresh input, the target, the plain program and its prefetched
    twin (same resident zone: none)."""
    base = prefetch_plain()
    g, t, plain = base.g, base.t, base.plain
    hoist = base.hoist()
    assert hoist is not None
    pre = Lowering(g, t, 0, hoist=hoist).run()
    return g, base.x, t, plain, pre, hoist


def test_plan_picks_the_load_bound_conv(net_q):
    """The consumer is the first load-bound conv (conv3, 3x3/s2 to 256 channels); the window
    ends with the op just before it; every prefetch load is attributed to conv3."""
    *_, pre, hoist = net_q
    assert hoist.consumer == "conv3"
    assert hoist.window and hoist.window[-1] == "conv2"
    assert 16 * 1024 <= hoist.area_bytes <= BUDGET
    names = [c for c in pre.comments if "prefetch" in c]
    assert names and all(c.startswith("conv3 prefetch") for c in names)


def test_prefetched_program_bit_exact_in_order_and_random(net_q):
    g, x, _, _, pre, _ = net_q
    assert_bit_exact_schedules(pre, BUDGET, g, x)


def _weight_bytes_read(cmds) -> int:
    """DRAM bytes the loads read from the WEIGHTS region."""
    return sum(c.total_bytes for c in cmds if c.queue is Queue.LOAD
               and c.dram >> 30 == Region.WEIGHTS)


def test_prefetch_moves_loads_without_adding_traffic(net_q):
    """Every weight byte read once, as without prefetch (the consumer's activation traffic
    may differ: its tiles are re-planned with blocks that pack the area, schedule/prefetch.py
    block_cap); the prefetch loads are emitted inside the window ops' command ranges but
    counted to the consumer's layer."""
    _, _, _, plain, pre, hoist = net_q
    assert _weight_bytes_read(pre.commands) == _weight_bytes_read(plain.commands) \
        == len(pre.weights.data)
    assert dram_bytes(pre.commands)[1] == dram_bytes(plain.commands)[1]
    idx = [i for i, c in enumerate(pre.comments) if "prefetch" in c]
    cons = next(li for li in pre.layers if li.name == hoist.consumer)
    assert set(idx) <= set(cons.cmds)
    win = [li for li in pre.layers if li.name in hoist.window]
    inside = [i for i in idx if any(li.first_cmd <= i < li.end_cmd for li in win)]
    assert inside   # at least one block rides in a window op's idle LOAD time
    for li in win:
        own = li.cmds if li.cmds is not None else range(li.first_cmd, li.end_cmd)
        assert not set(own) & set(idx)


def test_lower_keeps_prefetch_only_when_faster(net_q):
    g, _, t, _, _, _ = net_q

    def cyc(p):
        return max(e for _, e in replay(p.commands, t))

    with_pf = lower(g, t, zone_fractions=(0.0,), cascade=False)
    without = lower(g, t, zone_fractions=(0.0,), cascade=False, prefetch=False)
    assert cyc(with_pf) <= cyc(without)


def test_plain_network_tries_the_lazy_whole_idle_window(net_q, monkeypatch):
    """A network without depthwise layers (one prefetch round, every candidate lowered) also
    plans its consumer's window not eager with all the window's idle time counted
    (hoistsearch.PLAIN_HOIST_VARIANTS), between the eager one and the lazy half-idle one
    (ResNet-50 224: 2,842,706 -> 2,837,018 cycles), and keeps the fastest program."""
    from tcc_compiler.schedule import hoistsearch

    g, _, t, _, _, _ = net_q
    tried, real = [], hoistsearch.plan_hoist

    def spy(*args, **kw):
        tried.append((args[5], args[6]))   # (eager, idle_share)
        return real(*args, **kw)
    monkeypatch.setattr(hoistsearch, "plan_hoist", spy)
    got = lower(g, t, zone_fractions=(0.0,), cascade=False)
    assert sorted(set(tried)) == [(False, 0.5), (False, 1.0), (True, 1.0)]
    cyc = max(e for _, e in replay(got.commands, t))
    monkeypatch.setattr(hoistsearch, "plan_hoist", real)
    for v in ((True, 1.0), (False, 0.5), (False, 1.0)):
        monkeypatch.setattr(hoistsearch, "PLAIN_HOIST_VARIANTS", (v,))
        one = lower(g, t, zone_fractions=(0.0,), cascade=False)
        assert cyc <= max(e for _, e in replay(one.commands, t))


def test_consumer_reuses_prefetch_area_bit_exact():
    """A consumer with more weight blocks than its prefetch area holds (conv4, 256->1024, input
    resident, channel order; area cut to a third of the plan's) loads its later blocks into
    the places of its prefetched blocks once their computes are done, issued right after
    those computes; bit-exact and hazard-free in stream order and random interleavings, and
    faster than the program without prefetch. (Two weight slots: with deep slots its own
    slots take every later block, test_deep_slots.py.)"""
    budget, zone = 768 * 1024, 64 * 1024
    g, x = quantized_prefetch_net(1024)
    t = load_target().with_sram(budget)
    lw = Lowering(g, t, zone, deep_slots=False)
    plain = lw.run()
    hoist = plan_hoist(g, lw.mem, plain, replay(plain.commands, t), t, eager=True)
    assert hoist is not None and hoist.consumer == "conv4"
    hoist = dataclasses.replace(hoist, area_bytes=hoist.area_bytes // 3 // 64 * 64)
    pre = Lowering(g, t, zone, hoist=hoist, deep_slots=False).run()
    lo = budget - hoist.area_bytes
    own = [c.sram for c, m in zip(pre.commands, pre.comments)
           if m.startswith("conv4 [") and "weights" in m]
    assert any(a >= lo for a in own) and any(a < lo for a in own)
    assert_bit_exact_schedules(pre, budget, g, x)
    assert max(e for _, e in replay(pre.commands, t)) < max(
        e for _, e in replay(plain.commands, t))


@pytest.fixture(scope="module")
def stacked(prefetch_plain):
    """Two hoists at once (schedule/prefetch.py): conv4's area at the top of the SRAM, conv3's
    stacked just below it; conv3 runs inside conv4's window. Returns (graph, input, target,
    plain program, prefetched program, (conv4's hoist, conv3's hoist))."""
    base = prefetch_plain()
    g, x, t, plain = base.g, base.x, base.t, base.plain
    h4 = base.hoist(plain.layers[-1].name)
    assert h4 is not None and h4.consumer == "conv4"
    h3 = base.hoist(plain.layers[-2].name, area_end=h4.area(t)[0])
    assert h3 is not None and h3.consumer == "conv3"
    return g, x, t, plain, Lowering(g, t, 0, hoist=(h4, h3)).run(), (h4, h3)


def test_stacked_hoists_take_disjoint_areas(stacked):
    """conv3's area ends where conv4's begins; conv3 is in conv4's window; every prefetch
    load of each consumer writes inside its own area, and each consumer's layer lists them."""
    _, _, t, _, pre, (h4, h3) = stacked
    assert h3.area(t)[1] == h4.area(t)[0] and h4.area(t)[1] == BUDGET
    assert "conv3" in h4.window
    for h in (h4, h3):
        lo, hi = h.area(t)
        idx = [i for i, m in enumerate(pre.comments) if m.startswith(f"{h.consumer} prefetch")]
        assert idx and all(lo <= pre.commands[i].sram < hi for i in idx)
        li = next(li for li in pre.layers if li.name == h.consumer)
        assert set(idx) <= set(li.cmds)


def test_stacked_hoists_bit_exact_in_order_and_random(stacked):
    """Hazard-free (static checker) and bit-exact against the golden model in stream order
    and random legal interleavings; every weight byte read once, as without prefetch."""
    g, x, _, plain, pre, _ = stacked
    assert _weight_bytes_read(pre.commands) == _weight_bytes_read(plain.commands)
    assert_bit_exact_schedules(pre, BUDGET, g, x, seeds=(1, 2, 3))


def test_prefetcher_rejects_overlapping_areas(stacked):
    """Two hoists whose areas overlap are an internal error, not a silent overwrite."""
    from tcc_compiler.errors import InternalError

    g, _, t, _, _, (h4, h3) = stacked
    with pytest.raises(InternalError, match="areas overlap"):
        Lowering(g, t, 0, hoist=(h4, dataclasses.replace(h3, area_end=h4.area(t)[0] + 64))).run()


def test_pieces_of_one_consumer_bit_exact(net_q):
    """One consumer's prefetch split by hand into two pieces (schedule/prefetch.py
    plan_pieces' form): the top half of the area with the whole window, the bottom half with
    the last window op only, blocks packed (block_cap). Both areas get the consumer's blocks,
    none larger than a quarter of the smaller area; the lower area's loads come after its
    shorter window began; bit-exact and hazard-free in order and in random interleavings."""
    from tcc_compiler.schedule.prefetch import block_cap

    g, x, t, _, _, hoist = net_q
    al = t.sram_align_bytes
    half = hoist.area_bytes // 2 // al * al
    top = dataclasses.replace(hoist, area_bytes=half, pack=True)
    low = dataclasses.replace(hoist, window=hoist.window[-1:], gaps=hoist.gaps[-1:],
                              area_bytes=hoist.area_bytes - half, area_end=BUDGET - half,
                              pack=True)
    pre = Lowering(g, t, 0, hoist=(top, low)).run()
    loads = [(i, c) for i, (c, m) in enumerate(zip(pre.commands, pre.comments))
             if m.startswith(f"{hoist.consumer} prefetch weights")]
    in_top = [i for i, c in loads if c.sram >= top.area(t)[0]]
    in_low = [i for i, c in loads if low.area(t)[0] <= c.sram < low.area(t)[1]]
    assert in_top and in_low and len(in_top) + len(in_low) == len(loads)
    last_win = next(li for li in pre.layers if li.name == hoist.window[-1])
    assert min(in_low) >= last_win.first_cmd
    from tcc_compiler.schedule.geom import conv_geom
    node = next(n for n in g.nodes if n.name == hoist.consumer)
    g4 = conv_geom(node, t)
    cap = block_cap(g4, min(top.area_bytes, low.area_bytes), t)
    per_channel = g4.kh * g4.kw * g4.cin_g + 16   # merged blocks: weights + records
    assert all(c.dst_bytes <= cap * per_channel if hasattr(c, "dst_bytes")
               else c.total_bytes <= cap * per_channel for _, c in loads)
    assert_bit_exact_schedules(pre, BUDGET, g, x)


def _chain_then_load_bound():
    """The prefetch net with conv2's and conv3's outputs also graph outputs: conv0..conv2
    cascade as one chain, conv3 and the load-bound conv4 run one by one. (quantized graph,
    a fresh input)."""
    from onnx import TensorProto, helper


    m = prefetch_net()
    for name, c, hw in (("r2", 32, 32), ("r3", 256, 16)):
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                            [1, c, hw, hw]))
    return quantized_model(m)


def test_window_runs_through_a_cascaded_chain():
    """A cascaded chain is one step of a prefetch window (its band buffers its footprint,
    entered by its last op's name): conv4's first blocks are prefetched from the chain of the
    three 3x3 convs on; bit-exact in order and in random legal interleavings, no DRAM bytes
    added."""
    g, x = _chain_then_load_bound()
    t = load_target().with_sram(BUDGET)
    lw = Lowering(g, t, 0, cascade=True)
    plain = lw.run()
    chained = {m.name for c in lw.mem.chains.values() for m in c.nodes}
    assert chained == {"conv0", "conv1", "conv2"}
    pieces = plan_pieces(g, lw.mem, plain, replay(plain.commands, t), t, eager=True)
    assert pieces and pieces[0].consumer == "conv4"
    assert pieces[0].window == ("conv2", "conv3")   # the chain is one step
    pre = Lowering(g, t, 0, cascade=True, hoist=pieces, mem=lw.mem).run()
    assert any("conv4 prefetch" in c for c in pre.comments)
    assert _weight_bytes_read(pre.commands) == _weight_bytes_read(plain.commands)
    assert_bit_exact_schedules(pre, BUDGET, g, x)
