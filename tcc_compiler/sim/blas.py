"""The executor's BLAS thread control, which lives in :mod:`tcc_compiler.numerics.blas` (the
compile's calibration and GPTQ use it too, below the simulator's layer)."""

from tcc_compiler.numerics.blas import blas_threads, get_blas_threads  # noqa: F401
