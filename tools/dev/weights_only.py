#!/usr/bin/env python3
"""Weights-only INT8 of a model, the other half of issue #13's SQNR diagnosis: every Conv,
ConvTranspose and Gemm weight rounded to int8 per output channel (symmetric, max-abs scale,
round to nearest: what tccc stores, without GPTQ), every activation left float32, run in ONNX
Runtime; prints the SQNR (dB) of every graph output against the float model on each of
``--images`` bundled eval photos.

When this alone is below a target, no activation quantization (int16 included, ``--precision
auto``) can reach it: the model's weights lose the signal. Measured at the vendor's resolution
(deterministic figures; SSDLite and EfficientNetV2-S on the first 4 photos): the seeded
MobileNetV3-Large 23.7-29.0 dB, EfficientNetV2-S 19.4-20.7, SSDLite scores 19.3-22.6 / boxes
32.3-33.8, EfficientNet-Lite0 30.5-32.6; the real ImageNet-trained EfficientNet-Lite0
(``../shared/data/imagenet-lite0``, ``--mean 127 127 127 --std 128 128 128 --scale 1``)
14.1-24.8 dB on the same photos (which are not ImageNet classes: its logits are flat on them).

Inputs: a ``tccc zoo`` name (preprocessed as ``tools/family_table.py`` compiles it) or an
``.onnx`` file with 3 input channels (``--mean``/``--std`` in the units of ``--scale`` x pixel,
default ImageNet on pixel / 255; the photo squashed to the model's input size).

Usage::

    PYTHONPATH=$PWD python3 tools/dev/weights_only.py mobilenet-v3-large [--images 10]
    PYTHONPATH=$PWD python3 tools/dev/weights_only.py ../shared/data/imagenet-lite0/\
efficientnet_lite0.onnx --mean 127 127 127 --std 128 128 128 --scale 1

Needs only onnx, onnxruntime, numpy and Pillow (no torch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from qdq_yardstick import photo_inputs  # noqa: E402

from tcc_compiler import zoo  # noqa: E402
from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_image  # noqa: E402
from tcc_compiler.runtime.check import sqnr_db  # noqa: E402

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm")


def int8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose Conv/Gemm (OIHW / ``[out, in]``, axis 0) and ConvTranspose
    (IOHW, axis 1) weights are rounded to symmetric int8 per output channel (scale = max|w| /
    127, round half to even as numpy does) and stored back as float32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        axis = 1 if node.op_type == "ConvTranspose" else 0
        rows = np.moveaxis(w, axis, 0)
        flat = rows.reshape(rows.shape[0], -1)
        scale = np.abs(flat).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = (np.clip(np.round(flat / scale), -127, 127) * scale).reshape(rows.shape)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(
            np.moveaxis(q, 0, axis).astype(np.float32), node.input[1]))
    return out


def _inputs(args: argparse.Namespace, model: onnx.ModelProto) -> list[np.ndarray]:
    if not args.model.endswith(".onnx"):
        return photo_inputs(args.model, model, "eval", args.images)
    _, _, h, w = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    pre = Preprocess(width=w, height=h, mean=tuple(args.mean), std=tuple(args.std),
                     scale=args.scale)
    return [load_image(p, pre) for p in bundled_photos("eval")[:args.images]]


def main(argv: list[str] | None = None) -> int:
    """Print one line: the weights-only SQNR of every output on every photo."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a tccc zoo name or an .onnx file")
    ap.add_argument("--images", type=int, default=10, help="eval photos (1..12)")
    ap.add_argument("--mean", type=float, nargs=3, default=(0.485, 0.456, 0.406))
    ap.add_argument("--std", type=float, nargs=3, default=(0.229, 0.224, 0.225))
    ap.add_argument("--scale", type=float, default=1 / 255, help="pixel multiplier")
    args = ap.parse_args(argv)
    model = onnx.load(args.model) if args.model.endswith(".onnx") else zoo.build(args.model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(int8_weights(model).SerializeToString(), so,
                             providers=["CPUExecutionProvider"])
    name = ref.get_inputs()[0].name
    per: dict[str, list[float]] = {}
    for x in _inputs(args, model):
        for o, a, b in zip(ref.get_outputs(), ref.run(None, {name: x}), q.run(None, {name: x}),
                           strict=True):
            per.setdefault(o.name, []).append(round(float(sqnr_db(a, b)), 1))
    cells = "; ".join(f"{k} {min(v):.1f}..{max(v):.1f} ({v})" for k, v in per.items())
    print(f"{args.model}: weights-only int8 SQNR dB over {args.images} photos: {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
