"""Boundaries of the scheduling stage: the planners' cycle terms are the replayed commands'
cycles (one cost model), and the memory plan handed to emission is frozen."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tcc_compiler.frontend import import_onnx
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_IMAGE, WAIT_NONE
from tcc_compiler.isa.wcodec import Block
from tcc_compiler.quant import collect_ranges, quantize_graph
from tcc_compiler.schedule.cascade import tile_cycles
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.schedule.prefetch import block_cycles
from tcc_compiler.schedule.tiling import ConvGeom, uses_image_mode
from tcc_compiler.target import load_target

W = dict(wait_load=WAIT_NONE, wait_compute=WAIT_NONE, wait_store=WAIT_NONE)


def _replayed(cmds) -> int:
    """Cycles of the last command of ``cmds`` when replayed alone after its CFG."""
    s, e = replay(cmds, load_target())[-1]
    return e - s


@pytest.mark.parametrize("g", [
    ConvGeom(20, 20, 3, 18, 18, 64, 3, 3, 1, 1, 1, 1, (0, 0, 0, 0), 1),      # image mode
    ConvGeom(14, 14, 96, 14, 14, 96, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 1),     # plain
    ConvGeom(14, 14, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 4),     # grouped
], ids=["image", "plain", "grouped"])
def test_band_tile_cycles_equal_replayed_conv_tile(g):
    """cascade.tile_cycles of a full-width band tile is what the replay charges for the
    CONV_TILE the cascade emits for it."""
    t = load_target()
    image = uses_image_mode(g, t)
    cfg = C.ConvCfg(kh=g.kh, kw=g.kw, sh=g.sh, sw=g.sw, dh=g.dh, dw=g.dw, out_mode=0,
                    flags=CONV_FLAG_IMAGE if image else 0, group=g.group, cin_g=g.cin_g,
                    zp_in=0, zp_out=0, zp_sc=0, act_lo=-128, act_hi=127, **W)
    rows = 5
    iy0, iy1, pt, pb = g.in_rows(0, rows)
    tile = C.ConvTile(in_sram=0, w_sram=0, p_sram=0, out_sram=0, sc_sram=0, in_h=iy1 - iy0,
                      in_w=g.w, in_c=g.c, oc=g.o, out_h=rows, out_w=g.ow, pad_t=pt,
                      pad_l=g.pads[1], pad_b=pb, pad_r=g.pads[3], **W)
    assert tile_cycles(g, rows, t) == _replayed([cfg, tile])


def test_pool_band_tile_cycles_equal_replayed_pool_tile():
    t = load_target()
    g = ConvGeom(16, 16, 32, 8, 8, 32, 2, 2, 2, 2, 1, 1, (0, 0, 0, 0), 32, has_weights=False)
    cfg = C.PoolCfg(kind=0, kh=2, kw=2, sh=2, sw=2, zp_in=0, zp_out=0, shift=0, mult=1, **W)
    tile = C.PoolTile(in_sram=0, out_sram=0, in_h=6, in_w=16, c=32, out_h=3, out_w=8,
                      pad_t=0, pad_l=0, pad_b=0, pad_r=0, **W)
    assert tile_cycles(g, 3, t) == _replayed([cfg, tile])


@pytest.mark.parametrize("compressed", [False, True])
def test_prefetch_block_cycles_equal_replayed_load(compressed):
    """The prefetch's budget for a block is the replayed cycles of the load it emits."""
    raw, stored = 9216, 5000 if compressed else 9216
    b = Block(0, stored, raw, compressed, 0, 64)
    if compressed:
        cmd = C.DmaLoadZ(dram=0, sram=0, src_bytes=stored, dst_bytes=raw, **W)
    else:
        cmd = C.DmaLoad(dram=0, sram=0, run_bytes=raw, n1=1, n2=1, dram_stride1=0,
                        dram_stride2=0, sram_stride1=0, sram_stride2=0, **W)
    assert block_cycles(b, load_target()) == _replayed([cmd])


def test_memory_plan_is_frozen(residual_net, run_pipeline):
    g = run_pipeline(import_onnx(residual_net(seed=1, hw=16, c=8)))
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    quantize_graph(g, collect_ranges(g, [x]))
    t = load_target()
    mem = plan_memory(g, t, 64 * 1024, cascade=True)
    assert mem.tensor(g.inputs[0]) is not None and mem.res
    with pytest.raises(dataclasses.FrozenInstanceError):
        mem.zone_used = 0
    with pytest.raises(TypeError):
        mem.tensors[0] = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        mem.tensor(g.inputs[0]).offset = 1
