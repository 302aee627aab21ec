"""Lifts: tile areas placed clear of the ops just before, so their loads need not wait.

Consecutive ops take their tile buffers from opposite ends of the SRAM above their base
(:meth:`~tcc_compiler.schedule.emitter.Emitter.begin_op`), so op ``k``'s buffers overlap op
``k - 2``'s whenever both sit at the same end, and op ``k``'s first load waits for op ``k - 2``'s
last compute (:meth:`~tcc_compiler.schedule.emitter.Emitter.free`). In a run of small ops (an
SE block: depthwise conv, global pool, two tiny FCs, the scaling multiply) the LOAD queue then
cannot run more than one op ahead of the compute, and every weight load waits. A *lift* places
an op's tile area at the lowest address above its base, within the SRAM it may use, that is
clear of the tile areas of the :data:`LIFT_DEPTH` ops before it (as finally placed), when its
usual place overlaps one of them; its buffers are then taken upwards from there. The op's
SRAM budget shrinks by the lift but still holds the tile area it had (the footprint measured on
the program without lifts), so its tile plan is the same. :func:`plan_lifts` chooses them from
that program's :class:`OpSpan` s; the search keeps the lifted program only when its replay is
faster (schedule/search.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc_compiler.schedule.tiling import align_up

#: Ops before an op whose tile areas a lift keeps clear of (the LOAD queue runs this many ops
#: ahead of the compute at most, without waiting on SRAM).
LIFT_DEPTH = 3


@dataclass(frozen=True)
class OpSpan:
    """One lowered op's tile area (SRAM bytes ``[lo, hi)``) and the SRAM it may take it from,
    ``[base, end)`` (above the resident tensors, below the prefetch areas it reserves).
    ``liftable``: a plain op that is no prefetch consumer (a cascaded chain or a consumer,
    whose blocks were placed ahead, keeps its place). ``wbytes``: a conv's weight and
    parameter slots (bytes, aligned, inside ``[lo, hi)``; 0: none, or already lifted), what a
    weight lift (:func:`plan_weight_lifts`) places. ``res``: the other SRAM intervals
    ``[lo, hi)`` the op reads or writes (resident tensors, prefetch areas).
    ``wliftable``: its weight slots may be lifted although its tile area is not (a prefetch
    consumer: its own slots, for the blocks not prefetched)."""

    name: str
    lo: int
    hi: int
    base: int
    end: int
    liftable: bool
    wbytes: int = 0
    res: tuple[tuple[int, int], ...] = ()
    wliftable: bool = False


def _overlaps(lo: int, hi: int, spans: list[tuple[int, int]]) -> bool:
    return any(lo < b and a < hi for a, b in spans if a < b)


def _first_fit(size: int, base: int, end: int, recent: list[tuple[int, int]],
               align: int) -> int | None:
    """The lowest aligned start ``s >= base`` with ``[s, s + size)`` inside ``[base, end)``
    and clear of ``recent``; None when there is none."""
    for s in sorted({base} | {align_up(b, align) for _, b in recent if b > base}):
        if s + size <= end and not _overlaps(s, s + size, recent):
            return s
    return None


def plan_lifts(spans: list[OpSpan], align: int, depth: int | None = None) -> dict[str, int]:
    """op name -> the SRAM address its tile area is lifted to (bytes, ``align``-ed), for the
    ops of ``spans`` (one program's, in lowering order) whose area overlaps the (lifted) area
    of one of the ``depth`` (None: :data:`LIFT_DEPTH`) ops before it and that fit, the same
    size, at the lowest place above their base clear of them and of the usual places of the
    ``depth - 1`` ops after it (:func:`_first_fit`; a lift into the place of a later op that
    cannot move would make that op wait instead). Ops without tile buffers, or not
    ``liftable``, keep their place."""
    depth = LIFT_DEPTH if depth is None else depth
    placed: list[tuple[int, int]] = []
    lifts: dict[str, int] = {}
    for k, sp in enumerate(spans):
        lo, hi = sp.lo, sp.hi
        recent = placed[-depth:] if depth else []
        if sp.liftable and hi > lo and _overlaps(lo, hi, recent):
            ahead = [(x.lo, x.hi) for x in spans[k + 1:k + depth]]
            s = _first_fit(hi - lo, sp.base, sp.end, recent + ahead, align)
            if s is not None:
                lifts[sp.name] = s
                lo, hi = s, s + (hi - lo)
        placed.append((lo, hi))
    return lifts


def plan_weight_lifts(spans: list[OpSpan], align: int,
                      depth: int | None = None) -> dict[str, int]:
    """conv name -> the SRAM address its weight and parameter slots are placed at (bytes,
    ``align``-ed, upwards), outside its tile area, for the ``liftable`` convs of ``spans``
    (one program's, lifts applied, in lowering order) whose tile area still overlaps the area
    of one of the ``depth`` (None: :data:`LIFT_DEPTH`) ops before it (their first weight
    load would wait for that op's compute, and the LOAD queue with it): the lowest place in
    ``[base, end)`` clear of those ops' areas (and weight slots placed here), of its own
    area and of the usual places of the ``depth - 1`` ops after it (:func:`_first_fit`).
    The rest of its tile area stays put; a conv with no such place keeps its slots."""
    depth = LIFT_DEPTH if depth is None else depth
    placed: list[list[tuple[int, int]]] = []
    out: dict[str, int] = {}
    for k, sp in enumerate(spans):
        mine = [(sp.lo, sp.hi), *sp.res]
        recent = [iv for ivs in placed[-depth:] for iv in ivs] if depth else []
        if (sp.liftable or sp.wliftable) and sp.wbytes and _overlaps(sp.lo, sp.hi, recent):
            # (its slots sit in its tile area: the area's overlap is theirs or its inputs')
            ahead = [iv for x in spans[k + 1:k + depth] for iv in [(x.lo, x.hi), *x.res]]
            s = _first_fit(sp.wbytes, sp.base, sp.end, recent + ahead + mine, align)
            if s is not None:
                out[sp.name] = s
                mine.append((s, s + sp.wbytes))
        placed.append(mine)
    return out
