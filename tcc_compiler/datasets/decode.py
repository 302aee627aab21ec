"""One image file as a model input: decoded with Pillow, upright by its EXIF orientation,
brought to 8 bits, converted to RGB or greyscale, resized (squashed, or short side + center
crop) and normalised per a :class:`~tcc_compiler.datasets.preprocess.Preprocess`
(:func:`load_image`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tcc_compiler.datasets.preprocess import IMAGE_CHANNELS, RESIZE_MODES, Preprocess, normalise
from tcc_compiler.errors import InputError, first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp")


#: Pillow modes holding 16-bit samples (``I`` is 32-bit signed; 16-bit PNGs open as ``I;16``
#: or ``I``).
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit greyscale image (modes ``I;16*``, ``I``) as 8-bit ``L``: ``round(x / 257)``,
    which maps 0..65535 onto 0..255 exactly (65535 / 257 = 255). Pillow's own convert() clips
    such samples at 255 instead, turning the image white. Other modes are returned as they are
    (``F`` float images keep Pillow's conversion, which takes the values as 0..255).

    Raises:
        InputError: a mode ``I`` image with samples outside 0..65535 (not 16-bit data).
    """
    if img.mode not in _WIDE_MODES:
        return img
    a = np.asarray(img).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise InputError(f"{path}: 32-bit integer image with samples {a.min()}..{a.max()}; "
                         "only 8- and 16-bit images load (save it as 8- or 16-bit)")
    return Image.fromarray(((a * 2 + 257) // 514).astype(np.uint8), "L")


def resized_size(w: int, h: int, pre: Preprocess) -> tuple[int, int]:
    """(width, height) in pixels a ``w`` x ``h`` image is resized to before the center crop
    of :func:`resize_image` (``pre.width`` x ``pre.height`` when it squashes)."""
    if pre.resize_short is None:
        return pre.width, pre.height
    s = pre.resize_short
    nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    if nw < pre.width or nh < pre.height:   # the crop must fit: grow, keeping the aspect
        f = max(pre.width / w, pre.height / h)
        nw, nh = max(pre.width, math.ceil(w * f)), max(pre.height, math.ceil(h * f))
    return nw, nh


def _check_resized_size(path: Path, w: int, h: int, pre: Preprocess) -> None:
    """Refuse a resize larger than the largest image Pillow decodes (twice
    ``Image.MAX_IMAGE_PIXELS``, its decompression-bomb limit): ``--resize 100000`` made a
    133,333 x 100,000 RGB image of a 4:3 photo (40 GB) before the crop, and the process was
    killed for memory instead of refusing.

    Raises:
        InputError: naming the image, the sizes and the ``--resize`` value.
    """
    limit = Image.MAX_IMAGE_PIXELS
    nw, nh = resized_size(w, h, pre)
    if limit and nw * nh > 2 * limit:
        raise InputError(f"{path}: resizing its {w}x{h} pixels to short side "
                         f"{pre.resize_short} makes {nw}x{nh} pixels before the "
                         f"{pre.width}x{pre.height} crop, beyond the {2 * limit:,} an image may "
                         "hold; give a smaller --resize")


def resize_image(img: Image.Image, pre: Preprocess) -> Image.Image:
    """``img`` brought to ``pre.width`` x ``pre.height`` pixels with ``pre.resize``'s filter:
    squashed (``pre.resize_short`` None), or short side resized to ``resize_short`` (long side
    ``int(S * long / short)``, as torchvision's ``Resize``; both sides at least the crop) and
    center-cropped (offset ``round((size - crop) / 2)``, as torchvision's ``CenterCrop``)."""
    w, h = img.size
    if pre.resize_short is None:
        if (w, h) == (pre.width, pre.height):
            return img
        return img.resize((pre.width, pre.height), RESIZE_MODES[pre.resize])
    nw, nh = resized_size(w, h, pre)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), RESIZE_MODES[pre.resize])
    left = int(round((nw - pre.width) / 2.0))
    top = int(round((nh - pre.height) / 2.0))
    return img.crop((left, top, left + pre.width, top + pre.height))


def load_image(path: str | os.PathLike[str], pre: Preprocess) -> np.ndarray:
    """Decode one image file and preprocess it.

    The image is decoded with Pillow, turned upright by its EXIF orientation, brought to 8 bits
    (16-bit samples ``x`` become ``round(x / 257)``), converted to RGB (greyscale is replicated,
    alpha is dropped) or, for ``pre.channels`` 1, to greyscale ``L``, resized to
    ``pre.width`` x ``pre.height`` (squashed, or short side + center crop:
    :func:`resize_image`) and normalised as :class:`Preprocess` describes.

    Args:
        path: image file (any format Pillow reads).
        pre: preprocessing.

    Returns:
        float32 NCHW ``[1, pre.channels, pre.height, pre.width]``.

    Raises:
        InputError: the file is missing or cannot be decoded, holds 32-bit integer samples,
            or ``pre`` is for a channel count images do not load as (not 1 or 3).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    if pre.channels not in IMAGE_CHANNELS:
        raise InputError(f"{p}: the model input has {pre.channels} channels; images load as 1 "
                         "(greyscale) or 3 (colour) channels - give .npy arrays or raw files "
                         "(--raw-size) instead")
    try:
        with Image.open(p) as img:
            img = _to_8bit(ImageOps.exif_transpose(img), p)
            _check_resized_size(p, *img.size, pre)
            rgb = resize_image(img.convert("L" if pre.channels == 1 else "RGB"), pre)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
            SyntaxError) as exc:
        reason = first_line(exc, 10**6)
        raise InputError(f"{p}: cannot decode image: {reason}") from None
    return normalise(pixels, pre)
