"""A large depthwise tile computed as two bands of output rows (sim/conv_bands.py): the bands'
input rows and pads give exactly the unsplit tile's bytes, the split happens only where it is
sound (depthwise, enough MACs, output not over the input), and the executor's outputs do not
depend on it."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import conv_bands as B

needs_jit = pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")


@pytest.mark.parametrize("kh, sh, dh, pads, h", [
    (3, 1, 1, (1, 1, 1, 1), 9), (5, 2, 1, (2, 0, 2, 1), 12), (3, 2, 2, (0, 1, 3, 0), 11),
    (5, 1, 1, (4, 2, 4, 2), 5), (1, 1, 1, (0, 0, 0, 0), 7)])
def test_bands_stack_to_the_whole_conv(kh, sh, dh, pads, h):
    rng = np.random.default_rng(kh * 7 + sh)
    x = rng.integers(-128, 128, (h, 6, 5), dtype=np.int8)
    w = rng.integers(-128, 128, (5, kh, 3, 1), dtype=np.int8)
    cw = G.prepare_conv_weights(w, 5)
    whole = np.asarray(G.conv_accumulate_f(x, 3, cw, (sh, 1), pads, (dh, 1)), np.int64)
    oh = whole.shape[0]
    for cut in range(1, oh):
        got = []
        for r0, r1 in ((0, cut), (cut, oh)):
            part = B.band_input(x, pads, r0, r1, kh, sh, dh)
            if part is None:   # a band of padding only (never split): its rows are bias alone
                assert not whole[r0:r1].any()
                got.append(whole[r0:r1])
                continue
            xb, pb = part
            got.append(np.asarray(G.conv_accumulate_f(xb, 3, cw, (sh, 1), pb, (dh, 1)),
                                  np.int64))
        np.testing.assert_array_equal(np.concatenate(got), whole)


def _tile(rng, h, c, k, groups):
    x = rng.integers(-128, 128, (h, 20, c), dtype=np.int8)
    w = rng.integers(-128, 128, (c, k, k, c // groups), dtype=np.int8)
    params = jit.epilogue_params(rng.integers(-3000, 3000, c).astype(np.int32),
                                 rng.integers(1 << 28, 1 << 30, c).astype(np.int32),
                                 np.full(c, 36), None)
    return x, G.prepare_conv_weights(w, groups), params


@needs_jit
@pytest.mark.parametrize("sh, pads", [(1, (2, 2, 2, 2)), (2, (1, 2, 2, 1))])
def test_split_depthwise_tile_gives_the_unsplit_bytes(monkeypatch, sh, pads):
    rng = np.random.default_rng(sh)
    c, k = 48, 5
    x, cw, params = _tile(rng, 17, c, k, c)
    oh = (17 + pads[0] + pads[2] - k) // sh + 1
    ow = (20 + pads[1] + pads[3] - k) + 1
    want = np.empty((oh, ow, c), np.int8)
    acc = G.conv_accumulate_f(x, -4, cw, (sh, 1), pads, (1, 1))
    jit.epilogue_into(acc, params, 6, -100, 120, None, 0, want)
    monkeypatch.setattr(B, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(B, "_threads", 2)
    box = np.full((oh + 2, ow, c), 77, np.int8)   # the output rows of a larger SRAM box
    epi = (params, -4, 6, -100, 120, 0)
    assert B.conv_in_bands(x, pads, cw, (sh, 1), (1, 1), k, 1, epi, None, box[1:-1])
    np.testing.assert_array_equal(box[1:-1], want)
    assert (box[0] == 77).all() and (box[-1] == 77).all()


@needs_jit
def test_no_split_where_unsound_or_not_worth_it(monkeypatch):
    rng = np.random.default_rng(9)
    x, cw, params = _tile(rng, 8, 16, 3, 16)
    epi = (params, 0, 0, -128, 127, 0)
    out = np.empty((8, 20, 16), np.int8)
    monkeypatch.setattr(B, "_threads", 2)
    big = 1 << 30
    assert not B.conv_in_bands(x, (1, 1, 1, 1), cw, (1, 1), (1, 1), 3, B.SPLIT_MIN_MACS - 1,
                               epi, None, out)                     # too small
    xg, cg, pg = _tile(rng, 8, 16, 3, 1)                            # a GEMM tile
    assert not B.conv_in_bands(xg, (1, 1, 1, 1), cg, (1, 1), (1, 1), 3, big,
                               (pg, 0, 0, -128, 127, 0), None, out)
    assert not B.conv_in_bands(x, (1, 1, 1, 1), cw, (1, 1), (1, 1), 3, big, epi, None,
                               x)                                  # output over the input
    monkeypatch.setattr(B, "_threads", 1)
    assert not B.conv_in_bands(x, (1, 1, 1, 1), cw, (1, 1), (1, 1), 3, big, epi, None, out)
    monkeypatch.setattr(B, "_threads", 2)
    assert B.conv_in_bands(x, (1, 1, 1, 1), cw, (1, 1), (1, 1), 3, big, epi, None, out)
    with pytest.raises(ValueError, match="must be 1 or 2"):
        B.set_threads(3)


@needs_jit
def test_executor_outputs_do_not_depend_on_the_split(tmp_path, monkeypatch):
    # every eligible tile of an inverted-residual block split, against none split
    import onnx

    from tcc_compiler import api
    from tests.e2e.test_depthwise import inverted_residual

    model = tmp_path / "ir.onnx"
    onnx.save(inverted_residual(8, (12, 14), 4, 5, 1, (2, 2, 2, 2), 3), model)
    out = tmp_path / "out"
    rng = np.random.default_rng(5)
    calib = [rng.uniform(-2, 2, (1, 8, 12, 14)).astype(np.float32) for _ in range(3)]
    api.compile(str(model), "14x12x8", calibration=calib).save(out)
    xs = [rng.standard_normal((1, 8, 12, 14)).astype(np.float32) for _ in range(2)]
    split = []
    monkeypatch.setattr(B, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr("tcc_compiler.sim.conv_exec.SPLIT_MIN_MACS", 0)   # no plain steps
    real = B.conv_in_bands

    def spy(*args):
        done = real(*args)
        split.append(done)
        return done

    monkeypatch.setattr("tcc_compiler.sim.conv_exec.conv_in_bands", spy)
    real_parts = B.run_parts   # a plain step's two bands (conv_bands.fused_bands)
    monkeypatch.setattr("tcc_compiler.sim.conv_exec.run_parts",
                        lambda *a: split.append(True) or real_parts(*a))
    old = B.set_threads(2)
    try:
        prog = load_program(out)
        got = [prog.execute(prog.quantize(x)) for x in xs]
        B.set_threads(1)
        plain = load_program(out)
        want = [plain.execute(plain.quantize(x)) for x in xs]
    finally:
        B.set_threads(old)
    assert got == want
    assert any(split)


def test_batch_workers_compute_tiles_on_one_thread(small_folder, monkeypatch):
    # tccc run/eval --jobs N: the worker processes are the parallelism, no band helper
    from tcc_compiler.runtime import batch

    _, out = small_folder
    monkeypatch.setattr(B, "_threads", 2)
    monkeypatch.setattr(batch, "_worker_prog", None, raising=False)
    monkeypatch.setattr(batch, "_worker_job", None, raising=False)
    batch._init_worker(str(out), batch.run_input)
    assert B._threads == 1
