"""Synthetic-weight ResNets written the way real exporters write them.

Three graph styles are produced from one recorded network description:

* **torch, folded** (``resnet18``, ``resnet50``): torchvision v1.5 topology as ``torch.onnx.export``
  (eval mode, constant folding, opset 17) writes it: BatchNorm folded into Conv weight + bias,
  node names ``/layer1/layer1.0/conv1/Conv``, tensors ``<node>_output_0``, folded parameters named
  ``onnx::Conv_<n>``.
* **torch, unfolded** (``resnet50-bn``): the same network without constant folding: bias-free Conv
  followed by ``BatchNormalization`` with ``<module>.weight/.bias/.running_mean/.running_var``.
* **MXNet model zoo** (``resnet50-v2``): pre-activation ResNet-50 v2 as in ``resnet50-v2-7.onnx``
  (IR version 3, opset 7, every initializer also listed as a graph input, ``resnetv24_*`` names).

Weights are He-initialised from ``np.random.default_rng(seed)``; BatchNorm affine parameters are
far from identity (gamma ~ U[0.4, 2.0], beta ~ N(0, 0.5)) so a folding mistake shows; BatchNorm
running statistics are measured by a float64 forward pass over synthetic natural-like images and
rounded to 4 significant digits, so every layer's activations stay O(1) and the file bytes are
identical on every machine. All layouts follow ONNX: activations NCHW, weights OIHW, Gemm weight
``[out, in]`` with ``transB=1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.zoo import _reference as ref

logger = logging.getLogger(__name__)

NUM_CLASSES = 1000
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
TORCH_OPSET = 17
TORCH_IR_VERSION = 8  # what torch 2.x writes for opset 17
MXNET_OPSET = 7
MXNET_IR_VERSION = 3  # resnet50-v2-7.onnx: initializers must also be graph inputs
CALIB_IMAGES = 8
# 112 rather than 64 px: at 64 px the last stage sees 2x2 maps dominated by zero padding and its
# mean feature direction is far from the one real 224 px photos give (cosine 0.82 vs 0.99 at
# 112-128 px), which made most photos share one top-1 class. 8 images at 112 px take ~0.7 s.
CALIB_SIZE_PX = 112
#: BatchNorm gamma ~ U(GAMMA_RANGE): far from identity, so a folding mistake shows.
GAMMA_RANGE = (0.4, 2.0)
#: The BN closing each residual branch gets a small gamma, as trained ResNets have (and as
#: torchvision's zero_init_residual starts from): the shortcut dominates, so the random network
#: is not chaotic (a 40 dB input perturbation stays ~35 dB at the logits instead of ~12 dB),
#: like a trained one. Pre-activation blocks (v2, no BN at the branch end) scale the last
#: conv's He weights by RESIDUAL_GAIN instead.
RESIDUAL_GAMMA_RANGE = (0.02, 0.12)
RESIDUAL_GAIN = 0.15
LOGITS_STD = 3.0
#: Weight of the isotropic (random) part of each FC row relative to its discriminative part.
FC_ISOTROPIC = 0.1  # the FC is scaled so the calibration logits have this standard deviation
_VAR_FLOOR = 1e-4  # keeps 1/sqrt(var) bounded for (rare) near-constant channels


@dataclass
class _Op:
    """One recorded layer.

    ``kind`` is one of conv, bn, relu, add, maxpool, gap, flatten, gemm. ``params`` holds float32
    parameter arrays keyed by role (conv: w; bn: gamma, beta, mean, var; gemm: w, b) and
    ``names`` their initializer names in the unfolded export.
    """

    kind: str
    node: str
    inputs: list[str]
    output: str
    stride: int = 1
    pad: int = 0
    params: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Tensor:
    """A recorded tensor and its float64 NHWC ``[N, H, W, C]`` value on the calibration batch.

    Values live only as long as the architecture code holds the tensor, which keeps the peak
    memory of a ResNet-50 build to a few live activations.
    """

    name: str
    value: np.ndarray


class _Recorder:
    """Records a network op by op while running it in float64 on the calibration batch.

    Parameters are drawn from ``rng`` in recording order and stored as float32, and the forward
    pass uses exactly those float32 values, so the recorded network is the function the ONNX
    file computes.
    """

    def __init__(self, rng: np.random.Generator, images: np.ndarray):
        self.rng = rng
        self.input = _Tensor("input", images)
        self.ops: list[_Op] = []

    def _add(self, op: _Op, value: np.ndarray) -> _Tensor:
        self.ops.append(op)
        return _Tensor(op.output, value)

    def conv(self, x: _Tensor, out_ch: int, kernel: int, stride: int, pad: int, node: str,
             weight_name: str, gain: float = 1.0) -> _Tensor:
        in_ch = x.value.shape[3]
        fan_in = in_ch * kernel * kernel
        w = self.rng.standard_normal((out_ch, in_ch, kernel, kernel), dtype=np.float32)
        w *= np.float32(gain * np.sqrt(2.0 / fan_in))
        value = ref.conv2d(x.value, w, stride, pad)
        op = _Op("conv", node, [x.name], node, stride, pad, {"w": w}, {"w": weight_name})
        return self._add(op, value)

    def bn(self, x: _Tensor, node: str, names: dict[str, str],
           identity_affine: bool = False,
           gamma_range: tuple[float, float] = GAMMA_RANGE) -> _Tensor:
        xv = x.value
        ch = xv.shape[3]
        if identity_affine:
            gamma, beta = np.ones(ch), np.zeros(ch)
        else:
            gamma = self.rng.uniform(gamma_range[0], gamma_range[1], ch)
            beta = self.rng.normal(0.0, 0.5 * gamma_range[1] / GAMMA_RANGE[1], ch)
        mean = ref.round_significant(xv.mean(axis=(0, 1, 2)))
        var = ref.round_significant(np.maximum(xv.var(axis=(0, 1, 2)), _VAR_FLOOR))
        params = {k: v.astype(np.float32) for k, v in
                  (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))}
        scale, shift = _bn_scale_shift(params)
        op = _Op("bn", node, [x.name], node, params=params, names=names)
        return self._add(op, xv * scale + shift)

    def relu(self, x: _Tensor, node: str) -> _Tensor:
        return self._add(_Op("relu", node, [x.name], node), np.maximum(x.value, 0.0))

    def add(self, a: _Tensor, b: _Tensor, node: str) -> _Tensor:
        return self._add(_Op("add", node, [a.name, b.name], node), a.value + b.value)

    def maxpool(self, x: _Tensor, node: str) -> _Tensor:
        value = ref.maxpool2d(x.value, 3, 2, 1)
        return self._add(_Op("maxpool", node, [x.name], node, stride=2, pad=1), value)

    def gap(self, x: _Tensor, node: str) -> _Tensor:
        value = x.value.mean(axis=(1, 2), keepdims=True)
        return self._add(_Op("gap", node, [x.name], node), value)

    def flatten(self, x: _Tensor, node: str, names: dict[str, str] | None = None) -> _Tensor:
        value = x.value.reshape(x.value.shape[0], -1)
        return self._add(_Op("flatten", node, [x.name], node, names=names or {}), value)

    def gemm(self, x: _Tensor, node: str, names: dict[str, str]) -> _Tensor:
        feats = x.value
        in_f = feats.shape[1]
        w_iso = self.rng.standard_normal((NUM_CLASSES, in_f)) * np.sqrt(2.0 / in_f)
        b = self.rng.normal(0.0, 0.01, NUM_CLASSES)
        # A trained classifier's rows lie mostly in the span of the directions along which the
        # features of different images differ (class-mean differences); a random row would
        # mostly read the common component that every image shares, and every image would get
        # the same top-1. So: rows = random mixtures of the principal directions of the centred
        # features of the synthetic images, plus a small isotropic part.
        centred = feats - feats.mean(axis=0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        keep = sv > sv[0] * 1e-3
        basis = vt[keep]
        # fix the SVD's sign ambiguity and round so the bytes match on every machine
        basis *= np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])[:, None]
        basis = ref.round_significant(basis)
        mix = self.rng.standard_normal((NUM_CLASSES, len(basis)))
        w = mix @ basis
        w = w / np.linalg.norm(w, axis=1, keepdims=True) * np.linalg.norm(w_iso, axis=1,
                                                                           keepdims=True)
        w = w + FC_ISOTROPIC * w_iso
        gain = LOGITS_STD / max(float(ref.round_significant(np.array(
            (centred @ w.T).std()), 6)), 1e-6)
        w = w * float(ref.round_significant(np.array(gain), 2))
        w, b = w.astype(np.float32), b.astype(np.float32)
        value = feats @ w.astype(np.float64).T + b
        op = _Op("gemm", node, [x.name], node, params={"w": w, "b": b}, names=names)
        return self._add(op, value)


def _bn_scale_shift(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 (scale, shift) with ``bn(x) = x * scale + shift``."""
    scale = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + BN_EPSILON)
    shift = p["beta"].astype(np.float64) - p["mean"].astype(np.float64) * scale
    return scale, shift


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

def _torch_scope(path: str) -> str:
    """torch.onnx scope of a module path: ``layer1.0.downsample.0`` ->
    ``/layer1/layer1.0/downsample/downsample.0``."""
    parts = path.split(".") if path else []
    scopes = [f"{parts[i - 1]}.{p}" if p.isdigit() else p for i, p in enumerate(parts)]
    return "".join(f"/{s}" for s in scopes)


def _torch_conv_bn(r: _Recorder, x: _Tensor, out_ch: int, kernel: int, stride: int, pad: int,
                   conv_path: str, bn_path: str,
                   gamma_range: tuple[float, float] = None) -> _Tensor:
    y = r.conv(x, out_ch, kernel, stride, pad, f"{_torch_scope(conv_path)}/Conv",
               f"{conv_path}.weight")
    names = {k: f"{bn_path}.{s}" for k, s in (("gamma", "weight"), ("beta", "bias"),
                                               ("mean", "running_mean"), ("var", "running_var"))}
    return r.bn(y, f"{_torch_scope(bn_path)}/BatchNormalization", names,
                gamma_range=gamma_range or GAMMA_RANGE)


def _record_torch_resnet(r: _Recorder, blocks: tuple[int, ...], bottleneck: bool) -> _Tensor:
    """torchvision ResNet v1.5 (stride on the 3x3 conv of a bottleneck)."""
    x = _torch_conv_bn(r, r.input, 64, 7, 2, 3, "conv1", "bn1")
    x = r.relu(x, "/relu/Relu")
    x = r.maxpool(x, "/maxpool/MaxPool")
    in_ch = 64
    for li, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for bi in range(count):
            p = f"layer{li + 1}.{bi}"
            s = 2 if (li > 0 and bi == 0) else 1
            scope = _torch_scope(p)
            if bottleneck:
                out_ch = planes * 4
                y = _torch_conv_bn(r, x, planes, 1, 1, 0, f"{p}.conv1", f"{p}.bn1")
                y = r.relu(y, f"{scope}/relu/Relu")
                y = _torch_conv_bn(r, y, planes, 3, s, 1, f"{p}.conv2", f"{p}.bn2")
                y = r.relu(y, f"{scope}/relu_1/Relu")
                y = _torch_conv_bn(r, y, out_ch, 1, 1, 0, f"{p}.conv3", f"{p}.bn3",
                                   RESIDUAL_GAMMA_RANGE)
                last_relu = "relu_2"
            else:
                out_ch = planes
                y = _torch_conv_bn(r, x, planes, 3, s, 1, f"{p}.conv1", f"{p}.bn1")
                y = r.relu(y, f"{scope}/relu/Relu")
                y = _torch_conv_bn(r, y, planes, 3, 1, 1, f"{p}.conv2", f"{p}.bn2",
                                   RESIDUAL_GAMMA_RANGE)
                last_relu = "relu_1"
            shortcut = x
            if s != 1 or in_ch != out_ch:
                shortcut = _torch_conv_bn(r, x, out_ch, 1, s, 0, f"{p}.downsample.0",
                                          f"{p}.downsample.1")
            y = r.add(y, shortcut, f"{scope}/Add")
            x = r.relu(y, f"{scope}/{last_relu}/Relu")
            in_ch = out_ch
    x = r.gap(x, "/avgpool/GlobalAveragePool")
    x = r.flatten(x, "/Flatten")
    return r.gemm(x, "/fc/Gemm", {"w": "fc.weight", "b": "fc.bias"})


def _record_mxnet_resnet50_v2(r: _Recorder) -> _Tensor:
    """Gluon ``resnet50_v2`` (BottleneckV2, stride on the 3x3 conv) as in resnet50-v2-7.onnx."""
    pre = "resnetv24_"

    def bn(x: _Tensor, scope: str, idx: int, identity_affine: bool = False) -> _Tensor:
        base = f"{pre}{scope}batchnorm{idx}"
        names = {k: f"{base}_{s}" for k, s in (("gamma", "gamma"), ("beta", "beta"),
                                                ("mean", "running_mean"), ("var", "running_var"))}
        return r.bn(x, f"{base}_fwd", names, identity_affine)

    def conv(x: _Tensor, scope: str, idx: int, out_ch: int, kernel: int, stride: int,
             pad: int, gain: float = 1.0) -> _Tensor:
        base = f"{pre}{scope}conv{idx}"
        return r.conv(x, out_ch, kernel, stride, pad, f"{base}_fwd", f"{base}_weight", gain)

    x = bn(r.input, "", 0, identity_affine=True)  # BatchNorm(scale=False, center=False) on data
    x = conv(x, "", 0, 64, 7, 2, 3)
    x = bn(x, "", 1)
    x = r.relu(x, f"{pre}relu0_fwd")
    x = r.maxpool(x, f"{pre}pool0_fwd")
    in_ch = 64
    for si, (channels, count) in enumerate(
            zip((256, 512, 1024, 2048), (3, 4, 6, 3), strict=True)):
        scope = f"stage{si + 1}_"
        n_bn = n_conv = n_act = 0
        for bi in range(count):
            s = 2 if (si > 0 and bi == 0) else 1
            mid = channels // 4
            y = bn(x, scope, n_bn)
            y = r.relu(y, f"{pre}{scope}activation{n_act}")
            pre_act = y
            y = conv(y, scope, n_conv, mid, 1, 1, 0)
            y = bn(y, scope, n_bn + 1)
            y = r.relu(y, f"{pre}{scope}activation{n_act + 1}")
            y = conv(y, scope, n_conv + 1, mid, 3, s, 1)
            y = bn(y, scope, n_bn + 2)
            y = r.relu(y, f"{pre}{scope}activation{n_act + 2}")
            y = conv(y, scope, n_conv + 2, channels, 1, 1, 0, RESIDUAL_GAIN)
            n_bn, n_act, n_conv = n_bn + 3, n_act + 3, n_conv + 3
            shortcut = x
            if s != 1 or in_ch != channels:
                shortcut = conv(pre_act, scope, n_conv, channels, 1, s, 0)
                n_conv += 1
            x = r.add(y, shortcut, f"{pre}{scope}_plus{bi}")
            in_ch = channels
    x = bn(x, "", 2)
    x = r.relu(x, f"{pre}relu1_fwd")
    x = r.gap(x, f"{pre}pool1_fwd")
    x = r.flatten(x, f"{pre}flatten0_reshape0", {"shape": f"{pre}flatten0_reshape0_shape"})
    return r.gemm(x, f"{pre}dense0_fwd", {"w": f"{pre}dense0_weight", "b": f"{pre}dense0_bias"})


# --------------------------------------------------------------------------------------------
# ONNX emission
# --------------------------------------------------------------------------------------------

@dataclass
class _Emitted:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name


def _emit_torch(ops: list[_Op], fold: bool) -> _Emitted:
    """Nodes + initializers in torch.onnx.export style (folded or unfolded BatchNorm)."""
    em = _Emitted()
    consumers = {i: op for op in ops for i in op.inputs}
    alias = {"input": "input"}  # recorded tensor -> ONNX tensor name
    folded_bn: set[str] = set()
    next_id = 321  # torch numbers folded constants "onnx::Conv_<n>"; the start is arbitrary

    def tensor(op: _Op) -> str:
        return "logits" if op is ops[-1] else f"{op.node}_output_0"

    for op in ops:
        if op.kind == "bn" and op.output in folded_bn:
            continue
        ins = [alias[i] for i in op.inputs]
        out = tensor(op)
        alias[op.output] = out
        if op.kind == "conv":
            k = op.params["w"].shape[2]
            attrs = dict(dilations=[1, 1], group=1, kernel_shape=[k, k], pads=[op.pad] * 4,
                         strides=[op.stride] * 2)
            bn = consumers.get(op.output)
            if fold and bn is not None and bn.kind == "bn":
                scale, shift = _bn_scale_shift(bn.params)
                w = (op.params["w"].astype(np.float64) * scale[:, None, None, None])
                ins += [em.init(f"onnx::Conv_{next_id}", w.astype(np.float32)),
                        em.init(f"onnx::Conv_{next_id + 1}", shift.astype(np.float32))]
                next_id += 2
                folded_bn.add(bn.output)
                alias[bn.output] = out
            else:
                ins.append(em.init(op.names["w"], op.params["w"]))
            em.nodes.append(helper.make_node("Conv", ins, [out], op.node, **attrs))
        elif op.kind == "bn":
            ins += [em.init(op.names[k], op.params[k]) for k in ("gamma", "beta", "mean", "var")]
            em.nodes.append(helper.make_node("BatchNormalization", ins, [out], op.node,
                                             epsilon=BN_EPSILON, momentum=BN_MOMENTUM))
        else:
            em.nodes.append(_simple_node(op, ins, out, em, TORCH_OPSET))
    return em


def _emit_mxnet(ops: list[_Op]) -> _Emitted:
    """Nodes + initializers in the MXNet-exporter style of resnet50-v2-7.onnx (opset 7)."""
    em = _Emitted()
    alias = {"input": "input"}
    for op in ops:
        ins = [alias[i] for i in op.inputs]
        out = "logits" if op is ops[-1] else op.node
        alias[op.output] = out
        if op.kind == "conv":
            k = op.params["w"].shape[2]
            ins.append(em.init(op.names["w"], op.params["w"]))
            em.nodes.append(helper.make_node(
                "Conv", ins, [out], op.node, dilations=[1, 1], group=1, kernel_shape=[k, k],
                pads=[op.pad] * 4, strides=[op.stride] * 2))
        elif op.kind == "bn":
            ins += [em.init(op.names[k], op.params[k]) for k in ("gamma", "beta", "mean", "var")]
            em.nodes.append(helper.make_node("BatchNormalization", ins, [out], op.node,
                                             epsilon=BN_EPSILON, momentum=BN_MOMENTUM))
        else:
            em.nodes.append(_simple_node(op, ins, out, em, MXNET_OPSET))
    return em


def _simple_node(op: _Op, ins: list[str], out: str, em: _Emitted, opset: int) -> onnx.NodeProto:
    """Relu, Add, MaxPool, GlobalAveragePool, Flatten/Reshape and Gemm nodes."""
    if op.kind == "relu":
        return helper.make_node("Relu", ins, [out], op.node)
    if op.kind == "add":
        return helper.make_node("Add", ins, [out], op.node)
    if op.kind == "maxpool":
        attrs = dict(kernel_shape=[3, 3], pads=[op.pad] * 4, strides=[op.stride] * 2)
        if opset >= 10:
            attrs.update(ceil_mode=0, dilations=[1, 1])
        return helper.make_node("MaxPool", ins, [out], op.node, **attrs)
    if op.kind == "gap":
        return helper.make_node("GlobalAveragePool", ins, [out], op.node)
    if op.kind == "flatten":
        if "shape" in op.names:  # MXNet writes its flatten as Reshape(x, [0, -1])
            shape = em.init(op.names["shape"], np.array([0, -1], np.int64))
            return helper.make_node("Reshape", ins + [shape], [out], op.node)
        return helper.make_node("Flatten", ins, [out], op.node, axis=1)
    if op.kind == "gemm":
        ins += [em.init(op.names["w"], op.params["w"]), em.init(op.names["b"], op.params["b"])]
        return helper.make_node("Gemm", ins, [out], op.node, alpha=1.0, beta=1.0, transB=1)
    raise AssertionError(f"unhandled recorded op kind {op.kind!r}")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

_TORCH_BLOCKS = {"resnet18": ((2, 2, 2, 2), False), "resnet50": ((3, 4, 6, 3), True),
                 "resnet50-bn": ((3, 4, 6, 3), True)}


def build_resnet(name: str, width: int, height: int, channels: int, seed: int,
                 producer_version: str) -> onnx.ModelProto:
    """Build one zoo ResNet (arguments already validated by :func:`tcc_compiler.zoo.build`).

    Args:
        name: one of ``resnet18``, ``resnet50``, ``resnet50-bn``, ``resnet50-v2``.
        width, height: input size (pixels); the graph input is float32 NCHW
            ``[1, channels, height, width]`` named ``input``; the output ``logits`` is float32
            ``[1, 1000]``. Weights do not depend on the size (statistics come from 64x64 images).
        channels: input channels.
        seed: seed of ``np.random.default_rng`` for all weights.
        producer_version: written to ``ModelProto.producer_version``.

    Returns:
        The model (not yet checked).
    """
    images = ref.synthetic_images(channels, CALIB_IMAGES, CALIB_SIZE_PX)
    rec = _Recorder(np.random.default_rng(seed), images)
    del images
    if name == "resnet50-v2":
        logits = _record_mxnet_resnet50_v2(rec).value
        emitted = _emit_mxnet(rec.ops)
        opset, ir_version = MXNET_OPSET, MXNET_IR_VERSION
    else:
        blocks, bottleneck = _TORCH_BLOCKS[name]
        logits = _record_torch_resnet(rec, blocks, bottleneck).value
        emitted = _emit_torch(rec.ops, fold=(name != "resnet50-bn"))
        opset, ir_version = TORCH_OPSET, TORCH_IR_VERSION
    logger.debug("%s: calibration logits std %.3f, top-1 %s", name, float(logits.std()),
                 logits.argmax(axis=1).tolist())

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                            [1, channels, height, width])]
    if ir_version < 4:  # before IR 4 every initializer had to be declared as a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in emitted.inits]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES])]
    graph = helper.make_graph(emitted.nodes, name.replace("-", "_"), inputs, outputs,
                              emitted.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tccc.zoo", producer_version=producer_version)
    model.ir_version = ir_version
    model.doc_string = (f"tccc.zoo {name} seed={seed}: synthetic (untrained) weights; "
                        f"BatchNorm statistics from {CALIB_IMAGES} synthetic "
                        f"{CALIB_SIZE_PX}x{CALIB_SIZE_PX} images")
    return model
