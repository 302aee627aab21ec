"""Values that must share one set of int8 quantization parameters: the inputs and output of a
channel concat or slice (IR ops in :data:`~tcc_compiler.ir.ops.CHANNEL_OPS`), so that the op is
pure data movement (a view of one DRAM buffer or a byte copy), closed over the ops whose output
already reuses its input's parameters (views, max/average/global pooling, nearest resize; see
quantize.py).

This is TensorFlow Lite's rule for int8 Concatenation and Split ("restrict same input/output
scale", tensorflow/lite/tools/optimize/operator_property.cc); the shared range is the union of
the members' calibrated ranges, each first clipped to its producer's fused activation bounds.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, VIEW_OPS, Op

#: Ops whose output reuses the input's quantization parameters (quantize.py).
SHARING_OPS = VIEW_OPS | {Op.MAXPOOL, Op.AVGPOOL, Op.GAP, Op.RESIZE, Op.SHUFFLE}


def shared_params(graph: Graph, ranges: dict[str, tuple[float, float]],
                  params_of) -> dict[int, QuantParams]:
    """id(value) -> the one :class:`QuantParams` object its group shares, for every value
    tied to a channel concat or slice (other values are absent).

    Args:
        graph: the float graph being quantized. ranges: calibrated {value name: (lo, hi)}.
        params_of: (lo, hi) -> QuantParams (quantize.activation_params).
    """
    parent: dict[int, int] = {}
    vals: dict[int, Value] = {}

    def find(v: Value) -> int:
        vals[id(v)] = v
        k = id(v)
        parent.setdefault(k, k)
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(a: Value, b: Value) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    tied: list[Value] = []
    for n in graph.nodes:
        if n.op in CHANNEL_OPS:
            for x in n.inputs:
                union(x, n.output)
            tied.append(n.output)
        elif n.op in SHARING_OPS:
            union(n.inputs[0], n.output)
    roots = {find(v) for v in tied}
    if not roots:
        return {}
    span: dict[int, tuple[float, float]] = {}
    for k, v in vals.items():
        r = find(v)
        if r not in roots or v.name not in ranges:
            continue
        lo, hi = ranges[v.name]
        act = getattr(getattr(v.producer, "attrs", None), "act", None)
        if act is not None:
            a_lo, a_hi = act.bounds()
            lo, hi = max(lo, a_lo), min(hi, a_hi)
        old = span.get(r)
        span[r] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    group = {r: params_of(*span.get(r, (0.0, 0.0))) for r in roots}
    return {k: group[find(v)] for k, v in vals.items() if find(v) in roots}
