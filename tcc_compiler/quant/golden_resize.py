"""The golden model's own resize (used by :mod:`tcc_compiler.quant.golden`): the bilinear
upsampling by integer factors of an int8 NHWC map, written from specs/quantization.md
("Bilinear resize") and specs/isa.md (RESIZE_TILE), and the nearest one (rows, then columns
repeated).

Why not the executor's ``numerics/resize.bilinear_int8`` (nor its ``bilinear_taps`` /
``coord_fraction``): ``tccc run --check`` compares the executor against the golden model, so a
fault in a kernel both call would be invisible to it. Here each axis's taps come from a table
of the coordinate modes' ``(num, den)`` written anew, the interpolation runs along H first
(the executor's along W first; the integer sum is the same in any order) in int64, and the
rounding is a floor division; no code is shared with them.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError

#: Fraction bits of one axis weight (specs/quantization.md "Bilinear resize": 11).
WEIGHT_BITS = 11


def axis_taps(n_in: int, f: int, coord: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taps of the ``n_in * f`` output indices of one axis upsampled ``f`` times:
    ``(i0, i1, w1)`` int64 [n_in * f], ``out[y] = (w0 q[i0[y]] + w1 q[i1[y]]) / 2**11`` with
    ``w0 = 2**11 - w1`` (specs/quantization.md "Bilinear resize"): the source coordinate
    ``num / den`` of ``coord`` (``half_pixel``: ``(2y + 1 - f) / 2f``; ``align_corners``:
    ``y (n_in - 1) / (n_out - 1)``, ``0 / 1`` for one output; ``asymmetric``: ``y / f``); below
    0 it is pixel 0, at or past ``n_in - 1`` the last pixel (``w1 = 0`` at both borders); else
    ``i0 = floor(num / den)``, ``i1 = min(i0 + 1, n_in - 1)``,
    ``w1 = floor((r 2**12 + den) / 2 den)``, ``r = num - i0 den``.

    Raises:
        InternalError: an unknown ``coord`` or a length or factor below 1.
    """
    if n_in < 1 or f < 1:
        raise InternalError(f"golden resize: length {n_in}, factor {f}: both must be >= 1")
    y = np.arange(n_in * f, dtype=np.int64)
    n_out = n_in * f
    if coord == "half_pixel":
        num, den = 2 * y + 1 - f, 2 * f
    elif coord == "align_corners":
        num, den = (y * (n_in - 1), n_out - 1) if n_out > 1 else (0 * y, 1)
    elif coord == "asymmetric":
        num, den = y, f
    else:
        raise InternalError(f"golden resize: coordinate mode '{coord}' unknown")
    i0 = np.floor_divide(num, den)
    r = num - i0 * den
    w1 = np.floor_divide(r * (2 << WEIGHT_BITS) + den, 2 * den)
    below, past = num < 0, i0 >= n_in - 1
    i0[below] = 0
    i0[past] = n_in - 1
    w1[below | past] = 0
    return i0, np.minimum(i0 + 1, n_in - 1), w1


def bilinear(x: np.ndarray, fh: int, fw: int, coord: str) -> np.ndarray:
    """The bilinear upsampling of the whole int8 NHWC map ``x`` [H, W, C] by ``fh`` x ``fw``:
    ``out = floor((sum over the four taps of wy wx q + 2**21) / 2**22)`` (round half up; a
    convex combination of int8 values, so int8 without a clamp, in the input's quantization).

    Args:
        x: int8 [H, W, C]. fh, fw: integer factors >= 1. coord: ``half_pixel``,
            ``align_corners`` or ``asymmetric`` (``ResizeCoord`` values).

    Returns:
        int8 [H fh, W fw, C].

    Raises:
        InternalError: ``x`` not int8, or as :func:`axis_taps`.
    """
    if x.dtype != np.int8:
        raise InternalError(f"golden bilinear resize: int8 input expected, got {x.dtype}")
    h, w, _ = x.shape
    y0, y1, wy = axis_taps(h, fh, coord)
    x0, x1, wx = axis_taps(w, fw, coord)
    one = 1 << WEIGHT_BITS
    q = x.astype(np.int64)
    wy = wy[:, None, None]
    rows = q[y0] * (one - wy) + q[y1] * wy             # [H fh, W, C], weights 2**11
    wx = wx[None, :, None]
    acc = rows[:, x0] * (one - wx) + rows[:, x1] * wx  # [H fh, W fw, C], weights 2**22
    acc += 1 << (2 * WEIGHT_BITS - 1)
    return np.floor_divide(acc, 1 << (2 * WEIGHT_BITS)).astype(np.int8)


def nearest(x: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """The nearest upsampling of the NHWC map ``x`` [H, W, C] by integer factors: output pixel
    (i, j) is input pixel (i // fh, j // fw). Returns ``x``'s dtype [H fh, W fw, C]."""
    return np.repeat(np.repeat(x, fh, axis=0), fw, axis=1)
