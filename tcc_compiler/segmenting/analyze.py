"""``tccc analyze`` of a segmented folder: the per-layer INT8 error of every NPU segment, each
fed the float values its inputs take in the whole float model (ONNX Runtime), so a
segmented model's layers are listed, with their names, as a whole-NPU model's are (the names
``--precision FILE`` takes).

    plan the model again (the plan compile made) -> ONNX Runtime: every NPU segment's inputs
    on the given inputs -> per NPU segment: its float graph (import + float passes of the
    segment's ONNX model) against its folder's quantized.tir (quant/analyze.py)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from tcc_compiler.emit.files import IR_FILE
from tcc_compiler.errors import InputError
from tcc_compiler.frontend.segments import extract_model
from tcc_compiler.quant.analyze import LayerReport, analyze
from tcc_compiler.segmenting.build import boundary_values, segment_inputs
from tcc_compiler.segmenting.plan import plan_model


def _input_whc(manifest: dict) -> tuple[int, int, int]:
    """(W, H, C) of a segmented folder's model input (manifest ``input.shape``, NCHW)."""
    _, c, h, w = (int(v) for v in manifest["input"]["shape"])
    return w, h, c


def _npu_folders(manifest: dict) -> dict[int, str]:
    """{segment index: its folder} of the manifest's NPU segments."""
    return {int(s["index"]): str(s["folder"]) for s in manifest.get("segments", ())
            if isinstance(s, dict) and s.get("device") == "npu"}


def analyze_segmented(folder: str | os.PathLike, model: str | os.PathLike, manifest: dict,
                      xs: list[np.ndarray], progress: Callable | None = None
                      ) -> list[LayerReport]:
    """Per-layer accumulated and isolated errors of every NPU segment of a segmented folder,
    worst isolated SQNR first over all segments (each row's ``segment`` names its folder).

    Args:
        folder: the segmented output folder. model: the .onnx it was compiled from (the
            caller has checked its sha256). manifest: the folder's parsed top-level manifest.
        xs: model inputs, float32 NCHW, preprocessed as the manifest says.
        progress: optional iterable wrapper, per segment over the inputs.

    Raises:
        InputError: the model no longer plans into the folder's segments (another tccc
            version), a segment folder without quantized.tir, or as :func:`analyze`.
    """
    from tcc_compiler import driver
    from tcc_compiler.ir.text import load_ir

    plan = plan_model(model, _input_whc(manifest))
    folders = _npu_folders(manifest)
    if sorted(folders) != [s.index for s in plan.npu_segments]:
        raise InputError(f"{folder}: its NPU segments ({', '.join(folders.values())}) are not "
                         f"the ones {model} plans into now; compile it again")
    npu = plan.npu_segments
    values = boundary_values(plan, sorted({t for s in npu for t in s.inputs}), xs)
    rows: list[LayerReport] = []
    for seg in npu:
        ir_path = Path(folder) / folders[seg.index] / IR_FILE
        if not ir_path.is_file():
            raise InputError(f"{ir_path}: missing; is {folder} a tccc compile output folder?")
        sub = extract_model(plan.prepared.proto, seg, f"{Path(str(model)).name}:npu_{seg.index}")
        fgraph = driver.run_float_passes(*driver.import_model(sub)).graph
        for r in analyze(fgraph, load_ir(ir_path), segment_inputs(sub, seg, values), progress):
            r.segment = folders[seg.index]
            rows.append(r)
    rows.sort(key=lambda r: (r.isolated.sqnr_db, r.accumulated.sqnr_db))
    return rows
