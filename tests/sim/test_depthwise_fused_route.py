"""A depthwise conv without a shortcut runs its accumulator and epilogue as one compiled pass
(numerics/accumulator.py ``depthwise_epilogue``) in the executor's plain steps
(sim/conv_operands.py, sim/conv_exec.py ``plain_step``), in its row bands
(sim/conv_bands.py) and in the golden model (quant/golden.py ``conv_fused``), with the bytes
of the numpy route."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.text import load_ir
from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.quant import golden
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import conv_bands as B
from tcc_compiler.sim import conv_operands

pytestmark = pytest.mark.skipif(
    not jit.available() or int8_gemm.int8_session() is None,
    reason="the fused route needs the compiled kernels and the exact int8 GEMM")


@pytest.fixture(scope="module")
def dw_folder(tmp_path_factory):
    import onnx

    from tcc_compiler import api
    from tests.e2e.test_depthwise import inverted_residual

    d = tmp_path_factory.mktemp("dwfused")
    model = d / "ir.onnx"
    onnx.save(inverted_residual(8, (12, 14), 6, 5, 1, (2, 2, 2, 2), 7), model)
    rng = np.random.default_rng(5)
    calib = [rng.uniform(-2, 2, (1, 8, 12, 14)).astype(np.float32) for _ in range(3)]
    api.compile(str(model), "14x12x8", calibration=calib).save(d / "out")
    return d / "out"


def _inputs(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.standard_normal((1, 8, 12, 14)).astype(np.float32) for _ in range(n)]


def test_executor_runs_depthwise_tiles_fused_with_the_numpy_bytes(dw_folder, monkeypatch):
    made = []
    real = conv_operands.depthwise_epilogue

    def spy(*args):
        f = real(*args)
        made.append(f)
        return f

    monkeypatch.setattr(conv_operands, "depthwise_epilogue", spy)
    monkeypatch.setattr(B, "_threads", 1)   # every tile through its plain step
    prog = load_program(dw_folder)
    qs = [prog.quantize(x) for x in _inputs()]
    got = [prog.execute(q) for q in qs] + [prog.execute(q) for q in qs]
    assert any(f is not None for f in made)
    old = jit.set_enabled(False)
    try:
        plain = load_program(dw_folder)
        want = [plain.execute(q) for q in qs]
    finally:
        jit.set_enabled(old)
    assert got == want + want


def test_golden_model_runs_depthwise_fused_with_the_numpy_bytes(dw_folder):
    graph = load_ir(dw_folder / "quantized.tir")
    gm = golden.GoldenModel(graph)
    xs = _inputs()
    got = [gm.run(x, keep=True) for x in xs]
    dw = [n for n in graph.nodes if n.op is Op.CONV and n.attrs.group > 1]
    assert dw and all(gm._acc[id(n)][2] is not None for n in dw)
    old = jit.set_enabled(False)
    try:
        want = [golden.GoldenModel(graph).run(x, keep=True) for x in xs]
    finally:
        jit.set_enabled(old)
    for a, b in zip(got, want):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bands_without_a_shortcut_run_fused(monkeypatch):
    rng = np.random.default_rng(2)
    c, k = 48, 5
    x = rng.integers(-128, 128, (17, 20, c), dtype=np.int8)
    cw = G.prepare_conv_weights(rng.integers(-128, 128, (c, k, k, 1), dtype=np.int8), c)
    params = jit.epilogue_params(rng.integers(-3000, 3000, c).astype(np.int32),
                                 rng.integers(1 << 28, 1 << 30, c).astype(np.int32),
                                 np.full(c, 36), None)
    pads = (2, 2, 2, 2)
    want = np.empty((17, 20, c), np.int8)
    jit.epilogue_into(G.conv_accumulate_f(x, -4, cw, (1, 1), pads, (1, 1)), params, 6, -100,
                      120, None, 0, want)
    monkeypatch.setattr(B, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(B, "_threads", 2)
    monkeypatch.setattr(B, "conv_accumulate_f", lambda *a: pytest.fail("not fused"))
    out = np.empty_like(want)
    assert B.conv_in_bands(x, pads, cw, (1, 1), (1, 1), k, 1, (params, -4, 6, -100, 120, 0),
                           None, out)
    np.testing.assert_array_equal(out, want)
