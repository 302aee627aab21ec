"""Layer recorder shared by the detector and mobile zoo builders (torch.onnx opset 17 style).

An architecture function (e.g. :func:`tcc_compiler.zoo.yolo.record_yolov8`) calls the methods of
a :class:`Builder` layer by layer. It runs twice:

1. **calibration** (``Builder(calib_images, rng=...)``): every convolution draws He-initialised
   weights from the seeded ``rng``, runs on a small batch of synthetic images (float32 NumPy,
   :mod:`tcc_compiler.zoo._kernels`) and has a BatchNorm folded into it whose statistics are
   the measured per-channel mean and standard deviation of its output (:func:`channel_stats`,
   rounded to 4 significant digits so the file bytes do not depend on the BLAS): a
   data-dependent initialisation layer by layer, as LSUV (Mishkin & Matas 2016, "All you need
   is a good init") and Kraehenbuehl et al. 2016 ("Data-dependent initializations of
   convolutional neural networks") do; every activation stays O(1), as in a trained network,
   and the weights do not depend on the model's input size;
2. **emission** (``Builder(zeros_at_real_size, params=calibration.params)``): the same calls
   reuse those parameters in order, compute only shapes for convolutions (zeros), and record the
   ONNX nodes, initializers and shape-dependent constants (anchors, grids, priors) for the real
   input size.

Conditioning. A random network whose every layer is normalised to unit variance is *chaotic*
(Poole et al. 2016, "Exponential expressivity in deep neural networks through transient
chaos"; Schoenholz et al. 2017, "Deep information propagation"): a small perturbation of its
input, such as the rounding of INT8 quantization, grows relative to the signal from layer to
layer. With beta 0 a unit pre-activation h ~ N(0, 1) before a ReLU passes noise with gain
E[relu'(h)^2] = 0.5 but signal variance Var relu(h) = 0.34 (the mean is removed by the next
normalisation): x1.47, +1.7 dB of noise per layer, so ONNX Runtime's own per-channel
``quantize_static`` reached only 13.9-16.2 dB on the YOLOs (yolov8n's deepest neck layers at
0 dB). Trained networks are not like that (the real EfficientNet-Lite0 keeps ~28 dB). So the
folded BatchNorm's beta has mean :data:`BETA_MEAN` (1 standard deviation: about 84% of the
units after a ReLU/SiLU are active; noise gain Phi(1) / Var relu(N(1, 1)) = 0.84 / 0.75,
+0.5 dB per layer), and the deepest levels' maps, which hold too few calibration samples for
per-channel statistics, use the channel-pooled variance (:func:`channel_stats`): with their
own, a 1x1 map's channels were scaled by arbitrary factors and SSDLite's box logits reached
1e3..1e4 (its ``Exp`` overflowed).

Node names follow torch.onnx: ``<scope>/<OpType>`` with ``_1``, ``_2`` ... for repeats in one
scope, outputs ``<node>_output_0``; folded BatchNorm parameters are ``onnx::Conv_<n>`` unless the
caller names them (ultralytics fuses Conv+BN before export, so its names are
``model.0.conv.weight``). Activations are NCHW float32, conv weights OIHW, ConvTranspose IOHW.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.zoo import _kernels as k
from tcc_compiler.zoo._reference import round_significant

OPSET = 17
IR_VERSION = 8  # what torch 2.x writes for opset 17
#: folded BatchNorm gamma ~ U(GAMMA); a residual branch's last conv uses RESIDUAL_GAMMA so the
#: shortcut dominates as in a trained network (see tcc_compiler.zoo.resnet).
GAMMA = (0.5, 1.5)
RESIDUAL_GAMMA = (0.1, 0.3)
BETA_STD = 0.3
#: mean of the folded BatchNorm beta (in units of the channel's standard deviation): positive,
#: so about 84% of the units a ReLU/SiLU/HardSwish follows are in its linear part (see
#: "Conditioning" in the module docstring); 0 for the heads' output convs (``beta_mean``).
BETA_MEAN = 1.0
_STD_FLOOR = 1e-2
#: fewest samples per channel (calibration images x H x W) for per-channel statistics; a map
#: with fewer (the 1x1..4x4 maps of the deepest levels) takes the channel-pooled variance.
MIN_CHANNEL_SAMPLES = 64
#: ops whose initializer inputs 1 and 2 count as the model's parameters
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm")


@dataclass(frozen=True)
class T:
    """A recorded tensor: its ONNX name and its value (float32, NCHW for feature maps)."""

    name: str
    value: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape."""
        return self.value.shape


class Builder:
    """Records one network as ONNX nodes (see the module docstring for the two passes).

    Args:
        x: the input value, float32 NCHW ``[N, C, H, W]`` (calibration images, or zeros of the
            real ``[1, C, H, W]`` input in the emission pass).
        input_name: the graph input's name.
        rng: seeded generator (calibration pass only).
        params: the calibration pass's :attr:`params` (emission pass only).
    """

    def __init__(self, x: np.ndarray, input_name: str, rng: np.random.Generator | None = None,
                 params: list[tuple[np.ndarray, np.ndarray | None]] | None = None):
        self.calibrating = params is None
        self.rng = rng
        self.params: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._replay = iter(params or [])
        self.input = T(input_name, x.astype(np.float32))
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self._counts: Counter[str] = Counter()
        self._conv_id = 300  # torch numbers folded constants "onnx::Conv_<n>"; start arbitrary

    def replay_done(self) -> bool:
        """Emission pass: whether every calibrated parameter set has been used."""
        return next(self._replay, None) is None

    # ---------------------------------------------------------------- naming and bookkeeping
    def node_name(self, scope: str, op_type: str) -> str:
        """torch.onnx style unique node name ``<scope>/<op_type>[_<i>]``."""
        base = f"{scope}/{op_type}"
        n = self._counts[base]
        self._counts[base] += 1
        return base if n == 0 else f"{base}_{n}"

    def init(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (once per name) and return its name."""
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.array(array, order="C"), name)
        return name

    def const(self, scope: str, array: np.ndarray, node: bool = False) -> str:
        """A constant as torch writes it, named ``<scope>/Constant[_i]_output_0``: a folded
        initializer, or (``node``) a ``Constant`` node as torch leaves Clip's bounds."""
        name = self.node_name(scope, "Constant")
        out = f"{name}_output_0"
        if not node:
            return self.init(out, array)
        tensor = numpy_helper.from_array(np.array(array, order="C"), "")
        self.nodes.append(helper.make_node("Constant", [], [out], name, value=tensor))
        return out

    def op(self, op_type: str, inputs: list[T | str], scope: str, value: np.ndarray,
           out_name: str | None = None, **attrs) -> T:
        """Record one single-output node computing ``value`` (already evaluated by the caller)."""
        name = self.node_name(scope, op_type)
        out = out_name or f"{name}_output_0"
        ins = [i.name if isinstance(i, T) else i for i in inputs]
        self.nodes.append(helper.make_node(op_type, ins, [out], name, **attrs))
        return T(out, np.asarray(value, np.float32))

    # ---------------------------------------------------------------- convolution
    def _draw(self, shape: tuple[int, ...], fan_in: int, gain: float) -> np.ndarray:
        w = self.rng.standard_normal(shape, dtype=np.float32)
        return w * np.float32(gain * np.sqrt(2.0 / fan_in))

    def _calibrate(self, x: T, out_ch: int, kernel: int, stride: int, pads: k.Pads,
                   groups: int, gain: float, gamma: tuple[float, float] | None,
                   bias: bool | str, beta_mean: float
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(weight, bias, output value) of a conv drawn and calibrated on ``x``."""
        cin = x.shape[1]
        w = self._draw((out_ch, cin // groups, kernel, kernel), cin // groups * kernel * kernel,
                       gain)
        if gamma is None and bias == "centred":   # bias = -mean + N(beta_mean, BETA_STD) * std
            y = k.conv2d(x.value, w, None, stride, pads, groups).astype(np.float64)
            mean, std = channel_stats(y)
            b = (self.rng.normal(beta_mean, BETA_STD, out_ch) * std - mean).astype(np.float32)
            return w, b, (y + b[None, :, None, None]).astype(np.float32)
        if gamma is None:  # plain conv without BatchNorm (bias ~ N(0, 0.01) when it has one)
            b = self.rng.normal(0.0, 0.01, out_ch).astype(np.float32) if bias else None
            return w, b, k.conv2d(x.value, w, b, stride, pads, groups)
        y = k.conv2d(x.value, w, None, stride, pads, groups).astype(np.float64)
        mean, std = channel_stats(y)
        g = self.rng.uniform(gamma[0], gamma[1], out_ch)
        beta = self.rng.normal(beta_mean, BETA_STD, out_ch)
        scale = g / std
        w_folded = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
        b = (beta - mean * scale).astype(np.float32)
        # the folded conv is the raw one times a per-channel scale: no second convolution
        value = y * scale[None, :, None, None] + b[None, :, None, None]
        return w_folded, b, value.astype(np.float32)

    def conv(self, x: T, out_ch: int, kernel: int, stride: int, scope: str, *,
             pad: int | k.Pads | None = None, groups: int = 1, gain: float = 1.0,
             gamma: tuple[float, float] | None = GAMMA, bias: bool | str = True,
             names: tuple[str, str] | None = None, out_name: str | None = None,
             same: bool = False, beta_mean: float | None = None) -> T:
        """Conv (+ folded BatchNorm when ``gamma`` is given), node ``<scope>/Conv``.

        Args:
            x: NCHW input; out_ch, kernel, stride: as in ``nn.Conv2d`` (square kernel).
            pad: symmetric padding or (top, left, bottom, right); default ``kernel // 2``.
            same: ``nn.Conv2d(padding="same")`` (stride 1, odd kernel) as torch.onnx writes it:
                ``auto_pad="SAME_UPPER"`` and no ``pads`` attribute (``pad`` is ignored).
            groups: conv groups (``groups == in == out`` is depthwise).
            gain: multiplies the He standard deviation (calibration only).
            gamma: range of the folded BatchNorm's gamma, or None for a conv without BN.
            bias: whether a conv without BN has a bias (a folded BN always gives one);
                ``"centred"``: one that places each output channel on the calibration images
                as a folded BatchNorm would (``-mean + N(beta_mean, BETA_STD) * std``: with
                :data:`BETA_MEAN` about 84% of its outputs pass a following ReLU, no channel
                dead or always on; see "Conditioning" in the module docstring).
            names: initializer names (weight, bias); default torch's ``onnx::Conv_<n>``.
            beta_mean: mean of the folded BatchNorm's beta, or of a ``"centred"`` bias, in
                units of the channel's standard deviation (calibration only; None:
                :data:`BETA_MEAN`; 0 for an output head whose logits stay centred).
        """
        pads = pad if isinstance(pad, tuple) else (kernel // 2 if pad is None else pad,) * 4
        if same:
            assert stride == 1 and kernel % 2 == 1, "padding='same' needs stride 1, odd kernel"
            pads = (kernel // 2,) * 4
        if self.calibrating:
            w, b, value = self._calibrate(x, out_ch, kernel, stride, pads, groups, gain, gamma,
                                          bias, BETA_MEAN if beta_mean is None else beta_mean)
            self.params.append((w, b))
        else:
            w, b = next(self._replay)
            ho, wo = k.conv_out_hw(x.shape[2], x.shape[3], kernel, stride, pads)
            value = np.zeros((x.shape[0], out_ch, ho, wo), np.float32)
        if names is None:
            names = (f"onnx::Conv_{self._conv_id}", f"onnx::Conv_{self._conv_id + 1}")
            self._conv_id += 2
        ins = [x.name, self.init(names[0], w)] + ([self.init(names[1], b)] if b is not None
                                                    else [])
        pad_attr = {"auto_pad": "SAME_UPPER"} if same else {"pads": list(pads)}
        return self.op("Conv", ins, scope, value, out_name, dilations=[1, 1], group=groups,
                       kernel_shape=[kernel, kernel], strides=[stride, stride], **pad_attr)

    def batchnorm(self, x: T, scope: str, prefix: str,
                  gamma: tuple[float, float] = GAMMA) -> T:
        """An explicit (unfolded) ``BatchNormalization`` node in inference mode, as torch.onnx
        writes a BatchNorm2d it cannot fold (one that follows an activation): initializers
        ``<prefix>.weight``, ``.bias``, ``.running_mean``, ``.running_var`` ``[C]``, epsilon
        1e-5. In calibration the running statistics are the measured per-channel mean and
        variance of ``x`` (4 significant digits), gamma ~ U(``gamma``), beta ~ N(0,
        BETA_STD)."""
        if self.calibrating:
            c = x.shape[1]
            mean, std = channel_stats(x.value.astype(np.float64))
            var = round_significant(std * std)
            g = self.rng.uniform(gamma[0], gamma[1], c)
            beta = self.rng.normal(BETA_MEAN, BETA_STD, c)
            stats = np.stack([g, beta, mean, var]).astype(np.float32)
            self.params.append((stats, None))
        else:
            stats, _ = next(self._replay)
        g, beta, mean, var = (s.astype(np.float64) for s in stats)
        scale = g / np.sqrt(var + 1e-5)
        value = (x.value - mean[None, :, None, None]) * scale[None, :, None, None] \
            + beta[None, :, None, None]
        ins = [x] + [self.init(f"{prefix}.{field}", stats[i]) for i, field in
                     enumerate(("weight", "bias", "running_mean", "running_var"))]
        return self.op("BatchNormalization", ins, scope, value, epsilon=1e-5,
                       momentum=np.float32(0.9).item(), training_mode=0)

    def conv_transpose(self, x: T, out_ch: int, scope: str, weight_name: str) -> T:
        """ConvTranspose k4 s2 p1 without bias (FlowNet's deconv), IOHW weights."""
        if self.calibrating:
            cin = x.shape[1]
            w = self._draw((cin, out_ch, 4, 4), cin * 4, 1.0)
            y = k.conv_transpose2d(x.value, w, 2, 1).astype(np.float64)
            std = channel_stats(y)[1]
            w = (w / std[None, :, None, None].astype(np.float32)).astype(np.float32)
            self.params.append((w, None))
            value = k.conv_transpose2d(x.value, w, 2, 1)
        else:
            w, _ = next(self._replay)
            n, _, h, wd = x.shape
            value = np.zeros((n, out_ch, 2 * h, 2 * wd), np.float32)
        return self.op("ConvTranspose", [x, self.init(weight_name, w)], scope, value,
                       dilations=[1, 1], group=1, kernel_shape=[4, 4], pads=[1, 1, 1, 1],
                       strides=[2, 2])

    # ---------------------------------------------------------------- element-wise and friends
    def silu(self, x: T, scope: str) -> T:
        """SiLU as torch.onnx opset 17 writes it: ``x * Sigmoid(x)``."""
        s = self.sigmoid(x, scope)
        return self.op("Mul", [x, s], scope, x.value * s.value)

    def sigmoid(self, x: T, scope: str) -> T:
        """Sigmoid node."""
        return self.op("Sigmoid", [x], scope, k.sigmoid(x.value))

    def relu(self, x: T, scope: str) -> T:
        """Relu node."""
        return self.op("Relu", [x], scope, np.maximum(x.value, 0.0))

    def relu6(self, x: T, scope: str) -> T:
        """ReLU6 as torch writes it: ``Clip(x, min=0, max=6)`` with constant bounds."""
        lo = self.const(scope, np.array(0.0, np.float32), node=True)
        hi = self.const(scope, np.array(6.0, np.float32), node=True)
        return self.op("Clip", [x, lo, hi], scope, np.clip(x.value, 0.0, 6.0))

    def hardswish(self, x: T, scope: str) -> T:
        """HardSwish node (opset 14+)."""
        return self.op("HardSwish", [x], scope, x.value * k.hardsigmoid(x.value))

    def hardsigmoid(self, x: T, scope: str) -> T:
        """HardSigmoid node with torch's alpha 1/6, beta 0.5."""
        return self.op("HardSigmoid", [x], scope, k.hardsigmoid(x.value), alpha=1.0 / 6.0)

    def leaky_relu(self, x: T, scope: str, alpha: float = 0.1) -> T:
        """LeakyRelu node."""
        return self.op("LeakyRelu", [x], scope, np.where(x.value > 0, x.value, alpha * x.value),
                       alpha=alpha)

    def binary(self, op_type: str, a: T | str, b: T | str, scope: str,
               b_value: np.ndarray | None = None, out_name: str | None = None) -> T:
        """Add/Sub/Mul/Div/Pow of two tensors (broadcasting); a constant ``b`` is an initializer
        name with ``b_value``."""
        bv = b.value if isinstance(b, T) else b_value
        av = a.value
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
              "Pow": np.power}[op_type]
        return self.op(op_type, [a, b], scope, fn(av, bv), out_name)

    def binary_const(self, op_type: str, a: T, value: float | np.ndarray, scope: str,
                     out_name: str | None = None) -> T:
        """``a <op> constant`` with the constant folded into an initializer."""
        arr = np.asarray(value, np.float32)
        return self.binary(op_type, a, self.const(scope, arr), scope, arr, out_name)

    def concat(self, xs: list[T], axis: int, scope: str, out_name: str | None = None) -> T:
        """Concat node."""
        return self.op("Concat", xs, scope, np.concatenate([x.value for x in xs], axis), out_name,
                       axis=axis)

    def split(self, x: T, sizes: list[int], axis: int, scope: str) -> list[T]:
        """Split node (opset 13+: sizes as a constant input), one output per size."""
        name = self.node_name(scope, "Split")
        sizes_name = self.const(scope, np.array(sizes, np.int64))
        outs = [f"{name}_output_{i}" for i in range(len(sizes))]
        self.nodes.append(helper.make_node("Split", [x.name, sizes_name], outs, name, axis=axis))
        parts = np.split(x.value, np.cumsum(sizes)[:-1], axis=axis)
        return [T(o, p) for o, p in zip(outs, parts, strict=True)]

    def slice(self, x: T, start: int, end: int, axis: int, scope: str) -> T:
        """Slice node with constant starts/ends/axes (no steps, as torch writes it)."""
        ins = [x.name] + [self.const(scope, np.array([v], np.int64))
                          for v in (start, end, axis)]
        value = np.take(x.value, range(start, min(end, x.shape[axis])), axis=axis)
        return self.op("Slice", ins, scope, value)

    def pad_same(self, x: T, kernel: int, stride: int, scope: str) -> T:
        """TensorFlow "SAME" padding as timm's ``Conv2dSame`` exports it: a constant ``Pad``
        node ((total // 2) before, the rest after, per axis) before a Conv with pads 0."""
        pads = []
        for size in x.shape[2:]:
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        onnx_pads = np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)
        value = np.pad(x.value, ((0, 0), (0, 0), (top, bottom), (left, right)))
        return self.op("Pad", [x, self.const(scope, onnx_pads)], scope, value, mode="constant")

    def maxpool(self, x: T, kernel: int, stride: int, pad: int, scope: str) -> T:
        """MaxPool node (floor mode)."""
        return self.op("MaxPool", [x], scope, k.maxpool2d(x.value, kernel, stride, pad),
                       ceil_mode=0, dilations=[1, 1], kernel_shape=[kernel, kernel],
                       pads=[pad] * 4, strides=[stride, stride])

    def resize_nearest(self, x: T, scope: str, factor: int = 2) -> T:
        """nn.Upsample(scale_factor=factor, mode='nearest') as torch writes it in opset 17."""
        scales = self.const(scope, np.array([1, 1, factor, factor], np.float32))
        return self.op("Resize", [x, "", scales], scope, k.resize_nearest(x.value, factor),
                       coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75,
                       mode="nearest", nearest_mode="floor")

    def reshape(self, x: T, shape: list[int], scope: str) -> T:
        """Reshape to a constant shape whose first entry is the batch (1 in the file; the
        calibration batch's size while calibrating)."""
        value = x.value.reshape([x.shape[0]] + list(shape[1:]))
        return self.op("Reshape", [x, self.const(scope, np.array(shape, np.int64))], scope, value)

    def transpose(self, x: T, perm: list[int], scope: str) -> T:
        """Transpose node."""
        return self.op("Transpose", [x], scope, x.value.transpose(perm), perm=perm)

    def softmax(self, x: T, axis: int, scope: str, out_name: str | None = None) -> T:
        """Softmax node (opset 13+ semantics: along one axis)."""
        return self.op("Softmax", [x], scope, k.softmax(x.value, axis), out_name, axis=axis)

    def matmul(self, a: T, b: T, scope: str) -> T:
        """MatMul of two activations."""
        return self.op("MatMul", [a, b], scope, np.matmul(a.value, b.value))

    def gap(self, x: T, scope: str) -> T:
        """GlobalAveragePool (adaptive_avg_pool2d to 1x1)."""
        return self.op("GlobalAveragePool", [x], scope, x.value.mean(axis=(2, 3), keepdims=True))

    def flatten(self, x: T, scope: str) -> T:
        """Flatten(axis=1)."""
        return self.op("Flatten", [x], scope, x.value.reshape(x.shape[0], -1), axis=1)

    def gemm(self, x: T, out_f: int, scope: str, names: tuple[str, str],
             out_name: str | None = None, logits_std: float = 3.0) -> T:
        """Linear layer as Gemm(transB=1); weights ``[out, in]``. In calibration the weights
        are scaled so the outputs have standard deviation ``logits_std``."""
        if self.calibrating:
            in_f = x.shape[1]
            w = self._draw((out_f, in_f), in_f, 1.0)
            std = float(round_significant(np.array(max(float((x.value @ w.T).std()), 1e-6))))
            w = (w * np.float32(logits_std / std)).astype(np.float32)
            b = self.rng.normal(0.0, 0.01, out_f).astype(np.float32)
            self.params.append((w, b))
        else:
            w, b = next(self._replay)
        ins = [x.name, self.init(names[0], w), self.init(names[1], b)]
        return self.op("Gemm", ins, scope, x.value @ w.T + b, out_name, alpha=1.0, beta=1.0,
                       transB=1)

    # ---------------------------------------------------------------- the model
    def model(self, outputs: list[T], graph_name: str, doc: str,
              producer: str) -> onnx.ModelProto:
        """The recorded graph as an opset-17 ``ModelProto`` (batch 1, static shapes)."""
        inp = helper.make_tensor_value_info(self.input.name, TensorProto.FLOAT,
                                            list(self.input.shape))
        outs = [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, list(o.shape))
                for o in outputs]
        graph = helper.make_graph(self.nodes, graph_name, [inp], outs, list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="tccc.zoo", producer_version=producer)
        model.ir_version = IR_VERSION
        model.doc_string = doc
        return model


def channel_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of a calibration batch, each rounded to 4
    significant digits (:func:`~tcc_compiler.zoo._reference.round_significant`), the
    standard deviation floored at 1e-2.

    A channel with fewer than :data:`MIN_CHANNEL_SAMPLES` samples (N * H * W) takes the
    channel-pooled variance (the mean of the per-channel variances): from two images of a 1x1
    map a channel's own variance is the square of one difference, so dividing by it would
    scale that channel by an arbitrary factor (up to 100 at the floor) and a deep level's
    activations would reach 1e3..1e4 on other inputs.

    Args:
        y: float64 NCHW ``[N, C, H, W]``.

    Returns:
        (mean, std), float64 ``[C]`` each.
    """
    mean = y.mean(axis=(0, 2, 3))
    var = y.var(axis=(0, 2, 3))
    if y.shape[0] * y.shape[2] * y.shape[3] < MIN_CHANNEL_SAMPLES:
        var = np.full_like(var, var.mean())
    return round_significant(mean), round_significant(np.maximum(np.sqrt(var), _STD_FLOOR))


def weight_count(model: onnx.ModelProto) -> int:
    """Number of parameters a model holds: elements of the initializers that are weights or
    biases (inputs 1 and 2) of Conv, ConvTranspose and Gemm nodes. Constants of the decode
    (anchors, strides, priors) are not counted, as torch does not count buffers."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    used = {i for n in model.graph.node if n.op_type in WEIGHT_OPS for i in n.input[1:3]}
    return sum(sizes[name] for name in used if name in sizes)
