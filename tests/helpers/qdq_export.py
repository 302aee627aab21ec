"""The QDQ export of a compiled model run in ONNX Runtime next to the model itself."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from tcc_compiler.export.qdq import export_qdq


def qdq_vs_run(m, inputs) -> list[tuple[float, float]]:
    """Per input (float32 NCHW [1, C, H, W]): (max |ORT(export) - m.run|, max |ORT(export)|),
    the export run with ONNX Runtime's graph optimisations off (no fused QDQ kernels)."""
    qdq = export_qdq(m.quantized_graph)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(qdq.SerializeToString(), so)
    out = []
    for x in inputs:
        a = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        b = m.run(x)
        b = b["y"] if isinstance(b, dict) else b
        out.append((float(np.abs(a - b).max()), float(np.abs(a).max())))
    return out
