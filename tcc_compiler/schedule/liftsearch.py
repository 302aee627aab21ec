"""The lifting step of the schedule search (schedule/search.py): the best program with prefetch
lowered again with its ops' tile areas lifted clear of the ops just before them
(:func:`~tcc_compiler.schedule.lift.plan_lifts`), then with the weight slots of the convs
still overlapping them lifted (:func:`~tcc_compiler.schedule.lift.plan_weight_lifts`), each
kept when the replay is faster (specs/target.md, "Lifted tile areas", "Weight lifts")."""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.lift import plan_lifts, plan_weight_lifts
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.resume import resumable
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Re-placements of the lifts (:func:`lifted`) after dropping those that changed a tile plan.
LIFT_ROUNDS = 3

#: Rounds of weight lifts (:func:`plan_weight_lifts`) :func:`lifted` tries, each on the
#: program of the previous one, kept while the replay gets faster: a lifted load no longer
#: waits, so a later one may wait instead.
WEIGHT_LIFT_ROUNDS = 3

#: Ops before a conv whose SRAM its weight slots keep clear of (:func:`plan_weight_lifts`).
WEIGHT_LIFT_DEPTH = 3


def _cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def lifted(graph: Graph, t: Target, compressor, lw: Lowering, prog: Program, cycles: int,
           hoists: tuple[Hoist, ...], memo: dict,
           made_by: Lowering | None = None,
           coarse_wide: bool = False,
           made: list | None = None) -> tuple[Lowering, Program, int]:
    """(``lw``, program, cycles): the fastest of ``prog`` (lowered by ``lw``'s plan with
    ``hoists``) and its lifted forms (:func:`_lift_variant`), lowered as it was and with
    each of :data:`TIGHT_VARIANTS`; ties go to the earlier (``prog`` first). ``made_by``: the
    recorded lowering that made ``prog`` (with ``hoists``; schedule/resume.py), whose op
    spans place the lifts of ``prog``'s own variant and from which its tries resume; None:
    ``prog`` is lowered again for its op spans. ``coarse_wide``: ``prog`` and every try are
    lowered with coarse blocks (``Lowering.coarse_wide``, schedule/coarsewide.py), none
    resumed; ``made_by`` (not recorded: none with coarse blocks is) then only gives its op
    spans. ``made``: a list, when given, receives the :class:`Lowering` that made the
    program returned (its lifts, weight lifts and slot flags: schedule/retarget.py lowers
    it again with other hoists)."""
    best = (prog, cycles, made_by)
    tiled: dict = {}   # (:func:`_lift_variant`'s first step, shared by the depths)
    for slots, whole, depth in ((False, False, WEIGHT_LIFT_DEPTH),) + TIGHT_VARIANTS:
        own = not (slots or whole)
        got = _lift_variant(graph, t, compressor, lw, hoists, memo, (slots, whole, depth),
                            (prog, cycles) if own else None, made_by if own else None,
                            coarse_wide, tiled)
        if got is not None and (got[1] < best[1] or got[0] is best[0]):
            best = got
    if made is not None:
        made.append(best[2])
    return (lw, *best[:2])


#: (tight weight slots, whole classifier output, weight lift depth) variants :func:`lifted`
#: lowers the winner with besides its own (:class:`~tcc_compiler.schedule.lowering.Lowering`
#: ``tight_slots``, ``whole_out``; :func:`plan_weight_lifts`'s ``depth``: with both, a
#: classifier's slot for its last block may go where the conv three ops before had its
#: weights, MobileNetV2 224 360,711 -> 359,589 cycles). Tight weight slots: a conv whose last
#: block is narrower than the others
#: (MobileNetV2's 96-channel projections in blocks of 64 and 32) leaves the SRAM above that
#: block to the next op's first weight load, which no longer waits for the conv's compute. A
#: whole output: a classifier's 16 blocks of 64 outputs no longer wait, each, for the store of
#: the block two before (two stores instead of 16, 200 cycles of DMA setup each).
TIGHT_VARIANTS = ((True, False, WEIGHT_LIFT_DEPTH), (False, True, WEIGHT_LIFT_DEPTH),
                  (True, True, WEIGHT_LIFT_DEPTH), (True, True, 2))


def _lift_variant(graph: Graph, t: Target, compressor, lw: Lowering,
                  hoists: tuple[Hoist, ...], memo: dict, variant: tuple[bool, bool, int],
                  base: tuple[Program, int] | None,
                  made_by: Lowering | None,
                  coarse_wide: bool = False,
                  tiled: dict | None = None) -> tuple[Program, int, Lowering] | None:
    """(program, cycles, the lowering that made it): the program of ``lw``'s plan with
    ``hoists``, lowered with tight weight slots and whole outputs as ``variant`` (slots,
    whole, weight lift depth) says
    (``base``: that program and its cycles when already lowered, ``made_by`` its recorded
    lowering or None), with its tile areas lifted clear of the ops just before them
    (:func:`plan_lifts`) when that replays faster. A lift whose smaller SRAM
    budget changes the op's tile plan (another tiling, or another footprint) is dropped and
    the lifts re-placed without it, up to :data:`LIFT_ROUNDS` times; a lifted op's tiles must
    still fit. Then the weight slots of the convs whose tile area still overlaps the ops
    before them are lifted (:func:`plan_weight_lifts`) in up to :data:`WEIGHT_LIFT_ROUNDS`
    rounds, each planned on the previous round's program (stopping at a round that is
    slower), the fastest program kept. The tries resume (schedule/resume.py) from the
    variant's own first lowering, each weight-lift round from the previous round's. None:
    the variant's tiles do not fit. ``coarse_wide``: as :func:`lifted`'s. ``tiled``: a dict
    shared by the variants of one :func:`lifted` call: the first step (:func:`_lift_tiles`),
    which does not depend on the depth, is lowered once for the variants that differ only
    in it (the same lowerings: EfficientNet-Lite0 224, 202 -> 196 lowerings)."""
    key = (variant[:2], base is None, made_by is None)
    if tiled is not None and key in tiled:
        best = tiled[key]
    else:
        best = _lift_tiles(graph, t, compressor, lw, hoists, memo, variant, base, made_by,
                           coarse_wide, tiled)
        if tiled is not None:
            tiled[key] = best
    if best is None:
        return None
    return _lift_weights(graph, t, compressor, lw, hoists, memo, variant, best, coarse_wide)


def _lowerer(graph: Graph, t: Target, compressor, lw: Lowering, hoists: tuple[Hoist, ...],
             memo: dict, variant: tuple[bool, bool, int], coarse_wide: bool):
    """(``lower(lifts, wlifts, src, record)``, own): a new :class:`Lowering` of ``lw``'s plan
    with ``hoists`` and ``variant``'s slot flags (:func:`_lift_variant`), resuming from
    ``src`` (else from ``lw`` when it has ``lw``'s own lowering flags: ``own``)."""
    slots, whole, _ = variant
    own = not (slots or whole or coarse_wide)

    def lower(lifts=None, wlifts=None, src=None, record=False):
        return Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                        hoist=hoists or None, memo=memo, mem=lw.mem, lifts=lifts,
                        wlifts=wlifts, tight_slots=slots, whole_out=whole,
                        record=record or src is not None, coarse_wide=coarse_wide,
                        resume=src if src is not None
                        else resumable(lw, memo) if own else None)
    return lower, own


def _lift_tiles(graph: Graph, t: Target, compressor, lw: Lowering,
                hoists: tuple[Hoist, ...], memo: dict, variant: tuple[bool, bool, int],
                base: tuple[Program, int] | None, made_by: Lowering | None,
                coarse_wide: bool, tiled: dict | None = None) -> tuple | None:
    """:func:`_lift_variant`'s first step: (program, cycles, lifts, op spans, its lowering)
    of the variant as it is or with its tile areas lifted, the faster; None: its tiles do
    not fit. ``tiled``: :func:`_lift_variant`'s; it also keeps each variant's recorded
    lowering without lifts (key ``("first", slots, whole)``), from which the variant with
    the same slots and a whole output starts."""
    lower, own = _lowerer(graph, t, compressor, lw, hoists, memo, variant, coarse_wide)
    again = None
    if made_by is not None:   # a coarse lowering is never recorded: its op spans serve as they are
        again = made_by if coarse_wide and made_by.memo is memo else resumable(made_by, memo)
    if again is None:
        # a whole-output variant resumes from its twin without, before the first 1x1 conv
        # (schedule/resume.py): the same decisions until then (not with coarse blocks,
        # whose lowerings are never recorded nor resumed)
        twin = (tiled.get(("first", variant[0], False))
                if tiled and variant[1] and not coarse_wide else None)
        again = lower(record=not own, src=twin)
        try:
            prog0 = again.run()   # (``base``'s program); its op spans place the lifts
        except ScheduleError:   # a variant's tiles no longer fit its SRAM
            return None
        if base is None:
            base = (prog0, _cycles(prog0, t))
    if (tiled is not None and not coarse_wide and again.checkpoints is not None
            and again.memo is memo):
        tiled[("first", *variant[:2])] = again
    prog, cycles = base
    best = (prog, cycles, None, again.op_spans, again)
    src = again if again.checkpoints is not None else None
    lifted = _lift_ops(t, lambda lifts: lower(lifts, src=src), prog, again.op_spans)
    if lifted is not None:
        cycles2 = _cycles(lifted[0], t)
        log.debug("%d ops lifted: %d -> %d cycles", len(lifted[1]), cycles, cycles2)
        if cycles2 < cycles:
            best = (lifted[0], cycles2, lifted[1], lifted[2], lifted[3])
    return best


def _lift_weights(graph: Graph, t: Target, compressor, lw: Lowering,
                  hoists: tuple[Hoist, ...], memo: dict, variant: tuple[bool, bool, int],
                  best: tuple, coarse_wide: bool) -> tuple[Program, int, Lowering]:
    """:func:`_lift_variant`'s second step: (program, cycles, its lowering) of ``best``
    (:func:`_lift_tiles`') or of its weight-lift rounds, the fastest."""
    slots, whole, depth = variant
    lower, _ = _lowerer(graph, t, compressor, lw, hoists, memo, variant, coarse_wide)
    prog, cycles, lifts, spans, src = best
    maker, src = src, src if src.checkpoints is not None else None
    wlifts: dict[str, int] = {}
    now = cycles
    for _ in range(WEIGHT_LIFT_ROUNDS):
        more = plan_weight_lifts(spans, t.sram_align_bytes, depth)
        if not more:
            break
        wlifts.update(more)
        lowering = lower(lifts, dict(wlifts), src)
        try:
            prog2 = lowering.run()
        except ScheduleError:   # pragma: no cover - the slots only leave the tile areas
            break
        cycles2 = _cycles(prog2, t)
        log.debug("%d more convs' weight slots lifted: %d -> %d cycles", len(more), now,
                  cycles2)
        if cycles2 > now:   # a round that loses stops; one that ties may unblock the next
            break
        now, spans = cycles2, lowering.op_spans
        src = lowering if src is not None else None
        if cycles2 < cycles:
            prog, cycles, maker = prog2, cycles2, lowering
    log.debug("tight weight slots %s, whole output %s, depth %d: %d cycles", slots, whole,
              depth, cycles)
    return prog, cycles, maker


def _lift_ops(t: Target, lower, prog: Program, spans):
    """(program, lifts, op spans, its lowering) of ``prog`` lowered again (``lower(lifts)``)
    with its ops' tile areas lifted (:func:`plan_lifts` on ``spans``, ``prog``'s), dropping
    the lifts that changed a tile plan (:data:`LIFT_ROUNDS` tries); None: no lift, or none
    kept its tile plan, or the tiles no longer fit."""
    fixed: set[str] = set()
    plans = {li.name: (li.plan, li.tiles) for li in prog.layers}
    sizes = {sp.name: sp.hi - sp.lo for sp in spans}
    for _ in range(LIFT_ROUNDS):
        lifts = plan_lifts([dataclasses.replace(sp, liftable=sp.liftable
                                                and sp.name not in fixed) for sp in spans],
                           t.sram_align_bytes)
        if not lifts:
            return None
        lifted = lower(lifts)
        try:
            prog2 = lifted.run()
        except ScheduleError:
            log.debug("lifts: tiles no longer fit")
            return None
        changed = {li.name for li in prog2.layers if li.name in lifts
                   and (li.plan, li.tiles) != plans.get(li.name)}
        changed |= {sp.name for sp in lifted.op_spans
                    if sp.name in lifts and sp.hi - sp.lo != sizes.get(sp.name)}
        if not changed:
            return prog2, lifts, lifted.op_spans, lifted
        fixed |= changed
    return None
