"""The golden model's global average pool (``golden.gap_int``): one int64 sum of the whole
map per channel, the integers the windowed average pool (``numerics.avgpool_int8``, the
executor's POOL_TILE kernel) gives over one H x W window."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import kernels as K
from tcc_compiler.quant.golden import gap_int
from tcc_compiler.quant.params import PoolQuant


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("shape", [(7, 7, 5), (1, 1, 3), (13, 4, 17)])
def test_gap_int_equals_one_whole_map_window(dtype, shape):
    r = np.random.default_rng(sum(shape))
    info = np.iinfo(dtype)
    for trial in range(12):
        x = r.integers(info.min, info.max + 1, shape).astype(dtype)
        if trial == 0:
            x[...] = info.max   # the largest sums, and the clamp
        elif trial == 1:
            x[...] = info.min
        zp_in = int(r.integers(-128, 128))
        p = PoolQuant(zp_in, int(r.integers(-128, 128)), int(r.integers(1, 2 ** 31)),
                      int(r.integers(20, 45)))
        want = K.avgpool_int8(x, p.zp_in, shape[:2], (1, 1), (0, 0, 0, 0), p.mult, p.shift,
                              p.zp_out, dtype)
        got = gap_int(x, p)
        assert got.dtype == want.dtype and got.shape == want.shape == (1, 1, shape[2])
        assert got.tobytes() == want.tobytes()
