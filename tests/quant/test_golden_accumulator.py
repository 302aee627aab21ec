"""The golden model picks each conv's accumulator routine once per node and input shape
(quant/golden.py ``conv_accumulator``, its own quant/golden_gemm.py) instead of re-deriving
the route on every call, with the same bytes; golden_gemm's routes give the definition's
sums (int64 numpy) on every route, the ONNX Runtime session's and its fallbacks'."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.text import load_ir
from tcc_compiler.numerics import jit
from tcc_compiler.quant import golden, golden_gemm


def _graph_and_inputs(small_folder):
    _, out = small_folder
    graph = load_ir(out / "quantized.tir")
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    return graph, xs


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _conv_int64(x, zp, w, group, strides, pads, dilations) -> np.ndarray:
    """The definition: int64 ``sum (x - zp) w`` over each window (the padding holding zp),
    one output pixel and group at a time; w OHWI [O, KH, KW, C/group]."""
    o, kh, kw, cg = w.shape
    top, left, bottom, right = pads
    h, wd, c = x.shape
    xs = np.zeros((h + top + bottom, wd + left + right, c), np.int64)
    xs[top:top + h, left:left + wd] = x.astype(np.int64) - zp
    oh = (h + top + bottom - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd + left + right - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    og = o // group
    out = np.zeros((oh, ow, o), np.int64)
    wl = w.astype(np.int64)
    for i in range(oh):
        for j in range(ow):
            win = xs[i * strides[0]:i * strides[0] + (kh - 1) * dilations[0] + 1:dilations[0],
                     j * strides[1]:j * strides[1] + (kw - 1) * dilations[1] + 1:dilations[1]]
            for g in range(group):
                part = win[:, :, g * cg:(g + 1) * cg]
                out[i, j, g * og:(g + 1) * og] = np.einsum("abc,oabc->o", part,
                                                           wl[g * og:(g + 1) * og])
    return out


#: (H, W, C, O, KH, KW, group, strides, pads, dilations): a plain 1x1, an fc-like 1x1 on one
#: pixel, a padded 3x3, a strided dilated 3x3 with asymmetric pads, a grouped 3x3, a
#: depthwise 3x3 stride 2, a depthwise 5x5, a 7x7 stem, a K beyond the probe's (1x1, 1500).
CASES = [(5, 4, 16, 8, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
         (1, 1, 40, 10, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),
         (6, 7, 5, 6, 3, 3, 1, (1, 1), (1, 1, 1, 1), (1, 1)),
         (9, 8, 4, 5, 3, 3, 1, (2, 1), (0, 1, 2, 1), (2, 1)),
         (6, 6, 8, 12, 3, 3, 4, (1, 1), (1, 1, 1, 1), (1, 1)),
         (7, 7, 6, 6, 3, 3, 6, (2, 2), (1, 1, 1, 1), (1, 1)),
         (8, 8, 3, 3, 5, 5, 3, (1, 1), (2, 2, 2, 2), (1, 1)),
         (10, 10, 3, 4, 7, 7, 1, (2, 2), (3, 3, 3, 3), (1, 1)),
         (2, 3, 1500, 3, 1, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1))]


@pytest.mark.parametrize("route", ["session", "packed", "float64", "numpy"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_golden_accumulators_give_the_definition(case, route, monkeypatch):
    """Every golden_gemm route's accumulators, with the folded bias where the sums are
    unshifted, equal the int64 definition wrapped as the epilogue reads it
    (``wrap32(acc + bias)``), on random and extreme operands (x and w at the int8 ends,
    zero points -128, 0, 127); ``float64``: no ONNX Runtime session (its fallback);
    ``numpy``: no compiled kernels (the numpy patch matrix)."""
    h, w, c, o, kh, kw, group, strides, pads, dil = CASES[case]
    if route == "float64":
        monkeypatch.setitem(golden_gemm._state, "session", None)
    old = jit.set_enabled(jit.available() and route != "numpy")
    try:
        r = np.random.default_rng(40 + case)
        wt = r.integers(-128, 128, (o, kh, kw, c // group)).astype(np.int8)
        wt.flat[::3] = -128
        gw = golden_gemm.prepare_weights(wt, group)
        for zp in (-128, 0, 127):
            x = r.integers(-128, 128, (h, w, c)).astype(np.int8)
            x.flat[::2] = -128 if zp > 0 else 127
            bias = r.integers(-2 ** 31, 2 ** 31, o).astype(np.int32)
            routine = golden_gemm.accumulator(x.shape, x.dtype, zp, gw, strides, pads, dil,
                                              repeat=route == "packed")
            got = routine(x).astype(np.int64)
            b = golden_gemm.folded_bias(bias, zp, gw) if routine.folded else bias
            want = _conv_int64(x, zp, wt, group, strides, pads, dil)
            assert got.shape == want.shape == routine.shape
            wrap = np.int64(1) << 32
            assert np.array_equal((got + b) % wrap, (want + bias) % wrap), zp
            assert routine.folded == (not gw.dw)
            if not routine.folded:
                assert np.array_equal(got, want)
    finally:
        jit.set_enabled(old)


def test_int16_weights_take_the_exact_float64_route():
    """int16 weights with int8 and int16 inputs: the accumulator itself (a 64-bit one for
    int16 weights: no wrap), equal to the int64 definition at the ends of the ranges."""
    r = np.random.default_rng(9)
    wt = r.integers(-32768, 32768, (4, 3, 3, 5)).astype(np.int16)
    wt.flat[::2] = -32768
    gw = golden_gemm.prepare_weights(wt)
    for dt, zp in ((np.int8, -128), (np.int16, 0)):
        info = np.iinfo(dt)
        x = r.integers(info.min, int(info.max) + 1, (6, 5, 5)).astype(dt)
        x.flat[::2] = info.max
        routine = golden_gemm.accumulator(x.shape, dt, zp, gw, (1, 1), (1, 0, 1, 2), (1, 1))
        assert not routine.folded
        assert np.array_equal(routine(x).astype(np.int64),
                              _conv_int64(x, zp, wt, 1, (1, 1), (1, 0, 1, 2), (1, 1)))


def test_repeat_runs_use_the_routines_chosen_once(small_folder, monkeypatch):
    graph, xs = _graph_and_inputs(small_folder)
    gm = golden.GoldenModel(graph)
    first = gm.run(xs[0], keep=True)
    convs = [n for n in graph.nodes if n.op in (Op.CONV, Op.FC)]
    assert convs and all(id(n) in gm._acc for n in convs)
    real = golden_gemm.accumulator
    monkeypatch.setattr(golden_gemm, "accumulator", lambda *a, **k: pytest.fail("chosen again"))
    again = [gm.run(x, keep=True) for x in xs]   # every conv ran its routine
    assert _same(again[0], first)
    # the bytes equal the per-call route's (the accumulator made anew on every call)
    calls = []
    monkeypatch.setattr(golden_gemm, "accumulator",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(golden.GoldenModel, "_acc_fn", lambda self, node, x: (None, None, None))
    per_call = [golden.GoldenModel(graph).run(x, keep=True) for x in xs]
    assert calls and all(_same(a, b) for a, b in zip(again, per_call))


def test_a_wide_input_takes_the_float64_routine(small_folder):
    # int16 activations: the golden model's float64 GEMM of x - zp, acc itself (not folded)
    graph, _ = _graph_and_inputs(small_folder)
    conv = next(n for n in graph.nodes if n.op is Op.CONV)
    prepared = golden.prepare_conv(conv)
    x16 = np.random.default_rng(3).integers(-32768, 32768, (16, 16, prepared[0].w.shape[3]))
    x16 = x16.astype(np.int16)
    routine = golden.conv_accumulator(conv, x16, prepared)
    a = conv.attrs
    assert not routine.folded
    assert np.array_equal(routine(x16).astype(np.int64), _conv_int64(
        x16, int(prepared[1].zp_in), prepared[0].w, prepared[0].group, a.strides, a.pads,
        a.dilations))


def test_prepared_tuples_are_used_as_given(small_folder, monkeypatch):
    # GoldenModel(prepared=...) takes a caller's prepare_conv results (bias correction's error
    # pass made them for the same constants) instead of preparing those nodes again: the
    # same outputs, no second prepare_conv of them
    graph, xs = _graph_and_inputs(small_folder)
    convs = [n for n in graph.nodes if n.op in (Op.CONV, Op.FC)]
    made = {n.name: golden.prepare_conv(n) for n in convs}
    want = golden.GoldenModel(graph).run(xs[0], keep=True)
    monkeypatch.setattr(golden, "prepare_conv", lambda *a, **k: pytest.fail("prepared again"))
    gm = golden.GoldenModel(graph, prepared=made)
    assert _same(gm.run(xs[0], keep=True), want)


def test_a_repeat_model_packs_its_small_gemms(small_folder, monkeypatch):
    """GoldenModel(repeat=True) (run --check's) runs each GEMM of at most PACKED_ROWS rows on
    weights packed once (golden_gemm._packed), with the bytes of the model packing them on
    every call; a model made without it packs nothing."""
    if golden_gemm._session() is None:
        pytest.skip("no exact ONNX Runtime int8 GEMM here: the float64 route packs nothing")
    monkeypatch.setattr(golden_gemm, "PACKED_ROWS", 10 ** 6)   # every GEMM: few rows
    made = []
    real = golden_gemm._packed
    monkeypatch.setattr(golden_gemm, "_packed", lambda b: made.append(1) or real(b))
    graph, xs = _graph_and_inputs(small_folder)
    plain = golden.GoldenModel(graph)
    want = [plain.run(x, keep=True) for x in xs]
    assert not made
    gm = golden.GoldenModel(graph, repeat=True)
    got = [gm.run(x, keep=True) for x in xs]
    assert all(_same(a, b) for a, b in zip(got, want))
    assert made
