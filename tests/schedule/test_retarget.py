"""Prefetch retargeting (schedule/retarget.py): the area of the prefetch whose window starts
last is handed first to a MAC-array conv of that window whose weights fill it, then back to
its own consumer over the rest of the window; the last consumer's last block may be left to
its own load, its SRAM given to the area below; the lowerings with the same lifts and flags
stay bit-exact and hazard-free, and the search keeps them only when the replay is faster."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from conftest import run_program_impl
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.quant import run_golden
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.prefetch import plan_hoist
from tcc_compiler.schedule.program import LayerInfo
from tcc_compiler.schedule.retarget import again, give_last_block, retarget_hoists, retargeted
from tcc_compiler.target import load_target

#: SRAM of the integration tests' target: the last conv's hoist spans conv3..conv5
BUDGET = 640 * 1024


def _layer(name, raw, kind="conv", depthwise=False, plan="7x7x64 tiles"):
    return LayerInfo(name, kind, (name,), (1, 1, 1, 1), (1, 1, 1, 1), plan=plan,
                     weight_raw_bytes=raw, depthwise=depthwise)


def _prog():
    """A fake program's layer table: s, a (too small), b (depthwise), c, d, e (cascaded),
    head, fc."""
    return types.SimpleNamespace(layers=[
        _layer("s", 0), _layer("a", 50), _layer("b", 200, depthwise=True), _layer("c", 150),
        _layer("d", 300), _layer("e", 300, plan="cascade 1/2 of x"), _layer("head", 400),
        _layer("fc", 900, kind="fc")])


def _hoists():
    late = Hoist("head", ("a", "b", "c", "d", "e"), 100, ((1,), (2,), (3,), (4,), (5,)),
                 eager=True, area_end=1000, pack=True)
    early = Hoist("fc", ("s", "a", "b", "c", "d", "e", "head"), 400,
                  tuple((k,) for k in range(7)))
    return early, late


def test_the_last_starting_window_is_split_at_the_first_conv_that_fills_its_area():
    early, late = _hoists()
    got = retarget_hoists((early, late), _prog())
    # a: too small; b: depthwise; c: the first whose weights fill the 100-byte area
    assert len(got) == 1
    first, rest = got[0][1:]
    assert got[0][0] is early
    assert (first.consumer, first.window, first.gaps) == ("c", ("a", "b"), ((1,), (2,)))
    assert (rest.consumer, rest.window, rest.gaps) == ("head", ("d", "e"), ((4,), (5,)))
    for h in (first, rest):   # the same area, flags kept
        assert (h.area_bytes, h.area_end, h.eager, h.pack) == (100, 1000, True, True)


def test_more_tries_the_next_convs_and_never_a_consumer_or_a_cascaded_one():
    early, late = _hoists()
    got = retarget_hoists((early, late), _prog(), tries=3)
    assert [hs[1].consumer for hs in got] == ["c", "d"]   # e is cascaded
    d_first = got[1]
    assert d_first[1].window == ("a", "b", "c") and d_first[2].window == ("e",)
    taken = (early, late, Hoist("c", ("a", "b"), 100, ((1,), (2,))))
    assert [hs[1].consumer for hs in retarget_hoists(taken, _prog(), tries=3)] == ["d"]
    assert retarget_hoists((), _prog()) == []
    big = Hoist("head", late.window, 10_000, late.gaps)   # no window conv fills it
    assert retarget_hoists((big,), _prog()) == []


@pytest.fixture(scope="module")
def net():
    """The prefetch net with 256- and 512-channel 1x1 convs after conv3; the hoist of its last
    conv (conv6) has the window conv3, conv4, conv5 and an area conv4's weights fill."""
    g, x = quantized_prefetch_net(512, (256, 512))
    t = load_target().with_sram(BUDGET)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    h = plan_hoist(g, lw.mem, plain, replay(plain.commands, t), t, eager=True,
                   consumer=len(plain.layers) - 1)
    low = Lowering(g, t, 0, hoist=(h,))
    prog = low.run()
    return g, x, t, h, low, prog


def _prefetched(prog) -> list[str]:
    """The consumers of the program's prefetch loads, in stream order."""
    return [c.split()[0] for c in prog.comments if " prefetch " in c]


def test_the_retargeted_lowering_prefetches_the_new_consumer_first_bit_exact(net):
    g, x, t, h, low, prog = net
    assert h.consumer == "conv6" and h.window == ("conv3", "conv4", "conv5")
    hs = retarget_hoists((h,), prog)
    assert [(a.consumer, a.window) for a in hs[0]] == [("conv4", ("conv3",)),
                                                        ("conv6", ("conv5",))]
    moved = again(low, hs[0]).run()
    pre = _prefetched(moved)
    assert set(pre) == {"conv4", "conv6"} and pre.index("conv6") > pre.index("conv4")
    assert set(_prefetched(prog)) == {"conv6"}
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1), ("random", 2)):
        got, hazards = run_program_impl(moved, BUDGET, g, x, schedule, seed)
        assert hazards == []
        for o in moved.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1),
                                          err_msg=o.name)


def test_retargeted_is_kept_only_when_faster(net):
    """Here the retargeted program is slower (conv4 was not stalled): None. Against a
    slower bound it is returned with its replayed cycles."""
    _, _, t, _, low, prog = net
    cycles = max(e for _, e in replay(prog.commands, t))
    assert retargeted(low, prog, cycles, t) is None
    got = retargeted(low, prog, 10 ** 9, t)
    assert got is not None and _prefetched(got[0])[0] == "conv4"
    assert got[1] == max(e for _, e in replay(got[0].commands, t)) > cycles


#: SRAM of the last-block tests' target (each conv's blocks are planned whole)
LAST_BUDGET = 1024 * 1024


@pytest.fixture(scope="module")
def stacked():
    """The prefetch net with a 256- and a 200-channel 1x1 conv after conv4: conv6 (the last
    consumer) prefetched whole at the top in four packed blocks (3 x 17,408 + 2,176 bytes),
    conv5 in the area stacked just below, 2,176 bytes short of its second 33,792-byte
    block."""
    g, x = quantized_prefetch_net(512, (256, 200))
    t = load_target().with_sram(LAST_BUDGET)
    lw = Lowering(g, t, 0)
    lw.run()
    win = ("conv3", "conv4")
    h6 = Hoist("conv6", win + ("conv5",), 54_400, ((0,),) * 3, pack=True)
    h5 = Hoist("conv5", win, 65_408, ((0,),) * 2, pack=True, area_end=LAST_BUDGET - 54_400)
    low = Lowering(g, t, 0, hoist=(h6, h5))
    return g, x, t, lw.mem, low, low.run()


def test_the_last_consumers_last_block_is_given_to_the_area_below(stacked):
    g, _, t, mem, low, prog = stacked
    h6, h5 = low.hoists
    out = give_last_block((h6, h5), g, mem, t, prog)
    assert out is not None
    n6, n5 = out
    assert (n6.consumer, n6.area_bytes, n6.area(t)[1]) == ("conv6", 54_400 - 2_176, LAST_BUDGET)
    assert (n5.consumer, n5.area_bytes, n5.area(t)) == ("conv5", 65_408 + 2_176,
                                                         (h5.area(t)[0], n6.area(t)[0]))
    # one byte short of the block: conv5's area would still hold one block only
    short = dataclasses.replace(h5, area_bytes=64_000)
    assert give_last_block((h6, short), g, mem, t, prog) is None
    # the last consumer's blocks not all prefetched: nothing to give back
    part = dataclasses.replace(h6, area_bytes=52_224)
    assert give_last_block((part, h5), g, mem, t, prog) is None


def test_the_last_block_given_back_is_loaded_by_its_conv_bit_exact(stacked):
    g, x, t, mem, low, prog = stacked
    moved = again(low, give_last_block(low.hoists, g, mem, t, prog)).run()
    assert _prefetched(prog) == ["conv5"] + ["conv6"] * 4
    assert _prefetched(moved) == ["conv5"] * 2 + ["conv6"] * 3
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1)):
        got, hazards = run_program_impl(moved, LAST_BUDGET, g, x, schedule, seed)
        assert hazards == []
        for o in moved.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1),
                                          err_msg=o.name)
