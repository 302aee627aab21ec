"""Geometry of IR ops as the NPU sees them (NHWC, one image): shapes, conv and pool
geometries (:class:`~tcc_compiler.schedule.tiling.ConvGeom`) and tile boxes."""

from __future__ import annotations

import functools

from tcc_compiler.errors import InternalError, UnsupportedError
from tcc_compiler.ir.graph import Node, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.shapes import npu_hwc
from tcc_compiler.schedule.tiling import ConvGeom
from tcc_compiler.schedule.epilogue import wide_lut_reader
from tcc_compiler.target import Target

#: Output rows [y0, y1) and columns [x0, x1) of a tile.
Spatial = tuple[int, int, int, int]


def hwc(v: Value) -> tuple[int, int, int]:
    """The NHWC (H, W, C) of a batch-1 rank-2/4 value.

    Raises:
        UnsupportedError: another shape (the NPU cannot hold it).
    """
    try:
        return npu_hwc(v.shape)
    except InternalError:
        raise UnsupportedError(v.name, [f"value '{v.name}': shape {v.shape} is not a batch-1 "
                                        "rank-2/4 tensor the NPU can hold"]) from None


def hwc_c(v: Value) -> int:
    """The NHWC channel count of a value (:func:`hwc`)."""
    return hwc(v)[2]


def elem_bytes(v: Value) -> int:
    """Bytes per element of an NPU tensor: 4 for int32, 2 for int16, else 1."""
    return {"int32": 4, "int16": 2}.get(v.dtype, 1)


def conv_geom(n: Node, t: Target) -> ConvGeom:
    """Geometry of a conv or FC node as target ``t`` runs it (an FC is a conv whose kernel
    covers its input). A grouped conv keeps its groups: the MAC array runs several per pass
    from compact weights (:func:`~tcc_compiler.schedule.cost.groups_per_pass`); ``t`` does not
    change the geometry."""
    x, out = n.inputs[0], n.output
    h, w, c = hwc(x)
    oh, ow, o = hwc(out)
    lut = wide_lut_reader(out)   # an int16 output through the epilogue's table: int8 written
    eb = elem_bytes(lut.output if lut is not None else out)
    sc = n.input(3) is not None
    widths = dict(in_elem_bytes=elem_bytes(x),
                  sc_elem_bytes=elem_bytes(n.input(3)) if sc else 1,
                  w_elem_bytes=2 if n.inputs[1].dtype == "int16" else 1)
    if n.op is Op.FC:
        return ConvGeom(h, w, c, 1, 1, o, h, w, 1, 1, 1, 1, (0, 0, 0, 0), 1, eb, sc, **widths)
    a = n.attrs
    g = ConvGeom(h, w, c, oh, ow, o, a.kernel[0], a.kernel[1], a.strides[0], a.strides[1],
                 a.dilations[0], a.dilations[1], a.pads, a.group, eb, sc, **widths)
    return g


def pool_geom(n: Node, source: str) -> tuple[ConvGeom, tuple[int, int], tuple[int, int]]:
    """Geometry of a pooling op as a weightless depthwise conv, its window and strides.

    Raises:
        UnsupportedError: a window or stride above the POOL_CFG field limit (255); names
            ``source`` (the model file).
    """
    h, w, c = hwc(n.inputs[0])
    oh, ow, _ = hwc(n.output)
    if n.op is Op.GAP:
        k, s, pads = (h, w), (1, 1), (0, 0, 0, 0)
    else:
        k, s, pads = n.attrs.kernel, n.attrs.strides, n.attrs.pads
    if max(k) > 255 or max(s) > 255:
        raise UnsupportedError(source, [
            f"{n.op.value} '{n.name}': window {k} exceeds the NPU's 255 limit"])
    eb = elem_bytes(n.inputs[0])   # a pool's output has its input's width
    return (ConvGeom(h, w, c, oh, ow, c, k[0], k[1], s[0], s[1], 1, 1, pads, c, eb,
                     has_weights=False, in_elem_bytes=eb), k, s)


@functools.lru_cache(maxsize=1 << 16)
def in_box(g: ConvGeom, s: Spatial, b: tuple[int, int]):
    """The input box a tile reads: ``(iy0, iy1, ix0, ix1, c0, c1, elements, (pad_t, pad_l,
    pad_b, pad_r))`` for output rows/columns ``s`` and output channels ``b`` = [o0, o1).
    Memoised (a pure function of hashable arguments; the search's lowerings read the same
    boxes again)."""
    y0, y1, x0, x1 = s
    iy0, iy1, pt, pb = g.in_rows(y0, y1)
    ix0, ix1, pl, pr = g.in_cols(x0, x1)
    c0, c1 = g.in_channels(*b)
    return (iy0, iy1, ix0, ix1, c0, c1, (iy1 - iy0) * (ix1 - ix0) * (c1 - c0),
            (pt, pl, pb, pr))


def spatial_tiles(oh: int, ow: int, rows: int, cols: int) -> list[Spatial]:
    """Output tiles of ``rows`` x ``cols`` over an ``oh`` x ``ow`` map, row-major (a new
    list; the tiles themselves are made once per map and tiling, :func:`_spatial_tiles`)."""
    return list(_spatial_tiles(oh, ow, rows, cols))


@functools.lru_cache(maxsize=1024)
def _spatial_tiles(oh: int, ow: int, rows: int, cols: int) -> tuple[Spatial, ...]:
    """:func:`spatial_tiles` as a tuple, kept (the schedule search tiles the same maps the
    same way in each of its lowerings)."""
    return tuple((y0, min(y0 + rows, oh), x0, min(x0 + cols, ow))
                 for y0 in range(0, oh, rows) for x0 in range(0, ow, cols))


def channel_blocks(o: int, ocb: int) -> list[tuple[int, int]]:
    """Output channel blocks [o0, o1) of ``ocb`` channels."""
    return [(o0, min(o0 + ocb, o)) for o0 in range(0, o, ocb)]
