"""frontend/host_int8.py: a host graph takes NPU outputs as int8, moves them in int8 and
dequantizes where arithmetic (or the output) needs float32; the float results equal the
float32 hand-off's in ONNX Runtime."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler.frontend.host_int8 import int8_handoff

#: float32-representable scales, so the two dequantizations are the same product
_Q = {"a": (0.0390625, -3), "b": (0.015625, 5), "c": (0.0078125, -128)}


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs],
                     list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(m)


def _i64(name, v):
    return nh.from_array(np.array(v, np.int64), name)


def _run_both(m, m2, kept, quant, seed=0):
    """(outputs of ``m`` fed dequantized floats, outputs of ``m2`` fed the int8 values)."""
    rng = np.random.default_rng(seed)
    f1, f2 = {}, {}
    for vi in m.graph.input:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        q = rng.integers(-128, 128, dims).astype(np.int8)
        s, z = quant[vi.name]
        f1[vi.name] = ((q.astype(np.float64) - z) * s).astype(np.float32)
        f2[vi.name] = q if vi.name in kept else f1[vi.name]
    run = [ort.InferenceSession(x.SerializeToString(), providers=["CPUExecutionProvider"])
           for x in (m, m2)]
    return run[0].run(None, f1), run[1].run(None, f2)


def _check(m, quant=None):
    quant = quant or {k: v for k, v in _Q.items() if k in {i.name for i in m.graph.input}}
    m2, kept = int8_handoff(m, quant)
    onnx.checker.check_model(m2, full_check=True)
    want, got = _run_both(m, m2, kept, quant)
    for a, b in zip(want, got):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    return m2, kept


def test_yolov5_style_movement_runs_in_int8_and_arithmetic_in_float():
    """Reshape -> Transpose -> Split: int8; the Mul on one piece and the Concat read floats."""
    nodes = [h.make_node("Reshape", ["a", "shp"], ["r"]),
             h.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 4, 2]),
             h.make_node("Split", ["t", "sp"], ["xy", "rest"], axis=4),
             h.make_node("Mul", ["xy", "two"], ["xy2"]),
             h.make_node("Concat", ["xy2", "rest"], ["y"], axis=4)]
    m = _model(nodes, [("a", [1, 12, 4, 5])], [("y", [1, 2, 4, 5, 6])],
               [_i64("shp", [1, 2, 6, 4, 5]), _i64("sp", [2, 4]),
                nh.from_array(np.array(2.0, np.float32), "two")])
    m2, kept = _check(m)
    assert kept == ["a"] and m2.graph.input[0].type.tensor_type.elem_type == T.INT8
    types = {vi.name: vi.type.tensor_type.elem_type for vi in m2.graph.value_info}
    for n in m2.graph.node:
        if n.op_type in ("Transpose", "Split"):
            assert all(types[o] == T.INT8 for o in n.output), n
    assert Counter(n.op_type for n in m2.graph.node)["DequantizeLinear"] == 2


def test_concat_of_differently_scaled_inputs_dequantizes_per_axis():
    """SSDLite / YOLOv8 heads: several NPU maps, each its own scale, concatenated: one int8
    Concat and one per-axis DequantizeLinear; it then sinks through Reshape and Transpose."""
    nodes = [h.make_node("Transpose", [x], [x + "t"], perm=[0, 2, 3, 1]) for x in "abc"]
    nodes += [h.make_node("Reshape", [x + "t", x + "s"], [x + "r"]) for x in "abc"]
    nodes += [h.make_node("Concat", ["ar", "br", "cr"], ["cat"], axis=1),
              h.make_node("Reshape", ["cat", "s4"], ["cat4"]),
              h.make_node("Transpose", ["cat4"], ["tt"], perm=[0, 2, 1, 3]),
              h.make_node("Softmax", ["tt"], ["y"], axis=1)]
    shapes = {"a": [1, 6, 4, 4], "b": [1, 6, 2, 2], "c": [1, 6, 1, 1]}
    inits = [_i64(x + "s", [1, -1, 3]) for x in "abc"] + [_i64("s4", [1, 42, 3, 1])]
    m = _model(nodes, list(shapes.items()), [("y", [1, 3, 42, 1])], inits)
    m2, kept = _check(m)
    assert sorted(kept) == ["a", "b", "c"]
    dqs = [n for n in m2.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 1 and dqs[0].output == ["tt"]   # right before the Softmax
    axis = next(a.i for a in dqs[0].attribute if a.name == "axis")
    assert axis == 2   # the concat axis (1), moved by the Reshape (kept) and Transpose (-> 2)


def test_equal_scales_concat_keeps_one_scale():
    nodes = [h.make_node("Concat", ["a", "b"], ["c"], axis=1),
             h.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("a", [1, 2, 3, 3]), ("b", [1, 4, 3, 3])], [("y", [1, 6, 3, 3])])
    m2, kept = _check(m, {"a": _Q["a"], "b": _Q["a"]})
    dq = next(n for n in m2.graph.node if n.op_type == "DequantizeLinear")
    assert sorted(kept) == ["a", "b"] and not any(a.name == "axis" for a in dq.attribute)


@pytest.mark.parametrize("nodes", [
    [h.make_node("Relu", ["a"], ["y"])],                                  # arithmetic first
    [h.make_node("Reshape", ["a", "shp"], ["r"]), h.make_node("Relu", ["r"], ["y"])],  # view
    [h.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),             # a second, float
     h.make_node("Relu", ["a"], ["u"]),                                     # reader
     h.make_node("Transpose", ["u"], ["u2"], perm=[0, 2, 3, 1]),
     h.make_node("Add", ["t", "u2"], ["y"])],
])
def test_no_gain_keeps_the_float_input(nodes):
    out = [("y", [1, 4, 4, 2] if len(nodes) > 2 else [1, 32])] if len(nodes) != 1 else \
        [("y", [1, 2, 4, 4])]
    m = _model(nodes, [("a", [1, 2, 4, 4])], out, [_i64("shp", [1, 32])])
    m2, kept = int8_handoff(m, {"a": _Q["a"]})
    assert kept == [] and m2.graph.input[0].type.tensor_type.elem_type == T.FLOAT
    assert [n.op_type for n in m2.graph.node] == [n.op_type for n in m.graph.node]


def test_old_opset_and_unlisted_inputs_are_left_alone():
    nodes = [h.make_node("Transpose", ["a"], ["y"], perm=[0, 2, 3, 1])]
    m = _model(nodes, [("a", [1, 2, 4, 4])], [("y", [1, 4, 4, 2])], opset=11)
    assert int8_handoff(m, {"a": _Q["a"]})[1] == []
    m = _model(nodes, [("a", [1, 2, 4, 4])], [("y", [1, 4, 4, 2])])
    assert int8_handoff(m, {})[1] == []
    m2, kept = _check(m)   # a moved graph output is dequantized at the end
    assert kept == ["a"] and m2.graph.node[-1].op_type == "DequantizeLinear"
