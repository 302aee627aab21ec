#!/usr/bin/env python3
"""ONNX Runtime's own INT8 quantization of a zoo model, as the yardstick for tccc's SQNR
(issue #13): when ONNX Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, int8
activations, MinMax, calibrated on the 8 bundled calibration photos) also stays below the
target on the bundled eval photos, the model, not tccc's quantizer, is what loses the signal.

For each model: the SQNR (dB) of every graph output of the QDQ model (ONNX Runtime, default
optimizations) against the float model, the minimum over ``--images`` eval photos. Inputs are
preprocessed as ``tools/family_table.py`` compiles them: ImageNet mean/std, the YOLOs pixel /
255, FlowNetS two consecutive photos stacked along channels. ``--trace`` also prints, for the
first photo, the SQNR of every intermediate tensor of the QDQ model run without graph
optimizations (ONNX's reference QDQ semantics) in graph order: where the noise grows.

Usage::

    PYTHONPATH=$PWD python3 tools/dev/qdq_yardstick.py yolov8n flownets [--images 4]
        [--trace] [--input WxH]

Needs only onnx and onnxruntime (no torch). Times: a few minutes per 640x640 model.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tools/: bench_qdq

from tcc_compiler import zoo  # noqa: E402
from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_image  # noqa: E402
from tcc_compiler.runtime.check import sqnr_db  # noqa: E402
from tcc_compiler.zoo._registry import SPECS  # noqa: E402
from bench_qdq import quantize_qdq  # noqa: E402  (ORT quantize_static, QDQ per-channel)


def photo_inputs(name: str, model: onnx.ModelProto, kind: str, n: int) -> list[np.ndarray]:
    """``n`` float32 NCHW inputs from the bundled ``kind`` photos (see the module docstring)."""
    _, c, h, w = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    unit = name in SPECS and SPECS[name].unit_pixels
    pre = (Preprocess(width=w, height=h, mean=(0, 0, 0), std=(1, 1, 1)) if unit
           else Preprocess(width=w, height=h))
    photos = bundled_photos(kind)
    out = []
    for k in range(n):
        planes = [load_image(photos[(k + j) % len(photos)], pre)[0]
                  for j in range(math.ceil(c / 3))]
        out.append(np.concatenate(planes)[:c][None].astype(np.float32))
    return out


def _all_tensors(path: Path, names: list[str], feed: dict) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))
    made = {o for n in m.graph.node for o in n.output}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_value_info(t, onnx.TypeProto())
                          for t in names if t in made and t not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed), strict=True))


def measure(name: str, args: argparse.Namespace) -> None:
    """Print the model's QDQ SQNR line (and the trace with ``--trace``)."""
    w, h = (int(v) for v in args.input.split("x")) if args.input else (None, None)
    model = zoo.build(name, w, h)
    iname = model.graph.input[0].name
    calib = photo_inputs(name, model, "calib", 8)
    evals = photo_inputs(name, model, "eval", args.images)
    with tempfile.TemporaryDirectory() as tmp:
        fp, qp = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        onnx.save(model, fp)
        quantize_qdq(fp, qp, calib)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        fs = ort.InferenceSession(str(fp), so, providers=["CPUExecutionProvider"])
        qs = ort.InferenceSession(str(qp), so, providers=["CPUExecutionProvider"])
        worst: dict[str, float] = {}
        for x in evals:
            for o, a, b in zip(fs.get_outputs(), fs.run(None, {iname: x}),
                               qs.run(None, {iname: x}), strict=True):
                worst[o.name] = min(worst.get(o.name, math.inf), sqnr_db(a, b))
        cells = ", ".join(f"{k} {v:.1f}" for k, v in worst.items())
        print(f"{name} {model.graph.input[0].type.tensor_type.shape.dim[3].dim_value}x"
              f"{model.graph.input[0].type.tensor_type.shape.dim[2].dim_value}: ORT QDQ "
              f"per-channel SQNR dB (min over {len(evals)} photos): {cells}", flush=True)
        if args.trace:
            order = [o for n in model.graph.node for o in n.output]
            ops = {o: n.op_type for n in model.graph.node for o in n.output}
            a = _all_tensors(fp, order, {iname: evals[0]})
            b = _all_tensors(qp, order, {iname: evals[0]})
            for t in order:
                if t in a and t in b and a[t].dtype == np.float32:
                    print(f"  {sqnr_db(a[t], b[t]):7.2f} dB  max|x| {np.abs(a[t]).max():9.2f}"
                          f"  {ops[t]:18s} {t}")


def main(argv: list[str] | None = None) -> int:
    """Measure every model named on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="tccc zoo model names")
    ap.add_argument("--images", type=int, default=4, help="eval photos (1..12)")
    ap.add_argument("--trace", action="store_true", help="per-tensor SQNR on the first photo")
    ap.add_argument("--input", default=None, help="WxH (default: the vendor's resolution)")
    args = ap.parse_args(argv)
    for name in args.models:
        measure(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
