"""Raw uint8 sample files (``.bin``, ``.raw``, ``.rgb``) as model inputs: exactly ``W*H*C``
pixels, pixel-interleaved (``HWC``, e.g. the CIFAR-10 files in
``../shared/data/cifar10-resnet8``) or planar (``CHW``), RGB order, never resized (W, H and C
must be the model input's). Read by calibration (``tccc compile --calib DIR --raw-size WxHxC``,
through :class:`tcc_compiler.datasets.images.LazyInputs`) and evaluation (``tccc eval``), so
both decode a sample alike; the pixel values then follow the :class:`Preprocess` as an
image's do: ``(pixel * scale - mean) / std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcc_compiler.errors import InputError

#: File suffixes read as raw arrays (any suffix with ``RawSpec.force``).
RAW_SUFFIXES = (".bin", ".raw", ".rgb")
#: Byte orders of a raw file: pixel-interleaved or planar.
RAW_LAYOUTS = ("HWC", "CHW")


@dataclass(frozen=True)
class RawSpec:
    """Layout of raw uint8 sample files.

    Attributes:
        width, height, channels: pixels per row, rows, channels (bytes = W*H*C).
        layout: "HWC" (pixel-interleaved) or "CHW" (planar).
        force: treat every sample as raw, whatever its suffix.

    Raises:
        InputError: a layout not in :data:`RAW_LAYOUTS`.
    """

    width: int
    height: int
    channels: int
    layout: str = "HWC"
    force: bool = False

    def __post_init__(self) -> None:
        if self.layout not in RAW_LAYOUTS:
            raise InputError(f"--raw-layout {self.layout}: choose from {', '.join(RAW_LAYOUTS)}")

    def takes(self, path: Path) -> bool:
        """Whether ``path`` is read as a raw array under this spec."""
        return self.force or is_raw_file(path)


def is_raw_file(path: Path) -> bool:
    """Whether ``path``'s suffix names a raw array file (:data:`RAW_SUFFIXES`)."""
    return path.suffix.lower() in RAW_SUFFIXES


def check_raw_size(path: Path, raw: RawSpec | None, pre) -> None:
    """Refuse raw file ``path`` when no ``raw`` size is given or it is not the input size of
    ``pre`` (a :class:`~tcc_compiler.datasets.images.Preprocess`), before reading it.

    Raises:
        InputError: naming ``path`` and what to give.
    """
    if raw is None:
        raise InputError(f"{path}: raw array file; give its size (--raw-size WxHxC)")
    if (raw.width, raw.height, raw.channels) != (pre.width, pre.height, pre.channels):
        raise InputError(f"{path}: raw size {raw.width}x{raw.height}x{raw.channels} differs "
                         f"from the model input {pre.width}x{pre.height}x{pre.channels}")


def load_raw(path: Path, pre, raw: RawSpec | None) -> np.ndarray:
    """Raw file ``path`` as float32 NCHW ``[1, C, H, W]``, normalised per ``pre``
    (:func:`tcc_compiler.datasets.images.normalise`).

    Raises:
        InputError: no ``raw`` size, a size other than the model input's, an unreadable file
            or one of the wrong byte count; the message names the file.
    """
    from tcc_compiler.datasets.images import normalise

    check_raw_size(path, raw, pre)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    n = raw.width * raw.height * raw.channels
    if len(data) != n:
        raise InputError(f"{path}: {len(data)} bytes, a {raw.width}x{raw.height}x"
                         f"{raw.channels} uint8 array has {n}")
    a = np.frombuffer(data, np.uint8)
    if raw.layout == "HWC":
        pix = a.reshape(raw.height, raw.width, raw.channels)
    else:
        pix = a.reshape(raw.channels, raw.height, raw.width).transpose(1, 2, 0)
    return normalise(np.ascontiguousarray(pix), pre)
