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
              fits: bool = True) -> int:
    """Input rows per band of a DMA-only op: as many as two bands' buffers take in the op's
    SRAM budget, at most ``cap`` and the input's height.

    Raises:
        ScheduleError: not even one row fits twice, or ``fits`` is False (the op's own limit);
            the message names ``what`` and the node.
    """
    h, w, c = xin.hwc
    row_bytes = w * c * xin.elem_bytes
    rows = min(h, cap, ctx.budget() // (2 * row_bytes))
    if rows < 1 or not fits:
        raise ScheduleError(f"{what} '{n.name}': one input row ({row_bytes} bytes) twice "
                            f"exceeds the {ctx.budget()} bytes of SRAM left")
    return rows


def store_bands(ctx: OpContext, n: Node, info: LayerInfo, xin: Tensor, rows: int,
                stores: Callable[[int, int, int], Iterable[dict]], what: str) -> None:
    """Load ``xin`` ([H, W, C] in DRAM) in bands of ``rows`` input rows, packed [rows, W, C]
    in SRAM, and store each band with the DMA_STORE field sets ``stores(y0, band_rows,
    sram_addr)`` yields, in order; fill ``info`` (tiles = bands, SRAM peak, bytes). ``what``
    names the buffers (``"resize"`` -> ``"resize band"``). The caller checked that two bands
    fit the op's SRAM budget."""
    em = ctx.em
    h, w, c = xin.hwc
    band_bytes = rows * w * c * xin.elem_bytes
    lab = label(n)
    sa = ctx.begin()
    bufs = [sa.alloc(band_bytes, f"{what} band") for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_store: dict[int, object] = {}
    for k, y0 in enumerate(range(0, h, rows)):
        y1 = min(h, y0 + rows)
        slot = k % 2
        buf = bufs[slot]
        ld = em.load([last_store.get(slot)] + em.free(buf, band_bytes), lab + " input",
                     **dma_fields(xin, y0, y1, 0, w, 0, c, buf))
        for fields in stores(y0, y1 - y0, buf):
            last_store[slot] = em.store([ld], lab + " output", **fields)
        info.tiles += 1
    ctx.end(sa)
