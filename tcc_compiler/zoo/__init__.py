"""Model zoo: deterministic synthetic-weight models in the shapes real exporters write.

The zoo needs no network access and no torch: every model is built with ``onnx.helper`` and NumPy
from a seed, so tests and examples have realistic ONNX files to compile::

    from tcc_compiler import zoo
    model = zoo.build("resnet50")                 # onnx.ModelProto
    zoo.save("resnet50-v2", "r50v2.onnx")         # written atomically

Families: the ResNets (:mod:`tcc_compiler.zoo.resnet`), YOLOv8n and YOLO11n
(:mod:`~tcc_compiler.zoo.yolo`), YOLOv5n (:mod:`~tcc_compiler.zoo.yolov5`), MobileNetV2/V3-Large
(:mod:`~tcc_compiler.zoo.mobilenet`), EfficientNet-Lite0/V2-S
(:mod:`~tcc_compiler.zoo.efficientnet`), SSDLite-MobileNetV2 (:mod:`~tcc_compiler.zoo.ssdlite`)
FlowNetS (:mod:`~tcc_compiler.zoo.flownet`), RegNetX-400MF (:mod:`~tcc_compiler.zoo.regnet`),
MobileOne-S1 (:mod:`~tcc_compiler.zoo.mobileone`), ConvMixer-768/32
(:mod:`~tcc_compiler.zoo.convmixer`) and LeNet-5 (:mod:`~tcc_compiler.zoo.lenet`); each module
documents its exporter layout, inputs, outputs and parameter count. Every input is float32 NCHW
``[1, channels, height, width]``; classifiers return ``logits`` ``[1, 1000]`` (LeNet-5:
``[1, 10]``). The weights are not trained (seeded, with
BatchNorm statistics measured on synthetic images so activations stay O(1): a data-dependent
initialisation as LSUV's; the detector and mobile families are also kept out of the chaotic
regime of random networks, in which INT8 rounding noise grows with depth, so they quantize as
trained networks do: see "Conditioning" in :mod:`tcc_compiler.zoo._graph`). The same name,
seed and size always give byte-identical files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from tcc_compiler.errors import InputError
from tcc_compiler.fsutil import atomic_write_bytes
from tcc_compiler.version import __version__
from tcc_compiler.zoo._graph import weight_count
from tcc_compiler.zoo._registry import SPECS, build_recorded
from tcc_compiler.zoo.resnet import build_resnet

logger = logging.getLogger(__name__)

RESNET_NAMES = ("resnet18", "resnet50", "resnet50-bn", "resnet50-v2")
NAMES = RESNET_NAMES + tuple(SPECS)
MIN_SIZE_PX = 32  # five stride-2 stages need at least 32 px to keep a 1x1 map
MAX_SIZE_PX = 4096
MAX_CHANNELS = 64

__all__ = ["NAMES", "RESNET_NAMES", "build", "default_input", "save", "weight_count"]


def default_input(name: str) -> tuple[int, int, int]:
    """The default input of model ``name`` as (width, height, channels): the resolution of its
    row in the chip vendor's model zoo (``shared/data/vendor-zoo``): 224x224x3 for the
    classifiers, 640x320x3 for RegNetX-400MF and MobileOne-S1 (their first row), 32x32x1 for
    LeNet-5, 640x640x3 for the YOLOs (YOLO11n: as the vendor's YOLOv11-Seg rows), 300x300x3
    for SSDLite; MobileNetV3 and FlowNetS have no row: 224x224x3 and 512x384x6 (FlyingChairs'
    frame size, two RGB frames).

    Raises:
        InputError: unknown ``name``.
    """
    _check_name(name)
    return SPECS[name].default_whc if name in SPECS else (224, 224, 3)


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise InputError(f"zoo: unknown model {name!r}; choose one of {', '.join(NAMES)}")


def _check_size(name: str, width: int, height: int) -> None:
    spec = SPECS.get(name)
    if spec and spec.fixed_size and (width, height) != (spec.fixed_size,) * 2:
        raise InputError(f"zoo: {name} takes only {spec.fixed_size}x{spec.fixed_size} inputs "
                         f"(its first fully connected layer fixes the size), got "
                         f"{width}x{height}")
    low = spec.min_size if spec else MIN_SIZE_PX
    _check_int(width, "width", low, MAX_SIZE_PX)
    _check_int(height, "height", low, MAX_SIZE_PX)
    if spec and (width % spec.multiple or height % spec.multiple):
        raise InputError(f"zoo: {name} needs a width and height that are multiples of "
                         f"{spec.multiple} (its stride), got {width}x{height}")


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"zoo: {what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def build(name: str, width: int | None = None, height: int | None = None,
          channels: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """Build a zoo model.

    Args:
        name: one of :data:`NAMES`:
            ``resnet18`` / ``resnet50`` (torchvision v1.5, BatchNorm folded into Conv bias, opset
            17), ``resnet50-bn`` (same weights as ``resnet50`` with explicit BatchNormalization,
            so it computes the same function), ``resnet50-v2`` (ONNX model zoo pre-activation
            ResNet-50 v2 layout, opset 7, IR version 3, initializers also listed as inputs);
            ``yolov8n``, ``yolov5n``, ``yolo11n``, ``mobilenet-v2``, ``mobilenet-v3-large``,
            ``efficientnet-lite0``, ``efficientnet-v2-s``, ``ssdlite-mobilenet-v2``,
            ``flownets``, ``regnetx-400mf``, ``mobileone-s1``, ``convmixer-768-32``,
            ``lenet5`` (torch.onnx opset 17 layouts, see their modules).
        width, height: input size in pixels, each in [32, 4096] (SSDLite and FlowNetS: from
            64); YOLOs need multiples of 32, FlowNetS of 64; LeNet-5 takes only 32x32. None:
            :func:`default_input`.
        channels: input channels, in [1, 64]; None: :func:`default_input`.
        seed: non-negative seed of ``np.random.default_rng`` for all weights.

    Returns:
        An ``onnx.ModelProto`` that passed ``onnx.checker.check_model(full_check=True)``. Input
        float32 NCHW ``[1, channels, height, width]`` (``input``; YOLOs: ``images``); outputs
        as documented by each family (ResNets: ``logits`` float32 ``[1, 1000]``). Building
        ``resnet50`` takes 1-3 s and ~0.7 GB peak memory, the others 2-10 s.

    Raises:
        InputError: unknown ``name`` or an out-of-range size, channel count or seed.
    """
    _check_name(name)
    dw, dh, dc = default_input(name)
    width, height = dw if width is None else width, dh if height is None else height
    channels = dc if channels is None else channels
    _check_size(name, width, height)
    _check_int(channels, "channels", 1, MAX_CHANNELS)
    _check_int(seed, "seed", 0, 2**63 - 1)
    start = time.perf_counter()
    if name in SPECS:
        model = build_recorded(name, width, height, channels, seed, __version__)
    else:
        model = build_resnet(name, width, height, channels, seed, __version__)
    onnx.checker.check_model(model, full_check=True)
    logger.info("zoo: built %s (%dx%dx%d, seed %d) in %.2f s", name, channels, height, width,
                seed, time.perf_counter() - start)
    return model


def save(name: str, path: str | os.PathLike[str], width: int | None = None,
         height: int | None = None, seed: int = 0, channels: int | None = None) -> Path:
    """Build a zoo model and write it to ``path`` atomically (temp file + ``os.replace``).

    Args:
        name, width, height, seed, channels: as for :func:`build`.
        path: destination ``.onnx`` file; its folder must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: bad arguments (see :func:`build`) or the file cannot be written.
    """
    dest = Path(path)
    if not dest.parent.is_dir():  # fail before spending a second on the build
        raise InputError(f"{dest}: cannot write zoo model: folder {dest.parent} does not exist")
    model = build(name, width, height, channels, seed)
    data = model.SerializeToString()
    try:
        atomic_write_bytes(dest, data)
    except OSError as exc:
        raise InputError(f"{dest}: cannot write zoo model: {exc.strerror}") from exc
    logger.info("zoo: wrote %s (%d bytes)", dest, len(data))
    return dest
