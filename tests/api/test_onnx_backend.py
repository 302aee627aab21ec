"""tccc as an ONNX backend: ONNX's own backend test runner over the node tests tccc applies to.

The runner (``onnx.backend.test.BackendTest``) prepares each test model through
:class:`tcc_compiler.onnx_backend.TcccBackend` and compares with the reference outputs stored in
onnx, using the documented INT8 tolerance (:data:`tcc_compiler.onnx_backend.INT8_TOLERANCE_LSB`
LSBs of the reference's range) instead of float32's 1e-3. ``PASSING`` is the pass list; the
other node tests of the ops tccc converts must be refused with a one-line TccError (3-D or
5-D tensors, integer inputs, batch > 1, dilated pooling, ...), never crash or mismatch.
"""

from __future__ import annotations

import re
import unittest
import warnings

import numpy as np
import onnx
import onnx.backend.test
import pytest

from tcc_compiler.onnx_backend import (INT8_TOLERANCE_LSB, TcccBackend, int8_close,
                                  int8_tolerance, supports_device)
from tcc_compiler.errors import TccError

#: Node tests that pass through ONNX's runner (measured; keep sorted).
PASSING = sorted("""
test_averagepool_2d_ceil test_averagepool_2d_ceil_last_window_starts_on_pad
test_averagepool_2d_default test_averagepool_2d_pads test_averagepool_2d_pads_count_include_pad
test_averagepool_2d_precomputed_pads test_averagepool_2d_precomputed_pads_count_include_pad
test_averagepool_2d_precomputed_same_upper test_averagepool_2d_precomputed_strides
test_averagepool_2d_same_lower test_averagepool_2d_same_upper test_averagepool_2d_strides
test_conv_with_autopad_same test_conv_with_strides_and_asymmetric_padding
test_conv_with_strides_no_padding test_conv_with_strides_padding test_convtranspose
test_globalaveragepool test_globalaveragepool_precomputed
test_maxpool_2d_ceil test_maxpool_2d_ceil_output_size_reduce_by_one test_maxpool_2d_default
test_maxpool_2d_pads test_maxpool_2d_precomputed_pads test_maxpool_2d_precomputed_same_upper
test_maxpool_2d_precomputed_strides test_maxpool_2d_same_lower test_maxpool_2d_same_upper
test_maxpool_2d_strides
""".split())

#: Node tests of the ONNX ops tccc's frontend converts (the cases the backend applies to).
APPLICABLE = re.compile(
    r"^test_(conv|maxpool|averagepool|globalaveragepool|relu|add|sum|mul|batchnorm|gemm|"
    r"matmul|softmax|argmax|flatten|reshape|clip|pad|transpose|identity|dropout|reduce_mean|"
    r"squeeze|unsqueeze)")


class _Int8BackendTest(onnx.backend.test.BackendTest):
    """ONNX's runner with the INT8 comparison of :func:`tcc_compiler.onnx_backend.int8_close`."""

    @classmethod
    def assert_similar_outputs(cls, ref_outputs, outputs, rtol, atol, model_dir=None):
        assert len(outputs) == len(ref_outputs)
        for out, ref in zip(outputs, ref_outputs):
            ref = np.asarray(ref)
            assert np.asarray(out).dtype == ref.dtype, (out.dtype, ref.dtype)
            err = float(np.abs(np.asarray(out, np.float64) - ref).max()) if ref.size else 0.0
            assert int8_close(out, ref), f"max |err| {err:.4g} > {int8_tolerance(ref):.4g}"


def _node_cases():
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx's case generators warn about float overflow
        return [c for c in load_model_tests(kind="node") if APPLICABLE.match(c.name)]


_CASES = _node_cases()


def test_onnx_backend_runner_passes_the_pass_list():
    """ONNX's runner, restricted to PASSING, run as one unittest suite (the thousands of
    excluded cases would otherwise each appear as a skipped pytest item)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = _Int8BackendTest(TcccBackend, __name__)
        runner.include("^(" + "|".join(PASSING) + ")_cpu$")
        result = unittest.TextTestRunner(stream=open("/dev/null", "w"), verbosity=0).run(
            runner.test_suite)
    problems = [f"{t.id()}: {tb.splitlines()[-1]}" for t, tb in result.failures + result.errors]
    assert not problems, problems
    assert result.testsRun - len(result.skipped) == len(PASSING)


@pytest.mark.parametrize("case", [c for c in _CASES if c.name not in PASSING],
                         ids=lambda c: c.name)
def test_other_applicable_cases_are_refused_cleanly(case):
    """Not in the pass list: refused with a one-line TccError naming the model (a new pass
    would fail here on purpose: add it to PASSING)."""
    from onnx.backend.test.runner import _normalize_tensor

    with pytest.raises(TccError) as info:
        rep = TcccBackend.prepare(case.model, "CPU")
        for ins, _ in case.data_sets:
            rep.run([_normalize_tensor(i) for i in ins])
    assert "\n" not in str(info.value) and case.model.graph.name in str(info.value)


def test_supports_only_cpu():
    assert supports_device("CPU") and not supports_device("CUDA")
    with pytest.raises(TccError):
        TcccBackend.prepare(onnx.ModelProto(), "CUDA")


def test_tolerance_is_lsb_of_the_range_widened_to_zero():
    ref = np.array([0.5, 2.0, 1.0], np.float32)  # span 0..2 -> 1 LSB = 2/255
    assert int8_tolerance(ref) == pytest.approx(INT8_TOLERANCE_LSB * 2.0 / 255 + 1e-6)
    assert int8_close(ref + 0.03, ref) and not int8_close(ref + 0.04, ref)
    assert not int8_close(np.array([1, 2]), np.array([1, 3]))  # integer outputs exact


def _conv_model():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 6, 6])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 6, 6])
    w = onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [3, 2, 3, 3])
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    g = onnx.helper.make_graph([node], "conv", [x, w], [y])
    return onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_extra_inputs_are_frozen_and_a_change_recompiles():
    import onnxruntime as ort

    m = _conv_model()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w1 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w2 = -w1
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    rep = TcccBackend.prepare(m, "CPU")
    for w in (w1, w2, w1):
        (y,) = rep.run({"x": x, "w": w})
        ref = sess.run(None, {"x": x, "w": w})[0]
        assert y.dtype == np.float32 and int8_close(y, ref)
    assert np.array_equal(rep._frozen[0], w1)
