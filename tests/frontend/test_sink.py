"""frontend/sink.py: an activation after pure data movement moves onto its producers."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend.sink import sink_activations


def _head(concat: bool) -> onnx.ModelProto:
    """x [1,3,8,8] -> two 1x1 convs -> Reshape [1,4,64] each -> (Concat on the last axis) ->
    Transpose -> Sigmoid -> y; the first conv has a second reader (``side``), which keeps
    reading the conv's own output."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), n)
             for n in ("w0", "w1")]
    inits.append(numpy_helper.from_array(np.array([1, 4, 64], np.int64), "shape"))
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
             helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Reshape", ["c0", "shape"], ["r0"], name="r0"),
             helper.make_node("Reshape", ["c1", "shape"], ["r1"], name="r1")]
    if concat:
        nodes.append(helper.make_node("Concat", ["r0", "r1"], ["m"], name="cat", axis=2))
        width = 128
    else:
        nodes.append(helper.make_node("Identity", ["r0"], ["m"], name="id"))
        width = 64
    nodes += [helper.make_node("Transpose", ["m"], ["t"], name="tr", perm=[0, 2, 1]),
              helper.make_node("Sigmoid", ["t"], ["y"], name="sig"),
              helper.make_node("Relu", ["c0"], ["side"], name="side")]
    g = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width, 4]),
         helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(m)


def _run(m: onnx.ModelProto) -> list[np.ndarray]:
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_sigmoid_moves_through_transpose_concat_and_reshapes():
    m = _head(concat=True)
    out, n = sink_activations(m)
    assert n == 4   # past the Transpose, the Concat, then each Reshape
    onnx.checker.check_model(out, full_check=True)
    prod = {o: nd for nd in out.graph.node for o in nd.output}
    assert prod["y"].op_type == "Transpose"   # the rest of the graph reads the same name
    sigs = [nd for nd in out.graph.node if nd.op_type == "Sigmoid"]
    assert sorted(nd.input[0] for nd in sigs) == ["c0", "c1"]
    for a, b in zip(_run(m), _run(out)):
        np.testing.assert_array_equal(a, b)   # element-wise ops commute exactly
    assert len(m.graph.node) == 8   # the input model is not changed


def test_a_non_movement_producer_stops_the_move():
    out, n = sink_activations(_head(concat=False))
    # through the Transpose only: Identity is not in MOVE_OPS
    assert n == 1
    prod = {o: nd for nd in out.graph.node for o in nd.output}
    assert prod["y"].op_type == "Transpose" and prod[prod["y"].input[0]].op_type == "Sigmoid"
