"""Channel concat and slice where a view is impossible (schedule/views.py): a DMA copy through
SRAM. Each copied operand moves in chunks of whole pixels, double-buffered: DMA_LOAD of the
source chunk (a channel slice or a packed tensor), then DMA_STORE of it into the destination's
channel range. No compute command: the operands share their quantization (quant/groups.py), so
the bytes are the result. Its cost is the two transfers' (schedule/cost.py, dma_cycles), counted
by the replay like any other command's."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.emitter import chunk_fields, pixel_chunk
from tcc_compiler.schedule.geom import hwc
from tcc_compiler.schedule.ops.context import OpContext, label
from tcc_compiler.schedule.program import LayerInfo, Tensor
from tcc_compiler.schedule.tiling import plan_channels


def copy_pairs(ctx: OpContext, n: Node) -> list[tuple[Tensor, Tensor]]:
    """(source, destination) DRAM tensors of the operands node ``n`` copies."""
    mem = ctx.mem
    idx = mem.views.copies.get(id(n), ())
    out = mem.tensor(n.output)
    if n.op is Op.SLICE:
        x = n.inputs[0]
        src = mem.tensor(x).channels(n.attrs.start, hwc(n.output))
        return [(src, out)] if idx else []
    pairs, c0 = [], 0
    for i, v in enumerate(n.inputs):
        if i in idx:
            pairs.append((mem.tensor(v), out.channels(c0, hwc(v))))
        c0 += v.shape[1]
    return pairs


def lower_copy(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit the copies of concat/slice ``n`` (per chunk: DMA_LOAD, DMA_STORE); fill ``info``.

    Raises:
        ScheduleError: not even one pixel fits the op's SRAM budget.
    """
    em = ctx.em
    lab = label(n)
    pairs = copy_pairs(ctx, n)
    sa = ctx.begin()
    c_max = max(src.hwc[2] for src, _ in pairs)
    total_max = max(src.nbytes for src, _ in pairs)
    blk = plan_channels(1, total_max, ctx.budget(), fixed=0)
    blk = max(c_max, blk // c_max * c_max)
    bufs = [sa.alloc(blk, "copy") for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_store: dict[int, object] = {}
    moved = 0
    i = 0
    for src, dst in pairs:
        c = src.hwc[2]
        step = pixel_chunk(blk // c * c, (src, dst), c)
        for e0 in range(0, src.nbytes, step):
            e1 = min(src.nbytes, e0 + step)
            slot = i % 2
            i += 1
            buf = bufs[slot]
            ld = em.load([last_store.get(slot)] + em.free(buf, blk), lab + " copy in",
                         **chunk_fields(src, e0, e1, buf))
            last_store[slot] = em.store([ld], lab + " copy out",
                                        **chunk_fields(dst, e0, e1, buf))
            moved += e1 - e0
            info.tiles += 1
    ctx.end(sa)
    info.plan = (f"copy of {len(pairs)} operand(s), {moved} bytes in {info.tiles} chunks "
                 "(no view possible)")
