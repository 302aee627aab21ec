"""frontend/host_graph.py: a Softmax over an axis with >= 2 trailing dims runs flattened."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tcc_compiler.frontend.host_graph import flatten_softmax_tails


def _softmax(shape, axis, opset=17) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=axis)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run(m, x):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("axis", [1, -3, 0])
def test_flattened_softmax_equals_the_original(axis):
    m = _softmax([2, 16, 4, 30], axis)
    out, n = flatten_softmax_tails(m)
    assert n == 1
    onnx.checker.check_model(out, full_check=True)
    assert [x.op_type for x in out.graph.node] == ["Reshape", "Softmax", "Reshape"]
    x = np.random.default_rng(0).standard_normal((2, 16, 4, 30)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(m, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,axis,opset", [([1, 16, 30], 1, 17), ([1, 4, 16, 30], -1, 17),
                                              ([1, 16, 4, 30], 1, 11)])
def test_left_alone(shape, axis, opset):
    """One trailing dim or none: already the fast path; opset < 13: 2-D semantics."""
    assert flatten_softmax_tails(_softmax(shape, axis, opset))[1] == 0
