"""Raw uint8 sample files (``.bin``, ``.raw``, ``.rgb``) as model inputs: exactly ``W*H*C``
pixels, pixel-interleaved (``HWC``, e.g. the CIFAR-10 files in
``../shared/data/cifar10-resnet8``) or planar (``CHW``), RGB order, never resized (W, H and C
must be the model input's). Read by calibration (``tccc compile --calib DIR --raw-size WxHxC``,
through :class:`tcc_compiler.datasets.images.LazyInputs`), ``tccc run`` and evaluation
(``tccc eval``), so all three decode a sample alike and parse ``--raw-size`` /
``--raw-layout`` in one place (:meth:`RawSpec.parse`); the pixel values then follow the
:class:`Preprocess` as an image's do: ``(pixel * scale - mean) / std``.
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

    @classmethod
    def parse(cls, size, layout: str = "HWC", force: bool = False,
              flag: str = "--raw-size", layout_flag: str = "--raw-layout") -> RawSpec | None:
        """The spec of ``--raw-size`` ``size`` (``"WxHxC"`` or a ``(W, H, C)`` tuple) and
        ``--raw-layout`` ``layout``; None when ``size`` is None (no raw files expected).

        Raises:
            InputError: ``size`` not ``WxHxC`` within :func:`parse_whc`'s limits (the message
                names ``flag``), a layout not in :data:`RAW_LAYOUTS`, or ``force`` or a layout
                other than HWC without a size (they would read nothing; the message names
                ``layout_flag``).
        """
        if size is None:
            if force:
                raise InputError(f"--raw needs {flag} WxHxC")
            if layout != RAW_LAYOUTS[0]:
                raise InputError(f"{layout_flag} {layout} applies to raw files of a given "
                                 f"size only; add {flag} WxHxC")
            return None
        w, h, c = parse_whc(size, flag, "32x32x3")
        return cls(w, h, c, layout, force)

    def takes(self, path: Path) -> bool:
        """Whether ``path`` is read as a raw array under this spec."""
        return self.force or is_raw_file(path)


#: Largest width / height and channel count a WxHxC size may give.
MAX_SIDE, MAX_CHANNELS = 8192, 64


def parse_whc(text, flag: str, example: str) -> tuple[int, int, int]:
    """``"WxHxC"`` (width x height x channels; ``*`` also separates) as (W, H, C), the one
    parser of ``--input`` and ``--raw-size``. A tuple or list is checked as if written
    ``"WxHxC"``.

    Args:
        flag: the option's name for the message (e.g. ``"input_whc/--input"``).
        example: a valid size shown in the message (e.g. ``"224x224x3"``).

    Raises:
        InputError: not three integers separated by 'x', or width/height outside
            1..:data:`MAX_SIDE`, channels outside 1..:data:`MAX_CHANNELS`.
    """
    if isinstance(text, (tuple, list)):
        text = "x".join(str(v) for v in text)
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        w, h, c = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"{flag} '{text}': expected WxHxC, e.g. {example} "
                         "(width x height x channels)") from None
    if min(w, h, c) <= 0 or max(w, h) > MAX_SIDE or c > MAX_CHANNELS:
        raise InputError(f"{flag} '{text}': width and height must be 1..{MAX_SIDE} "
                         f"and channels 1..{MAX_CHANNELS}")
    return w, h, c


def is_raw_file(path: Path) -> bool:
    """Whether ``path``'s suffix names a raw array file (:data:`RAW_SUFFIXES`)."""
    return path.suffix.lower() in RAW_SUFFIXES


def check_raw_size(path: Path, raw: RawSpec | None, whc: tuple[int, int, int]) -> None:
    """Refuse raw file ``path`` when no ``raw`` size is given or it is not the model input's
    ``whc`` (width, height, channels), before reading it.

    Raises:
        InputError: naming ``path`` and what to give.
    """
    if raw is None:
        raise InputError(f"{path}: raw array file; give its size (--raw-size WxHxC)")
    if (raw.width, raw.height, raw.channels) != tuple(whc):
        w, h, c = whc
        raise InputError(f"{path}: raw size {raw.width}x{raw.height}x{raw.channels} differs "
                         f"from the model input {w}x{h}x{c}")


def load_raw(path: Path, pre, raw: RawSpec | None, channels: int | None = None) -> np.ndarray:
    """Raw file ``path`` as float32 NCHW ``[1, C, H, W]``, normalised per ``pre``
    (:func:`raw_values`).

    Args:
        pre: the :class:`~tcc_compiler.datasets.preprocess.Preprocess` (its width and height are
            the model input's).
        channels: the model input's C, checked against the raw size (default
            ``pre.channels``).

    Raises:
        InputError: no ``raw`` size, a size other than the model input's, an unreadable file
            or one of the wrong byte count, values :func:`raw_values` refuses; the message
            names the file.
    """
    check_raw_size(path, raw, (pre.width, pre.height,
                               pre.channels if channels is None else channels))
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
    return raw_values(np.ascontiguousarray(pix), pre, path)


def raw_values(pixels: np.ndarray, pre, path: Path) -> np.ndarray:
    """HWC uint8 ``pixels`` as float32 NCHW ``[1, C, H, W]``: ``(pixel * scale - mean) /
    std``, exactly as an image's (:func:`tcc_compiler.datasets.preprocess.normalise`: mean/std
    per channel, or one value for every channel, channel order); C must be ``pre.channels``
    (the model input's: a compiled package records its own channel count).

    Raises:
        InputError: C other than ``pre.channels`` (naming ``path``).
    """
    from tcc_compiler.datasets.preprocess import normalise

    c = pixels.shape[2]
    if c != pre.channels:
        raise InputError(f"{path}: {c}-channel raw file, but the preprocessing is for "
                         f"{pre.channels} channel(s)")
    return normalise(pixels, pre)
