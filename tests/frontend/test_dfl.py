"""frontend/dfl.py: YOLOv8's DFL decode (levels joined, Reshape, Transpose, Softmax, fixed
1x1 conv, Reshape) is rewritten per level, exactly, and then runs on the NPU: a group softmax
and a grouped conv per level, bit-exact against the golden model and close to ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.frontend.dfl import split_dfl
from tcc_compiler.runtime.check import Checker, sqnr_db

BINS = 16
HW = 16


def dfl_model(opset: int = 17, bias: bool = False, extra_reader: bool = False,
              tail: bool = True) -> onnx.ModelProto:
    """x [1,3,16,16] -> two levels (conv stride 2 to [1,8,8,8] + Relu, then 1x1 to 64 box
    logits; a second stride 2 for [1,64,4,4]) -> ultralytics' DFL decode -> distances
    [1, 4, 80] -> Mul 2 (the host's part). ``extra_reader``: the Softmax output is also a
    graph output (the rewrite must decline). ``tail=False``: no Mul, the distances ``d`` are
    the graph output."""
    rng = np.random.default_rng(5)
    f32 = np.float32
    inits = {"w0": rng.normal(0, 0.4, (8, 3, 3, 3)).astype(f32),
             "w1": rng.normal(0, 0.4, (8, 8, 3, 3)).astype(f32),
             "h0": rng.normal(0, 0.5, (64, 8, 1, 1)).astype(f32),
             "h1": rng.normal(0, 0.5, (64, 8, 1, 1)).astype(f32),
             "s3": np.array([1, 64, -1], np.int64), "s4": np.array([1, 4, BINS, 80], np.int64),
             "so": np.array([1, 4, 80], np.int64),
             "wd": np.arange(BINS, dtype=f32).reshape(1, BINS, 1, 1), "two": np.array(2, f32)}
    n = helper.make_node
    conv_in = ["sm", "wd"] + (["bd"] if bias else [])
    if bias:
        inits["bd"] = np.array([0.25], f32)
    nodes = [n("Conv", ["x", "w0"], ["a0"], pads=[1] * 4, strides=[2, 2]),
             n("Relu", ["a0"], ["r0"]),
             n("Conv", ["r0", "w1"], ["a1"], pads=[1] * 4, strides=[2, 2]),
             n("Relu", ["a1"], ["r1"]),
             n("Conv", ["r0", "h0"], ["y0"]), n("Conv", ["r1", "h1"], ["y1"]),
             n("Reshape", ["y0", "s3"], ["b0"]), n("Reshape", ["y1", "s3"], ["b1"]),
             n("Concat", ["b0", "b1"], ["box"], axis=-1),
             n("Reshape", ["box", "s4"], ["r4"]),
             n("Transpose", ["r4"], ["t"], perm=[0, 2, 1, 3]),
             n("Softmax", ["t"], ["sm"], axis=1, name="/dfl/Softmax"),
             n("Conv", conv_in, ["e"], name="/dfl/conv/Conv"),
             n("Reshape", ["e", "so"], ["d"])] + ([n("Mul", ["d", "two"], ["y"])] if tail else [])
    outs = [helper.make_tensor_value_info("y" if tail else "d", TensorProto.FLOAT, [1, 4, 80])]
    if extra_reader:
        outs.append(helper.make_tensor_value_info("sm", TensorProto.FLOAT, [1, BINS, 4, 80]))
    g = helper.make_graph(nodes, "dfl", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, HW, HW])], outs,
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, HW, HW)).astype(np.float32)


def _run(m: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})


@pytest.mark.parametrize("bias", [False, True])
def test_dfl_is_split_per_level_and_matches_onnx_runtime(bias):
    m = dfl_model(bias=bias)
    out, n = split_dfl(m)
    assert n == 1
    onnx.checker.check_model(out, full_check=True)
    ops = [nd.op_type for nd in out.graph.node]
    assert ops.count("Softmax") == 2 and "Transpose" not in ops
    soft = [nd for nd in out.graph.node if nd.op_type == "Softmax"]
    assert [nd.name for nd in soft] == ["/dfl/level0/Softmax", "/dfl/level1/Softmax"]
    assert all(helper.get_attribute_value(nd.attribute[0]) == 2 for nd in soft)
    convs = [nd for nd in out.graph.node if nd.name.endswith("conv/Conv")]
    assert [helper.get_attribute_value(a) for nd in convs for a in nd.attribute
            if a.name == "group"] == [4, 4]
    assert "wd" not in {t.name for t in out.graph.initializer}   # the old weight is gone
    for s in (0, 1):
        np.testing.assert_allclose(_run(out, _x(s))[0], _run(m, _x(s))[0], rtol=1e-5,
                                   atol=1e-5)
    assert len(m.graph.node) == 15   # the input model is not changed


@pytest.mark.parametrize("case", ["opset12", "extra_reader", "not_arange_shape",
                                  "regrouping_reshape"])
def test_dfl_rewrite_declines(case):
    if case == "opset12":   # Softmax(axis=1) flattens [16, 4, A] there: another function
        m = dfl_model(opset=12)
    elif case == "extra_reader":
        m = dfl_model(extra_reader=True)
    elif case == "regrouping_reshape":   # [1, 64, 80] -> [1, 8, 16, 40]: bins mix anchors
        m = dfl_model()
        for t in m.graph.initializer:
            if t.name in ("s4", "so"):
                t.CopyFrom(numpy_helper.from_array(np.array(
                    [1, 8, BINS, 40] if t.name == "s4" else [1, 8, 40], np.int64), t.name))
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, 8, 40]))
        del m.graph.value_info[:]
        m = onnx.shape_inference.infer_shapes(m)
    else:   # a [1, 16, 1, 1] conv weight of another shape: no expectation over the bins
        m = dfl_model()
        w = next(t for t in m.graph.initializer if t.name == "wd")
        w.CopyFrom(numpy_helper.from_array(np.ones((1, BINS, 1, 1), np.float32).reshape(
            2, 8, 1, 1), "wd"))
    out, n = split_dfl(m)
    assert n == 0 and len(out.graph.node) == len(m.graph.node)


def test_dfl_runs_on_the_npu_bit_exact(tmp_path):
    """Compiled (segmented: the final Reshape/Concat/Mul run on the host), both levels' group
    softmax and expectation conv are NPU layers, the boundary carries the [1, 4, H, W]
    distances (no 64-channel box map), and ``run`` is bit-exact and close to ONNX Runtime."""
    m = dfl_model()
    path, folder = tmp_path / "dfl.onnx", tmp_path / "out"
    onnx.save(m, path)
    tc.compile(path, calibration=[_x(s) for s in range(10, 18)]).save(folder)
    report = json.loads((folder / "report.json").read_text())
    ops = [lay["op"] for lay in report["layers"]]
    assert ops.count("group_softmax") == 2
    crossing = [b["shape"] for b in report["boundaries"] if b["kind"] == "dequantize"]
    assert crossing and all(s[1] == 4 for s in crossing)
    prog = tc.load(folder).program
    checker = Checker(prog, path)
    for s in (1, 2):
        x = _x(s)
        res = prog.run(x)
        assert checker.check(x, res)["bit_exact"]
        assert sqnr_db(_run(m, x)[0], prog.final_output(res)) >= 30.0


def test_dfl_as_the_graph_output_runs(tmp_path):
    """The distances are the graph output: the host graph is then only the levels' Reshapes
    (its boundary prefix) and their Concat (a join), nothing left for ONNX Runtime; loading
    and running it must not fail (it did: an ONNX Runtime session of an empty graph)."""
    m = dfl_model(tail=False)
    path, folder = tmp_path / "dfl.onnx", tmp_path / "out"
    onnx.save(m, path)
    tc.compile(path, calibration=[_x(s) for s in range(10, 14)]).save(folder)
    prog = tc.load(folder).program
    x = _x(1)
    res = prog.run(x)
    assert Checker(prog, path).check(x, res)["bit_exact"]
    assert sqnr_db(_run(m, x)[0], prog.final_output(res)) >= 30.0
