"""Nearest-neighbour upsampling by integer factors (IR op ``resize``) as pure data movement:
bands of input rows are loaded into SRAM (double-buffered), and each band is stored
``scale_h * scale_w`` times, once per output phase (dy, dx), with a strided DMA_STORE whose
runs are single pixels: output pixel (y0 * sh + dy + i * sh, dx + j * sw) <- input pixel
(y0 + i, j). No compute command (input and output share their quantization, so the bytes are
the result). Its cost is the transfers' (schedule/cost.py, dma_cycles: setup plus bytes at the
DRAM bandwidth), counted by the replay like any other command's. Operands stay in DRAM
(schedule/views.py keeps them out of the SRAM resident zone and of cascades)."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.ops.bands import band_rows, store_bands
from tcc_compiler.schedule.ops.context import OpContext
from tcc_compiler.schedule.program import LayerInfo, Tensor


def phase_store(out: Tensor, y0: int, rows: int, dy: int, dx: int, w: int, sh: int, sw: int,
                sram: int) -> dict:
    """DMA_STORE fields writing a packed SRAM band [rows, w, C] to output phase (dy, dx) of
    the ``out`` tensor (upsampled by (sh, sw)), starting at input row ``y0``."""
    _, ow, c = out.hwc
    px = out.pitch
    eb = out.elem_bytes
    return dict(dram=out.addr(((y0 * sh + dy) * ow + dx) * px), sram=sram, run_bytes=c * eb,
                n1=w, n2=rows, dram_stride1=sw * px, dram_stride2=sh * ow * px,
                sram_stride1=c * eb, sram_stride2=w * c * eb)


def lower_resize(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit resize op ``n``; fill ``info``.

    Raises:
        ScheduleError: not even one input row fits the op's SRAM budget twice.
    """
    mem = ctx.mem
    xin, xout = mem.tensor(n.inputs[0]), mem.tensor(n.output)
    h, w, c = xin.hwc
    sh, sw = n.attrs.scale_h, n.attrs.scale_w
    rows = band_rows(ctx, n, xin, 0xFFFF, "resize")
    store_bands(ctx, n, info, xin, rows,
                lambda y0, nrows, buf: (phase_store(xout, y0, nrows, dy, dx, w, sh, sw, buf)
                                        for dy in range(sh) for dx in range(sw)), "resize")
    info.plan = (f"{info.tiles} bands of {rows} rows, each stored {sh}x{sw} times "
                 "(nearest repeat, DMA only)")
