"""A conv tile on its plainest route (accumulator routine, compiled epilogue into the output
box, clamp) runs as one routine made once on repeat in-order runs
(tcc_compiler/sim/conv_exec.py ``plain_step``), with the bytes of the general route."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor
from tcc_compiler.sim import executor as executor_mod

pytestmark = pytest.mark.skipif(
    not jit.available() or int8_gemm.int8_session() is None,
    reason="the plain route needs the compiled kernels and the exact int8 GEMM")


def _inputs(n_bytes: int, n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes() for _ in range(n)]


def test_repeat_runs_take_the_plain_steps_with_the_same_bytes(small_folder, monkeypatch):
    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)   # this small net's GEMMs take that route
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes)
    got = [ex.run(x) for x in inputs]   # record, then reuse: the steps are made
    steps = {i for i, r in ex._ops.ready.items() if r[4] is not None}
    assert steps
    general = []
    real = executor_mod.conv_result

    def counted(pl, *args, **kw):
        general.append(pl)
        return real(pl, *args, **kw)

    monkeypatch.setattr(executor_mod, "conv_result", counted)
    got += [ex.run(x) for x in inputs]
    assert not {id(ex._ops.ready[i][0]) for i in steps} & {id(p) for p in general}
    want = [Executor(ex.cmd, prog.weights, ex.target).run(x, check=True) for x in inputs]
    assert got == want + want
