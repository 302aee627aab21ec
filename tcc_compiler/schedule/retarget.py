"""Prefetch retargeting (:func:`retargeted`): the SRAM area of the prefetch whose window
starts last handed first to a conv of that window, then back to its own consumer.

The greedy prefetch rounds (schedule/hoistsearch.py) give each area to the consumer whose
stall they estimate largest; in a network with depthwise layers that is the conv head, whose
first blocks then sit in the area from its window's start to the network's end. A conv of
the window whose weights fill the area (a tail expand conv) may take it first: its first
blocks load in the window's LOAD-queue gaps, and the conv head's blocks follow in the same
area once that conv is done (:class:`~tcc_compiler.schedule.hoist.Hoist` s one after the
other may share SRAM), so that more of the head's loads run while the head computes, at the
end, rather than before it (EfficientNet-Lite0 224: the area of the conv head's hoist from
block 4.0's depthwise conv, 147,712 bytes, given first to block 5.1's expand conv: 471,188
-> 469,796 cycles). The end of such a program is then bound by the LOAD queue to its last
byte, and the op whose block is loaded last should compute least after it: the last
consumer's (the classifier's) last block is left to its own load at the end
(:func:`give_last_block`) and its SRAM given to the area just below, which then holds one
more of the conv head's blocks (Lite0 224: the classifier's 51,840-byte last block, the conv
head's area from block 1.0 86,016 -> 137,856 bytes, three blocks instead of two; 469,796 ->
467,671 cycles with the classifier's slots weight-lifted clear of the two ops before it). The
search (schedule/search.py) lowers its winner so, with its own lifts and slot flags and
weight lifts planned again (:func:`_lowered`), and keeps that program only when faster
after its last steps (exact waits, the load fill).
"""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import InternalError, ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.hoist import MIN_PREFETCH_BYTES, Hoist
from tcc_compiler.schedule.lift import plan_weight_lifts
from tcc_compiler.schedule.liftsearch import WEIGHT_LIFT_DEPTH, WEIGHT_LIFT_ROUNDS
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.piecefit import block_sizes, blocks_held
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Depths (:func:`plan_weight_lifts` ``depth``) of the weight lifts :func:`retargeted`'s
#: lowerings try, those of schedule/liftsearch.py's variants (EfficientNet-Lite0 224 with the
#: classifier's last block given back: 468,715 cycles as its winner was lifted, 467,671 with
#: the classifier's slots clear of the two ops before it, depth 2).
WEIGHT_LIFT_DEPTHS = (WEIGHT_LIFT_DEPTH, 2)

#: Convs of the window :func:`retargeted` tries as the area's first consumer, the earliest
#: first (EfficientNet-Lite0 224, each of its tail convs as the first consumer, lowered with
#: the winner's lifts, before the last block is given back: expand convs 469,796 (5.1) to
#: 470,004 (5.2) cycles, projections 470,775 to 476,938, depthwise convs 478,610 to 480,837;
#: each try is lowered with and without the last block given back, each up to
#: 1 + 2 x :data:`WEIGHT_LIFT_ROUNDS` times: 6 lowerings on Lite0).
RETARGET_TRIES = 1


def retarget_hoists(hoists: tuple[Hoist, ...], prog: Program,
                    tries: int = RETARGET_TRIES) -> list[tuple[Hoist, ...]]:
    """Retargeted forms of ``hoists`` (one program's, ``prog`` the program lowered with them):
    the hoist whose window starts last (in ``prog``'s layer order) split at each of the first
    ``tries`` convs of its window that are MAC-array convs (not depthwise, not cascaded), no
    prefetch consumer yet, whose weights and parameter records (``weight_raw_bytes``, as
    loaded into SRAM) fill its area (``area_bytes``) and that have at least one op before
    them in the window: into a hoist for that conv (the window's ops before it, their LOAD
    gaps) and, when ops follow it in the window, the hoist for its own consumer over those
    ops, both in the same area (their spans do not overlap). Empty when there is none."""
    pos = {li.name: i for i, li in enumerate(prog.layers)}
    wins = [h for h in hoists if h.window and h.window[0] in pos]
    if not wins:
        return []
    h = max(wins, key=lambda x: pos[x.window[0]])
    consumers = {x.consumer for x in hoists}
    out = []
    for k, name in enumerate(h.window):
        if len(out) >= tries:
            break
        li = prog.layers[pos[name]] if name in pos else None
        if (k == 0 or li is None or li.kind != "conv" or li.depthwise or name in consumers
                or li.plan.startswith("cascade") or li.weight_raw_bytes < h.area_bytes):
            continue
        first = dataclasses.replace(h, consumer=name, window=h.window[:k], gaps=h.gaps[:k])
        rest = (dataclasses.replace(h, window=h.window[k + 1:], gaps=h.gaps[k + 1:]),) \
            if k + 1 < len(h.window) else ()
        i = hoists.index(h)
        out.append(hoists[:i] + (first,) + rest + hoists[i + 1:])
    return out


def give_last_block(hoists: tuple[Hoist, ...], graph: Graph, mem: MemoryPlan, t: Target,
                    prog: Program, coarse: bool = False) -> tuple[Hoist, ...] | None:
    """``hoists`` (one program's, ``prog`` lowered with them under ``mem``) with the last
    weight block of the last prefetch consumer (in ``prog``'s layer order; the classifier)
    left to its own load at the end, its SRAM given to the area stacked just below that
    consumer's lowest area: the lowest area's ``area_bytes`` cut by the block (its
    ``area_end`` kept), the area below (every hoist ending at its bottom) grown up by as
    much. None unless every block of that consumer was prefetched (:func:`blocks_held`, the
    Prefetcher's fill: longest window first; ``coarse``: ``Prefetcher`` ``coarse``, the
    lowering's ``coarse_wide``), no two hoists held at the same time then share SRAM and the
    areas below hold more bytes of their consumer's blocks."""
    pos = {li.name: i for i, li in enumerate(prog.layers)}
    cons = [h.consumer for h in hoists if h.consumer in pos]
    if not cons:
        return None
    last = max(cons, key=pos.get)
    mine = [h for h in hoists if h.consumer == last]
    low = min(mine, key=lambda h: h.area(t)[0])
    below = [h for h in hoists if h.consumer != last and h.area(t)[1] == low.area(t)[0]]
    if not below:
        return None
    pf = Prefetcher(hoists, graph, coarse)
    sizes = _blocks(pf, graph, mem, t, last)
    if sizes is None or blocks_held(sizes, _fill(mine)) < len(sizes):
        return None
    cut = sizes[-1]
    if low.area_bytes - cut < MIN_PREFETCH_BYTES:
        return None
    new = {id(low): dataclasses.replace(low, area_bytes=low.area_bytes - cut)}
    new.update({id(h): dataclasses.replace(h, area_bytes=h.area_bytes + cut,
                                           area_end=h.area(t)[1] + cut) for h in below})
    out = tuple(new.get(id(h), h) for h in hoists)
    try:
        Prefetcher(out, graph, coarse).check_areas(t)
    except InternalError:   # an area grown into SRAM another hoist holds at the same time
        return None
    for c in {h.consumer for h in below}:
        if _held(out, graph, mem, t, c, coarse) <= _held(hoists, graph, mem, t, c, coarse):
            return None
    return out


def _held(hoists: tuple[Hoist, ...], graph: Graph, mem: MemoryPlan, t: Target, name: str,
          coarse: bool) -> int:
    """SRAM bytes of consumer ``name``'s weight blocks its areas in ``hoists`` hold (the
    Prefetcher's plan and fill); 0 when its plan does not fit."""
    sizes = _blocks(Prefetcher(hoists, graph, coarse), graph, mem, t, name) or []
    return sum(sizes[:blocks_held(sizes, _fill([h for h in hoists if h.consumer == name]))])


def _fill(hoists: list[Hoist]) -> list[int]:
    """One consumer's area sizes (bytes) in the order the Prefetcher fills them."""
    return [h.area_bytes for h in sorted(hoists, key=lambda h: -len(h.window))]


def _blocks(pf: Prefetcher, graph: Graph, mem: MemoryPlan, t: Target,
            name: str) -> list[int] | None:
    """SRAM bytes of each weight block of consumer ``name`` as ``pf`` plans it (None: not a
    conv of ``graph``, or its plan does not fit)."""
    n = next((m for m in graph.nodes if m.name == name), None)
    if n is None or n.op not in (Op.CONV, Op.FC):
        return None
    g = conv_geom(n, t)
    try:
        ocb = min(pf.consumer_plan(n, mem, t).ocb, g.o)
    except ScheduleError:
        return None
    return block_sizes(g.o, ocb, g.kernel_bytes + PARAM_RECORD_BYTES, t.sram_align_bytes)


def again(low: Lowering, hoists: tuple[Hoist, ...],
          wlifts: dict[str, int] | None = None) -> Lowering:
    """A lowering of ``low``'s plan with its lifts, weight lifts (``wlifts`` when given) and
    slot, block and handover flags, but the prefetches ``hoists`` (not recorded)."""
    return Lowering(low.graph, low.t, low.zone_bytes, low.compressor, cascade=low.cascade,
                    hoist=hoists or None, memo=low.memo, mem=low.mem, lifts=dict(low.lifts),
                    wlifts=dict(low.wlifts if wlifts is None else wlifts),
                    tight_slots=low.tight_slots,
                    whole_out=low.whole_out, deep_slots=low.deep_slots,
                    handover=low.handover, coarse=low.coarse, coarse_wide=low.coarse_wide)


def _lowered(made_by: Lowering, hoists: tuple[Hoist, ...],
             t: Target) -> tuple[Program, int] | None:
    """(program, replayed cycles) of ``made_by``'s plan lowered again with ``hoists``
    (:func:`again`), then, for each of :data:`WEIGHT_LIFT_DEPTHS`, with the weight slots of
    the convs still overlapping the ops before them lifted (:func:`plan_weight_lifts`) in up
    to :data:`WEIGHT_LIFT_ROUNDS` rounds, each kept while not slower, as
    schedule/liftsearch.py does; the fastest of all; None: its tiles do not fit."""
    first = again(made_by, hoists)
    try:
        best = (first.run(), 0)
    except ScheduleError:
        return None
    best = (best[0], _cycles(best[0], t))
    for depth in WEIGHT_LIFT_DEPTHS:
        low, now, wl = first, best[1], dict(made_by.wlifts)
        for _ in range(WEIGHT_LIFT_ROUNDS):
            more = plan_weight_lifts(low.op_spans, t.sram_align_bytes, depth)
            if not more:
                break
            wl.update(more)
            low = again(made_by, hoists, wl)
            try:
                prog = low.run()
            except ScheduleError:   # pragma: no cover - the slots only leave the tile areas
                break
            c = _cycles(prog, t)
            if c > now:
                break
            now = c
            if c < best[1]:
                best = (prog, c)
    return best


def _cycles(prog: Program, t: Target) -> int:
    """Replayed latency of ``prog``, cycles."""
    return max((e for _, e in replay(prog.commands, t)), default=0)


def retargeted(made_by: Lowering, prog: Program, cycles: int,
               t: Target) -> tuple[Program, int] | None:
    """(program, replayed cycles) of the fastest of ``prog`` (made by the lowering
    ``made_by``, ``cycles`` its replay) lowered again (:func:`_lowered`) with each of
    :func:`retarget_hoists` of its hoists and each of those with the last consumer's last
    block given back (:func:`give_last_block`), when one is faster than ``cycles``; None
    when none is (or there is none, or none fits)."""
    tries = []
    for hoists in retarget_hoists(made_by.hoists, prog):
        tries.append(hoists)
        back = give_last_block(hoists, made_by.graph, made_by.mem, t, prog,
                               made_by.coarse_wide)
        if back is not None:
            tries.append(back)
    best = None
    for hoists in tries:
        got = _lowered(made_by, hoists, t)
        if got is None:
            continue
        log.debug("prefetch areas retargeted: %d -> %d cycles", cycles, got[1])
        if got[1] < (cycles if best is None else best[1]):
            best = got
    return best
