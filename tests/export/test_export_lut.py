"""QDQ export of lookup-table activations and element-wise ops: the lut's exported form (an int8
Gather on its table) run by ONNX Runtime equals the golden integer model exactly; the whole
export stays close to the golden output."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.utils import Extractor

from tcc_compiler import api
from tcc_compiler.export.qdq import export_qdq
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.runtime.check import sqnr_db
from tests.e2e.test_lut_eltwise import HW, _se_block, conv_act_conv


def _nchw(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 0, 1)[None]


@pytest.mark.parametrize("model", [
    lambda: conv_act_conv("Sigmoid"),
    lambda: conv_act_conv("PRelu", extra=["sl"],
                          inits={"sl": np.linspace(-0.3, 0.5, 8).reshape(8, 1, 1)}),
    _se_block], ids=["sigmoid", "prelu_channel", "se_block"])
def test_lut_export_exact_and_whole_export_close(model):
    r = np.random.default_rng(3)
    calib = [r.normal(0, 1, (1, 3, HW, HW)).astype(np.float32) for _ in range(4)]
    g = api.compile(model(), f"{HW}x{HW}x3", calibration=calib).quantized_graph
    qdq = export_qdq(g)
    x = r.normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
    gold = run_golden(g, x, keep=True)
    luts = [n for n in g.nodes if n.op is Op.LUT]
    assert luts
    for n in luts:
        src, dst = f"{n.inputs[0].name}_quantized", f"{n.output.name}_quantized"
        sub = Extractor(onnx.shape_inference.infer_shapes(qdq)).extract_model([src], [dst])
        sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {src: _nchw(gold["int:" + n.inputs[0].name]).astype(np.int8)})[0]
        assert np.array_equal(got, _nchw(gold["int:" + n.output.name])), n.name
    sess = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = gold[g.outputs[0].name]
    assert sqnr_db(ref.reshape(-1), y.reshape(-1)) >= 30.0
