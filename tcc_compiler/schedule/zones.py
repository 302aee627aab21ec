"""The schedule search's first stage: every resident-zone size x cascading candidate
memory-planned (:func:`zone_candidates`), ranked by the cost model (schedule/rank.py, no
commands), and the finalists lowered and replayed (:func:`best_zone`); schedule/search.py
prefetch-searches and lifts the fastest."""

from __future__ import annotations

import logging
from typing import Callable

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.precompress import precompress
from tcc_compiler.schedule.rank import estimate_cycles, finalists, plan_key
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Resident-zone sizes :func:`~tcc_compiler.schedule.search.search` tries, as fractions of
#: the SRAM (0 = no residency).
ZONE_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def program_cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def zone_candidates(graph: Graph, t: Target, zone_fractions, cascade: bool,
                     compact: bool = False, band_slack: float = 0.0,
                     plans: dict | None = None, first_plan: Callable | None = None
                     ) -> list[tuple[int, bool, MemoryPlan, int, bool]]:
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
    ``first_plan``: called with the first memory plan made, before the others are planned
    (the search starts compressing the weight blocks it predicts, schedule/precompress.py).

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
                    if first_plan is not None:
                        first_plan(mem)
                        first_plan = None
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


def best_zone(graph: Graph, t: Target, cands, compressor, memo: dict,
               cache: dict | None = None):
    """(cycles, program, lowering, compact) of every zone size x cascading variant
    (``cands``: :func:`zone_candidates`) among the
    finalists of the cost model's ranking (:mod:`~tcc_compiler.schedule.rank`), each lowered
    and replayed, fastest first; ties go to the smaller zone, then to cascading. The
    ``compact`` plans (a network with depthwise layers, :func:`zone_candidates`) are ranked
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
    precompress(graph, t, [cands[i][2] for i in sorted(chosen)], compressor, memo,
                replace=True)
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
            cycles = program_cycles(prog, t)
            log.debug("resident zone %d bytes, %d cascaded chains: %d cycles (estimated %d)",
                      zone, len(lw.chains), cycles, est)
            lowered.append((cycles, len(lowered), prog, lw, tight))
        if lowered:
            return [(c, p, lw, k) for c, _, p, lw, k in sorted(lowered, key=lambda x: x[:2])]
    raise error


def _chosen(cands) -> set[int]:
    """Indices in ``cands`` (:func:`zone_candidates`) of :func:`best_zone`'s first batch:
    the finalists of the plans that are not ``compact`` and the best estimated compact one."""
    plain = [i for i, c in enumerate(cands) if not c[4]]
    chosen = {plain[i] for i in finalists([cands[i][3] for i in plain])}
    return chosen | set(sorted((i for i, c in enumerate(cands) if c[4]),
                               key=lambda i: cands[i][3])[:1])


def _lower_cached(graph: Graph, t: Target, cand, compressor, memo: dict,
                  cache: dict) -> tuple[Program, Lowering]:
    """(program, lowering) of candidate ``cand`` (:func:`zone_candidates`), lowered once per
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
