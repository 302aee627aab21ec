"""Converters of the ops that move no data: Reshape, Flatten, Squeeze / Unsqueeze (views in
NCHW element order), Identity / Dropout / Cast to float32 (aliases) and Constant.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import Op, ReshapeAttrs

log = logging.getLogger(__name__)


def _resolve_shape(x: Value, shape, allowzero: int = 0) -> tuple[int, ...]:
    shape = [int(s) for s in shape]
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            out.append(x.shape[i])
        else:
            out.append(s)
    total = int(np.prod(x.shape))
    if out.count(-1) > 1:
        raise Unsupported("more than one -1 in the target shape")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise Unsupported(f"cannot reshape {x.shape} to {shape}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise Unsupported(f"cannot reshape {x.shape} to {shape}")
    return tuple(out)


def reshape(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Reshape (shape attribute before opset 5, constant input after); 0 and -1 resolved."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    shape = a.get("shape") if "shape" in a else ctx.const(node, 1, "shape")
    if shape is None:
        raise Unsupported("target shape must be constant")
    out = _resolve_shape(x, shape, int(a.get("allowzero", 0)))
    emit_view(ctx, node, x, out)


def emit_view(ctx: Ctx, node, x: Value, out: tuple[int, ...]) -> None:
    """``node``'s output as a view of ``x`` in shape ``out`` (NCHW element order): an alias
    when the shape is unchanged (also for a view of a view back to the original's shape), a
    reshaped constant, or an IR ``reshape``."""
    src = x.producer
    if src is not None and src.op is Op.RESHAPE and out == src.inputs[0].shape:
        x = src.inputs[0]   # a view of a view back to the original shape: the original
    if out == x.shape:
        ctx.alias(node.output[0], x)
    elif x.is_const:
        ctx.add_const(node.output[0], x.const.reshape(out))
    else:
        ctx.emit(Op.RESHAPE, node, [x], ReshapeAttrs(out))


def flatten(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Flatten(axis)."""
    x = ctx.get(node, 0)
    axis = int(attrs_of(node).get("axis", 1))
    if not -len(x.shape) <= axis <= len(x.shape):
        raise Unsupported(f"axis {axis} out of range for rank {len(x.shape)}")
    axis = axis + len(x.shape) if axis < 0 else axis  # ONNX: negative counts from the back
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    emit_view(ctx, node, x, (lead, int(np.prod(x.shape[axis:]))))


def squeeze_like(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Squeeze / Unsqueeze: pure views once shapes are known."""
    x = ctx.get(node, 0)
    out = ctx.onnx_shapes.get(node.output[0])
    if not out or any(d < 0 for d in out):
        raise Unsupported("output shape unknown after shape inference")
    emit_view(ctx, node, x, tuple(out))


def identity(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Identity / Dropout (inference): the output is the input.

    Dropout in training mode (opset 6 ``is_test=0``; from opset 12 a constant ``training_mode``
    input that is true while ``ratio`` is not 0) drops random elements and is refused; a
    ``training_mode`` computed by the graph is refused by :meth:`Ctx.const`."""
    if node.op_type == "Dropout":
        a = attrs_of(node)
        if ctx.opset < 7 and int(a.get("is_test", 1)) == 0:
            raise Unsupported("is_test=0 (training: drops random elements); export the model "
                              "in eval mode")
        if ctx.opset >= 12:
            training = ctx.const(node, 2, "training_mode")
            ratio = ctx.const(node, 1, "ratio")
            ratio = 0.5 if ratio is None else float(ratio)  # the schema's default
            if training is not None and bool(training) and ratio != 0.0:
                raise Unsupported(f"training_mode=true with ratio {ratio} (drops random "
                                  "elements); export the model in eval mode")
        if len(node.output) > 1 and node.output[1]:
            log.debug("Dropout %s: mask output ignored", node.name)
    ctx.alias(node.output[0], ctx.get(node, 0))


def cast(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Cast to float32 of a float32 tensor: the output is the input (an alias).

    torch.onnx writes ``Cast(to=FLOAT)`` for ``x.float()`` / ``x.to(torch.float32)`` even when
    ``x`` already is float32 (e.g. an in-model ``(x.float() / 255 - mean) / std``). Every
    activation tccc imports is float32 (the graph input must be; every converter writes
    float32), so such a Cast changes no value. Casts of constants are folded before import.

    Raises:
        Unsupported: ``to`` is not FLOAT (float16 / float64 / integer casts change values),
            or the input is not float32 (by ONNX shape inference's type, or the stand-in of
            a refused producer whose type is unknown).
    """
    to = int(attrs_of(node).get("to", 0))
    if to != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() \
            else str(to)
        raise Unsupported(f"Cast to {name} (only a Cast to FLOAT of a float32 tensor, a no-op, "
                          "is supported)")
    src = node.input[0] if node.input else ""
    typed = ctx.onnx_types.get(src, onnx.TensorProto.UNDEFINED)
    if typed not in (onnx.TensorProto.FLOAT, onnx.TensorProto.UNDEFINED) or (
            typed == onnx.TensorProto.UNDEFINED and src in ctx.poisoned):
        what = onnx.TensorProto.DataType.Name(typed) if typed else "untyped host-computed"
        raise Unsupported(f"Cast of a {what} input (only a Cast to FLOAT of a float32 "
                          "tensor, a no-op, is supported)")
    x = ctx.get(node, 0)
    if x is None or x.dtype != "float32":
        raise Unsupported("Cast of a non-float32 input (only a Cast to FLOAT of a float32 "
                          "tensor, a no-op, is supported)")
    ctx.alias(node.output[0], x)


def constant(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Constant left after folding (e.g. an unused one): register its value."""
    a = attrs_of(node)
    if "value" in a:
        ctx.add_const(node.output[0], onnx.numpy_helper.to_array(a["value"]))
    else:
        raise Unsupported("only tensor-valued Constant is supported")
