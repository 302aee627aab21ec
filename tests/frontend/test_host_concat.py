"""frontend/host_concat.py: YOLOv5's per-scale last-axis joins and the concat across scales
are reordered exactly (ONNX Runtime gives the same output, bit for bit)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler.frontend.host_concat import hoist_concats


def _i64(name, v):
    return nh.from_array(np.array(v, np.int64), name)


def _head(widths=((2, 4), (2, 4)), keep_last=True, outer_axis=1, sizes=(4, 2)):
    """Per scale s: Concat(a_s, b_s, axis=-1) [1, 3, H, W, 6] -> Reshape [1, 3HW, 6]; then
    Concat over scales along ``outer_axis``."""
    nodes, inputs, inits, outs = [], [], [], []
    for s, (hw, (wa, wb)) in enumerate(zip(sizes, widths)):
        a, b = f"a{s}", f"b{s}"
        inputs += [h.make_tensor_value_info(a, T.FLOAT, [1, 3, hw, hw, wa]),
                   h.make_tensor_value_info(b, T.FLOAT, [1, 3, hw, hw, wb])]
        nodes.append(h.make_node("Concat", [a, b], [f"k{s}"], axis=-1))
        shape = [1, 3 * hw * hw, wa + wb] if keep_last else [1, 3 * hw * hw * (wa + wb), 1]
        inits.append(_i64(f"s{s}", shape))
        nodes.append(h.make_node("Reshape", [f"k{s}", f"s{s}"], [f"r{s}"]))
        outs.append(f"r{s}")
    nodes.append(h.make_node("Concat", outs, ["y"], axis=outer_axis))
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", T.FLOAT, None)],
                     inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(m)


def _run(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def test_joins_after_concatenating_each_piece_across_scales():
    m = _head()
    out, n = hoist_concats(m)
    assert n == 1
    onnx.checker.check_model(out, full_check=True)
    ops = [x.op_type for x in out.graph.node]
    assert ops.count("Concat") == 3 and ops[-1] == "Concat"   # 2 pieces + the final join
    last = out.graph.node[-1]
    assert last.output == ["y"] and next(a.i for a in last.attribute if a.name == "axis") == 2
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
             .astype(np.float32) for i in m.graph.input}
    assert np.array_equal(_run(out, feeds), _run(m, feeds))


@pytest.mark.parametrize("kwargs", [
    {"widths": ((2, 4), (3, 3))},    # pieces of other widths at another scale
    {"keep_last": False},            # the Reshape changes the last dim
    {"outer_axis": 2, "sizes": (4, 4)},   # the outer Concat joins along the last axis
])
def test_left_alone(kwargs):
    assert hoist_concats(_head(**kwargs))[1] == 0
