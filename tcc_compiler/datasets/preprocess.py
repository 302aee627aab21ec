"""The preprocessing record: how 8-bit pixels become network input values
(``(pixel * scale - mean) / std``, channel order, resize filter and crop), as the compiled
package's manifest carries it (:class:`Preprocess`, ``to_dict`` / ``from_dict``), and the
normalisation every loader shares (:func:`normalise`: images, :mod:`tcc_compiler.datasets.decode`;
raw files, :mod:`tcc_compiler.datasets.raw`). Presets and user settings resolve into it in
:mod:`tcc_compiler.datasets.presets`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from tcc_compiler.errors import FormatError, InputError

CHANNEL_ORDERS = ("RGB", "BGR")
#: Channel counts images can be loaded for: 1 (greyscale ``L``) or 3 (``RGB``).
IMAGE_CHANNELS = (1, 3)
RESIZE_MODES = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                "bicubic": Image.Resampling.BICUBIC}


def _per_channel(name: str, value, channels: int) -> tuple[float, ...]:
    """``value`` as finite floats for ``channels`` channels: ``channels`` values, or, for a
    count other than 1 or 3, one value standing for every channel; three values on an input of
    other than 3 channels average to one (so the ImageNet defaults and the 3-value presets fit
    any channel count).

    Raises:
        InputError: not numbers, or the wrong count.
    """
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an int such as 10**400
        raise InputError(f"preprocess: {name} must be {_counts(channels, 'number')}, got "
                         f"{value!r}") from None
    if channels != 3 and len(numbers) == 3:
        numbers = (sum(numbers) / 3.0,)
    if len(numbers) not in value_counts(channels) \
            or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"preprocess: {name} must be {_counts(channels, 'finite number')}, got "
                         f"{value!r}")
    return numbers


def value_counts(channels: int) -> tuple[int, ...]:
    """How many mean (or std) values a record of ``channels`` channels holds: ``channels``
    (one per channel), or also 1 (one for every channel) when images cannot load for that
    count (not 1 or 3): so a 512-channel segment input's record stays two numbers."""
    return (channels,) if channels in IMAGE_CHANNELS else (1, channels)


def _counts(channels: int, noun: str) -> str:
    """:func:`value_counts` in words with ``noun`` (``"1 number"``, ``"1 or 4 numbers"``)."""
    counts = value_counts(channels)
    return " or ".join(str(n) for n in dict.fromkeys(counts)) + f" {noun}" + \
        ("" if counts == (1,) else "s")


def _finite(v: int | float) -> bool:
    """``math.isfinite(v)``, False for an int no float holds (10**400: JSON allows it)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_short_side(r) -> None:
    """Raise InputError unless ``r`` (``Preprocess.resize_short``) is None or an int >= 1."""
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise InputError(f"preprocess: resize_short must be a positive integer or None, "
                         f"got {r!r}")


@dataclass(frozen=True)
class Preprocess:
    """How pixels become network input values.

    ``value[c] = (pixel[c] * scale - mean[c]) / std[c]`` where ``pixel`` is the 8-bit sample
    (0..255) of channel ``c`` after converting to RGB (``channels`` 3) or greyscale ``L``
    (``channels`` 1, ITU-R 601 luma), reordering to ``channel_order`` and resizing to
    ``width`` x ``height``: squashed to exactly that size (``resize_short`` None), or, as
    torchvision's ``Resize(S)`` + ``CenterCrop`` and the TF EfficientNet pipeline do, resized
    keeping the aspect ratio so that the short side is ``resize_short`` pixels (the long side
    ``int(S * long / short)``, torchvision's rule; enlarged further if the crop would not
    fit) and then center-cropped (top-left corner ``round((size - crop) / 2)``).
    ``mean`` and ``std`` are indexed in the tensor's channel order (so for ``"BGR"`` give
    them as (B, G, R)).

    Attributes:
        width, height: network input size (pixels), each >= 1.
        mean, std: per-channel values in units of ``pixel * scale``, std > 0; ``channels``
            values each, or, for a ``channels`` other than 1 and 3, one value for every channel.
            With ``channels`` other than 3, three values are averaged to one (so the ImageNet
            defaults become 0.449 / 0.226, the usual greyscale ImageNet statistics, for every
            channel).
        scale: multiplier from 8-bit pixel to the unit of mean/std (default 1/255).
        channel_order: ``"RGB"`` or ``"BGR"``: order of the three channels in the tensor
            (ignored when ``channels`` is 1).
        resize: Pillow filter name: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.
        channels: the model input's C, >= 1 (default 3). Images load for 3 (colour) and 1
            (greyscale) only; other counts take ``.npy`` arrays (which the record does not
            touch) or raw uint8 files (normalised by it). Recorded in the manifest only when it
            is not 3, so older manifests (without it) read as 3.
        resize_short: short side (pixels) to resize to before the center crop, >= 1; None
            (default) squashes the whole image to ``width`` x ``height``. Recorded in the
            manifest only when set.

    Raises:
        InputError: on construction with an out-of-range or wrongly typed field.
    """

    width: int
    height: int
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"
    resize: str = "bilinear"
    channels: int = 3
    resize_short: int | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"preprocess: {name} must be a positive integer, got {value!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) \
                or self.channels < 1:
            raise InputError(f"preprocess: channels must be a positive integer, got "
                             f"{self.channels!r}")
        for name in ("mean", "std"):
            object.__setattr__(self, name, _per_channel(name, getattr(self, name),
                                                        self.channels))
        if any(v <= 0.0 for v in self.std):
            raise InputError(f"preprocess: std must be > 0, got {self.std}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not _finite(self.scale) or self.scale <= 0:
            raise InputError(f"preprocess: scale must be a positive number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"preprocess: channel_order must be one of {CHANNEL_ORDERS}, "
                             f"got {self.channel_order!r}")
        if not isinstance(self.resize, str) or self.resize not in RESIZE_MODES:
            raise InputError(f"preprocess: resize must be one of {tuple(RESIZE_MODES)}, "
                             f"got {self.resize!r}")
        _check_short_side(self.resize_short)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """NCHW shape of one loaded image: ``(1, channels, height, width)``."""
        return (1, self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists) for the manifest; ``channels`` only when not 3
        (manifests written before it existed stay byte-identical)."""
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        if self.channels == 3:
            del out["channels"]
        if self.resize_short is None:
            del out["resize_short"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`.

        Stricter than the constructor: ``mean`` and ``std`` must hold exactly
        :func:`value_counts` values (nothing is averaged on reading).

        Raises:
            FormatError: ``data`` is not a dict, lacks width/height, has unknown keys or a
                field has a bad value.
        """
        if not isinstance(data, dict):
            raise FormatError(f"manifest preprocess: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FormatError(f"manifest preprocess: unknown field(s) {', '.join(unknown)}")
        missing = [k for k in ("width", "height") if k not in data]
        if missing:
            raise FormatError(f"manifest preprocess: missing field(s) {', '.join(missing)}")
        try:
            pre = cls(**data)
        except InputError as exc:
            raise FormatError(f"manifest {exc}") from None
        for name in ("mean", "std"):
            given = data.get(name)
            if given is not None and (not isinstance(given, (list, tuple))
                                      or len(given) != len(getattr(pre, name))):
                raise FormatError(f"manifest preprocess: {name} must be a list of "
                                  f"{_counts(pre.channels, 'number')} for {pre.channels} "
                                  f"channel(s), got {given!r:.80}")
        return pre


def normalise(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 pixels (HWC, ``pre.channels`` channels, RGB for 3; or HW greyscale) -> float32
    NCHW ``[1, C, H, W]`` per ``pre`` (a one-value mean/std applies to every channel)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pre.channel_order == "BGR" and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    values = (pixels.astype(np.float32) * np.float32(pre.scale) - mean) / std
    return np.ascontiguousarray(values.transpose(2, 0, 1)[None], dtype=np.float32)
