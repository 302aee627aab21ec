"""The schedule search: resident-zone size x cascading x cross-op prefetch. The zone x cascading
candidates are memory-planned and ranked by the cost model (schedule/rank.py); the finalists
are lowered (:class:`~tcc_compiler.schedule.lowering.Lowering`) and replayed on the cycle model
(:func:`~tcc_compiler.schedule.cost.replay`), and the fastest program is kept. Its prefetch
variants reuse its memory plan.

The zone x cascading candidates and their finalists are schedule/zones.py's, the greedy
prefetch rounds schedule/hoistsearch.py's, the lifts schedule/liftsearch.py's; this module
runs them over the band slacks and keeps the fastest."""

from __future__ import annotations

import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.hoistsearch import add_hoists as _add_hoists
from tcc_compiler.schedule.liftsearch import lifted as _lifted
from tcc_compiler.schedule.loadfill import fill_load_stalls
from tcc_compiler.schedule.lowering import Lowering, has_depthwise
from tcc_compiler.schedule.coarsewide import lifted_coarse
from tcc_compiler.schedule.piecefit import fit_hoists, lifted_fitted
from tcc_compiler.schedule.precompress import precompress
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.rank import plan_key
from tcc_compiler.schedule.reorder import exact_waits
from tcc_compiler.schedule.retarget import retargeted
from tcc_compiler.schedule.zones import (ZONE_FRACTIONS, best_zone as _best_zone,
                                         program_cycles as _cycles, splits_chains,
                                         zone_candidates as _zone_candidates)
from tcc_compiler.target import Target

__all__ = ["ZONE_FRACTIONS", "search", "search_parts", "splits_chains"]

log = logging.getLogger(__name__)

#: Programs (the fastest zone x cascading variants before prefetch) whose cross-op prefetch
#: :func:`search` plans for a network with depthwise layers: a variant that frees SRAM by
#: cascading (``cascade_resident``) may be slower before prefetch and faster after it.
PREFETCH_FINALISTS = 2

#: :attr:`Hoist.lead` settings whose greedy prefetch plans (:func:`_add_hoists`) :func:`search`
#: compares for a network with depthwise layers (MobileNetV2 224: 0.372 ms without leading,
#: 0.367 ms with it; ResNet-50 224, which is not searched this way, would be slower).
LEAD_VARIANTS = (False, True)

#: Prefetch bases (:func:`_prefetch_bases`, fastest first) :func:`_search_plans` searches with
#: every :data:`LEAD_VARIANTS`; the others with ``lead`` False only. On the 20 bench rows
#: (tools/bench.py) a slower base's lead search never gave the final program (Lite0 224: the
#: second base's 484,247 cycles lost to band slack 3 %'s 480,848; MobileNetV2 224: slack 5 %
#: won), while the fastest base's won on MobileNetV3-L 224 (558,637 cycles, lead False
#: 560,282); they cost a quarter of Lite0's prefetch lowerings (180 -> 132).
LEAD_BASES = 1

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
    try:
        _, prog, cycles, alt = _search(graph, target, zone_fractions, compressor, cascade,
                                       prefetch, memo)
    finally:
        if compressor is not None:   # its background compression (schedule/precompress.py)
            compressor.close()
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
    blocks (:func:`~tcc_compiler.schedule.coarsewide.lifted_coarse`, on the fitted pieces),
    and of the fastest of those three with the area of its last-starting prefetch given
    first to a conv of its window (:func:`~tcc_compiler.schedule.retarget.retargeted`,
    when faster): a list, empty when no piece changes, no block coarsens and no retarget is
    faster (or no prefetch search).

    Raises:
        ScheduleError: no candidate without slack can be lowered.
    """
    wide = has_depthwise(graph, t)
    best, seen, cache, pre, plans = None, [], {}, [], {}
    # the blocks the first plan predicts are compressed while the others are planned
    ahead = ((lambda mem: precompress(graph, t, [mem], compressor, memo))
             if compressor is not None else None)
    for slack in BAND_SLACKS if cascade and wide else (0.0,):
        cands = _zone_candidates(graph, t, zone_fractions, cascade, wide, slack, plans=plans,
                                 first_plan=ahead)
        ahead = None
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
        return _wide_variants(graph, t, compressor, best, memo)
    return (*best, [])


def _wide_variants(graph: Graph, t: Target, compressor, best: tuple, memo: dict):
    """:func:`_search`'s result for a network with depthwise layers, from ``best`` (the
    5-tuple of :func:`_search_plans`): (lowering, program, cycles) of its ops lifted, and the
    alternatives its docstring lists (fitted pieces, coarse blocks, the fastest of the three
    retargeted)."""
    made: list = [[], [], []]
    got = _lifted(graph, t, compressor, *best[:4], memo, best[4], made=made[0])
    fitted = lifted_fitted(graph, t, compressor, best[0], best[3], memo, made[1])
    coarse = lifted_coarse(graph, t, compressor, best[0],
                           fit_hoists(best[3], graph, best[0].mem, t), memo, made[2])
    alt = [a[1:] for a in (fitted, coarse) if a is not None]
    top = min(((a[2], a[1], m[0]) for a, m in zip((got, fitted, coarse), made)
               if a is not None and m and m[0] is not None), key=lambda x: x[0],
              default=None)
    moved = retargeted(top[2], top[1], top[0], t) if top is not None else None
    return (*got, alt + ([moved] if moved is not None else []))


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
    for b, (cyc0, prog0, lw, _) in enumerate(bases):
        for lead in leads if b < LEAD_BASES else leads[:1]:
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
