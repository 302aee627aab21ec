"""``run --check`` catches a wrong conv accumulator or input quantization of the executor: the
integer GEMM (ONNX Runtime's session as ``numerics/int8_gemm.py`` holds it, per call and
packed), the accumulator routines (``numerics/accumulator.accumulator``), the float32 route
(``numerics/gemm.conv_accumulate_f``, without the compiled kernels), the depthwise sums
(``jit.depthwise_routine``, a two-slope depthwise conv) and the host input quantization
(``jit.quantize_nhwc``) each made wrong make ``bit_exact`` false, because the golden model
has its own (``quant/golden_gemm.py``, ``quant/golden_input.py``). Before, both sides called
them and agreed on the wrong bytes.
"""

from __future__ import annotations


import numpy as np
import pytest
from helpers.catches import compile_saved, patch_users
from onnx import helper

from tcc_compiler.numerics import accumulator, gemm, int8_gemm, jit
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.sim import conv_exec, conv_operands
from tests.conftest import make_model_impl

N = helper.make_node
#: What a wrong accumulator adds to every sum: far more than an epilogue's rounding hides,
#: far less than int32's range (every sum, so the executor's tiling does not matter: the
#: golden model calling the same wrong kernel would agree with it).
FAULT = 1 << 14


@pytest.fixture(autouse=True)
def _golden_in_this_process(monkeypatch):
    """The golden model runs in this process, where the faults are injected (a golden model
    on a forked worker process, ``runtime/check.GOLDEN_PROCESS`` where the checker has one,
    would rebuild the executor's ONNX Runtime session there and so meet a right one: that
    would catch the fault without showing that the golden model has its own)."""
    from tcc_compiler.runtime import check

    monkeypatch.setattr(check, "GOLDEN_PROCESS", False, raising=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """(program folder, model path, inputs) of conv(3x3, padded)-relu-conv(1x1)-relu-
    depthwise(3x3)-LeakyRelu(0.1) (a two-slope depthwise: the executor's depthwise sums, then
    its epilogue)-conv(1x1), 16x16x3, int8 throughout. No small fc: the golden model's
    accumulators for it took another route than the executor's before (the float32 GEMM),
    which would catch a fault of one route and hide that the other was shared."""
    tmp = tmp_path_factory.mktemp("catches_acc")
    r = np.random.default_rng(21)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (16, 16, 1, 1)),
             "wd": r.normal(0, 0.3, (16, 1, 3, 3)), "w2": r.normal(0, 0.3, (24, 16, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "w1"], ["c1"]), N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "wd"], ["d"], pads=[1] * 4, group=16),
             N("LeakyRelu", ["d"], ["e"], alpha=0.1),
             N("Conv", ["e", "w2"], ["y"])]
    out, path, _, rest = compile_saved(tmp, make_model_impl(nodes, [1, 3, 16, 16], inits,
                                                            opset=17), 16, r, 6)
    return out, path, rest


def _bit_exact(folder, x) -> bool:
    """``run --check``'s verdict on ``x`` with a checker and executor made now (after any
    patch: the executor picks its routines on its first run)."""
    prog, onnx_path = load_program(folder[0]), folder[1]
    chk = Checker(prog, onnx_path)
    try:
        return chk.run_checked(x)[1]["bit_exact"]
    finally:
        chk.close()


def _off(y: np.ndarray, calls: list) -> np.ndarray:
    """``y`` (accumulators, any numeric type) with :data:`FAULT` added to each, a new array;
    counts the call."""
    calls.append(1)
    return y + y.dtype.type(FAULT)


def test_the_right_executor_is_bit_exact(folder):
    assert _bit_exact(folder, folder[2][0]) is True


def test_wrong_int8_gemm_is_caught(folder, monkeypatch):
    """ONNX Runtime's integer GEMM as the executor calls it (the process-wide session of
    ``int8_gemm`` and the packed sessions of ``packed_b``) adding FAULT to every sum."""
    real = int8_gemm.int8_session()
    if real is None or not jit.available():
        pytest.skip("no exact int8 GEMM (or compiled kernels) here: the executor's float "
                    "routes are the other tests'")
    calls: list = []

    class Wrong:
        def run(self, names, feeds):
            return [_off(real.run(names, feeds)[0], calls)]

    real_packed = int8_gemm.packed_b

    def wrong_packed(b):
        run = real_packed(b)
        return None if run is None else (lambda a, za: _off(run(a, za), calls))

    monkeypatch.setattr(int8_gemm, "_session", Wrong())
    users = patch_users(monkeypatch, "packed_b", int8_gemm.packed_b, wrong_packed)
    assert accumulator in users
    assert _bit_exact(folder, folder[2][1]) is False
    assert calls


def test_wrong_accumulator_routines_are_caught(folder, monkeypatch):
    """The accumulator routines the executor's conv tiles take
    (``numerics/accumulator.accumulator``) adding FAULT to every sum."""
    if not jit.available():
        pytest.skip("without the compiled kernels the executor takes no routine")
    calls: list = []
    real = accumulator.accumulator

    def wrong(*a, **kw):
        run = real(*a, **kw)
        return None if run is None else (lambda x: _off(run(x), calls))

    users = patch_users(monkeypatch, "accumulator", accumulator.accumulator, wrong)
    assert conv_operands in users
    assert _bit_exact(folder, folder[2][1]) is False
    assert calls


def test_wrong_float_accumulator_is_caught(folder, monkeypatch):
    """Without the compiled kernels the executor's conv tiles take ``conv_accumulate_f``
    (the float32 GEMM, the integer one where worth it): FAULT on every sum there."""
    calls: list = []
    real = gemm.conv_accumulate_f
    users = patch_users(monkeypatch, "conv_accumulate_f", gemm.conv_accumulate_f,
                         lambda *a, **kw: _off(real(*a, **kw), calls))
    assert conv_exec in users
    old = jit.set_enabled(False)
    try:
        assert _bit_exact(folder, folder[2][1]) is False
    finally:
        jit.set_enabled(old)
    assert calls


def test_wrong_depthwise_sums_are_caught(folder, monkeypatch):
    """The compiled depthwise sums (``jit.depthwise_routine``) the executor takes for the
    two-slope depthwise conv adding FAULT to every sum; the golden model's fallback routes
    took them too before (its fused kernel declines a two-slope epilogue)."""
    if not jit.available():
        pytest.skip("needs the compiled kernels (numba)")
    calls: list = []
    real = jit.depthwise_routine

    def wrong(*a, **kw):
        run = real(*a, **kw)
        return None if run is None else (lambda x: _off(run(x), calls))

    monkeypatch.setattr(jit, "depthwise_routine", wrong)
    assert _bit_exact(folder, folder[2][1]) is False
    assert calls


def test_wrong_input_quantization_is_caught(folder, monkeypatch):
    """The host input quantization the executor's input bytes come from
    (``jit.quantize_nhwc``, ``runtime/loaded.py``) moving every value by 8 towards the
    middle: the golden model quantizes with its own (``quant/golden_input.py``)."""
    if not jit.available():
        pytest.skip("needs the compiled kernels (numba): without them both take numpy")
    calls: list = []
    real = jit.quantize_nhwc

    def wrong(*a, **kw):
        q = real(*a, **kw)
        if q is not None:
            calls.append(1)
            v = q.astype(np.int32)
            q = np.where(v > 0, v - 8, v + 8).astype(q.dtype)
        return q

    monkeypatch.setattr(jit, "quantize_nhwc", wrong)
    assert _bit_exact(folder, folder[2][1]) is False
    assert calls
