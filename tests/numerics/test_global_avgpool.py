"""numerics/pool.py: the compiled global average pool gives avgpool_int8's bytes (fuzzed over
shapes, strides, zero points, multipliers, shifts, int8 and int16), and the executor's
POOL_TILE takes it."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import avgpool_int8, jit
from tcc_compiler.numerics.pool import global_avgpool

pytestmark = pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_global_avgpool_equals_avgpool_int8(dtype):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    for k in range(150):
        h, w, c = (int(v) for v in rng.integers(1, 12, 3))
        c *= int(rng.integers(1, 40))
        big = rng.integers(info.min, int(info.max) + 1, (h + 2, w + 3, c + 5), dtype=dtype)
        x = big[1:h + 1, 2:w + 2, 3:c + 3] if k % 2 else np.ascontiguousarray(big[:h, :w, :c])
        if k % 5 == 0:
            x = np.full_like(x, info.min if k % 10 else info.max)   # the extreme sums
        zp_x, zp_y = (int(v) for v in rng.integers(info.min, int(info.max) + 1, 2))
        mult = int(rng.integers(0, 2 ** 31)) if k % 7 else 2 ** 31 - 1
        shift = int(rng.integers(1, 63))
        for out_dtype in (np.int8, np.int16):
            got = global_avgpool(x, zp_x, mult, shift, zp_y, out_dtype)
            want = avgpool_int8(x, zp_x, (h, w), (1, 1), (0, 0, 0, 0), mult, shift, zp_y,
                                out_dtype)
            assert got.dtype == want.dtype and np.array_equal(got, want), (k, h, w, c)


def test_outside_its_form_it_declines():
    x = np.zeros((3, 3, 4), np.int8)
    assert global_avgpool(x, 0, np.array([1, 2, 3, 4]), 5, 0) is None
    assert global_avgpool(x, 0, 3, 63, 0) is None
    assert global_avgpool(x.astype(np.int32), 0, 3, 5, 0) is None


def test_the_executor_pools_globally_in_one_pass(monkeypatch):
    # a POOL_TILE over its whole unpadded input runs numerics/pool.py, with the numpy bytes
    import tcc_compiler.sim.vector_ops as V
    from tcc_compiler.isa.commands import PoolCfg, PoolTile
    from tcc_compiler.isa.spec import POOL_KIND_AVG

    rng = np.random.default_rng(2)
    sram = rng.integers(-128, 128, 4096, dtype=np.int8)
    cfg = PoolCfg(kind=POOL_KIND_AVG, kh=5, kw=6, sh=1, sw=1, zp_in=-7, zp_out=3, shift=33,
                  mult=1_234_567_891, wide=0)
    t = PoolTile(in_sram=0, out_sram=3000, in_h=5, in_w=6, c=40, out_h=1, out_w=1, pad_t=0,
                 pad_l=0, pad_b=0, pad_r=0, in_px_stride=0, in_row_stride=0, out_px_stride=0,
                 out_row_stride=0)

    def box(i, cmd, what, addr, shape, px, row, dt, write=False):
        n = int(np.prod(shape)) * np.dtype(dt).itemsize
        return sram[addr:addr + n].view(dt).reshape(shape)

    calls = []
    real = V.global_avgpool
    monkeypatch.setattr(V, "global_avgpool", lambda *a: calls.append(1) or real(*a))
    V.run_pool_tile(0, t, cfg, box, None)
    want = avgpool_int8(sram[:1200].reshape(5, 6, 40), -7, (5, 6), (1, 1), (0, 0, 0, 0),
                        1_234_567_891, 33, 3)
    assert calls and np.array_equal(sram[3000:3040], want.reshape(-1))
