"""Shared helpers of the zoo builder tests: one cached build per (model, size), ONNX Runtime
sessions, op histograms. Models are built at small sizes so the default suite stays fast."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort

from tcc_compiler import zoo
from tcc_compiler.datasets import Preprocess, bundled_photos, load_image

#: small default-test input per model (W, H, C): the smallest the architecture allows
SMALL = {"yolov8n": (64, 64, 3), "yolov5n": (64, 64, 3), "yolo11n": (64, 64, 3),
         "mobilenet-v2": (64, 64, 3), "mobilenet-v3-large": (64, 64, 3),
         "efficientnet-lite0": (64, 64, 3), "efficientnet-v2-s": (64, 64, 3),
         "ssdlite-mobilenet-v2": (64, 64, 3), "flownets": (64, 64, 6),
         "regnetx-400mf": (64, 64, 3), "mobileone-s1": (64, 64, 3),
         "convmixer-768-32": (32, 32, 3), "lenet5": (32, 32, 1)}


@cache
def built(name: str, w: int, h: int, c: int) -> bytes:
    """Serialized ``zoo.build(name, w, h, c)`` (cached: building is the slow part)."""
    return zoo.build(name, w, h, c).SerializeToString()


def model_of(name: str, size: tuple[int, int, int] | None = None) -> onnx.ModelProto:
    """The cached model at ``size`` (default :data:`SMALL`)."""
    return onnx.load_from_string(built(name, *(size or SMALL[name])))


def photo_input(shape: list[int], unit_pixels: bool, index: int = 0) -> np.ndarray:
    """A bundled photo as float32 NCHW ``shape``: RGB in [0, 1] (``unit_pixels``, YOLO) or
    ImageNet-normalised; 6 channels = two consecutive photos (FlowNetS' frame pair); 1 channel
    = greyscale (LeNet-5)."""
    _, c, h, w = shape
    if c == 1:
        return load_image(bundled_photos("eval")[index], Preprocess(width=w, height=h,
                                                                   channels=1))
    if unit_pixels:
        pre = Preprocess(width=w, height=h, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    else:
        pre = Preprocess(width=w, height=h)
    photos = bundled_photos("eval")
    frames = [load_image(photos[(index + i) % len(photos)], pre) for i in range(c // 3)]
    return np.concatenate(frames, axis=1).astype(np.float32)


def run_ort(model: onnx.ModelProto, index: int = 0) -> dict[str, np.ndarray]:
    """Run ``model`` in ONNX Runtime on bundled photo ``index`` (see :func:`photo_input`);
    outputs by name."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = photo_input(inp.shape, inp.name == "images", index)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {inp.name: x}),
                    strict=True))


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Op-type histogram."""
    return dict(Counter(n.op_type for n in model.graph.node))


def silu_pairs(model: onnx.ModelProto) -> int:
    """Number of ``Mul(x, Sigmoid(x))`` pairs (SiLU as torch.onnx opset 17 writes it)."""
    sig = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Sigmoid"}
    return sum(1 for n in model.graph.node if n.op_type == "Mul" and len(n.input) == 2
               and any(sig.get(b) == a for a, b in (n.input, n.input[::-1])))
