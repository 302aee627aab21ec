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
    pre, rest, joins = split_prefix(out)
    assert [o.name for o in pre.graph.output] == ["br"] and joins == []
    rng = np.random.default_rng(0)
    recs, ints, floats = {}, {}, {}
    for x, s in SHAPES.items():   # per-channel scales (int32 accumulators), zero points
        sc, zp = rng.uniform(1e-3, 1e-2, s[1]), rng.integers(-3, 3, s[1])
        recs[x] = {"shape": s, "scale": sc.tolist(), "zero_point": zp.tolist()}
        ints[x] = rng.integers(-5000, 5000, s).astype(np.int32)
        floats[x] = ((ints[x] - zp.reshape(1, -1, 1, 1)) * sc.reshape(1, -1, 1, 1)).astype(
            np.float32)
    gather = _Gather(pre, recs, "test")
    got = gather.run(ints, list(gather.index))
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
    assert split_prefix(out) == (None, out, [])


def test_join_gets_its_prefix_input_written_in_place():
    """YOLOv5/v8's last Concat: one input computed on the host (a Relu of 'b'), one moved
    from 'a' by the prefix; the runtime gathers the moved one straight into the output."""

    from tcc_compiler.runtime.segmented import SegmentedProgram, _host_session

    nodes = [h.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 3, 1], name="at"),
             h.make_node("Reshape", ["at", "s16"], ["ar"], name="ar"),
             h.make_node("Relu", ["b"], ["br0"], name="relu"),
             h.make_node("Reshape", ["br0", "s16b"], ["br"], name="brr"),
             h.make_node("Concat", ["br", "ar"], ["y"], axis=2, name="join")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("a", T.FLOAT, [1, 8, 4, 4]),
                                  h.make_tensor_value_info("b", T.FLOAT, [1, 2, 4, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 16, 10])],
                     [nh.from_array(np.array([1, 16, 8], np.int64), "s16"),
                      nh.from_array(np.array([1, 16, 2], np.int64), "s16b")])
    m = onnx.shape_inference.infer_shapes(h.make_model(g, opset_imports=[
        h.make_opsetid("", 17)]))
    out = movement_prefix(m, {"a"})
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta[PREFIX_KEY] == "2" and meta["tccc.boundary_join_nodes"] == "1"
    assert out.graph.node[-1].name == "join"
    sess, pre, joins = _host_session(out.SerializeToString(), ort.SessionOptions(), "h.onnx")
    rng = np.random.default_rng(1)
    rec = {"a": {"shape": [1, 8, 4, 4], "scale": [0.05], "zero_point": [3]}}
    q = rng.integers(-128, 128, (1, 8, 4, 4)).astype(np.int8)
    b = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    prog = SegmentedProgram.__new__(SegmentedProgram)
    prog.sessions, prog.joins, prog.int8_inputs = {0: sess}, {0: joins}, {0: set()}
    prog.prefixes = {0: _Gather(pre, rec, "test")}
    got = SegmentedProgram._run_host(prog, 0, {"b": b}, {"a": q})["y"]
    a = ((q.astype(np.float64) - 3) * 0.05).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"a": a, "b": b})[0]
    assert np.array_equal(got, want)
    host = load_host_model()   # the join copies only the computed input (16x2 floats)
    cost = host_graph_cost(out, host)
    assert cost["ops"] == {"Relu": 1, "Reshape": 1, "Concat": 1}
    assert cost["bytes"] == 2 * 4 * 32 + 2 * 4 * 32   # the Relu, the copy into the join


def test_concat_reading_a_graph_input_is_no_join():
    """Concat(moved 'a', input 'b') making the output: 'b' is neither gathered nor made by
    the graph's middle, so the Concat stays an ordinary host node."""
    nodes = [h.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 3, 1], name="at"),
             h.make_node("Concat", ["at", "b"], ["y"], axis=3, name="cat")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("a", T.FLOAT, [1, 2, 4, 4]),
                                  h.make_tensor_value_info("b", T.FLOAT, [1, 4, 4, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 4, 5])])
    m = onnx.shape_inference.infer_shapes(h.make_model(g, opset_imports=[
        h.make_opsetid("", 17)]))
    out = movement_prefix(m, {"a", "b"})
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta[PREFIX_KEY] == "1" and "tccc.boundary_join_nodes" not in meta
    pre, rest, joins = split_prefix(out)
    assert joins == [] and [n.name for n in rest.graph.node] == ["cat"]
