"""A model whose ONNX input is NHWC (``[1, H, W, C]`` then ``Transpose(0, 3, 1, 2)``, as
TFLite/Keras exports write) runs on the executor as it was compiled.

The runtime's input is NCHW whatever the ONNX layout (``manifest.json`` ``input.shape``,
specs/manifest.md); the NPU reads int8 NHWC. ``LoadedProgram.quantize`` used to transpose only
when the ONNX layout was NCHW, so an NHWC model's NPU input was the NCHW bytes as they were:
``run --check`` reported ``bit_exact=false`` and an SQNR below 0 dB (exit 1) on every image.
The reference is ONNX Runtime on the NHWC model, fed the same values transposed.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.runtime.check import sqnr_db


def _nhwc_conv(h: int = 16, w: int = 12, c: int = 3) -> onnx.ModelProto:
    """NHWC input [1, H, W, C] -> Transpose to NCHW -> 3x3 conv (8 channels) + Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, c, 3, 3)) * 0.2)
                                     .astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "nhwc_conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, h, w])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_nhwc_model_runs_bit_exact_and_close_to_onnx_runtime(tmp_path):
    model = _nhwc_conv()
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 16, 12)).astype(np.float32) for _ in range(4)]
    m = tc.compile(model, "12x16x3", calibration=calib)
    assert m.manifest["input"]["onnx_layout"] == "NHWC"
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))
    m.save(tmp_path / "out")
    loaded = tc.load(tmp_path / "out")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    from tcc_compiler.runtime.check import Checker

    checker = Checker(loaded.program, path)
    for x in calib[:2]:
        ref = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
        y = loaded.run(x)
        assert sqnr_db(ref, y) > 30.0        # it was below 0 dB
        res = loaded.program.run(x)
        assert checker.check(x, res)["bit_exact"]


def test_nhwc_model_with_a_host_segment_compiles_and_runs_bit_exact(tmp_path):
    """NHWC input -> Transpose -> conv -> LRN (host) -> conv: the first NPU segment's
    calibration values (ONNX Runtime's, NHWC like the model input) were handed to its compile
    as they were, which refused them ("calibration array 0: shape (1, 16, 12, 3), model
    expects (1, 3, 16, 12)") although ``tccc ops`` placed every node."""
    base = _nhwc_conv()
    rng = np.random.default_rng(2)
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32),
                                 "w2")
    nodes = list(base.graph.node)[:2] + [
        helper.make_node("LRN", ["c"], ["l"], size=3),
        helper.make_node("Conv", ["l", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "nhwc_lrn", list(base.graph.input),
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 12])],
                          list(base.graph.initializer) + [w2])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "nhwc_lrn.onnx"
    onnx.save(model, str(path))
    assert all(p.supported for p in tc.partition(str(path), "12x16x3"))
    calib = [rng.standard_normal((1, 3, 16, 12)).astype(np.float32) for _ in range(4)]
    m = tc.compile(str(path), "12x16x3", calibration=calib)
    m.save(tmp_path / "out")
    loaded = tc.load(tmp_path / "out")
    assert loaded.manifest.get("layout") == "segmented"
    from tcc_compiler.runtime.check import Checker

    checker = Checker(loaded.program, path)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in calib[:2]:
        ref = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
        assert sqnr_db(ref, loaded.run(x)) > 25.0
        assert checker.check(x, loaded.program.run(x))["bit_exact"]
