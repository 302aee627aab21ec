"""Output-shape rules of the IR ops (NCHW), shared by the frontend, passes and verifier."""

from __future__ import annotations

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.ops import ConvAttrs, Op, PoolAttrs


def conv_out_hw(h: int, w: int, kernel, strides, pads, dilations=(1, 1)) -> tuple[int, int]:
    """Spatial output size of a conv/pool: floor((H + t + b - ((K-1)*d + 1)) / s) + 1.

    Raises:
        InternalError: a kernel, stride or dilation below 1 or a negative pad (a hand-edited
            ``.tir`` dump reaches here; a stride of 0 used to raise ZeroDivisionError, exit 1).
    """
    if min(*kernel, *strides, *dilations) < 1 or min(pads) < 0:
        raise InternalError(f"kernel {list(kernel)}, strides {list(strides)} and dilations "
                            f"{list(dilations)} must be >= 1 and pads {list(pads)} >= 0")
    kh, kw = kernel
    eh = (kh - 1) * dilations[0] + 1
    ew = (kw - 1) * dilations[1] + 1
    oh = (h + pads[0] + pads[2] - eh) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - ew) // strides[1] + 1
    return oh, ow


def infer_shape(op: Op, attrs, in_shapes: list[tuple[int, ...] | None]) -> tuple[int, ...]:
    """Output shape of one node from its input shapes.

    Args:
        op: op kind. attrs: its attribute dataclass.
        in_shapes: shapes of the inputs in order (None for an absent optional input).

    Raises:
        InternalError: the input shapes do not fit the op.
    """
    rule = _RULES.get(op)
    # element-wise unary ops and batchnorm keep the shape
    return rule(attrs, in_shapes) if rule else in_shapes[0]


def _conv_shape(attrs, in_shapes) -> tuple[int, ...]:
    assert isinstance(attrs, ConvAttrs)
    n, c, h, w = in_shapes[0]
    wshape = in_shapes[1]
    if c != wshape[1] * attrs.group:
        raise InternalError(f"conv: input has {c} channels, weights expect "
                            f"{wshape[1] * attrs.group}")
    oh, ow = conv_out_hw(h, w, attrs.kernel, attrs.strides, attrs.pads, attrs.dilations)
    if oh <= 0 or ow <= 0:
        raise InternalError(f"conv: empty output {oh}x{ow}")
    return (n, wshape[0], oh, ow)


def _fc_shape(attrs, in_shapes) -> tuple[int, ...]:
    x, wshape = in_shapes[0], in_shapes[1]
    total = 1
    for d in x[1:]:
        total *= d
    if total != wshape[1] * wshape[2] * wshape[3]:
        raise InternalError(f"fc: input {x} does not match weights {wshape}")
    return (x[0], wshape[0])


def _pool_shape(attrs, in_shapes) -> tuple[int, ...]:
    assert isinstance(attrs, PoolAttrs)
    n, c, h, w = in_shapes[0]
    oh, ow = conv_out_hw(h, w, attrs.kernel, attrs.strides, attrs.pads)
    return (n, c, oh, ow)


def _axis(axis: int, rank: int, op: str) -> int:
    """``axis`` in ``[-rank, rank)`` as a non-negative index (a hand-edited ``.tir`` dump may
    hold any integer; ``%`` alone would wrap it to another axis).

    Raises:
        InternalError: the axis is outside ``[-rank, rank)``.
    """
    if not -rank <= axis < rank:
        raise InternalError(f"{op}: axis {axis} outside [-{rank}, {rank}) for a rank-{rank} "
                            "input")
    return axis % rank


def _softmax_shape(attrs, in_shapes) -> tuple[int, ...]:
    _axis(attrs.axis, len(in_shapes[0]), "softmax")
    return in_shapes[0]


def _group_softmax_shape(attrs, in_shapes) -> tuple[int, ...]:
    x = in_shapes[0]
    if len(x) != 4 or attrs.group < 1 or x[1] % attrs.group:
        raise InternalError(f"group_softmax: {x} is not NCHW with channels a multiple of "
                            f"group {attrs.group}")
    return x


def _argmax_shape(attrs, in_shapes) -> tuple[int, ...]:
    x = in_shapes[0]
    axis = _axis(attrs.axis, len(x), "argmax")
    if attrs.keepdims:
        return tuple(1 if i == axis else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i != axis)


def _concat_shape(attrs, in_shapes) -> tuple[int, ...]:
    first = in_shapes[0]
    ax = _axis(attrs.axis, len(first), "concat")
    for s in in_shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first))
                                       if i != ax):
            raise InternalError(f"concat: shapes {in_shapes} differ outside axis {ax}")
    return tuple(sum(s[ax] for s in in_shapes) if i == ax else d for i, d in enumerate(first))


def _interleave_shape(attrs, in_shapes) -> tuple[int, ...]:
    first = in_shapes[0]
    if len(in_shapes) != attrs.sh * attrs.sw or any(s != first for s in in_shapes):
        raise InternalError(f"interleave {attrs.sh}x{attrs.sw}: needs as many same-shaped "
                            f"inputs, got {in_shapes}")
    n, c, h, w = first
    return (n, c, h * attrs.sh, w * attrs.sw)


def _slice_shape(attrs, in_shapes) -> tuple[int, ...]:
    x = in_shapes[0]
    ax = _axis(attrs.axis, len(x), "slice")
    if not 0 <= attrs.start < attrs.end <= x[ax]:
        raise InternalError(f"slice: range [{attrs.start}, {attrs.end}) outside axis {ax} "
                            f"of {x}")
    return tuple(attrs.end - attrs.start if i == ax else d for i, d in enumerate(x))


def _broadcast_shape(attrs, in_shapes) -> tuple[int, ...]:
    a, b = in_shapes[0], in_shapes[1]
    return a if len(a) >= len(b) else b


#: Op -> shape rule (attrs, input shapes) -> output shape; ops not listed keep their
#: first input's shape.
_RULES = {
    Op.CONV: _conv_shape,
    Op.FC: _fc_shape,
    Op.MAXPOOL: _pool_shape,
    Op.AVGPOOL: _pool_shape,
    Op.GAP: lambda attrs, s: (s[0][0], s[0][1], 1, 1),
    Op.RESHAPE: lambda attrs, s: tuple(attrs.shape),
    Op.TRANSPOSE: lambda attrs, s: tuple(s[0][p] for p in attrs.perm),
    Op.ARGMAX: _argmax_shape,
    Op.SOFTMAX: _softmax_shape,
    Op.GROUP_SOFTMAX: _group_softmax_shape,
    Op.CONCAT: _concat_shape,
    Op.RESIZE: lambda attrs, s: (*s[0][:2], s[0][2] * attrs.scale_h, s[0][3] * attrs.scale_w),
    Op.SLICE: _slice_shape,
    Op.INTERLEAVE: _interleave_shape,
    Op.ADD: _broadcast_shape,
    Op.MUL: _broadcast_shape,
    Op.SUB: _broadcast_shape,
}


def npu_hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The NPU's (H, W, C) for an IR value shape: NCHW [1,C,H,W] -> (H, W, C); [1, M] -> (1, 1, M).

    Raises:
        InternalError: batch != 1 or a rank other than 2 and 4.
    """
    if len(shape) == 4 and shape[0] == 1:
        return (shape[2], shape[3], shape[1])
    if len(shape) == 2 and shape[0] == 1:
        return (1, 1, shape[1])
    raise InternalError(f"shape {shape}: the NPU holds batch-1 rank-2 or rank-4 tensors only")


def is_nhwc_view(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """True when reshaping NCHW ``src`` to ``dst`` keeps the NHWC byte order (a free view):
    both shapes must have their NCHW and NHWC element orders equal (C == 1 or H*W == 1)."""
    def same_order(s):
        if len(s) == 2:
            return True
        return len(s) == 4 and (s[1] == 1 or s[2] * s[3] == 1)
    return same_order(src) and same_order(dst)
