"""The depthwise kernels specialised per window (numerics/jit_dw.py: sums in registers, taps
unrolled, zero-bordered int16 input) give the bytes of the numpy definitions, plain and fused
with the epilogue, and numerics/dw_route.py ``dw_kernel`` routes each layer shape as measured."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import accumulator as A
from tcc_compiler.numerics import dw_route
from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.epilogue import conv_epilogue_int64

pytestmark = pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")


@pytest.fixture(autouse=True)
def _always_unrolled(monkeypatch):
    old = jit.set_enabled(True)
    monkeypatch.setattr(dw_route, "UNROLL_MIN_INSIDE", 0.0)   # every shape below unrolled
    monkeypatch.setattr(dw_route, "UNROLL_MAX_TAPS", 49)      # the 7x7 case's exactness too
    yield
    jit.set_enabled(old)


#: (channels, (KH, KW), (SH, SW), (DH, DW), pads (top, left, bottom, right), H, W): square
#: and oblong windows, both strides, dilation, asymmetric and absent padding, a band whose
#: input holds rows beyond the last output's window (H larger than the taps reach), channels
#: not a multiple of the kernels' vectors (jit_dw.LANES, 16) and rows not a multiple of
#: their blocks of pixels (jit_dw.PIXELS, 4), with and without a whole block.
CASES = [(500, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 6, 7),
         (241, (3, 3), (2, 2), (1, 2), (1, 0, 2, 1), 9, 8),
         (24, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 9, 11),
         (40, (5, 5), (2, 2), (1, 1), (2, 1, 2, 2), 9, 11),
         (17, (7, 7), (1, 1), (1, 1), (3, 3, 3, 3), 8, 9),
         (33, (1, 3), (1, 2), (1, 1), (0, 1, 0, 1), 6, 12),
         (9, (3, 1), (2, 1), (2, 1), (2, 0, 2, 0), 11, 5),
         (70, (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 9, 9),
         (16, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 5, 6),
         (48, (3, 3), (1, 1), (1, 1), (0, 1, 0, 1), 12, 8)]


def _oh(n, k, s, d, before, after):
    return (n + before + after - (k - 1) * d - 1) // s + 1


def _layer(rng, c, kernel, h, w):
    big = rng.integers(-128, 128, (h, 2 * w, c), dtype=np.int8)
    x = big[:, ::2]                                     # a strided [h, w, c] input
    wts = rng.integers(-128, 128, (c, *kernel, 1), dtype=np.int8)
    wts[0] = -128                                       # the largest products
    return x, G.prepare_conv_weights(wts, c)


@pytest.mark.parametrize("c, kernel, s, d, pads, h, w", CASES)
@pytest.mark.parametrize("zp", [-128, 5, 127])
def test_unrolled_accumulator_equals_numpy(c, kernel, s, d, pads, h, w, zp):
    rng = np.random.default_rng(c * 7 + kernel[0] + zp + 128)
    x, cw = _layer(rng, c, kernel, h, w)
    if c == 48:
        pads = (0, 1, -3, 1)   # a band: 3 input rows below the last window, unused
    oh = _oh(h, kernel[0], s[0], d[0], pads[0], pads[2])
    ow = _oh(w, kernel[1], s[1], d[1], pads[1], pads[3])
    assert jit.dw_kernel(c, kernel, s, pads, d, oh, ow) == "unrolled"
    taps = cw.w[:, :, :, 0].transpose(1, 2, 0)
    got = jit.depthwise_routine(zp, taps, s, pads, d, oh, ow)(x)
    jit.set_enabled(False)
    want = G.conv_accumulate_f(x[:(oh - 1) * s[0] + (kernel[0] - 1) * d[0] + 1 - pads[0]]
                               if c == 48 else x, zp, cw, s, pads if c != 48 else
                               (0, 1, 0, 1), d)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c, kernel, s, d, pads, h, w", [k for k in CASES if k[0] != 48])
@pytest.mark.parametrize("out_dtype, lo, hi", [(np.int8, -128, 127), (np.int8, -20, 90),
                                               (np.int16, -32768, 32767)])
def test_unrolled_fused_epilogue_equals_the_definition(c, kernel, s, d, pads, h, w,
                                                       out_dtype, lo, hi):
    rng = np.random.default_rng(c + kernel[1] * 3 + s[0])
    x, cw = _layer(rng, c, kernel, h, w)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    bias[1 % c] = 2 ** 31 - 5                           # acc + bias wraps at 2**31
    mult = rng.integers(1 << 28, 1 << 31, c)
    shift = rng.integers(30, 40, c)
    zp, zp_y = -9, 4
    params = jit.epilogue_params(bias, mult, shift, None)
    fused = A.depthwise_epilogue(x.shape, zp, cw, s, pads, d, params, zp_y, lo, hi)
    oh = _oh(h, kernel[0], s[0], d[0], pads[0], pads[2])
    ow = _oh(w, kernel[1], s[1], d[1], pads[1], pads[3])
    assert jit.dw_kernel(c, kernel, s, pads, d, oh, ow) == "unrolled"
    box = np.full((oh + 2, ow, c + 3), 55, out_dtype)   # the output inside a larger SRAM box
    fused(x, box[1:-1, :, 2:-1])
    jit.set_enabled(False)   # the numpy accumulator, the int64 definition
    want = conv_epilogue_int64(G.conv_accumulate_f(x, zp, cw, s, pads, d), bias, mult, shift,
                               zp_y, lo, hi, out_dtype=out_dtype)
    np.testing.assert_array_equal(box[1:-1, :, 2:-1], want)
    assert (box[0] == 55).all() and (box[-1] == 55).all()
    assert (box[:, :, :2] == 55).all() and (box[:, :, -1] == 55).all()


def _definition(x, zp, taps, s, d, pads, oh, ow):
    """int64 [OH, OW, C]: sum over the taps inside x of (x - zp) w, by the letter."""
    kh, kw, c = taps.shape
    h, w = x.shape[:2]
    want = np.zeros((oh, ow, c), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            for oy in range(oh):
                iy = oy * s[0] + ky * d[0] - pads[0]
                if not 0 <= iy < h:
                    continue
                for ox in range(ow):
                    ix = ox * s[1] + kx * d[1] - pads[1]
                    if 0 <= ix < w:
                        want[oy, ox] += (x[iy, ix].astype(np.int64) - zp) * taps[ky, kx]
    return want


@pytest.mark.parametrize("seed", range(12))
def test_blocked_kernels_fuzz_equal_the_definition(seed):
    """jit_dw's kernels (blocks of PIXELS output pixels x LANES channels) on random shapes:
    Lite0 / MobileNetV2-like channel counts and odd ones, 3x3 / 5x5 / oblong windows, strides
    1-2, dilation, odd paddings, any zero point, extreme weights: the plain sums and the fused
    epilogue equal the definition."""
    from tcc_compiler.numerics import jit_dw
    rng = np.random.default_rng(1000 + seed)
    c = int(rng.choice([1, 3, 15, 16, 17, 31, 32, 33, 63, 65, 96, 144, 250]))
    kh, kw = [(3, 3), (5, 5), (1, 5), (5, 3), (2, 2)][seed % 5]
    s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pads = tuple(int(v) for v in rng.integers(0, 4, 2))
    h, w = int(rng.integers(1, 13)), int(rng.integers(1, 19))
    oh = max(1, (h + pads[0] + int(rng.integers(0, 3)) - (kh - 1) * d[0] - 1) // s[0] + 1)
    ow = max(1, (w + pads[1] + int(rng.integers(0, 3)) - (kw - 1) * d[1] - 1) // s[1] + 1)
    x = rng.integers(-128, 128, (h, 2 * w, c), dtype=np.int8)[:, ::2]   # strided input
    taps = rng.choice(np.array([-128, -127, -1, 0, 1, 126, 127], np.int8), (kh, kw, c))
    taps[..., 0] = -128
    x[..., 0] = 127
    zp = int(rng.choice([-128, -1, 0, 77, 127]))
    plain, fused = jit_dw.kernels(kh, kw, s[1], d[1])
    t16 = jit_dw.padded_taps(taps)
    want = _definition(x, zp, taps, s, d, pads, oh, ow)
    got = np.full((oh, ow + 1, c), 7, np.int32)[:, :ow]   # strided output too
    plain(x, np.int32(zp), t16, jit_dw.sums_start(t16, zp), s[0], d[0], pads[0], pads[1], got)
    np.testing.assert_array_equal(got, want)
    bias = rng.integers(-2 ** 31, 2 ** 31, c).astype(np.int32)   # acc + bias wraps
    mult = rng.integers(1 << 28, 1 << 31, c)
    shift = rng.integers(30, 45, c)
    params = jit.epilogue_params(bias, mult, shift, None)
    out = np.empty((oh, ow, c), np.int8)
    fused(x, np.int32(zp), t16, jit_dw.sums_start(t16, zp, bias), s[0], d[0], pads[0], pads[1],
          *params[1:4], 3, -100, 120,
          jit_dw.epilogue_table(*params[1:4], 3, -100, 120, t16.shape[2]), out)
    np.testing.assert_array_equal(out, conv_epilogue_int64(want, bias, mult, shift, 3, -100,
                                                           120, out_dtype=np.int8))


def test_unrolled_fused_output_may_be_the_input_itself():
    rng = np.random.default_rng(3)
    x, cw = _layer(rng, 96, (3, 3), 8, 8)
    x = np.ascontiguousarray(x)
    params = jit.epilogue_params(np.zeros(96, np.int32), np.full(96, 1 << 30), np.full(96, 36),
                                 None)
    fused = A.depthwise_epilogue(x.shape, 1, cw, (1, 1), (1, 1, 1, 1), (1, 1), params, 0,
                                 -128, 127)
    want = np.empty_like(x)
    fused(x, want)
    fused(x, x)
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("shape, kind", [
    # (c, kernel, strides, pads, dilations, oh, ow): EfficientNet-Lite0 / MobileNet tiles
    ((32, (3, 3), (1, 1), (0, 1, 0, 1), (1, 1), 19, 112), "unrolled"),    # few channels
    ((8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 56, 56), "unrolled"),
    ((144, (3, 3), (1, 1), (0, 1, 0, 1), (1, 1), 10, 56), "unrolled"),
    ((240, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 28, 28), "unrolled"),
    ((96, (3, 3), (2, 2), (0, 0, 0, 1), (1, 1), 19, 56), "unrolled"),     # stride 2
    ((1152, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 7, 7), "unrolled"),     # 82 % inside
    ((672, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 14, 14), "unrolled"),    # 84 % inside
    ((1152, (5, 5), (1, 1), (0, 2, 2, 2), (1, 1), 3, 7), "unrolled"),     # 66 % inside
    ((512, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 4, 4), "unrolled"),      # 49 % inside
    ((100, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 4, 4), "unrolled"),      # 49 % inside
    ((1024, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 2), "pixels"),       # 44 % inside
    ((100, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 3, 3), "rows"),          # 36 % inside
    ((64, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 20, 20), "pixels")])      # beyond 25 taps
def test_kernel_choice_as_measured(monkeypatch, shape, kind):
    monkeypatch.undo()
    assert jit.dw_kernel(*shape) == kind


def _epilogue_cases():
    """(m, s, acc) per channel: multipliers and shifts at their limits (M 0, 1, 2**30,
    2**31 - 1; S 1, 2, 31, 32, 33, 62, 63) against sums at the int32 extremes, around 0 and
    at the saturation points of each channel's output."""
    rng = np.random.default_rng(7)
    ms, ss, accs = [], [], []
    for m in (0, 1, 3, 1 << 30, (1 << 30) + 12345, 2 ** 31 - 1,
              int(rng.integers(1 << 28, 1 << 31))):
        for s in (1, 2, 20, 30, 31, 32, 33, 40, 62, 63):
            edge = [-2 ** 31, -2 ** 31 + 1, -1, 0, 1, 2 ** 31 - 2, 2 ** 31 - 1]
            if m:   # the sums whose outputs cross -128..127 and -32768..32767 (+- zp_y)
                for y in (-32900, -32768, -200, -129, -128, 0, 127, 128, 200, 32767, 32900):
                    a0 = (y * 2 ** s) // m
                    edge += [a0 - 1, a0, a0 + 1]
            edge += [int(v) for v in rng.integers(-2 ** 31, 2 ** 31, 9)]
            for a in edge:
                ms.append(m)
                ss.append(s)
                accs.append(min(max(a, -2 ** 31), 2 ** 31 - 1))
    return np.array(ms, np.int64), np.array(ss, np.int64), np.array(accs, np.int64)


@pytest.mark.parametrize("out_dtype, lo, hi, zp_y", [(np.int8, -128, 127, 0),
                                                     (np.int8, -128, 127, -128),
                                                     (np.int8, -20, 90, 127),
                                                     (np.int16, -32768, 32767, 5),
                                                     (np.int16, -32768, 32767, -32768)])
def test_fused_int32_epilogue_exact_at_the_limits(out_dtype, lo, hi, zp_y):
    """jit_dw's epilogue in registers (``epilogue_params``: int32 lanes, a 32x32 -> high-32
    multiply) gives the int64 definition's bytes for every sum, multiplier and shift at their
    limits (a 1x1 window of zero taps: the sums are the biases, any int32)."""
    from tcc_compiler.numerics import jit_dw
    m, s, acc = _epilogue_cases()
    c = m.size
    rnd = np.int64(1) << (s - 1)
    fast = np.array([jit_dw.epilogue_params(m[k:k + 1], s[k:k + 1], rnd[k:k + 1], zp_y, lo, hi,
                                            np.empty((9, 16), np.int32)) for k in range(c)])
    # the int32 form covers every S > 32, M = 0 and normalised multipliers down to S = 20,
    # not S = 1 (a shift by 32) nor small multipliers with small shifts (their saturation
    # points shifted by 33 - S leave int32)
    normal = (s > 32) | ((s > 1) & (m == 0)) | ((s >= 20) & (m >= 1 << 30))
    assert fast[normal].all() and not fast[s == 1].any() and not fast[(m == 1) & (s == 20)].any()
    want64 = np.clip(((acc * m + rnd) >> s) + zp_y, lo, hi).astype(out_dtype)
    bias = acc.astype(np.int32)
    x = np.zeros((3, 4, c), np.int8)
    t16 = jit_dw.padded_taps(np.zeros((1, 1, c), np.int8))
    fused = jit_dw.kernels(1, 1, 1, 1)[1]
    for sel, step in ((fast, 1), (~fast, 1), (fast, 2)):   # all int32 (registers), with
        k = int(sel.sum())                                   # int64 channels, or strided
        out = np.full((3, 4, k * step), 99, out_dtype)[:, :, ::step]   # channels: int64
        fused(x[:, :, :k], np.int32(0), t16[:, :, :-(-k // 16) * 16],
              jit_dw.sums_start(t16[:, :, :-(-k // 16) * 16], 0, bias[sel]), 1, 1, 0, 0,
              m[sel].astype(np.int32), s[sel], rnd[sel], zp_y, lo, hi,
              jit_dw.epilogue_table(m[sel].astype(np.int32), s[sel], rnd[sel], zp_y, lo, hi,
                                    -(-k // 16) * 16), out)
        np.testing.assert_array_equal(out, np.broadcast_to(want64[sel], out.shape))
