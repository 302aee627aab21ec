"""Fold per-channel affine ops (BatchNorm and friends) into neighbouring convs, exactly.

Rewrites:
* ``conv -> affine``: y = a * (W * x + b) + c  ==  (a W) * x + (a b + c), any padding
  (the affine acts after the conv). Requires the conv to have no activation or shortcut and
  its output to feed only the affine.
* ``affine -> conv``: W * (a x + c) + b == (W a) * x + (b + sum W c) only when the conv has
  NO padding: a zero-padded border would see 0 instead of ``c`` (ONNX Conv pads the affine's
  output, not its input). Padded consumers keep the affine as an op of its own.
* ``affine -> affine``: merged.

What stays an affine op (one depthwise 1x1 NPU conv, exact: its per-channel weight quantizes
losslessly), measured on ``resnet50-v2``: 18 of them, 74 NPU ops vs 56 for ``resnet50``.

* The pre-activation ``Add -> BN -> Relu`` of each of the 16 v2 blocks (+1 op per block). The
  Add's output (fused into the block's last conv) is read twice: by the BN and, unscaled, as
  the next block's shortcut. Folding the BN into that conv would need a second, differently
  scaled output per conv, which the NPU epilogue does not have; folding it into the consumer
  conv is blocked by the Relu in between (relu(a x + c) is not linear in x).
* The input BN on the raw image: the stem conv is zero-padded, so folding needs a per-channel
  padding value ``-c/a`` and the NPU pads with the input zero point only.
* The final ``BN -> Relu`` before global pooling: its producer conv carries the last residual
  add, and scaling the shortcut per channel (``a * s``) is not an IR epilogue feature yet (the
  hardware multiplier ``M_sc[c]`` is per channel, so it could be added for ``a >= 0``).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.ops import NO_ACT, Op
from tcc_compiler.passes.affine import absorb, affine_params, is_affine, scale_into, set_const
from tcc_compiler.passes.rewrite import RewritePass, single_use


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
        p = m["prod"]
        if not single_use(graph, p.output):
            return "producer output has other readers"
        if p.attrs.act != NO_ACT or p.input(3) is not None or p.input(5) is not None:
            return "producer has a fused activation, shortcut or per-channel clamp"
        return None

    def rewrite(self, graph, m):
        p, aff = m["prod"], m["affine"]
        a, c = affine_params(aff)
        scale_into(graph, p, a, c)
        p.attrs = type(p.attrs)(**{**p.attrs.__dict__, "act": aff.attrs.act})
        absorb(graph, p, aff)


class FoldAffineIntoResidual(FoldAffineIntoProducer):
    """conv-with-shortcut -> affine (every scale > 0)  ==>  one conv whose epilogue scales both
    terms: a * (W x + b + s) + c == (a W) x + (a b + c) + a * s, with ``a`` kept as the conv's
    per-channel shortcut scale (input 4). Positive scales keep the epilogue's multipliers
    non-negative. Runs after residual fusion; fires where the sum feeds only the affine (e.g.
    ResNet-50-v2's final BN+Relu after the last block)."""

    name = "fold-affine-into-residual"

    def check(self, graph, m):
        p, aff = m["prod"], m["affine"]
        if p.op is not Op.CONV or p.input(3) is None:
            return "producer is not a conv with a fused shortcut"
        if not single_use(graph, p.output):
            return "producer output has other readers"
        if p.attrs.act != NO_ACT:
            return "producer has a fused activation (the affine would act after it)"
        a, _ = affine_params(aff)
        if not np.all(a > 0):
            return "an affine scale is <= 0 (the shortcut multiplier must stay positive)"
        return None

    def rewrite(self, graph, m):
        p, aff = m["prod"], m["affine"]
        a, _ = affine_params(aff)
        old = p.input(4)
        scale = a * (old.const.astype(np.float64).reshape(-1) if old is not None else 1.0)
        set_const(graph, p, 4, scale, "_sc_scale")
        super().rewrite(graph, m)


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
            set_const(graph, u, 1, w * a.reshape(cs), "_w")
            set_const(graph, u, 2, nb, "_b")
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
        set_const(graph, s, 1, (a1 * a2).reshape(-1, 1, 1, 1), "_w")
        set_const(graph, s, 2, a2 * c1 + c2, "_b")
        s.source = f.source + s.source
        graph.set_input(s, 0, f.inputs[0])
        graph.remove_node(f)
