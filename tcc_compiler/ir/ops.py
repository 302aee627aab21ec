"""The IR's op set and typed attributes (one frozen dataclass per op kind).

Layouts: every activation value in the graph IR is NCHW (as in ONNX); conv weights are OIHW
(O = output channels, I = input channels per group); FC weights are [M, C, H, W] (a fully
connected layer over an NCHW map is a conv whose kernel covers the whole map).
The NPU layouts (NHWC activations, OHWI weights) appear only after scheduling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Op(str, enum.Enum):
    """Op kinds of the graph IR. Values are the spellings used in the textual IR."""

    CONV = "conv"              # y = act(conv(x, w) + b [+ shortcut [* sc_scale[c]]]), then
                               # [clamped to [lo[c], hi[c]]: input 5, float [2, O]]
    FC = "fc"                  # y = act(w . flatten(x) + b [+ shortcut]); x NCHW, w [M,C,H,W]
    BATCHNORM = "batchnorm"    # y = (x - mean) / sqrt(var + eps) * gamma + beta (pre-fold only)
    ADD = "add"                # y = act(a + b), a and b the same shape (or b per-channel const)
    MUL = "mul"                # y = a * b: b a per-channel constant (pre-fold only) or an
                               # activation (same shape or [N,C,1,1] broadcast over [N,C,H,W])
    SUB = "sub"                # y = a - b, two activations (b same shape or [N,C,1,1])
    RELU = "relu"              # y = max(x, 0)
    CLIP = "clip"              # y = min(max(x, lo), hi)
    LUT = "lut"                # y = f(x), f a unary float function (LutAttrs); int8 -> int8 table
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    GAP = "gap"                # global average pool: [N,C,H,W] -> [N,C,1,1]
    RESHAPE = "reshape"        # shape change that keeps NCHW element order (flatten, view)
    TRANSPOSE = "transpose"    # permutation of axes (only recognised forms survive import)
    RESIZE = "resize"          # upsampling by integer factors: nearest (repeat) or bilinear
    SHUFFLE = "shuffle"        # channel shuffle: output channel j * g + i = input i * C/g + j
    CONCAT = "concat"          # channel concatenation [N,C1,H,W] ++ [N,C2,H,W] -> [N,C1+C2,H,W]
    SLICE = "slice"            # channel slice [N,C,H,W] -> [N,end-start,H,W] (Split, Slice)
    INTERLEAVE = "interleave"  # sh*sw phase maps [N,C,H,W] -> [N,C,H*sh,W*sw] (ConvTranspose)
    SOFTMAX = "softmax"        # host-side op at the graph end
    ARGMAX = "argmax"          # host-side op at the graph end
    GROUP_SOFTMAX = "group_softmax"  # NPU softmax over channel groups: [N,C,H,W], C = k*group


#: Input index of a conv's per-channel output clamp: float [2, O], rows ``lo``, ``hi`` (+-inf
#: where open), applied after the activation (passes/fold_after_act.py).
CLAMP_INPUT = 5
#: Ops executed by the host runtime after the NPU program (on dequantized outputs).
HOST_OPS = frozenset({Op.SOFTMAX, Op.ARGMAX})
#: Ops that change only the shape annotation, not the bytes, when H = W = 1 or a no-op view.
VIEW_OPS = frozenset({Op.RESHAPE})
#: Layout ops: each is a view of a shared DRAM buffer (producers write channel slices of a
#: concatenation or the pixel phases of an interleave, readers read channel slices) where the
#: memory planner can place it so (schedule/views.py), else a DMA copy. No arithmetic: inputs
#: and output share one set of quantization parameters.
CHANNEL_OPS = frozenset({Op.CONCAT, Op.SLICE, Op.INTERLEAVE})
#: Ops that the NPU executes as one command group each after fusion.
NPU_OPS = frozenset({Op.CONV, Op.FC, Op.ADD, Op.MAXPOOL, Op.AVGPOOL, Op.GAP, Op.LUT, Op.MUL,
                     Op.SUB, Op.RESIZE, Op.SHUFFLE, Op.GROUP_SOFTMAX})


class ActKind(str, enum.Enum):
    """Activation fused into an op's epilogue."""

    NONE = "none"
    RELU = "relu"
    CLIP = "clip"
    LEAKY = "leaky"    # x for x >= 0, lo * x below (LeakyRelu, PRelu with one slope)


@dataclass(frozen=True)
class Activation:
    """An epilogue activation. ``lo``/``hi`` are float bounds for CLIP; for LEAKY ``lo`` is the
    slope below zero (0 <= lo <= 1: a conv/fc's two-slope requantization, specs/quantization.md
    "Two-slope epilogue") and ``hi`` unused."""

    kind: ActKind = ActKind.NONE
    lo: float = 0.0
    hi: float = 0.0

    def bounds(self) -> tuple[float, float]:
        """Real-valued output bounds (lo, hi); +-inf where unbounded."""
        if self.kind is ActKind.RELU:
            return 0.0, float("inf")
        if self.kind is ActKind.CLIP:
            return self.lo, self.hi
        return float("-inf"), float("inf")

    def apply(self, x):
        """Apply to a float numpy array (float reference semantics)."""
        import numpy as np

        if self.kind is ActKind.RELU:
            return np.maximum(x, 0)
        if self.kind is ActKind.CLIP:
            return np.clip(x, self.lo, self.hi)
        if self.kind is ActKind.LEAKY:
            return np.where(x >= 0, x, x * np.asarray(self.lo, x.dtype))
        return x


NO_ACT = Activation()
RELU = Activation(ActKind.RELU)


@dataclass(frozen=True)
class ConvAttrs:
    """2-D convolution. ``pads`` = (top, left, bottom, right) in input pixels."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    act: Activation = NO_ACT


@dataclass(frozen=True)
class FcAttrs:
    """Fully connected layer over a whole NCHW map (weight [M, C, H, W])."""

    act: Activation = NO_ACT


@dataclass(frozen=True)
class BatchNormAttrs:
    """Inference BatchNormalization (ONNX BatchNormalization, spatial=1)."""

    epsilon: float = 1e-5


@dataclass(frozen=True)
class EltwiseAttrs:
    """Element-wise binary op (add, sub, mul) with an optional fused activation."""

    act: Activation = NO_ACT


@dataclass(frozen=True)
class ActAttrs:
    """Standalone activation (relu, clip)."""

    act: Activation = NO_ACT


class LutFunc(str, enum.Enum):
    """Unary functions run as an int8 -> int8 lookup table (numerics/lut.py defines each).

    ``alpha``/``beta`` of :class:`LutAttrs` are the ONNX attributes where the function has
    them: hardsigmoid (alpha, beta), leakyrelu/elu (alpha), clip (alpha = lo, beta = hi, either
    may be infinite); prelu takes its slope from a constant second input ([C] or [1]).
    """

    SIGMOID = "sigmoid"
    TANH = "tanh"
    SILU = "silu"              # x * sigmoid(x)
    HARDSIGMOID = "hardsigmoid"
    HARDSWISH = "hardswish"
    LEAKYRELU = "leakyrelu"
    PRELU = "prelu"
    MISH = "mish"
    GELU = "gelu"              # 0.5 x (1 + erf(x / sqrt 2))
    GELU_TANH = "gelu_tanh"    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    ELU = "elu"
    SOFTPLUS = "softplus"
    CLIP = "clip"
    ERF = "erf"


@dataclass(frozen=True)
class LutAttrs:
    """Lookup-table activation: ``func`` with its ONNX parameters ``alpha``, ``beta``."""

    func: LutFunc
    alpha: float = 0.0
    beta: float = 0.0


@dataclass(frozen=True)
class PoolAttrs:
    """Max/average pooling. ``pads`` = (top, left, bottom, right); ceil_mode is folded into
    extra bottom/right padding at import. ``count_include_pad`` applies to avgpool only."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = False


@dataclass(frozen=True)
class NoAttrs:
    """Ops without attributes (gap)."""


@dataclass(frozen=True)
class ReshapeAttrs:
    """Target shape (fully resolved, no 0 or -1)."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class TransposeAttrs:
    """Axis permutation (ONNX Transpose ``perm``)."""

    perm: tuple[int, ...]


class ResizeMode(str, enum.Enum):
    """Interpolation of a resize."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"


class ResizeCoord(str, enum.Enum):
    """ONNX Resize's coordinate transformation of a bilinear resize (numerics/resize.py;
    pytorch_half_pixel imports as half_pixel, equal for every upsampling)."""

    HALF_PIXEL = "half_pixel"
    ALIGN_CORNERS = "align_corners"
    ASYMMETRIC = "asymmetric"


@dataclass(frozen=True)
class ResizeAttrs:
    """Upsampling of H and W by the integer factors ``scale_h``, ``scale_w``.

    ``mode`` nearest: output pixel (y, x) is input pixel (y // scale_h, x // scale_w) (every
    ONNX coordinate mode the importer accepts reduces to this for integer factors;
    frontend/resize.py checks it; ``coord`` is unused). ``mode`` bilinear: the two-tap
    interpolation along each axis with ``coord``'s source coordinates (numerics/resize.py)."""

    scale_h: int
    scale_w: int
    mode: ResizeMode = ResizeMode.NEAREST
    coord: ResizeCoord = ResizeCoord.HALF_PIXEL


@dataclass(frozen=True)
class ShuffleAttrs:
    """Channel shuffle of ``groups`` groups (ShuffleNet's Reshape [N, g, C/g, H, W] ->
    Transpose(0, 2, 1, 3, 4) -> Reshape [N, C, H, W]): output channel ``j * groups + i`` is
    input channel ``i * (C / groups) + j``."""

    groups: int


@dataclass(frozen=True)
class InterleaveAttrs:
    """Interleave of ``sh * sw`` phase maps, inputs in row-major phase order: input
    ``r * sw + c`` holds output pixels (y * sh + r, x * sw + c). A transposed convolution is
    one conv per phase, interleaved (frontend/convtranspose.py)."""

    sh: int
    sw: int


@dataclass(frozen=True)
class ConcatAttrs:
    """Concatenation along ``axis`` (always 1, the NCHW channel axis, after import)."""

    axis: int = 1


@dataclass(frozen=True)
class SliceAttrs:
    """The channel range [start, end) of an NCHW value along ``axis`` (always 1 after import;
    step 1)."""

    start: int
    end: int
    axis: int = 1


@dataclass(frozen=True)
class GroupSoftmaxAttrs:
    """Softmax over channel groups of an NCHW tensor: channels ``[k * group, (k + 1) *
    group)`` of each pixel are normalised together (YOLOv8's DFL: 4 box sides x 16 bins)."""

    group: int


@dataclass(frozen=True)
class AxisAttrs:
    """Ops with a single axis (softmax, argmax)."""

    axis: int = -1
    keepdims: bool = True


ATTRS_OF_OP: dict[Op, type] = {
    Op.CONV: ConvAttrs,
    Op.FC: FcAttrs,
    Op.BATCHNORM: BatchNormAttrs,
    Op.ADD: EltwiseAttrs,
    Op.MUL: EltwiseAttrs,
    Op.SUB: EltwiseAttrs,
    Op.RELU: ActAttrs,
    Op.CLIP: ActAttrs,
    Op.LUT: LutAttrs,
    Op.MAXPOOL: PoolAttrs,
    Op.AVGPOOL: PoolAttrs,
    Op.GAP: NoAttrs,
    Op.RESHAPE: ReshapeAttrs,
    Op.TRANSPOSE: TransposeAttrs,
    Op.RESIZE: ResizeAttrs,
    Op.SHUFFLE: ShuffleAttrs,
    Op.CONCAT: ConcatAttrs,
    Op.INTERLEAVE: InterleaveAttrs,
    Op.SLICE: SliceAttrs,
    Op.SOFTMAX: AxisAttrs,
    Op.ARGMAX: AxisAttrs,
    Op.GROUP_SOFTMAX: GroupSoftmaxAttrs,
}
