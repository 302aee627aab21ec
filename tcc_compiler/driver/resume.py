"""Resuming a compile from a ``.tir`` dump: which float passes remain to run on it."""

from __future__ import annotations

import logging
import os

from tcc_compiler.errors import InputError, UnsupportedError
from tcc_compiler.frontend.tir_import import check_ir_graph
from tcc_compiler.ir.graph import Graph
from tcc_compiler.passes import default_pipeline
from tcc_compiler.passes.instruments import AFTER_PASS_META, IMPORT_STAGE, QUANTIZE_STAGE
from tcc_compiler.passes.legalize import Legalize, field_problems

log = logging.getLogger(__name__)


def load_resume_point(path: str | os.PathLike,
                      input_whc: tuple[int, int, int] | None = None) -> tuple[Graph, list]:
    """Load a ``.tir`` file and decide which float passes remain to run on it.

    A dump written by ``tccc compile --dump-ir DIR`` carries ``meta after_pass = "<stage>"``;
    compilation continues with the passes after that stage. A ``.tir`` without that meta (hand
    written, or ``quantized.tir`` from an output folder) is treated by its content: a
    quantized graph goes straight to scheduling, a float graph runs the whole float pipeline
    (every pass is idempotent at its fixed point, so an already-applied pass does not fire).

    Args:
        path: the ``.tir`` file (its ``.npz`` sidecar is read when present).
        input_whc: (W, H, C) given with ``--input``; must match the IR's input (an IR file
            has fixed shapes; re-import the ONNX model to change them). None = no check.

    Returns:
        (graph, passes): the graph with ``after_pass`` removed from its meta, and the pass
        objects still to run (empty for a quantized graph or one dumped after the last pass).

    Raises:
        FormatError: the file does not parse (file:line:column in the message).
        InputError: unknown ``after_pass`` stage, an input size that differs from ``--input``,
            or a graph that breaks an IR rule (verifier message naming node and rule).
    """
    from tcc_compiler.ir.text import load_ir

    graph = load_ir(path)
    stage = graph.meta.pop(AFTER_PASS_META, None)
    quantized = bool(graph.meta.get("quantized", False))
    pipeline = default_pipeline()
    names = [p.name for p in pipeline]
    if stage is None or stage == IMPORT_STAGE:
        remaining = [] if quantized else pipeline
    elif stage == QUANTIZE_STAGE:
        remaining = []
    elif stage in names:
        remaining = pipeline[names.index(stage) + 1:]
    else:
        raise InputError(f"{path}: meta after_pass = {stage!r} is not a stage of this compiler "
                         f"({', '.join([IMPORT_STAGE] + names + [QUANTIZE_STAGE])})")
    if quantized and remaining:
        raise InputError(f"{path}: graph is quantized but meta after_pass = {stage!r} "
                         "precedes quantization")
    check_ir_graph(graph, path, input_whc, quantized)
    if not any(p.name == Legalize.name for p in remaining):   # its field checks still apply
        problems = [msg for n in graph.nodes for msg in field_problems(n)]
        if problems:
            raise UnsupportedError(str(path), problems)
    log.info("resuming %s after stage %s: %d float passes left%s", path, stage or "?",
             len(remaining), " (already quantized)" if quantized else "")
    return graph, remaining
