"""Coarse weight blocks in a network with depthwise layers (:func:`lifted_coarse`).

The tile planner (schedule/tiling.py) picks each conv's output-channel block width one op at
a time, by its own estimate; at the end of a network with depthwise layers the DRAM link is
the bound (EfficientNet-Lite0 224: from ~297.8k cycles on the LOAD queue is busy to the end
with the 1152-channel expand and projection convs' weights), and each block load then adds
its DMA setup (``dma_setup_cycles``) to the total. The handover's coarse blocks
(schedule/handover.py) act only after the first prefetch consumer, which in such a network
is the conv head or the classifier, after that tail. Here every load-bound conv planned in
at least :data:`~tcc_compiler.schedule.ops.convslots.COARSE_WIDE_MIN_BLOCKS` blocks takes
blocks at least twice as wide where they fit and leave it two or more
(``Lowering.coarse_wide``). The search (schedule/search.py) lowers and lifts its winner so
and keeps it only when faster after its last steps (specs/target.md, "Weight prefetch",
*Coarse blocks in a network with depthwise layers*).
"""

from __future__ import annotations

import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.liftsearch import lifted
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

log = logging.getLogger(__name__)


def lifted_coarse(graph: Graph, t: Target, compressor, lw: Lowering,
                  hoists: tuple[Hoist, ...],
                  memo: dict, made: list | None = None) -> tuple[Lowering, Program, int] | None:
    """(``lw``, program, replayed cycles) of ``lw``'s plan with the prefetches ``hoists``,
    lowered with coarse weight blocks (``Lowering.coarse_wide``, not resumed) and lifted as
    the search lifts its winner (:func:`~tcc_compiler.schedule.liftsearch.lifted`, which
    appends the lowering that made the program to ``made`` when given; its own variant's op
    spans are this lowering's, not lowered again); None when no conv
    takes coarser blocks or the program's tiles do not fit."""
    low = Lowering(graph, t, lw.zone_bytes, compressor, cascade=lw.cascade,
                   hoist=hoists or None, memo=memo, mem=lw.mem, coarse_wide=True)
    try:
        prog = low.run()
    except ScheduleError:
        log.debug("coarse blocks: tiles no longer fit")
        return None
    if not low.coarsened:
        return None
    cycles = max((e for _, e in replay(prog.commands, t)), default=0)
    log.debug("coarse blocks: %d cycles before lifts", cycles)
    return lifted(graph, t, compressor, lw, prog, cycles, hoists, memo, low,
                  coarse_wide=True, made=made)
