"""Calibration inputs: the bundled photos, or the user's images, folders, .npy files and arrays,
as float32 arrays shaped like a graph's input (the driver's calibrate stage loads them here)."""

from __future__ import annotations

import numpy as np

from tcc_compiler.datasets.images import IMAGE_CHANNELS, bundled_photos, load_inputs
from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph


def default_calibration(graph: Graph, preprocess) -> tuple[list[np.ndarray], str]:
    """Calibration inputs from the photos bundled with the package (see data/photos)."""
    c = graph.inputs[0].shape[1]
    if c not in IMAGE_CHANNELS:  # 1 and 3 load as greyscale / colour (Preprocess.channels)
        raise InputError(f"the model takes {c} channels; the bundled calibration photos load "
                         "as 1 or 3 channels - give calibration/--calib .npy arrays")
    paths = bundled_photos("calib")
    return load_inputs(paths, preprocess, tuple(graph.inputs[0].shape)), \
        f"{len(paths)} bundled photos (tcc_compiler/data/photos/calib)"


def resolve_calibration(items, graph: Graph, preprocess) -> tuple[list[np.ndarray], str]:
    """Turn image paths, folders, .npy paths and arrays into float32 input arrays.

    Raises:
        InputError: unreadable files, wrong shapes, NaN/Inf values, nothing given.
    """
    shape = tuple(graph.inputs[0].shape)
    paths = [c for c in items if not isinstance(c, np.ndarray)]
    arrays = []
    for k, a in enumerate(c for c in items if isinstance(c, np.ndarray)):
        a = np.asarray(a, np.float32)
        if a.shape != shape:
            raise InputError(f"calibration array {k}: shape {a.shape}, model expects {shape}")
        arrays.append(a)
    if paths:
        arrays += load_inputs(paths, preprocess, shape)
    if not arrays:
        raise InputError("calibration/--calib: no calibration inputs given")
    desc = ", ".join(str(p) for p in paths) if paths else f"{len(arrays)} arrays"
    return arrays, desc
