"""CONV_TILE with int16 weights (CONV_CFG flags bit7) on the reference executor: the tile
equals the shared kernels' result (64-bit accumulator), and the executor refuses what the ISA
forbids (a multiplier of 2**15 or more, the int32 output mode)."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import (CONV_FLAG_WIDE_SHIFT, CONV_FLAG_WIDE_W, WIDE_OUT,
                                   WIDE_W_MULT_LIMIT, Region, pack_conv_params)
from tcc_compiler.numerics import conv_epilogue
from tcc_compiler.numerics.gemm import conv_accumulate_f, prepare_conv_weights
from tcc_compiler.numerics.requant import narrow_multipliers, quantize_multipliers
from tests.sim.test_executor import CIN, H, OC, W, _cfg, _load, _run, _store, _weights


def _case(mult_limit=WIDE_W_MULT_LIMIT):
    r = np.random.default_rng(4)
    x = r.integers(-128, 128, (H, W, CIN), dtype=np.int8)
    wt = r.integers(-32767, 32768, (OC, 3, 3, CIN)).astype("<i2")
    bias = r.integers(-2 ** 30, 2 ** 30, OC).astype(np.int32)
    real = r.uniform(2e-9, 8e-9, OC)
    m, s = quantize_multipliers(real)
    if mult_limit:
        m, s, _ = narrow_multipliers(real, None, m, s, np.zeros(OC, np.int64), mult_limit)
    return x, wt, bias, m, s



def test_int16_weight_tile_equals_the_kernels():
    x, wt, _, _, _ = _case()
    bias = np.full(OC, 2 ** 31 - 1 - 10 ** 7, np.int32)   # acc + bias passes 2**31
    real = np.random.default_rng(5).uniform(5e-6, 1.5e-5, OC)
    m, s = quantize_multipliers(real)
    m, s, _ = narrow_multipliers(real, None, m, s, np.zeros(OC, np.int64), WIDE_W_MULT_LIMIT)
    wbin, w_off, p_off = _weights(wt, bias, m, s, np.zeros(OC, np.int64))
    cmds = [_load(Region.INPUT, 0, 0, x.nbytes),
            _load(Region.WEIGHTS, w_off, 0x1000, wt.nbytes),
            _load(Region.WEIGHTS, p_off, 0x4000, OC * 16),
            _cfg(flags=CONV_FLAG_WIDE_W | WIDE_OUT << CONV_FLAG_WIDE_SHIFT, lo=-32768,
                 hi=32767),
            C.ConvTile(0, 0x1000, 0x4000, 0x5000, 0, H, W, CIN, OC, H, W, 1, 1, 1, 1),
            _store(Region.OUTPUT, 0, 0x5000, H * W * OC * 2)]
    acc = conv_accumulate_f(x, 3, prepare_conv_weights(wt.astype(np.int16)),
                            pads=(1, 1, 1, 1))
    assert (acc + bias).max() > 2 ** 31   # a 32-bit accumulator would wrap
    ref = conv_epilogue(acc, bias, m, s, -5, -32768, 32767, out_dtype=np.int16, acc64=True)
    assert len(np.unique(ref)) > 50
    assert _run(cmds, x.tobytes(), ref.nbytes, wbin) == ref.tobytes()


@pytest.mark.parametrize("problem", ["mult", "out_mode"])
def test_int16_weight_tile_refusals(problem):
    x, wt, bias, m, s = _case(None if problem == "mult" else WIDE_W_MULT_LIMIT)
    assert (m.max() >= WIDE_W_MULT_LIMIT) == (problem == "mult")
    wbin, w_off, p_off = _weights(wt, bias, m, s, np.zeros(OC, np.int64))
    cmds = [_load(Region.INPUT, 0, 0, x.nbytes),
            _load(Region.WEIGHTS, w_off, 0x1000, wt.nbytes),
            _load(Region.WEIGHTS, p_off, 0x4000, OC * 16),
            _cfg(flags=CONV_FLAG_WIDE_W, out_mode=int(problem == "out_mode")),
            C.ConvTile(0, 0x1000, 0x4000, 0x5000, 0, H, W, CIN, OC, H, W, 1, 1, 1, 1),
            _store(Region.OUTPUT, 0, 0x5000, H * W * OC)]
    want = "not below 32768" if problem == "mult" else "int16 weights need out_mode 0"
    with pytest.raises(ExecutionError, match=want):
        _run(cmds, x.tobytes(), H * W * OC * 4, wbin)
    assert pack_conv_params(bias, m, s)   # the records themselves are well formed
