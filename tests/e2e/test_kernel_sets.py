"""The compiled kernels (numerics/jit.py) and the numpy ones give the same bytes end to end:
an inverted-residual block (1x1 conv, depthwise 3x3 stride 1, 1x1 conv + residual, so plain,
depthwise and shortcut epilogues) tiled into a small SRAM runs on the executor and the golden
model with each kernel set; every output byte agrees across the sets and executor == golden
in each."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tcc_compiler import api
from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.target import load_target

from e2e.test_depthwise import inverted_residual


def test_numpy_and_compiled_kernels_agree(tmp_path):
    pytest.importorskip("numba")
    c, h, w = 8, 12, 10
    path = tmp_path / "m.onnx"
    onnx.save(inverted_residual(c, (h, w), 2, 3, 1, (1, 1, 1, 1), seed=5), path)
    rng = np.random.default_rng(3)
    calib = [rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32) for _ in range(3)]
    api.compile(path, f"{w}x{h}x{c}", calibration=calib,
                target=load_target().with_sram(1 << 12)).save(tmp_path / "out")
    xs = [rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32) for _ in range(2)]
    outs = {}
    for flag in (False, True):
        old = jit.set_enabled(flag)
        try:
            assert jit.available() == flag
            prog = load_program(tmp_path / "out")     # fresh caches per kernel set
            checker = Checker(prog, path)
            runs = [prog.run(x) for x in xs]
            assert all(checker.check(x, r)["bit_exact"] for x, r in zip(xs, runs))
            outs[flag] = [[np.asarray(v).tobytes() for v in r.values()] for r in runs]
        finally:
            jit.set_enabled(old)
    assert outs[False] == outs[True]
