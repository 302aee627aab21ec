"""Element-wise add of two int8 tensors: flat chunks (contiguous in DRAM and SRAM) on the
vector unit, double-buffered (resident operands read/written in place)."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.isa import commands as C
from tcc_compiler.quant.params import add_quant
from tcc_compiler.schedule.emitter import chunk_fields, pixel_chunk
from tcc_compiler.schedule.geom import hwc, hwc_c
from tcc_compiler.schedule.ops.context import (OpContext, chunk_cap, chunk_input,
                                                chunk_output, flat_chunks, label)
from tcc_compiler.schedule.program import SLOT_SHORTCUT, LayerInfo
from tcc_compiler.schedule.tiling import plan_channels


def lower_add(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit add op ``n`` (ADD_CFG, then per chunk: operand loads, ADD_TILE, store); fill
    ``info``.

    Raises:
        ScheduleError: not even one element per buffer fits the op's SRAM budget.
    """
    em, mem = ctx.em, ctx.mem
    a, b = n.inputs[0], n.inputs[1]
    ta, tb, to = mem.tensor(a), mem.tensor(b), mem.tensor(n.output)
    ra, rb_, ro = mem.resident(a), mem.resident(b), mem.resident(n.output)
    total = (ta or ra).nbytes
    n_bufs = sum(r is None for r in (ra, rb_, ro))
    _, w, c = hwc(a)
    blk = pixel_chunk(plan_channels(max(n_bufs, 1), chunk_cap(ctx, total, w * c),
                                    ctx.budget(), align=ctx.t.sram_align_bytes),
                      (ta, tb, to), hwc_c(a))
    p = add_quant(n)
    lab = label(n)
    em.emit(C.AddCfg, [], lab, zp_a=p.zp_a, zp_b=p.zp_b, zp_out=p.zp_out, act_lo=p.act_lo,
            act_hi=p.act_hi, shift=p.shift, mult_a=p.mult_a, mult_b=p.mult_b)
    sa = ctx.begin()
    sl = [[sa.alloc(blk, "add") if r is None else -1 for r in (ra, rb_, ro)]
          for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_read, last_store = {}, {}
    for i, (e0, e1) in enumerate(flat_chunks(ctx, total, blk, w * c)):
        slot = i % 2
        sa_, sb_, so_ = sl[slot]
        sa_, da = chunk_input(em, ra, ta, e0, sa_, blk, last_read.get(slot), lab + " a", e1)
        sb_, db = chunk_input(em, rb_, tb, e0, sb_, blk, last_read.get(slot), lab + " b", e1,
                              slot=SLOT_SHORTCUT)
        deps = [d for d in (da, db) if d is not None]
        so_, dout = chunk_output(em, ro, e0, so_, blk, last_store.get(slot))
        deps += dout
        comp = em.emit(C.AddTile, deps, lab, a_sram=sa_, b_sram=sb_, out_sram=so_,
                       n=e1 - e0)
        last_read[slot] = comp
        if ro is None:
            last_store[slot] = em.store([comp], lab + " output",
                                        **chunk_fields(to, e0, e1, so_))
        info.tiles += 1
    ctx.end(sa)
    info.plan = f"{info.tiles} chunks of {blk} elements"
