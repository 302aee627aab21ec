"""Lower a quantized graph to an NPU program: the entry of the scheduling stage.

The stage, by concern:

* :mod:`~tcc_compiler.schedule.memory` -- DRAM buffers by liveness, the SRAM resident zone,
  every op's tile-area base and the chains worth cascading, as a frozen ``MemoryPlan``;
* :mod:`~tcc_compiler.schedule.tiling` / :mod:`~tcc_compiler.schedule.cascade` -- tile and
  band planners, priced by the one cycle model, :mod:`~tcc_compiler.schedule.cost`;
* :mod:`~tcc_compiler.schedule.emitter` -- commands with explicit waits and provenance;
* :mod:`tcc_compiler.schedule.ops` -- one module per op family over the emitter;
* :mod:`~tcc_compiler.schedule.prefetch` -- cross-op weight prefetch;
* :class:`~tcc_compiler.isa.wlayout.WeightLayoutBuilder` -- the WEIGHTS region, block by block;
* :mod:`~tcc_compiler.schedule.lowering` -- one lowering try;
  :mod:`~tcc_compiler.schedule.search` -- the variant search keeping the fastest;
* :mod:`~tcc_compiler.schedule.program` -- the result handed to emission (``Program``).
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.errors import InternalError, ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.bounds import check_op_tiles, name_untileable
from tcc_compiler.schedule.cores import lower_spatial
from tcc_compiler.schedule.corestream import lower_stream
from tcc_compiler.schedule.coretime import replay_cores
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.search import ZONE_FRACTIONS, search, search_parts
from tcc_compiler.schedule.tiling import align_up
from tcc_compiler.target import Target


def lower(graph: Graph, target: Target,
          zone_fractions: tuple[float, ...] = ZONE_FRACTIONS,
          compress_weights: bool = False, cascade: bool = True,
          prefetch: bool = True, cores: int = 1) -> Program:
    """Lower a quantized graph to an NPU :class:`Program`.

    The SRAM holds a resident zone (whole tensors kept on chip, schedule/memory.py) below
    each op's tile area, which starts at the top of the resident tensors live during the op
    and the op before it; every zone size (the cap of the resident set) in ``zone_fractions``
    (fractions of ``target.sram_capacity_bytes``, aligned) is lowered and the program with the
    lowest replayed latency (:func:`tcc_compiler.schedule.cost.replay`) is kept, ties going to the
    smaller zone. Zones that leave too little SRAM for some op's tiles are skipped.
    ``compress_weights`` stores weights and parameters DEFLATE-compressed per channel block
    (loaded by DMA_LOAD_Z, specs/weights.md); one memoising compressor serves all tries.
    With ``cascade``, each zone is also lowered with the chains worth cascading
    (schedule/cascade.py) run band by band, and that program competes on replayed latency
    with the one without cascades (so cascading never makes the estimate worse).
    With ``prefetch``, the best program is lowered again with each cross-op weight prefetch
    plan of :data:`~tcc_compiler.schedule.hoistsearch.HOIST_VARIANTS`
    (:func:`~tcc_compiler.schedule.prefetch.plan_hoist`), kept only when its replay is faster.

    With ``cores`` = 2 the program is :func:`lower_multi`'s (the faster of one core and the
    spatial split) and carries the stream program for both cores
    (:func:`~tcc_compiler.schedule.corestream.lower_stream`) as ``stream``; the zone,
    cascade and prefetch settings apply to one core only.

    Bounded by construction: every conv-like op run alone is cut into at most
    :data:`~tcc_compiler.schedule.tiling.MAX_OP_TILES` tiles in every variant (a network
    needing more even with the whole SRAM is refused up front,
    :func:`~tcc_compiler.schedule.bounds.check_op_tiles`), and a cascaded chain runs each of
    its ops once per band, at most its output's rows (schedule/cascade.py); so each lowering
    tried emits O(ops x max(MAX_OP_TILES, rows)) commands, and the search tries a fixed number
    of variants (zone fractions x cascading, prefetch and lift rounds).

    Raises:
        ScheduleError: an op cannot be tiled into the target's SRAM in at most
            ``MAX_OP_TILES`` tiles (naming the op when no tile of it fits at all).
        UnsupportedError: a tensor shape the NPU cannot hold.
        InternalError: ``cores`` other than 1 or 2.
    """
    check_op_tiles(graph, target)   # a hopeless target is refused before any search
    try:
        if cores != 1:
            return lower_multi(graph, target, compress_weights, cores)
        return search(graph, target, zone_fractions, compress_weights, cascade, prefetch)
    except ScheduleError as exc:
        raise name_untileable(graph, target, exc) from None


#: Per-core SRAM fractions tried for the bands of tensors split by rows between the cores
#: (schedule/corebands.py; YOLOv8n 640: 0.5 and 0.875 of the 2 MiB replay 2.64 and 2.50 ms).
BAND_FRACTIONS = (0.5, 0.875)

#: Row tiles per core's share of a banded conv tried (1: the tile plan's own; 3: the rows
#: the other core needs are stored after a third of the share; YOLOv8n 640: 2.52 / 2.50 ms).
BAND_TILES = (1, 3)


def _spatial_candidates(lw, target: Target) -> list[tuple[int, bool, bool, int, int]]:
    """The (zone, cascade, balance, band bytes, band tiles) settings of
    :func:`~tcc_compiler.schedule.cores.lower_spatial` tried: the one-core plan's zone and
    cascades or neither, balanced or not, and per-core bands (balanced: without a zone the
    balancer only places the ops bands leave unsplit)."""
    al = target.sram_align_bytes
    out = {(lw.zone_bytes, lw.cascade, b, 0, 1) for b in (False, True)}
    out |= {(0, False, b, 0, 1) for b in (False, True)}
    out |= {(0, False, True, align_up(int(f * target.sram_capacity_bytes), al), k)
            for f in BAND_FRACTIONS for k in BAND_TILES}
    return sorted(out)


def lower_multi(graph: Graph, target: Target, compress_weights: bool, cores: int) -> Program:
    """The fastest of the single-core program (:func:`search`) and the two-core spatial split
    (:func:`~tcc_compiler.schedule.cores.lower_spatial`, core 0 keeping the single-core
    plan's resident zone and cascades, or with neither, or with each core keeping its rows
    of the tensors split by rows in :data:`BAND_FRACTIONS` of its SRAM), by replayed latency; its
    ``estimates`` hold the latencies (cycles), the stream program's period (cycles per image),
    images per run and per core, and which program was kept. A model whose layers are bound
    by the shared DRAM bandwidth may run faster on one core than split: then the one-core
    program is kept (header cores 0). ``stream`` is the emitted stream program
    (:func:`~tcc_compiler.schedule.corestream.lower_stream`: each core on its own images).

    Raises:
        ScheduleError: an op cannot be tiled into one core's SRAM.
        InternalError: ``cores`` other than 2.
    """
    if cores != 2:
        raise InternalError(f"lower: {cores} cores (1 or 2 are supported)")
    comp = BlockCompressor() if compress_weights else None
    try:
        lw, single, single_cycles = search_parts(graph, target, ZONE_FRACTIONS, comp, {})
    finally:
        if comp is not None:   # its background compression (schedule/precompress.py)
            comp.close()
    est: dict = {"single_core_cycles": single_cycles}
    best = None
    for zone, casc, bal, band, tiles in _spatial_candidates(lw, target):
        try:
            prog = lower_spatial(graph, target, comp, zone, casc, bal, band, tiles)
        except ScheduleError:
            continue
        cyc = max((e for _, e in replay_cores(prog.commands, target)), default=0)
        est[f"spatial_latency_cycles_zone{zone}{'_cascade' if casc else ''}"
            f"{'_balanced' if bal else ''}{f'_bands{band}' if band else ''}"
            f"{f'_tiles{tiles}' if tiles > 1 else ''}"] = cyc
        if best is None or cyc < best[0]:
            best = (cyc, prog)
    stream = lower_stream(graph, target, comp, single, single_cycles=single_cycles)
    est.update(spatial_latency_cycles=best[0] if best else None,
               stream_period_cycles=stream.period_cycles, stream_images=stream.images,
               stream_batch=stream.batch, stream_tail_from=stream.tail_from,
               stream_tail_weight_share=stream.tail_weight_share)
    if best is not None and best[0] < single_cycles:
        return dataclasses.replace(best[1], estimates=dict(est, kept="spatial split"),
                                   stream=stream)
    return dataclasses.replace(
        single, estimates=dict(est, kept=one_core_kept(best and best[0], single_cycles)),
        stream=stream)


def one_core_kept(split_cycles: int | None, single_cycles: int) -> str:
    """The report's ``kept`` text when a ``--cores 2`` compile keeps the one-core program:
    why, from the best two-core split's estimated cycles (None: no split fits the SRAM) and
    the one-core program's. A tie is not called faster (a split equal in cycles is kept out
    only because it takes both cores)."""
    if split_cycles is None:
        return "one core (no split fits)"
    if split_cycles > single_cycles:
        return "one core (faster)"
    return "one core (a split is no faster)"


__all__ = ["lower"]
