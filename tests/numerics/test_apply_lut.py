"""numerics/lut.py ``apply_lut``: the table kernel's bytes (entry q at index q + 128, one table
or T tables cycled over the channels) with one gather over the input's uint8 view for a
single table (compiled, or np.take without numba), no int64 index copy."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.lut import apply_lut


def _definition(x: np.ndarray, tables: np.ndarray, ch0: int = 0) -> np.ndarray:
    flat = x.reshape(-1).astype(np.int64)
    ch = (ch0 + np.arange(flat.size)) % tables.shape[0]
    return np.array([tables[c, q + 128] for c, q in zip(ch, flat)],
                    np.int8).reshape(x.shape)


def test_single_table_equals_the_definition_on_every_value_and_a_strided_input():
    rng = np.random.default_rng(0)
    tab = rng.integers(-128, 128, (1, 256), dtype=np.int8)
    every = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    np.testing.assert_array_equal(apply_lut(every, tab).reshape(-1), tab[0])   # q at q + 128
    big = rng.integers(-128, 128, (6, 14, 5), dtype=np.int8)
    x = big[:, ::2, 1:4]                                  # not contiguous
    got = apply_lut(x, tab)
    assert got.dtype == np.int8 and got.shape == x.shape
    np.testing.assert_array_equal(got, _definition(x, tab))


def test_several_tables_cycle_over_the_channels():
    rng = np.random.default_rng(1)
    tabs = rng.integers(-128, 128, (3, 256), dtype=np.int8)
    x = rng.integers(-128, 128, (4, 5, 6), dtype=np.int8)
    np.testing.assert_array_equal(apply_lut(x, tabs, 2), _definition(x, tabs, 2))


@pytest.mark.parametrize("compiled", [True, False])
def test_single_table_compiled_and_numpy_give_the_same_bytes(compiled):
    rng = np.random.default_rng(3)
    tab = rng.integers(-128, 128, (1, 256), dtype=np.int8)
    x = rng.integers(-128, 128, (7, 18, 9), dtype=np.int8)[:, ::2]
    old = jit.set_enabled(compiled)
    try:
        if compiled and jit.available():
            rot = np.concatenate((tab[0, 128:], tab[0, :128]))
            np.testing.assert_array_equal(jit.lut_int8(x, rot), _definition(x, tab))
        np.testing.assert_array_equal(apply_lut(x, tab), _definition(x, tab))
    finally:
        jit.set_enabled(old)


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
def test_single_table_makes_no_wide_index_copy():
    x = np.random.default_rng(2).integers(-128, 128, (64, 64, 64), dtype=np.int8)
    tab = np.arange(-128, 128, dtype=np.int8)[None]
    apply_lut(x[:1], tab)                 # the kernels loaded and compiled
    tracemalloc.start()
    try:
        y = apply_lut(x, tab)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(y, x)   # the identity table
    assert peak < 2 * x.size              # the int8 output, no intp/int64 index copy
