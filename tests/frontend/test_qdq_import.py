"""Pre-quantized models (QDQ, QOperator, QAT weight fake-quant): compiled with the model's own
scales and zero points, no calibration, checked against ONNX Runtime running the same model.

The QDQ models are built with onnx.helper (tests/helpers/qdq.py) or by ONNX Runtime's own
``quantize_static``. On these small nets tccc's outputs equal ONNX Runtime's bit for bit: the
only possible difference is a value within float32 rounding of a rounding boundary
(specs/quantization.md, "Pre-quantized models"), which these inputs do not hit.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.qdq import tiny_net, to_qdq
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.cli.main import main
from tcc_compiler.errors import UnsupportedError

HW = 16


@pytest.fixture(scope="module")
def xs():
    return [np.random.default_rng(i).standard_normal((1, 3, HW, HW)).astype(np.float32)
            for i in range(4)]


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _fixed_acts(model: onnx.ModelProto) -> dict[str, tuple[float, int]]:
    """Float tensor -> (scale, int8 zero point) of each activation QuantizeLinear."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and \
                not n.input[0].endswith("_f"):
            z = inits[n.input[2]]
            out[n.input[0]] = (float(inits[n.input[1]]),
                               int(z) - (128 if z.dtype == np.uint8 else 0))
    return out


@pytest.mark.parametrize("kw", [dict(opset=10), dict(opset=13), dict(opset=13, per_channel=False),
                                dict(opset=17, uint8=True), dict(opset=21),
                                dict(opset=17, fake_quant_weights=True)],
                         ids=["opset10-per-tensor", "opset13", "opset13-per-tensor",
                              "opset17-uint8", "opset21", "qat-weight-fake-quant"])
def test_qdq_model_compiles_without_calibration_and_matches_ort(xs, kw):
    q = to_qdq(tiny_net(), xs, **kw)
    m = api.compile(q, f"{HW}x{HW}x3")
    assert m.manifest["calibration"]["method"] == "fixed"
    assert m.manifest["calibration"]["inputs"] == 0
    g = m.quantized_graph
    vals = {v.name: v for v in g.values()}
    fixed = _fixed_acts(q)
    taken = [t for t in fixed if t in vals and vals[t].dtype == "int8"]
    assert len(taken) >= 5
    for t in taken:  # the model's parameters, exactly
        assert float(vals[t].quant.scale) == pytest.approx(fixed[t][0], rel=0, abs=0)
        assert int(vals[t].quant.zero_point) == fixed[t][1]
    x_new = np.random.default_rng(99).standard_normal((1, 3, HW, HW)).astype(np.float32)
    for x in xs + [x_new]:
        np.testing.assert_array_equal(m.run(x), _ort(q, x))


def test_uint8_converts_exactly_to_int8(xs, tmp_path):
    """The same quantization written with uint8 activations (zero point + 128) compiles to the
    same binaries as its int8 form."""
    a = api.compile(to_qdq(tiny_net(), xs, opset=13), f"{HW}x{HW}x3")
    b = api.compile(to_qdq(tiny_net(), xs, opset=13, uint8=True), f"{HW}x{HW}x3")
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for f in ("npu_cmd.bin", "quantized_network.bin"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_model_rounding_points_are_kept(xs):
    """A conv output quantized before the residual add stays a separate int8 tensor (the add
    is not fused into the conv: the model rounds in between); the float model fuses it."""
    plain = api.compile(tiny_net(), f"{HW}x{HW}x3", calibration=xs)
    qdq = api.compile(to_qdq(tiny_net(), xs), f"{HW}x{HW}x3")
    ops = lambda m: sorted(n.op.value for n in m.quantized_graph.nodes)  # noqa: E731
    assert "add" not in ops(plain) and "add" in ops(qdq)


def test_partly_quantized_model_calibrates_only_the_rest(xs, caplog):
    q = to_qdq(tiny_net(), xs, skip=("c1", "r1"))  # the first conv (+ relu) has no Q/DQ
    m = api.compile(q, f"{HW}x{HW}x3", calibration=xs)
    assert m.manifest["calibration"]["method"] != "fixed"
    assert "1 tensor(s) have no quantization in the model and are calibrated: c1" in caplog.text
    vals = {v.name: v for v in m.quantized_graph.values()}
    fixed = _fixed_acts(q)
    assert float(vals["c2"].quant.scale) == fixed["c2"][0]
    assert float(vals["x"].quant.scale) == fixed["x"][0]


def _ort_quantized(model, xs, fmt, per_channel=True):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    import tempfile
    from pathlib import Path

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": x} for x in xs])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f.onnx", Path(d) / "q.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Reader(), per_channel=per_channel,
                        quant_format=getattr(QuantFormat, fmt),
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return onnx.load(str(dst))


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_onnxruntime_quantize_static_model(xs, fmt):
    """ONNX Runtime's own quantizer, both formats (QOperator: QLinearConv, com.microsoft
    QLinearAdd / QLinearGlobalAveragePool, ...)."""
    q = _ort_quantized(tiny_net(), xs, fmt, per_channel=fmt == "QDQ")
    if fmt == "QOperator":
        assert {"QLinearConv", "QLinearAdd"} <= {n.op_type for n in q.graph.node}
    m = api.compile(q, f"{HW}x{HW}x3")
    assert m.manifest["calibration"]["method"] == "fixed"
    for x in xs:
        np.testing.assert_array_equal(m.run(x), _ort(q, x))


def _tiny_qdq(zp_type=TensorProto.INT8, dq_scale=0.05, graph_input_int8=False):
    """x -> Q -> DQ -> Conv(1x1) -> Q -> DQ -> y, with knobs to make it invalid."""
    zp = {TensorProto.INT8: np.int8(0), TensorProto.INT16: np.int16(0)}[zp_type]
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(dq_scale, np.float32), "s2"),
             numpy_helper.from_array(zp, "z"),
             numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "wq"),
             numpy_helper.from_array(np.array([0.1, 0.1], np.float32), "ws"),
             numpy_helper.from_array(np.zeros(2, np.int8), "wz")]
    n = helper.make_node
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
             n("DequantizeLinear", ["xq", "s2", "z"], ["xd"], name="dq_in"),
             n("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dq_w", axis=0),
             n("Conv", ["xd", "w"], ["c"], name="conv"),
             n("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_c"),
             n("DequantizeLinear", ["cq", "s", "z"], ["y"], name="dq_c")]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def test_tiny_qdq_is_valid_and_compiles():
    m = api.compile(_tiny_qdq(), "8x8x3")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(m.run(x), _ort(_tiny_qdq(), x))


@pytest.mark.parametrize("model, reason", [
    (_tiny_qdq(zp_type=TensorProto.INT16), "int16 quantization is not supported"),
    (_tiny_qdq(dq_scale=0.06), "differ from its QuantizeLinear's"),
])
def test_unsupported_quantization_is_refused_naming_the_node(model, reason, tmp_path, capsys):
    with pytest.raises(UnsupportedError, match=reason):
        api.compile(model, "8x8x3")
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and reason in err[0]
    assert not (tmp_path / "out").exists()
