"""``run --check`` still catches a wrong vector-unit kernel of the executor: an average pool
(``numerics.kernels.avgpool_int8``, POOL_TILE), a bilinear resize (``numerics/resize.
bilinear_int8``, RESIZE_TILE), a group softmax (``numerics/softmax.softmax_int8``, LUT_TILE's
softmax mode) or an int16-input table (``numerics/lut.apply_lut_wide``, the conv's LUT epilogue)
that gets values wrong makes ``bit_exact`` false, because the golden model computes each with
its own code (``quant/golden_pool.py``, ``golden_resize.py``, ``golden_softmax.py``,
``golden_lut.py``). Before it had its own, both sides called the same function and agreed on
the wrong bytes. Also: those own kernels give the executor kernels' bytes on random operands.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.catches import compile_saved, patch_users
from onnx import helper

from tcc_compiler import api
from tcc_compiler.numerics import kernels, lut
from tcc_compiler.numerics import resize as nresize
from tcc_compiler.numerics import softmax as nsoftmax
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.sim import conv_exec, vector_ops
from tests.conftest import make_model_impl

N = helper.make_node


def _checker(tmp_path_factory, name: str, model, hw: int, seed: int, **options):
    """Fixture body: (checker, 3 float32 NCHW inputs) of ``model`` ([1, 3, hw, hw]) compiled
    at hw x hw x 3, calibrated on 4 other inputs, in a new ``name`` folder; ``options`` go to
    ``api.compile``. The checker is closed after the module."""
    folder, path, _, xs = compile_saved(tmp_path_factory.mktemp(name), model, hw,
                                        np.random.default_rng(seed), 7, **options)
    chk = Checker(load_program(folder), path)
    yield chk, xs
    chk.close()


def _off_by_8(real, calls: list):
    """``real`` with every value of its result moved by 8 towards the middle of the type's
    range (the executor's tiles may be flat: no channel to single out), counting calls in
    ``calls``; a call made from inside another (``conv_epilogue`` calls itself for an ``out``
    array) is left right, so each result moves once."""
    depth = [0]

    def wrong(*a, **k):
        depth[0] += 1
        try:
            y = real(*a, **k)
        finally:
            depth[0] -= 1
        if depth[0]:
            return y
        calls.append(1)
        v = y.astype(np.int32)
        return np.where(v > 0, v - 8, v + 8).astype(y.dtype)
    return wrong


def _assert_caught(chk: Checker, xs, monkeypatch, module, name: str, executor_users) -> None:
    """The right executor is bit-exact; with ``module.name`` 8 off everywhere it was imported
    (``executor_users`` among them) ``run --check`` reports a mismatch, and the executor
    called the wrong kernel."""
    assert chk.run_checked(xs[0])[1]["bit_exact"] is True
    calls: list = []
    real = getattr(module, name)
    users = patch_users(monkeypatch, name, real, _off_by_8(real, calls))
    assert set(executor_users) <= set(users)
    assert chk.run_checked(xs[1])[1]["bit_exact"] is False
    assert calls


@pytest.fixture(scope="module")
def avg_checker(tmp_path_factory):
    """conv-relu, an AveragePool 3x3 s1 p1 excluding padding from its divisor (one multiplier
    per border pixel), an AveragePool 2x2 s2 (the kernel area), a 1x1 conv."""
    r = np.random.default_rng(11)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "w1": r.normal(0, 0.3, (6, 8, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("AveragePool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1] * 4,
               count_include_pad=0),
             N("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
             N("Conv", ["q", "w1"], ["y"])]
    yield from _checker(tmp_path_factory, "avgcatch",
                        make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17), 12, 11)


def test_wrong_average_pool_kernel_is_caught(avg_checker, monkeypatch):
    chk, xs = avg_checker
    _assert_caught(chk, xs, monkeypatch, kernels, "avgpool_int8", [vector_ops])


@pytest.fixture(scope="module", params=["half_pixel", "align_corners"])
def resize_checker(request, tmp_path_factory):
    """conv-relu, a bilinear Resize x2 of ``coordinate_transformation_mode`` param, 1x1 conv."""
    r = np.random.default_rng(12)
    inits = {"w0": r.normal(0, 0.4, (8, 3, 3, 3)), "s": np.array([1, 1, 2, 2], np.float32),
             "w1": r.normal(0, 0.4, (4, 8, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Resize", ["r", "", "s"], ["u"], mode="linear",
               coordinate_transformation_mode=request.param),
             N("Conv", ["u", "w1"], ["y"])]
    yield from _checker(tmp_path_factory, "resizecatch",
                        make_model_impl(nodes, [1, 3, 8, 8], inits, opset=17), 8, 12)


def test_wrong_bilinear_resize_kernel_is_caught(resize_checker, monkeypatch):
    chk, xs = resize_checker
    _assert_caught(chk, xs, monkeypatch, nresize, "bilinear_int8", [vector_ops])


@pytest.fixture(scope="module")
def softmax_checker(tmp_path_factory):
    """A DFL-like head: conv-relu, a 1x1 conv to 2 x 16 logits, Reshape [1, 2, 16, H W] ->
    Softmax(axis 2) -> Reshape back (one group_softmax, LUT_TILE's softmax mode), then the
    expectation as a grouped 1x1 conv with weights 0..15."""
    r = np.random.default_rng(13)
    hw = 6
    inits = {"w0": r.normal(0, 0.4, (8, 3, 3, 3)), "w1": r.normal(0, 0.6, (32, 8, 1, 1)),
             "b1": r.normal(0, 1.0, (32,)),
             "s4": np.array([1, 2, 16, hw * hw], np.int64),
             "sb": np.array([1, 32, hw, hw], np.int64),
             "wd": np.tile(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), (2, 1, 1, 1))}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1] * 4), N("Relu", ["c0"], ["r0"]),
             N("Conv", ["r0", "w1", "b1"], ["logits"]),
             N("Reshape", ["logits", "s4"], ["l4"]), N("Softmax", ["l4"], ["p4"], axis=2),
             N("Reshape", ["p4", "sb"], ["p"]),
             N("Conv", ["p", "wd"], ["y"], group=2, kernel_shape=[1, 1])]
    yield from _checker(tmp_path_factory, "softmaxcatch",
                        make_model_impl(nodes, [1, 3, hw, hw], inits, opset=17), hw, 13)


def test_wrong_group_softmax_kernel_is_caught(softmax_checker, monkeypatch):
    chk, xs = softmax_checker
    _assert_caught(chk, xs, monkeypatch, nsoftmax, "softmax_int8", [vector_ops])


@pytest.fixture(scope="module", params=["int8_out", "int16_out"])
def wide_lut_checker(request, tmp_path_factory):
    """conv (int16 output by ``--precision``) -> SiLU (x * Sigmoid(x), one table in the conv's
    epilogue reading the int16 value: 257 knots) -> 1x1 conv; the table's output int8, or int16
    when the table layer is promoted too."""
    r = np.random.default_rng(14)
    inits = {"w": r.normal(0, 0.4, (6, 3, 3, 3)), "b": r.normal(0, 0.2, 6),
             "w2": r.normal(0, 0.3, (4, 6, 1, 1)), "b2": r.normal(0, 0.1, 4)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv1"),
             N("Sigmoid", ["c"], ["s"], name="sig"), N("Mul", ["c", "s"], ["a"], name="mul"),
             N("Conv", ["a", "w2", "b2"], ["y"], name="conv2")]
    prec = ["conv1"] if request.param == "int8_out" else {"int16": ["mul_silu"]}
    yield from _checker(tmp_path_factory, "widelutcatch",
                        make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17), 12, 14,
                        precision=prec)


def test_wrong_int16_input_table_kernel_is_caught(wide_lut_checker, monkeypatch):
    """The int16-input table (``numerics/lut.apply_lut_wide``, the executor's CONV_CFG flags
    bit3 + bit5) 8 off: the golden model's ``golden_lut.lut_int16`` is its own."""
    chk, xs = wide_lut_checker
    _assert_caught(chk, xs, monkeypatch, lut, "apply_lut_wide", [conv_exec])


@pytest.fixture(scope="module")
def epi_model(tmp_path_factory):
    """(program folder, model path, inputs) of conv-LeakyRelu(0.1) (the two-slope epilogue),
    a 1x1 conv plus a residual (the shortcut epilogue), GAP-flatten-gemm (the logits a raw
    int32 output)."""
    r = np.random.default_rng(15)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "w1": r.normal(0, 0.3, (8, 8, 1, 1)),
             "wf": r.normal(0, 0.3, (10, 8)), "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("LeakyRelu", ["c"], ["l"], alpha=0.1),
             N("Conv", ["l", "w1"], ["d"]), N("Add", ["d", "l"], ["e"]),
             N("GlobalAveragePool", ["e"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    model = make_model_impl(nodes, [1, 3, 10, 10], inits, opset=17)
    folder, path, _, xs = compile_saved(tmp_path_factory.mktemp("epicatch"), model, 10, r, 6)
    return folder, path, xs


@pytest.mark.parametrize("name,numba", [("two_slope_epilogue", True),
                                        ("conv_epilogue_int32", False),
                                        ("conv_epilogue", False)])
def test_wrong_conv_epilogue_is_caught(epi_model, monkeypatch, name, numba):
    """The executor's numpy conv epilogues 8 off: the two-slope one (LeakyRelu) and, without
    the compiled kernels, the raw int32 one (the logits; with them the executor takes
    ``conv_exec._int32_step``, next test) and the plain one (with and without a shortcut);
    the golden model's ``quant/golden_epi.py`` is its own."""
    from tcc_compiler.numerics import epilogue, jit

    if numba and not jit.available():
        pytest.skip("the compiled kernels are off: the plain epilogue case covers numpy")
    old = jit.set_enabled(numba and jit.available())
    try:
        folder, onnx_path, xs = epi_model
        chk = Checker(load_program(folder), onnx_path)
        try:
            module = kernels if name == "conv_epilogue_int32" else epilogue
            _assert_caught(chk, xs, monkeypatch, module, name, [conv_exec])
        finally:
            chk.close()
    finally:
        jit.set_enabled(old)


def test_wrong_int32_step_is_caught(epi_model, monkeypatch):
    """The executor's compiled-route int32 tiles (``conv_exec._int32_step``: accumulators plus
    bias in int32 straight into the box) with a bias 8 off: ``run --check`` reports it. The
    step is made when a tile is planned, so the wrong one is in place before the checker's
    first run."""
    from tcc_compiler.numerics import jit

    if not jit.available():
        pytest.skip("the compiled kernels are off: the numpy int32 epilogue case covers it")
    folder, onnx_path, xs = epi_model
    chk = Checker(load_program(folder), onnx_path)
    try:
        assert chk.run_checked(xs[0])[1]["bit_exact"] is True
    finally:
        chk.close()
    real, calls = conv_exec._int32_step, []

    def wrong(acc_fn, x, bias, out):
        calls.append(1)
        return real(acc_fn, x, np.asarray(bias, np.int64) + 8, out)
    monkeypatch.setattr(conv_exec, "_int32_step", wrong)
    chk = Checker(load_program(folder), onnx_path)
    try:
        assert chk.run_checked(xs[1])[1]["bit_exact"] is False
    finally:
        chk.close()
    assert calls


@pytest.fixture(scope="module")
def dw_epi_model():
    """(quantized graph, inputs) of conv-relu-depthwise(3x3)-relu-conv(1x1) plus a residual-
    GAP-flatten-gemm: conv epilogues of every kind (plain, depthwise-fused, shortcut)."""
    r = np.random.default_rng(16)
    inits = {"w0": r.normal(0, 0.3, (16, 3, 3, 3)), "wd": r.normal(0, 0.3, (16, 1, 3, 3)),
             "w1": r.normal(0, 0.3, (16, 16, 1, 1)), "wf": r.normal(0, 0.3, (10, 16)),
             "bf": r.normal(0, 0.1, (10,))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "wd"], ["d"], pads=[1] * 4, group=16), N("Relu", ["d"], ["e"]),
             N("Conv", ["e", "w1"], ["p"]), N("Add", ["p", "r"], ["s"]),
             N("GlobalAveragePool", ["s"], ["g"]), N("Flatten", ["g"], ["f"]),
             N("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    model = make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17)
    xs = [r.normal(0, 1, (1, 3, 12, 12)).astype(np.float32) for _ in range(5)]
    return api.compile(model, "12x12x3", calibration=xs[:4]).quantized_graph, xs[4:]


def _moved(y: np.ndarray) -> np.ndarray:
    """``y`` (int8/int16, any strides) with every value moved by 8 towards the middle, in
    place."""
    v = y.astype(np.int32)
    y[...] = np.where(v > 0, v - 8, v + 8)
    return y


def test_golden_model_never_runs_the_compiled_epilogue_kernels(dw_epi_model, monkeypatch):
    """Where the golden model's own compiled conv kernels decline (``golden_conv.
    own_depthwise`` / ``own_epilogue`` give None, as for parameters outside their domain) it
    takes its numpy epilogue (``quant/golden_epi.py``), not the executor's compiled ones
    (``jit.epilogue`` / ``epilogue_into`` / ``depthwise_epilogue_routine``): with those 8 off
    its bytes stay those of its own kernels. Before, it fell back to ``jit.epilogue`` and
    ``accumulator.depthwise_epilogue``, so a fault there was invisible to ``run --check``."""
    from tcc_compiler.numerics import jit
    from tcc_compiler.quant import golden_conv
    from tcc_compiler.quant.golden import GoldenModel

    if not jit.available():
        pytest.skip("needs the compiled kernels (numba)")
    graph, xs = dw_epi_model
    want = GoldenModel(graph).run(xs[0], keep=True)
    calls: list = []
    real_epi, real_dw = jit.epilogue, jit.depthwise_epilogue_routine

    def wrong_epi(*a, **k):
        y = real_epi(*a, **k)
        if y is not None:
            calls.append(1)
            _moved(y)
        return y

    def wrong_into(*a, **k):
        calls.append(1)
        raise AssertionError("the golden model ran the executor's epilogue_into")

    def wrong_dw(*a, **k):
        run = real_dw(*a, **k)
        if run is None:
            return None

        def moved(x, out):
            run(x, out)
            calls.append(1)
            _moved(out)
        return moved

    monkeypatch.setattr(golden_conv, "own_depthwise", lambda *a, **k: None)
    monkeypatch.setattr(golden_conv, "own_epilogue", lambda *a, **k: None)
    monkeypatch.setattr(jit, "epilogue", wrong_epi)
    monkeypatch.setattr(jit, "epilogue_into", wrong_into)
    monkeypatch.setattr(jit, "depthwise_epilogue_routine", wrong_dw)
    got = GoldenModel(graph).run(xs[0], keep=True)
    assert not calls
    assert set(got) == set(want)
    for k, v in want.items():
        assert np.array_equal(got[k], v), k


@pytest.mark.parametrize("trial", range(4))
def test_golden_epilogues_are_the_kernels(trial):
    """``golden_epi`` gives ``numerics``' epilogue bytes: plain with and without a shortcut,
    two-slope, raw int32, int8/int16 outputs, int16 weights (64-bit accumulators), per-channel
    clamps, extreme accumulators, biases, multipliers and shifts."""
    from types import SimpleNamespace

    from tcc_compiler.numerics.epilogue import channel_clamp, conv_epilogue, two_slope_epilogue
    from tcc_compiler.quant import golden_epi

    r = np.random.default_rng(600 + trial)
    for case in range(40):
        o, dt = int(r.integers(1, 9)), (np.int8, np.int16)[case % 2]
        info, wide_w = np.iinfo(dt), case % 5 == 0
        lim = 2 ** 46 if wide_w else 2 ** 31
        acc = r.integers(-lim, lim, (3, 4, o)).astype(np.int64 if wide_w else np.int32)
        acc.flat[:2] = -lim, lim - 1
        mlim = 2 ** 15 if wide_w else 2 ** 31
        lo, hi = sorted(int(v) for v in r.integers(info.min, int(info.max) + 1, 2))
        clamps = r.integers(0, 256, (2, o)) if dt == np.int8 and case % 3 == 1 else (None, None)
        q = SimpleNamespace(
            bias=r.integers(-2 ** 31, 2 ** 31, o).astype(np.int32),
            mult=r.integers(0, mlim, o), sc_mult=r.integers(0, mlim, o),
            shift=np.full(o, (1, 62, 31, 45)[trial]) if case % 4 == 0
            else r.integers(40 if wide_w else 1, 63, o),
            zp_out=0 if dt == np.int16 else int(r.integers(-128, 128)),
            zp_sc=int(r.integers(-128, 128)), act_lo=lo, act_hi=hi, out_dtype=dt,
            clamp_lo=clamps[0], clamp_hi=clamps[1], wide_w=wide_w)
        sc = r.integers(-128, 128, (3, 4, o)).astype(np.int8) if case % 2 else None
        want = conv_epilogue(acc, q.bias, q.mult, q.shift, q.zp_out, lo, hi, sc, q.zp_sc,
                             q.sc_mult if sc is not None else None, dt, acc64=wide_w)
        got = golden_epi.conv_epilogue(acc, q, sc)
        assert got.dtype == dt and np.array_equal(got, channel_clamp(want, *clamps))
        want = two_slope_epilogue(acc, q.bias, q.mult, q.sc_mult, q.shift, q.zp_out, lo, hi,
                                  dt, acc64=wide_w)
        got = golden_epi.conv_epilogue(acc, q, None, two_slope=True)
        assert np.array_equal(got, channel_clamp(want, *clamps))
        if not wide_w:
            got = golden_epi.raw_int32(acc, q.bias)
            assert got.dtype == np.int32
            assert np.array_equal(got, kernels.conv_epilogue_int32(acc, q.bias))


@pytest.mark.parametrize("trial", range(3))
def test_golden_average_pool_is_the_kernel(trial):
    """``golden_pool.avgpool_int`` gives ``numerics.kernels.avgpool_int8``'s bytes (int8 and
    int16, odd sizes, asymmetric pads, kernels larger and smaller than the strides, scalar and
    per-pixel multipliers, extreme multipliers and shifts), and ``pixel_counts`` the divisors
    ``window_counts`` gives."""
    from tcc_compiler.quant.golden_pool import avgpool_int, pixel_counts

    r = np.random.default_rng(300 + trial)
    for dt in (np.int8, np.int16):
        lo, hi = kernels.int_range(dt)
        for (h, w, c), k, s, p in [((9, 7, 5), (3, 3), (2, 2), (1, 1, 1, 1)),
                                   ((8, 11, 3), (2, 3), (2, 1), (0, 1, 1, 2)),
                                   ((5, 5, 2), (1, 1), (2, 2), (0, 0, 0, 0)),
                                   ((6, 6, 4), (5, 5), (1, 1), (2, 2, 2, 2)),
                                   ((7, 7, 3), (7, 7), (1, 1), (0, 0, 0, 0))]:
            x = r.integers(lo, hi + 1, (h, w, c)).astype(dt)
            x.flat[:2] = lo, hi
            oh, ow = (h + p[0] + p[2] - k[0]) // s[0] + 1, (w + p[1] + p[3] - k[1]) // s[1] + 1
            zx, zy = (0, 0) if dt == np.int16 else (int(v) for v in r.integers(-128, 128, 2))
            for m, sh in [((1 << 31) - 1, (1, 62, 31)[trial]), (int(r.integers(0, 2**31)), 20),
                          (r.integers(0, 2**31, (oh, ow, 1)), r.integers(1, 63, (oh, ow, 1)))]:
                got = avgpool_int(x, zx, k, s, p, (oh, ow), m, sh, zy)
                want = kernels.avgpool_int8(x, zx, k, s, p, m, sh, zy, dt)
                assert got.dtype == want.dtype and np.array_equal(got, want)
            rows = kernels.window_counts(h, k[0], s[0], p[0], oh)
            cols = kernels.window_counts(w, k[1], s[1], p[1], ow)
            assert np.array_equal(pixel_counts((h, w), k, s, p, (oh, ow)),
                                  np.multiply.outer(rows, cols))


@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "asymmetric"])
def test_golden_bilinear_is_the_kernel(coord):
    """``golden_resize.bilinear`` gives ``numerics/resize.bilinear_int8``'s bytes on the whole
    map (1-pixel axes, factors 1..5, extreme values)."""
    from tcc_compiler.quant.golden_resize import bilinear

    r = np.random.default_rng(400)
    for h, w, fh, fw in [(1, 1, 2, 2), (1, 5, 1, 3), (4, 3, 2, 4), (7, 6, 5, 2), (3, 8, 3, 1)]:
        x = r.integers(-128, 128, (h, w, 3)).astype(np.int8)
        x.flat[:2] = -128, 127
        assert np.array_equal(bilinear(x, fh, fw, coord), nresize.bilinear_int8(x, h, fh, fw,
                                                                                coord))


def test_golden_group_softmax_is_the_kernel():
    """``golden_softmax.group_softmax`` gives ``numerics/softmax.softmax_int8``'s bytes (groups
    of 1 to 32, input scales from tiny to saturating, equal and extreme inputs)."""
    from tcc_compiler.quant.golden_softmax import group_softmax

    r = np.random.default_rng(500)
    for g, s in [(1, 0.1), (2, 0.05), (16, 0.2), (16, 0.001), (32, 3.0), (5, 0.5)]:
        x = r.integers(-128, 128, (3, 4, 2 * g)).astype(np.int8)
        x[0, 0] = 127
        x[0, 1, :g] = -128
        x[0, 1, g:] = 127
        x[1, 0, 0] = -128
        t = nsoftmax.softmax_table(s)
        got, want = group_softmax(x, g, t), nsoftmax.softmax_int8(x, g, t)
        assert got.dtype == np.int8 and np.array_equal(got, want)
