"""``tccc run --check`` on a model with two graph outputs (like YOLO-seg's boxes and mask
prototypes): ``sqnr_db_outputs`` gives each output's SQNR against ONNX Runtime by name, for a
model the NPU runs whole and for one with a host segment."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker, sqnr_db
from tests.conftest import make_model_impl

N = helper.make_node


def _two_outputs(host_op: bool) -> onnx.ModelProto:
    """conv -> relu -> {conv 'boxes', conv -> (LRN) -> conv 'protos' at another scale}."""
    r = np.random.default_rng(7)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "w1": r.normal(0, 0.3, (4, 8, 1, 1)),
             "w2": r.normal(0, 0.3, (6, 8, 3, 3)), "w3": r.normal(0, 0.3, (6, 6, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "w1"], ["boxes"]),
             N("Conv", ["r", "w2"], ["p0"], pads=[1] * 4, strides=[2, 2])]
    if host_op:
        nodes.append(N("LRN", ["p0"], ["p1"], size=3))
    nodes.append(N("Conv", ["p1" if host_op else "p0", "w3"], ["protos"]))
    return make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17,
                           outputs=("boxes", "protos"))


@pytest.mark.parametrize("host_op", [False, True])
def test_sqnr_of_every_output(tmp_path, host_op):
    model = _two_outputs(host_op)
    onnx.save(model, tmp_path / "m.onnx")
    xs = [np.random.default_rng(s).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
          for s in range(6)]
    prog = load_program(api.compile(model, "16x16x3", calibration=xs).save(tmp_path / "o"))
    assert bool(getattr(prog, "segmented", False)) == host_op
    x = xs[0]
    res = prog.run(x)
    c = Checker(prog, tmp_path / "m.onnx").check(x, res)
    refs = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert list(c["sqnr_db_outputs"]) == ["boxes", "protos"]
    for name, ref in zip(["boxes", "protos"], refs):
        want = sqnr_db(ref, res[name])
        assert c["sqnr_db_outputs"][name] == pytest.approx(want, abs=1e-3)
        assert 25.0 <= want < 80.0, (name, want)
    assert c["sqnr_db"] == c["sqnr_db_outputs"]["boxes"]
