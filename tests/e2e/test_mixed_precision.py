"""Mixed precision end to end: int16 activations on chosen layers compile, run on the reference
executor bit for bit equal to the golden integer model (whole-tensor and tiled into a small
SRAM, in stream order and in random legal queue interleavings), and are at least as accurate
against ONNX Runtime as all-int8; the QDQ export of int16 tensors runs in ONNX Runtime and
agrees with tccc."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers.precision import compile_check, random_inputs, really_tiled
from helpers.qdq_export import qdq_vs_run

from tcc_compiler import api, zoo
from tcc_compiler.export.qdq import OPSET_INT16, export_qdq
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.target import load_target

N = helper.make_node
HW = 16
#: Every layer that can be int16 in :func:`residual_net`: convs (one depthwise, one with a
#: fused residual add), a standalone add; the pools and the view follow their inputs.
WIDE = ["conv1", "conv2", "add", "dw", "conv3"]


def residual_net() -> onnx.ModelProto:
    """conv-relu -> conv -> add(+relu) -> depthwise conv (+ residual add, fused) -> maxpool ->
    1x1 conv-relu -> avgpool -> GAP -> flatten -> FC: every op kind int16 reaches."""
    r = np.random.default_rng(0)
    inits = {"w1": r.normal(0, .4, (8, 3, 3, 3)), "b1": r.normal(0, .2, 8),
             "w2": r.normal(0, .3, (8, 8, 3, 3)), "b2": r.normal(0, .1, 8),
             "wd": r.normal(0, .3, (8, 1, 3, 3)), "bd": r.normal(0, .1, 8),
             "w3": r.normal(0, .3, (16, 8, 1, 1)), "b3": r.normal(0, .1, 16),
             "fw": r.normal(0, .3, (10, 16)), "fb": r.normal(0, .1, 10)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
             N("Add", ["c2", "r1"], ["a"], name="add"), N("Relu", ["a"], ["ar"]),
             N("Conv", ["ar", "wd", "bd"], ["d"], pads=[1] * 4, group=8, name="dw"),
             N("Add", ["d", "c2"], ["a2"], name="add2"),
             N("MaxPool", ["a2"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], name="mp"),
             N("Conv", ["mp", "w3", "b3"], ["c3"], name="conv3"), N("Relu", ["c3"], ["r3"]),
             N("AveragePool", ["r3"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             N("GlobalAveragePool", ["ap"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    g = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _compile_check(tmp_path, model, precision, target=None, schedules=0):
    """:func:`helpers.precision.compile_check` at ``HW``; (compiled model, per-input
    (bit_exact, sqnr_db))."""
    m, _, res = compile_check(tmp_path, model, HW, precision, target=target,
                              schedules=schedules)
    return m, res


def test_int16_layers_bit_exact_and_more_accurate(tmp_path):
    m8, r8 = _compile_check(tmp_path, residual_net(), "int8")
    m16, r16 = _compile_check(tmp_path, residual_net(), WIDE)
    dtypes = {n.name: n.output.dtype for n in m16.quantized_graph.nodes}
    assert dtypes == {"conv1": "int16", "conv2": "int16", "add": "int16", "dw": "int16",
                      "mp": "int16", "conv3": "int16", "ap": "int16", "g": "int16",
                      "y": "int32"}
    assert all(exact for exact, _ in r8 + r16)
    # one input may do better in int8 by chance (errors cancelling); on average int16 wins
    assert np.mean([s for _, s in r16]) > np.mean([s for _, s in r8]) + 1.0, (r8, r16)
    assert m16.manifest["precision"]["int16_layers"] == WIDE
    cost = m16.report["precision"]["cost"]
    assert cost["dram_bytes_per_image"]["added"] > 0   # 2-byte elements move more bytes
    assert cost["estimated_latency_ms"]["mixed"] > cost["estimated_latency_ms"]["int8"]


@pytest.mark.parametrize("kib", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_int16_tiled_into_small_sram_bit_exact_in_any_queue_order(tmp_path, kib):
    t = load_target().with_sram(kib * 1024)
    m, res = _compile_check(tmp_path, residual_net(), WIDE, target=t, schedules=2)
    assert all(exact for exact, _ in res)
    assert really_tiled(m, HW)


def test_qdq_export_of_int16_runs_in_onnx_runtime_and_agrees(tmp_path):
    m, _ = _compile_check(tmp_path, residual_net(), WIDE)
    qdq = export_qdq(m.quantized_graph)
    assert qdq.opset_import[0].version == OPSET_INT16
    zps = [i for i in qdq.graph.initializer if i.name.startswith("c1_zero_point")]
    assert zps and zps[0].data_type == TensorProto.INT16
    # equal but for float32 rounding of near-ties (a 1-LSB int16 step is 2**-15 of range)
    for diff, top in qdq_vs_run(m, random_inputs(9, 3, HW)):
        assert diff <= 1e-3 * top


@pytest.mark.slow   # two compiles of a 50-layer zoo model
def test_zoo_mobilenet_v2_int16_layers_bit_exact(tmp_path):
    model = zoo.build("mobilenet-v2", 32, 32)
    fg_names = [n.name for n in api.compile(model, "32x32x3").quantized_graph.nodes
                if n.op.value in ("conv", "add")][:12]
    m = api.compile(model, "32x32x3", precision=fg_names)
    assert m.report["precision"]["int16_layers"]
    onnx.save(model, tmp_path / "mv2.onnx")
    prog = load_program(m.save(tmp_path / "out"))
    checker = Checker(prog, tmp_path / "mv2.onnx")
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    assert checker.check(x, prog.run(x))["bit_exact"]
