"""Weight-slot handover to a prefetch consumer (schedule/handover.py): the conv before the
consumer takes one weight slot per block, fills the slots below the consumer's base last
(``convslots.handover_order``), and the consumer's own slots start over the first of the
others (``convslots.handover_start``); the load-bound convs after the consumer may take
coarser blocks (``convslots.coarse_blocks``, ``plan_conv``'s ``min_ocb``). Lowerings with
them stay hazard-free and bit-exact, in stream order and in random legal interleavings."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import assert_bit_exact_schedules
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.handover import cut_area
from tcc_compiler.schedule.hoist import plan_hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.ops.convslots import (coarse_blocks, handover_order,
                                                 handover_start)
from tcc_compiler.schedule.tiling import plan_conv
from tcc_compiler.target import load_target


def test_slots_below_the_consumers_base_are_filled_last():
    # ResNet-50 224's layer4.0 conv1: four slots from 301,056 up; the downsample's base 401,408
    assert handover_order([301056, 434176, 567296, 700416], 401408) == [1, 2, 3, 0]
    # taken from the top of the SRAM: the given order is kept among each kind
    assert handover_order([700416, 567296, 434176, 301056], 401408) == [0, 1, 2, 3]
    assert handover_order([10, 20], 5) == [0, 1]
    assert handover_order([10, 20], 50) == [0, 1]


def test_consumer_slots_start_at_the_lowest_handed_slot_above_its_base():
    handed = [(434176, 567296), (567296, 700416), (700416, 833536), (301056, 434176)]
    assert handover_start(handed, 401408) == 434176
    assert handover_start(handed, 301056) == 301056
    assert handover_start(handed, 900000) is None
    assert handover_start([], 0) is None


def test_cut_area_keeps_a_minimum():
    from tcc_compiler.schedule.hoist import Hoist
    h = Hoist("c", ("a", "b"), 200 * 1024, ((), ()))
    assert cut_area((h,), 64 * 1024)[0] == dataclasses.replace(h, area_bytes=136 * 1024)
    assert cut_area((h,), 190 * 1024) is None


def _node(g, name):
    return next(n for n in g.nodes if n.name == name)


@pytest.fixture(scope="module")
def net():
    g, x = quantized_prefetch_net(512, (512, 1024))
    return g, x


def test_coarse_blocks_are_for_load_bound_convs_in_many_blocks(net):
    g, _ = net
    t = load_target()
    # 1x1 512 -> 1024 at 7x7: 512 KB of weights, 40,960 link cycles > 12,544 MAC cycles
    big = dataclasses.replace(conv_geom(_node(g, "conv6"), t), h=7, w=7, oh=7, ow=7)
    small = conv_geom(_node(g, "conv6"), t)   # the same at 16x16: 65,536 MAC cycles
    assert coarse_blocks(big, t, 64)
    assert not coarse_blocks(big, t, 512)       # two blocks only
    assert not coarse_blocks(small, t, 64)


def test_plan_conv_min_ocb_takes_larger_blocks_where_they_fit(net):
    g, _ = net
    t = load_target()
    geo = conv_geom(_node(g, "conv6"), t)
    p = plan_conv(geo, t, 256 * 1024)
    q = plan_conv(geo, t, 256 * 1024, min_ocb=2 * p.ocb)
    assert q.ocb >= 2 * p.ocb
    # none fits: the plan without the floor
    assert plan_conv(geo, t, 256 * 1024, min_ocb=10 ** 6) == p


BUDGET, ZONE = 768 * 1024, 256 * 1024


def _weight_loads(prog, name):
    """(SRAM address, is a prefetch) of every weight load of op ``name``, in stream order."""
    return [(c.sram, "prefetch" in prog.comments[i]) for i, c in enumerate(prog.commands)
            if c.queue is Queue.LOAD and prog.comments[i].startswith(name + " ")
            and "weights" in prog.comments[i]]


@pytest.fixture(scope="module")
def handed_progs(net):
    """(graph, input, the program with the prefetch of conv6, its handover twins)."""
    g, x = net
    t = load_target().with_sram(BUDGET)
    lw = Lowering(g, t, ZONE)
    plain = lw.run()
    ci = next(i for i, li in enumerate(plain.layers) if li.name == "conv6")
    h = plan_hoist(g, lw.mem, plain, replay(plain.commands, t), t, consumer=ci)
    assert h is not None and h.window[-1] == "conv5"
    pre = Lowering(g, t, ZONE, hoist=h, mem=lw.mem).run()
    twins = [Lowering(g, t, ZONE, hoist=h, mem=lw.mem, handover=True, coarse=coarse).run()
             for coarse in (False, True)]
    return g, x, t, lw.mem, pre, twins


def test_predecessor_takes_a_slot_per_block(handed_progs):
    g, _, t, mem, pre, (hand, _) = handed_progs
    own = [s for s, _ in _weight_loads(hand, "conv5")]
    assert len(own) > 2 and len(set(own)) == len(own), "a slot per block"
    assert len(set(s for s, _ in _weight_loads(pre, "conv5"))) < len(own)
    base = mem.base(_node(g, "conv6"))
    assert own == [own[i] for i in handover_order(own, base)]


def test_handover_lowerings_are_bit_exact(handed_progs):
    g, x, _, _, _, twins = handed_progs
    for prog in twins:
        assert_bit_exact_schedules(prog, BUDGET, g, x)
