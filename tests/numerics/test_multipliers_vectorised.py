"""The vectorised multiplier derivations (numerics/requant.py) give exactly the per-value
functions' results, edge cases included (0, tiny scales with a clamped shift, values that
round up to 2**31, invalid values raising the same error)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.errors import InternalError
from tcc_compiler.numerics.requant import (quantize_multiplier, quantize_multipliers,
                                           quantize_multipliers_shared,
                                           quantize_multipliers_shared_pairs)

EDGE = [0.0, 2.0 ** -70, 2.0 ** -40, 1.0, 0.5, 1 - 2.0 ** -40, 2.0 ** 29,
        2.0 ** 29 * (1 - 2.0 ** -40), np.nextafter(0.5, 0.0), 3e-4, 0.0123]
reals = st.one_of(st.sampled_from(EDGE),
                  st.floats(min_value=0.0, max_value=2.0 ** 29, allow_nan=False))


@settings(max_examples=100, deadline=None)
@given(st.lists(reals, min_size=1, max_size=20))
def test_quantize_multipliers_equals_scalar(rs):
    m, s = quantize_multipliers(np.array(rs))
    assert [(int(a), int(b)) for a, b in zip(m, s)] == [quantize_multiplier(r) for r in rs]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(reals, reals).filter(lambda p: max(p) > 0), min_size=1,
                max_size=20))
def test_shared_pairs_equal_scalar(rows):
    m, s = quantize_multipliers_shared_pairs(np.array(rows))
    for i, row in enumerate(rows):
        ms, sh = quantize_multipliers_shared(list(row))
        assert m[i].tolist() == ms and int(s[i]) == sh


def test_invalid_values_raise_like_the_scalar_functions():
    for bad in (-1.0, float("nan"), float("inf"), 2.0 ** 30):
        with pytest.raises(InternalError):
            quantize_multipliers(np.array([0.25, bad]))
    with pytest.raises(InternalError):
        quantize_multipliers_shared_pairs(np.array([[0.25, 0.5], [0.0, 0.0]]))
