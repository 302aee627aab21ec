"""The schedule search: resident-zone size x cascading x cross-op prefetch, each variant
lowered (:class:`~tcc_compiler.schedule.lowering.Lowering`) and replayed on the cycle model
(:func:`~tcc_compiler.schedule.cost.replay`); the fastest program is kept."""

from __future__ import annotations

import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.prefetch import plan_pieces, stalled_convs
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


def _best_zone(graph: Graph, t: Target, zone_fractions, compressor, cascade: bool):
    """(cycles, program, lowering) of the fastest zone size x cascading variant; ties go to
    the smaller zone, then to cascading.

    Raises:
        ScheduleError: not even the zone-free, cascade-free variant fits.
    """
    best = None
    for frac in sorted(set(zone_fractions)):
        zone = int(t.sram_capacity_bytes * frac) // t.sram_align_bytes * t.sram_align_bytes
        for casc in ((True, False) if cascade else (False,)):
            lw = Lowering(graph, t, zone, compressor, cascade=casc)
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
    cycles, prog, lw = _best_zone(graph, target, zone_fractions, compressor, cascade)
    if prefetch:
        cycles, prog = _add_hoists(graph, target, compressor, lw, prog, cycles)
    return prog


def _add_hoists(graph: Graph, t: Target, compressor, lw: Lowering, base: Program,
                base_cycles: int) -> tuple[int, Program]:
    """Cross-op weight prefetch, greedily: each round plans one more :class:`Hoist` (for
    each of :data:`HOIST_VARIANTS`) whose area is stacked below the areas of the hoists kept
    so far, for each of the :data:`HOIST_CANDIDATES` most stalled convs of the best program so
    far that have none (and the first stalled one, in the first round), lowers the program
    with all of them and keeps the fastest; it stops after :data:`MAX_HOISTS` hoists or a
    round that is not faster. Windows and idle gaps are measured on the program without
    prefetch (``base``, lowered by ``lw``), which the hoists share. Returns (cycles,
    program).
    """
    spans = replay(base.commands, t)
    best = (base_cycles, base, ())
    for _ in range(MAX_HOISTS):
        cycles, prog, hoists = best
        done = frozenset(h.consumer for h in hoists)
        stalled = stalled_convs(prog, replay(prog.commands, t) if hoists else spans, done)
        if not stalled:
            break
        idx = {i for _, i in sorted(stalled, reverse=True)[:HOIST_CANDIDATES]}
        idx |= {stalled[0][1]} if not hoists else set()
        area_end = min((h.area(t)[0] for h in hoists), default=None)
        round_best = best
        for ci in sorted(idx):
            for eager, share in HOIST_VARIANTS:
                pieces = plan_pieces(graph, lw.mem, base, spans, t, eager, share, ci, area_end)
                for new in {pieces, pieces[-1:]}:   # split, and the chosen window alone
                    if not new:
                        continue
                    try:
                        prog2 = Lowering(graph, t, lw.zone_bytes, compressor,
                                         cascade=lw.cascade, hoist=hoists + new).run()
                    except ScheduleError:
                        log.debug("prefetch for %s: tiles no longer fit", new[0].consumer)
                        continue
                    cycles2 = _cycles(prog2, t)
                    log.debug("prefetch %s bytes of %s during %s ops: %d -> %d cycles",
                              [h.area_bytes for h in new], new[0].consumer,
                              [len(h.window) for h in new], cycles, cycles2)
                    if cycles2 < round_best[0]:
                        round_best = (cycles2, prog2, hoists + new)
        if round_best is best:
            break
        best = round_best
    return best[0], best[1]
