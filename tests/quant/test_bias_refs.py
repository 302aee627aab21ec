"""Bias correction's two-fold check on the float outputs calibration kept (quant/bias_refs.py,
``refs`` of :func:`~tcc_compiler.quant.bias_correction.gated_bias_correction`): the same
folds, decision and biases as without them, the odd inputs' error pass run only when the
first fold gains, and refs that differ from the check's own float pass never used."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler.interp.onnx_float import float_values
from tcc_compiler.ir.graph import Graph
from tcc_compiler.quant import bias_correction as bc
from tcc_compiler.quant.bias_refs import OutputRefs
from tcc_compiler.quant.calibrate import observe
from tests.quant.test_bias_gate import _bias, _inputs, _layer


def _refs(fg, xs) -> list[dict]:
    """Each input's float outputs, as calibration's float pass computes them."""
    refs = OutputRefs(fg)
    observe(fg, xs, ["minmax"], also=refs.visit)
    return refs.per_input(len(xs))


def _counted(monkeypatch) -> list:
    """Count the error jobs run (one per input: the layer is a chain of one)."""
    jobs = []
    real = bc._chain_job
    monkeypatch.setattr(bc, "_chain_job", lambda *a: jobs.append(1) or real(*a))
    return jobs


@pytest.mark.parametrize("x1", [(1.0, -1.0), (1.0, 0.3), (0.3, 1.0), (1.0, 1.0)])
def test_refs_give_the_same_check_and_skip_the_odd_errors_when_the_first_fold_loses(
        monkeypatch, x1):
    """With calibration's outputs the check's folds, reason and bias are those without them;
    the error jobs run on the 3 even inputs and, only when the first fold gains, on the 3
    odd ones (without refs always on all 6)."""
    xs = _inputs(*x1, n=6)
    fg, g = _layer()
    plain = bc.gated_bias_correction(fg, g, xs)
    fg2, g2 = _layer()
    jobs = _counted(monkeypatch)
    with_refs = bc.gated_bias_correction(fg2, g2, xs, _refs(fg2, xs))
    assert (with_refs.folds, with_refs.reason, with_refs.changed) == \
        (plain.folds, plain.reason, plain.changed)
    assert _bias(g2) == _bias(g)
    first_gains = plain.folds[0]["with_db"] > plain.folds[0]["without_db"]
    assert len(jobs) == (6 if first_gains else 3)


def test_refs_that_differ_from_the_float_pass_are_not_used(monkeypatch):
    """An even input's kept output one ulp off: the check runs its own float pass over the
    odd inputs (all 6 error jobs, the outputs of the odd inputs from it), the same result."""
    xs = _inputs(1.0, -1.0, n=6)
    fg, g = _layer()
    plain = bc.gated_bias_correction(fg, g, xs)
    fg2, g2 = _layer()
    refs = _refs(fg2, xs)
    refs[2]["y"] = np.nextafter(refs[2]["y"], np.float32(np.inf))
    refs[1]["y"] = refs[1]["y"] * 0   # would change the first fold if it were read
    jobs = _counted(monkeypatch)
    res = bc.gated_bias_correction(fg2, g2, xs, refs)
    assert (res.folds, res.reason) == (plain.folds, plain.reason)
    assert len(jobs) == 6
    fg3, g3 = _layer()
    res = bc.gated_bias_correction(fg3, g3, xs, refs[:5])   # not one per input: not used
    assert (res.folds, res.reason) == (plain.folds, plain.reason)


def test_output_refs_keep_each_output_per_input_within_the_budget():
    """The graph outputs only, in input order, copies; past the budget nothing; per_input
    None unless every output was seen once per input."""
    fg, _ = _layer()
    xs = _inputs(1.0, 1.0, n=4)
    refs = OutputRefs(fg)
    observe(fg, xs, ["minmax"], also=refs.visit)
    kept = refs.per_input(4)
    want = [fl["y"] for fl in float_values(fg, ["y"], xs)]
    assert [list(k) for k in kept] == [["y"]] * 4
    for k, w in zip(kept, want):
        assert k["y"].tobytes() == w.tobytes()
    assert refs.per_input(3) is None
    small = OutputRefs(fg, budget=3 * 16 * 4)   # 3 of the 4 outputs
    observe(fg, xs, ["minmax"], also=small.visit)
    assert small.per_input(4) is None
    value = np.ones((1, 1, 4, 4), np.float32)
    one = OutputRefs(fg)
    one.visit("y", value)
    one.visit("x", value)
    value[:] = 2
    assert one.per_input(1)[0]["y"].tolist() == np.ones((1, 1, 4, 4)).tolist()
    assert OutputRefs(Graph()).per_input(0) is None


def _model():
    """conv 3x3 (4 -> 4 channels) + Relu on [1, 4, 8, 8]."""
    rng = np.random.default_rng(3)
    w = nh.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                      h.make_node("Relu", ["c"], ["y"])], "m",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 8, 8])], [w])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_compile_hands_calibrations_outputs_to_the_check(monkeypatch, mode):
    """The driver keeps the float outputs in the calibration pass for ``auto`` (each input's,
    equal to a float pass of the calibrated graph) and hands them to bias correction; for
    another mode it keeps none."""
    from tcc_compiler.driver import compile_model, quantizing
    from tcc_compiler.options import CompileOptions

    seen = {}
    real = quantizing.apply_bias_correction

    def spy(mode_, float_graph, qgraph, inputs, refs=None):
        seen.update(refs=refs, graph=float_graph, inputs=list(inputs))
        return real(mode_, float_graph, qgraph, inputs, refs)
    monkeypatch.setattr(quantizing, "apply_bias_correction", spy)
    rng = np.random.default_rng(0)
    cal = [rng.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    compile_model(_model(), CompileOptions(input_whc=(8, 8, 4), calibration=cal,
                                           bias_correction=mode))
    if mode == "off":
        assert seen["refs"] is None
        return
    out = seen["graph"].outputs[0].name
    want = [fl[out] for fl in float_values(seen["graph"], [out], seen["inputs"])]
    assert len(seen["refs"]) == 4
    for kept, w in zip(seen["refs"], want):
        assert kept[out].tobytes() == w.tobytes()
