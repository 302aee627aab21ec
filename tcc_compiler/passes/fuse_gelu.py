"""GELU in its erf form as exporters write it -> one ``lut{func=gelu}`` on x.

torch.onnx (nn.GELU before opset 20) writes ``Mul(Mul(x, Add(Erf(Div(x, 1.4142135)), 1)), 0.5)``;
other exporters put the 0.5 on x first: ``Mul(Mul(x, 0.5), Add(Erf(...), 1))``. After import the
Div is a Mul by ``1/sqrt(2)``. The whole chain is one table. Runs before canonicalize, which
turns the constant Muls and Adds into affines.
"""

from __future__ import annotations

import math

import numpy as np

from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import LutAttrs, LutFunc, Op
from tcc_compiler.passes.rewrite import RewritePass, single_use

_RTOL = 1e-5


def _const_mul(v, expect: float):
    """The node computing ``v = x * expect`` (scalar constant), or None."""
    p = v.producer
    if p is None or p.op is not Op.MUL or not p.inputs[1].is_const:
        return None
    c = np.asarray(p.inputs[1].const, dtype=np.float64).reshape(-1)
    if c.size != 1 or abs(c[0] - expect) > _RTOL * abs(expect):
        return None
    return p


def _erf_branch(v):
    """x when ``v = Erf(x / sqrt 2) + 1`` (through single-use values), else None."""
    add = v.producer
    if add is None or add.op is not Op.ADD or not add.inputs[1].is_const:
        return None
    one = np.asarray(add.inputs[1].const, dtype=np.float64).reshape(-1)
    if one.size != 1 or abs(one[0] - 1.0) > _RTOL:
        return None
    erf = add.inputs[0].producer
    if erf is None or erf.op is not Op.LUT or erf.attrs.func is not LutFunc.ERF:
        return None
    scale = _const_mul(erf.inputs[0], 1.0 / math.sqrt(2.0))
    return None if scale is None else scale.inputs[0]


class FuseGelu(RewritePass):
    """mul(x', erf(x/sqrt2) + 1) with x' = x then * 0.5, or x' = x * 0.5 -> lut{gelu}(x)."""

    name = "fuse-gelu"

    def match(self, graph, node):
        if node.op is not Op.MUL or node.inputs[1] is None or node.inputs[1].is_const:
            return None
        for p, q in (node.inputs, node.inputs[::-1]):
            x = _erf_branch(q)
            if x is None:
                continue
            if p is x:       # 0.5 after the product: the product's one reader
                users = [u for u, _ in node.output.uses]
                if len(users) == 1 and _const_mul(users[0].output, 0.5) is users[0] \
                        and users[0].inputs[0] is node.output:
                    return {"mul": node, "last": users[0], "x": x}
            elif _const_mul(p, 0.5) is not None and p.producer.inputs[0] is x:
                return {"mul": node, "last": node, "x": x}
        return None

    def check(self, graph, m):
        if m["mul"].attrs.act.kind.value != "none" or m["last"].attrs.act.kind.value != "none":
            return "a mul of the pattern has a fused activation"
        if m["last"] is not m["mul"] and not single_use(graph, m["mul"].output):
            return "the product before the 0.5 has other readers"
        return None

    def rewrite(self, graph, m):
        last = m["last"]
        out = last.output
        src = [s for n in graph.nodes if n is m["mul"] or n is last for s in n.source]
        node = graph.add_node(Op.LUT, graph.fresh_name(last.name + "_gelu"), [m["x"]],
                              [Value(graph.fresh_name(out.name + "_gelu"), out.shape,
                                     out.dtype)], LutAttrs(LutFunc.GELU), source=src)
        graph.replace_all_uses_with(out, node.output)
        graph.remove_node(last)
        graph.toposort()
