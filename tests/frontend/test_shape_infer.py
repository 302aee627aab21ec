"""frontend/shape_infer.py: the same result as onnx's shape inference, weights lent out."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import shape_infer


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 8, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [w, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_same_as_onnx_and_input_unchanged():
    m = _model()
    before = m.SerializeToString()
    assert len(m.graph.initializer[0].raw_data) >= shape_infer.LEND_BYTES   # it is lent out
    want = onnx.shape_inference.infer_shapes(m, strict_mode=False)
    got = shape_infer.infer_shapes(m)
    assert got.SerializeToString() == want.SerializeToString()
    assert m.SerializeToString() == before
    dims = [d.dim_value for d in got.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 32 * 6 * 6]      # the Reshape read its int64 shape


def test_inference_error_passes_through(monkeypatch):
    m = _model()
    before = m.SerializeToString()
    seen = []

    def boom(proto, strict_mode=False):
        seen.append(proto.graph.initializer[0].raw_data)   # the weights are not sent
        raise RuntimeError("inference failed")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", boom)
    with pytest.raises(RuntimeError, match="inference failed"):
        shape_infer.infer_shapes(m)
    assert seen == [b""]
    assert m.SerializeToString() == before


def test_into_the_model_gives_the_same_bytes():
    m = _model()
    want = onnx.shape_inference.infer_shapes(m, strict_mode=False).SerializeToString()
    same = onnx.ModelProto()
    same.CopyFrom(m)
    assert shape_infer.infer_shapes_into(same) is same      # written in place, no copy
    assert same.SerializeToString() == want


def test_into_falls_back_when_inference_changes_more(monkeypatch):
    """Inference that touches a field besides value_info/input/output: infer_shapes's copy."""
    m = _model()
    real = onnx.shape_inference.infer_shapes

    def renaming(model, strict_mode=False):
        out = real(model, strict_mode=strict_mode)
        out.graph.name = "renamed"
        return out

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", renaming)
    got = shape_infer.infer_shapes_into(m)
    assert got is not m and got.graph.name == "renamed" and m.graph.name == "g"


def test_light_copy_keeps_everything_but_the_weight_data():
    """The validity checks' copy (onnx_import.prepare_onnx's ``original``): the large float
    initializers keep name, type and dims, not their data; everything else is as given."""
    m = _model()
    light = shape_infer.light_copy(m)
    w, shape = light.graph.initializer
    assert (w.name, w.data_type, list(w.dims)) == ("w", TensorProto.FLOAT, [32, 8, 3, 3])
    assert not w.HasField("raw_data") and len(m.graph.initializer[0].raw_data) == 32 * 72 * 4
    assert shape == m.graph.initializer[1]                 # small tensors are kept whole
    assert light.graph.node == m.graph.node and light.opset_import == m.opset_import
