"""SiLU / Swish as exporters write it: ``x * Sigmoid(x)`` -> one ``lut{func=silu}`` on x.

torch.onnx (opset < 14 exports of nn.SiLU, timm's Swish, EfficientNet) writes the product of
two activations; the NPU runs the whole function as one table instead.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import LutAttrs, LutFunc, Op
from tcc_compiler.passes.rewrite import RewritePass


def _sigmoid_of(v):
    """The sigmoid lut node producing ``v``, or None."""
    p = v.producer
    if p is not None and p.op is Op.LUT and p.attrs.func is LutFunc.SIGMOID:
        return p
    return None


class FuseSilu(RewritePass):
    """mul(x, sigmoid(x)) (either operand order) -> lut{func=silu}(x)."""

    name = "fuse-silu"

    def match(self, graph, node):
        if node.op is not Op.MUL or len(node.inputs) != 2:
            return None
        a, b = node.inputs
        if a is None or b is None or a.is_const or b.is_const:
            return None
        for x, s in ((a, b), (b, a)):
            sig = _sigmoid_of(s)
            if sig is not None and sig.inputs[0] is x:
                return {"mul": node, "sigmoid": sig, "x": x}
        return None

    def check(self, graph, m):
        if m["mul"].attrs.act.kind.value != "none":
            return "the mul has a fused activation"
        return None

    def rewrite(self, graph, m):
        mul, sig = m["mul"], m["sigmoid"]
        out = mul.output
        node = graph.add_node(Op.LUT, graph.fresh_name(mul.name + "_silu"), [m["x"]],
                              [Value(graph.fresh_name(out.name + "_silu"), out.shape, out.dtype)],
                              LutAttrs(LutFunc.SILU), source=sig.source + mul.source)
        graph.replace_all_uses_with(out, node.output)
        graph.remove_node(mul)
        graph.toposort()
