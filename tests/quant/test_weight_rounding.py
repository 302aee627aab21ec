"""GPTQ weight rounding (tcc_compiler.quant.weight_rounding): its im2col matches ONNX
Runtime's convolution, and on calibration data it lowers each layer's output error below
round-to-nearest on the same scales, never leaving the int8 grid."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler.ir.ops import ConvAttrs, Op
from tcc_compiler.quant.quantize import quantize_weights
from tcc_compiler.quant.weight_rounding import _columns, _gptq


class _Node:
    """The two fields _columns reads."""

    def __init__(self, attrs):
        self.op, self.attrs = Op.CONV, attrs


CASES = [ConvAttrs(kernel=(3, 3), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2)),
         ConvAttrs(kernel=(3, 3), pads=(1, 1, 1, 1), group=4),
         ConvAttrs(kernel=(1, 1), group=2)]


@pytest.mark.parametrize("attrs", CASES)
def test_columns_times_weights_is_onnx_runtimes_conv(make_model, attrs):
    r = np.random.default_rng(0)
    cin, cout = 4, 8
    x = r.standard_normal((1, cin, 9, 11)).astype(np.float32)
    w = r.standard_normal((cout, cin // attrs.group) + attrs.kernel).astype(np.float32)
    t, left, b, rr = attrs.pads
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=list(attrs.kernel),
                            strides=list(attrs.strides), pads=[t, left, b, rr],
                            dilations=list(attrs.dilations), group=attrs.group)
    m = make_model([node], x.shape, {"w": w})
    ref = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cols = _columns(x, _Node(attrs))                          # [G, P, K]
    g = attrs.group
    wg = w.reshape(g, cout // g, -1).astype(np.float64)
    y = np.einsum("gpk,gok->gop", cols, wg).reshape(cout, *ref.shape[2:])
    np.testing.assert_allclose(y, ref[0], rtol=1e-5, atol=1e-5)


def test_gptq_lowers_the_layer_output_error():
    """Correlated inputs (as real activations are): GPTQ's output error on the data it saw and
    on fresh data from the same distribution is below round-to-nearest's."""
    r = np.random.default_rng(1)
    k, cout = 48, 16
    mix = r.standard_normal((k, k)) * 0.3 + np.eye(k)
    xs, xt = r.standard_normal((2000, k)) @ mix, r.standard_normal((2000, k)) @ mix
    w = r.standard_normal((cout, k)) * 0.1
    qn, s = quantize_weights(w.astype(np.float32))
    s = np.asarray(s, np.float64)
    q = _gptq(w[None], s[None], (xs.T @ xs)[None])[0]
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127

    def err(qw, x):
        return float(np.sum((x @ w.T - x @ (qw * s[:, None]).T) ** 2))

    assert err(q, xs) < 0.8 * err(qn, xs)
    assert err(q, xt) < 0.9 * err(qn, xt)


def test_compile_with_gptq_runs_bit_exact(tmp_path, residual_net, capsys):
    """Only weight bytes change: the compiled folder still runs bit-exact, and its float
    output stays close to ONNX Runtime's."""
    import onnx
    from helpers.cli import run_cli

    from tcc_compiler.datasets.images import bundled_photos

    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=1, hw=16), model)
    out = tmp_path / "out"
    code, _, err = run_cli(["-q", "compile", model, "--input", "16x16x3", "-o", out,
                            "--weight-rounding", "gptq"], capsys)
    assert code == 0, err
    code, text, _ = run_cli(["run", out, bundled_photos("eval")[0], "--check", model, "--json"],
                            capsys)
    import json

    check = json.loads(text)["check"]
    assert code == 0 and check["bit_exact"] and check["sqnr_db"] > 15
