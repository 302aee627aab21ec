"""GPTQ weight rounding (tcc_compiler.quant.weight_rounding): its im2col matches ONNX
Runtime's convolution, and on calibration data it lowers each layer's output error below
round-to-nearest on the same scales, never leaving the int8 grid."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler.ir.ops import ConvAttrs, Op
from tcc_compiler.numerics import jit
from tcc_compiler.quant import weight_rounding
from tcc_compiler.quant.quantize import quantize_weights
from tcc_compiler.quant.weight_rounding import _gptq, _taps


class _Node:
    """The two fields _taps reads."""

    def __init__(self, attrs):
        self.op, self.attrs = Op.CONV, attrs


CASES = [ConvAttrs(kernel=(3, 3), strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2)),
         ConvAttrs(kernel=(3, 3), pads=(1, 1, 1, 1), group=4),
         ConvAttrs(kernel=(1, 1), group=2),
         ConvAttrs(kernel=(1, 1), strides=(2, 2)),
         ConvAttrs(kernel=(5, 5), strides=(2, 2), pads=(1, 2, 2, 1), group=4)]


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
    cols = _taps(x, _Node(attrs))                             # [G, K, P]
    g = attrs.group
    wg = w.reshape(g, cout // g, -1).astype(np.float64)
    y = np.einsum("gkp,gok->gop", cols, wg).reshape(cout, *ref.shape[2:])
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


def _gptq_textbook(w, scale, h):
    """GPTQ Algorithm 1 as the paper writes it: U = the upper Cholesky factor of H^-1, each
    column's error pushed onto every later column (no blocks)."""
    from tcc_compiler.quant.weight_rounding import DAMP

    w, h = w.copy(), h.copy()
    k = h.shape[-1]
    diag = np.einsum("gkk->gk", h)
    idx = np.arange(k)
    h[:, idx, idx] += DAMP * np.maximum(diag.mean(axis=1, keepdims=True), 1e-12) + (diag <= 0)
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    q = np.zeros(w.shape, np.int8)
    for i in range(k):
        qi = np.clip(np.round(w[:, :, i] / scale), -127, 127)
        q[:, :, i] = qi
        err = (w[:, :, i] - qi * scale) / u[:, i, i][:, None]
        w[:, :, i + 1:] -= err[:, :, None] * u[:, None, i, i + 1:]
    return q


@pytest.mark.parametrize("g,cout,k", [(1, 24, 300), (6, 1, 9), (2, 8, 130)])
def test_nearest_plane_form_equals_textbook_gptq(g, cout, k):
    """The blocked nearest-plane form (one Cholesky, no inverse) picks the same levels as
    GPTQ's Algorithm 1, across block boundaries (k > BLOCK), with groups and a dead input."""
    r = np.random.default_rng(k)
    x = r.standard_normal((3 * k, k)) @ (r.standard_normal((k, k)) * 0.2 + np.eye(k))
    x[:, 0] = 0.0                                             # an input never non-zero
    h = np.stack([x.T @ x] * g)
    w = r.standard_normal((g, cout, k)) * 0.05
    s = np.abs(w).max(-1) / 127
    np.testing.assert_array_equal(_gptq(w, s, h), _gptq_textbook(w, s, h))


@pytest.mark.skipif(not jit.available(), reason="numba (the fast extra) not installed")
@pytest.mark.parametrize("g,cout,k", [(1, 24, 300), (6, 1, 9), (2, 8, 130), (3, 5, 128)])
def test_compiled_column_loop_picks_the_numpy_loops_levels(monkeypatch, g, cout, k):
    """The compiled column loop (quant/gptq_jit.py, rows vectorised on the transposed layout)
    and the numpy loop pick the same levels: the column values differ by float64 rounding only.
    The weights are spread over many levels (scale max|w| / 127), so nearly every column's
    update moves some level away from round-to-nearest."""
    r = np.random.default_rng(k + g)
    x = r.standard_normal((3 * k, k)) @ (r.standard_normal((k, k)) * 0.2 + np.eye(k))
    x[:, 1] = 0.0
    h = np.stack([x.T @ x] * g)
    w = r.standard_normal((g, cout, k)) * 0.05
    s = np.abs(w).max(-1) / 127
    assert weight_rounding._block_kernel() is not None
    got = _gptq(w, s, h)
    monkeypatch.setattr(jit, "_enabled", False)
    assert weight_rounding._block_kernel() is None
    want = _gptq(w, s, h)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int8 and got.flags.c_contiguous
    assert np.count_nonzero(want != quantize_weights_on(w, s)) > 0


def quantize_weights_on(w, s):
    """Round-to-nearest on the scales ``s`` [G, O] of ``w`` [G, O, K]."""
    return np.clip(np.round(w / s[..., None]), -127, 127).astype(np.int8)


def test_default_gptq_only_where_its_cost_is_bounded():
    """ResNet-50's 3x3 convs (positions * K^2 about 1e9) and its 2048-input fc keep nearest
    under the default; its 1x1 convs and every layer of ResNet-8 / Lite0's sizes do not."""
    from tcc_compiler.quant.weight_rounding import bounded_cost

    class V:
        def __init__(self, shape):
            self.shape = shape

    def conv(cin, cout, k, hw, group=1):
        n = _Node(ConvAttrs(kernel=(k, k), group=group))
        n.inputs = [V((1, cin, hw, hw)), V((cout, cin // group, k, k))]
        n.output = V((1, cout, hw, hw))
        return n

    assert not bounded_cost(conv(64, 64, 3, 56))       # ResNet-50 layer1 3x3
    assert not bounded_cost(conv(512, 512, 3, 7))      # layer4 3x3: K = 4608
    assert bounded_cost(conv(64, 256, 1, 56))          # its 1x1 expansion
    assert bounded_cost(conv(64, 64, 3, 8))            # ResNet-8
    assert bounded_cost(conv(1152, 1152, 5, 7, group=1152))   # Lite0 depthwise
    fc = _Node(None)
    fc.op = Op.FC
    fc.inputs, fc.output = [V((1, 2048)), V((1000, 2048))], V((1, 1000))
    assert not bounded_cost(fc)
    fc.inputs[1] = V((1000, 1280))
    assert bounded_cost(fc)


def test_default_rounding_without_calibration_inputs(tmp_path, residual_net, caplog):
    """From a calibration table there are no inputs: the default falls back to nearest with a
    warning (the same weights as --weight-rounding nearest); gptq asked for is refused."""
    import onnx

    from tcc_compiler import api
    from tcc_compiler.errors import InputError

    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=1, hw=16), model)
    first = api.compile(model, "16x16x3")
    out = first.save(tmp_path / "a")
    table = out / "calib_table.json"
    near = api.compile(model, "16x16x3", calib_table=table, weight_rounding="nearest")
    with caplog.at_level("WARNING"):
        dflt = api.compile(model, "16x16x3", calib_table=table)
    assert "weights rounded to nearest" in caplog.text
    assert dflt.artifacts.weight_bin == near.artifacts.weight_bin
    with pytest.raises(InputError, match="gptq-all needs calibration inputs"):
        api.compile(model, "16x16x3", calib_table=table, weight_rounding="gptq-all")


def test_costliest_layers_are_rounded_first(tmp_path, residual_net, monkeypatch):
    """The layers go to the worker threads costliest first (:func:`gptq_cost`), so no large
    layer starts last and runs alone; the levels do not depend on the order (one thread here:
    the calls run in submission order)."""
    import onnx

    from tcc_compiler import api
    from tcc_compiler.quant.weight_rounding import gptq_cost

    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=2, hw=16), model)
    want = api.compile(model, "16x16x3").save(tmp_path / "a")
    calls = []

    def record(w, s, h):
        calls.append(h.shape[0] * (h.shape[-1] ** 3 // 3 + w.shape[1] * h.shape[-1] ** 2))
        return _gptq(w, s, h)

    monkeypatch.setattr(weight_rounding, "workers", lambda: 1)
    monkeypatch.setattr(weight_rounding, "_gptq", record)
    got = api.compile(model, "16x16x3").save(tmp_path / "b")
    assert len(calls) > 3 and calls == sorted(calls, reverse=True)
    assert (got / "quantized_network.bin").read_bytes() == \
        (want / "quantized_network.bin").read_bytes()
    assert gptq_cost.__doc__
