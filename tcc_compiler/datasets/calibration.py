"""Calibration inputs: the bundled photos, or the user's images, folders, .npy files and arrays,
as float32 arrays shaped like a graph's input (the driver's calibrate stage loads them here).

Image files are decoded when calibration reads them (:class:`LazyInputs`), one at a time, so
compile memory does not grow with the number of calibration images times the input size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from tcc_compiler.datasets.images import IMAGE_CHANNELS, LazyInputs, bundled_photos
from tcc_compiler.datasets.raw import RawSpec
from tcc_compiler.errors import InputError
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph


def default_calibration(graph: Graph, preprocess) -> tuple[Sequence[np.ndarray], str]:
    """Calibration inputs from the photos bundled with the package (see data/photos): a
    sequence of float32 NCHW arrays, decoded on access (:class:`LazyInputs`)."""
    c = graph.inputs[0].shape[1]
    if c not in IMAGE_CHANNELS:  # 1 and 3 load as greyscale / colour (Preprocess.channels)
        raise InputError(f"the model takes {c} channels; the bundled calibration photos load "
                         "as 1 or 3 channels - give calibration/--calib .npy arrays")
    paths = bundled_photos("calib")
    return LazyInputs(paths, preprocess, tuple(graph.inputs[0].shape)), \
        f"{len(paths)} bundled photos (tcc_compiler/data/photos/calib)"


class _Concat(Sequence):
    """Arrays given directly, then the inputs of a :class:`LazyInputs` (read on access)."""

    def __init__(self, arrays: list[np.ndarray], lazy: Sequence | None) -> None:
        self.arrays, self.lazy = arrays, lazy if lazy is not None else []

    def __len__(self) -> int:
        return len(self.arrays) + len(self.lazy)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.arrays[i] if i < len(self.arrays) else self.lazy[i - len(self.arrays)]

    def label(self, i: int) -> str | None:
        """The file input ``i`` comes from, or None for an array given directly."""
        n = len(self.arrays)
        return None if i < n else self.lazy.label(i - n)


def resolve_calibration(items, graph: Graph, preprocess,
                        raw: RawSpec | None = None) -> tuple[Sequence[np.ndarray], str]:
    """Turn image paths, folders, .npy paths, raw uint8 files and arrays into float32 input
    arrays.

    Args:
        items: a sequence of image/.npy/folder paths and float32 NCHW arrays (for a graph
            with several inputs, an NPU segment's, dicts {input name: array}); one path
            (``"photo.png"``) or one array counts as a list of one (a string used to be
            iterated character by character). A ``.npy`` file of a model whose ONNX input is
            NHWC (``graph.meta["input_layout"]``) may be NHWC ``[N, H, W, C]``.
        raw: the size and layout of raw uint8 files (``.bin``/``.raw``/``.rgb``,
            :mod:`tcc_compiler.datasets.raw`: ``tccc compile --raw-size``), read as
            ``tccc eval`` reads them; None = such files are refused.

    Returns:
        (inputs, description): a sequence of float32 NCHW arrays ``[1, C, H, W]`` (images are
        decoded when read), and a description for the manifest.

    Raises:
        InputError: unreadable files, wrong shapes, NaN/Inf values, a raw file without
            ``raw`` or of another size, nothing given, or
            ``items`` is not a path, an array or an iterable of them.
    """
    if isinstance(items, (str, bytes, os.PathLike, np.ndarray)):
        items = [os.fsdecode(items) if isinstance(items, bytes) else items]
    try:
        items = list(items)
    except TypeError:  # calibration=5: say what it takes, not "'int' object is not iterable"
        raise InputError(f"calibration: {type(items).__name__} {items!r:.40}: give image, "
                         ".npy or folder paths or float32 NCHW arrays (a list, or one)") from None
    shape = tuple(graph.inputs[0].shape)
    paths = [c for c in items if not isinstance(c, (np.ndarray, Mapping))]
    arrays = []
    for k, a in enumerate(c for c in items if isinstance(c, (np.ndarray, Mapping))):
        if isinstance(a, Mapping):   # one input of a graph with several (an NPU segment)
            try:
                arrays.append(feeds(graph, a))
            except InputError as exc:
                raise InputError(f"calibration array {k}: {exc}") from None
            continue
        a = np.asarray(a, np.float32)
        if a.shape != shape:
            raise InputError(f"calibration array {k}: shape {a.shape}, model expects {shape}")
        arrays.append(a)
    # an NHWC model's .npy files may be NHWC, as its ONNX input takes them
    layout = graph.meta.get("input_layout", "NCHW")
    lazy = LazyInputs(paths, preprocess, shape, layout, raw) if paths else None
    inputs = _Concat(arrays, lazy)
    if not len(inputs):
        raise InputError("calibration/--calib: no calibration inputs given")
    desc = ", ".join(str(p) for p in paths) if paths else f"{len(arrays)} arrays"
    return inputs, desc
