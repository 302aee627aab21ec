"""Prefetch pieces fitted to whole weight blocks (:func:`fit_pieces`).

:func:`~tcc_compiler.schedule.hoist.plan_pieces` splits a consumer's prefetch area where the
SRAM its window ops leave free changes, without knowing the consumer's weight blocks; the
:class:`~tcc_compiler.schedule.prefetch.Prefetcher` then fills the pieces block by block, the
top piece (longest window) first, and a block that does not fit what is left of a piece goes
to the next one. Each piece but the last thus wastes up to a block, and blocks that would fit
the area whole are not prefetched (EfficientNet-Lite0 224: the classifier's 1,296,000-byte
area in pieces of 1,000,512 and 295,488 bytes holds 12 + 3 of its 16 blocks of 82,944 bytes
(64 outputs x (1,280 weights + a 16-byte record); the last one 40 outputs, 51,840 bytes),
its last block then loaded after the last conv). Moving each boundary down to whole blocks of
the piece above, its remainder added to the piece below, keeps the union of the areas (the
last piece's bottom does not move) and shrinks only the reserve of the ops before the lower
pieces' windows start, so the pieces hold at least as many blocks (specs/target.md, "Weight
prefetch", *Pieces fitted to blocks*). The search (schedule/search.py) lifts the fitted
hoists of its winner too (:func:`lifted_fitted`) and keeps the faster program.
"""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import MIN_PREFETCH_BYTES, Hoist
from tcc_compiler.schedule.liftsearch import lifted
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.resume import resumable
from tcc_compiler.schedule.tiling import align_up
from tcc_compiler.target import Target

log = logging.getLogger(__name__)


def block_sizes(channels: int, block_channels: int, per_channel: int, align: int) -> list[int]:
    """SRAM bytes each merged weight block of a consumer takes in a prefetch area, in order:
    ``channels`` output channels in blocks of ``block_channels`` (the last one narrower when
    they do not divide), each ``per_channel`` bytes per channel (OHWI int8 weights + its
    16-byte parameter record), aligned up to ``align`` (as
    :meth:`~tcc_compiler.schedule.prefetch.Prefetcher.begin` places them)."""
    return [align_up((min(c + block_channels, channels) - c) * per_channel, align)
            for c in range(0, channels, block_channels)]


def blocks_held(sizes: list[int], areas: list[int]) -> int:
    """How many of the blocks ``sizes`` (bytes, in order) the areas ``areas`` (bytes, in the
    order they are filled) hold when each takes blocks in order while the next one fits, the
    first that does not moving on to the next area (the Prefetcher's fill)."""
    k = 0
    for room in areas:
        while k < len(sizes) and sizes[k] <= room:
            room -= sizes[k]
            k += 1
    return k


def fit_pieces(pieces: tuple[Hoist, ...], graph: Graph, mem: MemoryPlan, t: Target,
               hoists: tuple[Hoist, ...] = ()) -> tuple[Hoist, ...]:
    """``pieces`` (one consumer's, :func:`~tcc_compiler.schedule.hoist.plan_pieces`, stacked
    with no gap from the top piece down, in ``hoists``' company) with each piece but the last
    cut down to whole weight blocks of the consumer, the remainder added to the piece below
    (its area end moved down by as much; in the order of ``pieces``); the last piece keeps its
    bottom. Returned only when
    the fitted pieces hold more of the consumer's blocks (:func:`blocks_held`) and its tile
    plan -- so its block width -- is the same with them; else ``pieces`` unchanged (also for
    fewer than two pieces, pieces not stacked edge to edge, or a piece that would fall under
    :data:`~tcc_compiler.schedule.hoist.MIN_PREFETCH_BYTES`).

    Raises:
        StopIteration: the consumer is not a node of ``graph``.
    """
    if len(pieces) < 2:
        return pieces
    order = sorted(pieces, key=lambda h: -len(h.window))   # the Prefetcher's fill order
    if any(a.area(t)[0] != b.area(t)[1] for a, b in zip(order, order[1:])):
        return pieces
    n = next(m for m in graph.nodes if m.name == order[0].consumer)
    g = conv_geom(n, t)
    try:
        ocb = min(Prefetcher(hoists + pieces, graph).consumer_plan(n, mem, t).ocb, g.o)
    except ScheduleError:
        return pieces
    sizes = block_sizes(g.o, ocb, g.kernel_bytes + PARAM_RECORD_BYTES, t.sram_align_bytes)
    fitted, carry, top = [], 0, order[0].area(t)[1]
    for i, h in enumerate(order):
        size = h.area_bytes + carry
        if i < len(order) - 1:
            whole = size // sizes[0] * sizes[0]
            carry, size = size - whole, whole
        if size < MIN_PREFETCH_BYTES:
            return pieces
        end = h.area_end if i == 0 else top
        fitted.append(dataclasses.replace(h, area_bytes=size, area_end=end))
        top -= size
    before = blocks_held(sizes, [h.area_bytes for h in order])
    if blocks_held(sizes, [h.area_bytes for h in fitted]) <= before:
        return pieces
    try:
        same = Prefetcher(hoists + tuple(fitted), graph).consumer_plan(n, mem, t).ocb
    except ScheduleError:
        return pieces
    if min(same, g.o) != ocb:
        return pieces
    new = {id(h): f for h, f in zip(order, fitted)}
    return tuple(new[id(h)] for h in pieces)


def fit_hoists(hoists: tuple[Hoist, ...], graph: Graph, mem: MemoryPlan,
               t: Target) -> tuple[Hoist, ...]:
    """``hoists`` (one program's) with the pieces of each consumer that has several fitted to
    whole blocks (:func:`fit_pieces`, the other hoists as company), in the same order; the
    same tuple when no consumer's pieces change."""
    out = list(hoists)
    for c in dict.fromkeys(h.consumer for h in hoists):
        idx = [i for i, h in enumerate(out) if h.consumer == c]
        mine = tuple(out[i] for i in idx)
        fitted = fit_pieces(mine, graph, mem, t,
                            tuple(h for h in out if h.consumer != c))
        for i, h in zip(idx, fitted):
            out[i] = h
    return hoists if out == list(hoists) else tuple(out)


def lifted_fitted(graph: Graph, t: Target, compressor, lw: Lowering,
                  hoists: tuple[Hoist, ...],
                  memo: dict, made: list | None = None) -> tuple[Lowering, Program, int] | None:
    """(``lw``, program, replayed cycles) of ``lw``'s plan with ``hoists`` fitted to whole
    blocks (:func:`fit_hoists`), lowered (resuming from ``lw`` when it was recorded with
    ``memo``) and lifted as the search lifts its winner
    (:func:`~tcc_compiler.schedule.liftsearch.lifted`, which appends the lowering that made
    the program to ``made`` when given); None when no piece changes or the fitted program's
    tiles do not fit."""
    fitted = fit_hoists(hoists, graph, lw.mem, t)
    if fitted is hoists:
        return None
    low = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade, hoist=fitted,
                   memo=memo, mem=lw.mem, record=True, resume=resumable(lw, memo))
    try:
        prog = low.run()
    except ScheduleError:
        log.debug("pieces fitted to blocks: tiles no longer fit")
        return None
    cycles = max((e for _, e in replay(prog.commands, t)), default=0)
    log.debug("pieces fitted to blocks: %d cycles before lifts", cycles)
    return lifted(graph, t, compressor, lw, prog, cycles, fitted, memo, low, made=made)
