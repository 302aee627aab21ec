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
from tcc_compiler.schedule.lift import plan_lifts
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory
from tcc_compiler.schedule.hoist import (Hoist, hoist_spans, plan_hoist, plan_pieces,
                                         stalled_convs)
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.rank import estimate_cycles, finalists, plan_key
from tcc_compiler.schedule.reorder import exact_waits
from tcc_compiler.schedule.tiling import uses_depthwise_mode
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: (eager, idle_share) of the prefetch plans (:func:`plan_hoist`) :func:`search` tries.
HOIST_VARIANTS = ((True, 1.0), (False, 0.5))

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

#: Re-placements of the lifts (:func:`_lifted`) after dropping those that changed a tile plan.
LIFT_ROUNDS = 3

#: Resident-zone sizes :func:`search` tries, as fractions of the SRAM (0 = no residency).
ZONE_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def _cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def _zone_candidates(graph: Graph, t: Target, zone_fractions, cascade: bool,
                     compact: bool = False) -> list[tuple[int, bool, MemoryPlan, int, bool]]:
    """(zone bytes, cascade, memory plan, estimated cycles, compact) of every distinct zone
    size x cascading candidate, in the search's order (smaller zone first, cascading first);
    a plan equal to an earlier one (:func:`~tcc_compiler.schedule.rank.plan_key`) is dropped.
    With ``cascade`` each zone is planned three ways: cascading the chains whose
    intermediates would not be resident, cascading every chain worth it
    (``cascade_resident``: SRAM freed for prefetch), and without cascades; with ``compact``
    (a network with depthwise layers) also a fourth, ``cascade_resident`` with
    :func:`plan_memory`'s ``compact`` (more chains cascaded, the zone placed so each op's
    tile area starts low).

    Raises:
        ScheduleError: the zone-free, cascade-free plan does not fit.
    """
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
            try:
                mem = plan_memory(graph, t, zone, casc, cascade_resident=every, compact=tight,
                                  split=split)
                est = estimate_cycles(graph, mem, t)
            except ScheduleError:
                if zone == 0 and not casc:
                    raise
                log.debug("resident zone %d bytes leaves too little SRAM for tiles", zone)
                continue
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


def has_depthwise(graph: Graph, t: Target) -> bool:
    """Whether a conv of ``graph`` runs on the depthwise datapath
    (:func:`~tcc_compiler.schedule.tiling.uses_depthwise_mode`)."""
    return any(n.op is Op.CONV and uses_depthwise_mode(conv_geom(n, t), t)
               for n in graph.nodes)


def _best_zone(graph: Graph, t: Target, zone_fractions, compressor, cascade: bool,
               memo: dict):
    """(cycles, program, lowering, compact) of every zone size x cascading variant among the
    finalists of the cost model's ranking (:mod:`~tcc_compiler.schedule.rank`), each lowered
    and replayed, fastest first; ties go to the smaller zone, then to cascading. The
    ``compact`` plans (a network with depthwise layers, :func:`_zone_candidates`) are ranked
    apart: the finalists of the others and the best estimated compact one are lowered. When
    no finalist can be lowered, the other candidates are tried in the order of their
    estimates.

    Raises:
        ScheduleError: no candidate can be lowered (the zone-free, cascade-free one's error).
    """
    cands = _zone_candidates(graph, t, zone_fractions, cascade, has_depthwise(graph, t))
    plain = [i for i, c in enumerate(cands) if not c[4]]
    chosen = {plain[i] for i in finalists([cands[i][3] for i in plain])}
    chosen |= set(sorted((i for i, c in enumerate(cands) if c[4]),
                         key=lambda i: cands[i][3])[:1])
    rest = sorted((i for i in range(len(cands)) if i not in chosen), key=lambda i: cands[i][3])
    lowered, error = [], None
    for batch in ([i for i in range(len(cands)) if i in chosen], *([i] for i in rest)):
        for i in batch:
            zone, casc, mem, est, tight = cands[i]
            lw = Lowering(graph, t, zone, compressor, cascade=casc, memo=memo, mem=mem)
            try:
                prog = lw.run()
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


def search_parts(graph: Graph, target: Target, zone_fractions: tuple[float, ...],
                 compressor, memo: dict) -> tuple[Lowering, Program, int]:
    """:func:`search` in parts, for schedule/cores.py: (the lowering of the zone x cascading
    variant the final program was planned from, before prefetch; the final program; its
    replayed cycles)."""
    return _search(graph, target, zone_fractions, compressor, True, True, memo)


def search(graph: Graph, target: Target,
           zone_fractions: tuple[float, ...] = ZONE_FRACTIONS,
           compress_weights: bool = False, cascade: bool = True,
           prefetch: bool = True) -> Program:
    """The fastest program over the variants (see :func:`tcc_compiler.schedule.lower.lower`).

    Raises:
        ScheduleError: an op cannot be tiled into the target's SRAM.
        UnsupportedError: a tensor shape the NPU cannot hold.
    """
    compressor = BlockCompressor() if compress_weights else None
    memo: dict = {}   # constants derived once for all the tries (conv_consts)
    _, prog, cycles = _search(graph, target, zone_fractions, compressor, cascade, prefetch,
                              memo)
    return _exact(prog, cycles, target)


def _exact(prog: Program, cycles: int, t: Target) -> Program:
    """``prog`` with its loads moved up to exact waits (:func:`exact_waits`), when that
    replays faster (ResNet-50 224: 2,848,962 -> 2,842,696 cycles); else ``prog``."""
    moved = exact_waits(prog)
    if moved is prog:
        return prog
    cycles2 = _cycles(moved, t)
    log.debug("exact waits: %d -> %d cycles", cycles, cycles2)
    return moved if cycles2 < cycles else prog


def _search(graph: Graph, t: Target, zone_fractions, compressor, cascade: bool,
            prefetch: bool, memo: dict) -> tuple[Lowering, Program, int]:
    """(lowering, program, replayed cycles) of the fastest variant: the fastest zone x
    cascading variant and, with ``prefetch``, the fastest after :func:`_add_hoists` of the
    :data:`PREFETCH_FINALISTS` fastest variants and the fastest ``compact`` one (of the
    fastest only for a network without depthwise layers: the ResNet programs, whose golden
    outputs stay as recorded)."""
    tries = _best_zone(graph, t, zone_fractions, compressor, cascade, memo)
    if not prefetch:
        cycles, prog, lw, _ = tries[0]
        return lw, prog, cycles
    wide = any(li.depthwise for li in tries[0][1].layers)
    best = None
    plain = [x for x in tries if not x[3]] or tries
    bases = plain[:PREFETCH_FINALISTS if wide else 1]
    if wide:   # and the fastest compact plan (planned for prefetch, may win only with it)
        bases += [x for x in tries if x[3] and all(x is not b for b in bases)][:1]
    for cyc0, prog0, lw, _ in bases:
        for lead in LEAD_VARIANTS if wide else (False,):
            cycles, prog, hoists = _add_hoists(graph, t, compressor, lw, prog0, cyc0, memo,
                                               lead)
            log.debug("resident zone %d bytes, %d cascaded chains, lead %s: %d -> %d cycles "
                      "with prefetch", lw.zone_bytes, len(lw.chains), lead, cyc0, cycles)
            if best is None or cycles < best[2]:
                best = (lw, prog, cycles, hoists)
    if wide:
        return _lifted(graph, t, compressor, *best, memo)
    return best[:3]


def _lifted(graph: Graph, t: Target, compressor, lw: Lowering, prog: Program, cycles: int,
            hoists: tuple[Hoist, ...], memo: dict) -> tuple[Lowering, Program, int]:
    """(``lw``, program, cycles): ``prog`` (lowered by ``lw``'s plan with ``hoists``) with its
    tile areas lifted clear of the ops just before them (:func:`plan_lifts`), when that
    replays faster; else ``prog``. A lift whose smaller SRAM budget changes the op's tile plan
    (another tiling, or another footprint) is dropped and the lifts re-placed without it, up
    to :data:`LIFT_ROUNDS` times; a lifted op's tiles must still fit (else ``prog``)."""
    def lower(lifts=None):
        return Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                        hoist=hoists or None, memo=memo, mem=lw.mem, lifts=lifts)
    again = lower()
    again.run()   # the same program as ``prog``; its op spans place the lifts
    spans, fixed = again.op_spans, set()
    plans = {li.name: (li.plan, li.tiles) for li in prog.layers}
    sizes = {sp.name: sp.hi - sp.lo for sp in spans}
    for _ in range(LIFT_ROUNDS):
        lifts = plan_lifts([dataclasses.replace(sp, liftable=sp.liftable
                                                and sp.name not in fixed) for sp in spans],
                           t.sram_align_bytes)
        if not lifts:
            return lw, prog, cycles
        lifted = lower(lifts)
        try:
            prog2 = lifted.run()
        except ScheduleError:
            log.debug("lifts: tiles no longer fit")
            return lw, prog, cycles
        changed = {li.name for li in prog2.layers if li.name in lifts
                   and (li.plan, li.tiles) != plans.get(li.name)}
        changed |= {sp.name for sp in lifted.op_spans
                    if sp.name in lifts and sp.hi - sp.lo != sizes.get(sp.name)}
        if not changed:
            break
        fixed |= changed
    else:
        return lw, prog, cycles
    cycles2 = _cycles(prog2, t)
    log.debug("%d ops lifted: %d -> %d cycles", len(lifts), cycles, cycles2)
    return (lw, prog2, cycles2) if cycles2 < cycles else (lw, prog, cycles)


def _add_hoists(graph: Graph, t: Target, compressor, lw: Lowering, base: Program,
                base_cycles: int, memo: dict | None = None,
                lead: bool = False) -> tuple[int, Program]:
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
    Returns (cycles, program, its hoists).
    """
    spans = replay(base.commands, t)
    wide = any(li.depthwise for li in base.layers)
    best = (base_cycles, base, ())
    for _ in range(MAX_HOISTS if wide else 1):
        round_best = best
        cands = [(est, tuple(dataclasses.replace(h, lead=lead) for h in new))
                 for est, new in _candidates(graph, t, lw, base, spans, best[1], best[2], wide)]
        for new in hoist_finalists(cands) if wide else [c for _, c in cands]:
            try:
                prog2 = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                                 hoist=best[2] + new, memo=memo, mem=lw.mem).run()
            except ScheduleError:
                log.debug("prefetch for %s: tiles no longer fit", new[0].consumer)
                continue
            cycles2 = _cycles(prog2, t)
            log.debug("prefetch %s bytes of %s during %s ops: %d -> %d cycles",
                      [h.area_bytes for h in new], new[0].consumer,
                      [len(h.window) for h in new], best[0], cycles2)
            if cycles2 < round_best[0]:
                round_best = (cycles2, prog2, best[2] + new)
        if round_best is best:
            break
        best = round_best
    return best


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
                hoists: tuple[Hoist, ...], wide: bool) -> list[tuple[float, tuple[Hoist, ...]]]:
    """The hoist sets one round of :func:`_add_hoists` tries on top of ``hoists`` (those of
    ``prog``): for each consumer -- the first conv stalled on its loads in the first round,
    and with ``wide`` each of the :data:`HOIST_CANDIDATES` most stalled convs of ``prog``
    without a hoist -- and each of :data:`HOIST_VARIANTS`: the :func:`plan_hoist` window
    alone and, with ``wide``, also with its blocks packed and as its :func:`plan_pieces`
    split. Each comes with its :func:`hoist_estimate` (cycles)."""
    done = frozenset(h.consumer for h in hoists)
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
        for eager, share in HOIST_VARIANTS:
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
