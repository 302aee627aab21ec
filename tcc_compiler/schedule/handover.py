"""Weight-slot handover to a prefetch consumer: the search's variant of a network without
depthwise layers whose prefetch consumer (schedule/hoist.py) is load-bound right after the
conv before it.

While that conv (the consumer's *predecessor*) runs, the SRAM holds the consumer's prefetched
blocks in the prefetch area, the predecessor's blocks in its own weight slots and, until it
starts, the weights of the op before it: the LOAD queue, with the DRAM link the bound, waits
for a slot (ResNet-50 224: layer4.0 conv1's fourth block waited 19.4k cycles for its first
block's computes while the 1.07 MB layer4.0-downsample prefetch area filled the SRAM; the
downsample's own slots, placed across two of conv1's, then waited for conv1's later blocks).
The handover plans the predecessor's slots and the consumer's together:

- the predecessor takes one weight slot per own block load where they fit (all its blocks
  load ahead of it, none waits for its computes), the slots starting below the consumer's
  base (SRAM the consumer's resident tensors take) filled last
  (:func:`~tcc_compiler.schedule.ops.convslots.handover_order`);
- the consumer's own slots start at the lowest of those slots at or above its base
  (:func:`~tcc_compiler.schedule.ops.convslots.handover_start`), so each lies over one
  predecessor slot and is free once that slot's block is done, in the order the
  predecessor finishes them;
- the prefetch area may give up one of the consumer's blocks, so that the predecessor's
  slots fit clear of the weights of the op before it;
- the load-bound convs after the consumer take coarser weight blocks
  (:func:`~tcc_compiler.schedule.ops.convslots.coarse_blocks`): from the consumer on the
  DRAM link is the bound and every block load's DMA setup adds to the total.

Each variant is lowered (resumed from the program without prefetch, schedule/resume.py) and
kept only when the replay is faster (specs/target.md, "Weight-slot handover").
"""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.hoist import MIN_PREFETCH_BYTES, Hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.precompress import precompress
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.reorder import exact_waits
from tcc_compiler.schedule.resume import resumable
from tcc_compiler.schedule.tiling import align_up
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: (consumer weight blocks the prefetch area gives up, coarse blocks after the consumer) of
#: the handover variants :func:`handed` lowers. ResNet-50 224 (final cycles): without the
#: handover 2,806,335; (0, False) 2,803,329; (1, False) 2,799,205; (0, True) 2,796,381;
#: (1, True) 2,792,257. Only the two with coarse blocks are tried: the other 19
#: tools/bench.py rows keep their programs with all four. Compile cost (ResNet-50 224, the
#: only bench row whose variants move anything; loaded): 0.33 s of CPU for both, of which
#: 0.26 s is the DEFLATE of the 35 coarse blocks (14.5 MB) the winner ships (about 18 ns a
#: byte at any zlib level 1..9: int8 weights barely compress), the rest two lowerings of the
#: 22 ops from the window on and three exact-waits passes with their replays.
HANDOVER_VARIANTS = ((0, True), (1, True))


def block_bytes(graph: Graph, t: Target, mem, hoists: tuple[Hoist, ...], h: Hoist) -> int:
    """SRAM bytes (aligned) of one weight block (weights and parameter records) of ``h``'s
    consumer under its tile plan with ``hoists`` (:meth:`Prefetcher.consumer_plan`).

    Raises:
        ScheduleError: the consumer's tiles do not fit.
    """
    n = next(m for m in graph.nodes if m.name == h.consumer)
    g = conv_geom(n, t)
    ocb = min(Prefetcher(hoists, graph).consumer_plan(n, mem, t).ocb, g.o)
    return align_up(ocb * (g.kernel_bytes + PARAM_RECORD_BYTES), t.sram_align_bytes)


def cut_area(hoists: tuple[Hoist, ...], nbytes: int) -> tuple[Hoist, ...] | None:
    """``hoists`` with the area of the first (its consumer's earliest) ``nbytes`` smaller,
    ending where it ended; None when fewer than :data:`MIN_PREFETCH_BYTES` would be left."""
    h = hoists[0]
    if h.area_bytes - nbytes < MIN_PREFETCH_BYTES:
        return None
    return (dataclasses.replace(h, area_bytes=h.area_bytes - nbytes),) + hoists[1:]


def compress_ahead(graph: Graph, t: Target, compressor, lw: Lowering, memo: dict | None,
                   consumer: str) -> None:
    """Start compressing, on ``compressor``'s background threads, the coarse weight blocks
    the handover variants (:data:`HANDOVER_VARIANTS`) of a prefetch for ``consumer`` on
    ``lw``'s memory plan will lay out (the ops after it; schedule/precompress.py), replacing
    the earlier predictions not started yet. :func:`handed` calls it, and the search's
    prefetch round (schedule/hoistsearch.py) as soon as a try with that consumer is faster,
    so that they compress while the round's other tries lower (the streams are the same
    whenever they are made). Nothing without a compressor or a coarse variant."""
    if compressor is not None and any(coarse for _, coarse in HANDOVER_VARIANTS):
        precompress(graph, t, [lw.mem], compressor, memo, after=consumer, replace=True)


def handed(graph: Graph, t: Target, compressor, lw: Lowering, memo: dict,
           best: tuple[int, Program, tuple[Hoist, ...]],
           spans: list[tuple[int, int]]) -> tuple[int, Program, tuple[Hoist, ...]]:
    """(cycles, program, hoists): the fastest of ``best`` (the search's program with the
    prefetches ``best[2]``, planned on ``lw``'s memory plan; ``spans``: the replay of ``lw``'s
    program) and its handover variants (one per :data:`HANDOVER_VARIANTS`), each compared with
    its loads at exact waits (:func:`_exact_cycles`), ties to ``best``; the winner is returned
    as lowered, with its replayed cycles. A variant whose tiles do not fit is passed over."""
    cycles, prog0, hoists = best
    try:
        blk = block_bytes(graph, t, lw.mem, hoists, hoists[0])
    except ScheduleError:
        return best
    compress_ahead(graph, t, compressor, lw, memo, hoists[0].consumer)
    score = _exact_cycles(prog0, cycles, t)
    for k, coarse in HANDOVER_VARIANTS:
        hs = cut_area(hoists, k * blk)
        if hs is None:
            continue
        lowering = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                            hoist=hs, memo=memo, mem=lw.mem, resume=resumable(lw, memo),
                            handover=True, coarse=coarse)
        try:
            prog = lowering.run()
        except ScheduleError:
            log.debug("handover, area %d bytes: tiles no longer fit", hs[0].area_bytes)
            continue
        cyc = max((e for _, e in replay(prog.commands, t, (lowering.shared_cmds, spans))),
                  default=0)
        got = _exact_cycles(prog, cyc, t)
        log.debug("handover, area %d bytes, coarse %s: %d -> %d cycles (%d -> %d with exact "
                  "waits)", hs[0].area_bytes, coarse, cycles, cyc, score, got)
        if got < score:
            best, score = (cyc, prog, hs), got
    return best


def _exact_cycles(prog: Program, cycles: int, t: Target) -> int:
    """Replayed cycles of ``prog`` (``cycles``) or, when faster, of it with its loads moved to
    exact waits (:func:`~tcc_compiler.schedule.reorder.exact_waits`), as the search finishes
    its winner: the variants are compared in that form (ResNet-50 224, one block cut:
    2,816,109 cycles before, 2,799,205 after; without the handover 2,808,340 and 2,806,335)."""
    moved = exact_waits(prog)
    if moved is prog:
        return cycles
    return min(cycles, max((e for _, e in replay(moved.commands, t)), default=0))
