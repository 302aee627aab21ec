"""The state every ONNX converter shares: the IR graph being built, ONNX tensor name -> IR value,
pads waiting to fold into the next Conv, and the refusal exceptions.

A converter (:mod:`tcc_compiler.frontend.converters` lists them all) reads one ONNX node with
:func:`attrs_of` and :meth:`Ctx.get`/:meth:`Ctx.const`, appends IR nodes with :meth:`Ctx.emit`,
and raises :class:`Unsupported` with the constraint that failed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.shapes import infer_shape


class Unsupported(Exception):
    """A node the NPU cannot run; the message says which constraint failed and what to do."""


class Downstream(Exception):
    """A node reads the output of a node already reported as unsupported (not re-reported)."""


class Ctx:
    """Conversion state: ONNX tensor name -> IR value, plus pending pads to fold into convs."""

    def __init__(self, graph: Graph, where: str, opset: int):
        self.g = graph
        self.where = where
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.onnx_shapes: dict[str, tuple[int, ...]] = {}
        #: ONNX elem_type (onnx.TensorProto enum) of the tensors shape inference typed
        self.onnx_types: dict[str, int] = {}
        self.pending_pad: dict[str, tuple[Value, tuple[int, int, int, int], str]] = {}
        self.poisoned: set[str] = set()

    def poison(self, node: onnx.NodeProto) -> None:
        """Mark the outputs of a refused node. Outputs whose shape ONNX inferred get a
        stand-in value (never part of a graph that is returned) so that the nodes reading them
        are still checked on their own merits; the others make readers raise
        :class:`Downstream`."""
        for name in node.output:
            if not name:
                continue
            self.poisoned.add(name)
            shape = self.onnx_shapes.get(name)
            if shape and all(d > 0 for d in shape):
                self.values[name] = Value(name, shape, "float32")

    def add_const(self, name: str, arr: np.ndarray) -> Value:
        """Register a constant tensor under its ONNX name."""
        v = Value(name, arr.shape, str(arr.dtype), const=arr)
        self.values[name] = v
        return v

    def add_input(self, name: str, shape: tuple[int, ...]) -> Value:
        """Register the graph's image input."""
        v = Value(name, shape, "float32")
        self.values[name] = v
        self.g.inputs.append(v)
        return v

    def lookup(self, name: str) -> Value | None:
        """The IR value for an ONNX tensor name, None when unknown."""
        return self.values.get(name)

    def get(self, node: onnx.NodeProto, i: int) -> Value | None:
        """Input ``i`` of ``node`` as an IR value (None when omitted)."""
        if i >= len(node.input) or node.input[i] == "":
            return None
        v = self.values.get(node.input[i])
        if v is None:
            if node.input[i] in self.poisoned:
                raise Downstream(node.input[i])
            if node.input[i] in self.pending_pad:
                raise Unsupported("Pad output is read by a node that cannot absorb padding "
                                  "(only Conv and MaxPool can)")
            raise Unsupported(f"input '{node.input[i]}' is not produced by a supported node")
        return v

    def const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as a constant array, None if omitted; Unsupported if not constant."""
        v = self.get(node, i)
        if v is None:
            return None
        if not v.is_const:
            raise Unsupported(f"{what} (input {i}) must be a constant initializer")
        return v.const

    def emit(self, op: Op, node: onnx.NodeProto, inputs: list[Value | None], attrs,
             out_name: str | None = None) -> Value:
        """Append one IR node for ``node`` and return its output value."""
        out_name = out_name or node.output[0]
        shape = infer_shape(op, attrs, [v.shape if v is not None else None for v in inputs])
        expect = self.onnx_shapes.get(out_name)
        if expect and all(d > 0 for d in expect) and tuple(expect) != tuple(shape):
            raise Unsupported(f"computed shape {shape} differs from ONNX shape {expect}")
        out = Value(out_name, shape, "float32")
        name = node.name or out_name
        if any(n.name == name for n in self.g.nodes):
            name = self.g.fresh_name(name)
        self.g.add_node(op, name, inputs, [out], attrs, source=[node.name or out_name])
        self.values[out_name] = out
        return out

    def alias(self, onnx_name: str, value: Value) -> None:
        """Make an ONNX tensor name refer to an existing value (Identity, Dropout, views)."""
        self.values[onnx_name] = value


def attrs_of(node: onnx.NodeProto) -> dict:
    """The node's attributes as a plain dict of Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
