"""Nearest-neighbour upsampling by integer factors (IR op ``resize``) as pure data movement:
bands of input rows are loaded into SRAM (double-buffered), and each band is stored
``scale_h * scale_w`` times, once per output phase (dy, dx), with a strided DMA_STORE whose
runs are single pixels: output pixel (y0 * sh + dy + i * sh, dx + j * sw) <- input pixel
(y0 + i, j). No compute command (input and output share their quantization, so the bytes are
the result). Its cost is the transfers' (schedule/cost.py, dma_cycles: setup plus bytes at the
DRAM bandwidth), counted by the replay like any other command's. Operands stay in DRAM
(schedule/views.py keeps them out of the SRAM resident zone and of cascades)."""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.emitter import dma_fields
from tcc_compiler.schedule.ops.context import OpContext, label
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
    em, mem = ctx.em, ctx.mem
    xin, xout = mem.tensor(n.inputs[0]), mem.tensor(n.output)
    h, w, c = xin.hwc
    sh, sw = n.attrs.scale_h, n.attrs.scale_w
    row_bytes = w * c * xin.elem_bytes
    rows = min(h, 0xFFFF, ctx.budget() // (2 * row_bytes))
    if rows < 1:
        raise ScheduleError(f"resize '{n.name}': one input row ({row_bytes} bytes) twice "
                            f"exceeds the {ctx.budget()} bytes of SRAM left")
    lab = label(n)
    sa = ctx.begin()
    bufs = [sa.alloc(rows * row_bytes, "resize band") for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    last_store: dict[int, object] = {}
    for i, y0 in enumerate(range(0, h, rows)):
        y1 = min(h, y0 + rows)
        slot = i % 2
        buf = bufs[slot]
        ld = em.load([last_store.get(slot)] + em.free(buf, rows * row_bytes), lab + " input",
                     **dma_fields(xin, y0, y1, 0, w, 0, c, buf))
        for dy in range(sh):
            for dx in range(sw):
                last_store[slot] = em.store([ld], lab + " output",
                                            **phase_store(xout, y0, y1 - y0, dy, dx, w, sh, sw,
                                                          buf))
        info.tiles += 1
    ctx.end(sa)
    info.plan = (f"{info.tiles} bands of {rows} rows, each stored {sh}x{sw} times "
                 "(nearest repeat, DMA only)")
