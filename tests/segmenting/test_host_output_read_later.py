"""A host-only op mid-graph whose output is both a graph output and read by a later NPU op.

The legalizer let a Softmax "at the end of the graph" through when its output was a graph
output, even though a Conv read it too: the model compiled as one program, the Conv's input
had no quantization and the compile died with an internal AttributeError (exit 1). Such a
Softmax now runs as a host segment between two NPU segments.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import tcc_compiler as tc
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker, sqnr_db


def _conv(name, x, cin, cout, rng):
    w = nh.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32),
                      name + "_w")
    b = nh.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")
    return h.make_node("Conv", [x, w.name, b.name], [name], name=name, pads=[1] * 4), [w, b]


def _model() -> onnx.ModelProto:
    """x [1,3,16,16] -> Conv 'c1' -> Softmax 'sm' (last axis; a graph output) -> Conv 'c2'
    -> Add(c2, c1) 'o' (a graph output)."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", 3, 8, rng)
    n2, i2 = _conv("c2", "sm", 8, 8, rng)
    g = h.make_graph([n1, h.make_node("Softmax", ["c1"], ["sm"], name="sm", axis=-1), n2,
                      h.make_node("Add", ["c2", "c1"], ["o"], name="add")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("o", T.FLOAT, [1, 8, 16, 16]),
                      h.make_tensor_value_info("sm", T.FLOAT, [1, 8, 16, 16])], i1 + i2)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)


def test_softmax_output_read_by_a_conv_runs_on_the_host(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    folder = tmp_path / "out"
    tc.compile(path, calibration=[_x(s) for s in range(10, 16)]).save(folder)
    prog = load_program(folder)
    assert [s["device"] for s in prog.manifest["segments"]] == ["npu", "host", "npu"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checker = Checker(prog, path)
    for seed in (1, 2):
        x = _x(seed)
        res = prog.run(x)
        assert checker.check(x, res)["bit_exact"]
        assert sqnr_db(sess.run(None, {"x": x})[0], prog.final_output(res)) >= 25.0
