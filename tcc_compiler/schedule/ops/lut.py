"""Lookup-table activation on the vector unit: the table(s) loaded once from the WEIGHTS
region, then flat chunks of the tensor (contiguous in DRAM and SRAM), double-buffered, one
LUT_TILE each (resident tensors read/written in place)."""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.isa.wcodec import LayerKind
from tcc_compiler.quant.params import group_softmax_table, lut_quant
from tcc_compiler.schedule.emitter import chunk_fields, pixel_chunk
from tcc_compiler.schedule.geom import hwc, hwc_c
from tcc_compiler.schedule.ops.context import OpContext, chunk_cap, flat_chunks, label
from tcc_compiler.schedule.program import SLOT_PARAMS, LayerInfo
from tcc_compiler.schedule.tiling import plan_channels


def _tables(n: Node) -> tuple[bytes, int, int]:
    """(table bytes, tables T, softmax group or 0) of a lut or group_softmax op: T x 256
    int8 entries, or one table of 256 u16 little-endian exp entries for a softmax.

    Raises:
        ScheduleError: a group softmax or lut whose input is not int8 (an int16 activation).
    """
    if n.op is Op.GROUP_SOFTMAX:
        if n.inputs[0].dtype != "int8":
            raise ScheduleError(f"group_softmax '{n.name}': the NPU softmax takes int8 input, "
                                f"'{n.inputs[0].name}' is {n.inputs[0].dtype}")
        return group_softmax_table(n).astype("<u2").tobytes(), 1, n.attrs.group
    if n.inputs[0].dtype != "int8":   # only a conv's epilogue interpolates int16 knots
        raise ScheduleError(f"lut '{n.name}': LUT_TILE takes int8 input, '{n.inputs[0].name}' "
                            f"is {n.inputs[0].dtype} (an int16 input runs in its conv's "
                            "epilogue only)")
    tables = lut_quant(n).tables
    return tables.tobytes(), tables.shape[0], 0


def _add_tables(ctx: OpContext, n: Node, info: LayerInfo, data: bytes, t: int):
    """Put the op's tables ``data`` into the WEIGHTS region (a LayerKind.LUT layer: weights
    blob = the tables, params = ``t`` reserved zero records); return its one block."""
    raw0, stored0 = ctx.weights.raw_bytes, ctx.weights.stored_bytes
    blobs = ctx.weights.add_layer(n.name, LayerKind.LUT, data,
                                  bytes(PARAM_RECORD_BYTES * t), block_channels=t)
    info.weight_bytes = sum(b.stored_bytes for b in blobs.weight_blocks)
    info.weight_raw_bytes = ctx.weights.raw_bytes - raw0
    info.weight_file_bytes = ctx.weights.stored_bytes - stored0
    return blobs.weight_blocks[0]


def lower_lut(ctx: OpContext, n: Node, info: LayerInfo) -> None:
    """Emit lut op ``n`` (or a group_softmax: LUT_TILE's softmax mode, chunks of whole
    pixels so every channel group lies in one tile): one table load, then per chunk an input
    load, LUT_TILE and store; fill ``info``.

    Raises:
        ScheduleError: the tables and one element per buffer do not fit the op's SRAM budget;
            a softmax over an int16 input.
    """
    em, mem = ctx.em, ctx.mem
    x = n.inputs[0]
    tx, to = mem.tensor(x), mem.tensor(n.output)
    rx, ro = mem.resident(x), mem.resident(n.output)
    total = (tx or rx).nbytes
    channels = x.shape[1] if len(x.shape) >= 2 else 1
    data, t, group = _tables(n)
    block = _add_tables(ctx, n, info, data, t)
    lab = label(n)
    sa = ctx.begin()
    lut_sram = sa.alloc(len(data), "lut tables")
    n_bufs = sum(r is None for r in (rx, ro))
    _, w, c = hwc(x)
    blk = plan_channels(max(n_bufs, 1), chunk_cap(ctx, total, w * c), ctx.budget() - sa.top,
                        align=ctx.t.sram_align_bytes)
    if (t > 1 or group) and blk < total:   # whole pixels per chunk: ch0 = 0, whole groups
        blk = max(channels, blk // channels * channels)
    blk = pixel_chunk(blk, (tx, to), hwc_c(x))
    sl = [[sa.alloc(blk, "lut") if r is None else -1 for r in (rx, ro)] for _ in range(2)]
    info.sram_peak_bytes = sa.top + ctx.base
    tab = em.load_block(em.free(lut_sram, len(data)), lab + " tables", SLOT_PARAMS,
                        block, lut_sram)
    last_read, last_store = {}, {}
    for i, (e0, e1) in enumerate(flat_chunks(ctx, total, blk, w * c)):
        slot = i % 2
        si, so = sl[slot]
        deps = [tab]
        if rx is None:
            deps.append(em.load([last_read.get(slot)] + em.free(si, blk), lab + " input",
                                **chunk_fields(tx, e0, e1, si)))
        else:
            si = rx.at(e0)
        if ro is None:
            deps += [last_store.get(slot)] + em.free(so, blk)
        else:
            deps += em.free(ro.sram, ro.nbytes)
            so = ro.at(e0)
        comp = em.emit(C.LutTile, deps, lab, in_sram=si, out_sram=so, lut_sram=lut_sram,
                       n=e1 - e0, tables=t, ch0=e0 % t, group=group)
        last_read[slot] = comp
        if ro is None:
            last_store[slot] = em.store([comp], lab + " output",
                                        **chunk_fields(to, e0, e1, so))
        info.tiles += 1
    ctx.end(sa)
    info.plan = f"{info.tiles} chunks of {blk} elements, " + (
        f"softmax over groups of {group}" if group else f"{t} table(s)")
