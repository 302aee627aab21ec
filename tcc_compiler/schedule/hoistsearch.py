"""The schedule search's cross-op weight prefetch: greedy rounds of hoists
(:class:`~tcc_compiler.schedule.hoist.Hoist`) added to a lowered program (:func:`add_hoists`),
each round's hoist sets ranked by an estimate (:func:`hoist_estimate`) and only the finalists
lowered (:func:`hoist_finalists`), each lowering resumed from the best one's checkpoint
(schedule/resume.py); schedule/search.py runs it on its fastest plans."""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.handover import compress_ahead, handed
from tcc_compiler.schedule.hoist import (Hoist, hoist_spans, plan_hoist, plan_pieces,
                                         stalled_convs)
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.precompress import precompress_consumers
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.resume import resumable
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: (eager, idle_share) of the prefetch plans (:func:`plan_hoist`) :func:`add_hoists` tries.
HOIST_VARIANTS = ((True, 1.0), (False, 0.5))

#: The same for a network without depthwise layers, whose one prefetch round lowers every
#: candidate: also not eager with all the idle time counted, a window between the other two's
#: (ResNet-50 224: layer4.0's downsample prefetched during 9 ops eager, 17 ops at half the idle
#: time, 2,842,706 cycles; this variant 2,837,018).
PLAIN_HOIST_VARIANTS = HOIST_VARIANTS + ((False, 1.0),)

#: Most cross-op prefetches (:class:`~tcc_compiler.schedule.prefetch.Hoist`) one program gets.
MAX_HOISTS = 8

#: (share of its span, share of the program) a conv's load stall must reach to be a prefetch
#: consumer in a network with depthwise layers once no conv passes stalled_convs' defaults.
SMALL_STALL = (0.1, 0.002)

#: Stalled convs (the most stalled first) each round of :func:`add_hoists` tries as consumer.
HOIST_CANDIDATES = 3

#: A round of :func:`add_hoists` (network with depthwise layers) lowers the hoist sets whose
#: :func:`hoist_estimate` is at least this share of the round's best estimate (EfficientNet-
#: Lite0 224: 0.5 keeps its program, 196 lowerings; 0.8: 125, +250 cycles; 0.9: 92, +1,216).
#: A floor relative to the program instead (no round whose best estimate is under 1 % of it)
#: loses ConvMixer-768/32's small-stall rounds (SMALL_STALL): +1.9 %.
HOIST_FINALIST_SHARE = 0.8


def add_hoists(graph: Graph, t: Target, compressor, lw: Lowering, base: Program,
                base_cycles: int, memo: dict | None = None,
                lead: bool = False) -> tuple[int, Program, tuple[Hoist, ...], Lowering | None]:
    """Cross-op weight prefetch, greedily: each round plans hoists for one more consumer
    (:func:`_candidates`) in an area stacked below the areas of the hoists kept so far, lowers
    the program with all of them -- for a network with depthwise layers only the round's
    finalists (:func:`hoist_finalists`) -- and keeps the fastest; it stops after
    :data:`MAX_HOISTS` rounds or a round that is not faster. Windows and idle gaps are
    measured on the program without prefetch (``base``, lowered by ``lw``), which the hoists
    share. A program without depthwise layers gets one round with the first stalled conv
    only, unsplit, each candidate lowered (the ResNet programs, whose golden outputs,
    tests/data/golden_outputs.json, stay byte-identical until re-recorded on purpose).
    ``memo``: shared by the lowerings (see :class:`Lowering`). ``lead``: every hoist planned
    leads (:attr:`Hoist.lead`).
    Returns (cycles, program, its hoists, the recorded lowering that made it -- ``lw`` when
    no hoist is kept -- or None when ``lw`` was not recorded with ``memo``).
    """
    spans = replay(base.commands, t)
    wide = any(li.depthwise for li in base.layers)
    best = (base_cycles, base, ())
    # the lowering of the best program so far: each try lowers only the ops from the first
    # one its added hoists act on (schedule/resume.py)
    # (and the replay of its program: a try's first commands, those of that program, are
    # not replayed again)
    src, src_spans = resumable(lw, memo), spans
    for _ in range(MAX_HOISTS if wide else 1):
        round_best, round_src = best, (src, src_spans)
        cands = [(est, tuple(dataclasses.replace(h, lead=lead) for h in new))
                 for est, new in _candidates(graph, t, lw, base, spans, best[1], best[2], wide,
                                             src_spans)]
        moot: set = set()   # eager-free keys of the tries whose eager flags decided nothing
        for new in _round_tries(graph, t, compressor, lw, memo, best[2], cands, wide):
            if _eager_free(new) in moot:   # its twin lowered to this very program
                continue
            lowering = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                                hoist=best[2] + new, memo=memo, mem=lw.mem,
                                record=src is not None, resume=src)
            try:
                prog2 = lowering.run()
            except ScheduleError:
                log.debug("prefetch for %s: tiles no longer fit", new[0].consumer)
                continue
            if not set(new) & lowering.eager_decided:
                moot.add(_eager_free(new))
            spans2 = replay(prog2.commands, t, (lowering.shared_cmds, src_spans))
            cycles2 = max((e for _, e in spans2), default=0)
            log.debug("prefetch %s bytes of %s during %s ops: %d -> %d cycles",
                      [h.area_bytes for h in new], new[0].consumer,
                      [len(h.window) for h in new], best[0], cycles2)
            if cycles2 < round_best[0]:
                _gain_shown(graph, t, compressor, lw, memo, new, wide, round_best is best)
                round_best, round_src = (cycles2, prog2, best[2] + new), (lowering, spans2)
        if round_best is best:
            break
        best = round_best
        src, src_spans = round_src if src is not None else (None, round_src[1])
    if not wide and best[2]:   # the consumer takes the slots of the conv before it over
        best, src = _handed_over(graph, t, compressor, lw, memo, best, spans, src)
    return (*best, src)


def _round_tries(graph: Graph, t: Target, compressor, lw: Lowering, memo: dict | None,
                 kept: tuple[Hoist, ...], cands: list[tuple[float, tuple[Hoist, ...]]],
                 wide: bool) -> list[tuple[Hoist, ...]]:
    """The hoist sets one round of :func:`add_hoists` lowers on top of ``kept``: of the
    candidates ``cands`` (:func:`_candidates`), the finalists (:func:`hoist_finalists`) for
    a network with depthwise layers (``wide``), else all; their consumers' weight blocks
    start compressing on the compressor's background threads first
    (:func:`~tcc_compiler.schedule.precompress.precompress_consumers`), so each try's
    compress while the tries before it lower."""
    tries = hoist_finalists(cands) if wide else [c for _, c in cands]
    precompress_consumers(graph, t, lw.mem, [kept + new for new in tries], compressor, memo)
    return tries


def _gain_shown(graph: Graph, t: Target, compressor, lw: Lowering, memo: dict | None,
                new: tuple[Hoist, ...], wide: bool, first: bool) -> None:
    """A try of :func:`add_hoists`' round with the hoists ``new`` is faster than the
    round's best so far (``first``: than the program the round started from): for a network
    without depthwise layers, whose one round hands its winner's weight slots over
    (:func:`_handed_over`), the first such try starts compressing that handover's coarse
    blocks (:func:`~tcc_compiler.schedule.handover.compress_ahead`; the round's tries share
    their consumer) while the other tries lower."""
    if first and not wide:
        compress_ahead(graph, t, compressor, lw, memo, new[0].consumer)


def _handed_over(graph: Graph, t: Target, compressor, lw: Lowering, memo: dict | None,
                 best: tuple, spans: list, src):
    """(best, src) after the weight-slot handover (:func:`~tcc_compiler.schedule.handover.handed`)
    of a network without depthwise layers: the handed-over program and no recorded lowering when
    it is faster, else ``best`` and ``src`` as they were."""
    got = handed(graph, t, compressor, lw, memo, best, spans)
    return (best, src) if got is best else (got, None)


def _eager_free(hoists: tuple[Hoist, ...]) -> tuple[Hoist, ...]:
    """``hoists`` with :attr:`Hoist.eager` cleared: equal for two tries of one round of
    :func:`add_hoists` that differ only in it. When a lowering of one of them shows that no
    new hoist's ``eager`` decided anything (:attr:`Lowering.eager_decided`), the other lowers
    to the same program, so it is not lowered (its cycles would tie, and a tie does not
    replace the round's best)."""
    return tuple(dataclasses.replace(h, eager=False) for h in hoists)


def hoist_estimate(t: Target, hoists: tuple[Hoist, ...], stall: int) -> float:
    """Cycles the hoists ``hoists`` of one consumer are estimated to save, without lowering
    them: the consumer's measured load stall (``stall``, cycles, :func:`stalled_convs`),
    capped by the DRAM time of the bytes the hoists can prefetch -- per hoist the smaller of
    its area (bytes) and what the LOAD-queue idle time after its window's loads
    (``Hoist.gaps``, cycles) carries (:func:`~tcc_compiler.schedule.cost.transfer_bytes`).
    It ignores what the window ops lose to the reserved areas, so it ranks consumers rather
    than the variants of one consumer (which mostly share it)."""
    nbytes = sum(min(h.area_bytes, cost.transfer_bytes(sum(map(sum, h.gaps)), t))
                 for h in hoists)
    return min(float(stall), cost.transfer_cycles(nbytes, t))


def hoist_finalists(cands: list[tuple[float, tuple[Hoist, ...]]]) -> list[tuple[Hoist, ...]]:
    """The hoist sets of one greedy round worth lowering, in the given order: the distinct
    ones (equal sets lower to equal programs) whose estimate (:func:`hoist_estimate`, cycles)
    is at least :data:`HOIST_FINALIST_SHARE` of the round's best."""
    top = max((e for e, _ in cands), default=0.0)
    return list(dict.fromkeys(c for e, c in cands if e >= HOIST_FINALIST_SHARE * top))


def _candidates(graph: Graph, t: Target, lw: Lowering, base: Program, spans, prog: Program,
                hoists: tuple[Hoist, ...], wide: bool,
                spans_now=None) -> list[tuple[float, tuple[Hoist, ...]]]:
    """The hoist sets one round of :func:`add_hoists` tries on top of ``hoists`` (those of
    ``prog``): for each consumer -- the first conv stalled on its loads in the first round,
    and with ``wide`` each of the :data:`HOIST_CANDIDATES` most stalled convs of ``prog``
    without a hoist -- and each of :data:`HOIST_VARIANTS` (without ``wide``:
    :data:`PLAIN_HOIST_VARIANTS`): the :func:`plan_hoist` window
    alone and, with ``wide``, also with its blocks packed and as its :func:`plan_pieces`
    split. Each comes with its :func:`hoist_estimate` (cycles). ``spans_now``: the replay of
    ``prog`` when known (None: replayed here)."""
    done = frozenset(h.consumer for h in hoists)
    if spans_now is None:
        spans_now = replay(prog.commands, t) if hoists else spans
    stalled = stalled_convs(prog, spans_now, done)
    small = not stalled and wide
    if small:   # many smaller stalls (ConvMixer: 32 1x1 convs, each 13 % of its span and
        # 0.3 % of the program): the most stalled one only, each round
        stalled = sorted(stalled_convs(prog, spans_now, done, *SMALL_STALL), reverse=True)[:1]
    if not stalled:
        return []
    idx = {stalled[0][1]} if not hoists else set()
    if wide:
        idx |= {i for _, i in sorted(stalled, reverse=True)[:HOIST_CANDIDATES]}
    busy = hoist_spans(base, hoists, t)
    stall_of = {i: s for s, i in stalled}
    out: list[tuple[float, tuple[Hoist, ...]]] = []
    for ci in sorted(idx):
        for eager, share in HOIST_VARIANTS if wide else PLAIN_HOIST_VARIANTS:
            one = plan_hoist(graph, lw.mem, base, spans, t, eager, share, ci, busy=busy)
            if one is None:
                continue
            est = hoist_estimate(t, (one,), stall_of[ci])
            out.append((est, (one,)))
            if not wide:
                continue
            if _pack_matters(graph, t, lw.mem, hoists, one):
                out.append((est, (dataclasses.replace(one, pack=True),)))
            pieces = plan_pieces(graph, lw.mem, base, spans, t, eager, share, ci, busy=busy)
            if len(pieces) > 1:
                out.append((hoist_estimate(t, pieces, stall_of[ci]), pieces))
    return out


def _pack_matters(graph: Graph, t: Target, mem: MemoryPlan, hoists: tuple[Hoist, ...],
                  one: Hoist) -> bool:
    """Whether ``one`` with ``pack`` lowers to another program than ``one`` does (on top of
    ``hoists``): packing only caps the consumer's weight blocks (:func:`block_cap`), so when
    its tile plan is the same either way, the two programs are the same and one lowering
    suffices."""
    pf = Prefetcher(hoists + (one,), graph)
    n = next(m for m in graph.nodes if m.name == one.consumer)
    try:
        return pf.consumer_plan(n, mem, t, False) != pf.consumer_plan(n, mem, t, True)
    except ScheduleError:
        return True
