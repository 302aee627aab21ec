"""Quantization: parameter derivation against hand-computed values, and the golden integer model
against ONNX Runtime's float output (SQNR)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler.errors import InputError, InternalError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import ActKind, Activation, ConvAttrs, Op, PoolAttrs
from tcc_compiler.numerics import jit, quantize_multiplier
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.quant import (collect_ranges, conv_quant, dequantize_output, pool_quant,
                                quantize_graph, quantize_input, run_golden)
from tcc_compiler.quant.quantize import activation_params, quantize_weights

N = helper.make_node


# ---- activation / weight parameters ------------------------------------------------------

@pytest.mark.parametrize("lo,hi,scale,zp", [
    (0.0, 2.55, 0.01, -128),        # relu range: zero point at the bottom
    (-1.0, 1.55, 0.01, -28),        # -128 - (-1 / 0.01)
    (-2.55, 0.0, 0.01, 127),        # all negative: zero point at the top
    (-2.55, -1.0, 0.01, 127),       # widened to include 0
    (1.0, 2.55, 0.01, -128),        # widened to include 0
    (-1.275, 1.275, 0.01, 0),       # -128 + 127.5 = -0.5 -> 0 (numpy round: half to even)
])
def test_activation_params(lo, hi, scale, zp):
    q = activation_params(lo, hi)
    assert float(q.scale) == pytest.approx(scale, rel=1e-12)
    assert int(q.zero_point) == zp and q.axis is None
    # real 0 is exactly representable
    assert -128 <= int(q.zero_point) <= 127


@pytest.mark.parametrize("lo,hi", [(0.0, 0.0), (-0.0, 0.0)])
def test_activation_params_constant(lo, hi):
    q = activation_params(lo, hi)
    assert float(q.scale) == 1.0 and int(q.zero_point) == 0


def test_quantize_weights_per_channel_and_zero_channel():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0, :, 0, 0] = [1.27, -0.635]
    w[2, :, 0, 0] = [-2.54, 0.01]
    q, s = quantize_weights(w)
    assert q.dtype == np.int8 and s.tolist() == pytest.approx([0.01, 1.0, 0.02])
    assert q[0, :, 0, 0].tolist() == [127, -64]      # -63.5 -> -64 (half to even)
    assert q[1].tolist() == [[[0]], [[0]]]          # all-zero channel: scale 1, zeros
    assert q[2, :, 0, 0].tolist() == [-127, 0]      # symmetric: never -128
    assert np.abs(q).max() <= 127


def _weight_cases(rng) -> list:
    """Trained-like, power-of-two-grid, all-zero, mixed and read-only float weights."""
    mixed = np.concatenate([rng.standard_normal((3, 10)), np.zeros((1, 10)),
                            np.arange(30).reshape(3, 10) / 4]).reshape(7, 10, 1, 1)
    ro = np.frombuffer(rng.standard_normal(64 * 75).astype(np.float32).tobytes(), np.float32)
    return [rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
            (rng.integers(-15, 16, (8, 16, 1, 1)) / 8).astype(np.float32),   # DFL-like grid
            -np.zeros((4, 5, 1, 1), np.float32), mixed, mixed.astype(np.float32),
            (rng.integers(-127, 128, (16, 9)) * 0.37).astype(np.float32),
            ro.reshape(64, 3, 5, 5)]


@pytest.mark.skipif(not jit.available(), reason="numba (the fast extra) not installed")
@pytest.mark.parametrize("qmax", [127, 32767])
def test_compiled_weight_quantization_is_the_numpy_one(rng, qmax):
    """The compiled kernels (quant/weights_jit.py) give the numpy form's levels and scales,
    bit for bit, grid channels included; they run once numba is loaded."""
    jit.warm()
    from tcc_compiler.quant.quantize import _quantize_compiled
    for w in _weight_cases(rng):
        got = _quantize_compiled(w.reshape(w.shape[0], -1), qmax)
        assert got is not None
        old = jit.set_enabled(False)
        try:
            want = quantize_weights(w, qmax)
        finally:
            jit.set_enabled(old)
        q, s = quantize_weights(w, qmax)
        assert q.dtype == want[0].dtype and q.shape == w.shape
        assert np.array_equal(q, want[0]) and np.array_equal(s, want[1])
        assert np.array_equal(got[0].reshape(w.shape), want[0])


# ---- a quantized single conv -------------------------------------------------------------

def _conv_graph(make_model, rng, act_nodes=(), out="c", o=3):
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4)] + list(act_nodes)
    m = make_model(nodes + [N("MaxPool", [out], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                   [1, 2, 4, 4], {"w": rng.standard_normal((o, 2, 3, 3)),
                                  "b": np.array([0.5, -0.25, 1.0])[:o]})
    return PassManager(default_pipeline(), verify_each=True).run(import_onnx(m))


def test_bias_int32_scale(make_model, rng):
    g = _conv_graph(make_model, rng)
    conv = g.nodes[0]
    w_float = conv.inputs[1].const.astype(np.float64)
    ranges = {"x": (-1.0, 1.55), conv.output.name: (-4.0, 6.2), g.outputs[0].name: (-4.0, 6.2)}
    quantize_graph(g, ranges)
    s_x = 0.01
    s_w = np.abs(w_float.reshape(3, -1)).max(axis=1) / 127
    bq = conv.inputs[2]
    assert bq.dtype == "int32" and bq.const.dtype == np.int32
    np.testing.assert_allclose(bq.quant.scale, s_x * s_w, rtol=1e-12)
    assert bq.const.tolist() == np.round(np.array([0.5, -0.25, 1.0]) / (s_x * s_w)).tolist()
    assert conv.inputs[1].quant.axis == 0 and conv.inputs[1].dtype == "int8"
    # epilogue multipliers: s_x * s_w[o] / s_y
    s_y = 10.2 / 255
    q = conv_quant(conv)
    for c in range(3):
        assert (int(q.mult[c]), int(q.shift[c])) == quantize_multiplier(s_x * s_w[c] / s_y)
    assert q.zp_in == -28 and q.zp_out == round(-128 + 4.0 / s_y) and not q.out_int32
    # maxpool output shares its input's parameters
    pool = g.nodes[1]
    assert pool.op is Op.MAXPOOL and pool.output.quant is conv.output.quant


@pytest.mark.parametrize("act,bounds,params", [
    # clip(0, 6) on a calibrated range [-3, 9]: output range [0, 6] -> s = 6/255, zp -128
    ("clip06", (-128, 127), (6 / 255, -128)),
    # clip(-1, 2): range [-1, 2] -> s = 3/255, zp = -128 + 85 = -43; bounds (-128, 127)
    ("clip-12", (-128, 127), (3 / 255, -43)),
    # relu: range [0, 9] -> zp -128; the clamp floor is the zero point
    ("relu", (-128, 127), (9 / 255, -128)),
])
def test_activation_clamp_bounds(make_model, rng, act, bounds, params):
    inits = {}
    if act == "relu":
        nodes = [N("Relu", ["c"], ["a"])]
    else:
        lo, hi = (0.0, 6.0) if act == "clip06" else (-1.0, 2.0)
        nodes = [N("Clip", ["c", "lo", "hi"], ["a"])]
        inits = {"lo": np.array(lo), "hi": np.array(hi)}
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] + nodes
    m = make_model(nodes, [1, 2, 4, 4], {"w": rng.standard_normal((3, 2, 3, 3)), **inits},
                   outputs=("a",))
    g = PassManager(default_pipeline()).run(import_onnx(m))
    conv = g.nodes[0]
    quantize_graph(g, {"x": (-1.0, 1.0), conv.output.name: (-3.0, 9.0)})
    q = conv_quant(conv)
    assert float(conv.output.quant.scale) == pytest.approx(params[0], rel=1e-12)
    assert q.zp_out == params[1]
    assert (q.act_lo, q.act_hi) == bounds
    assert not q.out_int32            # an activation keeps the int8 epilogue


def test_clip_inner_bounds():
    """Clip bounds inside the calibrated range clamp in the quantized domain."""
    g = Graph()
    x = Value("x", (1, 1, 1, 1))
    g.inputs.append(x)
    w = Value("w", (1, 1, 1, 1), const=np.ones((1, 1, 1, 1), np.float32))
    b = Value("b", (1,), const=np.zeros(1, np.float32))
    y = Value("y", (1, 1, 1, 1))
    g.add_node(Op.CONV, "conv", [x, w, b], [y],
               ConvAttrs(kernel=(1, 1), act=Activation(ActKind.CLIP, 0.0, 6.0)))
    z = Value("z", (1, 1, 1, 1))
    g.add_node(Op.MAXPOOL, "pool", [y], [z], PoolAttrs((1, 1)))
    g.outputs.append(z)
    quantize_graph(g, {"x": (-1.0, 1.0), "y": (0.0, 6.0), "z": (0.0, 6.0)})
    # output [0, 6]: scale 6/255, zp -128 -> lo = -128, hi = 127
    q = conv_quant(g.nodes[0])
    assert (q.act_lo, q.act_hi) == (-128, 127)
    # now calibrate wider than the clip: params still come from [0, 6]
    quantize_graph(g, {"x": (-1.0, 1.0), "y": (-10.0, 20.0), "z": (-10.0, 20.0)})
    assert float(y.quant.scale) == pytest.approx(6 / 255) and int(y.quant.zero_point) == -128


def test_raw_int32_output_of_final_fc(make_model, rng):
    m = make_model([N("Flatten", ["x"], ["f"]), N("Gemm", ["f", "B", "C"], ["y"], transB=1)],
                   [1, 2, 2, 2], {"B": rng.standard_normal((3, 8)), "C": np.zeros(3)})
    g = PassManager(default_pipeline()).run(import_onnx(m))
    fc = g.nodes[0]
    quantize_graph(g, {"x": (-1.0, 1.55), fc.output.name: (-5.0, 5.0)})
    out = g.outputs[0]
    assert out.dtype == "int32" and out.quant.axis == 1
    np.testing.assert_allclose(out.quant.scale, 0.01 * fc.inputs[1].quant.scale)
    q = conv_quant(fc)
    assert q.out_int32
    # host dequantization: real = q * s_x * s_w[o] per channel
    raw = np.array([[[100, -200, 3]]], np.int32)
    deq = dequantize_output(raw, out)
    np.testing.assert_allclose(deq.reshape(-1), raw.reshape(-1) * out.quant.scale, rtol=1e-6)


def test_pool_quant_gap_divisor(make_model):
    m = make_model([N("GlobalAveragePool", ["x"], ["g"]), N("Relu", ["g"], ["y"])],
                   [1, 2, 3, 5])
    g = import_onnx(m)
    gap = g.nodes[0]
    quantize_graph(g, {"x": (-1.0, 1.55), gap.output.name: (-0.5, 0.52),
                       g.outputs[0].name: (0.0, 0.52)})
    p = pool_quant(gap)
    # the pooled output reuses the input's parameters (never clipped), so M / 2**S = 1 / n
    assert float(gap.output.quant.scale) == float(g.inputs[0].quant.scale) == pytest.approx(0.01)
    assert (p.mult, p.shift) == quantize_multiplier(1.0 / 15)
    assert p.zp_in == p.zp_out


# ---- input / output mapping --------------------------------------------------------------

def test_quantize_input_rint_ties_to_even_and_layout():
    v = Value("x", (1, 2, 1, 4), "int8", quant=QuantParams(np.float64(0.5), np.int64(3)))
    x = np.array([[[[0.25, 0.75, 1.25, -0.25]], [[-0.75, 100.0, -100.0, 0.0]]]], np.float32)
    q = quantize_input(x, v)
    assert q.shape == (1, 4, 2) and q.dtype == np.int8     # NHWC [H, W, C]
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5 | -1.5, 200, -200, 0 -> rint: 0, 2, 2, -0 | -2, 200, -200, 0
    assert q[0, :, 0].tolist() == [3, 5, 5, 3]
    assert q[0, :, 1].tolist() == [1, 127, -128, 3]


def test_dequantize_output_layout():
    v = Value("y", (1, 2, 1, 2), "int8", quant=QuantParams(np.float64(0.5), np.int64(-1)))
    q = np.array([[[1, 3], [5, -1]]], np.int8)        # NHWC [1, 2, 2]
    f = dequantize_output(q, v)
    assert f.shape == (1, 2, 1, 2)
    assert f[0, 0, 0].tolist() == [1.0, 3.0] and f[0, 1, 0].tolist() == [2.0, 0.0]


def test_calibration_input_errors(make_model):
    g = import_onnx(make_model([N("Relu", ["x"], ["y"])], [1, 2, 3, 3]))
    with pytest.raises(InputError):
        collect_ranges(g, [])
    with pytest.raises(InputError, match="shape"):
        collect_ranges(g, [np.zeros((1, 2, 4, 4), np.float32)])
    with pytest.raises(InputError, match="NaN"):
        collect_ranges(g, [np.full((1, 2, 3, 3), np.nan, np.float32)])
    with pytest.raises(InputError, match="calib-method"):
        collect_ranges(g, [np.zeros((1, 2, 3, 3), np.float32)], method="kl")
    with pytest.raises(InternalError, match="calibrated range"):
        quantize_graph(g, {})


# ---- golden model vs float ---------------------------------------------------------------

def _sqnr_db(ref, got):
    ref = ref.astype(np.float64).reshape(-1)
    err = ref - got.astype(np.float64).reshape(-1)
    return 10 * np.log10(np.sum(ref ** 2) / max(np.sum(err ** 2), 1e-30))


def test_golden_vs_ort_sqnr(residual_net, ort_run, run_pipeline):
    m = residual_net(seed=3, hw=16)
    g = run_pipeline(import_onnx(m))
    r = np.random.default_rng(7)
    calib = [r.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    quantize_graph(g, collect_ranges(g, calib))
    for k in range(3):
        x = calib[k] if k == 0 else r.standard_normal((1, 3, 16, 16)).astype(np.float32)
        ref = ort_run(m, x)[0]
        gold = run_golden(g, x)
        out = g.outputs[0]
        assert gold["int:" + out.name].dtype == np.int32    # raw FC logits
        sqnr = _sqnr_db(ref, gold[out.name])
        assert sqnr > 30.0, f"input {k}: SQNR {sqnr:.1f} dB"


def test_golden_relu_output_int8(make_model, ort_run, run_pipeline, rng):
    m = make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["y"])],
                   [1, 3, 8, 8], {"w": rng.standard_normal((4, 3, 3, 3)) * 0.3,
                                  "b": rng.standard_normal(4) * 0.1})
    g = run_pipeline(import_onnx(m))
    xs = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    quantize_graph(g, collect_ranges(g, xs))
    out = g.outputs[0]
    assert out.dtype == "int8" and int(out.quant.zero_point) == -128
    gold = run_golden(g, xs[0])
    assert gold["int:" + out.name].dtype == np.int8
    assert _sqnr_db(ort_run(m, xs[0])[0], gold[out.name]) > 30


def test_weights_on_a_power_of_two_grid_stay_exact():
    """A fixed-weight conv (YOLOv8's DFL expectation, weights 0..15) keeps its exact values
    (step 1/8, not 15/127); a channel amax/127 already represents exactly, and float weights,
    keep the max-abs scale."""
    from tcc_compiler.quant.quantize import quantize_weights

    w = np.stack([np.arange(16, dtype=np.float32), np.eye(16, dtype=np.float32)[3] * 0.5,
                  np.random.default_rng(0).normal(0, 0.1, 16).astype(np.float32)])
    q, s = quantize_weights(w.reshape(3, 16, 1, 1))
    assert s[0] == 0.125 and np.array_equal(q[0].ravel() * s[0], w[0])
    assert s[1] == 0.5 / 127 and q[1].ravel()[3] == 127
    assert s[2] == np.abs(w[2].astype(np.float64)).max() / 127
