"""An NHWC model whose transposed input (Transpose(perm=0,3,1,2) of the graph input) is read
by a later NPU segment, or is itself a graph output.

The float passes remove that Transpose (the NPU reads NHWC natively), so an NPU segment that
listed it as an output would have none: the folder compiled but ``tccc run`` refused it
("graph_outputs[0]: 'x' is not an output or host op result", exit 2). The import now refuses
such an output by the Transpose's name, and the planner runs that Transpose on the host.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
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


def _skip_model() -> onnx.ModelProto:
    """x [1,16,16,3] NHWC -> Transpose 'xt' -> Conv 'c1' -> Softmax (host, last axis) ->
    Conv 'c2' -> Add(c2, xt): the last NPU segment reads the transposed input."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "xt", 3, 8, rng)
    n2, i2 = _conv("c2", "sm", 8, 3, rng)
    g = h.make_graph([h.make_node("Transpose", ["x"], ["xt"], name="tr", perm=[0, 3, 1, 2]),
                      n1, h.make_node("Softmax", ["c1"], ["sm"], name="sm", axis=-1), n2,
                      h.make_node("Add", ["c2", "xt"], ["y"], name="add")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 16, 16, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 16, 16])], i1 + i2)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _output_model() -> onnx.ModelProto:
    """x NHWC -> Transpose 'xt' -> Conv 'c1'; both 'c1' and 'xt' are graph outputs."""
    n1, i1 = _conv("c1", "xt", 3, 8, np.random.default_rng(1))
    g = h.make_graph([h.make_node("Transpose", ["x"], ["xt"], name="tr", perm=[0, 3, 1, 2]),
                      n1], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 16, 16, 3])],
                     [h.make_tensor_value_info("c1", T.FLOAT, [1, 8, 16, 16]),
                      h.make_tensor_value_info("xt", T.FLOAT, [1, 3, 16, 16])], i1)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _x(seed: int) -> np.ndarray:
    """An input as the runtime takes it: NCHW [1,3,16,16] (the model's NHWC transposed)."""
    return np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("make", [_skip_model, _output_model], ids=["skip", "output"])
def test_transposed_input_read_later_runs_bit_exact(make, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(make(), path)
    folder = tmp_path / "out"
    tc.compile(path, calibration=[_x(s) for s in range(10, 16)]).save(folder)
    prog = load_program(folder)   # raised FormatError before the fix
    tr = next(s for s in prog.manifest["segments"] if "tr" in s["nodes"])
    assert tr["device"] == "host"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checker = Checker(prog, path)
    for seed in (1, 2):
        x = _x(seed)
        res = prog.run(x)
        assert checker.check(x, res)["bit_exact"]
        ref = sess.run(None, {"x": x.transpose(0, 2, 3, 1)})[0]
        assert sqnr_db(ref, prog.final_output(res)) >= 25.0
