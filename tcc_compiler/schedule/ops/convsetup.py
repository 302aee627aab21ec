"""A conv/FC's constants and set-up, shared by its lowerings (schedule/ops/conv.py, the
cascade's conv parts in schedule/ops/cascade.py, the two-core split in schedule/cores.py) and by
the prefetcher (schedule/prefetch.py): its weights and parameter records added to the WEIGHTS
region in merged blocks, its CONV_CFG fields, and :class:`Prefetched`, a consumer planned ahead
of its prefetch window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.spec import (CONV_FLAG_DEPTHWISE, CONV_FLAG_IMAGE, CONV_FLAG_SHORTCUT,
                                   CONV_FLAG_WIDE_SHIFT, CONV_FLAG_WIDE_W, OUT_MODE_TWO_SLOPE,
                                   pack_conv_params)
from tcc_compiler.isa.wcodec import LayerKind
from tcc_compiler.isa.wlayout import LayerBlobs, WeightLayoutBuilder
from tcc_compiler.quant.golden import weights_ohwi
from tcc_compiler.quant.params import conv_quant
from tcc_compiler.schedule.cost import depthwise_parts
from tcc_compiler.schedule.ops.dwsplit import part_weights
from tcc_compiler.schedule.program import LayerInfo
from tcc_compiler.schedule.tiling import (ConvGeom, ConvPlan, depthwise_split, uses_depthwise_mode,
                                          uses_image_mode)
from tcc_compiler.target import Target


def conv_consts(n: Node, memo: dict | None = None) -> tuple:
    """(ConvQuant, int8 OHWI weight bytes (int16 little-endian for int16 weights), packed
    parameter records) of conv/FC ``n``: pure
    functions of its constants, kept in ``memo`` (id(node) -> value; one dict per schedule
    search, whose graph does not change) so the search's repeated lowerings derive them once.
    """
    got = memo.get(("consts", id(n))) if memo is not None else None
    if got is None:
        q = conv_quant(n)
        wq = weights_ohwi(n) if n.op is Op.CONV else np.ascontiguousarray(
            n.inputs[1].const.transpose(0, 2, 3, 1))
        # (little-endian bytes: no copy before tobytes's own for int8 or a little-endian host)
        got = (q, wq.astype(wq.dtype.newbyteorder("<"), copy=False).tobytes(),
               pack_conv_params(q.bias, q.mult, q.shift, q.sc_mult, q.clamp_lo, q.clamp_hi))
        if memo is not None:
            memo[("consts", id(n))] = got
    return got


def layer_bytes(n: Node, g: ConvGeom, t: Target, block_channels: int,
                memo: dict | None = None) -> tuple[LayerKind, bytes, bytes]:
    """(layer kind, weight bytes, packed parameter records) :func:`conv_setup` adds to the
    WEIGHTS region for conv/FC ``n`` in blocks of ``block_channels`` output channels: its
    :func:`conv_consts`, a depthwise conv cut into kernel parts with each block's weights laid
    out part after part (schedule/ops/dwsplit.py; kind ``DW_SPLIT``, kept in ``memo`` per
    node and blocking like :func:`conv_consts`, so the search's lowerings hand the compressor's
    memo the same bytes object). Also what schedule/precompress.py compresses ahead, so the
    two agree."""
    _, wbytes, params = conv_consts(n, memo)
    kind = LayerKind.FC if n.op is Op.FC else LayerKind.CONV
    if depthwise_split(g, t):   # each block's weights part after part (ops/dwsplit.py)
        kind = LayerKind.DW_SPLIT
        key = ("part-weights", id(n), block_channels)
        got = memo.get(key) if memo is not None else None
        if got is None:
            got = part_weights(np.frombuffer(wbytes, np.int8).reshape(g.o, g.kh, g.kw, 1),
                               depthwise_parts(g.kh, g.kw, t), block_channels)
            if memo is not None:
                memo[key] = got
        wbytes = got
    return kind, wbytes, params


def conv_setup(weights: WeightLayoutBuilder, t: Target, n: Node, g: ConvGeom,
               block_channels: int, info: LayerInfo,
               memo: dict | None = None) -> tuple[LayerBlobs, dict]:
    """Add a conv/FC's weights and parameters to the WEIGHTS region in merged blocks of
    ``block_channels`` output channels (one DMA each brings a block's weights and its
    parameter records, :func:`~tcc_compiler.isa.wlayout.merge_blocks`; ``info.weight_bytes``
    gets their stored DRAM bytes) and build its CONV_CFG fields (``memo``: see
    :func:`conv_consts`; the fields and the bytes laid out are kept there per node, geometry
    and blocking). Returns (blobs, cfg fields: a new dict)."""
    key = ("setup", id(n), t, g, block_channels)
    got = memo.get(key) if memo is not None else None
    if got is None:   # (a pure function of the node's constants, its geometry and blocking)
        got = _static_setup(n, g, t, block_channels, memo)
        if memo is not None:
            memo[key] = got
    kind, wbytes, params, depthwise, cfg = got
    stored0, raw0 = weights.stored_bytes, weights.raw_bytes
    blobs = weights.add_layer(n.name, kind, wbytes, params, block_channels=block_channels,
                              merged=True)
    info.weight_bytes = sum(bl.stored_bytes for bl in blobs.weight_blocks
                            + blobs.param_blocks)   # DRAM bytes (compressed if so)
    info.weight_raw_bytes = weights.raw_bytes - raw0   # this layer's table entry
    info.weight_file_bytes = weights.stored_bytes - stored0
    info.depthwise = depthwise
    return blobs, dict(cfg)


def _static_setup(n: Node, g: ConvGeom, t: Target, block_channels: int,
                  memo: dict | None) -> tuple:
    """(layer kind, weight bytes, parameter records, depthwise mode, CONV_CFG fields) of
    :func:`conv_setup`: what does not depend on the WEIGHTS region built so far."""
    q = conv_consts(n, memo)[0]
    kind, wbytes, params = layer_bytes(n, g, t, block_channels, memo)
    image = uses_image_mode(g, t)
    depthwise = uses_depthwise_mode(g, t)
    cfg = dict(kh=g.kh, kw=g.kw, sh=g.sh, sw=g.sw, dh=g.dh, dw=g.dw,
               out_mode=(1 if q.out_int32 else 0)
               | (OUT_MODE_TWO_SLOPE if q.two_slope else 0),
               flags=(CONV_FLAG_SHORTCUT if g.has_shortcut else 0)
               | (CONV_FLAG_IMAGE if image else 0)
               | (CONV_FLAG_DEPTHWISE if depthwise else 0)
               | q.wide << CONV_FLAG_WIDE_SHIFT
               | (CONV_FLAG_WIDE_W if q.wide_w else 0),
               group=g.group, cin_g=g.cin_g, zp_in=q.zp_in, zp_out=q.zp_out,
               zp_sc=q.zp_sc, act_lo=q.act_lo, act_hi=q.act_hi)
    return kind, wbytes, params, depthwise, cfg


@dataclass(frozen=True)
class Prefetched:
    """A prefetch consumer planned ahead of its window (schedule/prefetch.py).

    Attributes:
        plan: its tile plan. blobs: its weight blocks. cfg: its CONV_CFG fields.
        weight_bytes, weight_raw_bytes, weight_file_bytes: its :class:`LayerInfo` figures.
        blocks: block index -> (weights SRAM, params SRAM, the load bringing the records)
            of the blocks loaded during the window, into the prefetch area.
    """

    plan: ConvPlan
    blobs: LayerBlobs
    cfg: dict
    weight_bytes: int
    weight_raw_bytes: int
    weight_file_bytes: int
    blocks: dict
