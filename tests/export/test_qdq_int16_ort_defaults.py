"""A QDQ export with int16 values (opset 21) loads in ONNX Runtime at its default session
options (graph optimizations on) and gives what a session with every optimization off gives.

It used not to load when an int8 value went through a data-movement op (a channel slice of
YOLOv8's C2f Split, a reshape) into anything but a QuantizeLinear: ONNX Runtime 1.32's
QDQPropagationTransformer inserts a Q/DQ pair after the op, its Q with ``output_dtype`` INT8
(opset 21), then QDQS8ToU8Transformer makes that pair's zero point uint8 and the session fails
("output_dtype INT8 does not match y_zero_point type UINT8"; yolov8n 64x64 with
``--precision auto``: node ``/model.2/Split_slice__110_q``). The export now writes those pairs
itself (``QdqBuilder.settle_views``), with no ``output_dtype``.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.export.qdq import OPSET_INT16, export_qdq

N = helper.make_node
HW = 8


def split_net() -> onnx.ModelProto:
    """conv-relu (8 ch) -> Split 4+4 -> conv-relu on one half -> Concat -> channel shuffle
    -> 1x1 conv-relu -> GAP -> FC: int8 channel slices read by a conv and a concat."""
    r = np.random.default_rng(0)
    inits = {"w1": r.normal(0, .4, (8, 3, 3, 3)), "b1": r.normal(0, .2, 8),
             "w2": r.normal(0, .3, (4, 4, 3, 3)), "b2": r.normal(0, .1, 4),
             "w3": r.normal(0, .3, (8, 8, 1, 1)), "b3": r.normal(0, .1, 8),
             "fw": r.normal(0, .3, (10, 8)), "fb": r.normal(0, .1, 10)}
    ints = {"split": [4, 4], "s5": [1, 2, 4, HW, HW], "s4": [1, 8, HW, HW]}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             N("Relu", ["c1"], ["r1"]),
             N("Split", ["r1", "split"], ["a", "b"], axis=1, name="split"),
             N("Conv", ["b", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
             N("Relu", ["c2"], ["r2"]),
             N("Concat", ["a", "r2"], ["cat"], axis=1, name="cat"),
             N("Reshape", ["cat", "s5"], ["g5"]),
             N("Transpose", ["g5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             N("Reshape", ["t5", "s4"], ["sh"]),
             N("Conv", ["sh", "w3", "b3"], ["c3"], name="conv3"), N("Relu", ["c3"], ["r3"]),
             N("GlobalAveragePool", ["r3"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(
        nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in ints.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _session(model: onnx.ModelProto, optimize: bool) -> ort.InferenceSession:
    """A CPU session at ONNX Runtime's default options, or with every optimization off."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _default_equals_unoptimized(model: onnx.ModelProto, seeds=range(4)) -> None:
    on, off = _session(model, True), _session(model, False)
    for seed in seeds:
        feeds = {i.name: np.random.default_rng(seed).normal(0, 1, i.shape).astype(np.float32)
                 for i in off.get_inputs()}
        for a, b in zip(on.run(None, feeds), off.run(None, feeds)):
            np.testing.assert_array_equal(a, b)


def test_int16_export_with_int8_slices_loads_at_default_options():
    m = api.compile(split_net(), f"{HW}x{HW}x3", precision=["conv3"])
    dtypes = {n.name: n.output.dtype for n in m.quantized_graph.nodes}
    assert dtypes["conv3"] == "int16" and dtypes["split"] == dtypes["split_1"] == "int8"
    qdq = export_qdq(m.quantized_graph)
    assert qdq.opset_import[0].version == OPSET_INT16
    # no Q the export writes carries output_dtype (the attribute ONNX Runtime's own pairs had)
    assert not any(a.name == "output_dtype" for n in qdq.graph.node for a in n.attribute)
    _default_equals_unoptimized(qdq)   # used to raise at the session's creation


def test_int8_export_keeps_its_nodes():
    # the pairs are an opset-21 matter: an all-int8 export (opset 17) is written as before
    m = api.compile(split_net(), f"{HW}x{HW}x3")
    qdq = export_qdq(m.quantized_graph)
    assert qdq.opset_import[0].version != OPSET_INT16
    slices = {n.output[0] for n in qdq.graph.node if n.op_type == "Slice"}
    assert slices and not any(n.op_type == "QuantizeLinear" and n.input[0] in slices
                              for n in qdq.graph.node)
    _default_equals_unoptimized(qdq, seeds=range(2))


@pytest.mark.slow   # a zoo YOLOv8n compile with precision auto
def test_yolov8n_precision_auto_export_loads_at_default_options(tmp_path):
    from tcc_compiler import zoo
    from tcc_compiler.export.qdq import save_qdq

    model = tmp_path / "y8.onnx"
    onnx.save(zoo.build("yolov8n", 64, 64), model)
    out = api.compile(model, "64x64x3", precision="auto").save(tmp_path / "out")
    path = save_qdq(out / "npu_0", tmp_path / "npu_0_qdq.onnx")
    qdq = onnx.load(str(path))
    assert qdq.opset_import[0].version == OPSET_INT16
    _default_equals_unoptimized(qdq, seeds=range(2))
