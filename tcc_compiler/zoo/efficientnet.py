"""EfficientNet-Lite0 (timm) and EfficientNetV2-S (torchvision) in their torch.onnx layouts.

* ``efficientnet-lite0``: timm ``tf_efficientnet_lite0``: ReLU6 (``Clip`` with ``Constant``
  bounds), depthwise convs, no squeeze-excitation, fixed 32-channel stem and 1280-channel head,
  TensorFlow "SAME" padding, which timm exports as a ``Pad`` before every stride-2 conv (written
  here with its constant pads, i.e. what constant folding leaves of timm's dynamic padding
  arithmetic), names ``/blocks/blocks.1/blocks.1.0/conv_dw/Conv``.
* ``efficientnet-v2-s``: torchvision ``efficientnet_v2_s``: SiLU (``Sigmoid`` + ``Mul``), fused
  MBConv in stages 1-3, MBConv with squeeze-excitation (SiLU, ``Sigmoid`` gate) in 4-6.

BatchNorm is folded into the convs. Input ``input`` float32 NCHW ``[1, 3, H, W]``
(ImageNet-normalised), output ``logits`` float32 ``[1, 1000]``. Parameters
(:func:`tcc_compiler.zoo._graph.weight_count`): Lite0 4,631,000 (timm: 4,652,008, -0.45%),
V2-S 21,381,552 (torchvision: 21,458,488, -0.36%); the differences are BatchNorm's two affine
parameters per channel becoming one folded bias.
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import RESIDUAL_GAMMA, Builder, T
from tcc_compiler.zoo.mobilenet import cna, squeeze_excite

# block type, repeats, kernel, stride, expansion, output channels (timm arch_def of lite0)
_LITE0 = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40),
          ("ir", 3, 3, 2, 6, 80), ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192),
          ("ir", 1, 3, 1, 6, 320))


def _timm_conv(b: Builder, x: T, c: int, k: int, s: int, conv_scope: str, bn_scope: str,
               relu6: bool, g: int = 1, residual: bool = False) -> T:
    """timm ``create_conv2d(padding='same')`` + ``BatchNormAct2d`` (folded): Pad + Conv pads 0
    at stride 2, symmetric pads at stride 1; ReLU6 at ``<bn_scope>/act``."""
    if s > 1:
        x = b.pad_same(x, k, s, conv_scope)
        pad = 0
    else:
        pad = k // 2
    kw = {"gamma": RESIDUAL_GAMMA} if residual else {}
    y = b.conv(x, c, k, s, conv_scope, pad=pad, groups=g, **kw)
    return b.relu6(y, f"{bn_scope}/act") if relu6 else y


def record_lite0(b: Builder) -> list[T]:
    """timm tf_efficientnet_lite0: stem 3x3 s2 (32), 7 stages (16 blocks), head 1x1 to 1280,
    GlobalAveragePool, Flatten, Gemm."""
    x = _timm_conv(b, b.input, 32, 3, 2, "/conv_stem", "/bn1", True)
    cin = 32
    for si, (kind, reps, k, s, e, c) in enumerate(_LITE0):
        for bi in range(reps):
            sc = f"/blocks/blocks.{si}/blocks.{si}.{bi}"
            stride = s if bi == 0 else 1
            res = stride == 1 and cin == c
            if kind == "ds":
                y = _timm_conv(b, x, cin, k, stride, f"{sc}/conv_dw", f"{sc}/bn1", True, g=cin)
                y = _timm_conv(b, y, c, 1, 1, f"{sc}/conv_pw", f"{sc}/bn2", False,
                               residual=res)
            else:
                hidden = cin * e
                y = _timm_conv(b, x, hidden, 1, 1, f"{sc}/conv_pw", f"{sc}/bn1", True)
                y = _timm_conv(b, y, hidden, k, stride, f"{sc}/conv_dw", f"{sc}/bn2", True,
                               g=hidden)
                y = _timm_conv(b, y, c, 1, 1, f"{sc}/conv_pwl", f"{sc}/bn3", False,
                               residual=res)
            x = b.binary("Add", y, x, sc) if res else y
            cin = c
    x = _timm_conv(b, x, 1280, 1, 1, "/conv_head", "/bn2", True)
    x = b.flatten(b.gap(x, "/global_pool/pool"), "/global_pool/flatten")
    return [b.gemm(x, 1000, "/classifier", ("classifier.weight", "classifier.bias"),
                   out_name="logits")]


# fused?, expansion, kernel, stride, input, output, layers (torchvision _efficientnet_conf)
_V2_S = ((True, 1, 3, 1, 24, 24, 2), (True, 4, 3, 2, 24, 48, 4), (True, 4, 3, 2, 48, 64, 4),
         (False, 4, 3, 2, 64, 128, 6), (False, 6, 3, 1, 128, 160, 9),
         (False, 6, 3, 2, 160, 256, 15))


def _v2_block(b: Builder, x: T, fused: bool, e: int, k: int, s: int, cout: int,
              sc: str, path: str) -> T:
    """torchvision FusedMBConv / MBConv (SE squeeze = input channels // 4), + residual."""
    cin = x.shape[1]
    hidden = cin * e
    res = s == 1 and cin == cout
    gam = RESIDUAL_GAMMA if res else None
    if fused and hidden == cin:
        y = cna(b, x, cout, k, s, f"{sc}/block/block.0", "silu", gamma=gam)
    elif fused:
        y = cna(b, x, hidden, k, s, f"{sc}/block/block.0", "silu")
        y = cna(b, y, cout, 1, 1, f"{sc}/block/block.1", None, gamma=gam)
    else:
        y = cna(b, x, hidden, 1, 1, f"{sc}/block/block.0", "silu")
        y = cna(b, y, hidden, k, s, f"{sc}/block/block.1", "silu", g=hidden)
        y = squeeze_excite(b, y, max(1, cin // 4), f"{sc}/block/block.2", f"{path}.block.2",
                           "silu", "sigmoid")
        y = cna(b, y, cout, 1, 1, f"{sc}/block/block.3", None, gamma=gam)
    return b.binary("Add", y, x, sc) if res else y


def record_v2_s(b: Builder) -> list[T]:
    """torchvision EfficientNetV2-S: stem 3x3 s2 (24), 6 stages (40 blocks), 1x1 to 1280,
    GlobalAveragePool, Flatten, Gemm (classifier.1)."""
    x = cna(b, b.input, 24, 3, 2, "/features/features.0", "silu")
    for si, (fused, e, k, s, _, cout, layers) in enumerate(_V2_S, start=1):
        for bi in range(layers):
            sc = f"/features/features.{si}/features.{si}.{bi}"
            x = _v2_block(b, x, fused, e, k, s if bi == 0 else 1, cout, sc,
                          f"features.{si}.{bi}")
    x = cna(b, x, 1280, 1, 1, "/features/features.7", "silu")
    x = b.flatten(b.gap(x, "/avgpool"), "")
    return [b.gemm(x, 1000, "/classifier/classifier.1",
                   ("classifier.1.weight", "classifier.1.bias"), out_name="logits")]
