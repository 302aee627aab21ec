"""ONNX shape inference without shipping the weights through it.

``onnx.shape_inference.infer_shapes`` serialises the whole model to C++ and parses the result
back: for ResNet-50 (100 MB of float weights) about 0.5 s of CPU and 300 MB of transient
memory per call, and the import calls it up to three times (the compile's peak memory was
reached there). Inference reads a float initializer's type and dims, never its values (only
integer tensors feed shape arithmetic: Reshape/Slice/Expand/Tile/Pad operands), so
:func:`infer_shapes` runs it on a light copy whose large float initializers carry no data,
then puts the original initializers back: the result equals ``infer_shapes(proto,
strict_mode=False)`` byte for byte (tests/frontend/test_shape_infer.py; checked on the zoo's
ResNet-50, YOLOv8n, EfficientNetV2-S, MobileNetV2 and the EfficientNet-Lite0 export).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

#: Float initializers with at least this many bytes of ``raw_data`` are left out of the copy.
LEND_BYTES = 1 << 12
#: Bytes per value of the float types lent out.
_FLOATS = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2,
           TensorProto.BFLOAT16: 2}


def _heavy(t: TensorProto) -> bool:
    """A float initializer with ``raw_data`` of at least :data:`LEND_BYTES`, its size read off
    its dims (``ByteSize`` and ``raw_data`` copy the payload on every call)."""
    item = _FLOATS.get(t.data_type)
    if item is None:
        return False
    n = item
    for d in t.dims:
        n *= d
    return n >= LEND_BYTES and t.HasField("raw_data")


def _light(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[int]]:
    """A copy of ``proto`` whose heavy initializers hold name, type and dims only; and the
    positions of those initializers."""
    light = onnx.ModelProto()
    for fd, val in proto.ListFields():
        if fd.name != "graph":
            _set(light, fd, val)
    heavy = []
    for fd, val in proto.graph.ListFields():
        if fd.name != "initializer":
            _set(light.graph, fd, val)
            continue
        for i, t in enumerate(val):
            if _heavy(t):
                heavy.append(i)
                light.graph.initializer.add(name=t.name, data_type=t.data_type,
                                            dims=t.dims)
            else:
                light.graph.initializer.add().CopyFrom(t)
    return light, heavy


def light_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose float initializers of :data:`LEND_BYTES` or more hold their
    name, type and dims but no data (every other field as in ``proto``): what the validity
    checks read (:func:`tcc_compiler.frontend.loader.check_onnx_validity`), without a copy
    of the weights (ResNet-50: 100 MB)."""
    return _light(proto)[0]


def _set(msg, fd, val) -> None:
    """Copy one field value into ``msg``."""
    if hasattr(val, "extend"):          # a repeated field (protobuf containers)
        getattr(msg, fd.name).extend(val)
    elif fd.message_type is not None:
        getattr(msg, fd.name).CopyFrom(val)
    else:
        setattr(msg, fd.name, val)


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(proto, strict_mode=False)`` (a new model;
    ``proto`` is not changed), faster and lighter on models with large float weights
    (module docstring). Inference's exceptions pass through unchanged."""
    light, heavy = _light(proto)
    out = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    del light
    inits = out.graph.initializer
    for i in heavy:
        inits[i].CopyFrom(proto.graph.initializer[i])
    return out



#: GraphProto fields shape inference writes; everything else it leaves as it was.
_INFERRED = ("value_info", "input", "output")


def infer_shapes_into(proto: onnx.ModelProto) -> onnx.ModelProto:
    """:func:`infer_shapes` of ``proto`` written into ``proto`` itself (its graph's
    ``value_info``, ``input`` and ``output`` replaced by the inferred ones) and returned: no
    copy of the weights (on ResNet-50 about a tenth of a second of CPU, loaded machine). When
    inference changed anything else of the light copy, the result is :func:`infer_shapes`'s
    copy instead, so it always serializes to the bytes :func:`infer_shapes` gives.
    Inference's exceptions pass through unchanged (``proto`` then untouched)."""
    light, _ = _light(proto)
    out = onnx.shape_inference.infer_shapes(light, strict_mode=False)
    got = {name: list(getattr(out.graph, name)) for name in _INFERRED}
    for m in (light, out):
        for name in _INFERRED:
            m.graph.ClearField(name)
    if light.SerializeToString() != out.SerializeToString():
        return infer_shapes(proto)
    for name, items in got.items():
        field = getattr(proto.graph, name)
        del field[:]
        field.extend(items)
    return proto
