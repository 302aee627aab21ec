"""Activations crossing a cut of the layer order: the bytes the SRAM-capacity bound
(:func:`~tcc_compiler.schedule.report.capacity_bound`, specs/target.md "Capacity bound")
charges at each cut besides the weights.

At cut ``i`` (when layer ``i``'s first compute command starts and every earlier layer's have
run) a tensor written by the compute of a layer before ``i``, or the network input, and read
later by the compute of a layer ``i`` or after is live: each element such a layer reads is in
the SRAM at that instant (taking room the weights cannot use) or must cross the DRAM link
afterwards (compute commands read only the SRAM). :func:`crossing_bytes` counts, per cut, the
elements of those tensors the later layers read (per tensor the largest count of one
reader: a lower bound on their union), one byte each (an int16 tensor's second bytes are
left out: still a lower bound).
"""

from __future__ import annotations

from tcc_compiler.errors import UnsupportedError
from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.geom import conv_geom, hwc, pool_geom
from tcc_compiler.target import Target

#: Ops whose layer writes its output with compute commands (so it is whole in the SRAM once
#: the layer's compute has run) and reads its activation inputs from the SRAM.
COMPUTE_OPS = frozenset({Op.CONV, Op.FC, Op.ADD, Op.MUL, Op.SUB, Op.LUT, Op.GAP,
                         Op.MAXPOOL, Op.AVGPOOL})


def touched(n_out: int, n_in: int, k: int, s: int, d: int, pad: int) -> int:
    """How many of the ``n_in`` input rows (or columns) a window of ``k`` taps (dilation
    ``d``) at stride ``s`` with ``pad`` leading pad rows reads for ``n_out`` output rows:
    the distinct ``oy * s - pad + ky * d`` in ``[0, n_in)``. A 1x1 stride-2 conv reads every
    other row; a 3x3 stride-2 conv with pad 1 reads all of them."""
    return len({r for oy in range(n_out) for ky in range(k)
                if 0 <= (r := oy * s - pad + ky * d) < n_in})


def read_elements(n: Node, index: int, v: Value, t: Target) -> int:
    """Elements of activation ``v`` (input ``index`` of node ``n``) that ``n``'s compute reads
    at least once: a conv's or max/average pool's input 0 the rows x columns its windows touch
    (x all channels: every group is read), a conv's shortcut (input 3) and every input of an
    FC, global pool or element-wise/table op whole; 0 for anything else (not counted: the
    bound stays a lower bound) and for a shape or window the NPU cannot hold."""
    try:
        h, w, c = hwc(v)
        if n.op in (Op.CONV, Op.MAXPOOL, Op.AVGPOOL) and index == 0:
            g = conv_geom(n, t) if n.op is Op.CONV else pool_geom(n, n.name)[0]
            return (touched(g.oh, g.h, g.kh, g.sh, g.dh, g.pads[0])
                    * touched(g.ow, g.w, g.kw, g.sw, g.dw, g.pads[1]) * c)
    except UnsupportedError:
        return 0
    if (n.op is Op.CONV and index == 3) or n.op in (Op.FC, Op.GAP, Op.ADD, Op.MUL, Op.SUB,
                                                    Op.LUT):
        return h * w * c
    return 0


def crossing_bytes(graph: Graph, names: list[str], t: Target) -> list[int]:
    """Per layer ``i`` of ``names`` (IR node names of the NPU layers, execution order), the
    bytes of activations live across the cut before it (module doc): for every tensor that
    a compute layer before ``i`` wrote (:data:`COMPUTE_OPS`), or a network input, the most
    elements one compute layer ``i`` or later reads of it (:func:`read_elements`), summed.
    A tensor written by another node (a DMA copy, a view) is not counted."""
    nodes = {n.name: n for n in graph.nodes}
    pos = {name: i for i, name in enumerate(names)}
    tensors: dict[str, tuple[int, list[tuple[int, int]]]] = {}   # value -> (source, reads)
    for k, name in enumerate(names):
        n = nodes.get(name)
        if n is None or n.op not in COMPUTE_OPS:
            continue
        for idx, v in enumerate(n.inputs):
            if v is None or v.is_const:
                continue
            p = v.producer
            if p is None:
                src = -1   # a network input: in DRAM at the start
            elif p.name in pos and p.op in COMPUTE_OPS and pos[p.name] < k:
                src = pos[p.name]
            else:
                continue
            tensors.setdefault(v.name, (src, []))[1].append((k, read_elements(n, idx, v, t)))
    out = []
    for i in range(len(names)):
        out.append(sum(max((e for k, e in reads if k >= i), default=0)
                       for src, reads in tensors.values() if src < i))
    return out
