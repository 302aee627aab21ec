"""A large GEMM tile computed as bands of output rows, each its own integer GEMM and epilogue,
on both threads (sim/conv_bands.py ``gemm_bands``, sim/conv_exec.py): the bands' sums stack to
the unsplit tile's, the split happens only where it is sound, and the executor's bytes do not
depend on it."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor
from tcc_compiler.sim import conv_bands as B
from tcc_compiler.sim import conv_exec

pytestmark = pytest.mark.skipif(
    not jit.available() or int8_gemm.int8_session() is None,
    reason="GEMM bands need the compiled kernels and the exact int8 GEMM")

BIG = 1 << 40


@pytest.mark.parametrize("k, s, pads, n", [
    (1, 1, (0, 0, 0, 0), 2), (3, 2, (0, 0, 1, 1), 2), (3, 1, (1, 1, 1, 1), 3),
    (3, 2, (1, 0, 1, 0), 4)])
def test_bands_stack_to_the_whole_gemm(k, s, pads, n, monkeypatch):
    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)   # these small bands take the int8 GEMM
    rng = np.random.default_rng(k * 11 + n)
    x = rng.integers(-128, 128, (13, 9, 3 if k == 3 else 16), dtype=np.int8)
    w = rng.integers(-128, 128, (24, k, k, x.shape[2]), dtype=np.int8)
    cw = G.prepare_conv_weights(w, 1)
    whole = np.asarray(G.conv_accumulate_f(x, 5, cw, (s, s), pads, (1, 1)), np.int64)
    out = np.empty(whole.shape, np.int8)
    bands = B.gemm_bands(x, pads, cw, (s, s), (1, 1), k, 5, BIG, out, n)
    assert bands is not None and len(bands) == n
    rows = [r for _, _, r in bands]
    assert rows[0][0] == 0 and rows[-1][1] == whole.shape[0]
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    got = np.concatenate([np.asarray(fn(xb), np.int64) for xb, fn, _ in bands])
    np.testing.assert_array_equal(got, whole)


def test_no_bands_where_unsound_or_not_worth_it(monkeypatch):
    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)
    monkeypatch.setattr(B, "GEMM_BAND_MIN_ROWS", 1)
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (8, 10, 16), dtype=np.int8)
    cw = G.prepare_conv_weights(rng.integers(-128, 128, (32, 1, 1, 16), dtype=np.int8), 1)
    out = np.empty((8, 10, 32), np.int8)
    none = (0, 0, 0, 0)
    assert B.gemm_bands(x, none, cw, (1, 1), (1, 1), 1, 0, BIG, out) is not None
    assert B.gemm_bands(x, none, cw, (1, 1), (1, 1), 1, 0, B.GEMM_SPLIT_MIN_MACS - 1,
                        out) is None                                   # too small
    assert B.gemm_bands(x, (1, 1, 1, 1), cw, (1, 1), (1, 1), 1, 0,
                        B.GEMM_SPLIT_MIN_MACS_PATCHES - 1, out[:, :, :]) is None
    assert B.gemm_bands(x, none, cw, (1, 1), (1, 1), 1, 0, BIG, out, 9) is None   # 8 rows
    monkeypatch.setattr(B, "GEMM_BAND_MIN_ROWS", 41)   # 80 pixels: one band of 41 or more
    assert B.gemm_bands(x, none, cw, (1, 1), (1, 1), 1, 0, BIG, out) is None
    monkeypatch.setattr(B, "GEMM_BAND_MIN_ROWS", 1)
    sram = np.zeros(8 * 10 * 32, np.int8)
    xo, oo = sram[:8 * 10 * 16].reshape(8, 10, 16), sram.reshape(8, 10, 32)
    assert B.gemm_bands(xo, none, cw, (1, 1), (1, 1), 1, 0, BIG, oo) is None   # over input
    dw = G.prepare_conv_weights(rng.integers(-128, 128, (16, 3, 3, 1), dtype=np.int8), 16)
    assert B.gemm_bands(x, (1, 1, 1, 1), dw, (1, 1), (1, 1), 3, 0, BIG,
                        out[:, :, :16]) is None                        # depthwise


def test_executor_splits_gemm_tiles_with_the_unsplit_bytes(small_folder, monkeypatch):
    """With every GEMM tile eligible, the repeat runs compute the residual net's GEMM tiles
    (its padded 3x3 stem through the patch matrix among them) as bands on two threads; the
    bytes equal a fresh executor's checked run on one thread."""
    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)
    monkeypatch.setattr(B, "GEMM_SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(B, "GEMM_SPLIT_MIN_MACS_PATCHES", 0)
    monkeypatch.setattr(B, "GEMM_BAND_MIN_ROWS", 1)
    made = {}
    real = B.gemm_bands

    def spy(x, pads, cw, *args, **kw):
        bands = real(x, pads, cw, *args, **kw)
        if bands is not None:
            made[id(bands)] = (cw.w.shape, bands)   # kept alive: ids stay distinct
        return bands
    monkeypatch.setattr(conv_exec, "gemm_bands", spy)
    calls = []
    real_parts = B.run_parts
    monkeypatch.setattr(conv_exec, "run_parts", lambda fn, n: calls.append(n) or
                        real_parts(fn, n))
    _, out = small_folder
    rng = np.random.default_rng(4)
    old = B.set_threads(2)
    try:
        prog = load_program(out)
        ex = prog.executor
        inputs = [rng.integers(0, 256, ex.cmd.input_bytes, dtype=np.uint8).tobytes()
                  for _ in range(3)]
        got = [ex.run(x) for x in inputs + inputs]
        B.set_threads(1)
        want = [Executor(ex.cmd, prog.weights, ex.target).run(x, check=True) for x in inputs]
    finally:
        B.set_threads(old)
    assert made and any(shape[1] == 3 for shape, _ in made.values())   # the 3x3 stem too
    assert calls.count(2) >= 5 * len({s for s, _ in made.values()})   # in every repeat run
    assert got == want + want
