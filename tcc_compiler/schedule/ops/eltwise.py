"""Element-wise add/sub/mul of two int8 or int16 activations on the vector unit (EW_TILE):
flat chunks of a (contiguous in DRAM and SRAM), double-buffered; b chunked alongside a, or,
when it is a per-channel vector broadcast over a ([N,C,1,1] over [N,C,H,W]), loaded once whole.
Resident operands are read/written in place. Chunks count elements; each operand's buffers
hold them at its own width (1 or 2 bytes)."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.isa import commands as C
from tcc_compiler.quant.params import ew_quant
from tcc_compiler.schedule.emitter import chunk_fields, pixel_chunk
from tcc_compiler.schedule.geom import elem_bytes, hwc, hwc_c
from tcc_compiler.schedule.ops.context import (OpContext, chunk_cap, chunk_input,
                                                chunk_output, flat_chunks, label)
from tcc_compiler.schedule.program import SLOT_SHORTCUT, LayerInfo
from tcc_compiler.schedule.tiling import plan_channels


def _load_vector(ctx: OpContext, sa, n: Node, period: int):
    """The broadcast b operand (``period`` elements) in SRAM (loaded once, or resident):
    (address, dependency)."""
    b = n.inputs[1]
    rb = ctx.mem.resident(b)
    if rb is not None:
        return rb.sram, None
    nbytes = period * elem_bytes(b)
    addr = sa.alloc(nbytes, "ew b")
    dep = ctx.em.load(ctx.em.free(addr, nbytes), label(n) + " b", slot=SLOT_SHORTCUT,
                      **chunk_fields(ctx.mem.tensor(b), 0, period, addr))
    return addr, dep


def lower_eltwise(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit sub/mul/broadcast-add op ``n`` as EW_TILE chunks; fill ``info``.

    Raises:
        ScheduleError: not even one element per buffer fits the op's SRAM budget.
    """
    em, mem = ctx.em, ctx.mem
    a, b = n.inputs[0], n.inputs[1]
    q = ew_quant(n)
    ta, tb, to = mem.tensor(a), mem.tensor(b), mem.tensor(n.output)
    ra, rb_, ro = mem.resident(a), mem.resident(b), mem.resident(n.output)
    h, w, c = hwc(a)
    total = h * w * c   # elements
    widths = [elem_bytes(v) for v in (a, b, n.output)]
    lab = label(n)
    sa = ctx.begin()
    vec, vec_dep = (_load_vector(ctx, sa, n, q.period) if q.period else (-1, None))
    # bytes per element over the chunk buffers (b is a broadcast vector, loaded once above,
    # when q.period: no chunk buffers for it)
    chunked = [eb for k, (r, eb) in enumerate(zip((ra, rb_, ro), widths))
               if r is None and not (k == 1 and q.period)]
    blk = plan_channels(max(sum(chunked), 1), chunk_cap(ctx, total, w * c),
                        ctx.budget() - sa.top,
                        align=ctx.t.sram_align_bytes)
    blk = pixel_chunk(blk, (ta, to) + (() if q.period else (tb,)), hwc_c(a))
    sl = [[sa.alloc(blk * widths[k], "ew") if r is None and not (k == 1 and q.period) else -1
           for k, r in enumerate((ra, rb_, ro))] for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_read, last_store = {}, {}
    regs = {"kind": int(q.kind), "zp_a": q.zp_a, "zp_b": q.zp_b, "zp_out": q.zp_out,
            "act_lo": q.act_lo, "act_hi": q.act_hi, "shift": q.shift, "mult_a": q.mult_a,
            "mult_b": q.mult_b, "b_period": q.period, "wide": q.wide}
    for i, (e0, e1) in enumerate(flat_chunks(ctx, total, blk, w * c)):
        slot = i % 2
        sa_, sb_, so_ = sl[slot]
        sa_, da = chunk_input(em, ra, ta, e0, sa_, blk, last_read.get(slot), lab + " a", e1)
        db = None
        if q.period:
            sb_ = vec
        else:
            sb_, db = chunk_input(em, rb_, tb, e0, sb_, blk, last_read.get(slot), lab + " b",
                                  e1, slot=SLOT_SHORTCUT)
        deps = [vec_dep] + [d for d in (da, db) if d is not None]
        so_, dout = chunk_output(em, ro, e0, so_, blk, last_store.get(slot), widths[2])
        deps += dout
        comp = em.emit(C.EwTile, deps, lab, a_sram=sa_, b_sram=sb_, out_sram=so_, n=e1 - e0,
                       b0=e0 % q.period if q.period else 0, **regs)
        last_read[slot] = comp
        if ro is None:
            last_store[slot] = em.store([comp], lab + " output",
                                        **chunk_fields(to, e0, e1, so_))
        info.tiles += 1
    ctx.end(sa)
    info.plan = f"{info.tiles} chunks of {blk} elements" + (
        f", b broadcast ({q.period} channels)" if q.period else "")
