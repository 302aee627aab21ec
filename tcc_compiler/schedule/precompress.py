"""Weight compression ahead of the lowering: the schedule search predicts the channel blocks
of the convs a lowering is about to lay out and starts their DEFLATE on background threads
(:meth:`~tcc_compiler.isa.wcodec.BlockCompressor.prefetch`), so it overlaps the lowering's own
Python work instead of stalling each conv's layout.

The prediction is the tile plan the conv lowering makes without a prefetch reserve
(:func:`~tcc_compiler.schedule.tiling.plan_conv` on the SRAM above the op's base, less a fused
table's; with ``coarse``, the coarser blocks of a load-bound conv after the first prefetch
consumer, :func:`~tcc_compiler.schedule.ops.convslots.coarse_blocks`), the same function the
search's ranking prices (schedule/rank.py). It is only a hint: the lowering asks the
compressor for the blocks it lays out, a block predicted right is then made already (or under
way), one predicted wrong costs its compression on a background thread and is never used, and
the program does not depend on it (ResNet-50 224: 54 of the 54 convs of the search's finalist
plans predicted right). A cascaded chain's convs take one block each, at the chain's last op
(schedule/ops/cascade.py); a depthwise conv cut into kernel parts lays each block out part
after part (:func:`~tcc_compiler.schedule.ops.convsetup.layer_bytes`, the lowering's own
function). A greedy prefetch round's consumers are planned ahead of their windows
(:func:`precompress_consumers`), so their blocks are predicted once the round's tries are
known (EfficientNet-Lite0 224 before both: a third of the search's wall time was its main
thread compressing chains' and consumers' blocks, or waiting for them).
"""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.isa.wlayout import prefetch_merged
from tcc_compiler.schedule.epilogue import table_bytes
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.ops.convsetup import layer_bytes
from tcc_compiler.schedule.ops.convslots import COARSE_FACTOR, coarse_blocks
from tcc_compiler.schedule.prefetch import Prefetcher
from tcc_compiler.schedule.tiling import ConvGeom, align_up, plan_conv
from tcc_compiler.target import Target


def predicted_blocks(graph: Graph, t: Target, mem: MemoryPlan,
                     after: str | None = None) -> list[tuple[Node, ConvGeom, int]]:
    """(conv/FC node, its geometry, output channels per weight block) the lowering of
    ``graph`` under memory plan ``mem`` is predicted to lay out, in graph order: every conv/FC
    not in a cascaded chain, and each conv of a cascaded chain (one block of all its channels,
    as schedule/ops/cascade.py lays it out; the chain's geometry), at its chain's last op.
    ``after``: only the ops after the node of that name (a prefetch consumer), with the coarse
    blocks a lowering with ``coarse`` gives them (schedule/handover.py). A conv whose tiles do
    not fit is left out."""
    out, on = [], after is None
    for n in graph.nodes:
        if not on:
            on = n.name == after
            continue
        ch = mem.chains.get(id(n))
        if ch is not None:   # the whole chain's convs, each in one block
            out += [(m, g, g.o) for m, g in zip(ch.nodes + ([ch.side] if ch.side else []),
                                                ch.geoms + ([ch.side_geom] if ch.side else []))
                    if m.op is Op.CONV]
            continue
        if n.op not in (Op.CONV, Op.FC) or id(n) in mem.chained:
            continue
        g = conv_geom(n, t)
        budget = t.sram_capacity_bytes - mem.base(n) - align_up(
            table_bytes(mem.fused.get(id(n))), t.sram_align_bytes)
        res = mem.conv_residency(n, g)
        try:
            plan = plan_conv(g, t, budget, res)
            if after is not None and coarse_blocks(g, t, plan.ocb):
                plan = plan_conv(g, t, budget, res, min_ocb=COARSE_FACTOR * plan.ocb)
        except ScheduleError:
            continue
        out.append((n, g, min(plan.ocb, g.o)))
    return out


def precompress(graph: Graph, t: Target, mems: list[MemoryPlan],
                compressor: BlockCompressor | None, memo: dict | None,
                after: str | None = None, replace: bool = False) -> int:
    """Start compressing the merged weight blocks of :func:`predicted_blocks` under each of
    ``mems`` (op by op in graph order, each op's blockings in the order of ``mems``) on
    ``compressor``'s background threads; ``memo``: the lowerings' (``conv_consts``), shared.
    ``replace``: this prediction replaces the earlier ones (their blocks not started yet are
    dropped first, :meth:`~tcc_compiler.isa.wcodec.BlockCompressor.drop_queued`). Returns how
    many blocks were queued (0 without a compressor)."""
    if compressor is None:
        return 0
    if replace:
        compressor.drop_queued()
    per_mem = [{id(n): (g, bc) for n, g, bc in predicted_blocks(graph, t, m, after)}
               for m in mems]
    entries = []
    for n in graph.nodes:
        seen = set()
        for got in (b.get(id(n)) for b in per_mem):
            if got is not None and got[1] not in seen:
                seen.add(got[1])
                entries.append((n, *got))
    return _queue(compressor, t, entries, memo)


def precompress_consumers(graph: Graph, t: Target, mem: MemoryPlan,
                          hoist_sets: list[tuple[Hoist, ...]],
                          compressor: BlockCompressor | None, memo: dict | None) -> int:
    """Start compressing, as :func:`precompress` does, the weight blocks of the prefetch
    consumers of each of ``hoist_sets`` (the hoists of one lowering each, in the order they
    will be lowered: a greedy prefetch round's tries, schedule/hoistsearch.py) under memory
    plan ``mem``: the blocks :meth:`~tcc_compiler.schedule.prefetch.Prefetcher.begin` lays
    out, from the same :meth:`~tcc_compiler.schedule.prefetch.Prefetcher.consumer_plan`. A
    consumer whose tiles do not fit is left out. Returns how many blocks were queued."""
    if compressor is None:
        return 0
    nodes = {n.name: n for n in graph.nodes}
    entries = []
    for hoists in hoist_sets:
        pf = Prefetcher(hoists, graph)
        for name in dict.fromkeys(h.consumer for h in hoists):
            n = nodes[name]
            g = conv_geom(n, t)
            try:
                entries.append((n, g, min(pf.consumer_plan(n, mem, t).ocb, g.o)))
            except ScheduleError:
                continue
    return _queue(compressor, t, entries, memo)


def _queue(compressor: BlockCompressor, t: Target, entries: list[tuple[Node, ConvGeom, int]],
           memo: dict | None) -> int:
    """Queue on ``compressor`` the merged blocks of each (node, geometry, block channels) of
    ``entries``, in order, from the bytes the lowering lays out
    (:func:`~tcc_compiler.schedule.ops.convsetup.layer_bytes`); returns how many."""
    started = 0
    for n, g, bc in entries:
        _, wbytes, params = layer_bytes(n, g, t, bc, memo)
        started += prefetch_merged(compressor, wbytes, params, bc)
    return started
