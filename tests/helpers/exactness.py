"""One check several end-to-end op tests share: a compiled program is bit-exact against the
golden model and accurate against ONNX Runtime on some inputs, and hazard-free (a random
interleaving of its command queues gives the same result as the in-order run)."""

from __future__ import annotations

from pathlib import Path


def assert_exact_and_hazard_free(prog, model_path: Path, inputs, case: str = "",
                                 min_sqnr_db: float = 30.0):
    """``prog`` (a loaded program) on every float32 NCHW input of ``inputs``: bit-exact against
    the golden model of ``model_path`` and SQNR >= ``min_sqnr_db`` against ONNX Runtime
    (:class:`tcc_compiler.runtime.check.Checker`); then the last input's quantized run equals a
    random-interleaving run (seed 1) with the hazard checker on. Returns the last input."""
    from tcc_compiler.runtime.check import Checker

    checker = Checker(prog, model_path)
    x = None
    for s, x in enumerate(inputs):
        c = checker.check(x, prog.run(x))
        assert c["bit_exact"], (case, s, c)
        assert c["sqnr_db"] is None or c["sqnr_db"] >= min_sqnr_db, (case, s, c)
    q = prog.quantize(x)
    ref = prog.executor.run(q, check=True)[0]
    assert prog.executor.run(q, schedule="random", seed=1)[0] == ref
    return x
