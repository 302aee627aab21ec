"""IR verifier: use-def consistency, topological order, shapes, dtypes, quantization params.

Runs after every pass in tests and under ``--verify``. Each failure names the node and the rule.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import ATTRS_OF_OP, Op
from tcc_compiler.ir.shapes import infer_shape


class VerifyError(InternalError):
    """The IR broke a structural rule (a compiler bug, or a hand-edited IR file)."""


def verify(graph: Graph, quantized: bool = False) -> None:
    """Check the graph's invariants.

    Rules: (use-def) every input of a node is a graph input, a constant or the output of an
    earlier node, and every value's ``uses`` list matches the nodes that read it; (names)
    node and value names are unique; (attrs) attrs type fits the op; (shape) each output's
    shape equals the op's shape rule; (dtypes) when not ``quantized``, every value a node
    reads or writes is float32 (argmax's index output excepted); (quant) when ``quantized``,
    every activation value has int8/int32 dtype and finite positive scales, zero points in
    the dtype's range.

    Raises:
        VerifyError: naming the node (or value) and the rule that failed.
    """
    _check_unique_value_names(graph)
    produced: set[int] = {id(v) for v in graph.inputs}
    node_names: set[str] = set()
    for node in graph.nodes:
        where = f"node '{node.name}' ({node.op.value})"
        if node.name in node_names:
            raise VerifyError(f"{where}: duplicate node name (rule: unique names)")
        node_names.add(node.name)
        if not isinstance(node.attrs, ATTRS_OF_OP[node.op]):
            raise VerifyError(f"{where}: attrs {type(node.attrs).__name__} (rule: typed attrs)")
        _check_use_def(where, node, produced)
        _check_shape(where, node)
        if quantized:
            _check_node_quant(where, node)
        else:
            _check_float_dtypes(where, node)
    for v in graph.values():
        for n, j in v.uses:
            if j >= len(n.inputs) or n.inputs[j] is not v:
                raise VerifyError(f"value '{v.name}': stale use by '{n.name}' (rule: use lists)")
    for o in graph.outputs:
        if not o.is_const and id(o) not in produced:
            raise VerifyError(f"graph output '{o.name}' is never produced (rule: use-def)")


def _check_unique_value_names(graph: Graph) -> None:
    value_names: dict[str, int] = {}
    for v in graph.values():
        if v.name in value_names and value_names[v.name] != id(v):
            raise VerifyError(f"value '{v.name}': name used by two values (rule: unique names)")
        value_names[v.name] = id(v)


def _check_use_def(where: str, node, produced: set[int]) -> None:
    """Inputs produced before use and listing this use; outputs produced by this node (whose
    ids join ``produced``)."""
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        if not v.is_const and id(v) not in produced:
            raise VerifyError(f"{where}: input {i} '{v.name}' is not produced before use "
                              "(rule: topological order / use-def)")
        if not any(n is node and j == i for n, j in v.uses):
            raise VerifyError(f"{where}: input {i} '{v.name}' misses this use "
                              "(rule: use lists)")
    for v in node.outputs:
        if v.producer is not node:
            raise VerifyError(f"{where}: output '{v.name}' has another producer "
                              "(rule: single producer)")
        produced.add(id(v))


def _check_shape(where: str, node) -> None:
    try:
        shape = infer_shape(node.op, node.attrs,
                            [v.shape if v is not None else None for v in node.inputs])
    except (InternalError, IndexError, TypeError, ValueError) as exc:
        raise VerifyError(f"{where}: shape rule failed ({exc})") from None
    if tuple(shape) != tuple(node.output.shape):
        raise VerifyError(f"{where}: output shape {node.output.shape} but the op gives "
                          f"{tuple(shape)} (rule: shapes)")


def _check_node_quant(where: str, node) -> None:
    if node.op in (Op.SOFTMAX, Op.ARGMAX):
        return
    for v in [node.input(0)] + node.outputs:
        _check_quant(where, v)


def _check_float_dtypes(where: str, node) -> None:
    # argmax's output is an index (int64 in ONNX; the importer keeps float32)
    outs = [] if node.op is Op.ARGMAX else node.outputs
    for v in list(node.inputs) + outs:
        if v is not None and v.dtype != "float32":
            raise VerifyError(f"{where}: value '{v.name}' dtype {v.dtype} in a float "
                              "graph (rule: float graphs are float32 throughout)")


def _check_quant(where: str, v) -> None:
    if v is None or v.is_const:
        return
    q = v.quant
    if q is None:
        raise VerifyError(f"{where}: value '{v.name}' has no quantization parameters "
                          "(rule: quant params present)")
    if v.dtype not in ("int8", "int16", "int32"):
        raise VerifyError(f"{where}: value '{v.name}' dtype {v.dtype} (rule: int8/int16/int32)")
    if not np.all(np.isfinite(q.scale)) or np.any(q.scale <= 0):
        raise VerifyError(f"{where}: value '{v.name}' scale must be finite and > 0 "
                          "(rule: quant params sane)")
    info = np.iinfo(np.dtype(v.dtype))
    lo, hi = int(info.min), int(info.max)
    if np.any(q.zero_point < lo) or np.any(q.zero_point > hi):
        raise VerifyError(f"{where}: value '{v.name}' zero point out of {v.dtype} range "
                          "(rule: quant params sane)")
