"""Model zoo: deterministic synthetic-weight ResNets in the shapes real exporters write.

The zoo needs no network access and no torch: every model is built with ``onnx.helper`` and NumPy
from a seed, so tests and examples have realistic ONNX files to compile::

    from tcc_compiler import zoo
    model = zoo.build("resnet50")                 # onnx.ModelProto
    zoo.save("resnet50-v2", "r50v2.onnx")         # written atomically

Every model takes ``input`` float32 NCHW ``[1, channels, height, width]`` (ImageNet-normalised
pixels, see :mod:`tcc_compiler.datasets.images`) and returns ``logits`` float32 ``[1, 1000]``.
The weights are not trained; see :mod:`tcc_compiler.zoo.resnet` for how they are made.
The same name, seed and size always give byte-identical files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import onnx

from tcc_compiler.version import __version__
from tcc_compiler.errors import InputError
from tcc_compiler.fsutil import atomic_write_bytes
from tcc_compiler.zoo.resnet import build_resnet

logger = logging.getLogger(__name__)

NAMES = ("resnet18", "resnet50", "resnet50-bn", "resnet50-v2")
MIN_SIZE_PX = 32  # five stride-2 stages need at least 32 px to keep a 1x1 map
MAX_SIZE_PX = 4096
MAX_CHANNELS = 64

__all__ = ["NAMES", "build", "save"]


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"zoo: {what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def build(name: str, width: int = 224, height: int = 224, channels: int = 3,
          seed: int = 0) -> onnx.ModelProto:
    """Build a zoo model.

    Args:
        name: one of :data:`NAMES`:
            ``resnet18`` / ``resnet50`` (torchvision v1.5, BatchNorm folded into Conv bias, opset
            17), ``resnet50-bn`` (same weights as ``resnet50`` with explicit BatchNormalization,
            so it computes the same function), ``resnet50-v2`` (ONNX model zoo pre-activation
            ResNet-50 v2 layout, opset 7, IR version 3, initializers also listed as inputs).
        width, height: input size in pixels, each in [32, 4096].
        channels: input channels, in [1, 64].
        seed: non-negative seed of ``np.random.default_rng`` for all weights.

    Returns:
        An ``onnx.ModelProto`` that passed ``onnx.checker.check_model(full_check=True)``. Input
        ``input``: float32 NCHW ``[1, channels, height, width]``; output ``logits``: float32
        ``[1, 1000]``. Building ``resnet50`` takes 1-3 s and ~0.7 GB peak memory.

    Raises:
        InputError: unknown ``name`` or an out-of-range size, channel count or seed.
    """
    if name not in NAMES:
        raise InputError(f"zoo: unknown model {name!r}; choose one of {', '.join(NAMES)}")
    _check_int(width, "width", MIN_SIZE_PX, MAX_SIZE_PX)
    _check_int(height, "height", MIN_SIZE_PX, MAX_SIZE_PX)
    _check_int(channels, "channels", 1, MAX_CHANNELS)
    _check_int(seed, "seed", 0, 2**63 - 1)
    start = time.perf_counter()
    model = build_resnet(name, width, height, channels, seed, __version__)
    onnx.checker.check_model(model, full_check=True)
    logger.info("zoo: built %s (%dx%dx%d, seed %d) in %.2f s", name, channels, height, width,
                seed, time.perf_counter() - start)
    return model


def save(name: str, path: str | os.PathLike[str], width: int = 224, height: int = 224,
         seed: int = 0, channels: int = 3) -> Path:
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
