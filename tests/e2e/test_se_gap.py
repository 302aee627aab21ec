"""A squeeze-excitation block's global average pool gets its own int8 range (issue #13).

The feature map's range is set by a few large post-ReLU pixels; its per-channel means span a
few percent of it, so a pool sharing its input's parameters leaves the SE vector a handful of
int8 levels, and the gate's error multiplies every pixel. ``quant.quantize.gap_params``
requantizes the pool to its own range: compiled, run on the reference executor (bit-exact with
the golden model) and compared with ONNX Runtime, the output's SQNR goes from below 25 dB to
above it on the calibration inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.quant import quantize as Q
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker


def _se_model(path, c=16, h=16):
    """Conv 3x3 + Relu (bias -5: sparse peaks) -> SE (GAP, 1x1 conv + Relu, 1x1 conv, Sigmoid)
    -> Mul with the map -> 1x1 conv; input [1, 3, h, h], output [1, 8, h, h]."""
    rng = np.random.default_rng(0)
    t = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Conv", ["g", "w1", "b1"], ["s1"]),
             helper.make_node("Relu", ["s1"], ["s1r"]),
             helper.make_node("Conv", ["s1r", "w2", "b2"], ["s2"]),
             helper.make_node("Sigmoid", ["s2"], ["gate"]),
             helper.make_node("Mul", ["r", "gate"], ["m"]),
             helper.make_node("Conv", ["m", "w3", "b3"], ["y"])]
    inits = [t(rng.standard_normal((c, 3, 3, 3)) * 0.5, "w"), t(np.full(c, -5.0), "b"),
             t(rng.standard_normal((c // 2, c, 1, 1)) * 16.0, "w1"), t(np.zeros(c // 2), "b1"),
             t(rng.standard_normal((c, c // 2, 1, 1)) * 2.0, "w2"), t(np.zeros(c), "b2"),
             t(rng.standard_normal((8, c, 1, 1)) * 0.3, "w3"), t(np.zeros(8), "b3")]
    g = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, h, h])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def _sqnrs(tmp_path, label, path, calib):
    m = api.compile(path, "16x16x3", calibration=calib)
    gap = next(n for n in m.quantized_graph.nodes if n.op.value == "gap")
    prog = load_program(m.save(tmp_path / label))
    checker = Checker(prog, path)
    res = [checker.check(x, prog.run(x)) for x in calib[:6]]
    assert all(r["bit_exact"] for r in res)
    return [r["sqnr_db"] for r in res], gap


def test_se_pool_requantized_to_its_own_range(tmp_path, monkeypatch):
    path = tmp_path / "se.onnx"
    _se_model(path)
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(12)]
    own, gap = _sqnrs(tmp_path, "own", path, calib)
    assert float(gap.output.quant.scale) < 0.5 * float(gap.inputs[0].quant.scale)
    monkeypatch.setattr(Q, "GAP_MAX_SPAN", 0.0)       # before: the pool shares its input's
    shared, gap = _sqnrs(tmp_path, "shared", path, calib)
    assert gap.output.quant is gap.inputs[0].quant
    assert min(shared) < 25.0 <= min(own), (shared, own)


@pytest.mark.parametrize("ratio", [1.0, 0.6])
def test_gap_shares_when_its_range_is_not_much_narrower(ratio):
    """A pooled range that, with the headroom, is over half the input's keeps sharing (never
    clips); a fixed or int16 input always does."""
    from tcc_compiler.ir.graph import QuantParams
    from tcc_compiler.ir.ops import Op

    class V:
        def __init__(self, name, dtype="int8", quant=None):
            self.name, self.dtype, self.quant = name, dtype, quant

    class N:
        op = Op.GAP

    x = V("x", quant=Q.activation_params(0.0, 10.0))
    n = N()
    n.inputs, n.output = [x], V("g")
    ranges = {"g": (0.0, 10.0 * ratio / Q.GAP_HEADROOM)}
    assert Q.gap_params(n, ranges) is None
    ranges = {"g": (0.0, 1.0)}
    own = Q.gap_params(n, ranges)
    assert own is not None and np.isclose(float(own.scale), 2.0 / 255)
    x.dtype = "int16"
    assert Q.gap_params(n, ranges) is None
    x.dtype = "int8"
    n.output = V("g", dtype="float32", quant=QuantParams(np.float64(0.1), np.int64(0)))
    assert Q.gap_params(n, ranges) is None
