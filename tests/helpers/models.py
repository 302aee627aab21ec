"""Small ONNX models built by more than one test folder (beyond ``conftest``'s builders)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def gap_net(cin: int, softmax: bool, seed: int = 0) -> onnx.ModelProto:
    """1 x cin x 32 x 32 -> Conv 3x3 (8 channels, pad 1) -> Relu -> GAP (1024 values, whose
    sums are 1/1024 LSB apart: no safe tie offset) -> Flatten -> Gemm 10 [-> Softmax]."""
    r = np.random.default_rng(seed)
    inits = {"w": r.normal(0, 0.3, (8, cin, 3, 3)), "b": r.normal(0, 0.1, 8),
             "fw": r.normal(0, 0.3, (10, 8)), "fb": r.normal(0, 0.1, 10)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["z" if softmax else "y"], transB=1)]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    g = helper.make_graph(
        nodes, "gapnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def conv_relu_chain(cin: int, hw: int, layers, name: str) -> onnx.ModelProto:
    """x[1, cin, hw, hw] NCHW float32 -> one Conv (+ bias, "same" pads ``k // 2``) + Relu per
    ``(cout, k, group)`` of ``layers``, named conv<i> / relu<i>; seeded weights scaled by
    1 / sqrt(fan-in) (a head's or a depthwise block's shape); opset 13."""
    r = np.random.default_rng(0)
    inits, nodes, cur, c = [], [], "x", cin
    for i, (cout, k, grp) in enumerate(layers):
        wt = (r.standard_normal((cout, c // grp, k, k))
              / np.sqrt(k * k * c / grp)).astype(np.float32)
        b = (r.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=[k, k], pads=[k // 2] * 4, group=grp,
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        cur, c = f"r{i}", cout
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, c, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
