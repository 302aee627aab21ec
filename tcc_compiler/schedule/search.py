"""The schedule search: resident-zone size x cascading x cross-op prefetch, each variant
lowered (:class:`~tcc_compiler.schedule.lowering.Lowering`) and replayed on the cycle model
(:func:`~tcc_compiler.schedule.cost.replay`); the fastest program is kept."""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.prefetch import Hoist, plan_hoist, plan_pieces, stalled_convs
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: (eager, idle_share) of the prefetch plans (:func:`plan_hoist`) :func:`search` tries.
HOIST_VARIANTS = ((True, 1.0), (False, 0.5))

#: Most cross-op prefetches (:class:`~tcc_compiler.schedule.prefetch.Hoist`) one program gets.
MAX_HOISTS = 8

#: Stalled convs (the most stalled first) each round of :func:`_add_hoists` tries as consumer.
HOIST_CANDIDATES = 3

#: Resident-zone sizes :func:`search` tries, as fractions of the SRAM (0 = no residency).
ZONE_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def _cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def _best_zone(graph: Graph, t: Target, zone_fractions, compressor, cascade: bool,
               memo: dict):
    """(cycles, program, lowering) of the fastest zone size x cascading variant; ties go to
    the smaller zone, then to cascading.

    Raises:
        ScheduleError: not even the zone-free, cascade-free variant fits.
    """
    best = None
    for frac in sorted(set(zone_fractions)):
        zone = int(t.sram_capacity_bytes * frac) // t.sram_align_bytes * t.sram_align_bytes
        for casc in ((True, False) if cascade else (False,)):
            lw = Lowering(graph, t, zone, compressor, cascade=casc, memo=memo)
            try:
                prog = lw.run()
            except ScheduleError:
                if zone == 0 and not casc:
                    raise
                log.debug("resident zone %d bytes leaves too little SRAM for tiles", zone)
                continue
            cycles = _cycles(prog, t)
            log.debug("resident zone %d bytes, %d cascaded chains: %d cycles", zone,
                      len(lw.chains), cycles)
            if best is None or cycles < best[0]:
                best = (cycles, prog, lw)
            if casc and not lw.chains:   # the same program as without cascading
                break
    assert best is not None
    return best


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
    cycles, prog, lw = _best_zone(graph, target, zone_fractions, compressor, cascade, memo)
    if prefetch:
        cycles, prog = _add_hoists(graph, target, compressor, lw, prog, cycles, memo)
    return prog


def _add_hoists(graph: Graph, t: Target, compressor, lw: Lowering, base: Program,
                base_cycles: int, memo: dict | None = None) -> tuple[int, Program]:
    """Cross-op weight prefetch, greedily: each round plans hoists for one more consumer
    (:func:`_candidates`) in an area stacked below the areas of the hoists kept so far, lowers
    the program with all of them and keeps the fastest; it stops after :data:`MAX_HOISTS`
    rounds or a round that is not faster. Windows and idle gaps are measured on the program
    without prefetch (``base``, lowered by ``lw``), which the hoists share. A program without
    depthwise layers gets one round with the first stalled conv only, unsplit (the ResNet
    programs, whose golden outputs, tests/data/golden_outputs.json, stay byte-identical until
    re-recorded on purpose). ``memo``: shared by the lowerings (see :class:`Lowering`).
    Returns (cycles, program).
    """
    spans = replay(base.commands, t)
    wide = any(li.depthwise for li in base.layers)
    best = (base_cycles, base, ())
    for _ in range(MAX_HOISTS if wide else 1):
        round_best = best
        for new in _candidates(graph, t, lw, base, spans, best[1], best[2], wide):
            try:
                prog2 = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                                 hoist=best[2] + new, memo=memo).run()
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
    return best[0], best[1]


def _candidates(graph: Graph, t: Target, lw: Lowering, base: Program, spans, prog: Program,
                hoists: tuple[Hoist, ...], wide: bool) -> list[tuple[Hoist, ...]]:
    """The hoist sets one round of :func:`_add_hoists` tries on top of ``hoists`` (those of
    ``prog``): for each consumer -- the first conv stalled on its loads in the first round,
    and with ``wide`` each of the :data:`HOIST_CANDIDATES` most stalled convs of ``prog``
    without a hoist -- and each of :data:`HOIST_VARIANTS`: the :func:`plan_hoist` window
    alone and, with ``wide``, also with its blocks packed and as its :func:`plan_pieces`
    split."""
    done = frozenset(h.consumer for h in hoists)
    stalled = stalled_convs(prog, replay(prog.commands, t) if hoists else spans, done)
    if not stalled:
        return []
    idx = {stalled[0][1]} if not hoists else set()
    if wide:
        idx |= {i for _, i in sorted(stalled, reverse=True)[:HOIST_CANDIDATES]}
    area_end = min((h.area(t)[0] for h in hoists), default=None)
    out: list[tuple[Hoist, ...]] = []
    for ci in sorted(idx):
        for eager, share in HOIST_VARIANTS:
            one = plan_hoist(graph, lw.mem, base, spans, t, eager, share, ci, area_end)
            if one is None:
                continue
            out.append((one,))
            if not wide:
                continue
            out.append((dataclasses.replace(one, pack=True),))
            pieces = plan_pieces(graph, lw.mem, base, spans, t, eager, share, ci, area_end)
            if len(pieces) > 1:
                out.append(pieces)
    return out
