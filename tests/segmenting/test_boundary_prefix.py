"""frontend/host_prefix.py + runtime/segmented.py: the moves at the start of a host graph
(SSDLite's Transpose -> Reshape -> Concat of its head maps) are made by the boundary
conversion, a gather from the NPU outputs' integers; values equal running the moves on the
dequantized tensors in ONNX Runtime, bit for bit."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler.emit.segments import host_graph_cost
from tcc_compiler.frontend.host_prefix import PREFIX_KEY, movement_prefix, split_prefix
from tcc_compiler.runtime.segmented import _Gather
from tcc_compiler.target.host import load_host_model

SHAPES = {"a": [1, 12, 4, 4], "b": [1, 12, 2, 2]}


def _ssd_like() -> onnx.ModelProto:
    nodes = []
    for x in SHAPES:
        nodes += [h.make_node("Transpose", [x], [x + "t"], perm=[0, 2, 3, 1], name=x + "t"),
                  h.make_node("Reshape", [x + "t", "shp"], [x + "r"], name=x + "r")]
    nodes += [h.make_node("Concat", ["ar", "br"], ["cat"], axis=1, name="cat"),
              h.make_node("Softmax", ["cat"], ["y"], axis=-1, name="sm"),
              h.make_node("Relu", ["a"], ["z"], name="relu")]   # 'a' read twice: not moved
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(x, T.FLOAT, s)
                                  for x, s in SHAPES.items()],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 60, 4]),
                      h.make_tensor_value_info("z", T.FLOAT, SHAPES["a"])],
                     [nh.from_array(np.array([1, -1, 4], np.int64), "shp")])
    return onnx.shape_inference.infer_shapes(
        h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def test_prefix_is_gathered_and_dequantized_into_place():
    m = _ssd_like()
    out = movement_prefix(m, set(SHAPES))
    onnx.checker.check_model(out, full_check=True)
    # 'a' has 2 readers: its moves, and the Concat reading them, stay host nodes
    assert {p.key: p.value for p in out.metadata_props}[PREFIX_KEY] == "2"
    assert [n.name for n in out.graph.node[:2]] == ["bt", "br"]
    pre, rest = split_prefix(out)
    assert [o.name for o in pre.graph.output] == ["br"]
    rng = np.random.default_rng(0)
    recs, ints, floats = {}, {}, {}
    for x, s in SHAPES.items():   # per-channel scales (int32 accumulators), zero points
        sc, zp = rng.uniform(1e-3, 1e-2, s[1]), rng.integers(-3, 3, s[1])
        recs[x] = {"shape": s, "scale": sc.tolist(), "zero_point": zp.tolist()}
        ints[x] = rng.integers(-5000, 5000, s).astype(np.int32)
        floats[x] = ((ints[x] - zp.reshape(1, -1, 1, 1)) * sc.reshape(1, -1, 1, 1)).astype(
            np.float32)
    got = _Gather(pre, recs, "test").run(ints)
    feeds = {**got, "a": floats["a"]}
    rest_sess = ort.InferenceSession(rest.SerializeToString(), providers=["CPUExecutionProvider"])
    whole = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for a, b in zip(whole.run(None, floats), rest_sess.run(None, feeds)):
        assert np.array_equal(a, b)
    host = load_host_model()   # the prefix costs no host pass: the boundaries write it
    assert host_graph_cost(out, host)["ops"] == {"Transpose": 1, "Reshape": 1, "Concat": 1,
                                                 "Softmax": 1, "Relu": 1}


def test_no_prefix_leaves_the_graph_alone():
    m = _ssd_like()
    out = movement_prefix(m, set())   # no NPU output among the inputs
    assert PREFIX_KEY not in {p.key for p in out.metadata_props}
    assert split_prefix(out) == (None, out)
