"""GPTQ's H summed fast (quant/hessian_dw.py, quant/weight_rounding.HessianSum): a depthwise
conv's H from shifted products and a small layer's columns gathered over inputs give the
im2col Gram matrix summed per input, up to float64 rounding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics import jit
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.quant import hessian_dw, weight_rounding
from tcc_compiler.quant.weight_rounding import HessianSum, _taps

needs_kernel = pytest.mark.skipif(not hessian_dw.kernel_available(),
                                  reason="the depthwise H kernel needs numba (the fast extra)")

#: kernel, strides, dilations, pads (t, l, b, r): Lite0's 3x3/5x5 stride 1 and 2 windows,
#: asymmetric pads, a dilated and a 1x1 window.
GEOMETRIES = [((3, 3), (1, 1), (1, 1), (1, 1, 1, 1)), ((5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),
              ((3, 3), (2, 2), (1, 1), (0, 0, 1, 1)), ((5, 5), (2, 2), (1, 1), (1, 1, 2, 2)),
              ((3, 5), (2, 1), (2, 1), (0, 1, 2, 3)), ((7, 7), (3, 2), (1, 2), (3, 3, 3, 3)),
              ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))]


def _gram(x, attrs):
    cols = _taps(x, SimpleNamespace(op=Op.CONV, attrs=attrs))
    return cols @ cols.transpose(0, 2, 1)


@needs_kernel
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("channels", [5, 67])
def test_depthwise_h_is_the_im2col_gram_matrix(geometry, channels):
    kernel, strides, dilations, pads = geometry
    attrs = SimpleNamespace(kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                            group=channels)
    x = np.random.default_rng(7).standard_normal((1, channels, 13, 11)).astype(np.float32)
    got, want = hessian_dw.depthwise_hessian(x, attrs), _gram(x, attrs)
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_array_equal(got, got.transpose(0, 2, 1))
    assert np.abs(got - want).max() <= 1e-13 * np.abs(want).max()


def _model(hw: int, cin: int = 8):
    """x -> depthwise 5x5 conv -> 1x1 conv -> global pool -> Flatten -> Gemm."""
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal(s).astype(np.float32), n) for n, s in
             [("wd", (cin, 1, 5, 5)), ("w1", (16, cin, 1, 1)), ("wf", (4, 16)),
              ("bf", (4,))]]
    nodes = [helper.make_node("Conv", ["x", "wd"], ["d"], group=cin, pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["d"], ["dr"]),
             helper.make_node("Conv", ["dr", "w1"], ["p"]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return PassManager(default_pipeline()).run(import_onnx(m))


@pytest.mark.parametrize("batch,compiled", [(1, True), (3, True), (1 << 20, True),
                                            (3, False)])
def test_hessian_sum_is_the_per_input_gram_sum(monkeypatch, batch, compiled):
    """Every layer's H (depthwise, 1x1 and FC) against the Gram matrix of each input's
    columns summed input by input, with the columns of up to ``batch`` positions gathered
    (1: every input multiplied alone; 1 << 20: all inputs gathered and multiplied at the
    end); without the compiled kernels the depthwise conv's H is the Gram matrix itself."""
    monkeypatch.setattr(weight_rounding, "BATCH_COLUMNS", batch)
    monkeypatch.setattr(jit, "_enabled", jit._enabled and compiled)
    graph = _model(hw=6)
    xs = [np.random.default_rng(s).standard_normal((1, 8, 6, 6)).astype(np.float32)
          for s in range(5)]
    hs = HessianSum(graph, bounded=False)
    by_value = {}
    for x in xs:
        vals = {"x": x}
        vals.update(run_float(graph, {"x": x}, keep=True))
        for name in hs.names():
            hs.visit(name, vals[name])
            by_value.setdefault(name, []).append(vals[name])
    got = hs.hess
    ops = {n.name: n for n in graph.nodes}
    assert {ops[n].op for n in got} == {Op.CONV, Op.FC} and len(got) == 3
    for name, h in got.items():
        node = ops[name]
        want = sum(_gram_node(v, node) for v in by_value[node.inputs[0].name])
        assert h.shape == want.shape
        assert np.abs(h - want).max() <= 1e-13 * np.abs(want).max(), name


def _gram_node(x, node):
    cols = _taps(np.asarray(x, np.float32), node)
    return cols @ cols.transpose(0, 2, 1)


@pytest.mark.parametrize("kernel,stride,cheaper", [((3, 3), 1, True), ((5, 5), 1, True),
                                                   ((5, 5), 2, True), ((3, 3), 2, True),
                                                   ((3, 3), 4, False)])
def test_shifts_only_where_they_cost_less(kernel, stride, cheaper):
    """A shifted product costs half a Gram product (hessian_dw.SHIFT_PRODUCT_COST, measured):
    a stride-2 3x3 depthwise conv's 52 shifted products per output position (13 per input
    value, 4 values per position) cost 26 against the Gram matrix's 45, a stride-4 one's 208
    cost 104."""
    pads = (kernel[0] // 2,) * 4
    attrs = SimpleNamespace(kernel=kernel, strides=(stride, stride), dilations=(1, 1),
                            pads=pads, group=16)
    node = SimpleNamespace(attrs=attrs, inputs=[SimpleNamespace(shape=(1, 16, 56, 56))])
    assert hessian_dw.shifts_cheaper(node) is cheaper


@needs_kernel
def test_depthwise_h_summed_channels_last_is_the_same_sum():
    """The depthwise H is summed in the kernel's [K, K, C] layout and transposed once
    (hessian_dw.depthwise_hessian_kkc): the same float64 additions, so the same H bit for bit
    as the [C, K, K] arrays of each input summed in input order."""
    graph = _model(hw=9)
    dw = next(n for n in graph.nodes if n.op == Op.CONV and n.attrs.group > 1)
    xs = [np.random.default_rng(s).standard_normal((1, 8, 9, 9)).astype(np.float32)
          for s in range(4)]
    kkc = hessian_dw.depthwise_hessian_kkc(xs[0], dw.attrs)
    assert kkc.shape == (25, 25, 8)
    np.testing.assert_array_equal(kkc.transpose(2, 0, 1),
                                  hessian_dw.depthwise_hessian(xs[0], dw.attrs))
    hs = HessianSum(graph, bounded=False)
    want = None
    for x in xs:
        hs.visit(dw.inputs[0].name, x)
        h = hessian_dw.depthwise_hessian(x, dw.attrs)
        want = h if want is None else want + h
    got = hs.hess[dw.name]
    assert got.flags.c_contiguous and got.shape == (8, 25, 25)
    np.testing.assert_array_equal(got, want)


@needs_kernel
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_depthwise_h_added_in_place_is_the_same_sum(geometry):
    """hessian_dw.DepthwiseHessianSum adds each input's H inside the kernel (each entry once,
    the diagonal too) and reuses the padded input buffer: bit for bit the [K, K, C] arrays of
    each input summed in input order (inputs of different magnitudes, so a stale value in the
    buffer or an entry added twice shows)."""
    kernel, strides, dilations, pads = geometry
    attrs = SimpleNamespace(kernel=kernel, strides=strides, dilations=dilations, pads=pads,
                            group=6)
    xs = [(10.0 ** s * np.random.default_rng(s).standard_normal((1, 6, 13, 11)))
          .astype(np.float32) for s in range(3)]
    acc = hessian_dw.DepthwiseHessianSum(attrs)
    want = None
    for x in xs:
        acc.add(x)
        h = hessian_dw.depthwise_hessian_kkc(x, attrs)
        want = h if want is None else want + h
    assert acc.kkc.shape == want.shape
    assert acc.kkc.tobytes() == want.tobytes()


@needs_kernel
def test_depthwise_h_sum_refuses_another_channel_count():
    """The kernel adds into the running sum without bounds checks: an input of another
    channel count than the first is refused, not written past the array."""
    attrs = SimpleNamespace(kernel=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
                            group=6)
    acc = hessian_dw.DepthwiseHessianSum(attrs)
    acc.add(np.ones((1, 6, 5, 5), np.float32))
    with pytest.raises(ValueError, match="depthwise H sum"):
        acc.add(np.ones((1, 9, 5, 5), np.float32))
