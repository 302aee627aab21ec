"""Numeric edge cases of INT8 quantization, each with a hand-computed expected value.

Graphs are built directly in the IR (one conv, optionally an activation) so every scale and
zero point follows from the stated ranges by the formulas of specs/quantization.md; the
expected integers are worked out in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import Activation, ActKind, ConvAttrs, EltwiseAttrs, Op
from tcc_compiler.numerics import kernels as K
from tcc_compiler.quant import add_quant, conv_quant, quantize_graph, run_golden

INT32_MAX = 2 ** 31 - 1


def _conv(w, b, act=Activation(), pads=(0, 0, 0, 0), in_hw=(1, 1)):
    """x [1, C, H, W] -> conv(w [O, C, KH, KW], b [O], act) -> y; y is the graph output."""
    w = np.asarray(w, np.float32)
    o, c, kh, kw = w.shape
    h, wd = in_hw
    oh, ow = h + pads[0] + pads[2] - kh + 1, wd + pads[1] + pads[3] - kw + 1
    g = Graph()
    x = Value("x", (1, c, h, wd))
    g.inputs.append(x)
    wv = Value("w", w.shape, const=w)
    bv = Value("b", (o,), const=np.asarray(b, np.float32))
    y = Value("y", (1, o, oh, ow))
    g.add_node(Op.CONV, "conv", [x, wv, bv], [y], ConvAttrs(kernel=(kh, kw), pads=pads, act=act))
    g.outputs.append(y)
    return g


def _x(vals):
    return np.asarray(vals, np.float32).reshape(1, -1, 1, 1)


# ---- weights -----------------------------------------------------------------------------

def test_all_zero_output_channel():
    """Channel 1 has all-zero weights (max|W| = 0 would give scale 0): it gets s_w = 1, zero
    weights, and its output is exactly its bias. s_x = 2.55 / 255 = 0.01 (range [0, 2.55]);
    bias 0.5 -> int32 round(0.5 / (0.01 * 1)) = 50 -> 50 * 0.01 = 0.5."""
    g = _conv([[[[1.27]], [[-0.635]]], [[[0.0]], [[0.0]]]], [0.0, 0.5])
    quantize_graph(g, {"x": (0.0, 2.55)})
    w = g.nodes[0].inputs[1]
    assert w.quant.scale.tolist() == pytest.approx([0.01, 1.0])
    assert w.const[1].reshape(-1).tolist() == [0, 0]
    assert g.nodes[0].inputs[2].const.tolist() == [0, 50]
    out = run_golden(g, _x([1.0, 2.0]))
    # channel 0: q_x = round(1 / 0.01) - 128 = -28 and 72; acc = (100 * 127 + 200 * -64)
    assert out["int:y"].reshape(-1).tolist() == [100 * 127 + 200 * -64, 50]
    y = out["y"].reshape(-1)
    assert np.all(np.isfinite(y))
    assert y[1] == pytest.approx(0.5, rel=1e-6)
    assert y[0] == pytest.approx(-100 * 0.01 * 0.01, rel=1e-6)   # -100 units of 1e-4


def test_tiny_weight_magnitudes():
    """Weights 1e-6 and -2e-6: s_w = 2e-6 / 127; q = round(63.5) = 64 (ties to even), -127.
    x = (1.0, 0.5), s_x = 0.01, zp_x = -28 (range [-1, 1.55]): q_x = 72, 22;
    acc = (72 + 28) * 64 + (22 + 28) * -127 = 6400 - 6350 = 50."""
    g = _conv([[[[1e-6]], [[-2e-6]]]], [0.0])
    quantize_graph(g, {"x": (-1.0, 1.55)})
    w = g.nodes[0].inputs[1]
    assert float(w.quant.scale[0]) == pytest.approx(2e-6 / 127, rel=1e-12)
    assert w.const.reshape(-1).tolist() == [64, -127]
    out = run_golden(g, _x([1.0, 0.5]))
    assert out["int:y"].reshape(-1).tolist() == [50]
    assert out["y"].reshape(-1)[0] == pytest.approx(50 * 0.01 * 2e-6 / 127, rel=1e-6)


def test_tiny_weights_int8_epilogue_multiplier():
    """The same tiny conv with a ReLU output ranged [0, 2.55e-8]: s_y = 1e-10, multiplier
    s_x * s_w / s_y = 0.01 * (2e-6 / 127) / 1e-10 = 1.5748; y = round(50 * 1.5748) =
    round(78.74) = 79 -> q = 79 - 128 = -49, real 7.9e-9 (the float conv of the int8
    weights gives 50 * 0.01 * 2e-6 / 127 = 7.87e-9)."""
    g = _conv([[[[1e-6]], [[-2e-6]]]], [0.0], act=Activation(ActKind.RELU))
    quantize_graph(g, {"x": (-1.0, 1.55), "y": (0.0, 2.55e-8)})
    q = conv_quant(g.nodes[0])
    assert q.mult[0] / 2.0 ** q.shift[0] == pytest.approx(0.01 * 2e-6 / 127 / 1e-10, rel=1e-8)
    out = run_golden(g, _x([1.0, 0.5]))
    assert out["int:y"].reshape(-1).tolist() == [-49]
    assert out["y"].reshape(-1)[0] == pytest.approx(7.9e-9, rel=1e-6)


def test_bias_overflow_raises_weight_scale():
    """Bias 100 with weights ~1e-6 and s_x = 0.01: 100 / (0.01 * 2e-6 / 127) = 6.35e11 does
    not fit int32. ONNX Runtime's rule: s_w = 1.0001 * 100 / (2**31 - 1) / 0.01 = 4.657e-6;
    then q_w = round(1e-6 / 4.657e-6) = 0, round(-2e-6 / 4.657e-6) = 0 and the bias is
    round((2**31 - 1) / 1.0001) = 2,147,268,920, inside int32 (not clipped)."""
    g = _conv([[[[1e-6]], [[-2e-6]]]], [100.0])
    quantize_graph(g, {"x": (-1.0, 1.55)})
    w, b = g.nodes[0].inputs[1], g.nodes[0].inputs[2]
    s_w = 1.0001 * 100 / INT32_MAX / 0.01
    assert float(w.quant.scale[0]) == pytest.approx(s_w, rel=1e-12)
    assert w.const.reshape(-1).tolist() == [0, 0]
    assert int(b.const[0]) == round(INT32_MAX / 1.0001) == 2147268920
    assert float(b.quant.scale[0]) == pytest.approx(0.01 * s_w, rel=1e-12)
    y = run_golden(g, _x([1.0, 0.5]))["y"].reshape(-1)
    assert y[0] == pytest.approx(100.0, rel=1e-6)


def test_bias_in_range_keeps_weight_scale():
    """A bias that fits leaves s_w = max|W| / 127 untouched (here 0.01; s_x = 0.01, so bias
    0.5 -> 0.5 / 1e-4 = 5000)."""
    g = _conv([[[[1.27]], [[-0.635]]]], [0.5])
    quantize_graph(g, {"x": (-1.0, 1.55)})
    assert float(g.nodes[0].inputs[1].quant.scale[0]) == pytest.approx(0.01)
    assert int(g.nodes[0].inputs[2].const[0]) == 5000


# ---- activations -------------------------------------------------------------------------

def test_constant_nonzero_activation():
    """Zero weights, bias 0.7, ReLU: the output is the constant 0.7; its range (0.7, 0.7) is
    widened to [0, 0.7]: s_y = 0.7 / 255, zp_y = -128, q = -128 + 255 = 127 -> exactly 0.7."""
    g = _conv([[[[0.0]]]], [0.7], act=Activation(ActKind.RELU))
    quantize_graph(g, {"x": (-1.0, 1.55), "y": (0.7, 0.7)})
    y = g.outputs[0]
    assert float(y.quant.scale) == pytest.approx(0.7 / 255) and int(y.quant.zero_point) == -128
    out = run_golden(g, _x([0.3]))
    assert out["int:y"].reshape(-1).tolist() == [127]
    assert out["y"].reshape(-1)[0] == pytest.approx(0.7, rel=1e-6)


def test_constant_zero_activation():
    """A constant 0 output (range (0, 0)): s = 1, zp = 0, q = 0, real 0.0; no NaN."""
    g = _conv([[[[0.0]]]], [0.0], act=Activation(ActKind.RELU))
    quantize_graph(g, {"x": (-1.0, 1.55), "y": (0.0, 0.0)})
    out = run_golden(g, _x([0.3]))
    assert out["int:y"].reshape(-1).tolist() == [0] and out["y"].reshape(-1)[0] == 0.0


@pytest.mark.parametrize("act,expect_q", [
    # relu, calibrated [-3, 9] -> [0, 9]: s_y = 9/255, zp -128 (no negative level wasted);
    # y = q_x * 0.1 / (9/255) = q_x * 2.8333: -20 -> -56.7 -> clamp at zp; 29 -> 82.17 -> 82
    # -> -46; 70 -> 198.33 -> 198 -> 70
    ("relu", [-128, -46, 70]),
    # relu6 (clip 0..6), calibrated [-3, 9] -> [0, 6]: s_y = 6/255, zp -128;
    # y = q_x * 4.25: -20 -> clamp; 29 -> 123.25 -> 123 -> -5; 70 -> 297.5 -> 170 -> 127 (6.0)
    ("relu6", [-128, -5, 127]),
])
def test_relu_and_relu6_ranges(act, expect_q):
    a = Activation(ActKind.RELU) if act == "relu" else Activation(ActKind.CLIP, 0.0, 6.0)
    # identity 1x1 conv on 3 channels, weight 1: s_w = 1/127, q_w = 127
    g = _conv(np.eye(3).reshape(3, 3, 1, 1), [0.0, 0.0, 0.0], act=a)
    # s_x = 25.5 / 255 = 0.1, zp = round(-128 + 127.5) = 0 (half to even):
    # x = -2.0, 2.9, 7.0 -> q_x = -20, 29, 70; acc = 127 * q_x
    quantize_graph(g, {"x": (-12.75, 12.75), "y": (-3.0, 9.0)})
    y = g.outputs[0]
    hi = 9.0 if act == "relu" else 6.0
    assert int(y.quant.zero_point) == -128 and float(y.quant.scale) == pytest.approx(hi / 255)
    assert int(g.inputs[0].quant.zero_point) == 0
    q = conv_quant(g.nodes[0])
    assert (q.act_lo, q.act_hi) == (-128, 127)
    out = run_golden(g, _x([-2.0, 2.9, 7.0]))["int:y"].reshape(-1)
    assert out.tolist() == expect_q


def test_padding_uses_zero_point():
    """A 3x3 all-ones kernel with pad 1 on a 1x1 input sees only the centre pixel: with
    zp_x = -28 the 8 padded taps must add 0, not 28 * 127 each. x = 1.0 -> q = 72;
    acc = (72 + 28) * 127 = 12,700; real 12,700 * 0.01 / 127 = 1.0."""
    g = _conv(np.ones((1, 1, 3, 3)), [0.0], pads=(1, 1, 1, 1))
    quantize_graph(g, {"x": (-1.0, 1.55)})
    out = run_golden(g, _x([1.0]))
    assert out["int:y"].reshape(-1).tolist() == [12700]
    assert out["y"].reshape(-1)[0] == pytest.approx(1.0, rel=1e-6)


# ---- add with very different scales ------------------------------------------------------

def _add_graph(s_a, s_b, s_y):
    g = Graph()
    a, b, y = Value("a", (1, 1, 1, 2)), Value("b", (1, 1, 1, 2)), Value("y", (1, 1, 1, 2))
    for v, s in ((a, s_a), (b, s_b), (y, s_y)):
        v.dtype, v.quant = "int8", QuantParams(np.float64(s), np.int64(0))
    g.inputs += [a, b]
    node = g.add_node(Op.ADD, "add", [a, b], [y], EltwiseAttrs())
    g.outputs.append(y)
    return node


def test_add_very_different_scales_rounds_once():
    """s_a / s_y = 0.5 and s_b / s_y = 2**-12: 5 * 0.5 + 1 * 2**-12 = 2.500244 -> 3 and
    5 * 0.5 - 2**-12 = 2.499756 -> 2. Rounding each term separately would give 3 both times
    (round(2.5) + round(+-0.0002)); one shared shift keeps the tiny term exactly."""
    node = _add_graph(0.5, 2.0 ** -12, 1.0)
    p = add_quant(node)
    assert p.mult_b / 2.0 ** p.shift == 2.0 ** -12 and p.mult_a / 2.0 ** p.shift == 0.5
    a = np.array([5, 5], np.int8)
    b = np.array([1, -1], np.int8)
    y = K.add_int8(a, p.zp_a, p.mult_a, b, p.zp_b, p.mult_b, p.shift, p.zp_out)
    assert y.tolist() == [3, 2]


def test_add_scale_ratio_1e6_no_overflow():
    """s_b / s_y = 1e-6 next to s_a / s_y = 1: M_b = round(1e-6 * 2**30) = 1074 (S = 30 from
    s_a's 1.0 = 0.5 * 2**1); 127 * 1 + 127 * 1e-6 -> 127; -128 * 1 - 128e-6 -> -128."""
    node = _add_graph(1.0, 1e-6, 1.0)
    p = add_quant(node)
    assert p.shift == 30 and p.mult_a == 2 ** 30 and p.mult_b == 1074
    a = np.array([127, -128], np.int8)
    y = K.add_int8(a, 0, p.mult_a, a, 0, p.mult_b, p.shift, 0)
    assert y.tolist() == [127, -128]


# ---- empirical bias correction -----------------------------------------------------------

def test_bias_correction_removes_weight_rounding_shift():
    """Weights (1.0, 0.3) with s_w = 1/127: 0.3 * 127 = 38.1 -> 38, so the layer's output is
    low by 0.1/127 * x_1. With x_1 = 1.0 everywhere (exact on the input grid, s_x = 0.01) the
    mean error is -0.1/127 = -10 bias units (s_b = 0.01/127): the int32 bias goes 0 -> 10 and
    the raw output becomes exact."""
    from tcc_compiler.quant.bias_correction import correct_biases

    g = _conv([[[[1.0]], [[0.3]]]], [0.0], in_hw=(4, 4))
    fg = g.clone()
    quantize_graph(g, {"x": (-1.0, 1.55)})
    assert g.nodes[0].inputs[1].const.reshape(-1).tolist() == [127, 38]
    r = np.random.default_rng(0)
    xs = []
    for _ in range(3):
        x = np.ones((1, 2, 4, 4), np.float32)
        x[0, 0] = np.round(r.uniform(-1, 1.5, (4, 4)) / 0.01) * 0.01
        xs.append(x)
    changed = correct_biases(fg, g, xs)
    assert changed == {"conv": 10}
    assert g.nodes[0].inputs[2].const.tolist() == [10]
    y = run_golden(g, xs[0])["y"]
    np.testing.assert_allclose(y, xs[0][:, :1] * 1.0 + 0.3, rtol=1e-5, atol=1e-6)
