"""FoldAffineAfterActivation: a BatchNorm after a conv's Relu/Clip (ConvMixer's Conv -> Relu ->
BN) folds into the conv as scaled weights and a per-channel output clamp, exactly (float vs
ONNX Runtime, also through the textual IR) and bit-exactly through the NPU (executor vs
golden), with negative and zero BatchNorm scales; it declines a conv with other readers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import CLAMP_INPUT, Op
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker

C = 8


def _model(gamma: np.ndarray, act: str = "Relu", second_reader: bool = False,
           pad: int = 1) -> onnx.ModelProto:
    """x -> Conv 3x3 -> act -> BN -> Conv 3x3 (zero-padded: the BN cannot fold into it) -> y
    (``second_reader``: the act's output is also a graph output)."""
    rng = np.random.default_rng(3)
    t = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [t(rng.standard_normal((C, 3, 3, 3)) * 0.3, "w0"), t(rng.standard_normal(C) * .2, "b0"),
             t(gamma, "g"), t(rng.standard_normal(C) * 0.3, "beta"),
             t(rng.standard_normal(C) * 0.2, "mean"), t(rng.uniform(0.5, 2, C), "var"),
             t(rng.standard_normal((C, C, 3, 3)) * 0.2, "w1"), t(np.zeros(C), "b1"),
             t(np.float32(-0.3), "lo"), t(np.float32(0.8), "hi")]
    act_node = (helper.make_node("Relu", ["c0"], ["r"]) if act == "Relu" else
                helper.make_node("Clip", ["c0", "lo", "hi"], ["r"]))
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4), act_node,
             helper.make_node("BatchNormalization", ["r", "g", "beta", "mean", "var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Conv", ["bn", "w1", "b1"], ["y"], pads=[pad] * 4)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "bn_after_act",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _gamma(signs: bool) -> np.ndarray:
    g = np.linspace(0.3, 1.7, C)
    if signs:
        g[2], g[5] = -0.6, 0.0     # a negative scale flips the clamp, a zero one is constant
    return g


@pytest.mark.parametrize("act", ["Relu", "Clip"])
@pytest.mark.parametrize("signs", [False, True], ids=["positive", "mixed-signs"])
def test_fires_once_and_matches_ort(act, signs):
    import onnxruntime as ort

    from tcc_compiler.ir.printer import ConstTable, print_graph
    from tcc_compiler.ir.text import parse_graph

    m = _model(_gamma(signs), act)
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(m))
    assert pm.stats.fired["fold-affine-after-activation"] == 1
    assert [n.op for n in g.nodes] == [Op.CONV, Op.CONV]   # no affine op left
    conv = g.nodes[0]
    assert conv.input(CLAMP_INPUT) is not None and conv.attrs.act.kind.value == "none"
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32) * 2
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = run_float(g, x)[g.outputs[0].name]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # the clamp survives the textual IR (a dump is a valid input)
    consts = ConstTable()
    again = run_float(parse_graph(print_graph(g, consts), consts.arrays), x)
    np.testing.assert_allclose(again[g.outputs[0].name], got, rtol=1e-6, atol=1e-6)


def test_does_not_fire_when_the_activation_has_another_reader():
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(_model(_gamma(False), second_reader=True)))
    assert pm.stats.fired.get("fold-affine-after-activation", 0) == 0
    assert len(g.nodes) == 3 and all(n.input(CLAMP_INPUT) is None for n in g.nodes)


@pytest.mark.parametrize("signs", [False, True], ids=["positive", "mixed-signs"])
def test_folded_clamp_is_bit_exact_on_the_npu(tmp_path, signs):
    m = _model(_gamma(signs))
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    prog = load_program(api.compile(path, "12x12x3", calibration=calib).save(tmp_path / "out"))
    recs = [cmd for cmd in prog.cmd.commands if type(cmd).__name__ == "ConvTile"]
    assert len(recs) >= 2
    for seed in range(3):
        x = np.random.default_rng(10 + seed).standard_normal((1, 3, 12, 12)).astype(
            np.float32)
        r = Checker(prog, path).check(x, prog.run(x))
        assert r["bit_exact"] and r["sqnr_db"] > 25


def test_qdq_export_applies_the_clamp(tmp_path):
    """export-onnx writes the per-channel clamp (Max/Min at the dequantized int8 bounds):
    ONNX Runtime on the export matches the golden model's output to within 1 LSB (near-ties,
    tests/export/test_export_qdq.py) on every element; without the clamp nodes the negative
    and zero-scale channels would be far off."""
    import onnxruntime as ort

    from tcc_compiler.export import export_qdq
    from tcc_compiler.quant.golden import run_golden
    from tcc_compiler.runtime.check import sqnr_db

    m = _model(_gamma(True))
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    cm = api.compile(m, "12x12x3", calibration=calib)
    g = cm.quantized_graph
    model = export_qdq(g)
    assert sum(nd.op_type in ("Max", "Min") for nd in model.graph.node) == 2
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32) * 2
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = run_golden(g, x)[g.outputs[0].name]
    assert sqnr_db(ref.reshape(got.shape), got) > 40
