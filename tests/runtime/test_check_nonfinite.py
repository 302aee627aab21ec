"""``run --check`` when outputs hold NaN/inf (a new-user try: Log after a conv, which runs on
the host, printed ``sqnr_db=nan``, and JSON wrote it as null, which means "exactly equal")."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker, sqnr_db


def test_sqnr_leaves_out_non_finite_reference_values():
    ref = np.array([1.0, np.nan, 2.0, np.inf, -3.0, 4.0])
    test = np.array([1.1, 0.0, 2.0, 5.0, -3.0, np.nan])
    assert sqnr_db(ref, test) == sqnr_db(ref[[0, 2, 4]], test[[0, 2, 4]])
    assert math.isfinite(sqnr_db(ref, test))
    assert math.isnan(sqnr_db(np.array([np.nan]), np.array([0.0])))


def test_check_of_a_log_model_reports_the_non_finite_float_values(tmp_path, caplog):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Log", ["c"], ["y"])], "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    path = tmp_path / "log.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    calib = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    prog = load_program(api.compile(path, "8x8x3", calibration=calib).save(tmp_path / "o"))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with caplog.at_level("WARNING"):
        r = Checker(prog, path).check(x, prog.run(x))
    assert r["bit_exact"]
    assert r["nonfinite_values"]["float"] > 0   # Log of the conv's negative outputs
    assert math.isfinite(r["sqnr_db"])
    assert "NaN/inf" in caplog.text
