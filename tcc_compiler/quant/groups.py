"""Values that must share one set of int8 quantization parameters: the inputs and output of a
channel concat or slice (IR ops in :data:`~tcc_compiler.ir.ops.CHANNEL_OPS`), so that the op is
pure data movement (a view of one DRAM buffer or a byte copy), closed over the ops whose output
already reuses its input's parameters (views, max/average/global pooling, nearest resize; see
quantize.py).

This is TensorFlow Lite's rule for int8 Concatenation and Split ("restrict same input/output
scale", tensorflow/lite/tools/optimize/operator_property.cc); the shared range is the union of
the members' calibrated ranges, each first clipped to its producer's fused activation bounds.
A group is int16 as a whole when its producers are promoted together (quant/precision.py,
specs/quantization.md "Mixed precision").
"""

from __future__ import annotations

import math

from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, VIEW_OPS, Op

#: Ops whose output reuses the input's quantization parameters (quantize.py).
SHARING_OPS = VIEW_OPS | {Op.MAXPOOL, Op.AVGPOOL, Op.GAP, Op.RESIZE, Op.SHUFFLE}


def tied_groups(graph: Graph) -> list[list[Value]]:
    """The groups of values that share one parameter set: each channel concat/slice/interleave's
    inputs and output, closed over :data:`SHARING_OPS` (input and output), one list per group
    holding a channel op (members in first-seen graph order; values in no such group absent)."""
    parent: dict[int, int] = {}
    vals: dict[int, Value] = {}

    def find(v: Value) -> int:
        vals.setdefault(id(v), v)
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
    groups: dict[int, list[Value]] = {}
    for k, v in vals.items():
        r = find(v)
        if r in roots:
            groups.setdefault(r, []).append(v)
    return list(groups.values())


def _span(members: list[Value], ranges: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """(union of the members' ``ranges``, each first clipped to its producer's fused activation
    bounds; union of those bounds, unbounded when a member with a range has none)."""
    lo = hi = None
    b_lo, b_hi = math.inf, -math.inf
    for v in members:
        if v.name not in ranges:
            continue
        a, b = ranges[v.name]
        act = getattr(getattr(v.producer, "attrs", None), "act", None)
        bounds = act.bounds() if act is not None else (-math.inf, math.inf)
        a, b = max(a, bounds[0]), min(b, bounds[1])
        b_lo, b_hi = min(b_lo, bounds[0]), max(b_hi, bounds[1])
        lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))
    if lo is None:
        return (0.0, 0.0), (-math.inf, math.inf)
    return (lo, hi), (b_lo, b_hi)


def shared_params(graph: Graph, ranges: dict[str, tuple[float, float]], params_of,
                  wide: dict[str, tuple[float, float]] | None = None,
                  wide_params_of=None) -> dict[int, tuple[QuantParams, str]]:
    """id(value) -> (the one :class:`QuantParams` object its group shares, its dtype), for every
    value tied to a channel concat or slice (other values are absent).

    A group with a member named in ``wide`` is int16 as a whole (quant/precision.py promotes
    every producer of a group together): its parameters are ``wide_params_of((lo, hi), bounds)``
    over the members' ``wide`` ranges (observed min/max) and the members' fused activation
    bounds; any other group's are ``params_of(lo, hi)`` over their calibrated ``ranges``, each
    clipped to its producer's activation bounds first.

    Args:
        graph: the float graph being quantized. ranges: calibrated {value name: (lo, hi)}.
        params_of: (lo, hi) -> int8 QuantParams (quantize.activation_params).
        wide: {value name: (lo, hi)} of the int16 layer outputs, or None.
        wide_params_of: (lo, hi, bounds) -> int16 QuantParams
            (quantize.activation_params_int16); needed when ``wide`` names a member.
    """
    out: dict[int, tuple[QuantParams, str]] = {}
    for members in tied_groups(graph):
        if wide and any(v.name in wide for v in members):
            (lo, hi), bounds = _span(members, wide)
            q, dtype = wide_params_of(lo, hi, bounds), "int16"
        else:
            q, dtype = params_of(*_span(members, ranges)[0]), "int8"
        out.update({id(v): (q, dtype) for v in members})
    return out
