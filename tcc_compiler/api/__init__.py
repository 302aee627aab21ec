"""Python API: compile a model, save it, load it back, run it.

    >>> import tcc_compiler as tc
    >>> m = tc.compile("resnet50.onnx", "224x224x3")
    >>> m.save("out/")
    >>> top1 = int(m.run(x).argmax())        # x: float32 NCHW [1, 3, 224, 224], preprocessed
    >>> print(m.ir["fuse"])                  # textual IR after the fuse pass
    >>> m2 = tc.load("out/")                 # the same CompiledModel API, from the folder

The CLI (:mod:`tcc_compiler.cli`) is a thin layer over this package:
:mod:`~tcc_compiler.api.compiled` compiles and loads; :mod:`~tcc_compiler.api.folders` works on
a compiled folder (inputs, run, check, eval, analyze, HTML report, QDQ export);
:mod:`~tcc_compiler.api.models` on models and IR files (zoo, supported ops, NPU/host
placement, IR verify/print). Every compile setting is a field of
:class:`tcc_compiler.options.CompileOptions` (its defaults are written there). The ONNX backend
interface is in :mod:`tcc_compiler.onnx_backend`, the placement in :mod:`tcc_compiler.placement`.

The names are loaded on first use (PEP 562), so that ``tccc --help`` and the lighter
sub-modules do not import ONNX.
"""

from __future__ import annotations

import importlib

__all__ = ["CompiledModel", "IrStages", "as_model", "compile", "load"]


def __getattr__(name: str):
    """``tcc_compiler.api.compile`` etc., from :mod:`tcc_compiler.api.compiled`."""
    if name in __all__:
        return getattr(importlib.import_module("tcc_compiler.api.compiled"), name)
    raise AttributeError(f"module 'tcc_compiler.api' has no attribute {name!r}")
