"""Max / average / global average pooling: tiles of output rows x columns x channels on the
vector unit, double-buffered input and output (resident operands read/written in place).

An average pool that excludes padding from its divisor (count_include_pad=0) has a divisor
per output pixel: its tiles are cut where the divisor changes (only near the borders), and a
POOL_CFG with that divisor's multiplier precedes each tile whose divisor differs from the last.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa import commands as C
from tcc_compiler.quant.params import pool_divisors, pool_quant
from tcc_compiler.schedule.emitter import dma_fields
from tcc_compiler.schedule.geom import channel_blocks, in_box, pool_geom, spatial_tiles
from tcc_compiler.schedule.ops.context import OpContext, label, row_share
from tcc_compiler.schedule.program import LayerInfo
from tcc_compiler.schedule.tiling import Residency, plan_conv


def pool_cfg(n: Node, kh: int, kw: int, sh: int, sw: int, divisor: int | None = None) -> dict:
    """POOL_CFG fields of pooling op ``n`` with window (kh, kw) and strides (sh, sw);
    ``divisor`` as :func:`tcc_compiler.quant.params.pool_quant` (None = kernel area)."""
    p = pool_quant(n, divisor)
    return dict(kind=0 if n.op is Op.MAXPOOL else 1, kh=kh, kw=kw, sh=sh, sw=sw,
                zp_in=p.zp_in, zp_out=p.zp_out, shift=p.shift, mult=p.mult, wide=p.wide)


def lower_pool(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit pooling op ``n`` (POOL_CFG, then per tile: input load, POOL_TILE, store); fill
    ``info``.

    Raises:
        ScheduleError: no tile fits the op's SRAM budget.
        UnsupportedError: a window above the POOL_CFG limit.
    """
    x = n.inputs[0]
    g, k, s = pool_geom(n, ctx.source)
    em, mem = ctx.em, ctx.mem
    rin, rout = mem.resident(x), mem.resident(n.output)
    plan = plan_conv(g, ctx.t, ctx.budget(), Residency(rin is not None, rout is not None))
    y_lo, y_hi = row_share(ctx, g.oh)
    lab = label(n)
    div = pool_divisors(n)
    if div is None:
        em.emit(C.PoolCfg, [], lab, **pool_cfg(n, k[0], k[1], s[0], s[1]))
    xin, xout = mem.tensor(x), mem.tensor(n.output)
    spatial = [(y0 + y_lo, y1 + y_lo, x0, x1)   # this core's rows (all without a split)
               for y0, y1, x0, x1 in spatial_tiles(y_hi - y_lo, g.ow, plan.rows, plan.cols)]
    if ctx.reverse:
        spatial.sort(key=lambda s: (-s[0], s[2]))
    if div is not None:
        spatial = split_at_divisor_changes(spatial, *div)
    divisor = None
    blocks = channel_blocks(g.c, plan.ocb)
    sa = ctx.begin()
    eb = g.in_elem_bytes   # input and output (int8 or int16) alike
    max_in = max(in_box(g, sp, bl)[6] for sp in spatial for bl in blocks) * eb
    in_slots = [sa.alloc(max_in, "input") for _ in range(2)] if rin is None else []
    out_tile = plan.rows * plan.cols * plan.ocb * eb
    out_slots = [sa.alloc(out_tile, "output") for _ in range(2)] if rout is None else []
    info.sram_peak_bytes = sa.top + ctx.base
    last_read, last_store = {}, {}
    for i, (sp, bl) in enumerate((sp, bl) for sp in spatial for bl in blocks):
        y0, y1, x0, x1 = sp
        if div is not None and int(div[0][y0] * div[1][x0]) != divisor:
            divisor = int(div[0][y0] * div[1][x0])
            em.emit(C.PoolCfg, [], lab, **pool_cfg(n, k[0], k[1], s[0], s[1], divisor))
        iy0, iy1, ix0, ix1, c0, c1, _, pd = in_box(g, sp, bl)
        slot = i % 2
        deps, strides = [], {}
        if rin is None:
            in_addr = in_slots[slot]
            deps.append(em.load(
                [last_read.get(slot)] + em.free(in_addr, max_in), lab + " input",
                **dma_fields(xin, iy0, iy1, ix0, ix1, c0, c1, in_addr)))
        else:  # read the box straight from the resident tensor
            rb = rin.box(iy0, ix0, c0, ix1 - ix0, c1 - c0)
            in_addr = rb["addr"]
            strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
        if rout is None:
            out_addr = out_slots[slot]
            deps += [last_store.get(slot)] + em.free(out_addr, out_tile)
        else:
            deps += em.free(rout.sram, rout.nbytes)
            rb = rout.box(y0, x0, bl[0], x1 - x0, bl[1] - bl[0])
            out_addr = rb["addr"]
            strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
        comp = em.emit(C.PoolTile, deps, lab, in_sram=in_addr, out_sram=out_addr,
                       in_h=iy1 - iy0, in_w=ix1 - ix0, c=c1 - c0, out_h=y1 - y0,
                       out_w=x1 - x0, pad_t=pd[0], pad_l=pd[1], pad_b=pd[2], pad_r=pd[3],
                       **strides)
        last_read[slot] = comp
        if rout is None:
            last_store[slot] = em.store([comp], lab + " output",
                                        **dma_fields(xout, y0, y1, x0, x1, bl[0], bl[1],
                                                     out_addr))
        info.tiles += 1
    ctx.end(sa)
    info.plan = (f"{plan.rows}x{plan.cols}x{plan.ocb} tiles, {len(spatial)} spatial x "
                 f"{len(blocks)} channel blocks")


def split_at_divisor_changes(tiles: list[tuple[int, int, int, int]], rows, cols
                             ) -> list[tuple[int, int, int, int]]:
    """Output tiles ``(y0, y1, x0, x1)`` cut wherever the per-row or per-column window count
    (``rows`` [OH], ``cols`` [OW], :func:`tcc_compiler.quant.params.pool_divisors`) changes,
    so each tile has one divisor; row-major order is kept."""
    def cuts(a, b, counts):
        edges = [a] + [i for i in range(a + 1, b) if counts[i] != counts[i - 1]] + [b]
        return list(zip(edges[:-1], edges[1:]))

    out = []
    for y0, y1, x0, x1 in tiles:
        out += [(a, b, c, d) for a, b in cuts(y0, y1, rows) for c, d in cuts(x0, x1, cols)]
    return out
