"""The schedule search: resident-zone size x cascading x cross-op prefetch. The zone x cascading
candidates are memory-planned and ranked by the cost model (schedule/rank.py); the finalists
are lowered (:class:`~tcc_compiler.schedule.lowering.Lowering`) and replayed on the cycle model
(:func:`~tcc_compiler.schedule.cost.replay`), and the fastest program is kept. Its prefetch
variants reuse its memory plan."""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.handover import handed
from tcc_compiler.schedule.liftsearch import lifted as _lifted
from tcc_compiler.schedule.loadfill import fill_load_stalls
from tcc_compiler.schedule.lowering import Lowering, has_depthwise
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory
from tcc_compiler.schedule.coarsewide import lifted_coarse
from tcc_compiler.schedule.piecefit import fit_hoists, lifted_fitted
from tcc_compiler.schedule.hoist import (Hoist, hoist_spans, plan_hoist, plan_pieces,
                                         stalled_convs)
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.rank import estimate_cycles, finalists, plan_key
from tcc_compiler.schedule.reorder import exact_waits
from tcc_compiler.schedule.resume import resumable
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: (eager, idle_share) of the prefetch plans (:func:`plan_hoist`) :func:`search` tries.
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

#: Stalled convs (the most stalled first) each round of :func:`_add_hoists` tries as consumer.
HOIST_CANDIDATES = 3

#: A round of :func:`_add_hoists` (network with depthwise layers) lowers the hoist sets whose
#: :func:`hoist_estimate` is at least this share of the round's best estimate (EfficientNet-
#: Lite0 224: 0.5 keeps its program, 196 lowerings; 0.8: 125, +250 cycles; 0.9: 92, +1,216).
#: A floor relative to the program instead (no round whose best estimate is under 1 % of it)
#: loses ConvMixer-768/32's small-stall rounds (SMALL_STALL): +1.9 %.
HOIST_FINALIST_SHARE = 0.8

#: Programs (the fastest zone x cascading variants before prefetch) whose cross-op prefetch
#: :func:`search` plans for a network with depthwise layers: a variant that frees SRAM by
#: cascading (``cascade_resident``) may be slower before prefetch and faster after it.
PREFETCH_FINALISTS = 2

#: :attr:`Hoist.lead` settings whose greedy prefetch plans (:func:`_add_hoists`) :func:`search`
#: compares for a network with depthwise layers (MobileNetV2 224: 0.372 ms without leading,
#: 0.367 ms with it; ResNet-50 224, which is not searched this way, would be slower).
LEAD_VARIANTS = (False, True)

#: Band slacks (:func:`plan_memory` ``band_slack``) :func:`search` plans a network with
#: depthwise layers with (slack 0 searched in full, a larger one as :data:`SLACK_BASES`
#: says; the winner's ops lifted once), keeping the fastest program: a cascaded chain in
#: shorter bands runs a little slower but leaves SRAM to the weight prefetch (MobileNetV2
#: 224: 366,904 -> 362,314 cycles, EfficientNet-Lite0 224: 481,191 -> 477,953). A slack
#: whose plans are all those of an earlier one is skipped.
BAND_SLACKS = (0.0, 0.03, 0.05)

#: Plans of a band slack > 0 whose cross-op prefetch :func:`search` plans (``lead`` False):
#: the fastest before prefetch among those no smaller slack planned. The gain of a slack is
#: that of its changed cascaded plan with prefetch; searching each slack in full (every
#: finalist, both leads, lifts per slack) cost MobileNetV2 / Lite0 x2.1 / x2.2 schedule time.
SLACK_BASES = 1

#: A band slack > 0 whose plan starts slower (before prefetch) than slack 0's fastest by more
#: than this share is not prefetch-searched (:func:`_search_plans`). Pre-prefetch loss of the
#: slacks that won: Lite0 224 +0.28 %, MobileNetV3-L +0.12 %, MobileNetV2 +1.25 %; ConvMixer's
#: 3 % slack, +1.70 %, ended 3.4 % slower after 2.8 s of CPU (SSDLite, MobileOne unchanged).
SLACK_MAX_PRE_LOSS = 0.015

#: Resident-zone sizes :func:`search` tries, as fractions of the SRAM (0 = no residency).
ZONE_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def _cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def _zone_candidates(graph: Graph, t: Target, zone_fractions, cascade: bool,
                     compact: bool = False, band_slack: float = 0.0,
                     plans: dict | None = None) -> list[tuple[int, bool, MemoryPlan, int, bool]]:
    """(zone bytes, cascade, memory plan, estimated cycles, compact) of every distinct zone
    size x cascading candidate, in the search's order (smaller zone first, cascading first);
    a plan equal to an earlier one (:func:`~tcc_compiler.schedule.rank.plan_key`) is dropped.
    With ``cascade`` each zone is planned three ways: cascading the chains whose
    intermediates would not be resident, cascading every chain worth it
    (``cascade_resident``: SRAM freed for prefetch), and without cascades; with ``compact``
    (a network with depthwise layers) also a fourth, ``cascade_resident`` with
    :func:`plan_memory`'s ``compact`` (more chains cascaded, the zone placed so each op's
    tile area starts low). ``band_slack``: :func:`plan_memory`'s. ``plans``: (zone, cascade,
    cascade_resident, compact, overwrite, band slack or None without cascades) -> (plan,
    estimate) or the ScheduleError of planning it, filled here and shared by the calls of one
    search (a plan without cascades is the same for every slack); None: none.

    Raises:
        ScheduleError: the zone-free, cascade-free plan does not fit.
    """
    plans = {} if plans is None else plans
    ways = ((True, False, False), (True, True, False), (False, False, False))
    split = splits_chains(graph, t)
    if compact:
        ways += ((True, True, True),)
    out, seen = [], set()
    for frac in sorted(set(zone_fractions)):
        zone = int(t.sram_capacity_bytes * frac) // t.sram_align_bytes * t.sram_align_bytes
        for casc, every, tight in (ways if cascade else ((False, False, False),)):
            if every and zone == 0:   # nothing resident: the same plan as without
                continue
            key = (zone, casc, every, tight, not compact, band_slack if casc else None)
            if key not in plans:   # the slack changes cascaded band heights only
                try:
                    mem = plan_memory(graph, t, zone, casc, cascade_resident=every,
                                      compact=tight, split=split, band_slack=band_slack,
                                      overwrite=not compact)
                    plans[key] = (mem, estimate_cycles(graph, mem, t))
                except ScheduleError as exc:
                    plans[key] = exc
            if isinstance(plans[key], ScheduleError):
                if zone == 0 and not casc:
                    raise plans[key]
                log.debug("resident zone %d bytes leaves too little SRAM for tiles", zone)
                continue
            mem, est = plans[key]
            key = plan_key(mem)
            if key in seen:   # the same program as an earlier candidate's
                continue
            seen.add(key)
            out.append((zone, casc, mem, est, tight))
    return out


def splits_chains(graph: Graph, t: Target) -> bool:
    """Whether the memory plans cascade the pieces of chains that do not fit or pay whole
    (:func:`~tcc_compiler.schedule.cascade.split_chain`): for a network with grouped or
    depthwise convs (MobileOne-S1, a chain the length of the network; RegNetX; also
    ResNet-50-v2, whose standalone pre-activation BatchNorm affines run as 1x1 depthwise
    convs: 640x320 10,848,529 -> 9,824,055 cycles, 960x520 25,110,414 -> 23,720,120, 224x224
    unchanged). The others, ResNet-18/50 among them, cascade whole chains only: their programs
    stay as they were (ResNet-50 at 960x520 would gain 1.4%; its planning time and
    bit-exactness with pieces are not yet measured)."""
    return any(n.op is Op.CONV and conv_geom(n, t).group > 1 for n in graph.nodes)


def _best_zone(graph: Graph, t: Target, cands, compressor, memo: dict,
               cache: dict | None = None):
    """(cycles, program, lowering, compact) of every zone size x cascading variant
    (``cands``: :func:`_zone_candidates`) among the
    finalists of the cost model's ranking (:mod:`~tcc_compiler.schedule.rank`), each lowered
    and replayed, fastest first; ties go to the smaller zone, then to cascading. The
    ``compact`` plans (a network with depthwise layers, :func:`_zone_candidates`) are ranked
    apart: the finalists of the others and the best estimated compact one are lowered. When
    no finalist can be lowered, the other candidates are tried in the order of their
    estimates. ``cache``: plan key (:func:`plan_key`) -> (program, lowering) or the
    ScheduleError of its lowering, filled here and reused (an equal plan lowers to the same
    program); None: none.

    Raises:
        ScheduleError: no candidate can be lowered (the zone-free, cascade-free one's error).
    """
    cache = {} if cache is None else cache
    chosen = _chosen(cands)
    rest = sorted((i for i in range(len(cands)) if i not in chosen), key=lambda i: cands[i][3])
    lowered, error = [], None
    for batch in ([i for i in range(len(cands)) if i in chosen], *([i] for i in rest)):
        for i in batch:
            zone, casc, mem, est, tight = cands[i]
            try:
                prog, lw = _lower_cached(graph, t, cands[i], compressor, memo, cache)
            except ScheduleError as exc:
                if error is None or (zone == 0 and not casc):
                    error = exc
                log.debug("resident zone %d bytes leaves too little SRAM for tiles", zone)
                continue
            cycles = _cycles(prog, t)
            log.debug("resident zone %d bytes, %d cascaded chains: %d cycles (estimated %d)",
                      zone, len(lw.chains), cycles, est)
            lowered.append((cycles, len(lowered), prog, lw, tight))
        if lowered:
            return [(c, p, lw, k) for c, _, p, lw, k in sorted(lowered, key=lambda x: x[:2])]
    raise error


def _chosen(cands) -> set[int]:
    """Indices in ``cands`` (:func:`_zone_candidates`) of :func:`_best_zone`'s first batch:
    the finalists of the plans that are not ``compact`` and the best estimated compact one."""
    plain = [i for i, c in enumerate(cands) if not c[4]]
    chosen = {plain[i] for i in finalists([cands[i][3] for i in plain])}
    return chosen | set(sorted((i for i, c in enumerate(cands) if c[4]),
                               key=lambda i: cands[i][3])[:1])


def _lower_cached(graph: Graph, t: Target, cand, compressor, memo: dict,
                  cache: dict) -> tuple[Program, Lowering]:
    """(program, lowering) of candidate ``cand`` (:func:`_zone_candidates`), lowered once per
    plan key (:func:`plan_key`) in ``cache``.

    Raises:
        ScheduleError: its tiles do not fit (also when cached).
    """
    zone, casc, mem, _, _ = cand
    key = plan_key(mem)
    if key not in cache:
        lw = Lowering(graph, t, zone, compressor, cascade=casc, memo=memo, mem=mem,
                      record=True)   # its prefetch and lift tries resume from it
        try:
            cache[key] = (lw.run(), lw)
        except ScheduleError as exc:
            cache[key] = exc
    if isinstance(cache[key], ScheduleError):
        raise cache[key]
    return cache[key]


def search_parts(graph: Graph, target: Target, zone_fractions: tuple[float, ...],
                 compressor, memo: dict) -> tuple[Lowering, Program, int]:
    """:func:`search` in parts, for schedule/lower.py's ``lower_multi``: (the lowering of the
    zone x cascading variant the final program was planned from, before prefetch; the final
    program, :func:`search`'s own (exact waits included); its replayed cycles)."""
    lw, prog, cycles, alt = _search(graph, target, zone_fractions, compressor, True, True,
                                    memo)
    done = [(d, c if d is p else _cycles(d, target))
            for p, c in [(prog, cycles)] + alt
            for d in [_exact(p, c, target)]]
    return (lw, *min(done, key=lambda x: x[1]))


def search(graph: Graph, target: Target,
           zone_fractions: tuple[float, ...] = ZONE_FRACTIONS,
           compress_weights: bool = False, cascade: bool = True,
           prefetch: bool = True) -> Program:
    """The fastest program over the variants (see :func:`tcc_compiler.schedule.lower.lower`),
    its loads moved to exact waits (:func:`_exact`), then its LOAD-queue stalls filled with
    later weight loads (:func:`~tcc_compiler.schedule.loadfill.fill_load_stalls`).

    Raises:
        ScheduleError: an op cannot be tiled into the target's SRAM.
        UnsupportedError: a tensor shape the NPU cannot hold.
    """
    compressor = BlockCompressor() if compress_weights else None
    memo: dict = {}   # constants derived once for all the tries (conv_consts)
    _, prog, cycles, alt = _search(graph, target, zone_fractions, compressor, cascade,
                                   prefetch, memo)
    done = []
    for p, c in [(prog, cycles)] + alt:
        p = _exact(p, c, target)
        done.append(fill_load_stalls(p, target, _cycles(p, target)))
    return min(done, key=lambda x: x[1])[0]


def _exact(prog: Program, cycles: int, t: Target) -> Program:
    """``prog`` with its loads moved up to exact waits (:func:`exact_waits`), when that
    replays faster (ResNet-50 224: 2,848,962 -> 2,842,696 cycles, before
    :data:`PLAIN_HOIST_VARIANTS`; bench.py's compile now 2,839,678 -> 2,837,018); else
    ``prog``."""
    moved = exact_waits(prog)
    if moved is prog:
        return prog
    cycles2 = _cycles(moved, t)
    log.debug("exact waits: %d -> %d cycles", cycles, cycles2)
    return moved if cycles2 < cycles else prog


def _search(graph: Graph, t: Target, zone_fractions, compressor, cascade: bool,
            prefetch: bool, memo: dict):
    """(lowering, program, replayed cycles, alternatives) of the fastest of
    :func:`_search_plans` over the zone x cascading candidates planned with each of
    :data:`BAND_SLACKS` (a network with depthwise layers, cascading; else slack 0 only); ties
    go to the smaller slack, and a
    slack none of whose candidates can be lowered is passed over. Slack 0 is searched in
    full; a larger slack only by :data:`SLACK_BASES` of its plans that no smaller slack
    planned (see :func:`_search_plans`). The ops of the fastest program with prefetch are
    lifted (:func:`~tcc_compiler.schedule.liftsearch.lifted`) once, after all the slacks;
    *alternatives*: (program, cycles) of the same with its prefetch pieces fitted to whole
    blocks (:func:`~tcc_compiler.schedule.piecefit.lifted_fitted`), which the callers keep
    when it is faster after their own last steps (exact waits, load fill: it may lose there
    what it won, MobileNetV2 224 351,539 -> 351,807), and of the same with coarse weight
    blocks (:func:`~tcc_compiler.schedule.coarsewide.lifted_coarse`, on the fitted pieces):
    a list, empty when no piece changes and no block coarsens (or no prefetch search).

    Raises:
        ScheduleError: no candidate without slack can be lowered.
    """
    wide = has_depthwise(graph, t)
    best, seen, cache, pre, plans = None, [], {}, [], {}
    for slack in BAND_SLACKS if cascade and wide else (0.0,):
        cands = _zone_candidates(graph, t, zone_fractions, cascade, wide, slack, plans=plans)
        keys = {plan_key(c[2]) for c in cands}
        if keys in seen:   # no chain's band height moved: the same programs
            continue
        seen.append(keys)
        try:
            got = _search_plans(graph, t, cands, compressor, prefetch, memo, cache,
                                first=best is None, pre=pre)
        except ScheduleError:
            if best is None:   # slack 0: the error of the plans without slack
                raise
            log.debug("band slack %s: no candidate can be lowered", slack)
            continue
        if got is None:
            log.debug("band slack %s: no new plan", slack)
            continue
        log.debug("band slack %s: %d cycles", slack, got[2])
        if best is None or got[2] < best[2]:
            best = got
    if len(best) > 3:   # prefetch searched on a network with depthwise layers
        got = _lifted(graph, t, compressor, *best[:4], memo, best[4])
        fitted = lifted_fitted(graph, t, compressor, best[0], best[3], memo)
        coarse = lifted_coarse(graph, t, compressor, best[0],
                               fit_hoists(best[3], graph, best[0].mem, t), memo)
        return (*got, [a[1:] for a in (fitted, coarse) if a is not None])
    return (*best, [])


def _search_plans(graph: Graph, t: Target, cands, compressor, prefetch: bool,
                  memo: dict, cache: dict | None = None, first: bool = True,
                  pre: list | None = None):
    """(lowering, program, replayed cycles) of the fastest variant of ``cands``
    (:func:`_zone_candidates`): the fastest zone x
    cascading variant and, with ``prefetch``, the fastest after :func:`_add_hoists` of the
    :data:`PREFETCH_FINALISTS` fastest variants and the fastest ``compact`` one (of the
    fastest only for a network without depthwise layers: the ResNet programs, whose golden
    outputs stay as recorded); for a network with depthwise layers also that program's hoists
    and the lowering that made it (a 5-tuple: :func:`_search` lifts its ops). ``cache``: results
    by plan key shared by calls on the same graph (:func:`_best_zone`'s, and each base plan's
    prefetch rounds by ``lead``). ``first`` False (a band slack > 0, :func:`_search`): only the
    :data:`SLACK_BASES` fastest variants (before prefetch) whose plan has not been
    prefetch-searched yet (``cache``) are, with ``lead`` False only; None when there is none or
    when it is slower before prefetch than the fastest of the ``first`` call by more than
    :data:`SLACK_MAX_PRE_LOSS` (``pre``: a list shared by the calls, holding that fastest's
    cycles once the first call has run).
    """
    cache = {} if cache is None else cache
    tries = _best_zone(graph, t, cands, compressor, memo, cache)
    if not prefetch:
        cycles, prog, lw, _ = tries[0]
        return lw, prog, cycles
    wide = any(li.depthwise for li in tries[0][1].layers)
    best = None
    bases, leads = _prefetch_bases(tries, wide, first, cache)
    if pre is not None:
        if first:
            pre[:] = [tries[0][0]]
        elif pre and bases and bases[0][0] > (1 + SLACK_MAX_PRE_LOSS) * pre[0]:
            log.debug("band slack plan %d cycles before prefetch, slack 0's %d: not searched",
                      bases[0][0], pre[0])
            return None
    for cyc0, prog0, lw, _ in bases:
        for lead in leads:
            key = ("hoists", plan_key(lw.mem), lead)
            if key not in cache:
                cache[key] = _add_hoists(graph, t, compressor, lw, prog0, cyc0, memo, lead)
            cycles, prog, hoists, made = cache[key]
            log.debug("resident zone %d bytes, %d cascaded chains, lead %s: %d -> %d cycles "
                      "with prefetch", lw.zone_bytes, len(lw.chains), lead, cyc0, cycles)
            if best is None or cycles < best[2]:
                best = (lw, prog, cycles, hoists, made)
    if best is None:
        return None
    return best if wide else best[:3]


def _prefetch_bases(tries, wide: bool, first: bool, cache: dict):
    """(variants, leads) :func:`_search_plans` prefetch-searches, of ``tries``
    (:func:`_best_zone`'s, fastest first): with ``first`` the :data:`PREFETCH_FINALISTS`
    fastest and the fastest ``compact`` one with every :data:`LEAD_VARIANTS` (``wide``: a
    network with depthwise layers; else the fastest with ``lead`` False); else the
    :data:`SLACK_BASES` fastest whose plan key no ``("hoists", key, lead)`` entry of
    ``cache`` holds, with ``lead`` False."""
    if not first:
        searched = {k[1] for k in cache if k[0] == "hoists"}
        return [x for x in tries if plan_key(x[2].mem) not in searched][:SLACK_BASES], (False,)
    plain = [x for x in tries if not x[3]] or tries
    bases = plain[:PREFETCH_FINALISTS if wide else 1]
    if wide:   # and the fastest compact plan (planned for prefetch, may win only with it)
        bases += [x for x in tries if x[3] and all(x is not b for b in bases)][:1]
    return bases, (LEAD_VARIANTS if wide else (False,))


def _add_hoists(graph: Graph, t: Target, compressor, lw: Lowering, base: Program,
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
        for new in hoist_finalists(cands) if wide else [c for _, c in cands]:
            lowering = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                                hoist=best[2] + new, memo=memo, mem=lw.mem,
                                record=src is not None, resume=src)
            try:
                prog2 = lowering.run()
            except ScheduleError:
                log.debug("prefetch for %s: tiles no longer fit", new[0].consumer)
                continue
            spans2 = replay(prog2.commands, t, (lowering.shared_cmds, src_spans))
            cycles2 = max((e for _, e in spans2), default=0)
            log.debug("prefetch %s bytes of %s during %s ops: %d -> %d cycles",
                      [h.area_bytes for h in new], new[0].consumer,
                      [len(h.window) for h in new], best[0], cycles2)
            if cycles2 < round_best[0]:
                round_best, round_src = (cycles2, prog2, best[2] + new), (lowering, spans2)
        if round_best is best:
            break
        best = round_best
        src, src_spans = round_src if src is not None else (None, round_src[1])
    if not wide and best[2]:   # the consumer takes the slots of the conv before it over
        got = handed(graph, t, compressor, lw, memo, best, spans)
        if got is not best:
            best, src = got, None
    return (*best, src)


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
    """The hoist sets one round of :func:`_add_hoists` tries on top of ``hoists`` (those of
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
