"""The tile planner's bound on the tiles of one op (``MAX_OP_TILES``) and the up-front check
that names the op a target's SRAM cannot tile within it: MobileOne-S1 200x136 on a 4 KiB SRAM
used to lower half a million commands per search variant for minutes (a new-user attack)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import run_program_impl
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import collect_ranges, quantize_graph, run_golden
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.bounds import check_op_tiles
from tcc_compiler.schedule.tiling import MAX_OP_TILES, ConvGeom, fewest_tiles, plan_conv
from tcc_compiler.target import load_target
from tests.helpers.two_cores import conv_net

#: conv_net's second conv: 3x3, 128 -> 128 channels on 28x28.
GEOM = ConvGeom(28, 28, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 1)


def _tiles(g: ConvGeom, p) -> int:
    return math.ceil(g.oh / p.rows) * math.ceil(g.ow / p.cols) * math.ceil(g.o / p.ocb)


def test_plan_conv_refuses_more_than_max_op_tiles():
    t = load_target()
    fewest = fewest_tiles(GEOM, t, 4096)
    assert fewest is not None and fewest[0] > MAX_OP_TILES   # shapes fit, all tiny
    with pytest.raises(ScheduleError, match=f"in at most {MAX_OP_TILES} tiles"):
        plan_conv(GEOM, t, 4096)   # returned a plan of ~25,000 tiles before


@pytest.mark.parametrize("budget", [12000, 16384, 65536, 1 << 20])
def test_fewest_tiles_bounds_the_plan(budget):
    """The plan of a budget has at least ``fewest_tiles`` tiles, and at most MAX_OP_TILES."""
    t = load_target()
    n = fewest_tiles(GEOM, t, budget)[0]
    p = plan_conv(GEOM, t, budget)
    assert n <= _tiles(GEOM, p) <= MAX_OP_TILES


def test_check_names_the_op_and_why():
    t = load_target()
    g = import_onnx(conv_net())
    check_op_tiles(g, t.with_sram(1 << 20))   # fits: nothing raised
    with pytest.raises(ScheduleError) as info:
        check_op_tiles(g, t.with_sram(4096))
    msg = str(info.value)
    assert msg.startswith("layer '") and "in 4,096 bytes of SRAM" in msg
    assert f"more than the {MAX_OP_TILES:,} an op may take" in msg and "\n" not in msg


def _tail_net() -> onnx.ModelProto:
    """1x3x2x2 -> Conv 3x3 (32) -> Relu -> Conv 1x1 (128) -> Relu -> GAP -> FC 100: a
    MobileNetV2-like tail whose FC needs most of a small SRAM for one tile."""
    r = np.random.default_rng(0)
    inits = {"w0": r.normal(0, .3, (32, 3, 3, 3)), "w": r.normal(0, .3, (128, 32, 1, 1)),
             "fw": r.normal(0, .1, (100, 128)), "fb": r.normal(0, .1, 100)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]), helper.make_node("Conv", ["r0", "w"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    g = helper.make_graph(
        nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_a_zone_too_big_for_one_op_is_skipped_not_fatal(run_pipeline):
    """A resident-zone candidate whose estimate finds no tile for some op (the zone leaves too
    little SRAM above it) is skipped like one whose memory plan fails: it aborted the whole
    search, so MobileNetV2 64x64 was refused on 4 and 8 KiB SRAMs ('no tile fits 3072 bytes
    ... use a target with more SRAM', naming no layer) although the zone-free plan fits."""
    g = run_pipeline(import_onnx(_tail_net()))
    xs = [np.random.default_rng(i).standard_normal((1, 3, 2, 2)).astype(np.float32)
          for i in range(3)]
    quantize_graph(g, collect_ranges(g, xs[:2]))
    prog = lower(g, load_target().with_sram(1024))   # raised ScheduleError before
    got, hazards = run_program_impl(prog, 1024, g, xs[2])
    assert hazards == []
    gold = run_golden(g, xs[2])
    for name, arr in got.items():
        np.testing.assert_array_equal(arr, gold["int:" + name].reshape(-1), err_msg=name)
