"""Resumed lowerings (schedule/resume.py): a prefetch or lift try started from an earlier,
recorded lowering's checkpoint is the very program a lowering from the first op gives
(commands, comments, slots, dependencies, layer table, weight region, SRAM peak), while it
lowers only the ops from the first one its decisions change; the replay of such a program
from the recorded program's replay is the full replay."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.errors import InternalError
from tcc_compiler.isa.spec import WAIT_NONE, Queue
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lift import plan_lifts
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.hoist import hoist_spans, plan_hoist
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.resume import resume_point
from tcc_compiler.target import load_target

BUDGET = 512 * 1024


@pytest.fixture(scope="module")
def net():
    """(graph, target, recorded plain lowering, its program, conv3's hoist, (conv3's,
    conv6's) hoists -- the second's window after the first's consumer, as in
    test_prefetch_handoff.py -- the shared memo and compressor)."""
    g, _ = quantized_prefetch_net(512, (256, 512))
    t = load_target().with_sram(BUDGET)
    memo, comp = {}, BlockCompressor()
    lw = Lowering(g, t, 0, comp, memo=memo, record=True)
    plain = lw.run()
    spans = replay(plain.commands, t)
    names = [li.name for li in plain.layers]
    h3 = plan_hoist(g, lw.mem, plain, spans, t, eager=True, consumer=names.index("conv3"))
    h6 = plan_hoist(g, lw.mem, plain, spans, t, eager=True, consumer=names.index("conv6"),
                    busy=hoist_spans(plain, (h3,), t))
    assert h3 is not None and h6 is not None
    return g, t, lw, plain, h3, (h3, dataclasses.replace(h6, pack=True)), memo, comp


def _lower(net, src=None, record=False, **kw):
    g, t, lw, _, _, _, memo, comp = net
    low = Lowering(g, t, 0, comp, memo=memo, mem=lw.mem, record=record, resume=src, **kw)
    return low, low.run()


def _same(a, b):
    assert a.commands == b.commands
    assert a.comments == b.comments and a.slots == b.slots and a.deps == b.deps
    assert a.layers == b.layers
    assert a.weights == b.weights
    assert a.sram_peak_bytes == b.sram_peak_bytes


def test_prefetch_try_resumed_from_the_plain_lowering_is_the_fresh_program(net):
    hoist = net[4]
    low, resumed = _lower(net, net[2], hoist=hoist)
    whole, fresh = _lower(net, hoist=hoist)
    _same(resumed, fresh)
    assert low.op_spans == whole.op_spans
    assert 0 < low.shared_cmds < len(fresh.commands)   # it did start late


def test_added_hoists_resume_with_the_recorded_prefetcher_state(net):
    """A try adding hoists to the recorded lowering's (the search's greedy rounds) starts at
    the first op of the added ones, the recorded prefetcher's state carried over."""
    pieces = net[5]
    first, _ = _lower(net, record=True, hoist=pieces[:1])
    p, carry = resume_point(first, Lowering(net[0], net[1], hoist=pieces), first.checkpoints.pos)
    assert carry
    low, resumed = _lower(net, first, hoist=pieces)
    _, fresh = _lower(net, hoist=pieces)
    _same(resumed, fresh)
    assert low.shared_cmds > 0


def test_other_hoists_resume_before_either_acts(net):
    """Hoists that are not a superset of the recorded ones: no prefetcher state carried,
    the start no later than the first op either acts on."""
    g, _, _, _, _, pieces, _, _ = net
    first, _ = _lower(net, record=True, hoist=pieces[:1])
    pos = first.checkpoints.pos
    p, carry = resume_point(first, Lowering(g, net[1], hoist=pieces[1:]), pos)
    assert not carry
    assert p <= min(pos[n] for h in pieces for n in (*h.window, h.consumer))
    low, resumed = _lower(net, first, hoist=pieces[1:])
    _, fresh = _lower(net, hoist=pieces[1:])
    _same(resumed, fresh)


def test_lift_try_resumed_from_the_prefetched_lowering_is_the_fresh_program(net):
    hoist = net[4]
    base, prog = _lower(net, record=True, hoist=hoist)
    lifts = plan_lifts(base.op_spans, net[1].sram_align_bytes)
    assert lifts
    low, resumed = _lower(net, base, hoist=hoist, lifts=lifts)
    _, fresh = _lower(net, hoist=hoist, lifts=lifts)
    _same(resumed, fresh)
    assert low.op_spans == _lower(net, hoist=hoist, lifts=lifts)[0].op_spans


def test_replay_from_a_shared_prefix_is_the_full_replay(net):
    t, hoist = net[1], net[4]
    plain = net[3]
    low, prog = _lower(net, net[2], hoist=hoist)
    full = replay(prog.commands, t)
    assert replay(prog.commands, t, (low.shared_cmds, replay(plain.commands, t))) == full
    assert replay(prog.commands, t, (0, [])) == full


def test_replay_from_a_prefix_reads_only_the_last_ends_of_each_queue(net):
    """A replay from a prefix reads the spans of the last ``WAIT_NONE`` commands of each
    queue before it only (a wait reaches back at most that far): the others may be
    anything, here None."""
    t, cmds = net[1], net[3].commands
    full = replay(cmds, t)
    for k in (len(cmds) // 3, len(cmds) // 2, len(cmds) - 1):
        kept: set[int] = set()
        for q in (Queue.LOAD, Queue.COMPUTE, Queue.STORE):
            kept |= set([i for i in range(k) if cmds[i].queue is q][-WAIT_NONE:])
        torn = [s if i in kept else None for i, s in enumerate(full)]
        assert None in torn[:k]
        assert replay(cmds, t, (k, torn))[k:] == full[k:]


def test_a_resume_from_another_plan_is_refused(net):
    g, t, lw, _, hoist, _, memo, comp = net
    other = Lowering(g, t, 0, comp, memo={}, mem=lw.mem, hoist=hoist, resume=lw)
    with pytest.raises(InternalError, match="another plan"):
        other.run()


def test_prefetcher_checkpoint_refuses_state_it_does_not_know(net):
    """A Prefetcher attribute neither carried nor fixed would be lost by a resumed lowering:
    checkpoint() refuses it rather than resume wrongly."""
    pf = Prefetcher(net[4], net[0])
    pf.checkpoint()
    pf.new_state = 1
    with pytest.raises(InternalError, match="new_state"):
        pf.checkpoint()


def test_resume_refuses_a_hoist_it_does_not_have(net):
    pieces = net[5]
    cp = Prefetcher(pieces, net[0]).checkpoint()
    with pytest.raises(InternalError, match="not here"):
        Prefetcher(pieces[:1], net[0]).resume(cp)
    mixed = (pieces[0], dataclasses.replace(pieces[1], lead=True))
    with pytest.raises(InternalError, match="another lead"):
        Prefetcher(mixed, net[0]).resume(Prefetcher(pieces[:1], net[0]).checkpoint())


def test_a_whole_output_lowering_resumes_from_its_twin_before_the_classifier():
    """A lowering with ``whole_out`` resumes from a recorded one without it (the lift
    search's whole-output variants) at the first 1x1-output conv, the only op the flag acts
    on: the fresh program, with every op before the classifier not lowered again."""
    from schedule.test_tight_slots import _classifier_net
    from conftest import quantized_model

    from tcc_compiler.schedule.resume import first_one_pixel

    g, _ = quantized_model(_classifier_net())
    t = load_target().with_sram(24 * 1024)
    memo: dict = {}
    twin = Lowering(g, t, 0, memo=memo, tight_slots=True, record=True)
    twin.run()
    low = Lowering(g, t, 0, memo=memo, mem=twin.mem, tight_slots=True, whole_out=True,
                   resume=twin)
    resumed = low.run()
    fresh = Lowering(g, t, 0, memo=memo, mem=twin.mem, tight_slots=True, whole_out=True).run()
    _same(resumed, fresh)
    pos = twin.checkpoints.pos
    assert first_one_pixel(g, t, pos) == pos[fresh.layers[-1].name]   # the Gemm
    assert 0 < low.shared_cmds == fresh.layers[-1].first_cmd


def test_a_try_before_its_sources_first_op_resumes_from_that_ones_source(net):
    """A try whose first changed op comes before the first op its source lowered itself
    (a source resumed from an earlier lowering) resumes from that earlier lowering's
    checkpoint, not from the first op: the fresh program (the greedy prefetch rounds: a
    round's best lowering, resumed at its consumer's window, is the next round's source)."""
    g, t, lw, _, _, pieces, _, _ = net
    h3, h6 = pieces
    pos = lw.checkpoints.pos
    assert pos[h3.window[0]] < pos[h6.window[0]]
    mid, _ = _lower(net, lw, record=True, hoist=(h6,))
    assert mid.shared_cmds > 0   # it lowered only the ops from h6's window on
    low, resumed = _lower(net, mid, hoist=pieces)   # adds h3, whose window starts earlier
    _, fresh = _lower(net, hoist=pieces)
    _same(resumed, fresh)
    assert 0 < low.shared_cmds < mid.shared_cmds   # from ``lw``'s checkpoint at h3's window
