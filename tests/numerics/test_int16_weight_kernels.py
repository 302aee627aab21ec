"""int16 weights in the shared kernels (specs/quantization.md, "int16 weights"): the float64
GEMM path is exact against an int64 reference over the whole range (sums past 2**31), the
64-bit epilogue equals its definition in Python integers, and the 15-bit multipliers stay
within their bound and close to the real scale."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.isa.spec import WIDE_W_MULT_LIMIT
from tcc_compiler.numerics import conv_epilogue
from tcc_compiler.numerics.epilogue import conv_epilogue_int64
from tcc_compiler.numerics.gemm import conv_accumulate_f, prepare_conv_weights
from tcc_compiler.numerics.requant import (narrow_multipliers, quantize_multipliers,
                                           quantize_multipliers_shared_pairs)
from tests.numerics.test_int16_kernels import _ref_conv


@pytest.mark.parametrize("x_dtype, group, cin", [(np.int8, 1, 64), (np.int16, 1, 64),
                                                 (np.int16, 8, 8), (np.int8, 2, 16)])
def test_int16_weight_accumulator_is_exact_full_range(x_dtype, group, cin):
    r = np.random.default_rng(0)
    info = np.iinfo(x_dtype)
    x = r.integers(info.min, info.max + 1, (5, 6, cin)).astype(x_dtype)
    cg = cin // group
    o = group * (1 if cg == 1 else 3)
    w = r.choice([-32767, 32767], (o, 3, 3, cg)).astype(np.int16)   # worst-case magnitudes
    cw = prepare_conv_weights(w, group)
    assert not cw.imats            # never the int8 integer GEMM
    zp = 0 if x_dtype is np.int16 else 5
    got = conv_accumulate_f(x, zp, cw, pads=(1, 1, 1, 1))
    ref = _ref_conv((x.astype(np.int64) - zp), w, (1, 1, 1, 1), group)
    if x_dtype is np.int16 and group == 1:
        assert np.abs(ref).max() > 2 ** 31           # beyond a 32-bit accumulator
    assert np.array_equal(got.astype(np.int64), ref)


def _epilogue_ref(acc, bias, m, s, zp_y, lo, hi, sc=None, zp_sc=0, msc=None):
    """The epilogue in Python integers with a 64-bit (non-wrapping) accumulator."""
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        t = (int(acc[idx]) + int(bias[c])) * int(m[c]) + (1 << (int(s[c]) - 1))
        if sc is not None:
            t += (int(sc[idx]) - zp_sc) * int(msc[c])
        out[idx] = min(max(zp_y + (t >> int(s[c])), lo), hi)
    return out


@pytest.mark.parametrize("with_sc", [False, True])
def test_acc64_epilogue_equals_its_definition_beyond_2_31(with_sc):
    r = np.random.default_rng(1)
    o = 6
    acc = r.integers(-(2 ** 46), 2 ** 46, (4, 5, o)).astype(np.float64)
    acc[0, 0] = 2 ** 47 - 2 ** 31 - 1
    bias = r.integers(-(2 ** 31) + 1, 2 ** 31 - 1, o).astype(np.int32)
    real = r.uniform(2e-10, 8e-10, o)      # |acc| ~ 2**46 -> outputs ~ +-30000
    if with_sc:      # one shift for both terms (set by the larger real), as conv_quant does
        sc_real = r.uniform(1e-4, 1e-3, o)
        ms, s = quantize_multipliers_shared_pairs(np.stack([real, sc_real], axis=1))
        m, msc = ms[:, 0], ms[:, 1]
    else:
        sc_real, (m, s), msc = None, quantize_multipliers(real), np.zeros(o, np.int64)
    m, s, msc = narrow_multipliers(real, sc_real, m, s, msc, WIDE_W_MULT_LIMIT)
    assert m.max() < WIDE_W_MULT_LIMIT
    sc = r.integers(-32768, 32768, acc.shape).astype(np.int16) if with_sc else None
    ref = _epilogue_ref(acc, bias, m, s, 3, -32768, 32767, sc, 0, msc)
    assert len(np.unique(ref)) > 50          # not saturated: the check has teeth
    for consts in (True, None):              # the float64 form (where exact) and int64
        got = conv_epilogue(acc, bias, m, s, 3, -32768, 32767, sc, 0, msc, np.int16, consts,
                            acc64=True)
        assert np.array_equal(got.astype(np.int64), ref)
    got = conv_epilogue_int64(acc, bias, m, s, 3, -32768, 32767, sc, 0, msc, np.int16, True)
    assert np.array_equal(got.astype(np.int64), ref)


def test_narrow_multipliers_stay_below_2_15_and_close_to_the_real_scale():
    r = np.random.default_rng(2)
    real = np.concatenate([r.uniform(1e-9, 1e-3, 200), [2.0 ** -40, 0.75, 0.999]])
    m, s = quantize_multipliers(real)
    nm, ns, _ = narrow_multipliers(real, None, m, s, np.zeros(real.size, np.int64),
                                   WIDE_W_MULT_LIMIT)
    assert nm.max() < WIDE_W_MULT_LIMIT and ns.min() >= 1
    big = nm >= 2 ** 13        # a normalised 15-bit multiplier: relative error <= 2**-14
    assert big.sum() > 150
    approx = nm[big] / np.ldexp(1.0, ns[big])
    assert np.all(np.abs(approx / real[big] - 1) <= 2.0 ** -14)
