"""The executor prepares each weight operand for the GEMM once and reuses it only while the
SRAM bytes it was prepared from are unchanged (tcc_compiler/sim/executor.py _conv_weights)."""

from __future__ import annotations

import numpy as np

from tcc_compiler.runtime import load_program


def test_prepared_weights_follow_the_sram_bytes(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    w1 = np.arange(2 * 3 * 3 * 4, dtype=np.int64).astype(np.int8).reshape(2, 3, 3, 4)
    a = ex._weights.get(0x100, w1, 1)
    assert ex._weights.get(0x100, w1.copy(), 1) is a          # same bytes: reused
    w2 = w1.copy()
    w2[1, 2, 2, 3] += 1                                          # one byte differs
    b = ex._weights.get(0x100, w2, 1)
    assert b is not a and np.array_equal(b.w, w2)
    assert ex._weights.get(0x100, w1, 1) is a                   # both kept


def test_repeated_runs_identical(small_folder):
    _, out = small_folder
    prog = load_program(out)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(prog.input_shape).astype(np.float32) for _ in range(2)]
    first = [prog.execute(prog.quantize(x)) for x in xs]
    again = [prog.execute(prog.quantize(x)) for x in xs]          # prepared weights reused
    fresh = load_program(out)
    assert first == again == [fresh.execute(fresh.quantize(x)) for x in xs]
