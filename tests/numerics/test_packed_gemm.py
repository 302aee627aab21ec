"""numerics/int8_gemm.py packed_b and numerics/accumulator.py PackedGemmRoutine: the integer
GEMM through a session holding the weights packed gives numpy's exact int64 sums (fuzzed,
extremes included), a routine gives the unpacked routine's bytes on every call, and a
forked child falls back to the process-wide session."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import accumulator as A
from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import int8_gemm as I
from tcc_compiler.numerics import jit

pytestmark = pytest.mark.skipif(I.int8_session() is None, reason="no exact int8 GEMM here")


def test_packed_b_gives_the_exact_sums():
    rng = np.random.default_rng(8)
    for k in range(25):
        m, kk, n = int(rng.integers(1, 70)), int(rng.integers(1, 700)), int(rng.integers(1, 90))
        b = rng.integers(-128, 128, (kk, n), dtype=np.int8)
        if k % 4 == 0:
            b[:] = -128 if k % 8 else 127          # the largest pair sums
        run = I.packed_b(b)
        assert run is not None
        for za in (0, 255, int(rng.integers(0, 256))):
            a = rng.integers(0, 256, (m, kk), dtype=np.uint8)
            if k % 3 == 0:
                a[:] = 255
            got = run(a, np.array(za, np.uint8))
            want = (a.astype(np.int64) - za) @ b.astype(np.int64)
            assert got.dtype == np.int32 and np.array_equal(got, want), (k, za)


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
def test_a_packed_routine_gives_the_routine_bytes_on_every_call(monkeypatch):
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, (48, 3, 3, 40), dtype=np.int8)
    cw = G.prepare_conv_weights(w, 1)
    r = A.accumulator((7, 7, 40), -5, cw, (1, 1), (1, 1, 1, 1), (1, 1))
    p = A.packed(r)
    assert isinstance(p, A.PackedGemmRoutine) and isinstance(p, A.GemmRoutine)
    xs = [rng.integers(-128, 128, (7, 7, 40), dtype=np.int8) for _ in range(4)]
    for x in xs:
        assert np.array_equal(p(x), r(x))
    assert p.run                                    # packed
    monkeypatch.setattr(I, "forks", I.forks + 1)    # as in a forked child
    assert np.array_equal(p(xs[0]), r(xs[0]))
    big = A.accumulator((28, 28, 40), -5, cw, (1, 1), (1, 1, 1, 1), (1, 1))
    assert A.packed(big) is big and A.packed(None) is None   # many rows: as it was


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
def test_the_tiles_of_one_layer_share_one_packed_session_made_on_the_second_call(monkeypatch):
    """Two tiles over the same prepared weights (a layer cut into row bands, ResNet-50's 28- and
    21-row tiles) pack them once, on their second call; the first call builds nothing (a program run
    on one image pays no session); every call gives the unpacked routine's bytes."""
    made: list = []
    real = A.packed_b

    def counting(b):
        made.append(b)
        return real(b)

    monkeypatch.setattr(A, "packed_b", counting)
    rng = np.random.default_rng(5)
    cw = G.prepare_conv_weights(rng.integers(-128, 128, (64, 1, 1, 96), dtype=np.int8), 1)
    r1 = A.accumulator((4, 7, 96), 3, cw, (1, 1), (0, 0, 0, 0), (1, 1), True)
    r2 = A.accumulator((3, 7, 96), 3, cw, (1, 1), (0, 0, 0, 0), (1, 1), True)
    p1, p2 = A.packed(r1), A.packed(r2)
    assert isinstance(p1, A.PackedGemmRoutine) and isinstance(p2, A.PackedGemmRoutine)
    x1 = rng.integers(-128, 128, (4, 7, 96), dtype=np.int8)
    x2 = rng.integers(-128, 128, (3, 7, 96), dtype=np.int8)
    assert np.array_equal(p1(x1), r1(x1)) and np.array_equal(p2(x2), r2(x2))
    assert made == []                                   # first calls: no session built
    for _ in range(3):
        assert np.array_equal(p1(x1), r1(x1)) and np.array_equal(p2(x2), r2(x2))
    assert len(made) == 1 and made[0] is cw.imats[0]    # one session for both tiles
    assert p1.run is p2.run and p1.run
