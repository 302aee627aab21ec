"""Shared by the mixed-precision end-to-end tests (int16 activations, int16 weights): seeded
random inputs and one compile-run-check round of a small model."""

from __future__ import annotations

import numpy as np
import onnx

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker


def random_inputs(seed: int, n: int, hw: int) -> list[np.ndarray]:
    """``n`` seeded standard-normal float32 inputs of NCHW shape ``[1, 3, hw, hw]``."""
    r = np.random.default_rng(seed)
    return [r.normal(0, 1, (1, 3, hw, hw)).astype(np.float32) for _ in range(n)]


def compile_check(tmp_path, model: onnx.ModelProto, hw: int, precision, *, target=None,
                  schedules: int = 0, **compile_kw):
    """Compile ``model`` at ``hw x hw x 3`` with ``precision`` (calibrated on 8 seeded
    inputs), save it under ``tmp_path`` and run 3 other seeded inputs on the executor.

    ``schedules``: also run that many random legal queue interleavings (hazard-checked) of each
    input and require the same output bytes. ``compile_kw`` goes to :func:`api.compile`.

    Returns:
        ``(compiled model, loaded program, [(bit_exact vs golden, SQNR dB vs ONNX Runtime)]``
        per input ``)``.
    """
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    m = api.compile(model, f"{hw}x{hw}x3", calibration=random_inputs(123, 8, hw),
                    precision=precision, target=target, **compile_kw)
    prog = load_program(m.save(tmp_path / f"out-{len(list(tmp_path.iterdir()))}"))
    checker = Checker(prog, path)
    res = []
    for x in random_inputs(7, 3, hw):
        c = checker.check(x, prog.run(x))
        res.append((c["bit_exact"], c["sqnr_db"]))
        ref = prog.execute(prog.quantize(x))
        for seed in range(schedules):
            assert prog.execute(prog.quantize(x), schedule="random", seed=seed) == ref
    return m, prog, res


def really_tiled(m, hw: int) -> bool:
    """True when some layer of compiled model ``m`` (report rows) is split into spatial tiles
    smaller than the ``hw x hw`` map (a small-SRAM target's test really tiles)."""
    return any("spatial x" in r["tiling"] and not r["tiling"].startswith(f"{hw}x{hw}x")
               for r in m.report["layers"])
