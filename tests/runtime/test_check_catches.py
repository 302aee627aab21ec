"""``run --check`` still catches a wrong executor: a pooling kernel or a conv epilogue that
gets one byte wrong on the executor's side makes ``bit_exact`` false. The golden model
computes its global average pool with its own whole-map sum (``golden.gap_int``), its conv
epilogues and depthwise convs with its own kernels (``quant/golden_conv.py``; without them
``jit.epilogue`` / ``conv_epilogue``), not through the executor's entry points
(``sim.vector_ops.avgpool_int8``, ``jit.epilogue_into``, ``jit``'s depthwise routines)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.catches import compile_saved, patch_users
from onnx import helper

from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.sim import vector_ops
from tests.conftest import make_model_impl

N = helper.make_node


def _compiled(tmp_path_factory, name: str, nodes, inits, r):
    """Fixture body: (program, checker, 4 float32 NCHW inputs drawn from ``r``) of the
    [1, 3, 16, 16] model ``nodes`` / ``inits`` (opset 17), compiled at 16x16x3 calibrated on
    those inputs in a new ``name`` folder; the checker is closed after the module."""
    model = make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)
    folder, path, xs, _ = compile_saved(tmp_path_factory.mktemp(name), model, 16, r, 4)
    prog = load_program(folder)
    chk = Checker(prog, path)
    yield prog, chk, xs
    chk.close()


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """(program, checker, inputs) of conv-relu-conv(1x1)-GAP-flatten-gemm, int8 throughout
    (the wrong kernels below move values by 8 within -128..127)."""
    r = np.random.default_rng(5)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (24, 16, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 24)), "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "w1"], ["d"]), N("GlobalAveragePool", ["d"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    yield from _compiled(tmp_path_factory, "catches", nodes, inits, r)


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
            if y is None:   # global_avgpool without the compiled kernels: avgpool_int8 runs
                return None
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


@pytest.mark.skipif(not jit.available(), reason="needs the compiled kernels (numba)")
def test_wrong_executor_patch_matrix_is_caught(checked, monkeypatch):
    """The executor's patch matrix of a windowed GEMM conv (``jit.im2col_u8``, or
    ``jit.im2col_px4`` for a three-channel input such as the 3x3 conv here) with one bit of
    its first column flipped: the golden model builds its own (``golden_conv.own_patches``),
    so ``run --check`` catches it. Before, both sides took the same wrong matrix and
    agreed."""
    from tcc_compiler.numerics import int8_gemm

    if int8_gemm.int8_session() is None:
        pytest.skip("no exact int8 GEMM here: the conv takes the float32 route")
    prog, chk, xs = checked
    calls = []

    def wrong_of(real):
        def wrong(*a, **kw):
            m = real(*a, **kw)
            if m is not None:
                calls.append(1)
                m[:, 0] ^= 16
            return m
        return wrong

    for name in ("im2col_u8", "im2col_px4"):
        monkeypatch.setattr(jit, name, wrong_of(getattr(jit, name)))
    fresh = load_program(prog.folder)   # an executor whose tiles take the wrong one
    assert chk.run_checked(xs[0], fresh.run)[1]["bit_exact"] is False
    assert calls   # the executor ran it


@pytest.fixture(scope="module")
def dw_model(tmp_path_factory):
    """(program folder, model path, inputs) of conv-relu-depthwise(3x3)-relu-conv(1x1)-GAP-
    flatten-gemm, int8 throughout."""
    r = np.random.default_rng(6)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "wd": r.normal(0, 0.3, (16, 1, 3, 3)),
             "w1": r.normal(0, 0.3, (24, 16, 1, 1)), "wf": r.normal(0, 0.3, (10, 24)),
             "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "wd"], ["d"], pads=[1] * 4, group=16), N("Relu", ["d"], ["e"]),
             N("Conv", ["e", "w1"], ["p"]), N("GlobalAveragePool", ["p"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    model = make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)
    return compile_saved(tmp_path_factory.mktemp("catches_dw"), model, 16, r, 4)[:3]


@pytest.mark.skipif(not jit.available(), reason="needs the compiled kernels (numba)")
def test_wrong_shared_depthwise_kernels_are_caught(dw_model, monkeypatch):
    """The compiled depthwise kernels of ``numerics/jit.py`` (sums alone, and sums with the
    epilogue) reading the first channel wrong: the executor uses them, the golden model its own
    (``quant/golden_conv.own_depthwise``), so ``run --check`` catches it. Before the golden
    model had its own, both sides took the same wrong kernel and agreed."""
    folder, onnx_path, xs = dw_model
    right = Checker(load_program(folder), onnx_path)
    try:
        assert right.run_checked(xs[0])[1]["bit_exact"] is True
    finally:
        right.close()
    calls = []
    real_sums, real_fused = jit.depthwise_routine, jit.depthwise_epilogue_routine

    def flipped(x):   # the kernels read channel 0 wrong: one bit of each value flipped
        calls.append(1)
        x = np.array(x)
        x[..., 0] ^= 16
        return x

    def wrong_sums(*a, **kw):
        run = real_sums(*a, **kw)
        return None if run is None else (lambda x: run(flipped(x)))

    def wrong_fused(*a, **kw):
        run = real_fused(*a, **kw)
        return None if run is None else (lambda x, out: run(flipped(x), out))

    monkeypatch.setattr(jit, "depthwise_routine", wrong_sums)
    monkeypatch.setattr(jit, "depthwise_epilogue_routine", wrong_fused)
    chk = Checker(load_program(folder), onnx_path)
    try:
        assert chk.run_checked(xs[0])[1]["bit_exact"] is False
    finally:
        chk.close()
    assert calls   # the executor ran a wrong one


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """(checker, inputs) of conv-relu-maxpool(3x3 s2 p1)-conv(1x1)-GAP-flatten-gemm, the
    max pool as in a ResNet's stem."""
    r = np.random.default_rng(6)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (24, 16, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 24)), "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
             N("Conv", ["p", "w1"], ["d"]), N("GlobalAveragePool", ["d"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    for _, chk, xs in _compiled(tmp_path_factory, "catches_max", nodes, inits, r):
        yield chk, xs


def test_wrong_max_pool_kernel_is_caught(pooled, monkeypatch):
    """A max pool kernel 8 off in one channel (``numerics.kernels.maxpool_int8``, the
    executor's POOL_TILE): the golden model's max pool is its own (``golden.maxpool_plain``)."""
    from tcc_compiler.numerics import kernels

    chk, xs = pooled
    assert chk.run_checked(xs[0])[1]["bit_exact"] is True
    real = kernels.maxpool_int8
    calls = []

    def wrong(*a, **kw):
        y = real(*a, **kw)
        calls.append(1)
        y[..., 0] = np.where(y[..., 0] > 100, y[..., 0] - 8, y[..., 0] + 8)
        return y

    monkeypatch.setattr(kernels, "maxpool_int8", wrong)
    monkeypatch.setattr(vector_ops, "maxpool_int8", wrong)
    assert chk.run_checked(xs[0])[1]["bit_exact"] is False
    assert calls   # the executor ran it


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_golden_max_pool_is_the_kernels(dtype):
    """``golden.maxpool_plain`` gives the executor kernel's integers (odd sizes, asymmetric
    pads, kernels larger than strides and smaller)."""
    from tcc_compiler.numerics import kernels
    from tcc_compiler.quant.golden import maxpool_plain

    r = np.random.default_rng(7)
    lo, hi = kernels.int_range(dtype)
    for (h, w, c), k, s, p in [((9, 7, 5), (3, 3), (2, 2), (1, 1, 1, 1)),
                               ((8, 11, 3), (2, 3), (2, 1), (0, 1, 1, 2)),
                               ((5, 5, 2), (1, 1), (2, 2), (0, 0, 0, 0)),
                               ((6, 6, 4), (5, 5), (1, 1), (2, 2, 2, 2))]:
        x = r.integers(lo, hi + 1, (h, w, c)).astype(dtype)
        np.testing.assert_array_equal(maxpool_plain(x, k, s, p),
                                      kernels.maxpool_int8(x, k, s, p))


@pytest.fixture(scope="module")
def lut_model(tmp_path_factory):
    """(program, checker, inputs) of conv-sigmoid-conv(1x1)-GAP-flatten-gemm: the sigmoid is a
    256-entry lookup table (fused into the conv's epilogue or its own LUT_TILE)."""
    r = np.random.default_rng(7)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (24, 16, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 24)), "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Sigmoid", ["c"], ["s"]),
             N("Conv", ["s", "w1"], ["d"]), N("GlobalAveragePool", ["d"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    yield from _compiled(tmp_path_factory, "lutcatch", nodes, inits, r)


def test_wrong_lookup_table_kernel_is_caught(lut_model, monkeypatch):
    """A table kernel 8 off on every element: the executor's LUT_TILE and LUT epilogue (every
    user of ``numerics.lut.apply_lut``) are wrong, the golden model's own table
    (``quant/golden_lut.lut_int8``) is not."""
    from tcc_compiler.numerics import lut
    from tcc_compiler.sim import conv_exec

    prog, chk, xs = lut_model
    assert chk.run_checked(xs[0])[1]["bit_exact"] is True
    calls = []

    def wrong(x, tables, *a, **k):
        calls.append(1)
        y = real(x, tables, *a, **k)
        return np.clip(y.astype(np.int16) + 8, -128, 127).astype(np.int8)

    real = lut.apply_lut
    assert {lut, vector_ops, conv_exec} <= set(patch_users(monkeypatch, "apply_lut", real,
                                                           wrong))
    assert chk.run_checked(xs[1])[1]["bit_exact"] is False
    assert calls


@pytest.mark.parametrize("trial", range(4))
def test_golden_lookup_tables_are_the_kernels(trial):
    """The golden model's own tables give the shared kernels' bytes: int8 with one or per-channel
    tables, int16 inputs to int8 or int16 outputs, extremes included."""
    from tcc_compiler.numerics.lut import apply_lut, apply_lut_wide
    from tcc_compiler.quant.golden_lut import lut_int8, lut_int16

    r = np.random.default_rng(100 + trial)
    for t in (1, 3, 16):
        x = r.integers(-128, 128, (5, 7, 2 * t)).astype(np.int8)
        x[0, 0, :2] = (-128, 127)
        tabs = r.integers(-128, 128, (t, 256)).astype(np.int8)
        assert np.array_equal(lut_int8(x, tabs), apply_lut(x, tabs))
    xw = r.integers(-32768, 32768, (9, 11)).astype(np.int16)
    xw[0, :2] = (-32768, 32767)
    for wide_out in (False, True):
        for knots in (r.integers(-32768, 32768, 257), np.full(257, 32767 * (-1) ** trial)):
            k = np.asarray(knots).astype(np.int16)
            a, b = lut_int16(xw, k, wide_out), apply_lut_wide(xw, k, wide_out)
            assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.fixture(scope="module")
def ew_model(tmp_path_factory):
    """(program, checker, inputs) of conv-relu, then max pool + average pool added (an ADD_TILE:
    no conv to fuse it into), a 1x1 conv and a squeeze-excite product (a per-channel broadcast
    mul, an EW_TILE), GAP-flatten-gemm."""
    r = np.random.default_rng(9)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "w1": r.normal(0, 0.3, (16, 16, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 16)), "bf": r.normal(0, 0.1, (10,))}
    pool = {"kernel_shape": [3, 3], "pads": [1] * 4}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("MaxPool", ["r"], ["p"], **pool), N("AveragePool", ["r"], ["q"], **pool),
             N("Add", ["p", "q"], ["a"]), N("Conv", ["a", "w1"], ["d"]),
             N("GlobalAveragePool", ["d"], ["e"]), N("Sigmoid", ["e"], ["s"]),
             N("Mul", ["d", "s"], ["m"]), N("GlobalAveragePool", ["m"], ["g"]),
             N("Flatten", ["g"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    yield from _compiled(tmp_path_factory, "ewcatch", nodes, inits, r)


@pytest.mark.parametrize("name", ["add_int8", "eltwise_int8"])
def test_wrong_elementwise_kernel_is_caught(ew_model, monkeypatch, name):
    """An element-wise kernel 8 off on every element: the executor's ADD_TILE
    (``numerics.add_int8``) or EW_TILE (``numerics.eltwise.eltwise_int8``) is wrong, the golden
    model's own ``quant/golden_ew.ew_int`` is not."""
    from tcc_compiler.numerics import eltwise, kernels

    prog, chk, xs = ew_model
    assert chk.run_checked(xs[0])[1]["bit_exact"] is True
    real = getattr(kernels if name == "add_int8" else eltwise, name)
    calls = []

    def wrong(*a, **k):
        calls.append(1)
        y = real(*a, **k)
        info = np.iinfo(y.dtype)
        return np.clip(y.astype(np.int32) + 8, info.min, info.max).astype(y.dtype)

    assert vector_ops in patch_users(monkeypatch, name, real, wrong)
    assert chk.run_checked(xs[1])[1]["bit_exact"] is False
    assert calls


@pytest.mark.parametrize("trial", range(6))
def test_golden_elementwise_is_the_kernels(trial):
    """The golden model's own element-wise ops give the shared kernels' bytes: add, sub, mul,
    int8 and int16, same-shape and per-channel b, extreme operands, multipliers and shifts."""
    from tcc_compiler.numerics import add_int8
    from tcc_compiler.numerics.eltwise import EwKind, eltwise_int8
    from tcc_compiler.quant.golden_ew import ew_int

    r = np.random.default_rng(200 + trial)
    for kind in EwKind:
        for dt in ((np.int8,) if kind is EwKind.MUL else (np.int8, np.int16)):
            info = np.iinfo(dt)
            for per in (False, True):
                a = r.integers(info.min, int(info.max) + 1, (3, 4, 5)).astype(dt)
                b = r.integers(info.min, int(info.max) + 1, (5,) if per else a.shape).astype(dt)
                a.flat[:2], b.flat[:2] = (info.min, info.max), (info.max, info.min)
                zps = [0, 0, 0] if dt == np.int16 else [int(v) for v in r.integers(-128, 128, 3)]
                ma, mb = (2**31 - 1, 2**31 - 1) if trial == 0 else r.integers(1, 2**31, 2)
                s = (1, 62, 31, 20, 45, 8)[trial]
                lo, hi = (-128, 127) if trial % 2 else (-20, 90)
                want = eltwise_int8(kind, a, zps[0], int(ma), b, zps[1], int(mb), s, zps[2], lo,
                                    hi, 5 if per else 0, 0, np.int8).reshape(a.shape)
                got = ew_int(kind, a, b, *zps, int(ma), int(mb), s, lo, hi)
                assert got.dtype == np.int8 and np.array_equal(got, want)
                if kind is EwKind.ADD and dt == np.int8 and not per:
                    assert np.array_equal(add_int8(a, zps[0], int(ma), b, zps[1], int(mb), s,
                                                   zps[2], lo, hi), got)
    a = r.integers(-32768, 32768, (2, 3, 4)).astype(np.int16)
    want = eltwise_int8(EwKind.SUB, a, 0, 3 << 20, a[::-1], 0, 5 << 20, 18, 0, -32768, 32767,
                        0, 0, np.int16).reshape(a.shape)
    got = ew_int(EwKind.SUB, a, a[::-1], 0, 0, 0, 3 << 20, 5 << 20, 18, -32768, 32767, np.int16)
    assert got.dtype == np.int16 and np.array_equal(got, want)
