"""Epilogue fusion: residual Add into a conv, activations into their producer.

Rule for which conv absorbs an Add (both operands computed by convs): the one that comes LATER
in the node order, so the other operand (the shortcut) is already in DRAM when the fused conv
runs. Add is commutative, so either operand may be the conv.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import NO_ACT, Activation, ActKind, Op, RELU
from tcc_compiler.passes.rewrite import RewritePass, single_use


def _fusable_producer(graph: Graph, v) -> Node | None:
    p = v.producer
    if p is None or p.op not in (Op.CONV, Op.FC):
        return None
    if p.attrs.act != NO_ACT or p.input(3) is not None or p.input(5) is not None \
            or not single_use(graph, v):   # (a per-channel clamp acts after the add)
        return None
    return p


class FuseResidualAdd(RewritePass):
    """add(conv(x), s) -> conv(x) with shortcut s in its epilogue: y = act(conv + b + s)."""

    name = "fuse-residual-add"

    def match(self, graph, node):
        if node.op is not Op.ADD or node.inputs[1].is_const:
            return None
        a, b = node.inputs[0], node.inputs[1]
        cands = [(p, other) for p, other in ((_fusable_producer(graph, a), b),
                                               (_fusable_producer(graph, b), a)) if p]
        if not cands:
            return None
        order = {id(n): i for i, n in enumerate(graph.nodes)}
        conv, other = max(cands, key=lambda t: order[id(t[0])])
        return {"add": node, "conv": conv, "shortcut": other}

    def check(self, graph, m):
        if m["shortcut"].shape != m["conv"].output.shape:
            return "shortcut shape differs from the conv output"
        if m["shortcut"] is m["conv"].output:
            return "add of a value with itself"
        if m["conv"].output.quant is not None:
            # a pre-quantized model rounds the conv output to int8 before the add; the fused
            # epilogue would skip that rounding (specs/quantization.md, pre-quantized models)
            return "the conv output is quantized in the imported model"
        return None

    def rewrite(self, graph, m):
        add, conv = m["add"], m["conv"]
        graph.set_input(conv, 3, m["shortcut"])
        conv.attrs = type(conv.attrs)(**{**conv.attrs.__dict__, "act": add.attrs.act})
        conv.source = conv.source + add.source
        graph.replace_all_uses_with(add.output, conv.output)
        graph.remove_node(add)
        graph.toposort()


def _same_params(a, b) -> bool:
    return bool(a.scale.shape == b.scale.shape and (a.scale == b.scale).all()
                and (a.zero_point == b.zero_point).all())


def compose(first: Activation, second: Activation) -> Activation | None:
    """second(first(x)) as one activation, None when not expressible."""
    if first.kind is ActKind.NONE:
        return second
    if second.kind is ActKind.RELU and first.kind is ActKind.RELU:
        return RELU
    if second.kind is ActKind.RELU and first.kind is ActKind.CLIP:
        return Activation(ActKind.CLIP, max(first.lo, 0.0), max(first.hi, 0.0))
    if second.kind is ActKind.CLIP and first.kind is ActKind.RELU and second.lo <= 0:
        return Activation(ActKind.CLIP, 0.0, second.hi)
    return None


class FuseActivation(RewritePass):
    """conv/fc/add -> relu|clip  ==>  producer with the activation in its epilogue."""

    name = "fuse-activation"

    def match(self, graph, node):
        if node.op not in (Op.RELU, Op.CLIP):
            return None
        p = node.inputs[0].producer
        if p is None or p.op not in (Op.CONV, Op.FC, Op.ADD):
            return None
        return {"act": node, "prod": p}

    def check(self, graph, m):
        if not single_use(graph, m["prod"].output):
            return "producer output has other readers"
        if m["prod"].input(5) is not None:
            return "producer has a per-channel clamp (it acts after the activation)"
        if compose(m["prod"].attrs.act, m["act"].attrs.act) is None:
            return "activations do not compose"
        q_in, q_out = m["prod"].output.quant, m["act"].output.quant
        if q_in is not None and q_out is not None and not _same_params(q_in, q_out):
            # two roundings in the imported model, with different parameters: the fused
            # epilogue would round once
            return "producer output and activation output are quantized differently"
        return None

    def rewrite(self, graph, m):
        p, act = m["prod"], m["act"]
        new_act = compose(p.attrs.act, act.attrs.act)
        p.attrs = type(p.attrs)(**{**p.attrs.__dict__, "act": new_act})
        p.source = p.source + act.source
        graph.replace_all_uses_with(act.output, p.output)
        graph.remove_node(act)


def leaky_slope(node: Node) -> float | None:
    """The slope below zero of a ``lut`` node computing LeakyRelu, or PRelu with one slope for
    every channel, when it lies in [0, 1] (a two-slope epilogue's range: its second
    multiplier, slope x the first, then fits the first's 31 bits); None otherwise."""
    if node.op is not Op.LUT:
        return None
    func = node.attrs.func.value
    if func == "leakyrelu":
        slope = float(node.attrs.alpha)
    elif func == "prelu" and node.input(1) is not None and node.inputs[1].is_const:
        flat = node.inputs[1].const.reshape(-1)
        if flat.size == 0 or not (flat == flat[0]).all():
            return None
        slope = float(flat[0])
    else:
        return None
    return slope if 0.0 <= slope <= 1.0 else None


class FuseTwoSlope(RewritePass):
    """conv/fc -> LeakyRelu (or one-slope PRelu)  ==>  the conv/fc with a LEAKY activation:
    its epilogue requantizes ``acc + bias`` with one multiplier above zero and the slope's
    multiple below (specs/quantization.md, "Two-slope epilogue"), one rounding instead of the
    int8 output, table lookup and second rounding of a ``lut`` op.

    A ConvTranspose's output is an ``interleave`` of one conv per output phase: the
    activation, element-wise, moves onto every phase conv (the interleave then joins their
    activated outputs)."""

    name = "fuse-two-slope"

    def match(self, graph, node):
        """``{"lut", "prods", "join", "slope"}`` when ``node`` is a LeakyRelu (or one-slope
        PRelu, slope in [0, 1]) read from a conv/fc (``prods`` = [it], ``join`` None) or from
        an interleave of convs (a ConvTranspose's phases: ``prods`` = them, ``join`` = it),
        else None."""
        slope = leaky_slope(node)
        p = node.inputs[0].producer
        if slope is None or p is None:
            return None
        if p.op is Op.INTERLEAVE:
            convs = [v.producer for v in p.inputs]
            if all(c is not None and c.op is Op.CONV for c in convs):
                return {"lut": node, "prods": convs, "join": p, "slope": slope}
            return None
        if p.op not in (Op.CONV, Op.FC):
            return None
        return {"lut": node, "prods": [p], "join": None, "slope": slope}

    def check(self, graph, m):
        """Why match ``m`` must not fire (a producer or the interleave read elsewhere,
        already activated, with a shortcut or per-channel clamp, or quantized in the
        imported model), else None."""
        join = m["join"]
        if join is not None and (not single_use(graph, join.output)
                                 or join.output.quant is not None):
            return "the interleave has other readers or is quantized in the imported model"
        for p in m["prods"]:
            if not single_use(graph, p.output):
                return "producer output has other readers"
            if p.attrs.act != NO_ACT:
                return "producer already has an activation"
            if p.input(3) is not None or p.input(5) is not None:
                return "producer has a fused shortcut or a per-channel clamp"
            if p.output.quant is not None:
                # the imported model rounds the conv output to int8 before the activation
                return "the producer output is quantized in the imported model"
        return None

    def rewrite(self, graph, m):
        """Give every producer the LEAKY activation of slope ``m["slope"]`` and read the
        lut's output from the last of them (or the interleave); the lut node goes."""
        lut = m["lut"]
        for p in m["prods"]:
            p.attrs = type(p.attrs)(**{**p.attrs.__dict__,
                                       "act": Activation(ActKind.LEAKY, m["slope"])})
            p.source = p.source + lut.source
        last = m["join"] if m["join"] is not None else m["prods"][0]
        graph.replace_all_uses_with(lut.output, last.output)
        graph.remove_node(lut)
