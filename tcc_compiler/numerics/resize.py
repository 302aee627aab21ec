"""Bilinear upsampling by integer factors in integer arithmetic (the NPU's RESIZE_TILE;
specs/quantization.md, "Bilinear resize").

Along one axis of ``n_in`` pixels upsampled ``f`` times (``n_out = n_in * f``), output index
``y`` reads input pixels ``i0`` and ``i1 = min(i0 + 1, n_in - 1)`` with the weight ``w1 /
2**FRAC_BITS`` on ``i1`` and ``(2**FRAC_BITS - w1) / 2**FRAC_BITS`` on ``i0``. Its source
coordinate is the rational ``num / den`` of ONNX Resize's coordinate transformation
(https://onnx.ai/onnx/operators/onnx__Resize.html), kept exact in integers:

* ``half_pixel`` (also ``pytorch_half_pixel``, equal to it whenever ``n_out > 1``, which an
  upsampling always gives): ``x = (y + 0.5) / f - 0.5``: ``num = 2y + 1 - f``, ``den = 2f``;
* ``align_corners``: ``x = y (n_in - 1) / (n_out - 1)``: ``num = y (n_in - 1)``,
  ``den = n_out - 1`` (``num = 0, den = 1`` when ``n_out = 1``);
* ``asymmetric``: ``x = y / f``: ``num = y``, ``den = f``.

A negative coordinate is clamped to 0 and one at or past ``n_in - 1`` to the last pixel (as
ONNX Runtime's linear Resize does: the border pixel is repeated). Otherwise ``i0 = num // den``,
``r = num % den`` and ``w1 = floor((r * 2**(FRAC_BITS + 1) + den) / (2 den))``, i.e. ``r / den``
rounded half up to ``FRAC_BITS`` bits: exact for half_pixel and asymmetric with factors 2 and
4 (quarters and eighths), within ``2**-(FRAC_BITS + 1)`` for align_corners.

The 2-D value is ``acc = sum wy * wx * q`` over the four taps (int8 ``q``, weights summing to
``2**(2 FRAC_BITS)``) and ``out = (acc + 2**(2 FRAC_BITS - 1)) >> 2 FRAC_BITS`` (round half up),
a convex combination of int8 values: always int8, so input and output share one scale and zero
point and no clamp or requantization is needed. ``|acc| <= 128 * 2**22 = 2**29``: the whole
computation fits int32.
"""

from __future__ import annotations

import numpy as np

#: Fraction bits of each axis weight (weights are multiples of 2**-11).
FRAC_BITS = 11
#: The coordinate transformations RESIZE_TILE's ``mode`` field selects, in field-value order.
COORD_MODES = ("half_pixel", "align_corners", "asymmetric")


def coord_fraction(y: np.ndarray, n_in: int, factor: int, coord: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The source coordinate ``num / den`` of output indices ``y`` (int64 arrays; see the
    module docstring).

    Raises:
        ValueError: ``coord`` not in :data:`COORD_MODES`, or ``factor`` / ``n_in`` < 1.
    """
    if factor < 1 or n_in < 1:
        raise ValueError(f"bilinear factor {factor}, length {n_in}: both must be >= 1")
    y = np.asarray(y, np.int64)
    n_out = n_in * factor
    if coord == "half_pixel":
        return 2 * y + 1 - factor, np.full_like(y, 2 * factor)
    if coord == "align_corners":
        if n_out == 1:
            return np.zeros_like(y), np.ones_like(y)
        return y * (n_in - 1), np.full_like(y, n_out - 1)
    if coord == "asymmetric":
        return y, np.full_like(y, factor)
    raise ValueError(f"bilinear coordinate mode '{coord}' unknown (known: "
                     f"{', '.join(COORD_MODES)})")


def bilinear_taps(n_in: int, factor: int, coord: str, start: int = 0, count: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps of output indices ``start .. start + count - 1`` along one axis (default: all
    ``n_in * factor``): ``(i0, i1, w1)`` int64 arrays, input indices and the weight of ``i1``
    in units of ``2**-FRAC_BITS``.

    Raises:
        ValueError: as :func:`coord_fraction`.
    """
    count = n_in * factor - start if count is None else count
    num, den = coord_fraction(np.arange(start, start + count), n_in, factor, coord)
    pos = np.maximum(num, 0)
    i0 = pos // den
    w1 = ((pos % den) * (1 << (FRAC_BITS + 1)) + den) // (2 * den)
    past = i0 >= n_in - 1
    i0 = np.where(past, n_in - 1, i0)
    w1 = np.where(past, 0, w1)
    return i0, np.minimum(i0 + 1, n_in - 1), w1


def input_rows(n_in: int, factor: int, coord: str, start: int, count: int) -> tuple[int, int]:
    """The input rows ``[first, end)`` that output rows ``start .. start + count - 1`` read."""
    i0, i1, _ = bilinear_taps(n_in, factor, coord, start, count)
    return int(i0.min()), int(i1.max()) + 1


def bilinear_int8(band: np.ndarray, full_h: int, fh: int, fw: int, coord: str,
                  band_y0: int = 0, out_y0: int = 0, out_h: int | None = None) -> np.ndarray:
    """Output rows ``out_y0 .. out_y0 + out_h - 1`` of the bilinear upsampling of an int8 NHWC
    map of ``full_h`` rows, given the input rows ``band_y0 ..`` in ``band`` ([rows, W, C]).

    Args:
        band: int8 [rows, W, C], input rows ``band_y0 .. band_y0 + rows - 1`` (whole rows).
        full_h: rows of the whole input. fh, fw: factors along H and W. coord: one of
            :data:`COORD_MODES`. out_h: default all ``full_h * fh - out_y0`` rows.

    Returns:
        int8 [out_h, W * fw, C].

    Raises:
        ValueError: an unknown ``coord``, a factor < 1, or a tap row outside ``band``.
    """
    rows, w, _ = band.shape
    out_h = full_h * fh - out_y0 if out_h is None else out_h
    y0, y1, wy = bilinear_taps(full_h, fh, coord, out_y0, out_h)
    y0, y1 = y0 - band_y0, y1 - band_y0
    if out_h and (y0.min() < 0 or y1.max() >= rows):
        raise ValueError(f"output rows {out_y0}..{out_y0 + out_h - 1} read input rows "
                         f"{int(y0.min()) + band_y0}..{int(y1.max()) + band_y0}, outside the "
                         f"band {band_y0}..{band_y0 + rows - 1}")
    x0, x1, wx = bilinear_taps(w, fw, coord)
    one = np.int32(1 << FRAC_BITS)
    q = band.astype(np.int32)
    wx1 = wx.astype(np.int32)[None, :, None]

    def horizontal(r: np.ndarray) -> np.ndarray:   # [out_h, W*fw, C], weights 2**FRAC_BITS
        return q[r][:, x0] * (one - wx1) + q[r][:, x1] * wx1

    wy1 = wy.astype(np.int32)[:, None, None]
    acc = horizontal(y0) * (one - wy1) + horizontal(y1) * wy1
    return ((acc + np.int32(1 << (2 * FRAC_BITS - 1))) >> (2 * FRAC_BITS)).astype(np.int8)


def bilinear_float(x: np.ndarray, fh: int, fw: int, coord: str) -> np.ndarray:
    """The float bilinear upsampling of an NCHW float32 array ([N, C, H, W] ->
    [N, C, H * fh, W * fw]) with exact coordinates (ONNX Runtime's linear Resize)."""
    out = x.astype(np.float64)
    for axis, f in ((2, fh), (3, fw)):
        n_in = out.shape[axis]
        num, den = coord_fraction(np.arange(n_in * f), n_in, f, coord)
        pos = np.clip(num / den, 0, n_in - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        t = pos - i0
        shape = [1] * out.ndim
        shape[axis] = -1
        t = t.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out.astype(np.float32)
