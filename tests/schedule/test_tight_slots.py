"""Tight weight slots (schedule/ops/conv.py ``_slot_channels``, the ``tight_slots`` lowering
tried on the search's winner by schedule/liftsearch.py): each weight slot is sized by the
widest channel block it receives, the slots taking the loads in turn, and a lowering with
them keeps every tile plan and stays hazard-free and bit-exact."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from conftest import run_program_impl
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.quant import run_golden
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.ops.conv import _ConvEmission
from tcc_compiler.target import load_target


def _slots(tight, ocb, o, blocks, nwb=2, prefetched=(), spatial=1):
    """_slot_channels of a conv with ``blocks`` [(o0, o1)] run in channel order."""
    tiles = [((0, 1, 0, 1), b, 0) for b in blocks for _ in range(spatial)]
    em = SimpleNamespace(ctx=SimpleNamespace(tight_slots=tight),
                         plan=SimpleNamespace(ocb=ocb), g=SimpleNamespace(o=o), tiles=tiles,
                         prefetched={k: None for k in prefetched})
    return _ConvEmission._slot_channels(em, nwb)


def test_a_narrow_last_block_gets_a_narrow_slot():
    """96 channels in blocks of 64 and 32 (MobileNetV2's projections): the second slot holds
    32 channels; without tight slots both hold 64."""
    assert _slots(True, 64, 96, [(0, 64), (64, 96)]) == [64, 32]
    assert _slots(False, 64, 96, [(0, 64), (64, 96)]) == [64, 64]


def test_slots_take_the_loads_in_turn():
    """Three loads into two slots: slot 0 gets blocks 0 and 2, slot 1 block 1; a block
    run over several spatial tiles is one load."""
    assert _slots(True, 64, 160, [(0, 64), (64, 128), (128, 160)], spatial=3) == [64, 64]
    assert _slots(True, 64, 136, [(0, 64), (64, 72), (72, 136)]) == [64, 8]


def test_a_prefetch_consumer_keeps_one_slot_per_load_left():
    """The classifier of MobileNetV2: 15 blocks prefetched, the last one (40 channels)
    loaded: one slot of 40 channels; with more loads than slots, full slots."""
    blocks = [(k * 64, min(k * 64 + 64, 1000)) for k in range(16)]
    assert _slots(True, 64, 1000, blocks, prefetched=range(15)) == [40]
    assert _slots(True, 64, 1000, blocks, prefetched=range(12)) == [64, 64]


def test_tight_lowering_is_bit_exact_with_the_same_tile_plans():
    g, x = quantized_prefetch_net(256, (200,))
    t = load_target().with_sram(48 * 1024)
    plain = Lowering(g, t, 0).run()
    prog = Lowering(g, t, 0, tight_slots=True).run()
    assert [(li.name, li.plan, li.tiles) for li in prog.layers] == \
        [(li.name, li.plan, li.tiles) for li in plain.layers]
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1)):
        got, hazards = run_program_impl(prog, 48 * 1024, g, x, schedule, seed)
        assert hazards == []
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1),
                                          err_msg=o.name)
