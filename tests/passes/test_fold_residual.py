"""FoldAffineIntoResidual: a BatchNorm (+Relu) after a fused residual conv folds into its
epilogue with a per-channel shortcut scale, exactly (float vs ONNX Runtime) and bit-exactly
through the NPU (executor vs golden)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker

C = 8


def _model(gamma: np.ndarray) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    t = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [t(rng.standard_normal((C, 3, 3, 3)) * 0.3, "w0"), t(rng.standard_normal(C) * .1, "b0"),
             t(rng.standard_normal((C, C, 3, 3)) * 0.2, "w1"), t(np.zeros(C), "b1"),
             t(gamma, "g"), t(rng.standard_normal(C) * 0.3, "beta"),
             t(rng.standard_normal(C) * 0.2, "mean"), t(rng.uniform(0.5, 2, C), "var"),
             t(rng.standard_normal((C, C, 1, 1)) * 0.3, "w2"), t(np.zeros(C), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["s"], pads=[1] * 4),
             helper.make_node("Conv", ["s", "w1", "b1"], ["c1"], pads=[1] * 4),
             helper.make_node("Add", ["c1", "s"], ["sum"]),
             helper.make_node("BatchNormalization", ["sum", "g", "beta", "mean", "var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _ops(g):
    return [n.op for n in g.nodes]


def test_fires_for_positive_scales_and_matches_ort():
    import onnxruntime as ort

    m = _model(np.linspace(0.3, 1.7, C))
    g = PassManager(default_pipeline(), verify_each=True).run(import_onnx(m))
    assert _ops(g) == [Op.CONV, Op.CONV, Op.CONV]         # BN+Relu folded into the residual conv
    res = g.nodes[1]
    assert res.input(3) is not None and res.input(4) is not None
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = run_float(g, x)[g.outputs[0].name]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_does_not_fire_with_a_negative_scale():
    gamma = np.linspace(0.3, 1.7, C)
    gamma[2] = -0.5
    g = PassManager(default_pipeline(), verify_each=True).run(import_onnx(_model(gamma)))
    assert len(g.nodes) == 4        # the affine stays an op of its own


def test_folded_residual_is_bit_exact_on_the_npu(tmp_path):
    m = _model(np.linspace(0.3, 1.7, C))
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    prog = load_program(api.compile(path, "12x12x3", calibration=calib).save(tmp_path / "out"))
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    r = Checker(prog, path).check(x, prog.run(x))
    assert r["bit_exact"] and r["sqnr_db"] > 30


def test_fold_into_residual_ir():
    """Hand-computed: s = [2, 0.5], t = [1, 0.5]; W' = s[o] W[o] = [[2, 4], [1.5, 2]];
    b' = s b + t = [2 * 0.5 + 1, 0.5 * -1 + 0.5] = [2, 0]; the shortcut scale is s."""
    from tcc_compiler.ir.printer import print_graph
    from tcc_compiler.ir.text import graphs_equal, parse_graph
    from tcc_compiler.passes.fold_affine import FoldAffineIntoResidual

    head = 'graph "t" {\n  input %x : f32[1,2,3,3]\n'
    attrs = ("{kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=%d, "
             "act=none}")
    before = head + (
        "  const %w : f32[2,2,1,1] = dense<[1.0, 2.0, 3.0, 4.0]>\n"
        "  const %b : f32[2] = dense<[0.5, -1.0]>\n"
        "  const %s : f32[2,1,1,1] = dense<[2.0, 0.5]>\n"
        "  const %t : f32[2] = dense<[1.0, 0.5]>\n"
        '  %c : f32[1,2,3,3] = conv "conv" (%x, %w, %b, %x)\n      ' + attrs % 1
        + ' src=["conv", "add"]\n'
        '  %y : f32[1,2,3,3] = conv "bn" (%c, %s, %t)\n      ' + attrs % 2 + ' src=["bn"]\n'
        "  output %y\n}\n")
    expected = head + (
        "  const %w_1 : f32[2,2,1,1] = dense<[2.0, 4.0, 1.5, 2.0]>\n"
        "  const %b_1 : f32[2] = dense<[2.0, 0.0]>\n"
        "  const %conv_sc_scale : f32[2] = dense<[2.0, 0.5]>\n"
        '  %y : f32[1,2,3,3] = conv "conv" (%x, %w_1, %b_1, %x, %conv_sc_scale)\n      '
        + attrs % 1 + ' src=["conv", "add", "bn"]\n'
        "  output %y\n}\n")
    pm = PassManager([FoldAffineIntoResidual()], verify_each=True)
    g = pm.run(parse_graph(before))
    assert pm.stats.fired["fold-affine-into-residual"] == 1
    diff = graphs_equal(g, parse_graph(expected))
    assert diff is None, f"{diff}\n{print_graph(g)}"
