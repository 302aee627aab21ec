"""LoadedProgram.quantize: the input's compiled quantization (numerics/jit.py
``quantize_nhwc``, once the kernels are loaded) gives the numpy path's INPUT bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program


def test_compiled_input_quantization_gives_the_numpy_bytes(small_folder, monkeypatch):
    if not jit.warm():
        pytest.skip("numba kernels not installed")
    _, out = small_folder
    prog = load_program(out)
    spec = prog.manifest["input"]
    s = spec["scale"][0]
    rng = np.random.default_rng(3)
    x = rng.uniform(-300 * s, 300 * s, prog.input_shape).astype(np.float32)
    x.flat[:64] = ((np.arange(64) - 32 + 0.5) * s).astype(np.float32)   # near the ties
    x.flat[64:70] = [0.0, -0.0, 1e30, -1e30, 128 * s, -129 * s]       # the bounds
    calls = []
    real = jit.quantize_nhwc
    monkeypatch.setattr(jit, "quantize_nhwc", lambda *a: calls.append(1) or real(*a))
    got = prog.quantize(x)
    assert calls   # the compiled pass ran
    old = jit.set_enabled(False)
    try:
        want = prog.quantize(x)
    finally:
        jit.set_enabled(old)
    assert got == want and len(got) == prog.cmd.input_bytes
