"""Turn image files, folders and ``.npy`` arrays into model inputs (float32 NCHW).

The preprocessing is described by a :class:`Preprocess` record that travels in the compiled
package's manifest (``to_dict`` / ``from_dict``), so calibration, evaluation and the on-device
pipeline all normalise pixels the same way::

    pre = Preprocess(width=224, height=224)
    x = load_image("cat.jpg", pre)                         # [1, 3, 224, 224] float32
    xs = load_inputs(["photos/", "batch.npy"], pre, (1, 3, 224, 224))

The shipped sample photos are found with :func:`bundled_photos`. The preprocessing record
(:class:`Preprocess`, :func:`normalise`) is :mod:`tcc_compiler.datasets.preprocess`'s, one
image file's decoding (:func:`load_image`, :func:`resize_image`)
:mod:`tcc_compiler.datasets.decode`'s, raw uint8 files :mod:`tcc_compiler.datasets.raw`'s;
their public names are importable from here too, as they were.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcc_compiler.datasets.decode import IMAGE_SUFFIXES, load_image, resize_image, resized_size
from tcc_compiler.datasets.npy import NPY_LAYOUTS, NpyArrays, load_npy
from tcc_compiler.datasets.preprocess import (CHANNEL_ORDERS, IMAGE_CHANNELS, RESIZE_MODES,
                                              Preprocess, normalise)
from tcc_compiler.datasets.raw import RAW_SUFFIXES, RawSpec, check_raw_size, is_raw_file, load_raw
from tcc_compiler.errors import InputError, InternalError

__all__ = ["CHANNEL_ORDERS", "IMAGE_CHANNELS", "IMAGE_SUFFIXES", "NPY_LAYOUTS", "PHOTO_KINDS",
           "RESIZE_MODES", "LazyInputs", "Preprocess", "bundled_photos", "folder_entries",
           "load_image", "load_inputs", "normalise", "resize_image", "resized_size"]

logger = logging.getLogger(__name__)

PHOTO_KINDS = ("calib", "eval")
_PHOTO_ROOT = Path(__file__).resolve().parent.parent / "data" / "photos"


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
    photos used to be held together). ``.npy`` inputs are kept as loaded, or with
    ``stream_npy`` each array is copied out and checked for NaN/Inf when it is read
    (:class:`~tcc_compiler.datasets.npy.NpyArrays`: ``tccc run``'s stream, whose first output
    then no longer waits for a whole file of arrays to be copied and checked).

    Raises:
        InputError: as :func:`load_inputs` (an undecodable image only when it is read; with
            ``stream_npy``, a ``.npy`` array's NaN/Inf value too, naming ``FILE.npy[j]``).
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], pre: Preprocess,
                 expected_shape: tuple[int, ...], layout: str = "NCHW",
                 raw: RawSpec | None = None, stream_npy: bool = False) -> None:
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
        self.items: list[np.ndarray | Path | tuple[NpyArrays, int]] = []
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
                arrays = NpyArrays(f, expected, layout) if stream_npy else \
                    load_npy(f, expected, layout)
                self.items.extend((arrays, j) if stream_npy else arrays[j]
                                  for j in range(len(arrays)))
                self._names.extend(f"{f}[{j}]" if len(arrays) > 1 else str(f)
                                   for j in range(len(arrays)))
                continue
            if expected[1] not in IMAGE_CHANNELS:
                raise InputError(f"{f}: the model input has {expected[1]} channels; images load "
                                 "as 1 (greyscale) or 3 (colour) channels - give .npy arrays or "
                                 "raw files (--raw-size) instead")
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

    def labels(self) -> list[str]:
        """:meth:`label` of every input, in order."""
        return list(self._names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        item = self.items[i]
        if isinstance(item, np.ndarray):
            return item
        if isinstance(item, tuple):   # array j of a streamed .npy file
            return item[0].array(item[1], self._names[i])
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
