"""Channel concat and slice where a view is impossible (schedule/views.py): a DMA copy through
SRAM. Each copied operand moves in bands of rows, double-buffered: DMA_LOAD of the source band
(a channel slice or a packed tensor), then DMA_STORE of it into the destination's channel range
or interleave phase. No compute command: the operands share their quantization (quant/groups.py), so
the bytes are the result. Its cost is the two transfers' (schedule/cost.py, dma_cycles), counted
by the replay like any other command's."""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.emitter import dma_fields
from tcc_compiler.schedule.geom import hwc
from tcc_compiler.schedule.ops.context import OpContext, label, row_share
from tcc_compiler.schedule.program import LayerInfo, Tensor


def copy_pairs(ctx: OpContext, n: Node) -> list[tuple[Tensor, Tensor]]:
    """(source, destination) DRAM tensors of the operands node ``n`` copies."""
    mem = ctx.mem
    idx = mem.views.copies.get(id(n), ())
    out = mem.tensor(n.output)
    if n.op is Op.SLICE:
        x = n.inputs[0]
        src = mem.tensor(x).channels(n.attrs.start, hwc(n.output))
        return [(src, out)] if idx else []
    if n.op is Op.INTERLEAVE:
        sh, sw = n.attrs.sh, n.attrs.sw
        return [(mem.tensor(n.inputs[k]),
                 out.view((0, k // sw, k % sw, sh, sw), hwc(n.inputs[k]))) for k in idx]
    pairs, c0 = [], 0
    for i, v in enumerate(n.inputs):
        if i in idx:
            pairs.append((mem.tensor(v), out.channels(c0, hwc(v))))
        c0 += v.shape[1]
    return pairs


def lower_copy(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit the copies of concat/slice/interleave ``n`` (per band of rows: DMA_LOAD,
    DMA_STORE); fill ``info``.

    Raises:
        ScheduleError: not even one row of an operand fits the op's SRAM budget twice.
    """
    em = ctx.em
    lab = label(n)
    pairs = copy_pairs(ctx, n)
    sa = ctx.begin()
    row_max = max(src.hwc[1] * src.hwc[2] * src.elem_bytes for src, _ in pairs)
    rows = min(max(src.hwc[0] for src, _ in pairs), 0xFFFF, ctx.budget() // (2 * row_max))
    if rows < 1:
        raise ScheduleError(f"{n.op.value} '{n.name}': one row ({row_max} bytes) twice "
                            f"exceeds the {ctx.budget()} bytes of SRAM left")
    bufs = [sa.alloc(rows * row_max, "copy") for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_store: dict[int, object] = {}
    moved = 0
    for src, dst in pairs:
        h, w, c = src.hwc
        lo, hi = row_share(ctx, h)   # a core's share: rows of a concat/slice (same in both)
        ys = list(range(lo, hi, rows))
        for y0 in (ys[::-1] if ctx.reverse else ys):
            y1 = min(hi, y0 + rows)
            slot = info.tiles % 2
            buf = bufs[slot]
            ld = em.load([last_store.get(slot)] + em.free(buf, rows * row_max),
                         lab + " copy in", **dma_fields(src, y0, y1, 0, w, 0, c, buf))
            last_store[slot] = em.store([ld], lab + " copy out",
                                        **dma_fields(dst, y0, y1, 0, w, 0, c, buf))
            moved += (y1 - y0) * w * c * src.elem_bytes
            info.tiles += 1
    ctx.end(sa)
    info.plan = (f"copy of {len(pairs)} operand(s), {moved} bytes in {info.tiles} chunks "
                 "(no view possible)")
