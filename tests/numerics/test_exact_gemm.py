"""The exact float32 GEMM path of the conv accumulator (tcc_compiler/numerics/gemm.py) and the
folded int64 epilogue, against plain Python-integer references written here.

The float path is only exact while every partial sum stays within 2**24; these tests drive it
into the single-GEMM case (row bound small, worst case large), the K-chunked fallback (row bound
over 2**24) and the float64 depthwise case, where a wrong bound gives a wrong integer.
"""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import conv_accumulate, conv_epilogue
from tcc_compiler.numerics import gemm as G

from helpers.kernels import kernels  # noqa: F401  (the fixture: both kernel sets)

pytestmark = pytest.mark.usefixtures("kernels")


def _acc_ref(x, zp, w, pads=(0, 0, 0, 0)):
    """Stride-1, group-1 accumulator in Python integers via int64 numpy (exact: |acc| < 2**40)."""
    t, left, b, r = pads
    xs = np.pad(x.astype(np.int64) - zp, ((t, b), (left, r), (0, 0)))
    o, kh, kw, c = w.shape
    oh, ow = xs.shape[0] - kh + 1, xs.shape[1] - kw + 1
    out = np.zeros((oh, ow, o), np.int64)
    w64 = w.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            out += xs[i:i + oh, j:j + ow] @ w64[:, i, j, :].T
    return out


@pytest.fixture(autouse=True)
def _float_path(monkeypatch):
    """These tests are about the float32 path: the integer GEMM (tests/numerics/
    test_int8_gemm.py) is switched off."""
    monkeypatch.setattr(G, "int8_matmul", lambda a, za, b: None)


def _gemm_chunks(monkeypatch) -> list[int]:
    """Record the chunk size of every exact GEMM call."""
    seen: list[int] = []
    real = G._exact_gemm

    def spy(cols, mat, chunk):
        seen.append(chunk)
        return real(cols, mat, chunk)

    monkeypatch.setattr(G, "_exact_gemm", spy)
    return seen


def test_single_gemm_when_row_bound_allows(monkeypatch):
    # K = 3*3*1024 = 9216 terms: the worst case (255 * 127 * K ~ 2**28) needs chunks, but the
    # actual activations (|x - zp| <= 3) keep every partial sum below 2**24: one GEMM, exact
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (5, 6, 1024)).astype(np.int8)
    w = rng.integers(-127, 128, (8, 3, 3, 1024)).astype(np.int8)
    seen = _gemm_chunks(monkeypatch)
    got = conv_accumulate(x, 0, w, pads=(1, 1, 1, 1))
    assert seen == [9216]
    np.testing.assert_array_equal(got, _acc_ref(x, 0, w, (1, 1, 1, 1)))


def test_chunks_when_row_bound_exceeds_float32(monkeypatch):
    # every |x - zp| = 255 and |w| = 128: sums up to 255 * 128 * 4608 > 2**27. A single float32
    # GEMM would round; the chunked path must still give the exact integer
    x = np.full((3, 3, 512), -128, np.int8)
    w = np.full((2, 3, 3, 512), -128, np.int8)
    w[1] = np.random.default_rng(0).integers(100, 128, (3, 3, 512))
    seen = _gemm_chunks(monkeypatch)
    got = conv_accumulate(x, 127, w)
    assert seen and seen[0] == G.exact_chunk_terms(255, 128) < 4608
    want = _acc_ref(x, 127, w)
    np.testing.assert_array_equal(got, want)
    assert int(got[0, 0, 0]) == 255 * 128 * 4608
    # one float32 GEMM over the whole K rounds this sum (the case the chunks exist for)
    one = (x.astype(np.float32) - 127).reshape(1, -1) @ w[1].astype(np.float32).reshape(-1, 1)
    assert int(one[0, 0]) != int(want[0, 0, 1])


@pytest.mark.parametrize("kernel,stride", [((3, 2), 1), ((1, 1), 1), ((1, 1), 2)])
def test_row_bound_is_an_upper_bound(kernel, stride):
    # a 1x1 kernel takes the bound's one-pixel shortcut (no window sums), strided or not
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = int(rng.integers(1, 40))
        x = rng.integers(-128, 128, (6, 7, c)).astype(np.int8)
        w = rng.integers(-128, 128, (5, *kernel, c)).astype(np.int8)
        zp = int(rng.integers(-128, 128))
        cw = G.prepare_conv_weights(w)
        xs = G._padded(x, zp, (1, 0, 1, 1))
        bound = G._row_bound(xs, cw.cmax, kernel, (stride, stride), (1, 1))
        absx = np.abs(x.astype(np.int64) - zp)
        absw = np.abs(w.astype(np.int64))
        true = _acc_ref(absx.astype(np.int64) + 0, 0, absw, (1, 0, 1, 1))  # sum |x| |w|
        true = true[::stride, ::stride]
        assert bound >= true.max()


def test_depthwise_large_kernel_uses_float64():
    # 25x25 depthwise taps at the extremes: 625 * 255 * 128 > 2**24 (float32 would round)
    x = np.full((25, 25, 3), 127, np.int8)
    w = np.full((3, 25, 25, 1), -128, np.int8)
    got = conv_accumulate(x, -128, w, group=3)
    assert got.shape == (1, 1, 3)
    assert got.tolist() == [[[-255 * 128 * 625] * 3]]


def test_prepared_weights_equal_plain():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (9, 8, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8)
    cw = G.prepare_conv_weights(w, 2)
    a = conv_accumulate(x, 5, w, (2, 1), (1, 1, 0, 2), (1, 2), 2)
    b = conv_accumulate(x, 5, cw, (2, 1), (1, 1, 0, 2), (1, 2))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="channels"):
        G.conv_accumulate_f(x[:, :, :4], 5, cw)


def _epilogue_ref(acc, bias, mult, shift, zp, lo, hi, sc=None, zp_sc=0, msc=None):
    """specs/quantization.md "Conv epilogue" in Python integers, one element at a time."""
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        t = int(acc[idx]) + int(bias[c])
        t = (t + 2 ** 31) % 2 ** 32 - 2 ** 31
        t = t * int(mult[c])
        if sc is not None:
            t += (int(sc[idx]) - zp_sc) * int(msc[c])
        y = ((t + (1 << (int(shift[c]) - 1))) >> int(shift[c])) + zp
        out[idx] = min(max(y, lo), hi)
    return out


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("shortcut", [False, True])
@pytest.mark.parametrize("shifts", [(20, 63), (34, 41)])
def test_epilogue_matches_reference(big, shortcut, shifts):
    # shifts 34..40: the channels are brought to one shift (kernels._common_shift); 20..62:
    # too far apart for that, each channel keeps its own
    rng = np.random.default_rng(3 + big + 2 * shortcut + shifts[0])
    o = 7
    acc = rng.integers(-2 ** 20, 2 ** 20, (4, 5, o))
    bias = rng.integers(-2 ** 20, 2 ** 20, o)
    if big:   # acc + bias beyond int32: the wrap path
        acc = rng.integers(2 ** 30, 2 ** 31 - 1, (4, 5, o))
        bias = rng.integers(2 ** 30, 2 ** 31 - 1, o)
    mult = rng.integers(2 ** 30, 2 ** 31, o)
    shift = rng.integers(*shifts, o)
    sc = rng.integers(-128, 128, (4, 5, o)).astype(np.int8) if shortcut else None
    msc = rng.integers(0, 2 ** 31, o)
    for zp, lo, hi in ((-128, -128, 127), (5, -20, 100), (127, -128, 127)):
        got = conv_epilogue(acc.astype(np.int32), bias.astype(np.int32), mult, shift, zp, lo,
                            hi, sc, -3, msc)
        want = _epilogue_ref(acc.astype(np.int32), bias, mult, shift, zp, lo, hi, sc, -3, msc)
        np.testing.assert_array_equal(got, want)
        # the exact float accumulator of conv_accumulate_f gives the same bytes
        if not big:
            f = conv_epilogue(acc.astype(np.float64), bias.astype(np.int32), mult, shift, zp,
                              lo, hi, sc, -3, msc)
            np.testing.assert_array_equal(f, want)


def test_common_shift_fires_only_within_bounds():
    from tcc_compiler.numerics.epilogue import _common_shift

    shift = np.array([36, 38, 40])
    m = np.array([2 ** 30, 2 ** 30 + 7, 2 ** 31 - 1])
    assert _common_shift(shift, m, None, 2 ** 20, None).tolist() == [4, 2, 0]
    assert _common_shift(shift, m, None, 2 ** 31 - 1, None) is None   # |acc| M' past 2**62
    assert _common_shift(np.array([38, 38]), m[:2], None, 5, None) is None   # already one
    assert _common_shift(np.array([2, 40]), m[:2], None, 5, None) is None    # up > 30


@pytest.mark.parametrize("group", [1, 2])
def test_float_operand_is_made_on_first_use_only(group):
    # the float32 GEMM operands (ConvWeights.mats) are made from the int8 weights when a
    # float GEMM first needs them, not when the weights are prepared (an int8 net whose GEMMs
    # all take the integer kernel never makes them: ResNet-50 85 MB), and they are the very
    # arrays the eager form made
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (8, 3, 3, 4)).astype(np.int8)
    cw = G.prepare_conv_weights(w, group)
    assert "mats" not in vars(cw)
    og = 8 // group
    want = [np.ascontiguousarray(w.astype(np.float32)[g * og:(g + 1) * og].reshape(og, -1).T)
            for g in range(group)]
    got = cw.mats
    assert len(got) == group and cw.mats is got
    for a, b in zip(got, want):
        assert a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
    x = rng.integers(-128, 128, (6, 6, 4 * group)).astype(np.int8)
    dw = G.prepare_conv_weights(rng.integers(-128, 128, (5, 3, 3, 1)).astype(np.int8), 5)
    assert dw.mats == () and dw.dw is not None
    if group == 1:
        np.testing.assert_array_equal(G.conv_accumulate_f(x, 3, cw), _acc_ref(x, 3, w))
