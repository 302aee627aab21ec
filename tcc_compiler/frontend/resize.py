"""Converters of Resize (opsets 10-19) and Upsample (7-9): upsampling of an NCHW map by integer
factors along H and W -> IR op ``resize``, nearest or bilinear.

The output size comes from ``scales`` or ``sizes`` (ONNX operator docs,
https://onnx.ai/onnx/operators/onnx__Resize.html); N and C must keep their size.

* mode ``nearest``: the source pixel of each output pixel is computed with ONNX's formulas for
  the node's ``coordinate_transformation_mode`` and ``nearest_mode`` (:func:`nearest_source`),
  and the node is accepted only when that map is ``y // factor`` on both axes: then the op is
  an exact repeat of pixels (torch's ``F.interpolate(mode="nearest")`` exports
  asymmetric/floor, and half_pixel gives the same map for every integer factor).
* mode ``linear`` on a rank-4 map (bilinear): coordinate modes ``half_pixel``,
  ``pytorch_half_pixel`` (the same map for every upsampling, since the output has more than
  one pixel), ``align_corners`` and ``asymmetric`` (opset 10 Resize and Upsample, which have
  no mode attribute, use asymmetric as ONNX Runtime does); integer factors 1..
  :data:`MAX_BILINEAR_FACTOR` (numerics/resize.py; weights are exact for 2 and 4 except with
  align_corners). ``antialias`` changes nothing when upsampling, so it is accepted.

:mod:`tcc_compiler.frontend.converters` merges :data:`RESIZE_CONVERTERS` into its table.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.ops import Op, ResizeAttrs, ResizeCoord, ResizeMode

#: Largest bilinear factor along one axis (RESIZE_TILE's ``fh``/``fw`` fields are u8; e.g.
#: DeepLabV3's ASPP upsamples its pooled 1x1 branch by the map size). Weights are exact for
#: power-of-two factors with half_pixel / asymmetric, else within 2**-12 (numerics/resize.py).
MAX_BILINEAR_FACTOR = 255
#: Largest output height and width of a bilinear resize (pixels): RESIZE_TILE counts rows in
#: u16 fields, and a map split into channel groups (schedule/ops/bilinear.py) is stored one
#: pixel run per output column (DMA ``n1``, u16).
MAX_BILINEAR_SIDE = 0xFFFF
#: ONNX coordinate_transformation_mode -> the IR's bilinear coordinate mode.
_BILINEAR_COORDS = {"half_pixel": ResizeCoord.HALF_PIXEL,
                    "pytorch_half_pixel": ResizeCoord.HALF_PIXEL,
                    "align_corners": ResizeCoord.ALIGN_CORNERS,
                    "asymmetric": ResizeCoord.ASYMMETRIC}


def _text(v, default: str) -> str:
    if v is None:
        return default
    return v.decode() if isinstance(v, bytes) else str(v)


def nearest_source(out_len: int, in_len: int, coord_mode: str, nearest_mode: str) -> np.ndarray:
    """Input index of every output index along one axis, by ONNX Resize's rules (scale =
    out_len / in_len; the original coordinate is clamped to [0, in_len - 1]).

    Raises:
        Unsupported: a mode ONNX does not define.
    """
    y = np.arange(out_len, dtype=np.float64)
    s = out_len / in_len
    if coord_mode == "half_pixel":
        x = (y + 0.5) / s - 0.5
    elif coord_mode == "pytorch_half_pixel":
        x = (y + 0.5) / s - 0.5 if out_len > 1 else np.zeros_like(y)
    elif coord_mode == "asymmetric":
        x = y / s
    elif coord_mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / s
    elif coord_mode == "align_corners":
        x = y * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(y)
    else:
        raise Unsupported(f"coordinate_transformation_mode '{coord_mode}' is not supported "
                          "for nearest resizing")
    rounders = {"round_prefer_floor": lambda v: np.ceil(v - 0.5),
                "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                "floor": np.floor, "ceil": np.ceil}
    if nearest_mode not in rounders:
        raise Unsupported(f"nearest_mode '{nearest_mode}' unknown")
    return np.clip(rounders[nearest_mode](x), 0, in_len - 1).astype(np.int64)


def _factors(ctx: Ctx, node: onnx.NodeProto, shape, scales, sizes) -> tuple[int, int]:
    """Integer (H, W) factors from ``scales`` or ``sizes`` of an NCHW ``shape``."""
    if sizes is not None and len(sizes):
        out = [int(v) for v in sizes]
    elif scales is not None and len(scales):
        out = [int(math.floor(d * float(f))) for d, f in zip(shape, scales)]
    else:
        raise Unsupported("neither scales nor sizes given")
    if len(out) != 4 or out[0] != shape[0] or out[1] != shape[1]:
        raise Unsupported(f"resize of {shape} to {out}: only H and W may change")
    if out[2] % shape[2] or out[3] % shape[3] or out[2] < shape[2] or out[3] < shape[3]:
        raise Unsupported(f"resize of {shape[2]}x{shape[3]} to {out[2]}x{out[3]}: only "
                          "upsampling by integer factors runs on the NPU")
    fh, fw = out[2] // shape[2], out[3] // shape[3]
    if (sizes is None or not len(sizes)) and [float(f) for f in scales[2:]] != [fh, fw]:
        # ONNX maps coordinates with the given scale, not out/in: x2.05 of 8 pixels is 16
        # pixels, but sampled at x / 2.05, which a factor-2 resize does not reproduce
        raise Unsupported(f"scales {float(scales[2]):g}x{float(scales[3]):g}: only integer "
                          "upsampling factors run on the NPU")
    return fh, fw


def _emit(ctx: Ctx, node: onnx.NodeProto, fh: int, fw: int, coord: str, nearest: str) -> None:
    x = ctx.get(node, 0)
    h, w = x.shape[2], x.shape[3]
    for length, f in ((h, fh), (w, fw)):
        src = nearest_source(length * f, length, coord, nearest)
        if not np.array_equal(src, np.arange(length * f) // f):
            raise Unsupported(f"nearest resize x{f} with coordinate_transformation_mode="
                              f"'{coord}', nearest_mode='{nearest}' does not repeat pixels")
    if fh == fw == 1:
        ctx.alias(node.output[0], x)
    else:
        ctx.emit(Op.RESIZE, node, [x], ResizeAttrs(fh, fw))


def _emit_bilinear(ctx: Ctx, node: onnx.NodeProto, fh: int, fw: int, coord: str) -> None:
    """A bilinear resize by (fh, fw) with ONNX coordinate mode ``coord``.

    Raises:
        Unsupported: a coordinate mode without an NPU form, a factor above
            :data:`MAX_BILINEAR_FACTOR` or an output side above :data:`MAX_BILINEAR_SIDE`.
    """
    x = ctx.get(node, 0)
    if coord not in _BILINEAR_COORDS:
        raise Unsupported(f"linear resize with coordinate_transformation_mode '{coord}': "
                          f"only {', '.join(_BILINEAR_COORDS)} run on the NPU")
    if max(fh, fw) > MAX_BILINEAR_FACTOR:
        raise Unsupported(f"linear resize x{fh}x{fw}: factors above {MAX_BILINEAR_FACTOR} "
                          "are not supported")
    out_h, out_w = x.shape[2] * fh, x.shape[3] * fw
    if max(out_h, out_w) > MAX_BILINEAR_SIDE:
        raise Unsupported(f"linear resize to {out_w}x{out_h}: outputs wider or taller than "
                          f"{MAX_BILINEAR_SIDE} pixels do not fit RESIZE_TILE's row and "
                          "DMA count fields")
    if fh == fw == 1:
        ctx.alias(node.output[0], x)
    else:
        ctx.emit(Op.RESIZE, node, [x], ResizeAttrs(fh, fw, ResizeMode.BILINEAR,
                                                   _BILINEAR_COORDS[coord]))


def _resize_input(ctx: Ctx, node: onnx.NodeProto, a: dict, what: str):
    """The NCHW activation a ``what`` ("resize"/"upsample") node reads and its mode
    ("nearest" or "linear").

    Raises:
        Unsupported: another rank, a constant input, or a mode other than nearest and linear.
    """
    x = ctx.get(node, 0)
    if len(x.shape) != 4 or x.is_const:
        raise Unsupported(f"{what} of a rank-{len(x.shape)} tensor: only NCHW maps")
    mode = _text(a.get("mode"), "nearest")
    if mode == "bilinear" and what == "upsample":   # Upsample-7's spelling of linear
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"mode '{mode}': only nearest and (bi)linear {what[:-1]}ing run on "
                          "the NPU")
    return x, mode


def resize(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Resize: integer upsampling factors, nearest (repeating pixels) or linear."""
    a = attrs_of(node)
    x, mode = _resize_input(ctx, node, a, "resize")
    if "axes" in a or _text(a.get("keep_aspect_ratio_policy"), "stretch") != "stretch":
        raise Unsupported("axes / keep_aspect_ratio_policy attributes are not supported")
    if ctx.opset < 11:
        scales, sizes = ctx.const(node, 1, "scales"), None
        coord = "asymmetric"   # opset 10 Resize: no coordinate mode; nearest floors
        nearest = "floor"
    else:
        scales, sizes = ctx.const(node, 2, "scales"), ctx.const(node, 3, "sizes")
        coord = _text(a.get("coordinate_transformation_mode"), "half_pixel")
        nearest = _text(a.get("nearest_mode"), "round_prefer_floor")
    fh, fw = _factors(ctx, node, x.shape, scales, sizes)
    if mode == "linear":
        _emit_bilinear(ctx, node, fh, fw, coord)
    else:
        _emit(ctx, node, fh, fw, coord, nearest)


def upsample(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Upsample (opsets 7-9, deprecated): mode nearest or linear (asymmetric coordinates),
    scales attribute (7) or input (9); its nearest mode is asymmetric with floor."""
    a = attrs_of(node)
    x, mode = _resize_input(ctx, node, a, "upsample")
    scales = a.get("scales") if "scales" in a else ctx.const(node, 1, "scales")
    fh, fw = _factors(ctx, node, x.shape, scales, None)
    if mode == "linear":
        _emit_bilinear(ctx, node, fh, fw, "asymmetric")
    else:
        _emit(ctx, node, fh, fw, "asymmetric", "floor")


RESIZE_CONVERTERS: dict[str, Callable[[Ctx, onnx.NodeProto], None]] = {
    "Resize": resize,
    "Upsample": upsample,
}
