"""YOLOv8n and YOLO11n (ultralytics) in the layout ``YOLO(...).export(format="onnx")`` writes.

Topologies are ``ultralytics/cfg/models/v8/yolov8.yaml`` and ``11/yolo11.yaml`` at scale ``n``
(YOLOv8n: depth 0.33, width 0.25; YOLO11n: depth 0.50, width 0.25; max channels 1024), 80
classes. Input ``images`` float32 NCHW ``[1, 3, H, W]`` (RGB in [0, 1]; H and W multiples of
32), output ``output0`` float32 ``[1, 84, H*W/64 + H*W/256 + H*W/1024]`` (``[1, 84, 8400]`` at
640x640): boxes (cx, cy, w, h, input pixels) and 80 sigmoid class scores, before NMS.

Parameters (:func:`tcc_compiler.zoo._graph.weight_count`; BatchNorm folded, so each BN's
2*C affine parameters become C conv biases): YOLOv8n 3,151,904 (ultralytics' unfused model:
3,157,200, -0.17%), YOLO11n 2,616,248 (2,624,080, -0.30%).
"""

from __future__ import annotations

from tcc_compiler.zoo import _ultralytics as u
from tcc_compiler.zoo._graph import Builder, T


def _ch(c: int) -> int:
    """Channels at width 0.25 (make_divisible(min(c, 1024) * 0.25, 8))."""
    return max(8, -(-int(min(c, 1024) * 0.25) // 8) * 8)


def _depth(n: int, gain: float) -> int:
    return max(round(n * gain), 1) if n > 1 else n


def _neck(b: Builder, p3: T, p4: T, p5: T, block, first: int) -> list[T]:
    """The shared PAN neck: up (Resize x2, Concat, block) twice, then down (Conv s2, Concat,
    block) twice. ``block(x, c2, path, last)`` records one C2f/C3k2; ``first`` is the index of
    the first Upsample layer."""
    i = first
    x = b.resize_nearest(p5, u.scope_of(f"model.{i}"))
    x = b.concat([x, p4], 1, u.scope_of(f"model.{i + 1}"))
    n4 = block(x, _ch(512), f"model.{i + 2}", False)
    x = b.resize_nearest(n4, u.scope_of(f"model.{i + 3}"))
    x = b.concat([x, p3], 1, u.scope_of(f"model.{i + 4}"))
    out3 = block(x, _ch(256), f"model.{i + 5}", False)
    x = u.conv(b, out3, _ch(256), 3, 2, f"model.{i + 6}")
    x = b.concat([x, n4], 1, u.scope_of(f"model.{i + 7}"))
    out4 = block(x, _ch(512), f"model.{i + 8}", False)
    x = u.conv(b, out4, _ch(512), 3, 2, f"model.{i + 9}")
    x = b.concat([x, p5], 1, u.scope_of(f"model.{i + 10}"))
    out5 = block(x, _ch(1024), f"model.{i + 11}", True)
    return [out3, out4, out5]


def record_yolov8n(b: Builder) -> list[T]:
    """YOLOv8n: Conv/C2f backbone, SPPF, PAN neck with C2f (no shortcut), Detect (legacy)."""
    x = u.conv(b, b.input, _ch(64), 3, 2, "model.0")
    x = u.conv(b, x, _ch(128), 3, 2, "model.1")
    x = u.c2f(b, x, _ch(128), _depth(3, 0.33), True, "model.2")
    x = u.conv(b, x, _ch(256), 3, 2, "model.3")
    p3 = u.c2f(b, x, _ch(256), _depth(6, 0.33), True, "model.4")
    x = u.conv(b, p3, _ch(512), 3, 2, "model.5")
    p4 = u.c2f(b, x, _ch(512), _depth(6, 0.33), True, "model.6")
    x = u.conv(b, p4, _ch(1024), 3, 2, "model.7")
    x = u.c2f(b, x, _ch(1024), _depth(3, 0.33), True, "model.8")
    p5 = u.sppf(b, x, _ch(1024), "model.9")

    def block(x: T, c2: int, path: str, last: bool) -> T:
        return u.c2f(b, x, c2, _depth(3, 0.33), False, path)

    feats = _neck(b, p3, p4, p5, block, 10)
    return [u.detect(b, feats, "model.22", legacy=True)]


def record_yolo11n(b: Builder) -> list[T]:
    """YOLO11n: Conv/C3k2 backbone, SPPF, C2PSA (attention), PAN neck with C3k2, Detect
    (depthwise class branch)."""
    d = _depth(2, 0.5)
    x = u.conv(b, b.input, _ch(64), 3, 2, "model.0")
    x = u.conv(b, x, _ch(128), 3, 2, "model.1")
    x = u.c2f(b, x, _ch(256), d, True, "model.2", e=0.25, c3k=False)
    x = u.conv(b, x, _ch(256), 3, 2, "model.3")
    p3 = u.c2f(b, x, _ch(512), d, True, "model.4", e=0.25, c3k=False)
    x = u.conv(b, p3, _ch(512), 3, 2, "model.5")
    p4 = u.c2f(b, x, _ch(512), d, True, "model.6", c3k=True)
    x = u.conv(b, p4, _ch(1024), 3, 2, "model.7")
    x = u.c2f(b, x, _ch(1024), d, True, "model.8", c3k=True)
    x = u.sppf(b, x, _ch(1024), "model.9")
    p5 = u.c2psa(b, x, d, "model.10")

    def block(x: T, c2: int, path: str, last: bool) -> T:
        return u.c2f(b, x, c2, d, True, path, c3k=last)

    feats = _neck(b, p3, p4, p5, block, 11)
    return [u.detect(b, feats, "model.23", legacy=False)]
