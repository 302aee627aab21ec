"""Bias correction's error pass in chains of layers (quant/bias_pass.py ``chains``,
quant/bias_correction.py ``_chain_job``): a conv's mean output error and the next conv's
quantized input from one pass over the float value (quant/bias_fused.py, kernel
quant/bias_jit.py), the same float64 errors and integers, bit for bit, as mean_output_error and
quantize_value; and the convs through the golden model's routines (GoldenModel.conv), the bytes
eval_int_node gives."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import RELU, ConvAttrs, Op
from tcc_compiler.numerics import jit
from tcc_compiler.quant import quantize_graph
from tcc_compiler.quant import bias_correction as bc
from tcc_compiler.quant import bias_pass
from tcc_compiler.quant.analyze import quantize_value
from tcc_compiler.quant.golden import GoldenModel, eval_int_node, prepare_conv
from tcc_compiler.quant.params import mean_output_error

pytestmark = pytest.mark.skipif(not jit.warm(), reason="needs the compiled kernels (numba)")


def _chain_graph(n: int, c: int = 16, hw: int = 64, residual_break: bool = False):
    """(float graph, quantized graph): x [1, c, hw, hw] -> n 1x1 convs c -> c with Relu, each
    reading the one before (with ``residual_break``, the third reads x again)."""
    r = np.random.default_rng(1)
    g = Graph()
    x = Value("x", (1, c, hw, hw))
    g.inputs.append(x)
    prev, ranges = x, {"x": (-2.0, 2.0)}
    for i in range(n):
        src = x if residual_break and i == 2 else prev
        w = Value(f"w{i}", (c, c, 1, 1), const=r.normal(0, 0.3, (c, c, 1, 1)).astype(np.float32))
        b = Value(f"b{i}", (c,), const=r.normal(0, 0.1, c).astype(np.float32))
        y = Value(f"y{i}", (1, c, hw, hw))
        g.add_node(Op.CONV, f"conv{i}", [src, w, b], [y], ConvAttrs(kernel=(1, 1), act=RELU))
        ranges[f"y{i}"] = (0.0, 3.0)
        prev = y
    g.outputs.append(prev)
    fg = g.clone()
    quantize_graph(g, ranges)
    return fg, g


def _inputs(n: int, c: int = 16, hw: int = 64):
    r = np.random.default_rng(2)
    return [r.uniform(-2, 2, (1, c, hw, hw)).astype(np.float32) for _ in range(n)]


def _reference_errors(fg, g, xs) -> list[list[np.ndarray]]:
    """Per input, per layer: the isolated error computed layer by layer from the public
    pieces (quantize_value, eval_int_node, mean_output_error), each value quantized anew."""
    from tcc_compiler.interp.onnx_float import float_values
    layers = [n for n in g.nodes if n.op is Op.CONV]
    names = [v.name for v in fg.inputs] + [n.output.name for n in fg.nodes]
    out = []
    for fl in float_values(fg, names, xs):
        errs = []
        for n in layers:
            q = eval_int_node(n, [quantize_value(fl[n.inputs[0].name], n.inputs[0]), None, None],
                              prepare_conv(n))
            f = fl[n.output.name]
            errs.append(mean_output_error(q.reshape(f.shape[2], f.shape[3], f.shape[1]),
                                          n.output, f))
        out.append(errs)
    return out


def test_chains_cut_at_the_length_limit_and_where_a_layer_reads_another_value():
    _, g = _chain_graph(6)
    layers = [n for n in g.nodes if n.op is Op.CONV]
    assert [[n.name for n in c] for c in bias_pass.chains(layers)] == \
        [[f"conv{i}" for i in range(bias_pass.CHAIN_LAYERS)],
         [f"conv{i}" for i in range(bias_pass.CHAIN_LAYERS, 6)]]
    _, g = _chain_graph(4, residual_break=True)
    layers = [n for n in g.nodes if n.op is Op.CONV]
    assert [[n.name for n in c] for c in bias_pass.chains(layers)] == \
        [["conv0", "conv1"], ["conv2", "conv3"]]


def test_a_long_run_is_cut_where_the_values_between_chains_are_smallest():
    """1x1 convs of 96, 96, 16, 96, 96, 16, 96, 96 output channels, each reading the one
    before: cut every CHAIN_LAYERS (4) layers, the boundary would be a 96-channel value; the
    cut puts the two 16-channel values there instead (32 channels of boundary against 96)."""
    r = np.random.default_rng(4)
    g = Graph()
    x = Value("x", (1, 16, 8, 8))
    g.inputs.append(x)
    prev, ranges = x, {"x": (-2.0, 2.0)}
    for i, c in enumerate([96, 96, 16, 96, 96, 16, 96, 96]):
        cin = prev.shape[1]
        w = Value(f"w{i}", (c, cin, 1, 1),
                  const=r.normal(0, 0.3, (c, cin, 1, 1)).astype(np.float32))
        b = Value(f"b{i}", (c,), const=np.zeros(c, np.float32))
        y = Value(f"y{i}", (1, c, 8, 8))
        g.add_node(Op.CONV, f"conv{i}", [prev, w, b], [y], ConvAttrs(kernel=(1, 1), act=RELU))
        ranges[f"y{i}"] = (0.0, 3.0)
        prev = y
    g.outputs.append(prev)
    quantize_graph(g, ranges)
    layers = [n for n in g.nodes if n.op is Op.CONV]
    assert bias_pass.CHAIN_LAYERS == 4
    assert [[n.name for n in c] for c in bias_pass.chains(layers)] == \
        [["conv0", "conv1", "conv2"], ["conv3", "conv4", "conv5"], ["conv6", "conv7"]]


def test_error_and_quantized_is_mean_output_error_and_quantize_value_bit_for_bit():
    """Random NHWC outputs and float values: 16 channels; 256 channels (the kernel's padded
    row, 1 KiB stride); an int16 reader; a NaN (no quantized array, the same error); and the
    cases the compiled mean does not take (fewer than ELIDE_ELEMS values, one channel)."""
    from tcc_compiler.quant.bias_fused import error_and_quantized
    _, g = _chain_graph(2, 16, 8)
    quant_type = type(g.nodes[0].output.quant)
    r = np.random.default_rng(3)
    for (h, w, c), rdtype in [((64, 64, 16), "int8"), ((16, 16, 256), "int8"),
                              ((48, 40, 32), "int16"), ((64, 64, 16), "nan")]:
        out = Value("o", (1, c, h, w))
        out.quant, out.dtype = quant_type(0.023, -7), "int8"
        reader = Value("o", (1, c, h, w))
        reader.quant = quant_type(scale=0.0004 if rdtype == "int16" else 0.023,
                                  zero_point=0 if rdtype == "int16" else -7)
        reader.dtype = "int16" if rdtype == "int16" else "int8"
        q = r.integers(-128, 128, (h, w, c)).astype(np.int8)
        f = r.normal(0, 2, (1, c, h, w)).astype(np.float32)
        if rdtype == "nan":
            f[0, 3, 5, 7] = np.nan
        err, fq = error_and_quantized(q, out, f, reader)
        want = mean_output_error(q, out, f)
        assert err.dtype == np.float64
        assert np.array_equal(err.view(np.int64), want.view(np.int64))
        if rdtype == "nan":
            assert fq is None
        else:
            assert fq.dtype == quantize_value(f, reader).dtype
            np.testing.assert_array_equal(fq, quantize_value(f, reader))
    out = Value("o", (1, 16, 8, 8))
    out.quant, out.dtype = quant_type(0.02, 0), "int8"
    small = np.zeros((8, 8, 16), np.int8)
    assert error_and_quantized(small, out, np.zeros((1, 16, 8, 8), np.float32), out) is None
    one = Value("o", (1, 1, 256, 256))
    one.quant, one.dtype = quant_type(0.02, 0), "int8"
    assert error_and_quantized(np.zeros((256, 256, 1), np.int8), one,
                               np.zeros((1, 1, 256, 256), np.float32), one) is None


def test_error_pass_in_chains_gives_the_layer_by_layer_errors(monkeypatch):
    """Five chained convs (two chains): every layer's error on every input is the one
    computed layer by layer from the public pieces, bit for bit, and the fused pass did serve
    the links inside the chains (3 per input)."""
    from tcc_compiler.quant import bias_fused
    fg, g = _chain_graph(5)
    xs = _inputs(3)
    calls = []
    real = bias_fused.error_and_quantized

    def spy(*a):
        got = real(*a)
        calls.append(got is not None)
        return got
    monkeypatch.setattr(bc, "error_and_quantized", spy)
    sums = bc._error_sums(fg, g, xs)
    want = _reference_errors(fg, g, xs)
    assert sum(calls) == 3 * len(xs)
    for n in sums.layers:
        k = [m.name for m in sums.layers].index(n.name)
        total = np.zeros(n.output.shape[1])
        for errs in want:
            total = total + errs[k]
        assert np.array_equal(sums.total[n.name].view(np.int64), total.view(np.int64))


def test_golden_conv_is_eval_int_node():
    """GoldenModel.conv (its per-shape routines) gives the bytes eval_int_node gives."""
    fg, g = _chain_graph(2, 16, 16)
    model = GoldenModel(g)
    r = np.random.default_rng(4)
    for n in g.nodes:
        x = r.integers(-128, 128, (16, 16, 16)).astype(np.int8)
        want = eval_int_node(n, [x, None, None], prepare_conv(n))
        got = model.conv(n, [x, None, None])
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
