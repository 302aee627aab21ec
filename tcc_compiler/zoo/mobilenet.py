"""MobileNetV2 and MobileNetV3-Large in torchvision's ``torch.onnx.export`` layout (opset 17).

Topologies are ``torchvision.models.mobilenet_v2()`` and ``mobilenet_v3_large()`` (1000
classes). BatchNorm is folded into the convs (``onnx::Conv_<n>``), ReLU6 is ``Clip`` with
``Constant`` bounds 0 and 6, V3's activations are ``HardSwish`` / ``Relu`` and its
squeeze-excitation is ``GlobalAveragePool`` -> Conv 1x1 -> Relu -> Conv 1x1 -> ``HardSigmoid``
-> ``Mul`` of ``[N, C, 1, 1]`` by ``[N, C, H, W]``. Input ``input`` float32 NCHW
``[1, 3, H, W]`` (ImageNet-normalised), output ``logits`` float32 ``[1, 1000]``.

Parameters (:func:`tcc_compiler.zoo._graph.weight_count`, BatchNorm folded): MobileNetV2
3,487,816 (torchvision: 3,504,872, -0.49%), MobileNetV3-Large 5,470,832 (5,483,032, -0.22%).
"""

from __future__ import annotations

from tcc_compiler.zoo._graph import RESIDUAL_GAMMA, Builder, T


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def cna(b: Builder, x: T, c: int, k: int, s: int, scope: str, act: str | None, g: int = 1,
        gamma: tuple[float, float] | None = None) -> T:
    """torchvision ``Conv2dNormActivation`` at module scope ``scope`` (e.g.
    ``/features/features.0``): Conv at ``<scope>/<name>.0``, activation at ``<scope>/<name>.2``
    (``relu6``, ``relu``, ``hardswish``, ``silu`` or None)."""
    name = scope.rsplit("/", 1)[1]
    kw = {} if gamma is None else {"gamma": gamma}
    y = b.conv(x, c, k, s, f"{scope}/{name}.0", groups=g, **kw)
    return act_fn(b, y, f"{scope}/{name}.2", act)


def act_fn(b: Builder, x: T, scope: str, act: str | None) -> T:
    """Apply a named activation as torch.onnx writes it."""
    if act is None:
        return x
    return {"relu6": b.relu6, "relu": b.relu, "hardswish": b.hardswish, "silu": b.silu}[act](
        x, scope)


def _head(b: Builder, x: T, gap_scope: str, classifier: str) -> T:
    x = b.flatten(b.gap(x, gap_scope), "")
    return b.gemm(x, 1000, f"/classifier/{classifier}",
                  (f"{classifier}.weight", f"{classifier}.bias"), out_name="logits")


# t (expansion), c (output channels), n (repeats), s (stride of the first)
_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))


def mbv2_features(b: Builder, x: T, keep: dict[int, str] | None = None) -> dict[str, T]:
    """MobileNetV2 ``features`` 0..18 (torchvision layout); returns the final tensor as
    ``"out"`` and, for ``keep = {block_index: key}``, the output of that block's expansion
    (SSDLite's first source layer)."""
    found: dict[str, T] = {}
    x = cna(b, x, 32, 3, 2, "/features/features.0", "relu6")
    idx, cin = 1, 32
    for t, c, n, s in _V2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            sc = f"/features/features.{idx}/conv"
            hidden = cin * t
            y, j = x, 0
            if t != 1:
                y = cna(b, y, hidden, 1, 1, f"{sc}/conv.0", "relu6")
                if keep and idx in keep:
                    found[keep[idx]] = y
                j = 1
            y = cna(b, y, hidden, 3, stride, f"{sc}/conv.{j}", "relu6", g=hidden)
            res = stride == 1 and cin == c
            y = b.conv(y, c, 1, 1, f"{sc}/conv.{j + 1}", **({"gamma": RESIDUAL_GAMMA} if res
                                                             else {}))
            x = b.binary("Add", x, y, f"/features/features.{idx}") if res else y
            idx, cin = idx + 1, c
    found["out"] = cna(b, x, 1280, 1, 1, "/features/features.18", "relu6")
    return found


def record_mobilenet_v2(b: Builder) -> list[T]:
    """torchvision MobileNetV2: 17 inverted residual blocks (ReLU6, depthwise 3x3), 1x1 to
    1280, GlobalAveragePool, Flatten, Gemm (classifier.1)."""
    x = mbv2_features(b, b.input)["out"]
    return [_head(b, x, "", "classifier.1")]


# input, kernel, expanded, output, SE, activation, stride
_V3_LARGE = ((16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2),
             (24, 3, 72, 24, False, "relu", 1), (24, 5, 72, 40, True, "relu", 2),
             (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
             (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
             (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
             (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
             (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
             (160, 5, 960, 160, True, "hardswish", 1))


def squeeze_excite(b: Builder, x: T, squeeze: int, scope: str, path: str, act: str,
                   gate: str) -> T:
    """torchvision ``SqueezeExcitation``: GlobalAveragePool, fc1 (Conv 1x1 + bias), ``act``,
    fc2, ``gate`` (``hardsigmoid`` or ``sigmoid``) at ``scale_activation``, Mul(scale, x)."""
    c = x.shape[1]
    s = b.gap(x, f"{scope}/avgpool")
    s = b.conv(s, squeeze, 1, 1, f"{scope}/fc1", gamma=None,
               names=(f"{path}.fc1.weight", f"{path}.fc1.bias"))
    s = act_fn(b, s, f"{scope}/activation", act)
    s = b.conv(s, c, 1, 1, f"{scope}/fc2", gamma=None,
               names=(f"{path}.fc2.weight", f"{path}.fc2.bias"))
    gate_fn = b.hardsigmoid if gate == "hardsigmoid" else b.sigmoid
    s = gate_fn(s, f"{scope}/scale_activation")
    return b.binary("Mul", s, x, scope)


def record_mobilenet_v3_large(b: Builder) -> list[T]:
    """torchvision MobileNetV3-Large: HardSwish stem, 15 inverted residual blocks (8 with
    squeeze-excitation), 1x1 to 960, GAP, Gemm 1280 + HardSwish, Gemm 1000."""
    x = cna(b, b.input, 16, 3, 2, "/features/features.0", "hardswish")
    for i, (cin, k, exp, cout, se, act, s) in enumerate(_V3_LARGE, start=1):
        sc = f"/features/features.{i}/block"
        y, j = x, 0
        if exp != cin:
            y = cna(b, y, exp, 1, 1, f"{sc}/block.0", act)
            j = 1
        y = cna(b, y, exp, k, s, f"{sc}/block.{j}", act, g=exp)
        if se:
            j += 1
            y = squeeze_excite(b, y, _make_divisible(exp // 4), f"{sc}/block.{j}",
                               f"features.{i}.block.{j}", "relu", "hardsigmoid")
        res = s == 1 and cin == cout
        y = cna(b, y, cout, 1, 1, f"{sc}/block.{j + 1}", None,
                gamma=RESIDUAL_GAMMA if res else None)
        x = b.binary("Add", y, x, f"/features/features.{i}") if res else y
    x = cna(b, x, 960, 1, 1, "/features/features.16", "hardswish")
    x = b.flatten(b.gap(x, "/avgpool"), "")
    x = b.gemm(x, 1280, "/classifier/classifier.0", ("classifier.0.weight", "classifier.0.bias"),
               logits_std=1.0)
    x = b.hardswish(x, "/classifier/classifier.1")
    return [b.gemm(x, 1000, "/classifier/classifier.3",
                   ("classifier.3.weight", "classifier.3.bias"), out_name="logits")]
