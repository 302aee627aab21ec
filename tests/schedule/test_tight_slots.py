"""The schedule search's tight variants (schedule/liftsearch.py ``TIGHT_VARIANTS``): weight
slots sized by the blocks they receive, a third slot when it fits
(schedule/ops/convslots.py ``slot_channels``), and a classifier's output blocks in one buffer
stored in two DMAs (``store_cut``); lowerings with them keep every tile plan and stay
hazard-free and bit-exact, in stream order and in random legal interleavings."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_bit_exact_schedules, quantized_model
from helpers.prefetch_net import quantized_prefetch_net
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.cost import dma_cycles
from tcc_compiler.schedule.ops.convslots import slot_channels, store_cut
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.target import load_target


def _blocks(o, ocb, spatial=1):
    return [(c, min(c + ocb, o)) for c in range(0, o, ocb) for _ in range(spatial)]


def _slots(o, ocb, tight=True, prefetched=(), fits=lambda k: False, spatial=1):
    return slot_channels(ocb, _blocks(o, ocb, spatial), set(prefetched), 2, tight, fits)


def test_a_narrow_last_block_gets_a_narrow_slot():
    """96 channels in blocks of 64 and 32 (MobileNetV2's projections): the second slot holds
    32 channels; without tight slots, or with one slot, every slot holds a full block."""
    assert _slots(96, 64) == [64, 32]
    assert _slots(96, 64, tight=False) == [64, 64]
    assert slot_channels(64, _blocks(96, 64), set(), 1, True, lambda k: True) == [64]


def test_slots_take_the_loads_in_turn_and_a_third_when_it_fits():
    """160 channels in 64, 64, 32: slot 0 gets blocks 0 and 2 (a block run over several
    spatial tiles is one load); with room for three slots each holds its own block."""
    assert _slots(160, 64, spatial=3) == [64, 64]
    assert _slots(160, 64, fits=lambda k: k == 3) == [64, 64, 32]
    assert _slots(224, 64, fits=lambda k: True) == [64, 64, 64]   # 64+64+64+32: 0/3 share


def test_a_prefetch_consumer_keeps_one_slot_per_load_left():
    """The classifier of MobileNetV2: 15 blocks prefetched, the last one (40 channels)
    loaded: one slot of 40 channels; with more loads than slots, full slots, never three."""
    assert _slots(1000, 64, prefetched=range(15), fits=lambda k: True) == [40]
    assert _slots(1000, 64, prefetched=range(12), fits=lambda k: True) == [64, 64]


def test_store_cut_leaves_the_last_store_short():
    """The first store covers the most leading tiles whose store the later tiles' compute
    hides: 16 tiles of 104 cycles, 256 bytes each (MobileNetV2's classifier)."""
    t = load_target()
    cyc, ends = [104] * 16, [256 * (k + 1) for k in range(16)]
    m = store_cut(cyc, ends, t)
    assert dma_cycles(ends[m - 1], t) <= 104 * (16 - m)
    assert dma_cycles(ends[m], t) > 104 * (16 - m - 1)
    assert 1 <= m <= 15
    assert store_cut([1] * 4, [10 ** 6] * 4, t) == 3   # never hidden: all but the last


def _classifier_net():
    """x[1, 32, 16, 16] -> Conv 3x3 64 + Relu -> GAP -> Flatten -> Gemm 640 (1x1 output in
    channel blocks under a small SRAM)."""
    r = np.random.default_rng(5)
    inits = {"w": r.normal(0, 0.1, (64, 32, 3, 3)), "b": r.normal(0, 0.1, 64),
             "fw": r.normal(0, 0.2, (640, 64)), "fb": r.normal(0, 0.1, 640)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    g = helper.make_graph(
        nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 640])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def classifier():
    return quantized_model(_classifier_net())


def test_whole_output_stores_twice_and_is_bit_exact(classifier):
    g, x = classifier
    budget = 24 * 1024
    t = load_target().with_sram(budget)
    plain = Lowering(g, t, 0).run()
    prog = Lowering(g, t, 0, tight_slots=True, whole_out=True).run()
    fc = plain.layers[-1]
    assert fc.tiles > 2, "the classifier is not in channel blocks under this SRAM"
    assert [(li.name, li.plan, li.tiles) for li in prog.layers] == \
        [(li.name, li.plan, li.tiles) for li in plain.layers]

    def stores(p):   # the classifier's
        return sum(c.queue is Queue.STORE and p.comments[i].startswith(fc.name + " [")
                   for i, c in enumerate(p.commands))
    assert stores(plain) == fc.tiles and stores(prog) == 2
    assert_bit_exact_schedules(prog, budget, g, x)


@pytest.mark.parametrize("kb", [2, 5, 11, 16, 22])
def test_a_whole_output_that_does_not_fit_keeps_two_slots(classifier, kb):
    """The whole output is one buffer of all the classifier's outputs, larger than the two
    block slots the tile plan priced: where it did not fit, the search's whole-output
    variant raised InternalError (SRAM overflow allocating output, exit 1: MobileNetV2 96x64
    on a 16 KiB target, found by the session-14 attack). It keeps the two slots there."""
    g, x = classifier
    budget = kb * 1024
    t = load_target().with_sram(budget)
    plain = Lowering(g, t, 0).run()
    prog = Lowering(g, t, 0, tight_slots=True, whole_out=True).run()
    fc = plain.layers[-1]
    assert [(li.name, li.plan, li.tiles) for li in prog.layers] == \
        [(li.name, li.plan, li.tiles) for li in plain.layers]
    assert max(li.sram_peak_bytes for li in prog.layers) <= budget
    assert fc.tiles > 2
    assert_bit_exact_schedules(prog, budget, g, x)


def test_tight_lowering_is_bit_exact_with_the_same_tile_plans():
    g, x = quantized_prefetch_net(256, (200,))
    budget = 48 * 1024
    t = load_target().with_sram(budget)
    plain = Lowering(g, t, 0).run()
    prog = Lowering(g, t, 0, tight_slots=True).run()
    assert [(li.name, li.plan, li.tiles) for li in prog.layers] == \
        [(li.name, li.plan, li.tiles) for li in plain.layers]
    assert_bit_exact_schedules(prog, budget, g, x)


def test_a_prefetch_consumers_own_slots_may_be_weight_lifted():
    """A span that is not liftable (a prefetch consumer keeps its tile area) but
    ``wliftable`` gets its weight slots lifted like a plain conv's (MobileNetV2's classifier:
    its last block's slot clear of the conv before it, whose input it overlapped)."""
    from tcc_compiler.schedule.lift import OpSpan, plan_weight_lifts

    spans = [OpSpan("a", 0, 100, 0, 1000, True), OpSpan("b", 900, 1000, 0, 1000, True),
             OpSpan("c", 0, 200, 0, 1000, False, 100, (), True)]
    assert plan_weight_lifts(spans, 64) == {"c": 256}
    spans[2] = OpSpan("c", 0, 200, 0, 1000, False, 100, (), False)
    assert plan_weight_lifts(spans, 64) == {}


def test_short_last_block_keeps_the_block_count_and_the_budget():
    """A 256 -> 1280 1x1 conv run as one spatial tile in channel blocks: the widest block of
    the array's width with as many blocks that fits (the last block narrowest); the same
    plan for a conv it does not apply to (several spatial tiles)."""
    from tcc_compiler.schedule.geom import conv_geom
    from tcc_compiler.schedule.ops.convslots import short_last_block
    from tcc_compiler.schedule.tiling import NO_RESIDENCY, plan_conv, working_set

    g, _ = quantized_prefetch_net(256, (1280,))
    t = load_target()
    geom = conv_geom([n for n in g.nodes if n.op.name == "CONV"][-1], t)
    seen = 0
    for kb in range(64, 1024, 16):
        plan = plan_conv(geom, t, kb * 1024)
        got = short_last_block(geom, t, plan, kb * 1024, NO_RESIDENCY)
        nb = -(-geom.o // plan.ocb)
        if plan.rows < geom.oh or plan.cols < geom.ow or nb < 2:
            assert got == plan
            continue
        seen += 1
        assert -(-geom.o // got.ocb) == nb and got.ocb >= plan.ocb and got.ocb % 64 == 0
        assert working_set(geom, got.rows, got.cols, got.ocb, nb, 64, got.wbufs) <= kb * 1024
        wider = got.ocb + 64
        assert -(-geom.o // wider) < nb or working_set(
            geom, got.rows, got.cols, wider, nb, 64, got.wbufs) > kb * 1024
    assert seen, "no budget runs the conv as one spatial tile in channel blocks"
