"""Textual IR files (``X.tir`` + ``X.npz``) as compiler input, as MLIR's opt tools take them.

This module recognises a ``.tir`` model and checks the graph loaded from it; which stages
remain to run on it (the ``meta after_pass`` a ``--dump-ir`` dump carries) is the pipeline's
business: :func:`tcc_compiler.driver.load_resume_point`. (It used to live here, which made the
frontend import the pass pipeline, a later stage.)
"""

from __future__ import annotations

import os
from pathlib import Path

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.verify import VerifyError, verify

#: File suffix of the textual IR.
IR_SUFFIX = ".tir"


def is_ir_file(model: object) -> bool:
    """True when ``model`` is a path ending in ``.tir`` (not a ModelProto)."""
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix == IR_SUFFIX


def check_ir_graph(graph: Graph, path: str | os.PathLike,
                   input_whc: tuple[int, int, int] | None, quantized: bool) -> None:
    """Check a graph loaded from a ``.tir`` file before compiling it.

    Args:
        graph: the loaded graph. path: its file, for the messages.
        input_whc: (W, H, C) given with ``--input``; must match the IR's input (an IR file
            has fixed shapes; re-import the ONNX model to change them). None = no check.
        quantized: the graph is quantized (the verifier checks quantization parameters).

    Raises:
        InputError: not one NCHW image input, an input size that differs from ``--input``,
            or a graph that breaks an IR rule (verifier message naming node and rule).
    """
    if len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 4:
        raise InputError(f"{path}: expected one NCHW image input, found "
                         f"{[tuple(v.shape) for v in graph.inputs]}")
    if input_whc is not None:
        n, c, h, w = graph.inputs[0].shape
        if tuple(input_whc) != (w, h, c):
            raise InputError(f"{path}: input_whc/--input {'x'.join(map(str, input_whc))} "
                             f"differs from the IR's input {w}x{h}x{c} (WxHxC); IR files have "
                             "fixed shapes, re-import the ONNX model to change them")
    try:
        verify(graph, quantized=quantized)
    except VerifyError as exc:
        raise InputError(f"{path}: {exc}") from None
