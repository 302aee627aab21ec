"""LeakyRelu (and PRelu with one slope) after a conv as the two-slope epilogue (CONV_CFG
out_mode bit2, specs/quantization.md "Two-slope epilogue"), end to end: no table, the executor
bit for bit equal to the golden model, closer to ONNX Runtime than the table it replaces; also
through a depthwise kernel run as parts (accumulate mode) and with an int16 output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tests.e2e.test_lut_eltwise import HW, _sqnr_and_exact, conv_act_conv

N = helper.make_node


def _depthwise_leaky():
    """Conv 3x3 -> LeakyRelu -> depthwise 7x7 (parts of at most 5x5) -> LeakyRelu -> Conv."""
    r = np.random.default_rng(3)
    inits = {"w": r.normal(0, 0.4, (8, 3, 3, 3)), "b": r.normal(0, 0.2, 8),
             "d": r.normal(0, 0.15, (8, 1, 7, 7)), "db": r.normal(0, 0.1, 8),
             "w2": r.normal(0, 0.3, (8, 8, 1, 1)), "b2": r.normal(0, 0.1, 8)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, kernel_shape=[3, 3]),
             N("LeakyRelu", ["c"], ["a"], alpha=0.1),
             N("Conv", ["a", "d", "db"], ["e"], pads=[3] * 4, kernel_shape=[7, 7], group=8),
             N("LeakyRelu", ["e"], ["f"], alpha=0.2),
             N("Conv", ["f", "w2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "dw_leaky",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, HW, HW])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _deconv_leaky():
    """ConvTranspose (stride 2, kernel 4: one conv per output phase, interleaved) ->
    LeakyRelu -> Conv, as FlowNetS's decoder."""
    r = np.random.default_rng(6)
    inits = {"t": r.normal(0, 0.3, (3, 8, 4, 4)), "tb": r.normal(0, 0.1, 8),
             "w2": r.normal(0, 0.3, (8, 8, 3, 3)), "b2": r.normal(0, 0.1, 8)}
    nodes = [N("ConvTranspose", ["x", "t", "tb"], ["c"], strides=[2, 2], pads=[1] * 4,
               kernel_shape=[4, 4]),
             N("LeakyRelu", ["c"], ["a"], alpha=0.1),
             N("Conv", ["a", "w2", "b2"], ["y"], pads=[1] * 4, kernel_shape=[3, 3])]
    g = helper.make_graph(nodes, "deconv_leaky",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, 8, 2 * HW, 2 * HW])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


CASES = {
    "leakyrelu": (lambda: conv_act_conv("LeakyRelu", alpha=0.1), 1),
    "prelu_one_slope": (lambda: conv_act_conv("PRelu", extra=["sl"], inits={
        "sl": np.full((8, 1, 1), 0.25)}), 1),
    "depthwise_parts": (_depthwise_leaky, 2),
    "conv_transpose_phases": (_deconv_leaky, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_slope_epilogue_bit_exact_and_accurate(tmp_path, case):
    build, fused = CASES[case]
    m, res = _sqnr_and_exact(tmp_path, build())
    assert "lut" not in m.report["npu_ops"], m.report["npu_ops"]
    two = [lay for lay in m.report["layers"] if "two-slope epilogue" in lay["tiling"]]
    assert len(two) == fused, [lay["tiling"] for lay in m.report["layers"]]
    assert all(exact for exact, _ in res), res
    assert min(s for _, s in res) >= 30.0, res


def test_two_slope_beats_the_table(tmp_path):
    """The same LeakyRelu model as a table (the pass disabled) and as the two-slope epilogue:
    one rounding instead of two gains SQNR on every input."""
    from tcc_compiler.passes import fuse

    model = conv_act_conv("LeakyRelu", alpha=0.1)
    _, two = _sqnr_and_exact(tmp_path / "two", model)
    orig = fuse.leaky_slope
    fuse.leaky_slope = lambda node: None
    try:
        m, table = _sqnr_and_exact(tmp_path / "table", model)
    finally:
        fuse.leaky_slope = orig
    assert m.report["npu_ops"].get("lut", 0) == 0   # the table rides in the conv's epilogue
    assert all(e for e, _ in two + table)
    assert all(t2 > t1 for (_, t2), (_, t1) in zip(two, table)), (two, table)


def test_int16_output_two_slope_bit_exact(tmp_path):
    """An int16 output (a precision file) takes the two-slope epilogue too (a table could
    not: it needs an int8 output)."""
    model = conv_act_conv("LeakyRelu", alpha=0.1)
    r = np.random.default_rng(123)
    calib = [r.normal(0, 1, (1, 3, HW, HW)).astype(np.float32) for _ in range(8)]
    probe = api.compile(model, f"{HW}x{HW}x3", calibration=calib)
    conv = next(n for n in probe.quantized_graph.nodes if n.op is Op.CONV
                and n.attrs.act.kind is ActKind.LEAKY)
    prec = tmp_path / "p.json"
    prec.write_text('{"int16": ["%s"]}' % conv.name)
    m = api.compile(model, f"{HW}x{HW}x3", calibration=calib, precision=str(prec))
    assert any(n.output.dtype == "int16" for n in m.quantized_graph.nodes
               if n.op is Op.CONV and n.attrs.act.kind is ActKind.LEAKY)
    prog = load_program(m.save(tmp_path / "out"))
    onnx.save(model, tmp_path / "m.onnx")
    checker = Checker(prog, tmp_path / "m.onnx")
    x = np.random.default_rng(4).normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
    c = checker.check(x, prog.run(x))
    assert c["bit_exact"] and c["sqnr_db"] >= 35.0, c
