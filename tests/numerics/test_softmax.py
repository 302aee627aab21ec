"""numerics/softmax.py (the NPU's integer softmax over runs of int8 elements) against float
softmax, and LUT_TILE's softmax mode on the executor: the same bytes, bad fields refused."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.binfmt import LayerKind, WeightFileBuilder, read_cmd_file, read_weight_file
from tcc_compiler.binfmt import write_cmd_file
from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.codec import decode_commands, encode_commands
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.numerics.softmax import (OUT_SCALE, OUT_ZERO_POINT, softmax_int8,
                                           softmax_table)
from tcc_compiler.sim import Executor
from tcc_compiler.target import load_target


def _float_softmax(q: np.ndarray, g: int, s: float) -> np.ndarray:
    x = q.reshape(-1, g).astype(np.float64) * s
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(q.shape)


@pytest.mark.parametrize("g,s", [(16, 0.08), (16, 0.01), (4, 0.3), (64, 0.05)])
def test_softmax_int8_is_float_softmax_within_one_step(g, s):
    q = np.random.default_rng(g).integers(-128, 128, (50, 3, 4 * g), dtype=np.int8)
    y = softmax_int8(q, g, softmax_table(s))
    p = (y.astype(np.float64) - OUT_ZERO_POINT) * OUT_SCALE
    assert np.abs(p - _float_softmax(q, g, s)).max() <= 1.01 * OUT_SCALE
    assert y.dtype == np.int8 and y.shape == q.shape


def test_softmax_int8_extremes():
    t = softmax_table(0.1)
    assert t[0] == 1 << 15 and t.dtype == np.uint16 and np.all(np.diff(t.astype(int)) <= 0)
    one_hot = np.array([127] + [-128] * 15, np.int8)   # exp(-25.5) is 0 in the table
    assert softmax_int8(one_hot, 16, t).tolist() == [127] + [-128] * 15
    flat = np.full(16, 5, np.int8)   # 1/16 = 16/256 exactly
    assert softmax_int8(flat, 16, t).tolist() == [16 + OUT_ZERO_POINT] * 16


def test_softmax_int8_refuses_bad_arguments():
    with pytest.raises(ValueError, match="multiple"):
        softmax_int8(np.zeros(10, np.int8), 16, softmax_table(0.1))
    with pytest.raises(ValueError, match="2\\*\\*15"):
        softmax_int8(np.zeros(16, np.int8), 16, np.zeros(256, np.uint16))
    with pytest.raises(ValueError, match="positive"):
        softmax_table(0.0)


def test_lut_tile_group_field_round_trips_and_defaults_to_zero():
    cmds = [C.LutTile(in_sram=0, out_sram=64, lut_sram=128, n=32, tables=1, ch0=0, group=16),
            C.LutTile(in_sram=0, out_sram=64, lut_sram=128, n=32, tables=2, ch0=1)]
    back = decode_commands(encode_commands(cmds + [C.End()]))[:-1]
    assert [c.group for c in back] == [16, 0] and back == cmds


SRAM = 1 << 14


def _run(tile: C.LutTile, x: np.ndarray, table: np.ndarray) -> bytes:
    """LOAD the input to SRAM 0 and the table (a WEIGHTS block) to ``tile.lut_sram``, run
    ``tile``, STORE its output."""
    wfb = WeightFileBuilder()
    blobs = wfb.add_layer("t", LayerKind.LUT, table.astype("<u2").tobytes(), bytes(16),
                          block_channels=1)
    blk = blobs.weight_blocks[0]
    assert not blk.compressed
    cmds = [C.DmaLoad(dram_address(Region.INPUT, 0), 0, x.size, 1, 1, 0, 0, 0, 0),
            C.DmaLoad(dram_address(Region.WEIGHTS, blk.offset), tile.lut_sram, 512, 1, 1, 0, 0,
                      0, 0),
            tile,
            C.DmaStore(dram_address(Region.OUTPUT, 0), tile.out_sram, x.size, 1, 1, 0, 0, 0, 0,
                       wait_compute=0),
            C.End()]
    cmd = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=SRAM, act_arena_bytes=0,
                                       input_bytes=x.size, output_bytes=x.size,
                                       tool_version="test"))
    ex = Executor(cmd, read_weight_file(wfb.build("t")), load_target().with_sram(SRAM))
    return ex.run_with_stats(x.tobytes())[0]


def test_executor_softmax_tile_equals_numerics():
    x = np.random.default_rng(0).integers(-128, 128, 256, dtype=np.int8)
    t = softmax_table(0.07)
    tile = C.LutTile(in_sram=0, out_sram=1024, lut_sram=4096, n=256, tables=1, ch0=0,
                     group=16, wait_load=0)
    assert _run(tile, x, t) == softmax_int8(x, 16, t).tobytes()


@pytest.mark.parametrize("over", [{"group": 1}, {"tables": 2}, {"n": 250}])
def test_executor_refuses_bad_softmax_tiles(over):
    x = np.zeros(256, np.int8)
    f = dict(in_sram=0, out_sram=1024, lut_sram=4096, n=256, tables=1, ch0=0, group=16,
             wait_load=0)
    f.update(over)
    with pytest.raises(ExecutionError, match="softmax"):
        _run(C.LutTile(**f), x, softmax_table(0.07))
