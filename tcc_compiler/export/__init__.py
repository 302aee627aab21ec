"""Interop exports of a compiled network (QDQ ONNX: :mod:`tcc_compiler.export.qdq`)."""

from tcc_compiler.export.qdq import export_qdq, save_qdq  # noqa: F401
