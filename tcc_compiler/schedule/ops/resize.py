"""Nearest-neighbour upsampling by integer factors (IR op ``resize``) as pure data movement:
bands of input rows are loaded into SRAM (double-buffered), and each band is stored
``scale_h * scale_w`` times, once per output phase (dy, dx), with a strided DMA_STORE whose
runs are single pixels: output pixel (y0 * sh + dy + i * sh, dx + j * sw) <- input pixel
(y0 + i, j). No compute command (input and output share their quantization, so the bytes are
the result). Its cost is the transfers' (schedule/cost.py, dma_cycles: setup plus bytes at the
DRAM bandwidth), counted by the replay like any other command's. Operands stay in DRAM
(schedule/views.py keeps them out of the SRAM resident zone and of cascades), except the
output of a resize writing a member of a concat banded per core (two cores,
schedule/corebands.py): :func:`lower_resize_resident` loads the output rows straight into
the band."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.ops.bands import band_rows, group_channels, store_bands
from tcc_compiler.schedule.ops.context import OpContext, label
from tcc_compiler.schedule.program import LayerInfo, Tensor


def phase_store(out: Tensor, y0: int, rows: int, dy: int, dx: int, w: int, sh: int, sw: int,
                sram: int, c0: int = 0, c1: int | None = None) -> dict:
    """DMA_STORE fields writing a packed SRAM band [rows, w, c1 - c0] to channels c0..c1 - 1
    (default all C) of output phase (dy, dx) of the ``out`` tensor (upsampled by (sh, sw)),
    starting at input row ``y0``."""
    _, ow, c = out.hwc
    nch = c - c0 if c1 is None else c1 - c0
    px = out.pitch
    eb = out.elem_bytes
    return dict(dram=out.addr(((y0 * sh + dy) * ow + dx) * px + c0 * eb), sram=sram,
                run_bytes=nch * eb, n1=w, n2=rows, dram_stride1=sw * px,
                dram_stride2=sh * ow * px, sram_stride1=nch * eb, sram_stride2=w * nch * eb)


def lower_resize_resident(ctx: OpContext, n: Node, info: LayerInfo, res) -> None:
    """Emit resize op ``n`` whose output is kept in SRAM (``res``: a channel slice of a
    per-core band, schedule/corebands.py, NHWC at the band's pixel pitch): every kept output
    row (``res.rows``) is loaded from the NHWC DRAM input straight into its place, one
    strided DMA_LOAD per output phase (dy, dx) whose runs are single input pixels (C x
    element bytes) and whose SRAM strides are ``sw`` pixels and ``sh`` rows of the band (the
    input read ``sh * sw`` times); no store, no tile buffer. Fills ``info`` (tiles = loads)."""
    em = ctx.em
    xin = ctx.mem.tensor(n.inputs[0])
    _, w, c = xin.hwc
    sh, sw = n.attrs.scale_h, n.attrs.scale_w
    _, ow, pc = res.hwc
    pitch = pc * res.elem_bytes
    lo, hi = res.rows or (0, res.hwc[0])
    sa = ctx.begin()
    deps = em.free(res.sram, res.nbytes)
    for dy in range(sh):
        iy0, iy1 = -(-(lo - dy) // sh), -(-(hi - dy) // sh)
        if iy1 <= iy0:
            continue
        for dx in range(sw):
            em.load(deps, label(n) + " output phase", dram=xin.addr(iy0 * xin.row),
                    sram=res.box(iy0 * sh + dy, dx, 0, 1, c)["addr"],
                    run_bytes=c * xin.elem_bytes, n1=w, n2=iy1 - iy0,
                    dram_stride1=xin.pitch, dram_stride2=xin.row,
                    sram_stride1=sw * pitch, sram_stride2=sh * ow * pitch)
            info.tiles += 1
    ctx.end(sa)
    info.sram_peak_bytes = ctx.base
    info.plan = (f"{info.tiles} strided loads into the SRAM band (rows {lo}..{hi - 1}), "
                 f"each input pixel loaded {sh}x{sw} times (nearest repeat, DMA only)")


def lower_resize(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit resize op ``n``; fill ``info``. A map whose input row does not fit the SRAM
    budget twice is moved in channel groups (:func:`group_channels`): pixels are repeated
    per channel, so a group is an independent resize of a channel slice.

    Raises:
        ScheduleError: not even one input row of one channel fits the op's SRAM budget twice.
    """
    mem = ctx.mem
    res = mem.resident(n.output)
    if res is not None:
        lower_resize_resident(ctx, n, info, res)
        return
    xin, xout = mem.tensor(n.inputs[0]), mem.tensor(n.output)
    h, w, c = xin.hwc
    sh, sw = n.attrs.scale_h, n.attrs.scale_w
    cc = group_channels(ctx, xin)
    rows = band_rows(ctx, n, xin, 0xFFFF, "resize", channels=cc)

    def stores(y0, nrows, buf, c0=0, c1=c):
        return (phase_store(xout, y0, nrows, dy, dx, w, sh, sw, buf, c0, c1)
                for dy in range(sh) for dx in range(sw))

    store_bands(ctx, n, info, xin, rows, stores, "resize", channels=None if cc == c else cc,
                scale=sh)
    groups = "" if cc == c else f" in {-(-c // cc)} channel groups of {cc}"
    info.plan = (f"{info.tiles} bands of {rows} rows{groups}, each stored {sh}x{sw} times "
                 "(nearest repeat, DMA only)")
