"""Bilinear upsampling in integers (numerics/resize.py, RESIZE_TILE) against ONNX Runtime's float
linear Resize on the same int8 values (scale 1, zero point 0): half_pixel, pytorch_half_pixel and
asymmetric x2 / x4 are ORT's value rounded half up, exactly; align_corners within the 11-bit
weights' rounding; border pixels, 1-pixel maps and extreme values included. Bands computed
separately equal the whole map."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tcc_compiler.numerics.resize import (FRAC_BITS, bilinear_float, bilinear_int8,
                                          bilinear_taps, input_rows)

SIZES = [(1, 1), (1, 5), (2, 3), (7, 5), (6, 9)]


def _ort_resize(x: np.ndarray, fh: int, fw: int, coord: str) -> np.ndarray:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear",
                            coordinate_transformation_mode=coord)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, list(x.shape))], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [helper.make_tensor("s", TensorProto.FLOAT, [4],
                                                                 [1, 1, fh, fw])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _maps(h: int, w: int, c: int = 3) -> list[np.ndarray]:
    """Random int8 NCHW maps plus a -128/127 checkerboard (the accumulator's extremes)."""
    rng = np.random.default_rng(h * 31 + w)
    board = np.where((np.arange(h)[:, None] + np.arange(w)) % 2, 127, -128)
    return [rng.integers(-128, 128, (1, c, h, w)).astype(np.int8),
            np.broadcast_to(board, (1, c, h, w)).astype(np.int8)]


def _ours(q: np.ndarray, fh: int, fw: int, coord: str) -> np.ndarray:
    y = bilinear_int8(q[0].transpose(1, 2, 0), q.shape[2], fh, fw, coord)
    return y.transpose(2, 0, 1)[None].astype(np.float64)


@pytest.mark.parametrize("onnx_coord", ["half_pixel", "pytorch_half_pixel", "asymmetric"])
@pytest.mark.parametrize("factors", [(2, 2), (4, 4), (2, 4)])
def test_exact_modes_are_ort_rounded_half_up(onnx_coord, factors):
    coord = "half_pixel" if onnx_coord == "pytorch_half_pixel" else onnx_coord
    for h, w in SIZES:
        for q in _maps(h, w):
            ref = _ort_resize(q.astype(np.float32), *factors, onnx_coord).astype(np.float64)
            np.testing.assert_array_equal(_ours(q, *factors, coord), np.floor(ref + 0.5),
                                          err_msg=f"{onnx_coord} {factors} {h}x{w}")


@pytest.mark.parametrize("coord,factors", [("align_corners", (2, 2)), ("align_corners", (4, 4)),
                                           ("half_pixel", (3, 7)), ("asymmetric", (6, 5))])
def test_rounded_weights_within_bound(coord, factors):
    # each axis weight is off by at most 2**-12: at most 255 * 2 * 2**-12 LSB beyond rounding
    bound = 0.5 + 2 * 255 * 2.0 ** -(FRAC_BITS + 1) + 1e-6
    for h, w in SIZES + [(13, 10), (40, 3)]:
        for q in _maps(h, w):
            ref = _ort_resize(q.astype(np.float32), *factors, coord)
            err = np.abs(_ours(q, *factors, coord) - ref).max()
            assert err <= bound, (factors, h, w, err)


def test_one_pixel_map_by_a_large_factor_is_a_broadcast():
    """DeepLabV3's ASPP pooling branch: a 1x1 map upsampled by the map size."""
    q = np.arange(-3, 3, dtype=np.int8).reshape(1, 1, 6)
    for coord in ("half_pixel", "align_corners", "asymmetric"):
        y = bilinear_int8(q, 1, 28, 28, coord)
        np.testing.assert_array_equal(y, np.broadcast_to(q, (28, 28, 6)))


@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "asymmetric"])
def test_float_rule_matches_ort(coord):
    x = np.random.default_rng(5).standard_normal((1, 2, 5, 7)).astype(np.float32)
    for f in ((2, 2), (4, 4), (2, 4)):
        np.testing.assert_allclose(bilinear_float(x, *f, coord), _ort_resize(x, *f, coord),
                                   rtol=1e-5, atol=1e-5)


def test_half_pixel_weights_are_quarters_and_eighths():
    one = 1 << FRAC_BITS
    _, _, w2 = bilinear_taps(9, 2, "half_pixel")
    assert set(w2.tolist()) <= {0, one // 4, 3 * one // 4}
    i0, i1, w4 = bilinear_taps(9, 4, "half_pixel")
    assert set(w4.tolist()) <= {0} | {k * one // 8 for k in (1, 3, 5, 7)}
    # borders: the first outputs clamp to pixel 0, the last to pixel 8 (replicated)
    assert (i0[:2].tolist(), w4[:2].tolist()) == ([0, 0], [0, 0])
    assert i0[-2:].tolist() == i1[-2:].tolist() == [8, 8]


@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "asymmetric"])
@pytest.mark.parametrize("fh,rows", [(2, 3), (4, 5), (4, 8)])
def test_bands_equal_the_whole_map(coord, fh, rows):
    q = np.random.default_rng(fh * rows).integers(-128, 128, (11, 6, 4)).astype(np.int8)
    whole = bilinear_int8(q, 11, fh, 2, coord)
    for oy0 in range(0, 11 * fh, rows):
        n = min(rows, 11 * fh - oy0)
        iy0, iy1 = input_rows(11, fh, coord, oy0, n)
        band = bilinear_int8(q[iy0:iy1], 11, fh, 2, coord, iy0, oy0, n)
        np.testing.assert_array_equal(band, whole[oy0:oy0 + n])


def test_tap_outside_band_and_unknown_mode_raise():
    q = np.zeros((4, 3, 2), np.int8)
    with pytest.raises(ValueError, match="outside the band"):
        bilinear_int8(q[:2], 4, 2, 2, "half_pixel", 0, 2, 4)   # rows 2.. need input row 2
    with pytest.raises(ValueError, match="unknown"):
        bilinear_int8(q, 4, 2, 2, "tf_half_pixel_for_nn")
