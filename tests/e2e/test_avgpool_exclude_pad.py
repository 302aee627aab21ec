"""AveragePool with padding and count_include_pad=0 (Inception's and ShuffleNet's pools, timm's
ResNet-D ``avg_down`` with ceil_mode): each output pixel is divided by its own count of input
pixels. The NPU runs one POOL_CFG per border region of constant divisor; executor == golden bit
for bit, in stream order and in random legal interleavings, close to ONNX Runtime; the QDQ
export (integer ops with per-pixel multipliers) equals the golden model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.export import export_qdq
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics import window_counts
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.runtime import load_program
from tests.conftest import make_model_impl
from tests.helpers.exactness import assert_exact_and_hazard_free

N = helper.make_node
HW = 15

#: case -> AveragePool attributes (all count_include_pad=0)
CASES = {
    "3x3_s1_p1": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "3x3_s2_p1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "7x7_asym": dict(kernel_shape=[7, 7], strides=[1, 1], pads=[0, 0, 1, 1]),
    "2x2_s2_ceil": dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
}


def _model(pool: dict) -> onnx.ModelProto:
    """conv 3x3 + relu -> AveragePool(count_include_pad=0) -> conv 1x1."""
    r = np.random.default_rng(5)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "b0": r.normal(0, 0.1, 8),
             "w1": r.normal(0, 0.3, (6, 8, 1, 1)), "b1": r.normal(0, 0.1, 6)}
    nodes = [N("Conv", ["x", "w0", "b0"], ["c"], pads=[1] * 4, kernel_shape=[3, 3]),
             N("Relu", ["c"], ["r"]),
             N("AveragePool", ["r"], ["p"], count_include_pad=0, **pool),
             N("Conv", ["p", "w1", "b1"], ["y"], kernel_shape=[1, 1])]
    return make_model_impl(nodes, [1, 3, HW, HW], inits, opset=17)


def _inputs(seeds) -> list[np.ndarray]:
    return [np.random.default_rng(s).normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
            for s in seeds]


def test_window_counts_are_the_in_bounds_window_sizes():
    # 5 pixels, kernel 3, stride 2, one pad each side: windows [-1,2) [1,4) [3,6)
    assert window_counts(5, 3, 2, 1, 3).tolist() == [2, 3, 2]
    # ceil_mode overhang: 5 pixels, kernel 2, stride 2, out 3: [0,2) [2,4) [4,6)
    assert window_counts(5, 2, 2, 0, 3).tolist() == [2, 2, 1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_avgpool_exclude_pad_bit_exact_and_accurate(tmp_path, case):
    model = _model(CASES[case])
    onnx.save(model, tmp_path / "m.onnx")
    m = api.compile(model, f"{HW}x{HW}x3", calibration=_inputs(range(8)))
    prog = load_program(m.save(tmp_path / "out"))
    (pool,) = [lay for lay in m.report["layers"] if lay["op"] == "avgpool"]
    x = assert_exact_and_hazard_free(prog, tmp_path / "m.onnx", _inputs(range(3)), case)
    # the QDQ export (integer-side pool with per-pixel multipliers): the pool's int8 output
    # in ONNX Runtime equals the golden model's, element for element
    g = m.quantized_graph
    (node,) = [n for n in g.nodes if n.op is Op.AVGPOOL]
    qdq = export_qdq(g)
    name = f"{node.output.name}_quantized"
    qdq.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT8, None))
    sess = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {sess.get_inputs()[0].name: x})))[name]
    gold = run_golden(g, x, keep=True)["int:" + node.output.name]
    np.testing.assert_array_equal(got[0], gold.transpose(2, 0, 1))
    # cut at the divisor changes: one POOL_CFG per distinct divisor run, many tiles
    cfgs = [c for c in prog.cmd.commands if type(c).__name__ == "PoolCfg"]
    assert len({(c.mult, c.shift) for c in cfgs}) > 1 and pool["tiles"] > 1
    # the pooled values themselves: golden (dequantized) within 2 LSB of ONNX Runtime's float
    # pool (a wrong border divisor is off by up to a third of the value)
    model.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, None))
    ref = ort.InferenceSession(model.SerializeToString()).run(["p"], {"x": x})[0][0]
    q = node.output.quant
    deq = (gold.transpose(2, 0, 1).astype(np.float64) - q.zero_point) * q.scale
    assert np.abs(deq - ref).max() <= 2 * q.scale, np.abs(deq - ref).max() / q.scale
