"""Resuming a lowering from an earlier one's checkpoint (the schedule search's speed).

The search (schedule/search.py, schedule/liftsearch.py) lowers one memory plan many times,
each try with other cross-op prefetches (:class:`~tcc_compiler.schedule.hoist.Hoist`), lifts
or weight lifts. A lowering is a deterministic walk over the graph's ops in order, and an op
with no prefetch, lift or weight lift of its own emits the same commands and weight blocks
as in any other try whose earlier ops were the same. So a try whose decisions first differ
from those of an earlier, recorded lowering at op ``p`` (in graph order) starts from that
lowering's state before ``p`` (its emitter, weight layout, layer table and op spans) and
lowers only the ops from ``p`` on: the same program, bit for bit.

A recorded lowering keeps a checkpoint before each op it lowers, its prefetcher's state
included (:meth:`~tcc_compiler.schedule.prefetch.Prefetcher.checkpoint`). A prefetch acts
only from the first op of its window on (it reserves SRAM, spends LOAD idle time and plans
its consumer there), so a try that adds prefetches to the recorded lowering's (the greedy
rounds of schedule/hoistsearch.py) resumes at the first op of the added ones, with the recorded
prefetcher's state given to its own (:meth:`~tcc_compiler.schedule.prefetch.Prefetcher.resume`).
"""

from __future__ import annotations

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.emitter import Emitter
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.target import Target

__all__ = ["Checkpoints", "first_one_pixel", "first_touch", "resumable", "resume_point"]


def first_touch(hoists: tuple[Hoist, ...], pos: dict[str, int]) -> int:
    """The graph position (index in ``graph.nodes``, ``pos``: name -> index) of the first op
    a prefetch of ``hoists`` acts on: the earliest op of a window or a consumer;
    ``len(pos)`` when there are none (a name not in ``pos``: 0)."""
    return min((pos.get(name, 0) for h in hoists for name in (*h.window, h.consumer)),
               default=len(pos))


def resumable(lw, memo: dict | None):
    """``lw`` (a :class:`~tcc_compiler.schedule.lowering.Lowering`) when a lowering of its
    plan with the memo ``memo`` may resume from it (it was recorded and shares ``memo``),
    else None."""
    return lw if lw.checkpoints is not None and lw.memo is memo else None


def first_one_pixel(graph: Graph, t: Target, pos: dict[str, int]) -> int:
    """The graph position of the first conv or FC of ``graph`` whose output map is 1x1 (the
    only ops a lowering's ``whole_out`` acts on: schedule/ops/conv.py); ``len(pos)``: none."""
    for i, n in enumerate(graph.nodes):
        if n.op in (Op.CONV, Op.FC):
            g = conv_geom(n, t)
            if g.oh * g.ow == 1:
                return i
    return len(pos)


def _first_diff(a: dict[str, int], b: dict[str, int], pos: dict[str, int]) -> int:
    """The graph position of the first op whose entry differs between ``a`` and ``b`` (op
    name -> SRAM address: lifts or weight lifts); ``len(pos)``: none."""
    return min((pos.get(k, 0) for k in a.keys() | b.keys() if a.get(k) != b.get(k)),
               default=len(pos))


class Checkpoints:
    """The state of one lowering before each op it lowered (the lowering adds them,
    :meth:`add`; later lowerings start from one, :meth:`restore`). They refer to the recorded
    lowering's growing lists by length (these are only appended to)."""

    def __init__(self, graph: Graph) -> None:
        self.pos = {n.name: i for i, n in enumerate(graph.nodes)}
        # (graph position, emitter's checkpoint, weight layout's, layers, op spans,
        #  prefetcher's or None)
        self._marks: list[tuple] = []
        self._layers: list = []
        self._spans: list = []

    def add(self, i: int, em: Emitter, weights: WeightLayoutBuilder, layers: list,
            op_spans: list, pf: Prefetcher | None) -> None:
        """Keep the state before the op at graph position ``i``."""
        self._layers, self._spans = layers, op_spans
        self._marks.append((i, em.checkpoint(), weights.checkpoint(), len(layers),
                            len(op_spans), pf.checkpoint() if pf is not None else None))

    def restore(self, old, new) -> tuple:
        """(graph position to lower from, emitter, weight layout, layer table, op spans, the
        prefetcher's checkpoint to :meth:`~Prefetcher.resume` or None) for lowering ``new``
        (a :class:`~tcc_compiler.schedule.lowering.Lowering`) from the latest checkpoint of
        ``old`` (the lowering these were recorded by) at or before the first op whose
        decisions may differ between the two (:func:`resume_point`). When that op comes
        before the first one ``old`` lowered itself (``old`` resumed from a lowering
        ``old.resume``), ``new`` resumes from ``old.resume`` instead, as if it had been given
        that one (the same plan and flags, whole outputs aside), not from the start.

        Raises:
            InternalError: ``new`` lowers another graph, target, zone, compressor, cascading,
                memo, memory plan, tight slots or deep slots than ``old`` (whole outputs may
                differ: :func:`resume_point`).
        """
        same = (old.graph is new.graph and old.t is new.t and old.zone_bytes == new.zone_bytes
                and old.compressor is new.compressor and old.cascade == new.cascade
                and old.memo is new.memo and old.mem is new.mem
                and old.tight_slots == new.tight_slots and old.deep_slots == new.deep_slots)
        if not same:
            raise InternalError("lowering resumed from a lowering of another plan")
        p, carry = resume_point(old, new, self.pos)
        mark = None
        for m in self._marks:   # in graph order
            if m[0] > p:
                break
            mark = m
        if mark is None:   # p is before the first op ``old`` lowered itself
            src = old.resume
            if src is not None and src.checkpoints is not None:   # (as resuming from it)
                return src.checkpoints.restore(src, new)
            return (0, Emitter(new.t.sram_capacity_bytes, new.t.sram_align_bytes),
                    WeightLayoutBuilder(new.compressor), [], [], None)
        i, em, weights, n_layers, n_spans, pf = mark
        return (i, Emitter.resumed(em), WeightLayoutBuilder.resumed(weights),
                self._layers[:n_layers], self._spans[:n_spans], pf if carry else None)


def resume_point(old, new, pos: dict[str, int]) -> tuple[int, bool]:
    """(p, carry): lowering ``new`` may start from ``old``'s state before any op at graph
    position <= p (``pos``: op name -> position); ``carry``: with the state of ``old``'s
    prefetcher (else a fresh one). Before p the two take the same decisions: no op's lift or
    weight lift differs, and either ``new``'s prefetches are ``old``'s (same
    :attr:`~Hoist.lead`) plus some whose first op is p or later (carry), or p is no later
    than the first op any prefetch of either acts on (no prefetcher state yet). A lowering
    with a weight-slot handover or coarse blocks (schedule/handover.py) on either side starts
    no later than the first op any prefetch of either acts on (the handover acts on the last
    window op, coarse blocks after the consumer). Lowerings with and without ``whole_out``
    (a classifier's output in one buffer, schedule/ops/conv.py) take the same decisions
    before the first conv or FC with a 1x1 output map (:func:`first_one_pixel`)."""
    p = min(_first_diff(old.lifts, new.lifts, pos), _first_diff(old.wlifts, new.wlifts, pos))
    if old.whole_out != new.whole_out:   # (only a 1x1-output conv takes it)
        p = min(p, first_one_pixel(new.graph, new.t, pos))
    olds, news = old.hoists, new.hoists
    if old.handover or new.handover or old.coarse or new.coarse:   # (schedule/handover.py)
        p = min(p, first_touch(olds, pos), first_touch(news, pos))
    added = [h for h in news if h not in olds]
    lead = any(h.lead for h in olds) == any(h.lead for h in news)
    if all(h in news for h in olds) and len(added) + len(olds) == len(news) and (
            lead or not olds):
        return min(p, first_touch(tuple(added), pos)), True
    return min(p, first_touch(olds, pos), first_touch(news, pos)), False
