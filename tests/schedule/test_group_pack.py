"""Grouped convs on the MAC array (schedule/cost.groups_per_pass): a grouped conv off the
depthwise datapath runs several of its groups per array pass from compact weights (no zero
padding in the weight file); exact (bit-exact executor vs golden), faster than one group per
pass, and reported with its real MACs."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.cost import conv_pixel_cycles, groups_per_pass
from tcc_compiler.target import load_target


@pytest.mark.parametrize("group,cin_g,og,expected", [
    (24, 16, 16, 2),     # RegNetX group width 16: 2 x 16 input lanes of 32
    (768, 1, 1, 32),     # a 7x7 depthwise on the array: 32 channels per pass
    (3, 16, 16, 2),      # 2 per pass; the last pass runs one group
    (4, 32, 32, 1),      # already fills the 32 input lanes
    (1, 64, 64, 1),
    (8, 8, 16, 4),       # limited by the 64 output lanes
    (5, 1, 1, 5),        # fewer groups than lanes: all in one pass
])
def test_groups_per_pass_fills_the_array_without_overflowing_it(group, cin_g, og, expected):
    t = load_target()
    p = groups_per_pass(group, cin_g, og, t)
    assert p == expected
    if p > 1:
        assert p * cin_g <= t.array_in_channels and p * og <= t.array_out_channels


@pytest.mark.parametrize("group,cin_g,og,passes", [(24, 16, 16, 12), (3, 16, 16, 2),
                                                    (768, 1, 1, 24), (1, 64, 128, 4)])
def test_conv_cycles_count_passes_not_groups(group, cin_g, og, passes):
    t = load_target()
    # 3x3 kernel: 9 taps per pass; (1, 64, 128): 2 input x 2 output lane blocks
    assert conv_pixel_cycles(3, 3, group * og, cin_g, group, False, t) == 9 * passes


def _grouped_model(c: int, group: int, k: int) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((c, c // group, k, k)).astype(np.float32) * 0.3
    b = rng.standard_normal(c).astype(np.float32) * 0.1
    w1 = rng.standard_normal((c, c, 1, 1)).astype(np.float32) * 0.2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, kernel_shape=[k, k],
                              pads=[k // 2] * 4),
             helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["z"], kernel_shape=[1, 1])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (w1, "w1"))]
    g = helper.make_graph(nodes, "grouped",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 12, 12])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, c, 12, 12])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("c,group,k", [(64, 4, 3), (64, 64, 7)])
def test_packed_grouped_conv_is_bit_exact_and_counts_useful_macs(tmp_path, c, group, k):
    model = _grouped_model(c, group, k)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, c, 12, 12)).astype(np.float32) for _ in range(2)]
    t = load_target()
    if group == c:   # a depthwise 7x7 runs on the depthwise datapath as kernel parts
        t = dataclasses.replace(t, depthwise_mode=False)   # here: on the array, packed
    m = api.compile(path, f"12x12x{c}", calibration=calib, target=t)
    prog = load_program(m.save(tmp_path / "out"))
    x = rng.standard_normal((1, c, 12, 12)).astype(np.float32)
    r = Checker(prog, path).check(x, prog.run(x))
    assert r["bit_exact"] and r["sqnr_db"] > 25
    layer = m.report["layers"][0]
    assert layer["macs"] == 12 * 12 * c * k * k * (c // group)
    p = groups_per_pass(group, c // group, c // group, t)
    assert p > 1
    # the MAC array's cycles: group / p passes, one tap per cycle
    assert layer["estimated_cycles"] >= 12 * 12 * k * k * (group // p)
    assert layer["estimated_cycles"] < 12 * 12 * k * k * group   # one group per pass
    # the weight file holds the compact weights: no block-diagonal zeros
    assert layer["weight_raw_bytes"] == c * k * k * (c // group) + c * 16
