"""Move element-wise activations ahead of pure data movement, toward the ops producing
their data, so that a detection head's activation runs on the NPU.

A YOLO head applies ``Sigmoid`` after its convs' outputs have been reshaped, transposed and
concatenated into the box/class layout (YOLOv5: Reshape -> Transpose -> Sigmoid; YOLOv8:
Reshape -> Concat -> Sigmoid). That data movement cannot run on the NPU (it reorders the
NPU's NHWC layout), so the Sigmoid lands on the host with it, costing a float32 pass over
every class score. An element-wise function commutes exactly with any op that only moves or
copies elements, so ``Sigmoid(Move(x)) == Move(Sigmoid(x))`` bit for bit in float32; moved
next to its conv, the Sigmoid runs in the conv's epilogue table on the NPU
(:mod:`tcc_compiler.schedule.epilogue`) and the host keeps only the movement.

Rewrites, repeated until none applies (pure ONNX graph work on the folded, shape-inferred
model of :func:`~tcc_compiler.frontend.onnx_import.prepare_onnx`):

* ``A(M(x))`` with ``M`` one of :data:`MOVE_OPS` (data input 0) -> ``M(A(x))``;
* ``A(Concat(x1, .., xn))`` -> ``Concat(A(x1), .., A(xn))``;

for ``A`` in :data:`SINK_OPS`, when the moved value has no other reader and is no graph
output, and (Concat) no input is a constant. The activation's output keeps its name (what
the rest of the graph reads); each new tensor is named after the one it replaces plus
``"_sunk"`` and gets its shape in ``value_info``.
"""

from __future__ import annotations

import logging

import onnx
from onnx import helper

log = logging.getLogger(__name__)

#: Element-wise activations worth moving (the ones detection heads apply after movement).
SINK_OPS = frozenset({"Sigmoid"})

#: Single-input data movement an element-wise op commutes with (data input 0; the others,
#: e.g. Reshape's shape, are constants after folding).
MOVE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"})


def sink_activations(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with the module docstring's rewrites applied until none applies.

    Args:
        proto: a folded, shape-inferred model (``value_info`` holds intermediate shapes).

    Returns:
        (the rewritten model, number of rewrites); ``proto`` itself is not changed. The
        nodes stay in topological order: each new activation is placed right before the
        node that now reads it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    count = 0
    while _one_rewrite(g):
        count += 1
    if count:
        log.debug("%s: %d activation(s) moved ahead of data movement", g.name, count)
    return out, count


def _one_rewrite(g: onnx.GraphProto) -> bool:
    """Apply the first applicable rewrite in node order; False when there is none."""
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    consts = {t.name for t in g.initializer}
    for act in g.node:
        if act.op_type not in SINK_OPS or len(act.input) != 1:
            continue
        mid = act.input[0]
        mover = producer.get(mid)
        if mover is None or readers.get(mid) != 1 or mid in outputs:
            continue
        if mover.op_type in MOVE_OPS:
            srcs = [mover.input[0]]
        elif mover.op_type == "Concat" and not any(
                i in consts or i not in producer for i in mover.input):
            srcs = list(mover.input)
        else:
            continue
        _swap(g, act, mover, srcs)
        return True
    return False


def _swap(g: onnx.GraphProto, act: onnx.NodeProto, mover: onnx.NodeProto,
          srcs: list[str]) -> None:
    """Replace ``act(mover(srcs...))`` by ``mover(act(src) for src in srcs)``."""
    shapes = {vi.name: vi for vi in g.value_info}
    new_nodes, new_ins = [], []
    for k, src in enumerate(srcs):
        name = f"{src}_sunk"
        while any(name in n.output for n in g.node):   # unique, also for a reused src
            name += "_"
        new_nodes.append(helper.make_node(act.op_type, [src], [name],
                                          name=f"{act.name}_sunk{k}" if act.name else "",
                                          domain=act.domain))
        new_ins.append(name)
        if src in shapes:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(shapes[src])
            vi.name = name
            g.value_info.append(vi)
    moved_out = mover.output[0]
    for k, name in enumerate(new_ins):
        mover.input[k] = name
    mover.output[0] = act.output[0]
    kept = [vi for vi in g.value_info if vi.name != moved_out]
    del g.value_info[:]
    g.value_info.extend(kept)
    nodes = [n for n in g.node if n is not act]
    at = next(i for i, n in enumerate(nodes) if n is mover)
    del g.node[:]
    g.node.extend(nodes[:at] + new_nodes + nodes[at:])
