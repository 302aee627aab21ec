"""Bilinear upsampling (IR op ``resize`` with mode bilinear) on the vector unit: the output is
cut into bands of whole rows (and, when one output row and its input rows do not fit the SRAM
budget twice, the channels into groups, each resized on its own: interpolation is per
channel); each band's input rows (the rows its taps read, halo included, numerics/resize.py
``input_rows``) are loaded into SRAM, one RESIZE_TILE computes the band and a DMA_STORE writes
it out. Two input and two output buffers alternate (double buffering: a load waits for the
RESIZE_TILE that last read its buffer, a RESIZE_TILE for the store that last emptied its output
buffer). Operands stay in DRAM (schedule/views.py keeps resize out of the SRAM resident zone and
of cascades). Cost: RESIZE_TILE in schedule/cost.py, the DMAs as every DMA."""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Node
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import U16
from tcc_compiler.numerics.resize import COORD_MODES, input_rows
from tcc_compiler.schedule.emitter import dma_fields
from tcc_compiler.schedule.ops.context import OpContext, label
from tcc_compiler.schedule.program import LayerInfo


def _bands(h: int, fh: int, coord: str, rows: int) -> list[tuple[int, int, int, int]]:
    """(out_y0, out rows, in_y0, in rows) of every band of ``rows`` output rows."""
    out = []
    for oy0 in range(0, h * fh, rows):
        n = min(rows, h * fh - oy0)
        iy0, iy1 = input_rows(h, fh, coord, oy0, n)
        out.append((oy0, n, iy0, iy1 - iy0))
    return out


def _plan(h: int, fh: int, coord: str, in_row: int, out_row: int, budget: int):
    """One band when the whole input and output fit ``budget`` bytes, else the bands with the
    most output rows whose two input and two output buffers fit it (output rows a multiple of
    ``fh`` where more than ``fh`` fit), and the buffer sizes (bytes): (bands, in_bytes,
    out_bytes); None when not even one output row fits."""
    if h * fh <= U16.max and h * in_row + h * fh * out_row <= budget:
        return _bands(h, fh, coord, h * fh), h * in_row, h * fh * out_row
    rows = min(h * fh, U16.max, max(1, budget // (2 * (out_row + in_row // fh + 1))))
    while rows >= 1:
        if rows > fh:
            rows -= rows % fh
        bands = _bands(h, fh, coord, rows)
        in_bytes = max(b[3] for b in bands) * in_row
        out_bytes = rows * out_row
        if 2 * (in_bytes + out_bytes) <= budget and max(b[3] for b in bands) <= U16.max:
            return bands, in_bytes, out_bytes
        rows = rows * 3 // 4 if rows > 4 else rows - 1
    return None


def _channel_plan(h: int, w: int, c: int, fh: int, fw: int, coord: str, budget: int):
    """(channels per group, :func:`_plan` of a group): all ``c`` channels when one output row
    fits, else the fewest groups (ceil(c / 2**k) channels each) whose rows fit; None when not
    even a one-channel row does. Interpolation is per channel, so a group is an independent
    resize of a channel slice."""
    groups = 1
    while True:
        cc = -(-c // groups)
        plan = _plan(h, fh, coord, w * cc, w * fw * cc, budget)
        if plan is not None or cc == 1:
            return (cc, plan) if plan is not None else None
        groups *= 2


def lower_bilinear(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit bilinear resize op ``n`` (int8 NHWC in DRAM); fill ``info``.

    A map whose output row (W * fw * C bytes) and input rows do not fit the SRAM budget twice
    is resized in channel groups (each a strided channel slice loaded and stored by DMA, one
    RESIZE_TILE per band of a group), so only a one-channel row has to fit.

    Raises:
        ScheduleError: an int16 operand, a map beyond the command's u16 fields (rows, width;
            output columns when split by channel), or not even one output row of one channel
            and its input rows fitting the op's SRAM budget twice.
    """
    em, mem = ctx.em, ctx.mem
    xin, xout = mem.tensor(n.inputs[0]), mem.tensor(n.output)
    h, w, c = xin.hwc
    a = n.attrs
    fh, fw, coord = a.scale_h, a.scale_w, a.coord.value
    if xin.elem_bytes != 1 or xout.elem_bytes != 1:
        raise ScheduleError(f"resize '{n.name}': bilinear resize takes int8 maps only")
    if max(h * fh, w) > U16.max:
        raise ScheduleError(f"resize '{n.name}': a {w}x{h}x{c} map upsampled x{fh} exceeds "
                            f"RESIZE_TILE's {U16.max} rows / columns")
    cplan = _channel_plan(h, w, c, fh, fw, coord, ctx.budget())
    if cplan is None or (cplan[0] < c and w * fw > U16.max):
        raise ScheduleError(f"resize '{n.name}': one output row of one channel ({w * fw} "
                            f"bytes) and its input rows, twice, exceed the {ctx.budget()} "
                            f"bytes of SRAM left")
    cc, (bands, in_bytes, out_bytes) = cplan
    lab = label(n)
    sa = ctx.begin()
    # double buffers when two fit; one band of several channel groups may fit only once (its
    # single-band plan is sized for one set), and then the groups run one after another
    n_bufs = min(2, len(bands) * -(-c // cc))
    if n_bufs == 2 and 2 * (in_bytes + out_bytes) > ctx.budget():
        n_bufs = 1
    ins = [sa.alloc(in_bytes, "resize input") for _ in range(n_bufs)]
    outs = [sa.alloc(out_bytes, "resize output") for _ in range(n_bufs)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_comp: dict[int, object] = {}
    last_store: dict[int, object] = {}
    for k, (c0, (oy0, rows, iy0, in_h)) in enumerate(
            (c0, band) for c0 in range(0, c, cc) for band in bands):
        c1 = min(c, c0 + cc)
        slot = k % n_bufs
        ib, ob = ins[slot], outs[slot]
        ld = em.load([last_comp.get(slot)] + em.free(ib, in_bytes), lab + " input",
                     **dma_fields(xin, iy0, iy0 + in_h, 0, w, c0, c1, ib))
        comp = em.emit(C.ResizeTile, [ld, last_store.get(slot)] + em.free(ob, out_bytes), lab,
                       in_sram=ib, out_sram=ob, in_h=in_h, in_w=w, c=c1 - c0, out_h=rows,
                       full_h=h, in_y0=iy0, out_y0=oy0, fh=fh, fw=fw,
                       mode=COORD_MODES.index(coord))
        last_comp[slot] = comp
        last_store[slot] = em.store([comp], lab + " output",
                                    **dma_fields(xout, oy0, oy0 + rows, 0, w * fw, c0, c1, ob))
        info.tiles += 1
    ctx.end(sa)
    groups = "" if cc == c else f" in {-(-c // cc)} channel groups of {cc}"
    info.plan = (f"{info.tiles} band{'s' if info.tiles > 1 else ''} of {bands[0][1]} output "
                 f"rows{groups} (bilinear x{fh}x{fw}, {coord})")
