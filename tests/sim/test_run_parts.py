"""sim/conv_bands.py run_parts and epilogue_in_parts: a tile's parts on the calling thread and
the helper, claimed by whichever is free (a helper that never wakes costs nothing), failures
re-raised; the epilogue in parts gives the whole epilogue's bytes, and the executor's large
GEMM tiles take it."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from tcc_compiler.numerics import jit
from tcc_compiler.sim import conv_bands as B


def test_every_part_runs_once_on_both_threads():
    for n in (1, 2, 5, 16):
        seen: list[tuple[int, str]] = []
        B.run_parts(lambda k: seen.append((k, threading.current_thread().name)), n)
        assert sorted(k for k, _ in seen) == list(range(n))


def test_a_helper_that_never_wakes_costs_nothing(monkeypatch):
    # the helper's queue read by nobody (a loaded machine's late thread): the calling thread
    # computes every part and returns without waiting
    monkeypatch.setattr(B, "_helper", lambda: queue.SimpleQueue())
    seen = []
    B.run_parts(seen.append, 7)
    assert seen == list(range(7))


def test_a_failing_part_is_raised_after_the_others_ended():
    done = []

    def part(k: int) -> None:
        if k == 3:
            raise ValueError("part 3")
        done.append(k)

    with pytest.raises(ValueError, match="part 3"):
        B.run_parts(part, 8)
    assert 3 not in done


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
@pytest.mark.parametrize("shortcut", [False, True])
def test_epilogue_in_parts_equals_the_whole(shortcut):
    rng = np.random.default_rng(3 + shortcut)
    for k in range(40):
        a, b = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        o = int(rng.integers(1, 9)) * 8
        acc = rng.integers(-2 ** 31, 2 ** 31, (a, b, o), dtype=np.int64).astype(np.int32)
        bias = rng.integers(-3000, 3000, o).astype(np.int32)
        mult, shift = rng.integers(1 << 28, 1 << 31, o), rng.integers(30, 40, o)
        p = jit.epilogue_params(bias, mult, shift,
                                rng.integers(1 << 27, 1 << 31, o) if shortcut else None)
        want = np.zeros((a, b + 2, o + 3), np.int8)[:, 1:b + 1, 2:o + 2]   # an SRAM box
        got = np.zeros_like(want.base)[:, 1:b + 1, 2:o + 2]
        sc = rng.integers(-128, 128, (a, b, o), dtype=np.int8) if shortcut else None
        if shortcut and k % 2:   # written over its own shortcut
            want[...] = sc
            got[...] = sc
            jit.epilogue_into(acc, p, 5, -128, 127, want, -3, want)
            B.epilogue_in_parts(acc, p, 5, -128, 127, got, -3, got)
        else:
            jit.epilogue_into(acc, p, 5, -128, 127, sc, -3, want)
            B.epilogue_in_parts(acc, p, 5, -128, 127, sc, -3, got)
        assert np.array_equal(got.base, want.base), k


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
def test_large_gemm_tiles_split_their_epilogue(monkeypatch, tmp_path):
    # the executor's plain steps of GEMM tiles past EPILOGUE_SPLIT_MIN run epilogue_in_parts
    # on two threads (the bytes of one thread), the plain epilogue on one
    import onnx

    import tcc_compiler as tc
    from conftest import residual_net_impl
    from tcc_compiler.runtime import load_program
    from tcc_compiler.sim import conv_exec

    d = tmp_path
    onnx.save(residual_net_impl(hw=48, c=16), d / "m.onnx")
    tc.compile(str(d / "m.onnx"), "48x48x3").save(d / "out")
    monkeypatch.setattr(conv_exec, "EPILOGUE_SPLIT_MIN", 1)
    calls = []
    real = B.epilogue_in_parts
    monkeypatch.setattr(conv_exec, "epilogue_in_parts",
                        lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 48, 48)).astype(np.float32) for _ in range(3)]
    monkeypatch.setattr(B, "_threads", 2)
    prog = load_program(d / "out")
    got = [prog.execute(prog.quantize(x)) for x in xs]
    assert calls
    monkeypatch.setattr(B, "_threads", 1)
    calls.clear()
    one = load_program(d / "out")
    assert [one.execute(one.quantize(x)) for x in xs] == got and not calls


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
def test_fused_bands_give_the_tile_bytes():
    # conv_bands.fused_bands: the two bands made once (a plain step's), run on both threads,
    # give the whole fused depthwise tile's bytes; an output over its input is not split
    from tcc_compiler.numerics import gemm as G
    from tcc_compiler.numerics.accumulator import depthwise_epilogue

    rng = np.random.default_rng(6)
    for c, k, s, pads in ((32, 3, 1, (1, 1, 1, 1)), (144, 5, 2, (1, 2, 2, 1)),
                          (240, 5, 1, (2, 2, 2, 2)), (672, 3, 1, (0, 1, 1, 0))):
        x = rng.integers(-128, 128, (13, 11, c), dtype=np.int8)
        cw = G.prepare_conv_weights(rng.integers(-128, 128, (c, k, k, 1), dtype=np.int8), c)
        p = jit.epilogue_params(rng.integers(-3000, 3000, c).astype(np.int32),
                                rng.integers(1 << 28, 1 << 31, c), rng.integers(30, 40, c), None)
        whole = depthwise_epilogue(x.shape, 4, cw, (s, s), pads, (1, 1), p, -3, -128, 127)
        oh = (13 + pads[0] + pads[2] - k) // s + 1
        ow = (11 + pads[1] + pads[3] - k) // s + 1
        want = np.zeros((oh, ow, c), np.int8)
        whole(x, want)
        got = np.zeros_like(want)
        bands = B.fused_bands(x, pads, cw, (s, s), (1, 1), k, (p, 4, -3, -128, 127, 0), got)
        B.run_parts(lambda j: bands[j][2](bands[j][0], bands[j][1]), 2)
        assert np.array_equal(got, want), c
        assert B.fused_bands(x, pads, cw, (s, s), (1, 1), k, (p, 4, -3, -128, 127, 0),
                             x[:oh, :ow]) is None
