"""Converters of the channel-layout ops: Concat, Split and Slice along the NCHW channel axis
(IR ops ``concat`` and ``slice``, run as views of a shared DRAM buffer where the memory planner
can place them so, else as DMA copies: schedule/views.py), and Transpose (layout views, the
NHWC input transpose, and the channel shuffle: IR op ``shuffle``, DMA only).

Attribute and input forms follow the ONNX operator docs (https://onnx.ai/onnx/operators/):
Split's sizes are an attribute before opset 13, an optional input from 13, ``num_outputs``
from 18 (the last part takes the remainder); Slice's starts/ends are attributes before opset
10, inputs (with optional axes and steps) from 10, clamped to the axis as ONNX specifies.
:mod:`tcc_compiler.frontend.converters` merges :data:`CHANNEL_CONVERTERS` into its table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.frontend.views import emit_view
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import ConcatAttrs, Op, ShuffleAttrs, SliceAttrs, TransposeAttrs


def _channel_axis(x: Value, axis: int, what: str) -> None:
    """Check that ``axis`` of ``x`` is the channel axis of a rank-4 NCHW map.

    Raises:
        Unsupported: another rank or axis.
    """
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise Unsupported(f"{what} axis {axis} out of range for rank {rank}")
    if rank != 4 or axis % rank != 1:
        raise Unsupported(f"{what} along axis {axis} of {x.shape}: only the channel axis of an "
                          "NCHW map (axis 1 of rank 4) is a view on the NPU")


def concat(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Concat along the channel axis of activations -> concat (one input: an alias)."""
    xs = [ctx.get(node, i) for i in range(len(node.input)) if node.input[i]]
    if any(x.is_const for x in xs):
        raise Unsupported("Concat of a constant with activations (constants are not "
                          "activations the NPU holds)")
    axis = int(attrs_of(node).get("axis", 1))
    _channel_axis(xs[0], axis, "Concat")
    if len(xs) == 1:
        ctx.alias(node.output[0], xs[0])
        return
    ctx.emit(Op.CONCAT, node, xs, ConcatAttrs(1))


def _emit_slice(ctx: Ctx, node, x: Value, start: int, end: int, out_name: str) -> None:
    if start == 0 and end == x.shape[1]:
        ctx.alias(out_name, x)
    else:
        ctx.emit(Op.SLICE, node, [x], SliceAttrs(start, end, 1), out_name=out_name)


def split(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Split along the channel axis -> one slice per output."""
    x = ctx.get(node, 0)
    if x.is_const:
        raise Unsupported("Split of a constant left after folding")
    a = attrs_of(node)
    axis = int(a.get("axis", 0))
    _channel_axis(x, axis, "Split")
    c = x.shape[1]
    n_out = len(node.output)
    if "split" in a:
        sizes = [int(s) for s in a["split"]]
    elif len(node.input) > 1 and node.input[1]:
        sizes = [int(s) for s in np.asarray(ctx.const(node, 1, "split")).reshape(-1)]
    else:   # equal parts; from opset 18 num_outputs with the last part the remainder
        step = -(-c // n_out)
        sizes = [min(step, c - i * step) for i in range(n_out)]
    if len(sizes) != n_out or sum(sizes) != c or min(sizes) <= 0:
        raise Unsupported(f"split sizes {sizes} do not cut {c} channels into {n_out} "
                          "non-empty parts")
    start = 0
    for name, size in zip(node.output, sizes):
        if name:
            _emit_slice(ctx, node, x, start, start + size, name)
        start += size


def _slice_inputs(ctx: Ctx, node: onnx.NodeProto, rank: int):
    """(starts, ends, axes, steps) of a Slice node as int lists."""
    a = attrs_of(node)
    if "starts" in a:   # opset < 10: attributes, step 1
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        return starts, ends, axes, [1] * len(starts)
    vals = []
    for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        v = ctx.const(node, i, what)
        vals.append(None if v is None else [int(e) for e in np.asarray(v).reshape(-1)])
    starts, ends, axes, steps = vals
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    return starts, ends, [ax % rank if -rank <= ax < rank else ax for ax in axes], steps


def slice_op(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Slice with constant bounds: a step-1 range of the channel axis -> slice; ranges that
    cover a whole axis are no-ops."""
    x = ctx.get(node, 0)
    if x.is_const:
        raise Unsupported("Slice of a constant left after folding")
    starts, ends, axes, steps = _slice_inputs(ctx, node, len(x.shape))
    rng = None
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        if not 0 <= ax < len(x.shape):
            raise Unsupported(f"Slice axis {ax} out of range for rank {len(x.shape)}")
        d = x.shape[ax]
        if sp != 1:
            raise Unsupported(f"Slice step {sp} on axis {ax}: only step 1 is a view")
        st = min(max(st + d if st < 0 else st, 0), d)   # ONNX clamping rule for step 1
        en = min(max(en + d if en < 0 else en, 0), d)
        if st == 0 and en == d:
            continue
        if en <= st:
            raise Unsupported(f"Slice of axis {ax} is empty ([{st}, {en}))")
        _channel_axis(x, ax, "Slice")
        rng = (st, en)
    if rng is None:
        ctx.alias(node.output[0], x)
    else:
        _emit_slice(ctx, node, x, rng[0], rng[1], node.output[0])


def transpose(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Transpose: the NHWC->NCHW input transpose, or a permutation that moves only size-1 axes
    (a pure view, e.g. NCHW->NHWC of a 1x1 map before Flatten)."""
    x = ctx.get(node, 0)
    perm = tuple(int(p) for p in attrs_of(node).get("perm", range(len(x.shape) - 1, -1, -1)))
    if ctx.g.inputs and x is ctx.g.inputs[0] and perm == (0, 3, 1, 2):   # (the image input)
        ctx.emit(Op.TRANSPOSE, node, [x], TransposeAttrs(perm))
        return
    moved = [p for p in perm if x.shape[p] != 1]
    if moved == sorted(moved):
        emit_view(ctx, node, x, tuple(x.shape[p] for p in perm))
        return
    base = _shuffle_base(x, perm)
    if base is not None:   # channel shuffle: data movement, then a view in the 5-D shape
        s = ctx.emit(Op.SHUFFLE, node, [base], ShuffleAttrs(x.shape[1]),
                     out_name=ctx.g.fresh_name(node.output[0] + "_shuffled"))
        emit_view(ctx, node, s, tuple(x.shape[p] for p in perm))
        return
    raise Unsupported(f"Transpose perm={list(perm)} of {x.shape} moves data; only layout "
                      "views, the NHWC input transpose and channel shuffles (a Reshape "
                      "[N, g, C/g, H, W] then perm [0, 2, 1, 3, 4]) are supported")


def _shuffle_base(x: Value, perm: tuple[int, ...]) -> Value | None:
    """The [1, C, H, W] activation whose channel shuffle this Transpose computes: ``x`` is a
    Reshape of it into [1, g, C/g, H, W] and ``perm`` swaps the two channel axes; else None."""
    src = x.producer
    if perm != (0, 2, 1, 3, 4) or src is None or src.op is not Op.RESHAPE:
        return None
    base = src.inputs[0]
    if len(base.shape) != 4 or base.shape[0] != 1 or x.shape[0] != 1:
        return None
    _, c, h, w = base.shape
    if x.shape[3:] != (h, w) or x.shape[1] * x.shape[2] != c:
        return None
    return base


CHANNEL_CONVERTERS: dict[str, Callable[[Ctx, onnx.NodeProto], None]] = {
    "Transpose": transpose,
    "Concat": concat,
    "Split": split,
    "Slice": slice_op,
}
