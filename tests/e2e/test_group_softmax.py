"""Softmax over channel groups on the NPU (LUT_TILE's softmax mode): a DFL-like head (conv to
4 x 16 bins, Reshape [1, 4, 16, H*W] -> Softmax(axis 2) -> Reshape back, a grouped 1x1 conv
with weights 0..15) imports as one ``group_softmax``, matches ONNX Runtime in float, and runs
on the executor bit-exact against the golden model, hazard-free and close to ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.errors import UnsupportedError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.runtime import load_program
from tests.conftest import make_model_impl
from tests.helpers.exactness import assert_exact_and_hazard_free

N = helper.make_node
HW = 10
BINS = 16


def dfl_head(sides: int = 4, opset: int = 17, hw: int = HW) -> onnx.ModelProto:
    """conv 3x3 (3 -> 8) + Relu, conv 1x1 to sides x 16 logits, the group softmax as the DFL
    rewrite writes it, then the expectation as a grouped 1x1 conv with weights 0..15."""
    r = np.random.default_rng(7)
    c = sides * BINS
    inits = {"w0": r.normal(0, 0.4, (8, 3, 3, 3)), "w1": r.normal(0, 0.6, (c, 8, 1, 1)),
             "b1": r.normal(0, 1.0, (c,)),
             "s4": np.array([1, sides, BINS, hw * hw], np.int64),
             "sb": np.array([1, c, hw, hw], np.int64),
             "wd": np.tile(np.arange(BINS, dtype=np.float32).reshape(1, BINS, 1, 1),
                           (sides, 1, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1] * 4), N("Relu", ["c0"], ["r0"]),
             N("Conv", ["r0", "w1", "b1"], ["logits"]),
             N("Reshape", ["logits", "s4"], ["l4"]), N("Softmax", ["l4"], ["p4"], axis=2),
             N("Reshape", ["p4", "sb"], ["p"]),
             N("Conv", ["p", "wd"], ["y"], group=sides, kernel_shape=[1, 1])]
    return make_model_impl(nodes, [1, 3, hw, hw], inits, opset=opset)


def _inputs(seeds) -> list[np.ndarray]:
    return [np.random.default_rng(s).normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
            for s in seeds]


def test_float_import_is_one_group_softmax_and_matches_ort():
    model = dfl_head()
    g = import_onnx(model)
    ops = [n.op for n in g.nodes]
    assert ops.count(Op.GROUP_SOFTMAX) == 1 and Op.SOFTMAX not in ops
    assert not any(n.op is Op.RESHAPE for n in g.nodes)
    x = _inputs([0])[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(g, x)[g.outputs[0].name], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axis", [1, 3])
def test_softmax_over_other_axes_is_not_a_group_softmax(axis):
    """Softmax over axis 1 (the 4 sides) or 3 (the pixels) of the same Reshape is no
    channel-group softmax: refused (axis 1), or the host softmax of the last axis (3)."""
    model = dfl_head()
    for n in model.graph.node:
        if n.op_type == "Softmax":
            n.attribute[0].i = axis
    if axis == 1:
        with pytest.raises(UnsupportedError, match="Softmax"):
            import_onnx(model)
    else:
        assert Op.GROUP_SOFTMAX not in [n.op for n in import_onnx(model).nodes]


@pytest.mark.parametrize("sides", [4, 1])
def test_group_softmax_bit_exact_hazard_free_and_accurate(tmp_path, sides):
    model = dfl_head(sides)
    onnx.save(model, tmp_path / "m.onnx")
    m = api.compile(model, f"{HW}x{HW}x3", calibration=_inputs(range(8)))
    prog = load_program(m.save(tmp_path / "out"))
    (lay,) = [lay for lay in m.report["layers"] if lay["op"] == "group_softmax"]
    assert "softmax over groups of 16" in lay["tiling"]
    assert_exact_and_hazard_free(prog, tmp_path / "m.onnx", _inputs(range(3)), str(sides))


def test_qdq_export_of_group_softmax_is_close_to_the_golden_model():
    """``tccc export-onnx``'s form (Reshape, float Softmax over axis 2, Reshape, QDQ at 1/256)
    runs in ONNX Runtime within one output step of the NPU's integer softmax."""
    from tcc_compiler.export.qdq import export_qdq
    from tcc_compiler.quant.golden import run_golden
    from tcc_compiler.runtime.check import sqnr_db

    g = api.compile(dfl_head(), f"{HW}x{HW}x3", calibration=_inputs(range(8))).quantized_graph
    qdq = export_qdq(g)
    onnx.checker.check_model(qdq)
    x = _inputs([5])[0]
    gold = run_golden(g, x, keep=True)
    sess = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"x": x}))}
    y = outs[g.outputs[0].name]
    assert sqnr_db(gold[g.outputs[0].name].reshape(-1), y.reshape(-1)) >= 30.0


def test_group_softmax_read_by_a_host_op_runs(tmp_path):
    """The grouped probabilities ``p`` (a view of the group softmax back to its input's
    shape) feed a conv whose weights are computed (``wd`` times the input's mean), so the
    conv runs on the host and ``p`` crosses the boundary. The NPU program must name that
    output ``p``, as the segment lists it: it was named ``p4_grouped`` and tccc refused its
    own folder ("segments[0].outputs: 'p' is not made by this segment", exit 2)."""
    model = dfl_head()
    conv = onnx.NodeProto()
    conv.CopyFrom(model.graph.node.pop())
    conv.input[1] = "wdx"
    model.graph.node.extend([N("ReduceMean", ["x"], ["mu"], axes=[1, 2, 3], keepdims=1),
                             N("Mul", ["wd", "mu"], ["wdx"]), conv])
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "m.onnx")
    m = api.compile(model, f"{HW}x{HW}x3", calibration=_inputs(range(8)))
    prog = load_program(m.save(tmp_path / "out"))
    from tcc_compiler.runtime.check import Checker

    x = _inputs([5])[0]
    res = prog.run(x)
    assert Checker(prog, tmp_path / "m.onnx").check(x, res)["bit_exact"]
