"""Building blocks of the ultralytics/YOLOv5 networks, recorded in their ONNX export layout.

ultralytics fuses every ``Conv`` (Conv2d + BatchNorm2d + SiLU) before export, so each appears as
``/model.<i>/.../conv/Conv`` (weights ``model.<i>...conv.weight`` / ``.bias``) followed by
``/.../act/Sigmoid`` and ``/.../act/Mul`` (SiLU as torch.onnx opset 17 writes it). Block
definitions follow ``ultralytics/nn/modules/block.py`` (C2f, C3, C3k, C3k2, SPPF, C2PSA) and
``head.py`` (Detect with DFL); every tensor is NCHW float32.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.zoo._graph import GAMMA, RESIDUAL_GAMMA, Builder, T

REG_MAX = 16  # DFL bins per box side
NUM_CLASSES = 80
STRIDES = (8, 16, 32)


def scope_of(path: str) -> str:
    """``model.2.m.0.cv1`` -> ``/model.2/m.0/cv1`` (a module called from its parent's forward)."""
    out: list[str] = []
    for part in path.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}.{part}"
        else:
            out.append(part)
    return "".join(f"/{p}" for p in out)


def conv(b: Builder, x: T, c2: int, k: int, s: int, path: str, *, act: bool = True,
         g: int = 1, pad: int | None = None, gamma: tuple[float, float] = GAMMA,
         scope: str | None = None) -> T:
    """ultralytics ``Conv(c1, c2, k, s, g)``: fused conv with bias, then SiLU unless ``act``
    is False. ``scope`` overrides the scope derived from ``path`` (Sequential children)."""
    sc = scope or scope_of(path)
    y = b.conv(x, c2, k, s, f"{sc}/conv", pad=pad, groups=g, gamma=gamma,
               names=(f"{path}.conv.weight", f"{path}.conv.bias"))
    return b.silu(y, f"{sc}/act") if act else y


def bottleneck(b: Builder, x: T, c2: int, shortcut: bool, e: float, path: str,
               k1: int = 3, scope: str | None = None) -> T:
    """``Bottleneck(c1, c2, shortcut, k=(k1, 3), e)``: cv1 k1xk1, cv2 3x3, residual Add when
    ``shortcut`` and c1 == c2. (C2f/C3k use k1 = 3, YOLOv5's C3 uses k1 = 1.) ``scope``: the
    torch scope when it is not ``scope_of(path)`` (a child of an ``nn.Sequential``)."""
    sc = scope or scope_of(path)
    hidden = int(c2 * e)
    add = shortcut and x.shape[1] == c2
    y = conv(b, x, hidden, k1, 1, f"{path}.cv1", scope=f"{sc}/cv1")
    y = conv(b, y, c2, 3, 1, f"{path}.cv2", gamma=RESIDUAL_GAMMA if add else GAMMA,
             scope=f"{sc}/cv2")
    return b.binary("Add", x, y, sc) if add else y


def c2f(b: Builder, x: T, c2: int, n: int, shortcut: bool, path: str, e: float = 0.5,
        c3k: bool | None = None) -> T:
    """``C2f`` (``c3k`` None) or ``C3k2`` (c3k False: Bottleneck e=0.5; True: C3k with two
    bottlenecks): cv1 1x1 to 2c, Split in two, n blocks on the last part, Concat, cv2 1x1."""
    c = int(c2 * e)
    y = conv(b, x, 2 * c, 1, 1, f"{path}.cv1")
    parts = b.split(y, [c, c], 1, scope_of(path))
    for i in range(n):
        p = f"{path}.m.{i}"
        if c3k is None:
            parts.append(bottleneck(b, parts[-1], c, shortcut, 1.0, p))
        elif c3k:
            parts.append(c3(b, parts[-1], c, 2, shortcut, p, k1=3))
        else:
            parts.append(bottleneck(b, parts[-1], c, shortcut, 0.5, p))
    y = b.concat(parts, 1, scope_of(path))
    return conv(b, y, c2, 1, 1, f"{path}.cv2")


def c3(b: Builder, x: T, c2: int, n: int, shortcut: bool, path: str, k1: int = 1) -> T:
    """``C3`` (YOLOv5; ``k1 = 3`` gives ultralytics' ``C3k``): cv1 and cv2 1x1 to c2/2,
    n bottlenecks (e=1.0) on cv1's output, Concat with cv2's, cv3 1x1."""
    c_ = int(c2 * 0.5)
    y = conv(b, x, c_, 1, 1, f"{path}.cv1")
    for i in range(n):
        y = bottleneck(b, y, c_, shortcut, 1.0, f"{path}.m.{i}", k1,
                       scope=f"{scope_of(path)}/m/m.{i}")  # m is an nn.Sequential
    z = conv(b, x, c_, 1, 1, f"{path}.cv2")
    return conv(b, b.concat([y, z], 1, scope_of(path)), c2, 1, 1, f"{path}.cv3")


def sppf(b: Builder, x: T, c2: int, path: str) -> T:
    """``SPPF(c1, c2, k=5)``: cv1 1x1 to c1/2, three MaxPool k5 s1 p2 in a chain, Concat of the
    four, cv2 1x1."""
    y = conv(b, x, x.shape[1] // 2, 1, 1, f"{path}.cv1")
    ys = [y]
    for i in range(3):
        ys.append(b.maxpool(ys[-1], 5, 1, 2, scope_of(f"{path}.m") + ("" if i == 0 else f"_{i}")))
    return conv(b, b.concat(ys, 1, scope_of(path)), c2, 1, 1, f"{path}.cv2")


def c2psa(b: Builder, x: T, n: int, path: str) -> T:
    """``C2PSA(c1, c1, n, e=0.5)`` (YOLO11): cv1 1x1, Split, n PSABlocks (multi-head attention
    with MatMul of two activations and Softmax, then a 2-conv FFN, both residual), Concat, cv2."""
    c1 = x.shape[1]
    c = c1 // 2
    y = conv(b, x, 2 * c, 1, 1, f"{path}.cv1")
    a, z = b.split(y, [c, c], 1, scope_of(path))
    for i in range(n):
        p = f"{path}.m.{i}"
        sc = f"{scope_of(path)}/m/m.{i}"  # C2PSA.m is an nn.Sequential
        z = b.binary("Add", z, _attention(b, z, f"{p}.attn", c // 64, f"{sc}/attn"), sc)
        f = conv(b, z, 2 * c, 1, 1, f"{p}.ffn.0", scope=f"{sc}/ffn/ffn.0")
        f = conv(b, f, c, 1, 1, f"{p}.ffn.1", act=False, gamma=RESIDUAL_GAMMA,
                 scope=f"{sc}/ffn/ffn.1")
        z = b.binary("Add", z, f, sc)
    return conv(b, b.concat([a, z], 1, scope_of(path)), c1, 1, 1, f"{path}.cv2")


def _attention(b: Builder, x: T, path: str, heads: int, sc: str) -> T:
    """ultralytics ``Attention(dim, num_heads, attn_ratio=0.5)`` on NCHW ``[1, C, H, W]`` at
    torch scope ``sc``."""
    _, ch, h, w = x.shape
    head_dim = ch // heads
    key_dim = head_dim // 2
    qkv = conv(b, x, ch + 2 * key_dim * heads, 1, 1, f"{path}.qkv", act=False,
               scope=f"{sc}/qkv")
    qkv = b.reshape(qkv, [1, heads, 2 * key_dim + head_dim, h * w], sc)
    q, kk, v = b.split(qkv, [key_dim, key_dim, head_dim], 2, sc)
    q = b.binary_const("Mul", q, np.float32(key_dim ** -0.5), sc)
    attn = b.softmax(b.matmul(b.transpose(q, [0, 1, 3, 2], sc), kk, sc), -1, sc)
    y = b.matmul(v, b.transpose(attn, [0, 1, 3, 2], sc), sc)
    y = b.reshape(y, [1, ch, h, w], sc)
    pe = conv(b, b.reshape(v, [1, ch, h, w], sc), ch, 3, 1, f"{path}.pe", act=False, g=ch,
              scope=f"{sc}/pe")
    return conv(b, b.binary("Add", y, pe, sc), ch, 1, 1, f"{path}.proj", act=False,
                gamma=RESIDUAL_GAMMA, scope=f"{sc}/proj")


def _seq_conv(b: Builder, x: T, c2: int, k: int, path: str, seq: str, idx: str,
              g: int = 1) -> T:
    """A Conv that is child ``idx`` (e.g. ``0`` or ``0.1``) of Sequential ``seq`` (``cv2.0``)
    in the head: torch scopes it ``/model.22/cv2.0/cv2.0.0``."""
    parts = idx.split(".")
    scope = f"{scope_of(path)}/{seq}"
    for j in range(len(parts)):
        scope += f"/{seq}.{'.'.join(parts[:j + 1])}"
    return conv(b, x, c2, k, 1, f"{path}.{seq}.{idx}", g=g, scope=scope)


def detect(b: Builder, feats: list[T], path: str, legacy: bool) -> T:
    """ultralytics ``Detect(nc=80)`` up to its export output ``[1, 4 + 80, anchors]``.

    Per level: box branch (2 Conv 3x3 + Conv2d 1x1 to 64 = 4 sides x 16 DFL bins) and class
    branch (YOLOv8, ``legacy``: 2 Conv 3x3; YOLO11: DWConv 3x3 + Conv 1x1 twice) + Conv2d 1x1 to
    80. Then, as ultralytics 8.4 exports it: Reshape of every level's boxes to ``[1, 64, -1]``
    and classes to ``[1, 80, -1]``, two Concats along the anchors, DFL (Reshape, Transpose,
    Softmax, fixed Conv 1x1 with weights arange(16), Reshape), dist2bbox with the anchors as a
    constant (Slice x2, Sub, Add, Add, Sub, Div, Concat), Mul by the strides, Sigmoid of the
    class scores, Concat. Output ``output0`` float32 ``[1, 84, sum(H_i*W_i)]`` (8400 at
    640x640): cx, cy, w, h in input pixels, then 80 class probabilities.
    """
    c_box = max(16, feats[0].shape[1] // 4, REG_MAX * 4)
    c_cls = max(feats[0].shape[1], min(NUM_CLASSES, 100))
    sc = scope_of(path)
    boxes, classes = [], []
    for i, x in enumerate(feats):
        y = _seq_conv(b, x, c_box, 3, path, f"cv2.{i}", "0")
        y = _seq_conv(b, y, c_box, 3, path, f"cv2.{i}", "1")
        boxes.append(b.conv(y, 4 * REG_MAX, 1, 1, f"{sc}/cv2.{i}/cv2.{i}.2", gamma=(1.0, 1.0),
                            beta_mean=0.0,
                            names=(f"{path}.cv2.{i}.2.weight", f"{path}.cv2.{i}.2.bias")))
        if legacy:
            z = _seq_conv(b, x, c_cls, 3, path, f"cv3.{i}", "0")
            z = _seq_conv(b, z, c_cls, 3, path, f"cv3.{i}", "1")
        else:
            z = _seq_conv(b, x, x.shape[1], 3, path, f"cv3.{i}", "0.0", g=x.shape[1])
            z = _seq_conv(b, z, c_cls, 1, path, f"cv3.{i}", "0.1")
            z = _seq_conv(b, z, c_cls, 3, path, f"cv3.{i}", "1.0", g=c_cls)
            z = _seq_conv(b, z, c_cls, 1, path, f"cv3.{i}", "1.1")
        classes.append(b.conv(z, NUM_CLASSES, 1, 1, f"{sc}/cv3.{i}/cv3.{i}.2",
                              gamma=(1.0, 1.0), beta_mean=0.0,
                              names=(f"{path}.cv3.{i}.2.weight", f"{path}.cv3.{i}.2.bias")))
    box = b.concat([b.reshape(y, [1, 4 * REG_MAX, -1], sc) for y in boxes], -1, sc)
    cls = b.concat([b.reshape(y, [1, NUM_CLASSES, -1], sc) for y in classes], -1, sc)
    dist = _dfl(b, box, f"{path}.dfl")
    anchors, strides = _anchors([f.shape[2:] for f in feats])
    for op in ("Add", "Div", "Mul", "Mul"):  # torch names chunk()'s index arithmetic with
        b.node_name(sc, op)  # these before constant folding removes it: keep the numbering
    lt = b.slice(dist, 0, 2, 1, sc)
    rb = b.slice(dist, 2, 4, 1, sc)
    anc = b.const(sc, anchors)
    x1y1 = b.op("Sub", [anc, lt], sc, anchors - lt.value)
    x2y2 = b.op("Add", [anc, rb], sc, anchors + rb.value)
    c_xy = b.binary_const("Div", b.binary("Add", x1y1, x2y2, sc), np.float32(2.0), sc)
    wh = b.binary("Sub", x2y2, x1y1, sc)
    dbox = b.binary_const("Mul", b.concat([c_xy, wh], 1, sc), strides, sc)
    return b.concat([dbox, b.sigmoid(cls, sc)], 1, sc, out_name="output0")


def _dfl(b: Builder, box: T, path: str) -> T:
    """``DFL(16)``: expected value of a 16-bin softmax per box side, as a fixed 1x1 conv."""
    sc = scope_of(path)
    a = box.shape[2]
    x = b.reshape(box, [1, 4, REG_MAX, a], sc)
    x = b.softmax(b.transpose(x, [0, 2, 1, 3], sc), 1, sc)
    w = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    y = b.op("Conv", [x, b.init(f"{path}.conv.weight", w)], f"{sc}/conv",
             np.einsum("nchw,c->nhw", x.value, w.ravel())[:, None],
             dilations=[1, 1], group=1, kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])
    return b.reshape(y, [1, 4, a], sc)


def _anchors(sizes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``make_anchors(offset=0.5)``: anchor centres ``[1, 2, A]`` in grid units and strides
    ``[1, A]`` (pixels) for the levels' (H, W) at strides 8, 16, 32."""
    points, strides = [], []
    for (h, w), s in zip(sizes, STRIDES, strict=True):
        sy, sx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack([sx, sy], -1).reshape(-1, 2))
        strides.append(np.full(h * w, s))
    anchors = np.concatenate(points).T[None].astype(np.float32)
    return anchors, np.concatenate(strides)[None].astype(np.float32)
