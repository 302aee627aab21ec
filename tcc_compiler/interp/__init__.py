"""Float reference interpreter of the graph IR (checked against ONNX Runtime)."""

from tcc_compiler.interp.float_exec import run_float  # noqa: F401
