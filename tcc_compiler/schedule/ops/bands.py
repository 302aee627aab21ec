"""Pure data movement in row bands, shared by the DMA-only ops (resize, shuffle): the input is
loaded band by band into two SRAM buffers (double buffering: a band's load waits for the
stores of the band that used its buffer before) and every band is written out by the
DMA_STOREs its op asks for."""

from __future__ import annotations

from typing import Callable, Iterable

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.emitter import dma_fields
from tcc_compiler.schedule.ops.context import OpContext, label
from tcc_compiler.schedule.program import LayerInfo, Tensor


def band_rows(ctx: OpContext, n: Node, xin: Tensor, cap: int, what: str,
              fits: bool = True, channels: int | None = None) -> int:
    """Input rows per band of a DMA-only op: as many as two bands' buffers take in the op's
    SRAM budget, at most ``cap`` and the input's height. ``channels``: the channels of one band
    (a channel group, default all C).

    Raises:
        ScheduleError: not even one row fits twice, or ``fits`` is False (the op's own limit);
            the message names ``what`` and the node.
    """
    h, w, c = xin.hwc
    row_bytes = w * (c if channels is None else channels) * xin.elem_bytes
    rows = min(h, cap, ctx.budget() // (2 * row_bytes))
    if rows < 1 or not fits:
        raise ScheduleError(f"{what} '{n.name}': one input row ({row_bytes} bytes) twice "
                            f"exceeds the {ctx.budget()} bytes of SRAM left")
    return rows


def group_channels(ctx: OpContext, xin: Tensor) -> int:
    """Channels per group of a per-channel DMA-only op (nearest resize): all C when one input
    row fits the SRAM budget twice, else ceil(C / 2**k) for the smallest k that fits (1 at
    least; :func:`band_rows` then refuses a one-channel row that does not fit)."""
    h, w, c = xin.hwc
    cc = c
    while cc > 1 and 2 * w * cc * xin.elem_bytes > ctx.budget():
        cc = -(-cc // 2)
    return cc


def store_bands(ctx: OpContext, n: Node, info: LayerInfo, xin: Tensor, rows: int,
                stores: Callable[..., Iterable[dict]], what: str,
                channels: int | None = None, scale: int = 1) -> None:
    """Load ``xin`` ([H, W, C] in DRAM) in bands of ``rows`` input rows, packed [rows, W, C]
    in SRAM, and store each band with the DMA_STORE field sets ``stores(y0, band_rows,
    sram_addr)`` yields, in order; fill ``info`` (tiles = bands, SRAM peak, bytes). ``what``
    names the buffers (``"resize"`` -> ``"resize band"``). With ``channels`` (< C) the bands
    are of channel groups [rows, W, channels] (the last group narrower), group after group,
    and ``stores`` is called as ``stores(y0, band_rows, sram_addr, c0, c1)``. With
    ``ctx.rows`` (a core's share of the op's output rows, each output row ``scale`` times an
    input row: ``ctx.rows`` are multiples of ``scale``) only the bands of those input rows,
    last first with ``ctx.reverse``. The caller checked that two bands fit the op's SRAM
    budget."""
    em = ctx.em
    h, w, c = xin.hwc
    cc = c if channels is None else channels
    band_bytes = rows * w * cc * xin.elem_bytes
    lab = label(n)
    sa = ctx.begin()
    bufs = [sa.alloc(band_bytes, f"{what} band") for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_store: dict[int, object] = {}
    lo, hi = (0, h) if ctx.rows is None else (ctx.rows[0] // scale, ctx.rows[1] // scale)
    ys = list(range(lo, hi, rows))
    bands = [(c0, y0) for c0 in range(0, c, cc) for y0 in (ys[::-1] if ctx.reverse else ys)]
    for k, (c0, y0) in enumerate(bands):
        y1, c1 = min(hi, y0 + rows), min(c, c0 + cc)
        slot = k % 2
        buf = bufs[slot]
        ld = em.load([last_store.get(slot)] + em.free(buf, band_bytes), lab + " input",
                     **dma_fields(xin, y0, y1, 0, w, c0, c1, buf))
        args = (y0, y1 - y0, buf) if cc == c else (y0, y1 - y0, buf, c0, c1)
        for fields in stores(*args):
            last_store[slot] = em.store([ld], lab + " output", **fields)
        info.tiles += 1
    ctx.end(sa)
