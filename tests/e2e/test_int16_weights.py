"""int16 weights end to end (specs/quantization.md, "int16 weights"): convs (plain, depthwise,
grouped) and an FC with int16 weights compile, run on the reference executor bit for bit equal
to the golden integer model (whole tensors and tiled into a small SRAM, in random legal queue
orders), are closer to ONNX Runtime than all-int8, and their QDQ export runs in ONNX Runtime
and agrees with tccc."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers.precision import compile_check, random_inputs, really_tiled
from helpers.qdq_export import qdq_vs_run

from tcc_compiler import api
from tcc_compiler.export.qdq import OPSET_INT16, export_qdq
from tcc_compiler.isa import spec
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.target import load_target

N = helper.make_node
HW = 12
#: Every layer of :func:`weighted_net` that can take int16 weights (the last FC's output is
#: raw int32 logits, so it keeps int8 weights).
WEIGHTED = ["conv", "dw", "grouped", "fc1"]


def weighted_net() -> onnx.ModelProto:
    """conv-relu -> depthwise conv-relu -> grouped conv (2 groups) -> GAP -> flatten -> FC-relu
    -> FC (logits). Weights with a heavy tail (a few large taps per channel), which int8's
    per-channel scale rounds coarsely."""
    r = np.random.default_rng(5)

    def heavy(*shape):
        w = r.normal(0, .05, shape)
        w.reshape(shape[0], -1)[:, 0] = r.choice([-1.0, 1.0], shape[0])   # one large tap
        return w

    inits = {"w1": heavy(8, 3, 3, 3), "b1": r.normal(0, .1, 8),
             "wd": heavy(8, 1, 3, 3), "bd": r.normal(0, .1, 8),
             "wg": heavy(8, 4, 3, 3), "bg": r.normal(0, .1, 8),
             "f1": heavy(16, 8), "c1": r.normal(0, .1, 16),
             "f2": r.normal(0, .3, (5, 16)), "c2": r.normal(0, .1, 5)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["a"], pads=[1] * 4, name="conv"),
             N("Relu", ["a"], ["ar"]),
             N("Conv", ["ar", "wd", "bd"], ["d"], pads=[1] * 4, group=8, name="dw"),
             N("Relu", ["d"], ["dr"]),
             N("Conv", ["dr", "wg", "bg"], ["g"], pads=[1] * 4, group=2, name="grouped"),
             N("GlobalAveragePool", ["g"], ["p"]), N("Flatten", ["p"], ["f"]),
             N("Gemm", ["f", "f1", "c1"], ["h"], transB=1, name="fc1"), N("Relu", ["h"], ["hr"]),
             N("Gemm", ["hr", "f2", "c2"], ["y"], transB=1, name="fc2")]
    g = helper.make_graph(
        nodes, "weighted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _compile_check(tmp_path, precision, target=None, schedules=0):
    """:func:`helpers.precision.compile_check` of :func:`weighted_net` (nearest rounding, no
    bias correction: the weights' own rounding error is what int16 weights remove)."""
    return compile_check(tmp_path, weighted_net(), HW, precision, target=target,
                         schedules=schedules, weight_rounding="nearest", bias_correction="off")


def test_int16_weights_bit_exact_and_more_accurate(tmp_path):
    _, _, r8 = _compile_check(tmp_path, "int8")
    m, prog, r16 = _compile_check(tmp_path, {"int16_weights": WEIGHTED + ["fc2"]})
    dtypes = {n.name: n.inputs[1].dtype for n in m.quantized_graph.nodes
              if n.op.value in ("conv", "fc")}
    assert dtypes == {"conv": "int16", "dw": "int16", "grouped": "int16", "fc1": "int16",
                      "fc2": "int8"}
    assert all(exact for exact, _ in r8 + r16)
    assert np.mean([s for _, s in r16]) > np.mean([s for _, s in r8]) + 3.0, (r8, r16)
    p = m.report["precision"]
    assert p["int16_weight_layers"] == WEIGHTED and p["int16_layers"] == []
    assert "raw int32" in p["kept_int8_weights"]["fc2"]
    assert m.manifest["precision"]["int16_weight_layers"] == WEIGHTED
    cost = p["cost"]
    assert cost["layer_weight_bytes"]["added"] > 0
    assert cost["estimated_latency_ms"]["mixed"] > cost["estimated_latency_ms"]["int8"]
    for name in WEIGHTED:   # 2 bytes per weight, and a slower MAC rate
        lay = cost["layers"][name]
        assert lay["weight_bytes"]["mixed"] > lay["weight_bytes"]["int8"]
        assert lay["compute_ms"]["mixed"] > lay["compute_ms"]["int8"]
    cfgs = [c for c in prog.cmd.commands if type(c).__name__ == "ConvCfg"]
    assert sum(bool(c.flags & spec.CONV_FLAG_WIDE_W) for c in cfgs) == len(WEIGHTED)


def test_int16_weights_with_int16_outputs_bit_exact(tmp_path):
    _, _, res = _compile_check(tmp_path, {"int16": ["conv", "dw"], "int16_weights": WEIGHTED})
    assert all(exact for exact, _ in res)


@pytest.mark.parametrize("kib", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_int16_weights_tiled_into_small_sram_bit_exact_in_any_queue_order(tmp_path, kib):
    t = load_target().with_sram(kib * 1024)
    m, _, res = _compile_check(tmp_path, {"int16_weights": WEIGHTED}, target=t, schedules=2)
    assert all(exact for exact, _ in res)
    assert really_tiled(m, HW)


def test_qdq_export_of_int16_weights_runs_in_onnx_runtime_and_agrees(tmp_path):
    m, _, _ = _compile_check(tmp_path, {"int16_weights": WEIGHTED})
    qdq = export_qdq(m.quantized_graph)
    assert qdq.opset_import[0].version == OPSET_INT16
    w = {i.name: i.data_type for i in qdq.graph.initializer if i.name.endswith("_quantized")}
    assert sum(t == TensorProto.INT16 for t in w.values()) == len(WEIGHTED)
    # equal but for float32 rounding of near-ties (one int8 output step is 1/255 of range)
    for diff, top in qdq_vs_run(m, random_inputs(9, 3, HW)):
        assert diff <= 1e-2 * top


@pytest.mark.slow   # two compiles of a 50-layer zoo model
def test_zoo_mobilenet_v2_int16_weights_bit_exact(tmp_path):
    from tcc_compiler import zoo
    model = zoo.build("mobilenet-v2", 32, 32)
    convs = [n.name for n in api.compile(model, "32x32x3").quantized_graph.nodes
             if n.op.value == "conv"][:16]
    m = api.compile(model, "32x32x3", precision={"int16_weights": convs, "int16": convs[:4]})
    assert len(m.report["precision"]["int16_weight_layers"]) == len(convs)
    onnx.save(model, tmp_path / "mv2.onnx")
    prog = load_program(m.save(tmp_path / "out"))
    checker = Checker(prog, tmp_path / "mv2.onnx")
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    assert checker.check(x, prog.run(x))["bit_exact"]
