"""MobileOne-S1 (timm ``mobileone_s1``) in its deployed, re-parameterised form, as
``torch.onnx.export`` writes it (opset 17) after timm's ``reparameterize_model``.

Re-parameterisation folds every MobileOne block's over-parameterised branches (k conv+BN
branches, the 1x1 scale branch and the identity BatchNorm) into one ``reparam_conv`` with a
bias, so the network is a plain chain: stem Conv 3x3 stride 2 to 64 channels + Relu, then per
block a depthwise Conv 3x3 (stride 2 in a stage's first block) + Relu and a pointwise Conv 1x1
+ Relu, in four stages of 96, 192, 512 and 1280 channels with 2, 8, 10 and 1 blocks; no
residual Adds remain. Head: ``GlobalAveragePool``, ``Flatten``, ``Gemm`` (``head.fc``).
Initializers carry the module names (``stages.1.3.reparam_conv.weight`` / ``.bias``), nodes
timm's scopes (``/stages/stages.1/stages.1.3/reparam_conv/Conv``, ``.../act/Relu``).

Input ``input`` float32 NCHW ``[1, 3, H, W]`` (ImageNet-normalised), output ``logits`` float32
``[1, 1000]``. Parameters (:func:`tcc_compiler.zoo._graph.weight_count`): 4,764,840 (timm after
``reparameterize_model``: 4,764,840).
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import Builder, T

#: (output channels, blocks) of the four stages of MobileOne-S1 (widths 64 * (1.5, 1.5, 2, 2.5)
#: of 64, 128, 256, 512); every stage starts with stride 2
_STAGES_S1 = ((96, 2), (192, 8), (512, 10), (1280, 1))


def _reparam_conv(b: Builder, x: T, out_ch: int, kernel: int, stride: int, path: str,
                  groups: int = 1) -> T:
    """One re-parameterised MobileOne conv (``<path>.reparam_conv``) + its Relu (``act``)."""
    scope = "/stem" if path == "stem" else _scope(path)
    y = b.conv(x, out_ch, kernel, stride, f"{scope}/reparam_conv", groups=groups,
               names=(f"{path}.reparam_conv.weight", f"{path}.reparam_conv.bias"))
    return b.relu(y, f"{scope}/act")


def _scope(path: str) -> str:
    """torch.onnx scope of module ``stages.i.j``: ``/stages/stages.i/stages.i.j``."""
    _, i, j = path.split(".")
    return f"/stages/stages.{i}/stages.{i}.{j}"


def record_mobileone_s1(b: Builder) -> list[T]:
    """timm mobileone_s1, re-parameterised: stem, 21 depthwise/pointwise block pairs, GAP,
    Flatten, Gemm."""
    x = _reparam_conv(b, b.input, 64, 3, 2, "stem")
    for si, (width, blocks) in enumerate(_STAGES_S1):
        j = 0
        for bi in range(blocks):
            cin = x.shape[1]
            x = _reparam_conv(b, x, cin, 3, 2 if bi == 0 else 1, f"stages.{si}.{j}",
                              groups=cin)
            x = _reparam_conv(b, x, width, 1, 1, f"stages.{si}.{j + 1}")
            j += 2
    x = b.flatten(b.gap(x, "/head/global_pool/pool"), "/head/global_pool/flatten")
    return [b.gemm(x, 1000, "/head/fc", ("head.fc.weight", "head.fc.bias"), out_name="logits")]
