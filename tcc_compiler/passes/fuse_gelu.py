"""GELU in its erf and tanh forms as exporters write them -> one ``lut{func=gelu}`` or
``lut{func=gelu_tanh}`` on x.

torch.onnx (nn.GELU before opset 20) writes ``Mul(Mul(x, Add(Erf(Div(x, 1.4142135)), 1)), 0.5)``;
other exporters put the 0.5 on x first: ``Mul(Mul(x, 0.5), Add(Erf(...), 1))``. After import the
Div is a Mul by ``1/sqrt(2)``. ``nn.GELU(approximate="tanh")`` (torch.onnx, opset 17) writes the
same product around ``Add(Tanh(Mul(Add(x, Mul(Mul(x, Mul(x, x)), 0.044715)), sqrt(2/pi))), 1)``
(constants on either side of each Mul/Add). The whole chain is one table. Runs before
canonicalize, which turns the constant Muls and Adds into affines.
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


def _split_const(node, expect: float | None = None):
    """(activation operand, scalar constant) of a binary node with one scalar constant operand
    (either side), or None; with ``expect`` the constant must equal it."""
    if node is None or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a.is_const and not b.is_const:
        a, b = b, a
    if a.is_const or not b.is_const:
        return None
    c = np.asarray(b.const, dtype=np.float64).reshape(-1)
    if c.size != 1 or (expect is not None and abs(c[0] - expect) > _RTOL * abs(expect)):
        return None
    return a, float(c[0])


def _plus_one_of(v, func: LutFunc):
    """The lut node when ``v = lut{func}(...) + 1``, else None."""
    add = v.producer
    got = _split_const(add, 1.0) if add is not None and add.op is Op.ADD else None
    if got is None:
        return None
    lut = got[0].producer
    if lut is None or lut.op is not Op.LUT or lut.attrs.func is not func:
        return None
    return lut


def _erf_branch(v):
    """x when ``v = Erf(x / sqrt 2) + 1`` (through single-use values), else None."""
    erf = _plus_one_of(v, LutFunc.ERF)
    scale = None if erf is None else _const_mul(erf.inputs[0], 1.0 / math.sqrt(2.0))
    return None if scale is None else scale.inputs[0]


def _product(v):
    """The two operands of ``v = a * b`` (two activations), else None."""
    p = v.producer
    if p is None or p.op is not Op.MUL or p.inputs[1] is None or p.inputs[1].is_const \
            or p.inputs[0].is_const:
        return None
    return p.inputs[0], p.inputs[1]


def _is_cube_of(v, x) -> bool:
    """``v = x * (x * x)`` or ``(x * x) * x``."""
    ops = _product(v)
    if ops is None:
        return False
    for a, b in (ops, ops[::-1]):
        sq = _product(b)
        if a is x and sq is not None and sq[0] is x and sq[1] is x:
            return True
    return False


def _tanh_branch(v):
    """x when ``v = Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)) + 1``, else None."""
    tanh = _plus_one_of(v, LutFunc.TANH)
    scaled = None if tanh is None else tanh.inputs[0].producer
    got = _split_const(scaled, math.sqrt(2.0 / math.pi)) \
        if scaled is not None and scaled.op is Op.MUL else None
    inner = None if got is None else got[0].producer
    if inner is None or inner.op is not Op.ADD or any(i.is_const for i in inner.inputs):
        return None
    for x, t in (inner.inputs, inner.inputs[::-1]):
        term = t.producer
        got = _split_const(term, 0.044715) if term is not None and term.op is Op.MUL else None
        if got is not None and _is_cube_of(got[0], x):
            return x
    return None


#: (branch matcher, table) per GELU form
_FORMS = ((_erf_branch, LutFunc.GELU), (_tanh_branch, LutFunc.GELU_TANH))


class FuseGelu(RewritePass):
    """mul(x', erf(x/sqrt2) + 1) with x' = x then * 0.5, or x' = x * 0.5 -> lut{gelu}(x);
    the same with tanh(sqrt(2/pi) (x + 0.044715 x^3)) + 1 -> lut{gelu_tanh}(x)."""

    name = "fuse-gelu"

    def match(self, graph, node):
        if node.op is not Op.MUL or node.inputs[1] is None or node.inputs[1].is_const:
            return None
        for (p, q), (branch, func) in ((o, f) for o in (node.inputs, node.inputs[::-1])
                                       for f in _FORMS):
            x = branch(q)
            if x is None:
                continue
            if p is x:       # 0.5 after the product: the product's one reader
                users = [u for u, _ in node.output.uses]
                if len(users) == 1 and _split_const(users[0], 0.5) is not None \
                        and users[0].op is Op.MUL and node.output in users[0].inputs:
                    return {"mul": node, "last": users[0], "x": x, "func": func}
            elif _const_mul(p, 0.5) is not None and p.producer.inputs[0] is x:
                return {"mul": node, "last": node, "x": x, "func": func}
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
                                     out.dtype)], LutAttrs(m["func"]), source=src)
        graph.replace_all_uses_with(out, node.output)
        graph.remove_node(last)
        graph.toposort()
