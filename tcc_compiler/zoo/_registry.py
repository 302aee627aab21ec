"""The detector and mobile zoo models: what each builder needs and how a model is built.

Every model here is recorded twice by :class:`tcc_compiler.zoo._graph.Builder` (calibration on
``CALIB_IMAGES`` synthetic ``CALIB_SIZE_PX`` square images, then emission at the requested size),
so its weights depend only on the seed, never on the input size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from tcc_compiler.zoo import _reference as ref
from tcc_compiler.zoo import (convmixer, efficientnet, flownet, lenet, mobilenet, mobileone,
                              regnet, ssdlite, yolo, yolov5)
from tcc_compiler.zoo._graph import Builder, T

CALIB_IMAGES = 2
CALIB_SIZE_PX = 128  # a multiple of every model's stride (FlowNetS: 64)


@dataclass(frozen=True)
class Spec:
    """One zoo family member.

    Attributes:
        record: the architecture function (records the graph, returns the graph outputs).
        default_whc: the vendor's input resolution for the row, (width, height, channels).
        multiple: width and height must be multiples of it (pixels).
        input_name: the graph input's name (ultralytics ``images``, torchvision ``input``).
        unit_pixels: inputs are RGB in [0, 1] (YOLO) rather than ImageNet-normalised.
        min_size: smallest width/height (pixels).
        fixed_size: the only width and height the model takes (pixels; LeNet-5's ``fc1``
            fixes its input to 32x32), also the size it is calibrated at; None: any size
            from ``min_size``, calibrated at ``CALIB_SIZE_PX``.
    """

    record: Callable[[Builder], list[T]]
    default_whc: tuple[int, int, int]
    multiple: int = 1
    input_name: str = "input"
    unit_pixels: bool = False
    min_size: int = 32
    fixed_size: int | None = None


SPECS: dict[str, Spec] = {
    "yolov8n": Spec(yolo.record_yolov8n, (640, 640, 3), 32, "images", True),
    "yolov5n": Spec(yolov5.record_yolov5n, (640, 640, 3), 32, "images", True),
    "yolo11n": Spec(yolo.record_yolo11n, (640, 640, 3), 32, "images", True),
    "mobilenet-v2": Spec(mobilenet.record_mobilenet_v2, (224, 224, 3)),
    "mobilenet-v3-large": Spec(mobilenet.record_mobilenet_v3_large, (224, 224, 3)),
    "efficientnet-lite0": Spec(efficientnet.record_lite0, (224, 224, 3)),
    "efficientnet-v2-s": Spec(efficientnet.record_v2_s, (224, 224, 3)),
    "ssdlite-mobilenet-v2": Spec(ssdlite.record_ssdlite_mbv2, (300, 300, 3), min_size=64),
    "flownets": Spec(flownet.record_flownets, (512, 384, 6), 64, min_size=64),
    "regnetx-400mf": Spec(regnet.record_regnetx_400mf, (640, 320, 3)),
    "mobileone-s1": Spec(mobileone.record_mobileone_s1, (640, 320, 3)),
    "convmixer-768-32": Spec(convmixer.record_convmixer_768_32, (224, 224, 3)),
    "lenet5": Spec(lenet.record_lenet5, (32, 32, 1), fixed_size=lenet.SIZE_PX),
}


def _calibration_images(spec: Spec, channels: int) -> np.ndarray:
    """float32 NCHW ``[CALIB_IMAGES, C, S, S]`` synthetic images in the model's input range
    (S: the model's fixed size, else ``CALIB_SIZE_PX``)."""
    size = spec.fixed_size or CALIB_SIZE_PX
    images = ref.synthetic_images(channels, CALIB_IMAGES, size)  # NHWC, normalised
    if spec.unit_pixels:
        images = ref.unit_pixels(images)
    return images.transpose(0, 3, 1, 2).astype(np.float32)


def build_recorded(name: str, width: int, height: int, channels: int, seed: int,
                   producer_version: str) -> onnx.ModelProto:
    """Build one model of :data:`SPECS` (arguments already validated by ``zoo.build``).

    Returns:
        The model (not yet checked): input float32 NCHW ``[1, channels, height, width]``.
    """
    spec = SPECS[name]
    calib = Builder(_calibration_images(spec, channels), spec.input_name,
                    rng=np.random.default_rng(seed))
    spec.record(calib)
    emit = Builder(np.zeros((1, channels, height, width), np.float32), spec.input_name,
                   params=calib.params)
    outputs = spec.record(emit)
    assert emit.replay_done(), f"{name}: the emission pass used fewer layers than calibration"
    size = spec.fixed_size or CALIB_SIZE_PX
    doc = (f"tccc.zoo {name} seed={seed}: synthetic (untrained) weights; folded BatchNorm "
           f"statistics from {CALIB_IMAGES} synthetic {size}x{size} images")
    return emit.model(outputs, name.replace("-", "_"), doc, producer_version)
