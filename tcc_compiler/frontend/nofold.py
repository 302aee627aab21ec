"""The import's constant folding skipped where it has nothing to do.

:func:`~tcc_compiler.frontend.onnx_import.prepare_onnx` folds constants with onnx-graphsurgeon:
shape inference, a graphsurgeon import, ``fold_constants().cleanup().toposort()``, an export
(every initializer copied twice) and shape inference again. Most float models hold nothing to
fold: no node whose inputs are all constants, no ``Shape`` node, no dead node. For such a
model the round trip only re-sorts the nodes, so :func:`nothing_to_fold` decides that from the
proto and :func:`graphsurgeon_order` sorts the nodes as graphsurgeon's ``toposort`` does
(onnx-graphsurgeon 0.5/0.6 ``Graph.toposort``: each node's level is one more than its highest
producer's, 0 without producers; the nodes stably sorted by level, which on a graph already in
topological order keeps the order among equal levels). The converted graph is the same
(tests/frontend/test_nofold.py compares both paths' IR on zoo and onnx-wheel models); on
ResNet-50 the import measured about half its time in the round trip (loaded machine).

Anything the round trip could change beyond the order declines the shortcut: a foldable or
input-less node, ``Shape`` (graphsurgeon folds ``Shape`` chains once shapes are known), a
subgraph or model function, a node no graph output needs, an initializer no node reads or one
that is also a graph input, repeated names, ``value_info`` already present (graphsurgeon
re-exports it with the first inference's shapes), an attribute that is not a plain number or
string (graphsurgeon converts attribute types), a graph output no node produces, or nodes not
in topological order.
"""

from __future__ import annotations

import logging

import onnx

from tcc_compiler.frontend.shape_infer import infer_shapes_into

log = logging.getLogger(__name__)

#: Attribute types that survive graphsurgeon's import/export unchanged.
_PLAIN = {onnx.AttributeProto.FLOAT, onnx.AttributeProto.INT, onnx.AttributeProto.STRING,
          onnx.AttributeProto.FLOATS, onnx.AttributeProto.INTS}


def nothing_to_fold(proto: onnx.ModelProto) -> str | None:
    """Why folding ``proto`` could change more than its node order, or None when it cannot
    (module docstring; the first reason found, for the DEBUG log)."""
    g = proto.graph
    if proto.functions or g.value_info or g.sparse_initializer:
        return "model functions, value_info or sparse initializers"
    consts = [t.name for t in g.initializer]
    inputs = {i.name for i in g.input}
    known = set(consts) | inputs
    if len(set(consts)) != len(consts) or inputs & set(consts):
        return "an initializer named twice or also a graph input"
    for n in g.node:
        why = _node_problem(n, known, set(consts))
        if why:
            return f"{n.op_type} '{n.name or n.output[0]}': {why}"
        known.update(n.output)
    return _liveness_problem(g, set(consts))


def _node_problem(n: onnx.NodeProto, known: set[str], consts: set[str]) -> str | None:
    """Why node ``n`` (``known``: names defined before it) may change under folding."""
    if n.op_type == "Shape":
        return "Shape (folded once shapes are known)"
    ins = [t for t in n.input if t]
    if not ins or all(t in consts for t in ins):
        return "all inputs constant"
    if any(a.type not in _PLAIN or a.ref_attr_name for a in n.attribute):
        return "an attribute graphsurgeon converts"
    if any(t not in known for t in ins):
        return "not in topological order"
    if any(not t or t in known for t in n.output) or len(set(n.output)) != len(n.output):
        return "an output name defined twice (or empty)"
    return None


def _liveness_problem(g: onnx.GraphProto, consts: set[str]) -> str | None:
    """Why graphsurgeon's cleanup would remove something: a node no graph output needs, an
    initializer no node reads, or a graph output no node produces."""
    produced = {t: i for i, n in enumerate(g.node) for t in n.output}
    need = [o.name for o in g.output]
    if any(t not in produced for t in need):
        return "a graph output no node produces"
    live, used = set(), set()
    while need:
        i = produced.get(need.pop())
        if i is None or i in live:
            continue
        live.add(i)
        for t in g.node[i].input:
            if t:
                used.add(t)
                need.append(t)
    if len(live) != len(g.node):
        return "a node no graph output needs"
    if consts - used:
        return "an initializer no node reads"
    return None


def graphsurgeon_order(proto: onnx.ModelProto) -> None:
    """Sort ``proto``'s nodes in place as graphsurgeon's ``toposort`` sorts a graph in
    topological order (stably by level; module docstring). Needs :func:`nothing_to_fold`."""
    g = proto.graph
    level: dict[str, int] = {}
    levels = []
    for n in g.node:
        lv = 1 + max((level[t] for t in n.input if t in level), default=-1)
        levels.append(lv)
        level.update((t, lv) for t in n.output)
    order = sorted(range(len(levels)), key=levels.__getitem__)
    if order == list(range(len(order))):
        return
    nodes = [g.node[i] for i in order]
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)


def inferred_unfolded(proto: onnx.ModelProto, where: str, opset: int) -> onnx.ModelProto | None:
    """``proto`` (the import's own copy) in graphsurgeon's node order, its default-domain
    opset set to ``opset`` and shape-inferred in place, when :func:`nothing_to_fold` finds
    nothing for folding to do (the same model as folding, without the graphsurgeon round
    trip and a second shape inference); None otherwise, also when shape inference fails (the
    folding path then reports it)."""
    why = nothing_to_fold(proto)
    if why is not None:
        log.debug("%s: constant folding runs (%s)", where, why)
        return None
    graphsurgeon_order(proto)
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    try:
        return infer_shapes_into(proto)
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:  # inconsistent model: reported by the folding path's inference
        log.debug("%s: shape inference failed: %s", where, exc)
        return None
