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
plans predicted right). Cascaded chains and depthwise convs cut into kernel parts lay their
weights out their own way and are not predicted.
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
from tcc_compiler.schedule.ops.convsetup import conv_consts
from tcc_compiler.schedule.ops.convslots import COARSE_FACTOR, coarse_blocks
from tcc_compiler.schedule.tiling import align_up, depthwise_split, plan_conv
from tcc_compiler.target import Target


def predicted_blocks(graph: Graph, t: Target, mem: MemoryPlan,
                     after: str | None = None) -> list[tuple[Node, int]]:
    """(conv/FC node, output channels per weight block) the lowering of ``graph`` under
    memory plan ``mem`` is predicted to lay out, in graph order: every conv/FC not in a
    cascaded chain and not cut into depthwise kernel parts. ``after``: only the ops after the
    node of that name (a prefetch consumer), with the coarse blocks a lowering with
    ``coarse`` gives them (schedule/handover.py). A conv whose tiles do not fit is left out."""
    out, on = [], after is None
    for n in graph.nodes:
        if not on:
            on = n.name == after
            continue
        if n.op not in (Op.CONV, Op.FC) or id(n) in mem.chained or id(n) in mem.chains:
            continue
        g = conv_geom(n, t)
        if depthwise_split(g, t):
            continue
        budget = t.sram_capacity_bytes - mem.base(n) - align_up(
            table_bytes(mem.fused.get(id(n))), t.sram_align_bytes)
        res = mem.conv_residency(n, g)
        try:
            plan = plan_conv(g, t, budget, res)
            if after is not None and coarse_blocks(g, t, plan.ocb):
                plan = plan_conv(g, t, budget, res, min_ocb=COARSE_FACTOR * plan.ocb)
        except ScheduleError:
            continue
        out.append((n, min(plan.ocb, g.o)))
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
    per_mem = [dict((id(n), bc) for n, bc in predicted_blocks(graph, t, m, after))
               for m in mems]
    started = 0
    for n in graph.nodes:
        seen = set()
        for bcs in per_mem:
            bc = bcs.get(id(n))
            if bc is None or bc in seen:
                continue
            seen.add(bc)
            _, wbytes, params = conv_consts(n, memo)
            started += prefetch_merged(compressor, wbytes, params, bc)
    return started
