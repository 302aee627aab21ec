"""RegNetX-400MF (timm ``regnetx_004``) in its ``torch.onnx.export`` layout (opset 17).

Topology (timm ``regnetx_004``: w0 24, wa 24.48, wm 2.54, depth 22, group width 16, bottleneck
ratio 1): stem Conv 3x3 stride 2 to 32 channels + Relu, four stages of X blocks with widths 32,
64, 160, 384 and depths 1, 2, 7, 12; each block is Conv 1x1 + Relu, grouped Conv 3x3 (groups =
width / 16, stride 2 in a stage's first block) + Relu, Conv 1x1, a shortcut (Conv 1x1 with the
block's stride where the shape changes, else the identity), ``Add`` and Relu. Head:
``GlobalAveragePool``, ``Flatten``, ``Gemm`` (``head.fc``). BatchNorm is folded into the convs
(``onnx::Conv_<n>``), as torch.onnx does in eval mode. Node names as timm's modules
(``/s2/b1/conv2/conv/Conv``, ``/s2/b1/conv2/bn/act/Relu``, ``/s2/b1/Add``, ``/s2/b1/act3/Relu``).

Input ``input`` float32 NCHW ``[1, 3, H, W]`` (ImageNet-normalised), output ``logits`` float32
``[1, 1000]``. Parameters (:func:`tcc_compiler.zoo._graph.weight_count`, BatchNorm folded):
5,139,176 (timm: 5,157,512; with BatchNorm folded 5,139,176, +0.00%).
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import RESIDUAL_GAMMA, Builder, T

#: (width, depth) of the four stages; every stage starts with stride 2
_STAGES_400MF = ((32, 1), (64, 2), (160, 7), (384, 12))
GROUP_WIDTH = 16


def _block(b: Builder, x: T, width: int, stride: int, scope: str) -> T:
    """timm ``Bottleneck`` of RegNet (bottleneck ratio 1, no squeeze-excitation)."""
    y = b.relu(b.conv(x, width, 1, 1, f"{scope}/conv1/conv"), f"{scope}/conv1/bn/act")
    y = b.conv(y, width, 3, stride, f"{scope}/conv2/conv", groups=width // GROUP_WIDTH)
    y = b.relu(y, f"{scope}/conv2/bn/act")
    y = b.conv(y, width, 1, 1, f"{scope}/conv3/conv", gamma=RESIDUAL_GAMMA)
    if stride != 1 or x.shape[1] != width:
        x = b.conv(x, width, 1, stride, f"{scope}/downsample/conv", pad=0)
    return b.relu(b.binary("Add", y, x, scope), f"{scope}/act3")


def record_regnetx_400mf(b: Builder) -> list[T]:
    """timm regnetx_004: stem, 22 X blocks in 4 stages, GlobalAveragePool, Flatten, Gemm."""
    x = b.relu(b.conv(b.input, 32, 3, 2, "/stem/conv"), "/stem/bn/act")
    for si, (width, depth) in enumerate(_STAGES_400MF, start=1):
        for bi in range(1, depth + 1):
            x = _block(b, x, width, 2 if bi == 1 else 1, f"/s{si}/b{bi}")
    x = b.flatten(b.gap(x, "/head/global_pool/pool"), "/head/global_pool/flatten")
    return [b.gemm(x, 1000, "/head/fc", ("head.fc.weight", "head.fc.bias"), out_name="logits")]
