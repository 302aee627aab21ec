"""Concatenate a detection head's pieces across scales first, and join the pieces once.

YOLOv5's decode builds each scale's ``[1, 3, H, W, 85]`` map as ``Concat(xy, wh, conf,
axis=-1)``, reshapes it to ``[1, 3*H*W, 85]`` and concatenates the three scales along axis 1:
two float32 passes over the whole output, the first of them over class scores that only
pass through. Reordered, the scales' pieces are concatenated piece by piece along axis 1 and
the pieces joined once along the last axis; the class scores, NPU outputs moved in int8
(:mod:`tcc_compiler.frontend.host_int8`), then stay int8 until that last join.

:func:`hoist_concats` rewrites (pure ONNX graph work, exact: only which copy puts each
element where changes, every element's value and final position stay):

    Concat(axis=A)(Reshape(Concat(axis=-1)(p_s1 .. p_sm)) for s in 1..n)
    -> Concat(axis=-1)(Concat(axis=A)(Reshape'(p_sj) for s) for j in 1..m)

when A is not the last axis, every inner Concat joins along its last axis pieces of the same
widths (``p_sj`` has the same last dim for every s), each Reshape keeps the last dim (it only
regroups the leading dims, so it commutes with the join: ``Reshape'`` gives ``p_sj`` the
Reshape's leading dims), an inner Concat may also be read directly (no Reshape), and no
intermediate is read elsewhere or is a graph output.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)


def hoist_concats(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with the module docstring's rewrite applied wherever it matches.

    Args:
        proto: an ONNX model whose tensors have static shapes in ``value_info``/inputs.

    Returns:
        (the rewritten model, number of rewrites); ``proto`` itself is not changed.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    count = 0
    while True:
        shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                  for vi in list(g.input) + list(g.value_info) + list(g.output)
                  if vi.type.tensor_type.HasField("shape")}
        match = next((m for m in (_match(g, n, shapes) for n in g.node
                                  if n.op_type == "Concat") if m), None)
        if match is None:
            break
        _rewrite(g, *match, shapes, count)
        count += 1
    if count:
        del g.value_info[:]
        g.value_info.extend(onnx.shape_inference.infer_shapes(out).graph.value_info)
        log.debug("%s: %d concat(s) of joined pieces reordered", g.name, count)
    return out, count


def _axis(n: onnx.NodeProto, rank: int) -> int:
    return next(a.i for a in n.attribute if a.name == "axis") % rank


def _only_reader(g: onnx.GraphProto, t: str, node: onnx.NodeProto) -> bool:
    return not any(o.name == t for o in g.output) and all(
        n.output[0] == node.output[0] for n in g.node if t in n.input) \
        and list(node.input).count(t) == 1


def _match(g: onnx.GraphProto, cat: onnx.NodeProto, shapes: dict):
    """(outer Concat, [(Reshape or None, inner Concat)]) when ``cat`` matches, else None."""
    producer = {o: n for n in g.node for o in n.output}
    out = shapes.get(cat.output[0])
    if not out or any(d <= 0 for d in out) or _axis(cat, len(out)) == len(out) - 1:
        return None
    chain, widths = [], None
    for t in cat.input:
        link = _link(g, cat, t, producer, shapes)
        if link is None or (widths is not None and link[2] != widths):
            return None
        widths = link[2]
        chain.append(link[:2])
    return (cat, chain) if chain else None


def _link(g: onnx.GraphProto, cat: onnx.NodeProto, t: str, producer: dict, shapes: dict):
    """(Reshape or None, inner Concat, its pieces' last dims) making input ``t`` of the
    outer Concat ``cat``, else None."""
    r = producer.get(t)
    if r is None or not _only_reader(g, t, cat):
        return None
    inner = r
    if r.op_type == "Reshape":
        inner = producer.get(r.input[0])
        if inner is None or not _only_reader(g, r.input[0], r):
            return None
    src = shapes.get(inner.output[0])
    if inner.op_type != "Concat" or not src or _axis(inner, len(src)) != len(src) - 1:
        return None
    if (shapes.get(t) or [0])[-1] != src[-1]:   # the Reshape must keep the last dim
        return None
    w = [(shapes.get(p) or [0])[-1] for p in inner.input]
    return None if 0 in w else (r if r is not inner else None, inner, w)


def _rewrite(g: onnx.GraphProto, cat: onnx.NodeProto, chain, shapes: dict, k: int) -> None:
    """Replace ``cat`` and its chain by the per-piece Concats and one last-axis join."""
    out = shapes[cat.output[0]]
    axis = _axis(cat, len(out))
    base = f"{cat.name or cat.output[0]}_hoist{k}"
    new: list[onnx.NodeProto] = []
    joined = []
    for j in range(len(chain[0][1].input)):
        parts = []
        for s, (r, inner) in enumerate(chain):
            p = inner.input[j]
            if r is not None:
                lead = shapes[r.output[0]][:-1]
                shp = f"{base}_shape_{s}_{j}"
                g.initializer.append(numpy_helper.from_array(
                    np.array(lead + [shapes[p][-1]], np.int64), shp))
                new.append(helper.make_node("Reshape", [p, shp], [f"{base}_r{s}_{j}"],
                                            name=f"{base}_r{s}_{j}"))
                p = new[-1].output[0]
            parts.append(p)
        new.append(helper.make_node("Concat", parts, [f"{base}_piece{j}"],
                                    name=f"{base}_piece{j}", axis=axis))
        joined.append(new[-1].output[0])
    new.append(helper.make_node("Concat", joined, [cat.output[0]], name=cat.name or base,
                                axis=len(out) - 1))
    new = [n for n in new]
    gone = {cat.output[0]} | {n.output[0] for r, inner in chain for n in (r, inner)
                              if n is not None}
    nodes = [n for n in g.node]
    at = [n.output[0] for n in nodes].index(cat.output[0])
    kept = [n for n in nodes[:at] if n.output[0] not in gone]
    rest = [n for n in nodes[at + 1:] if n.output[0] not in gone]
    copies = [onnx.NodeProto() for _ in kept + new + rest]
    for c, n in zip(copies, kept + new + rest):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
