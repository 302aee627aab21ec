"""Python API on models and IR files before compilation: build a reference model, list the ONNX
ops tccc converts, place a model's nodes, check or print the IR (``tccc zoo|ops|ir``).

Every function raises :class:`tcc_compiler.errors.TccError` subclasses with one-line messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, TextIO

from tcc_compiler.placement import Placement, partition

__all__ = ["Placement", "build_zoo_model", "partition", "print_ir", "supported_ops",
           "verify_ir_file"]


def build_zoo_model(name: str, output: str | os.PathLike, input_whc: str = "224x224x3",
                    seed: int = 0) -> tuple[Path, tuple[int, int, int]]:
    """Write a reference model (seeded, untrained; :mod:`tcc_compiler.zoo`) as ONNX.

    Args:
        name: resnet18 | resnet50 | resnet50-bn | resnet50-v2.
        input_whc: "WxHxC" (width, height, channels) of the model's input.
        seed: weight seed; the same seed gives a byte-identical model.

    Returns:
        (the written path, (W, H, C)).

    Raises:
        InputError: an unknown name, a bad size, or an output file that cannot be written
            (checked before the model is built).
    """
    from tcc_compiler import zoo
    from tcc_compiler.frontend import parse_input_spec
    from tcc_compiler.fsutil import check_output_file

    w, h, c = parse_input_spec(input_whc)
    check_output_file(output, "-o")
    path = zoo.save(name, output, width=w, height=h, seed=seed, channels=c)
    return path, (w, h, c)


def supported_ops() -> list[dict]:
    """One row per converted ONNX op type, sorted: ``notes`` = where it runs and what it
    accepts, from the support records (frontend/support.py, the source of SUPPORTED_OPS.md),
    so the two agree; ``runs``/``accepts``/``refuses`` are the record's fields. An op without
    a record (a bug tests/frontend/test_opsets.py catches) falls back to its converter's
    docstring."""
    from tcc_compiler.frontend.converters import CONVERTERS
    from tcc_compiler.frontend.support import SUPPORT

    rows = []
    for op, fn in sorted(CONVERTERS.items()):
        rec = SUPPORT.get(op)
        if rec is None:
            doc = (fn.__doc__ or "").strip().splitlines()
            rows.append({"op_type": op, "notes": doc[0] if doc else ""})
            continue
        rows.append({"op_type": op, "notes": f"{rec.runs}: {rec.accepts}", "runs": rec.runs,
                     "accepts": rec.accepts, "refuses": rec.refuses})
    return rows


def verify_ir_file(path: str | os.PathLike) -> dict:
    """Parse a ``.tir`` file (and its ``.npz``) and run the IR verifier on it.

    Returns:
        ``{"file", "ok": True, "nodes", "stage"}``: stage is the dump's ``after_pass``, else
        "quantized" or "float".

    Raises:
        FormatError: the file does not parse. InputError: the graph breaks an IR rule (the
        verifier's message, prefixed with the path), or ``path`` names an ONNX model.
    """
    from tcc_compiler.errors import InputError
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.ir.verify import VerifyError, verify
    from tcc_compiler.passes.instruments import AFTER_PASS_META

    if str(path).lower().endswith(".onnx"):   # was "not UTF-8 text (byte 3)"
        raise InputError(f"{path}: an ONNX model, not a textual IR (.tir) file; 'tccc ir "
                         f"print {path}' prints its IR")
    g = load_ir(path)
    quantized = bool(g.meta.get("quantized", False))
    try:
        verify(g, quantized=quantized)
    except VerifyError as exc:
        raise InputError(f"{path}: {exc}") from None
    stage = g.meta.get(AFTER_PASS_META, "quantized" if quantized else "float")
    return {"file": str(path), "ok": True, "nodes": len(g.nodes), "stage": stage}


def print_ir(model: str | os.PathLike, out: TextIO, *, input_whc: str | None = None,
             after: str | None = None, before: str | None = None,
             calibration: Sequence[str | os.PathLike] | None = None,
             inline_limit: int = 16) -> None:
    """Write a model's IR (the text ``specs/ir.lark`` parses) before or after one stage.

    Runs the driver's stages up to that stage: import (an ONNX model, or a ``.tir`` resumed
    where its dump stopped), the float passes, and for ``quantize`` calibration (on
    ``calibration``, default the bundled photos) and quantization with the default options.

    Args:
        model: .onnx or .tir path. out: the text stream written to.
        after, before: a stage name (import, a pass name, quantize); at most one. Neither:
            after import, or a ``.tir`` exactly as loaded (its ``after_pass`` meta kept).
        inline_limit: constants with more elements print as ``@key`` references.

    Raises:
        InputError: an unknown stage, "all", or a stage that is not ahead of the IR.
    """
    from tcc_compiler import driver
    from tcc_compiler.errors import InputError
    from tcc_compiler.ir.printer import ConstTable, print_graph
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.options import CompileOptions
    from tcc_compiler.passes.instruments import IMPORT_STAGE, QUANTIZE_STAGE, PrintIR

    _check_stage_names(after, before)
    is_ir = driver.is_ir_file(model)
    if is_ir and after is None and before is None:  # as loaded, after_pass meta kept
        out.write(print_graph(load_ir(model), ConstTable(), inline_limit=inline_limit))
        return
    graph, passes = driver.import_model(model, input_whc)
    target = after or before or IMPORT_STAGE
    when = "after" if before is None else "before"
    if target == IMPORT_STAGE:
        if when == "before" or is_ir:
            raise InputError(f"{model}: there is no IR {when} stage import here")
        out.write(print_graph(graph, ConstTable(), inline_limit=inline_limit))
        return
    reachable = [p.name for p in passes] + ([] if graph.meta.get("quantized")
                                            else [QUANTIZE_STAGE])
    if target not in reachable:
        raise InputError(f"{model}: stage {target} is not ahead of this IR (remaining: "
                         f"{', '.join(reachable) or 'none'})")
    printer = PrintIR(before=target if when == "before" else None,
                      after=target if when == "after" else None, stream=out,
                      inline_limit=inline_limit)
    stop = [p.name for p in passes].index(target) + 1 if target != QUANTIZE_STAGE else None
    graph = driver.run_float_passes(graph, passes[:stop], instruments=[printer]).graph
    if target == QUANTIZE_STAGE:  # the driver's calibrate + quantize stages, default options
        opts = CompileOptions(calibration=calibration)
        calib = driver.calibrate(graph, opts, driver.preprocess_for(graph, opts))
        driver.quantize(graph, graph.clone(), calib, opts, [printer], len(passes))


def _check_stage_names(after: str | None, before: str | None) -> None:
    """Refuse unknown stage names and "all" for :func:`print_ir` (InputError)."""
    from tcc_compiler.errors import InputError
    from tcc_compiler.passes.instruments import check_pass_names, stage_names

    names = stage_names()
    check_pass_names(after, names, "--after")
    check_pass_names(before, names, "--before")
    if after == "all" or before == "all":
        raise InputError("tccc ir print: name one stage (use tccc compile --print-ir-after all "
                         "for every stage)")
