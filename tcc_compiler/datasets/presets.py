"""Preprocessing the user configures: named presets and per-field settings, resolved against
the model's input size into a :class:`~tcc_compiler.datasets.preprocess.Preprocess`.

``tccc compile --preset/--mean/--std/--scale/--channel-order/--resize/--interpolation`` and the
API's ``preprocess=`` build a :class:`PreprocessSettings`; the driver resolves it once the model's
input size is known (:meth:`PreprocessSettings.resolve`), uses it on the calibration images and
records the result in the manifest, which ``tccc run`` and ``tccc eval`` read back.

Presets (the defaults of every field not given are :class:`Preprocess`'s own: ImageNet
mean/std on 0..1 pixels, RGB, bilinear squash):

* ``torchvision``: ``Resize(256)`` + ``CenterCrop(224)`` scaled to the input (short side
  ``round(S / 0.875)``; 256 for 224), bilinear, mean (0.485, 0.456, 0.406), std (0.229, 0.224,
  0.225) on pixel / 255 (torchvision's ImageNet reference scripts).
* ``tf-efficientnet``: short side ``S + 32`` (256 for 224), bicubic, center crop,
  ``(pixel - 127) / 128`` (mean 127, std 128, scale 1), as the TF EfficientNet(-Lite)
  evaluation pipeline and ``../shared/data/imagenet-lite0/README.md`` state.
* ``raw``: pixel values 0..255 as they are (scale 1, mean 0, std 1), squashed; models trained
  on raw pixels (e.g. the MLPerf Tiny ResNet-8).
* ``imagenet``: the historical default (ImageNet mean/std, bilinear squash, no crop).

``S`` is the smaller of the input's width and height.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

from tcc_compiler.datasets.preprocess import (CHANNEL_ORDERS, IMAGE_CHANNELS, RESIZE_MODES,
                                              Preprocess)
from tcc_compiler.errors import InputError

__all__ = ["PRESETS", "PreprocessSettings", "preprocess_at", "preset", "user_values"]


def _torchvision(s: int) -> dict:
    return {"resize_short": int(round(s / 0.875)), "resize": "bilinear"}


def _tf_efficientnet(s: int) -> dict:
    return {"resize_short": s + 32, "resize": "bicubic", "mean": (127.0, 127.0, 127.0),
            "std": (128.0, 128.0, 128.0), "scale": 1.0}


def _raw(s: int) -> dict:
    return {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0}


#: name -> (short side S of the input -> Preprocess fields). One place for every preset.
PRESETS: dict[str, Callable[[int], dict]] = {
    "imagenet": lambda s: {},
    "torchvision": _torchvision,
    "tf-efficientnet": _tf_efficientnet,
    "raw": _raw,
}


def preset(name: str, width: int, height: int, channels: int = 3) -> Preprocess:
    """The preset ``name`` at an input of ``width`` x ``height`` pixels and ``channels``.

    Raises:
        InputError: unknown preset name.
    """
    return PreprocessSettings(preset=name).resolve(width, height, channels)


@dataclass(frozen=True)
class PreprocessSettings:
    """Preprocessing chosen by the user before the input size is known.

    Attributes:
        preset: a :data:`PRESETS` name or None (the :class:`Preprocess` defaults).
        mean, std: 1 or ``channels`` values in units of ``pixel * scale`` (one value is used
            for every channel; :func:`user_values`), overriding the preset's.
        scale: multiplier from the 8-bit pixel to the unit of mean/std.
        channel_order: ``"RGB"`` or ``"BGR"`` (case-insensitive).
        resize_short: short side (pixels) before the center crop; 0 = squash (no crop);
            None = the preset's.
        interpolation: Pillow filter, one of :data:`RESIZE_MODES`.

    Raises:
        InputError: on construction, an unknown preset, channel order or filter.
    """

    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    channel_order: str | None = None
    resize_short: int | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise InputError(f"preprocess preset '{self.preset}': choose one of "
                             f"{', '.join(PRESETS)}")
        if self.channel_order is not None:
            order = str(self.channel_order).upper()
            if order not in CHANNEL_ORDERS:
                raise InputError(f"--channel-order {self.channel_order}: choose rgb or bgr")
            object.__setattr__(self, "channel_order", order)
        if self.interpolation is not None and self.interpolation not in RESIZE_MODES:
            raise InputError(f"--interpolation {self.interpolation}: choose one of "
                             f"{', '.join(RESIZE_MODES)}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))

    def is_default(self) -> bool:
        """True when nothing is set (the driver's default preprocessing applies)."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def resolve(self, width: int, height: int, channels: int = 3) -> Preprocess:
        """The :class:`Preprocess` for an input of ``width`` x ``height`` x ``channels``.

        A one-value ``mean``/``std`` is used for every channel (one value per channel for 1
        or 3 channels; kept as one value for other counts); three values on a 1-channel input
        average to one, as :class:`Preprocess` does.

        Raises:
            InputError: a mean/std of the wrong length or a value :class:`Preprocess` refuses.
        """
        kw = dict(PRESETS[self.preset or "imagenet"](min(width, height)))
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None:
                kw[name] = user_values(name, v, channels)
        if self.scale is not None:
            kw["scale"] = self.scale
        if self.channel_order is not None:
            kw["channel_order"] = self.channel_order
        if self.interpolation is not None:
            kw["resize"] = self.interpolation
        if self.resize_short is not None:
            kw["resize_short"] = self.resize_short or None
        return Preprocess(width=width, height=height, channels=channels, **kw)


def user_values(name: str, values, channels: int) -> tuple[float, ...]:
    """A user's ``--mean``/``--std`` (``name``) for an input of ``channels`` channels: 1 value
    (for every channel: repeated for 1 or 3 channels, kept as one for other counts) or one per
    channel; 3 values also on a 1-channel input (averaged by :class:`Preprocess`).

    Raises:
        InputError: another count, naming the flag and the counts it takes.
    """
    values = tuple(float(v) for v in values)
    n = len(values)
    if n == 1 and channels in IMAGE_CHANNELS:
        return values * channels
    if n not in (1, channels) and not (channels == 1 and n == 3):
        raise InputError(f"--{name}: give 1 or {channels} values, got {n}")
    return values


def preprocess_at(setting, width: int, height: int, channels: int) -> Preprocess:
    """The preprocessing a compile records for a model input of ``width`` x ``height`` x
    ``channels``: ``setting`` (``CompileOptions.preprocess``) a :class:`Preprocess` as it is,
    :class:`PreprocessSettings` resolved, or None for the :class:`Preprocess` defaults.

    Raises:
        InputError: a :class:`Preprocess` for another input size or channel count, settings
            it refuses, or a ``setting`` of another type.
    """
    if setting is None:
        return Preprocess(width=width, height=height, channels=channels)
    if isinstance(setting, PreprocessSettings):
        return setting.resolve(width, height, channels)
    if not isinstance(setting, Preprocess):
        raise InputError(f"preprocess: expected a Preprocess or PreprocessSettings, got "
                         f"{type(setting).__name__}")
    got = (setting.width, setting.height, setting.channels)
    if got != (width, height, channels):
        raise InputError(f"preprocess: for a {'x'.join(map(str, got))} (WxHxC) input, but the "
                         f"model input is {width}x{height}x{channels}")
    return setting
