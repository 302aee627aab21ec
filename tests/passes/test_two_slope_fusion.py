"""fuse-two-slope: a conv's LeakyRelu (or one-slope PRelu) becomes the conv's LEAKY activation
(the two-slope epilogue); IR text before/after, the cases it must leave alone, and the float
numerics against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.passes.fuse import FuseTwoSlope
from tests.passes.test_fusion import CONSTS, HEAD, _apply, _assert_ir, _conv1

LEAKY = '  %y : f32[1,2,3,3] = lut "act" (%c) {func=leakyrelu, alpha=0.1, beta=0.0} src=["act"]\n'


def test_fires_on_conv_leakyrelu():
    before = HEAD + CONSTS + _conv1("c", "conv", ["x", "w", "b"]) + LEAKY + "  output %y\n}\n"
    expected = (HEAD + CONSTS + _conv1("y", "conv", ["x", "w", "b"], "leaky(0.1, 0.0)",
                                       ["conv", "act"]) + "  output %y\n}\n")
    g, fired = _apply(FuseTwoSlope(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fires_on_one_slope_prelu():
    before = (HEAD + CONSTS + "  const %s : f32[2,1,1] = dense<[0.25, 0.25]>\n"
              + _conv1("c", "conv", ["x", "w", "b"])
              + '  %y : f32[1,2,3,3] = lut "act" (%c, %s) {func=prelu, alpha=0.0, beta=0.0} '
                'src=["act"]\n  output %y\n}\n')
    g, fired = _apply(FuseTwoSlope(), before)
    assert fired == 1
    (conv,) = g.nodes
    assert conv.attrs.act.kind is ActKind.LEAKY and conv.attrs.act.lo == 0.25


@pytest.mark.parametrize("case", ["shared", "shortcut", "slope_above_one", "per_channel"])
def test_does_not_fire(case):
    conv = _conv1("c", "conv", ["x", "w", "b"] + (["x"] if case == "shortcut" else []))
    act = LEAKY
    consts = CONSTS
    if case == "slope_above_one":
        act = LEAKY.replace("alpha=0.1", "alpha=1.5")
    if case == "per_channel":
        consts += "  const %s : f32[2,1,1] = dense<[0.25, 0.5]>\n"
        act = ('  %y : f32[1,2,3,3] = lut "act" (%c, %s) {func=prelu, alpha=0.0, beta=0.0} '
               'src=["act"]\n')
    outs = "  output %c\n  output %y\n}\n" if case == "shared" else "  output %y\n}\n"
    before = HEAD + consts + conv + act + outs
    g, fired = _apply(FuseTwoSlope(), before)
    assert fired == 0
    _assert_ir(g, before)


def test_float_pipeline_matches_onnxruntime():
    """conv -> LeakyRelu -> ConvTranspose -> LeakyRelu through the default passes: every
    activation fused (no lut left), the float output equal to ONNX Runtime's."""
    import onnxruntime as ort

    r = np.random.default_rng(0)
    inits = {"w": r.normal(0, 0.5, (4, 3, 3, 3)), "b": r.normal(0, 0.2, 4),
             "t": r.normal(0, 0.5, (4, 4, 4, 4)), "tb": r.normal(0, 0.2, 4)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
             helper.make_node("LeakyRelu", ["c"], ["a"], alpha=0.1),
             helper.make_node("ConvTranspose", ["a", "t", "tb"], ["d"], strides=[2, 2],
                              pads=[1] * 4, kernel_shape=[4, 4]),
             helper.make_node("LeakyRelu", ["d"], ["y"], alpha=0.2)]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    graph = PassManager(default_pipeline()).run(import_onnx(model))
    assert not any(n.op is Op.LUT for n in graph.nodes)
    assert sum(n.op is Op.CONV and n.attrs.act.kind is ActKind.LEAKY for n in graph.nodes) == 5
    x = r.normal(0, 1, (1, 3, 6, 6)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = run_float(graph, x)
    got = got[graph.outputs[0].name] if isinstance(got, dict) else got
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
