"""ConvMixer-768/32 (timm ``convmixer_768_32``) in its ``torch.onnx.export`` layout (opset 17).

Topology (timm ``convmixer_768_32``: dim 768, depth 32, kernel size 7, patch size 7,
``act_layer=nn.ReLU``): patch embedding Conv 7x7 stride 7 (768 channels, bias) + Relu +
BatchNormalization, then 32 blocks of ``Residual(depthwise Conv 7x7 padding="same" + Relu +
BatchNormalization)`` (the ``Add``) followed by a pointwise Conv 1x1 + Relu +
BatchNormalization. Head: ``GlobalAveragePool``, ``Flatten``, ``Gemm`` (``head``). Every
BatchNorm follows a Relu, so torch.onnx cannot fold it: the file keeps 65 explicit
``BatchNormalization`` nodes (initializers ``blocks.3.1.weight`` ... ``running_var``), and the
depthwise convs carry ``auto_pad="SAME_UPPER"`` (what torch writes for ``padding="same"``).

Seeded weights: every conv's bias places its output channels on the calibration images as a
folded BatchNorm would (``bias="centred"``, beta mean :data:`~tcc_compiler.zoo._graph.BETA_MEAN`
standard deviations: about 84% of each channel passes the ReLU) and the residual branch's
BatchNorm has a small gamma (``BRANCH_GAMMA``), so the 32 blocks stay stable on photos; the
BatchNorm statistics are measured as for the other zoo models. With half of each channel
passing (a bias that only centred it, as before) the 64 ReLUs in series kept the network in
the chaotic regime of random networks ("Conditioning" in :mod:`tcc_compiler.zoo._graph`): a
perturbation of a photo at 40 dB below it reached the logits at 31.8 dB (float, ONNX Runtime),
the logits of some photos grew to 300 against the calibration's 3, and INT8 output SQNR ranged
from -9.5 to 20.7 dB; with the positive mean the same perturbation reaches them at 43-52 dB.

Not GELU / 9x9: those are timm's ``convmixer_1536_20`` and the paper's default; timm's 768/32
(the vendor zoo's row) uses ReLU and kernel 7, which is what the real export contains.

Input ``input`` float32 NCHW ``[1, 3, H, W]`` (ImageNet-normalised; H and W are cut to
multiples of 7 by the stem's floor rule), output ``logits`` float32 ``[1, 1000]``. Parameters
(:func:`tcc_compiler.zoo._graph.weight_count`, Conv and Gemm weights and biases):
21,010,408; timm: 21,110,248, of which 99,840 are BatchNorm gammas and betas.
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import GAMMA, RESIDUAL_GAMMA, Builder, T

DIM = 768
DEPTH = 32
KERNEL = 7
PATCH = 7
#: gamma of the residual branch's BatchNorm (fn.2): small, so the shortcut dominates as in a
#: trained network and the 32 blocks stay stable on inputs unlike the calibration images
BRANCH_GAMMA = RESIDUAL_GAMMA


def _conv_relu_bn(b: Builder, x: T, kernel: int, stride: int, scopes: tuple[str, str, str],
                  params: tuple[str, str], groups: int = 1, same: bool = False,
                  gamma: tuple[float, float] = GAMMA) -> T:
    """Conv (bias, no folded BN), Relu, BatchNormalization at the three module ``scopes``;
    ``params``: the conv's and the BatchNorm's initializer prefixes."""
    y = b.conv(x, DIM, kernel, stride, scopes[0], pad=0, groups=groups, gamma=None,
               bias="centred", names=(f"{params[0]}.weight", f"{params[0]}.bias"), same=same)
    return b.batchnorm(b.relu(y, scopes[1]), scopes[2], params[1], gamma)


def _seq(scope: str, local: str, path: str,
         first: int) -> tuple[tuple[str, str, str], tuple[str, str]]:
    """An ``nn.Sequential``'s members ``first`` .. ``first + 2``: their torch.onnx scopes
    (``<scope>/<local>.<k>``) and the initializer prefixes of the conv and the BatchNorm
    (``<path>.<k>``)."""
    ks = range(first, first + 3)
    scopes = tuple(f"{scope}/{local}.{k}" for k in ks)
    return scopes, (f"{path}.{first}", f"{path}.{first + 2}")


def record_convmixer_768_32(b: Builder) -> list[T]:
    """timm convmixer_768_32: patch stem, 32 mixer blocks, GAP, Flatten, Gemm."""
    x = _conv_relu_bn(b, b.input, PATCH, PATCH, *_seq("/stem", "stem", "stem", 0))
    for i in range(DEPTH):
        scope = f"/blocks/blocks.{i}"
        fn = _seq(f"{scope}/blocks.{i}.0/fn", "fn", f"blocks.{i}.0.fn", 0)
        y = _conv_relu_bn(b, x, KERNEL, 1, *fn, groups=DIM, same=True, gamma=BRANCH_GAMMA)
        x = b.binary("Add", y, x, f"{scope}/blocks.{i}.0")
        x = _conv_relu_bn(b, x, 1, 1, *_seq(scope, f"blocks.{i}", f"blocks.{i}", 1))
    x = b.flatten(b.gap(x, "/global_pool/pool"), "/global_pool/flatten")
    return [b.gemm(x, 1000, "/head", ("head.weight", "head.bias"), out_name="logits")]
