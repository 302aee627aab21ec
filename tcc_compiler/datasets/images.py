"""Turn image files, folders and ``.npy`` arrays into model inputs (float32 NCHW).

The preprocessing is described by a :class:`Preprocess` record that travels in the compiled
package's manifest (``to_dict`` / ``from_dict``), so calibration, evaluation and the on-device
pipeline all normalise pixels the same way::

    pre = Preprocess(width=224, height=224)
    x = load_image("cat.jpg", pre)                         # [1, 3, 224, 224] float32
    xs = load_inputs(["photos/", "batch.npy"], pre, (1, 3, 224, 224))

The shipped sample photos are found with :func:`bundled_photos`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tcc_compiler.errors import FormatError, InputError, InternalError, first_line
from tcc_compiler.datasets.npy import NPY_LAYOUTS, load_npy
from tcc_compiler.datasets.raw import RAW_SUFFIXES, RawSpec, check_raw_size, is_raw_file, load_raw

logger = logging.getLogger(__name__)

CHANNEL_ORDERS = ("RGB", "BGR")
#: Channel counts images can be loaded for: 1 (greyscale ``L``) or 3 (``RGB``).
IMAGE_CHANNELS = (1, 3)
RESIZE_MODES = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
                "bicubic": Image.Resampling.BICUBIC}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp")
PHOTO_KINDS = ("calib", "eval")
_PHOTO_ROOT = Path(__file__).resolve().parent.parent / "data" / "photos"


def _per_channel(name: str, value, channels: int) -> tuple[float, ...]:
    """``value`` as ``channels`` finite floats (a 3-value mean/std averages to 1 channel).

    Raises:
        InputError: not numbers, or the wrong count.
    """
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: an int such as 10**400
        raise InputError(f"preprocess: {name} must be {channels} numbers, got {value!r}") \
            from None
    if channels == 1 and len(numbers) == 3:
        numbers = (sum(numbers) / 3.0,)
    if len(numbers) != channels or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"preprocess: {name} must be {channels} finite numbers, got {value!r}")
    return numbers


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
            values each. With ``channels`` 1, three values are averaged to one (so the ImageNet
            defaults become 0.449 / 0.226, the usual greyscale ImageNet statistics).
        scale: multiplier from 8-bit pixel to the unit of mean/std (default 1/255).
        channel_order: ``"RGB"`` or ``"BGR"``: order of the three channels in the tensor
            (ignored when ``channels`` is 1).
        resize: Pillow filter name: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.
        channels: 3 (colour, default) or 1 (greyscale): the model input's C. Recorded in the
            manifest only when it is not 3, so older manifests (without it) read as 3.
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
        if isinstance(self.channels, bool) or self.channels not in IMAGE_CHANNELS:
            raise InputError(f"preprocess: channels must be 1 (greyscale) or 3 (colour), got "
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
            return cls(**data)
        except InputError as exc:
            raise FormatError(f"manifest {exc}") from None


def normalise(pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 pixels (HWC RGB, or HW / HW1 greyscale) -> float32 NCHW ``[1, C, H, W]`` per
    ``pre``."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pre.channel_order == "BGR" and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    values = (pixels.astype(np.float32) * np.float32(pre.scale) - mean) / std
    return np.ascontiguousarray(values.transpose(2, 0, 1)[None], dtype=np.float32)


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
        InputError: the file is missing or cannot be decoded, or holds 32-bit integer samples.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
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


def folder_entries(folder: Path, raw: RawSpec | None = None) -> list[Path]:
    """Image and .npy files directly inside ``folder`` (and, with a ``raw`` size, raw array
    files: :mod:`tcc_compiler.datasets.raw`), sorted by name; hidden files skipped.

    Raises:
        InputError: the folder holds none of them (naming its sub-folders, which are not
            searched).
    """
    suffixes = IMAGE_SUFFIXES + (".npy",) + (RAW_SUFFIXES if raw is not None else ())
    entries = []
    for child in sorted(folder.iterdir(), key=lambda c: c.name):
        if child.name.startswith(".") or not child.is_file():
            continue
        if child.suffix.lower() in suffixes or (raw is not None and raw.takes(child)):
            entries.append(child)
        else:
            logger.debug("%s: skipped (not an image or .npy file)", child)
    if not entries:
        raise InputError(f"{folder}: folder holds no image or .npy files "
                         f"({', '.join(suffixes)}){_empty_folder_hint(folder, raw)}")
    return entries


def _empty_folder_hint(folder: Path, raw: RawSpec | None) -> str:
    """What a folder :func:`folder_entries` found nothing in holds instead: sub-folders
    (not searched) and, without a raw size, raw array files ("" when neither)."""
    subs = sorted(c.name for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
    hint = (f"; sub-folders ({', '.join(subs[:3])}{', ...' if len(subs) > 3 else ''}) are not "
            "searched: name them directly") if subs else ""
    raws = sorted(c.name for c in folder.iterdir() if is_raw_file(c)) if raw is None else []
    return hint + (f"; {len(raws)} raw array file(s) ({raws[0]}, ...) need their size "
                   "(--raw-size WxHxC)" if raws else "")


def load_inputs(paths: Sequence[str | os.PathLike[str]], pre: Preprocess,
                expected_shape: tuple[int, ...], layout: str = "NCHW",
                raw: RawSpec | None = None) -> list[np.ndarray]:
    """Load model inputs from image files, folders, ``.npy`` arrays and raw uint8 arrays.

    Each path is one of: an image file (preprocessed with ``pre``); a ``.npy`` file holding a
    float32 array ``[N, C, H, W]`` exactly as the model takes it (``[N, H, W, C]`` for a model
    whose ONNX input is NHWC, ``layout``), split into N inputs; or a folder, whose image and
    ``.npy`` files (not subfolders, not hidden files) are loaded in name order. Paths are
    taken in the order given, so the result is deterministic.

    Args:
        paths: files and folders.
        pre: preprocessing for image files.
        expected_shape: the model's NCHW input shape, e.g. ``(1, 3, 224, 224)``; every returned
            array has shape ``(1,) + expected_shape[1:]``.
        layout: the ONNX model's input layout, ``"NCHW"`` or ``"NHWC"`` (manifest
            ``input.onnx_layout``): an NHWC model's ``.npy`` files may be NHWC (transposed
            here) or NCHW.
        raw: the size and layout of raw uint8 files (``.bin``/``.raw``/``.rgb``, or every
            file with ``raw.force``; :mod:`tcc_compiler.datasets.raw`), normalised with
            ``pre`` as images are, never resized; None = such files are refused.

    Returns:
        float32 NCHW arrays ``[1, C, H, W]``, one per input (all in memory at once: see
        :class:`LazyInputs` for one at a time).

    Raises:
        InputError: no paths, a missing path, an empty folder, an undecodable image, an image
            whose preprocessed shape differs from ``expected_shape``, or a ``.npy`` array with
            the wrong dtype/shape or NaN/Inf values, a raw file without ``raw`` or of
            another size. The message names the file.
    """
    return list(LazyInputs(paths, pre, expected_shape, layout, raw))


class LazyInputs(Sequence):
    """The inputs of :func:`load_inputs` as a sequence that decodes an image when it is read.

    Everything that can be checked without decoding (paths, folders, channels, the
    preprocessed shape, ``.npy`` headers and values) is checked on construction; image files
    are decoded and preprocessed on each access, so a loop over the inputs holds one float
    image at a time (a 4096x4096x3 input is 201 MB of float32; the 8 bundled calibration
    photos used to be held together). ``.npy`` inputs are kept as loaded.

    Raises:
        InputError: as :func:`load_inputs` (an undecodable image only when it is read).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], pre: Preprocess,
                 expected_shape: tuple[int, ...], layout: str = "NCHW",
                 raw: RawSpec | None = None) -> None:
        if layout not in NPY_LAYOUTS:
            raise InternalError(f"input layout {layout!r}: expected one of {NPY_LAYOUTS}")
        expected = tuple(int(d) for d in expected_shape)
        if len(expected) != 4:
            raise InputError(f"model input shape {expected} is not NCHW; only 4-D image "
                             "inputs load")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise InputError("no input files given")
        self.pre, self.raw = pre, raw
        self.items: list[np.ndarray | Path] = []
        self._names: list[str] = []      # where each input comes from (:meth:`label`)
        image_shape = (1,) + expected[1:]
        self._channels = expected[1]   # a raw file's (any count; images load 1 or 3)
        for f in _input_files(paths, raw):
            is_raw = raw.takes(f) if raw is not None else is_raw_file(f)
            if is_raw:
                check_raw_size(f, raw, (expected[3], expected[2], expected[1]))
                self.items.append(f)
                self._names.append(str(f))
                continue
            if f.suffix.lower() == ".npy":
                arrays = load_npy(f, expected, layout)
                self.items.extend(arrays)
                self._names.extend(f"{f}[{j}]" if len(arrays) > 1 else str(f)
                                   for j in range(len(arrays)))
                continue
            if expected[1] not in IMAGE_CHANNELS:
                raise InputError(f"{f}: the model input has {expected[1]} channels; images load "
                                 "as 1 (greyscale) or 3 (colour) channels - give .npy arrays "
                                 "instead")
            if pre.shape != image_shape:
                raise InputError(f"{f}: preprocessing gives {list(pre.shape)} but the model "
                                 f"input is {list(image_shape)}; set width/height/channels to "
                                 "match")
            self.items.append(f)
            self._names.append(str(f))
        logger.debug("%d input(s) from %d path(s)", len(self.items), len(paths))

    def __len__(self) -> int:
        return len(self.items)

    def label(self, i: int) -> str:
        """The file input ``i`` comes from (``FILE.npy[j]``: array ``j`` of a ``.npy`` file
        holding several)."""
        return self._names[i]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        item = self.items[i]
        if isinstance(item, np.ndarray):
            return item
        if self.raw is not None and self.raw.takes(item):
            return load_raw(item, self.pre, self.raw, self._channels)
        return load_image(item, self.pre)


def _input_files(paths: Sequence[str | os.PathLike[str]],
                 raw: RawSpec | None = None) -> list[Path]:
    """The files ``paths`` name, folders expanded (:func:`folder_entries`, with ``raw``).

    Raises:
        InputError: a path that does not exist (or cannot be examined: a symlink loop, a name
            too long).
    """
    files: list[Path] = []
    for given in paths:
        p = Path(given)
        try:
            is_dir, is_file = p.is_dir(), p.is_file()
        except OSError as exc:  # ENAMETOOLONG: pathlib raises it (ELOOP reads as False)
            raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
        if is_dir:
            files.extend(folder_entries(p, raw))
        elif is_file:
            files.append(p)
        else:
            raise InputError(f"{p}: {_missing_reason(p)}")
    return files


def _missing_reason(p: Path) -> str:
    """Why ``p`` is neither a file nor a folder, in words: a symlink loop, a name too long, or
    simply missing."""
    import errno

    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
        if exc.errno == errno.ENAMETOOLONG:
            return "file name too long"
    return "no such file or folder"


def bundled_photos(kind: str) -> list[Path]:
    """Sorted paths of the JPEG photos shipped in ``tcc_compiler/data/photos/<kind>``.

    Args:
        kind: ``"calib"`` (8 photos for quantization calibration) or ``"eval"`` (12 other
            photos for accuracy checks). Licences: ``tcc_compiler/data/photos/LICENSES.md``.

    Returns:
        Absolute paths, sorted by file name.

    Raises:
        InputError: unknown ``kind``.
        InternalError: the package was installed without its photos.
    """
    if kind not in PHOTO_KINDS:
        raise InputError(f"bundled photos: unknown kind {kind!r}; choose one of {PHOTO_KINDS}")
    folder = _PHOTO_ROOT / kind
    photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not photos:
        raise InternalError(f"{folder}: no bundled photos; reinstall tccc with its package data")
    return photos
