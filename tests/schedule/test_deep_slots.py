"""Deep weight slots (``OpContext.deep_slots``, a network without depthwise layers): a conv
takes more than two weight slots when they fit (schedule/ops/convslots.py ``slot_channels``
``deep``), and each slot's SRAM is handed to the later ops' loads once its last reader is done
(``Emitter.release_early``); lowerings with them stay hazard-free and bit-exact, in stream
order and in random legal interleavings."""

from __future__ import annotations

import numpy as np
from conftest import run_program_impl
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue
from tcc_compiler.quant import run_golden
from tcc_compiler.schedule.emitter import Emitter
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.ops.convslots import earliest_slot, slot_channels
from tcc_compiler.target import load_target


def _blocks(o, ocb):
    return [(c, min(c + ocb, o)) for c in range(0, o, ocb)]


def test_deep_takes_the_most_slots_that_fit_up_to_its_cap_and_loads():
    fits5 = lambda k: k <= 5   # noqa: E731
    assert slot_channels(64, _blocks(512, 64), set(), 2, False, fits5) == [64, 64]
    assert slot_channels(64, _blocks(512, 64), set(), 2, False, fits5, 8) == [64] * 5
    assert slot_channels(64, _blocks(512, 64), set(), 2, False, fits5, 3) == [64] * 3
    # no more slots than own loads (two of four blocks prefetched)
    assert slot_channels(64, _blocks(256, 64), {0, 1}, 2, False, fits5, 8) == [64, 64]
    assert slot_channels(64, _blocks(512, 64), set(), 2, False, lambda k: False, 8) == [64, 64]


def test_the_slot_free_first_is_taken():
    cmp, st = Queue.COMPUTE, Queue.STORE
    assert earliest_slot([[(cmp, 5), None], [(cmp, 3)], [None]]) == 2
    assert earliest_slot([[(cmp, 5)], [(cmp, 3), None]]) == 1
    assert earliest_slot([[(cmp, 3), (st, 4)], [(cmp, 3), (st, 2)]]) == 1
    assert earliest_slot([[(cmp, 3)], [(cmp, 3)]]) == 0   # equals: the oldest free


def _cfg(em: Emitter) -> tuple:
    """A compute command (an ADD_CFG: no SRAM operands) standing for a tile's reader."""
    return em.emit(C.AddCfg, [], "cfg", zp_a=0, zp_b=0, zp_out=0, act_lo=-128, act_hi=127,
                   shift=0, mult_a=1, mult_b=1)


def test_a_released_slot_waits_only_for_its_last_reader():
    em = Emitter(1 << 20, 64)
    sa = em.begin_op(0, 0)
    slot, out = sa.alloc(1024, "weights"), sa.alloc(1024, "output")
    assert em.free(slot, 1024) == []
    reader = _cfg(em)
    last = _cfg(em)
    em.release_early(slot, reader)
    em.release_early(out, reader)   # never freed in this op: not released
    em.end_op(sa, 0, [])
    em.begin_op(0, 0)
    assert em.pending(0, 1024) == [reader]
    assert em.free(0, 1024) == [reader]
    assert em.pending(0, 1024) == []   # waited for once per buffer
    # bytes reaching the op's other buffer wait for its last compute (and store)
    assert em.free(512, 1024) == [reader, last, None]
    assert em.free(1024, 64) == [last, None]


def _weight_slots(prog, name: str) -> set[int]:
    """SRAM addresses conv ``name``'s weight blocks were loaded into."""
    return {c.sram for i, c in enumerate(prog.commands)
            if c.queue is Queue.LOAD and prog.comments[i].startswith(name + " ")
            and "weights" in prog.comments[i]}


def test_deep_slot_lowering_is_bit_exact():
    g, x = quantized_prefetch_net(512)
    budget = 256 * 1024
    t = load_target().with_sram(budget)
    prog = Lowering(g, t, 0).run()
    conv = [li for li in prog.layers if "conv4" in li.name][0].name
    assert len(_weight_slots(prog, conv)) > 2, "the load-bound conv kept two slots"
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1), ("random", 2), ("random", 3)):
        got, hazards = run_program_impl(prog, budget, g, x, schedule, seed)
        assert hazards == []
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1),
                                          err_msg=o.name)
