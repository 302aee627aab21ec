"""Fold per-channel affine ops (BatchNorm and friends) into neighbouring convs, exactly.

Rewrites:
* ``conv -> affine``: y = a * (W * x + b) + c  ==  (a W) * x + (a b + c), any padding
  (the affine acts after the conv). Requires the conv to have no activation or shortcut and
  its output to feed only the affine.
* ``affine -> conv``: W * (a x + c) + b == (W a) * x + (b + sum W c) only when the conv has
  NO padding: a zero-padded border would see 0 instead of ``c`` (ONNX Conv pads the affine's
  output, not its input). Padded consumers keep the affine as an op of its own.
* ``affine -> affine``: merged.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import NO_ACT, Op
from tcc_compiler.passes.affine import affine_params, is_affine
from tcc_compiler.passes.rewrite import RewritePass, single_use


def _set_const(graph: Graph, node: Node, idx: int, arr: np.ndarray, tag: str) -> None:
    old = node.inputs[idx]
    v = Value(graph.fresh_name(old.name if old is not None else node.name + tag), arr.shape,
              "float32", const=arr.astype(np.float32))
    graph.set_input(node, idx, v)


class FoldAffineIntoProducer(RewritePass):
    """conv/fc -> affine  ==>  conv/fc with scaled weights and bias."""

    name = "fold-affine-into-producer"

    def match(self, graph, node):
        if not is_affine(node):
            return None
        p = node.inputs[0].producer
        if p is None or p.op not in (Op.CONV, Op.FC):
            return None
        return {"affine": node, "prod": p}

    def check(self, graph, m):
        p, aff = m["prod"], m["affine"]
        if not single_use(graph, p.output):
            return "producer output has other readers"
        if p.attrs.act != NO_ACT or p.input(3) is not None:
            return "producer has a fused activation or shortcut"
        return None

    def rewrite(self, graph, m):
        p, aff = m["prod"], m["affine"]
        a, c = affine_params(aff)
        w = p.inputs[1].const.astype(np.float64)
        b = p.inputs[2].const.astype(np.float64)
        _set_const(graph, p, 1, w * a.reshape((-1,) + (1,) * (w.ndim - 1)), "_w")
        _set_const(graph, p, 2, b * a + c, "_b")
        p.attrs = type(p.attrs)(**{**p.attrs.__dict__, "act": aff.attrs.act})
        p.source = p.source + tuple(s for s in aff.source if s not in p.source)
        graph.replace_all_uses_with(aff.output, p.output)
        graph.remove_node(aff)


class FoldAffineIntoConsumers(RewritePass):
    """affine -> conv(s)/fc(s) without padding  ==>  consumers with folded weights."""

    name = "fold-affine-into-consumers"

    def match(self, graph, node):
        if not is_affine(node) or node.attrs.act != NO_ACT:
            return None
        users = graph.consumers(node.output)
        if not users or graph.is_output(node.output):
            return None
        return {"affine": node, "users": users}

    def check(self, graph, m):
        aff = m["affine"]
        for u in m["users"]:
            if u.op not in (Op.CONV, Op.FC):
                return f"reader {u.name} is {u.op.value}, not conv/fc"
            if u.inputs[0] is not aff.output or any(
                    v is aff.output for v in u.inputs[1:]):
                return f"reader {u.name} reads it as a shortcut"
            if u.op is Op.CONV and (any(u.attrs.pads) or u.attrs.group != 1):
                return f"reader {u.name} pads or groups its input (border would differ)"
        return None

    def rewrite(self, graph, m):
        aff = m["affine"]
        a, c = affine_params(aff)
        x = aff.inputs[0]
        for u in m["users"]:
            w = u.inputs[1].const.astype(np.float64)
            b = u.inputs[2].const.astype(np.float64)
            cs = (1, -1) + (1,) * (w.ndim - 2)
            nb = b + (w * c.reshape(cs)).reshape(w.shape[0], -1).sum(axis=1)
            _set_const(graph, u, 1, w * a.reshape(cs), "_w")
            _set_const(graph, u, 2, nb, "_b")
            u.source = tuple(s for s in aff.source if s not in u.source) + u.source
            graph.set_input(u, 0, x)
        graph.remove_node(aff)


class MergeAffines(RewritePass):
    """affine -> affine (no activation on the first)  ==>  one affine."""

    name = "merge-affines"

    def match(self, graph, node):
        if not is_affine(node):
            return None
        p = node.inputs[0].producer
        if p is None or not is_affine(p):
            return None
        return {"first": p, "second": node}

    def check(self, graph, m):
        if not single_use(graph, m["first"].output):
            return "first affine has other readers"
        if m["first"].attrs.act != NO_ACT:
            return "first affine has an activation"
        return None

    def rewrite(self, graph, m):
        f, s = m["first"], m["second"]
        a1, c1 = affine_params(f)
        a2, c2 = affine_params(s)
        _set_const(graph, s, 1, (a1 * a2).reshape(-1, 1, 1, 1), "_w")
        _set_const(graph, s, 2, a2 * c1 + c2, "_b")
        s.source = f.source + s.source
        graph.set_input(s, 0, f.inputs[0])
        graph.remove_node(f)
