"""tccc: a compiler from ONNX image models to Telechips TCC750x NPU programs.

The pipeline (see :mod:`tcc_compiler.driver`) is import -> passes -> quantize -> schedule ->
emit, and :mod:`tcc_compiler.sim` executes the emitted binaries bit-exactly.
"""

from tcc_compiler.errors import TccError
from tcc_compiler.version import __version__

__all__ = ["TccError", "__version__", "compile", "load", "partition", "CompiledModel",
           "CompileOptions"]

_LAZY = {"compile": "tcc_compiler.api", "load": "tcc_compiler.api",
         "CompiledModel": "tcc_compiler.api", "partition": "tcc_compiler.placement",
         "CompileOptions": "tcc_compiler.options"}


def __getattr__(name: str):
    """Lazy public API (``tcc_compiler.compile``/``load``/``partition``): importing the package
    stays cheap (the CLI's ``--version``/``--help`` do not load ONNX Runtime)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcc_compiler' has no attribute {name!r}")
