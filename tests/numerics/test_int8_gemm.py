"""The integer GEMM path of the conv accumulator (tcc_compiler/numerics/int8_gemm.py: ONNX
Runtime's MatMulInteger) against int64 references written here, and its probe refusing a
kernel that saturates."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import int8_gemm as I


def _acc_ref(x, zp, w, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1):
    """Accumulator in int64 by direct summation over taps and groups (exact)."""
    t, left, b, r = pads
    xs = np.pad(x.astype(np.int64) - zp, ((t, b), (left, r), (0, 0)))
    o, kh, kw, cg = w.shape
    sh, sw = strides
    dh, dw = dilations
    oh = (xs.shape[0] - (kh - 1) * dh - 1) // sh + 1
    ow = (xs.shape[1] - (kw - 1) * dw - 1) // sw + 1
    og = o // group
    out = np.zeros((oh, ow, o), np.int64)
    w64 = w.astype(np.int64)
    for g in range(group):
        xg = xs[:, :, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                v = xg[i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                out[:, :, g * og:(g + 1) * og] += v @ w64[g * og:(g + 1) * og, i, j, :].T
    return out


def _spy(monkeypatch) -> list[tuple[int, int, int]]:
    """Record (M, K, N) of every integer GEMM that ran."""
    seen: list[tuple[int, int, int]] = []
    real = G.int8_matmul

    def spy(a, za, b):
        got = real(a, za, b)
        if got is not None:
            seen.append((a.shape[0], a.shape[1], b.shape[1]))
        return got

    monkeypatch.setattr(G, "int8_matmul", spy)
    return seen


needs_kernel = pytest.mark.skipif(I.int8_session() is None,
                                  reason="ONNX Runtime's int8 GEMM is not exact on this CPU")


@needs_kernel
@pytest.mark.parametrize("zp", [-128, 0, 127])
def test_extreme_operands_exact(monkeypatch, zp):
    # |x - zp| up to 255 and |w| = 128 over K = 3*3*600: sums near 2**27, far past float32's
    # exact range and past int16 pair sums; the integer kernel must be exact
    x = np.full((12, 12, 600), -128 if zp >= 0 else 127, np.int8)
    x[::3, ::2] = 127 if zp >= 0 else -128
    w = np.full((6, 3, 3, 600), -128, np.int8)
    w[1] = 127
    w[2, :, :, ::2] = 127
    seen = _spy(monkeypatch)
    got = G.conv_accumulate_f(x, zp, G.prepare_conv_weights(w), pads=(1, 1, 1, 1))
    assert seen == [(144, 5400, 6)]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _acc_ref(x, zp, w, pads=(1, 1, 1, 1)))


@needs_kernel
@pytest.mark.parametrize("group,strides,dilations,pads", [
    (1, (2, 2), (1, 1), (1, 0, 2, 1)),
    (2, (1, 2), (2, 1), (2, 2, 2, 2)),
    (4, (1, 1), (1, 1), (0, 0, 0, 0)),
])
def test_random_convs_exact(monkeypatch, group, strides, dilations, pads):
    rng = np.random.default_rng(group)
    x = rng.integers(-128, 128, (24, 25, 128), dtype=np.int8)[:, ::-1]   # a strided view
    w = rng.integers(-128, 128, (64, 3, 3, 128 // group), dtype=np.int8)
    seen = _spy(monkeypatch)
    got = G.conv_accumulate_f(x, -7, G.prepare_conv_weights(w, group), strides, pads,
                              dilations)
    assert len(seen) == group
    np.testing.assert_array_equal(got, _acc_ref(x, -7, w, strides, pads, dilations, group))


def test_small_gemms_use_float_path(monkeypatch):
    # fewer than MIN_MACS multiply-accumulates: the float32 GEMM, still exact
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 1, 300), dtype=np.int8)
    w = rng.integers(-128, 128, (10, 1, 1, 300), dtype=np.int8)
    seen = _spy(monkeypatch)
    got = G.conv_accumulate_f(x, 5, G.prepare_conv_weights(w))
    assert seen == []
    np.testing.assert_array_equal(got, _acc_ref(x, 5, w))


@needs_kernel
def test_fc_layer_uses_integer_kernel(monkeypatch):
    # one row of 1280 inputs to 64 outputs (an FC tile): the integer kernel, measured faster
    # through the whole path on the AVX-512 VNNI machine (int8_gemm.MIN_MACS)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (1, 1, 1280), dtype=np.int8)
    w = rng.integers(-128, 128, (64, 1, 1, 1280), dtype=np.int8)
    seen = _spy(monkeypatch)
    got = G.conv_accumulate_f(x, -3, G.prepare_conv_weights(w))
    assert seen == [(1, 1280, 64)]
    np.testing.assert_array_equal(got, _acc_ref(x, -3, w))


class _SaturatingSession:
    """A MatMulInteger stand-in that adds pairs of products with int16 saturation (the
    ``vpmaddubsw`` kernel of plain AVX2)."""

    def run(self, _names, feeds):
        a = feeds["a"].astype(np.int64)
        b = feeds["b"].astype(np.int64)
        k = a.shape[1] - a.shape[1] % 2
        pairs = a[:, 0:k:2, None] * b[None, 0:k:2] + a[:, 1:k:2, None] * b[None, 1:k:2]
        acc = np.clip(pairs, -32768, 32767).sum(axis=1)
        if a.shape[1] % 2:
            acc += a[:, -1:] @ b[-1:]
        acc -= int(feeds["za"]) * b.sum(axis=0)[None]
        return [acc.astype(np.int32)]


def test_probe_refuses_saturating_kernel():
    assert not I._probe(_SaturatingSession())


def test_refused_kernel_falls_back_to_float(monkeypatch):
    monkeypatch.setattr(I, "_session", None)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (10, 10, 32), dtype=np.int8)
    w = rng.integers(-128, 128, (4, 3, 3, 32), dtype=np.int8)
    got = G.conv_accumulate_f(x, 0, G.prepare_conv_weights(w))
    assert got.dtype != np.int32
    np.testing.assert_array_equal(got, _acc_ref(x, 0, w))
