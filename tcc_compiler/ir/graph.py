"""SSA graph IR: values with one producer and a list of uses, nodes in topological order.

Every edit goes through :class:`Graph` methods (``add_node``, ``remove_node``,
``replace_all_uses_with``) so that use-def links never drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.ops import ATTRS_OF_OP, Op


@dataclass
class QuantParams:
    """Affine quantization parameters: ``real = scale * (q - zero_point)``.

    Attributes:
        scale: float64 array, shape () for per-tensor or (C,) for per-channel.
        zero_point: int64 array of the same shape as ``scale``.
        axis: channel axis for per-channel parameters, None for per-tensor.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        self.scale = np.asarray(self.scale, dtype=np.float64)
        self.zero_point = np.asarray(self.zero_point, dtype=np.int64)

    @property
    def per_channel(self) -> bool:
        """True when scale has one entry per channel along ``axis``."""
        return self.axis is not None


class Value:
    """An SSA value: a tensor produced by one node (or a graph input / constant).

    Attributes:
        name: unique name in the graph.
        shape: tuple of ints (NCHW for 4-D activations).
        dtype: numpy dtype name: "float32", "int8", "int32".
        const: numpy array for constants (weights, biases), else None.
        quant: quantization parameters once quantized, else None.
        producer: the node writing this value, None for graph inputs and constants.
        uses: list of (node, input index) reading this value.
    """

    __slots__ = ("name", "shape", "dtype", "const", "quant", "producer", "uses")

    def __init__(self, name: str, shape: Iterable[int], dtype: str = "float32",
                 const: np.ndarray | None = None, quant: QuantParams | None = None):
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.const = const
        self.quant = quant
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []

    @property
    def is_const(self) -> bool:
        """True for constant tensors (initializers, folded constants)."""
        return self.const is not None

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.shape}, {self.dtype})"


class Node:
    """An op application.

    Attributes:
        op: the :class:`Op` kind.
        name: unique node name.
        inputs: list of :class:`Value` (None for an omitted optional input).
        outputs: list of :class:`Value`.
        attrs: the op's frozen attribute dataclass (see :data:`ATTRS_OF_OP`).
        source: names of the ONNX nodes this node came from (provenance).
    """

    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "source")

    def __init__(self, op: Op, name: str, attrs: Any, source: Iterable[str] = ()):
        if not isinstance(attrs, ATTRS_OF_OP[op]):
            raise InternalError(f"node {name}: attrs {type(attrs).__name__} do not fit "
                                f"op {op.value}")
        self.op = op
        self.name = name
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.attrs = attrs
        self.source = tuple(source)

    def input(self, i: int) -> Value | None:
        """Input ``i`` or None when absent."""
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def output(self) -> Value:
        """The first (usually only) output."""
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.op.value}, {self.name!r})"


@dataclass
class Graph:
    """A dataflow graph.

    Attributes:
        name: graph name (from the ONNX model).
        inputs: graph input values (activations; constants are not inputs).
        outputs: graph output values.
        nodes: nodes in topological order.
        meta: free-form facts carried along (source file, opset, preprocessing).
    """

    name: str = "graph"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------
    def add_node(self, op: Op, name: str, inputs: list[Value | None], outputs: list[Value],
                 attrs: Any, source: Iterable[str] = (), index: int | None = None) -> Node:
        """Create a node, link its uses and producers, insert it at ``index`` (default: end).

        Raises:
            InternalError: an output already has a producer.
        """
        node = Node(op, name, attrs, source)
        for i, v in enumerate(inputs):
            node.inputs.append(v)
            if v is not None:
                v.uses.append((node, i))
        for v in outputs:
            if v.producer is not None:
                raise InternalError(f"value {v.name} already produced by {v.producer.name}")
            v.producer = node
            node.outputs.append(v)
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    def remove_node(self, node: Node) -> None:
        """Unlink and remove ``node``; its outputs must be unused (rewire them first).

        Raises:
            InternalError: an output still has uses or is a graph output.
        """
        for v in node.outputs:
            if v.uses or any(v is o for o in self.outputs):
                raise InternalError(f"cannot remove {node.name}: output {v.name} still used")
            v.producer = None
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses = [(n, j) for (n, j) in v.uses if not (n is node and j == i)]
        self.nodes.remove(node)

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        """Rewire input ``index`` of ``node`` to ``value`` keeping use lists right."""
        while len(node.inputs) <= index:
            node.inputs.append(None)
        old = node.inputs[index]
        if old is not None:
            old.uses = [(n, j) for (n, j) in old.uses if not (n is node and j == index)]
        node.inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new`` instead.

        When ``old`` is a graph output, ``new`` takes over its name (and ``old`` gets ``new``'s),
        so graph outputs keep the names the ONNX model gave them through fusion.

        In a float graph, fixed quantization parameters (``quant`` on a float32 value, from a
        pre-quantized model) move with the tensor: ``new`` now computes what ``old`` did, so
        ``old``'s parameters, when it has any, replace ``new``'s.
        """
        if old.quant is not None and old.dtype == new.dtype == "float32" and not new.is_const:
            new.quant = old.quant
        for node, idx in list(old.uses):
            self.set_input(node, idx, new)
        if self.is_output(old) and not self.is_output(new) and not new.is_const \
                and new not in self.inputs:
            old.name, new.name = new.name, old.name
        self.outputs = [new if o is old else o for o in self.outputs]

    def clone(self) -> "Graph":
        """A structural copy: new Value and Node objects; constant arrays are shared (passes
        replace constants, they never mutate them in place)."""
        vmap: dict[int, Value] = {}

        def cp(v: Value | None) -> Value | None:
            if v is None:
                return None
            if id(v) not in vmap:
                q = None
                if v.quant is not None:
                    q = QuantParams(v.quant.scale.copy(), v.quant.zero_point.copy(), v.quant.axis)
                vmap[id(v)] = Value(v.name, v.shape, v.dtype, const=v.const, quant=q)
            return vmap[id(v)]

        g = Graph(self.name, [cp(v) for v in self.inputs], [], [], dict(self.meta))
        for n in self.nodes:
            g.add_node(n.op, n.name, [cp(v) for v in n.inputs], [cp(v) for v in n.outputs],
                       n.attrs, n.source)
        g.outputs = [cp(v) for v in self.outputs]
        return g

    # ---- queries ------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        """Every value reachable from inputs, nodes and outputs, each once, in a stable order."""
        seen: set[int] = set()
        for v in self.inputs:
            if id(v) not in seen:
                seen.add(id(v))
                yield v
        for n in self.nodes:
            for v in list(n.inputs) + list(n.outputs):
                if v is not None and id(v) not in seen:
                    seen.add(id(v))
                    yield v
        for v in self.outputs:
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def consumers(self, value: Value) -> list[Node]:
        """Distinct nodes reading ``value`` in graph order."""
        users = {id(n) for n, _ in value.uses}
        return [n for n in self.nodes if id(n) in users]

    def is_output(self, value: Value) -> bool:
        """True when ``value`` is a graph output."""
        return any(value is o for o in self.outputs)

    def fresh_name(self, base: str) -> str:
        """A value/node name not used yet, derived from ``base``."""
        used = {v.name for v in self.values()} | {n.name for n in self.nodes}
        if base not in used:
            return base
        k = 1
        while f"{base}_{k}" in used:
            k += 1
        return f"{base}_{k}"

    def toposort(self) -> None:
        """Re-order ``nodes`` topologically, keeping the current order where it is legal."""
        order: list[Node] = []
        placed: set[int] = set()
        pending = list(self.nodes)
        produced_by_graph = {id(n) for n in self.nodes}
        while pending:
            progress = False
            rest = []
            for n in pending:
                ready = all(v is None or v.producer is None or id(v.producer) in placed
                            or id(v.producer) not in produced_by_graph for v in n.inputs)
                if ready:
                    order.append(n)
                    placed.add(id(n))
                    progress = True
                else:
                    rest.append(n)
            if not progress:
                raise InternalError("graph has a cycle: " + ", ".join(n.name for n in rest[:5]))
            pending = rest
        self.nodes = order

    def dead_code_elimination(self) -> int:
        """Remove nodes none of whose outputs reach a graph output. Returns the count removed."""
        removed = 0
        changed = True
        while changed:
            changed = False
            for n in reversed(list(self.nodes)):
                if all(not v.uses and not self.is_output(v) for v in n.outputs):
                    for v in n.outputs:
                        v.producer = None
                    self.remove_node(n)
                    removed += 1
                    changed = True
        return removed
