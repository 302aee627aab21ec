"""Channel shuffle (IR op ``shuffle``, ShuffleNet's Reshape-Transpose-Reshape) as pure data
movement: bands of input rows are loaded into SRAM (packed [rows, W, C], double-buffered), and
each band is stored once per group ``i`` with a strided DMA_STORE whose runs are single
channels: SRAM channels ``[i * C/g, (i + 1) * C/g)`` of every pixel go to output channels
``i, g + i, 2g + i, ...`` (:func:`tcc_compiler.numerics.channel_shuffle_order`). No compute
command (input and output share their quantization, so the bytes are the result). Its cost is
the transfers' (schedule/cost.py, dma_cycles), counted by the replay like any other command's.
Operands stay in DRAM (schedule/views.py keeps them out of the SRAM resident zone)."""

from __future__ import annotations

from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.ops.bands import band_rows, store_bands
from tcc_compiler.schedule.ops.context import OpContext
from tcc_compiler.schedule.program import LayerInfo, Tensor

#: n2 (outer DMA loop count) is a u16 field: pixels per group store
_MAX_PIXELS = 0xFFFF


def group_store(out: Tensor, y0: int, rows: int, i: int, groups: int, sram: int) -> dict:
    """DMA_STORE fields writing group ``i`` (channels ``[i * C/g, (i + 1) * C/g)``) of a packed
    SRAM band [rows, W, C] that starts at input row ``y0`` to output channels ``j * g + i``."""
    _, w, c = out.hwc
    eb = out.elem_bytes
    cg = c // groups
    return dict(dram=out.addr(y0 * out.row + i * eb), sram=sram + i * cg * eb, run_bytes=eb,
                n1=cg, n2=rows * w, dram_stride1=groups * eb, dram_stride2=out.pitch,
                sram_stride1=eb, sram_stride2=c * eb)


def lower_shuffle(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit shuffle op ``n``; fill ``info``.

    Raises:
        ScheduleError: not even one input row fits the op's SRAM budget twice.
    """
    mem = ctx.mem
    xin, xout = mem.tensor(n.inputs[0]), mem.tensor(n.output)
    h, w, c = xin.hwc
    g = n.attrs.groups
    # one store covers whole rows only when output rows are evenly spaced pixels
    per_row = xout.row != w * xout.pitch
    cap = 1 if per_row else max(1, _MAX_PIXELS // w)
    rows = band_rows(ctx, n, xin, cap, "shuffle", fits=w <= _MAX_PIXELS)
    store_bands(ctx, n, info, xin, rows,
                lambda y0, nrows, buf: (group_store(xout, y0, nrows, i, g, buf)
                                        for i in range(g)), "shuffle")
    info.plan = (f"{info.tiles} bands of {rows} rows, each stored as {g} channel groups "
                 "(channel shuffle, DMA only)")
