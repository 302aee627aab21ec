"""YOLOv5n (v6.x/v7.0 ``models/yolov5n.yaml``) in the layout ``export.py --include onnx`` writes.

Depth 0.33, width 0.25, 80 classes, 3 anchors per level. Conv = fused Conv2d + SiLU (``Sigmoid``
+ ``Mul``), C3 blocks, SPPF, ``Upsample`` (nearest ``Resize`` x2), Concat, and the Detect head:
per level a Conv 1x1 to 255 = 3 x 85, Reshape to ``[1, 3, 85, H, W]``, Transpose to
``[1, 3, H, W, 85]``, Sigmoid, Split (2, 2, 81), ``xy = (xy * 2 + grid) * stride``,
``wh = (wh * 2) ** 2 * anchor_grid`` (grids as constants), Concat, Reshape to ``[1, -1, 85]``,
and a final Concat. Input ``images`` float32 NCHW ``[1, 3, H, W]`` (RGB in [0, 1]; H and W
multiples of 32), output ``output0`` float32 ``[1, 3 * (H*W/64 + H*W/256 + H*W/1024), 85]``
(``[1, 25200, 85]`` at 640x640): cx, cy, w, h (input pixels), objectness, 80 class scores.

Parameters (:func:`tcc_compiler.zoo._graph.weight_count`, BatchNorm folded): 1,867,405
(the YOLOv5n v7.0 model summary: 1,872,157 with BatchNorm, -0.25%).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.zoo import _ultralytics as u
from tcc_compiler.zoo._graph import Builder, T

NUM_OUTPUTS = 85  # 4 box + 1 objectness + 80 classes
#: anchors (w, h) in input pixels per level (P3/8, P4/16, P5/32), yolov5n.yaml
ANCHORS = (((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)),
           ((116, 90), (156, 198), (373, 326)))


def _ch(c: int) -> int:
    return max(8, -(-int(c * 0.25) // 8) * 8)


def _detect(b: Builder, feats: list[T], path: str) -> T:
    sc = u.scope_of(path)
    outs = []
    for i, x in enumerate(feats):
        _, _, ny, nx = x.shape
        y = b.conv(x, 3 * NUM_OUTPUTS, 1, 1, f"{sc}/m.{i}", gamma=(1.0, 1.0), beta_mean=0.0,
                   names=(f"{path}.m.{i}.weight", f"{path}.m.{i}.bias"))
        y = b.reshape(y, [1, 3, NUM_OUTPUTS, ny, nx], sc)
        y = b.sigmoid(b.transpose(y, [0, 1, 3, 4, 2], sc), sc)
        xy, wh, conf = b.split(y, [2, 2, NUM_OUTPUTS - 4], 4, sc)
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = (np.stack([xv, yv], -1)[None, None] - 0.5).repeat(3, axis=1)
        anchor_grid = np.broadcast_to(np.array(ANCHORS[i], np.float32)[None, :, None, None],
                                      (1, 3, ny, nx, 2))
        xy = b.binary_const("Mul", xy, np.float32(2.0), sc)
        xy = b.binary_const("Add", xy, grid.astype(np.float32), sc)
        xy = b.binary_const("Mul", xy, np.float32(u.STRIDES[i]), sc)
        wh = b.binary_const("Mul", wh, np.float32(2.0), sc)
        wh = b.binary_const("Pow", wh, np.float32(2.0), sc)
        wh = b.binary_const("Mul", wh, anchor_grid.astype(np.float32), sc)
        y = b.concat([xy, wh, conf], 4, sc)
        outs.append(b.reshape(y, [1, 3 * ny * nx, NUM_OUTPUTS], sc))
    return b.concat(outs, 1, sc, out_name="output0")


def record_yolov5n(b: Builder) -> list[T]:
    """YOLOv5n v6.x: Conv 6x6 s2 stem, C3 backbone, SPPF, PAN head with C3, Detect."""
    x = u.conv(b, b.input, _ch(64), 6, 2, "model.0", pad=2)
    x = u.conv(b, x, _ch(128), 3, 2, "model.1")
    x = u.c3(b, x, _ch(128), 1, True, "model.2")
    x = u.conv(b, x, _ch(256), 3, 2, "model.3")
    p3 = u.c3(b, x, _ch(256), 2, True, "model.4")
    x = u.conv(b, p3, _ch(512), 3, 2, "model.5")
    p4 = u.c3(b, x, _ch(512), 3, True, "model.6")
    x = u.conv(b, p4, _ch(1024), 3, 2, "model.7")
    x = u.c3(b, x, _ch(1024), 1, True, "model.8")
    x = u.sppf(b, x, _ch(1024), "model.9")
    h10 = u.conv(b, x, _ch(512), 1, 1, "model.10")
    x = b.concat([b.resize_nearest(h10, "/model.11"), p4], 1, "/model.12")
    x = u.c3(b, x, _ch(512), 1, False, "model.13")
    h14 = u.conv(b, x, _ch(256), 1, 1, "model.14")
    x = b.concat([b.resize_nearest(h14, "/model.15"), p3], 1, "/model.16")
    out3 = u.c3(b, x, _ch(256), 1, False, "model.17")
    x = b.concat([u.conv(b, out3, _ch(256), 3, 2, "model.18"), h14], 1, "/model.19")
    out4 = u.c3(b, x, _ch(512), 1, False, "model.20")
    x = b.concat([u.conv(b, out4, _ch(512), 3, 2, "model.21"), h10], 1, "/model.22")
    out5 = u.c3(b, x, _ch(1024), 1, False, "model.23")
    return [_detect(b, [out3, out4, out5], "model.24")]
