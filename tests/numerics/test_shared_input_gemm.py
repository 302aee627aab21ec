"""numerics/accumulator.py ``shared_input``: tiles that read one input share one integer
GEMM over their concatenated weights, each getting exactly its own routine's sums; a later
tile called in another run than the first's computes its own."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.accumulator import accumulator, shared_input
from tcc_compiler.numerics.int8_gemm import int8_session

pytestmark = pytest.mark.skipif(not jit.available() or int8_session() is None,
                                reason="numba kernels or an exact integer GEMM missing")


def _routines(rng, shape, k, pads, ocs, zp=-3):
    out = []
    for oc in ocs:
        w = rng.integers(-128, 128, (oc, k, k, shape[2]), dtype=np.int8)
        cw = G.prepare_conv_weights(w, 1)
        out.append((accumulator(shape, zp, cw, (1, 1), pads, (1, 1)), cw))
    return out


@pytest.mark.parametrize("shape, k, pads, ocs", [
    ((7, 7, 320), 1, (0, 0, 0, 0), (64, 64, 64)),      # plain 1x1, as Lite0's head conv
    ((12, 12, 24), 3, (1, 1, 1, 1), (32, 16, 48, 8)),   # through the compiled im2col
])
def test_each_tile_gets_its_own_sums(shape, k, pads, ocs):
    rng = np.random.default_rng(5)
    made = _routines(rng, shape, k, pads, ocs)
    fns = shared_input([r for r, _ in made], lambda: run[0])
    for run[0] in (1, 2):
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        got = [f(x) for f in fns]
        for g, (r, cw) in zip(got, made):
            want = G.conv_accumulate_f(x, -3, cw, (1, 1), pads, (1, 1))
            assert g.dtype == np.int32 and g.flags.c_contiguous
            np.testing.assert_array_equal(g, want)


run = [0]


def test_a_later_tile_of_another_run_computes_its_own():
    rng = np.random.default_rng(6)
    made = _routines(rng, (7, 7, 64), 1, (0, 0, 0, 0), (64, 64))
    ident = [1]
    lead, follow = shared_input([r for r, _ in made], lambda: ident[0])
    x1, x2 = (rng.integers(-128, 128, (7, 7, 64), dtype=np.int8) for _ in range(2))
    want2 = made[1][0](x2)
    np.testing.assert_array_equal(follow(x2), want2)   # before any first call
    lead(x1)
    ident[0] = 2                                       # a new run; its first tile not called
    np.testing.assert_array_equal(follow(x2), want2)
    assert not np.array_equal(made[1][0](x1), want2)


def test_routines_of_different_geometry_are_refused():
    rng = np.random.default_rng(7)
    a = _routines(rng, (7, 7, 64), 1, (0, 0, 0, 0), (64,))[0][0]
    b = _routines(rng, (7, 7, 64), 1, (0, 0, 0, 0), (64,), zp=4)[0][0]
    with pytest.raises(ValueError, match="one input geometry"):
        shared_input([a, b], lambda: 0)
    with pytest.raises(ValueError):
        shared_input([a], lambda: 0)
