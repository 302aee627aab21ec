"""SSDLite with a MobileNetV2 backbone, as the vendor's VOC 300x300 row (qfgaohao/pytorch-ssd
``mb2-ssd-lite``, exported with ``is_test=True``: scores and decoded boxes, before NMS).

Backbone: MobileNetV2 (width 1.0, ReLU6 as ``Clip``); sources: the expansion output of block 14
(576 channels, 19x19 at 300x300) and the last 1x1 conv (1280, 10x10); extras: four inverted
residuals with stride 2 (1280->512->256->256->64); per level a classification and a regression
head (SeparableConv: depthwise 3x3 + BN + ReLU6 + Conv 1x1; the last level a plain Conv 1x1),
6 priors per cell, 21 VOC classes. Each head's output is Transposed to NHWC and Reshaped to
``[1, -1, 21]`` / ``[1, -1, 4]``, Concatenated over the levels; scores go through Softmax, the
locations are decoded against the SSD priors (centre variance 0.1, size variance 0.2: Slice,
Mul, Add, Exp) and turned into corners (Slice, Div, Sub, Add, Concat).

Input ``input`` float32 NCHW ``[1, 3, H, W]`` (ImageNet-normalised); outputs ``scores`` float32
``[1, P, 21]`` and ``boxes`` float32 ``[1, P, 4]`` (x1, y1, x2, y2 in [0, 1] units of the input),
P = 6 * (sum of the six feature-map areas) = 3000 at 300x300. Parameters
(:func:`tcc_compiler.zoo._graph.weight_count`, BatchNorm folded): 3,357,412, the count of the
published definition with BatchNorm folded (no package on PyPI ships this model; torchvision's
``ssdlite320_mobilenet_v3_large``, 3,440,060 parameters, is the nearest packaged relative).
"""

from __future__ import annotations

import itertools

import numpy as np

from tcc_compiler.zoo._graph import RESIDUAL_GAMMA, Builder, T

NUM_CLASSES = 21
INT64_MAX = 2**63 - 1  # torch writes an open slice end ``[2:]`` as this
CENTER_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
#: (nominal feature map size at 300 px, shrinkage, min box, max box) per level, and the
#: aspect ratios (2, 3): qfgaohao's mobilenetv1_ssd_config
_SPECS = ((19, 16, 60, 105), (10, 32, 105, 150), (5, 64, 150, 195), (3, 100, 195, 240),
          (2, 150, 240, 285), (1, 300, 285, 330))
_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
       (6, 160, 3, 2), (6, 320, 1, 1))
_EXTRAS = ((512, 0.2), (256, 0.25), (256, 0.5), (64, 0.25))


def _cbr(b: Builder, x: T, c: int, k: int, s: int, conv_scope: str, act_scope: str | None,
         g: int = 1, residual: bool = False) -> T:
    y = b.conv(x, c, k, s, conv_scope, groups=g, **({"gamma": RESIDUAL_GAMMA} if residual
                                                     else {}))
    return b.relu6(y, act_scope) if act_scope else y


def _inverted(b: Builder, x: T, c: int, s: int, e: float, sc: str, tap: list | None = None) -> T:
    """qfgaohao ``InvertedResidual``: ``conv`` = [pw, BN, ReLU6,] dw, BN, ReLU6, pw, BN."""
    cin = x.shape[1]
    hidden = round(cin * e)
    res = s == 1 and cin == c
    y, j = x, 0
    if e != 1:
        y = _cbr(b, y, hidden, 1, 1, f"{sc}/conv/conv.0", f"{sc}/conv/conv.2")
        if tap is not None:
            tap.append(y)
        j = 3
    y = _cbr(b, y, hidden, 3, s, f"{sc}/conv/conv.{j}", f"{sc}/conv/conv.{j + 2}", g=hidden)
    y = _cbr(b, y, c, 1, 1, f"{sc}/conv/conv.{j + 3}", None, residual=res)
    return b.binary("Add", x, y, sc) if res else y


def _head(b: Builder, x: T, out_ch: int, name: str, last: bool) -> T:
    if last:
        return b.conv(x, out_ch, 1, 1, f"/{name}", gamma=(1.0, 1.0), beta_mean=0.0,
                      names=(f"{name}.weight", f"{name}.bias"))
    c = x.shape[1]
    y = _cbr(b, x, c, 3, 1, f"/{name}/{name}.0", f"/{name}/{name}.2", g=c)
    return b.conv(y, out_ch, 1, 1, f"/{name}/{name}.3", gamma=(1.0, 1.0), beta_mean=0.0,
                  names=(f"{name}.3.weight", f"{name}.3.bias"))


def priors(sizes: list[tuple[int, int]]) -> np.ndarray:
    """SSD priors ``[P, 4]`` (cx, cy, w, h in [0, 1]) for the levels' (H, W): qfgaohao's
    ``generate_ssd_priors`` (square min box, square sqrt(min*max) box, ratios 2 and 3 both
    ways, clipped to [0, 1]); exact at 300x300, the grid scaled to other sizes."""
    out = []
    for (h, w), (nominal, shrink, lo, hi) in zip(sizes, _SPECS, strict=True):
        cells = (300 / shrink) / nominal  # 18.75 / 19 at level 0: the config's cell pitch
        for j, i in itertools.product(range(h), range(w)):
            cx, cy = (i + 0.5) / (w * cells), (j + 0.5) / (h * cells)
            size, big = lo / 300, np.sqrt(lo * hi) / 300
            boxes = [(size, size), (big, big)]
            for r in (2, 3):
                q = np.sqrt(r)
                boxes += [(size * q, size / q), (size / q, size * q)]
            out += [(cx, cy, bw, bh) for bw, bh in boxes]
    return np.clip(np.array(out, np.float32), 0.0, 1.0)


def _decode(b: Builder, loc: T, pri: np.ndarray) -> T:
    """convert_locations_to_boxes then center_form_to_corner_form."""
    pri = pri[None]
    xy = b.binary_const("Mul", b.slice(loc, 0, 2, -1, ""), np.float32(CENTER_VARIANCE), "")
    xy = b.binary_const("Add", b.binary_const("Mul", xy, pri[..., 2:], ""), pri[..., :2], "")
    wh = b.binary_const("Mul", b.slice(loc, 2, INT64_MAX, -1, ""), np.float32(SIZE_VARIANCE), "")
    wh = b.op("Exp", [wh], "", np.exp(wh.value))
    wh = b.binary_const("Mul", wh, pri[..., 2:], "")
    box = b.concat([xy, wh], 2, "")
    c = b.slice(box, 0, 2, -1, "")
    half = b.binary_const("Div", b.slice(box, 2, INT64_MAX, -1, ""), np.float32(2.0), "")
    c2 = b.slice(box, 0, 2, -1, "")
    half2 = b.binary_const("Div", b.slice(box, 2, INT64_MAX, -1, ""), np.float32(2.0), "")
    return b.concat([b.binary("Sub", c, half, ""), b.binary("Add", c2, half2, "")], 2, "",
                    out_name="boxes")


def record_ssdlite_mbv2(b: Builder) -> list[T]:
    """MobileNetV2 SSDLite, 21 classes: see the module docstring."""
    x = _cbr(b, b.input, 32, 3, 2, "/base_net.0/base_net.0.0", "/base_net.0/base_net.0.2")
    idx, sources, tap = 1, [], []
    for t, c, n, s in _V2:
        for i in range(n):
            x = _inverted(b, x, c, s if i == 0 else 1, t, f"/base_net.{idx}",
                          tap if idx == 14 else None)
            if idx == 14:
                sources.append(tap[0])
            idx += 1
    x = _cbr(b, x, 1280, 1, 1, "/base_net.18/base_net.18.0", "/base_net.18/base_net.18.2")
    sources.append(x)
    for i, (c, e) in enumerate(_EXTRAS):
        x = _inverted(b, x, c, 2, e, f"/extras.{i}")
        sources.append(x)
    scores, locs = [], []
    for i, src in enumerate(sources):
        last = i == len(sources) - 1
        conf = _head(b, src, 6 * NUM_CLASSES, f"classification_headers.{i}", last)
        loc = _head(b, src, 6 * 4, f"regression_headers.{i}", last)
        scores.append(b.reshape(b.transpose(conf, [0, 2, 3, 1], ""), [1, -1, NUM_CLASSES], ""))
        locs.append(b.reshape(b.transpose(loc, [0, 2, 3, 1], ""), [1, -1, 4], ""))
    conf = b.softmax(b.concat(scores, 1, ""), 2, "", out_name="scores")
    loc = b.concat(locs, 1, "")
    return [conf, _decode(b, loc, priors([s.shape[2:] for s in sources]))]
