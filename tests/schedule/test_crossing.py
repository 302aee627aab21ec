"""Activations crossing a cut of the layer order (schedule/crossing.py), charged by the
SRAM-capacity bound: the elements later layers read of tensors written before the cut."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.schedule.crossing import crossing_bytes, touched
from tcc_compiler.target import load_target


def test_touched_rows_of_strided_windows():
    assert touched(4, 8, 1, 2, 1, 0) == 4     # 1x1 stride 2: every other row
    assert touched(4, 8, 3, 2, 1, 1) == 8     # 3x3 stride 2 pad 1: rows -1..7, all 8
    assert touched(8, 8, 3, 1, 1, 1) == 8
    assert touched(2, 8, 3, 1, 2, 0) == 6     # dilation 2: rows 0, 2, 4 and 1, 3, 5


def _net():
    """x[1,4,8,8] -> a = Conv3x3 s1 p1 (8 ch); b = Conv1x1 s2 (a); y = Conv3x3 s2 p1 (a) + b
    (the Add fused into the last conv as its shortcut)."""
    r = np.random.default_rng(0)
    ws, ns = [], []
    for name, x, cin, k, s, p in (("a", "x", 4, 3, 1, 1), ("b", "a", 8, 1, 2, 0),
                                  ("c", "a", 8, 3, 2, 1)):
        w = (r.standard_normal((8, cin, k, k)) * 0.1).astype(np.float32)
        ws.append(numpy_helper.from_array(w, name + "_w"))
        ns.append(helper.make_node("Conv", [x, name + "_w"], [name], kernel_shape=[k, k],
                                   strides=[s, s], pads=[p] * 4, name=name))
    ns.append(helper.make_node("Add", ["b", "c"], ["y"], name="add"))
    g = helper.make_graph(
        ns, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], ws)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return PassManager(default_pipeline()).run(import_onnx(model))


def test_crossing_bytes_hand_computed():
    """Cut 0: the input, all 8x8x4 read by the 3x3 conv. Cut 1: ``a`` (8x8x8): the 1x1
    stride-2 conv reads 4x4 of its pixels, the 3x3 stride-2 pad-1 conv all 64: 512. Cut 2:
    ``a`` (512) and ``b`` (4x4x8, read whole as the last conv's shortcut): 640."""
    g = _net()
    names = [n.name for n in g.nodes]
    assert names == ["a", "b", "c"] and g.nodes[2].input(3) is not None
    assert crossing_bytes(g, names, load_target(None)) == [256, 512, 640]
    # a layer the graph does not name reads nothing; its tensors are not counted
    assert crossing_bytes(g, ["a", "copy", "b", "c"], load_target(None)) == [256, 512, 512,
                                                                              640]
