"""Element-wise ops (add, LUT, EW) chunk a tensor into double-buffered SRAM buffers, each
rounded up to the SRAM alignment: the chunk size must count that rounding. A YOLO bottleneck
(Conv-SiLU, Conv-SiLU, residual Add) at 160x160x16 used to overflow the SRAM by 256 bytes in
the Add (an internal error, exit 1) because 6 buffers of 349,520 bytes round up to 349,568."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.tiling import align_up, plan_channels


def test_aligned_buffers_fit_the_budget():
    budget = 2 * 1024 * 1024
    for n_bufs in (1, 2, 3):
        for total in (10**6, 5 * 10**6, 409_600):
            blk = plan_channels(n_bufs, total, budget, align=64)
            assert 2 * n_bufs * align_up(blk, 64) <= budget
            assert blk == total or 2 * n_bufs * (blk + 64) > budget   # not needlessly small
    # where the unaligned block already fits, the aligned planner keeps it (same programs)
    assert plan_channels(2, 10**6, budget, align=64) == plan_channels(2, 10**6, budget)


def _bottleneck(c: int = 16, hw: int = 160) -> onnx.ModelProto:
    """Conv3x3-SiLU, Conv3x3-SiLU, + input: ultralytics' Bottleneck as exported (x*Sigmoid(x))."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(2):
        w = helper.make_tensor(f"w{i}", TensorProto.FLOAT, [c, c, 3, 3],
                               (rng.standard_normal((c, c, 3, 3)) * 0.1).ravel().tolist())
        b = helper.make_tensor(f"b{i}", TensorProto.FLOAT, [c], np.zeros(c).tolist())
        inits += [w, b]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Sigmoid", [f"c{i}"], [f"s{i}"]),
                  helper.make_node("Mul", [f"c{i}", f"s{i}"], [f"m{i}"])]
        x = f"m{i}"
    nodes.append(helper.make_node("Add", ["x", x], ["y"]))
    g = helper.make_graph(nodes, "bottleneck",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_yolo_bottleneck_at_160_compiles_and_runs_bit_exact(tmp_path):
    model = tmp_path / "b.onnx"
    onnx.save(_bottleneck(), model)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 16, 160, 160)).astype(np.float32)
    m = api.compile(model, "160x160x16", calibration=[x])
    assert m.report["sram_peak_bytes"] <= 2 * 1024 * 1024
    prog = load_program(m.save(tmp_path / "out"))
    assert Checker(prog, model).check(x, prog.run(x))["bit_exact"]
