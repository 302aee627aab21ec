"""``kernels``: a fixture (import it into a test module) that runs a test once with the
numpy kernels and once with the compiled ones (numerics/jit.py; skipped when numba is not
installed), so both stay tested whichever the machine would pick."""

from __future__ import annotations

import pytest

from tcc_compiler.numerics import jit


@pytest.fixture(params=["numpy", "compiled"])
def kernels(request):
    """The kernel set in use for the test ("numpy" or "compiled")."""
    if request.param == "compiled":
        pytest.importorskip("numba")
    old = jit.set_enabled(request.param == "compiled")
    try:
        if request.param == "compiled":
            assert jit.available()
        yield request.param
    finally:
        jit.set_enabled(old)
