"""``run --check`` still catches a wrong executor: a pooling kernel or a conv epilogue that
gets one byte wrong on the executor's side makes ``bit_exact`` false. The golden model
computes its global average pool with its own whole-map sum (``golden.gap_int``) and its
conv epilogues through ``jit.epilogue`` / ``conv_epilogue``, not through the executor's
entry points (``sim.vector_ops.avgpool_int8``, ``jit.epilogue_into``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.sim import vector_ops
from tests.conftest import make_model_impl

N = helper.make_node


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """(program, checker, inputs) of conv-relu-conv(1x1)-GAP-flatten-gemm, int8 throughout
    (the wrong kernels below move values by 8 within -128..127)."""
    tmp = tmp_path_factory.mktemp("catches")
    r = np.random.default_rng(5)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (24, 16, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 24)), "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "w1"], ["d"]), N("GlobalAveragePool", ["d"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    model = make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)
    onnx.save(model, tmp / "m.onnx")
    xs = [r.normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    prog = load_program(api.compile(model, "16x16x3", calibration=xs).save(tmp / "o"))
    chk = Checker(prog, tmp / "m.onnx")
    yield prog, chk, xs
    chk.close()


def test_right_executor_is_bit_exact(checked):
    prog, chk, xs = checked
    for x in xs[:2]:
        assert chk.run_checked(x)[1]["bit_exact"] is True


def test_wrong_pool_kernel_is_caught(checked, monkeypatch):
    """An average pool kernel 8 off in one channel: the executor's POOL_TILE (every user of
    ``numerics.kernels.avgpool_int8`` and the whole-map route
    ``numerics.pool.global_avgpool``) is wrong, the golden model's GAP is not."""
    from tcc_compiler.numerics import kernels

    prog, chk, xs = checked
    calls = []

    def wrong_of(real):
        def wrong(*a, **kw):
            y = real(*a, **kw)
            calls.append(1)
            y[..., 0] = np.where(y[..., 0] > 100, y[..., 0] - 8, y[..., 0] + 8)
            return y
        return wrong

    wrong = wrong_of(kernels.avgpool_int8)
    monkeypatch.setattr(kernels, "avgpool_int8", wrong)
    monkeypatch.setattr(vector_ops, "avgpool_int8", wrong)
    # the executor's whole-map route (numerics/pool.py) as well
    monkeypatch.setattr(vector_ops, "global_avgpool", wrong_of(vector_ops.global_avgpool))
    assert chk.run_checked(xs[0])[1]["bit_exact"] is False
    assert calls   # the executor ran it


@pytest.mark.skipif(not jit.available(), reason="needs the compiled kernels (numba)")
def test_wrong_executor_epilogue_is_caught(checked, monkeypatch):
    """The executor's compiled conv epilogue entry (``jit.epilogue_into``) 8 off in the
    first channel of every tile: caught."""
    prog, chk, xs = checked
    real = jit.epilogue_into
    calls = []

    def wrong(acc, params, zp_y, lo, hi, shortcut, zp_sc, out):
        real(acc, params, zp_y, lo, hi, shortcut, zp_sc, out)
        calls.append(1)
        c0 = out[..., 0]   # out may be a strided SRAM box: written in place
        c0[...] = np.where(c0 > 100, c0 - 8, c0 + 8)   # seen through the average pool
        return out

    monkeypatch.setattr(jit, "epilogue_into", wrong)
    fresh = load_program(prog.folder)   # an executor whose tile steps take the wrong one
    assert chk.run_checked(xs[0], fresh.run)[1]["bit_exact"] is False
    assert calls
