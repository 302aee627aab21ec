"""tccc: a compiler from ONNX image models to Telechips TCC750x NPU programs.

The pipeline (see :mod:`tcc_compiler.driver`) is import -> passes -> quantize -> schedule ->
emit, and :mod:`tcc_compiler.sim` executes the emitted binaries bit-exactly.
"""

__version__ = "0.1.0"

from tcc_compiler.errors import TccError  # noqa: E402

__all__ = ["TccError", "__version__"]
