"""The data movement at the start of a host segment, done by the boundary conversion itself.

A host segment often begins by only moving the NPU outputs it reads: SSDLite transposes its
twelve head maps to NHWC, flattens and concatenates them; YOLOv8 flattens and concatenates
its box maps and transposes them for the DFL Softmax. The boundary conversion reads every
NPU output element once and writes its float32 value once; it can write each value straight
to where those moves put it (the NPU's NHWC order is already the transposed layout SSDLite
asks for), so the moves cost no pass of their own.

:func:`movement_prefix` finds them: the nodes of :data:`MOVE_OPS` whose data inputs are NPU
outputs converted to float32 (``sources``) or outputs of such nodes, every other input a
constant; the values they hand on (read by another node of the graph) are the prefix's
outputs. A moved value must have no other reader (so the conversion writes each element at
most once), and a graph output is never made by the prefix (the host graph makes it). The host
graph keeps every node (``tccc export-onnx --ort`` inlines it as it is) and records the
prefix's node count in its metadata (:data:`PREFIX_KEY`, the prefix nodes first);
the runtime (:mod:`tcc_compiler.runtime.segmented`) computes the prefix's outputs as one
gather from the NPU outputs' integers (the index map of each output element: the prefix run
once in ONNX Runtime on element indices) dequantized into place, and runs the remaining
nodes. Values are the same as the prefix run on the dequantized tensors, bit for bit: the
moves copy values, and each is dequantized by the same formula.
"""

from __future__ import annotations

import onnx
from onnx import helper

#: Ops whose outputs only copy elements of their data inputs (data inputs: every input of a
#: Concat, input 0 of the others; the others' remaining inputs must be constants).
MOVE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
                      "Slice", "Split", "Concat"})

#: Metadata key of a host graph whose first N nodes are its boundary prefix (value: N).
PREFIX_KEY = "tccc.boundary_prefix_nodes"

#: Metadata key of a host graph whose last N nodes are joins (value: N): Concats making
#: graph outputs, into which the boundary conversion writes their prefix inputs.
JOIN_KEY = "tccc.boundary_join_nodes"


def _data_inputs(n: onnx.NodeProto) -> list[str]:
    return [t for t in n.input if t] if n.op_type == "Concat" else [n.input[0]]


def movement_prefix(proto: onnx.ModelProto, sources: set[str]) -> onnx.ModelProto:
    """A copy of host graph ``proto`` with its movement prefix (module docstring) moved to
    the front and its node count recorded under :data:`PREFIX_KEY`, its joins moved to the
    end and counted under :data:`JOIN_KEY`; unchanged (a copy, no key) when there is no
    prefix.

    Args:
        proto: a host segment's ONNX model. sources: its float32 inputs that are NPU outputs.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    readers: dict[str, int] = {}
    for n in g.node:
        for t in set(n.input):
            readers[t] = readers.get(t, 0) + 1
    prefix, rest = _split_nodes(g, sources, readers)
    if not prefix:
        return out
    moved = {o for n in prefix for o in n.output if o}
    outputs = {o.name for o in g.output}
    inputs = {i.name for i in g.input}
    joins = [n for n in rest if _is_join(n, moved, outputs, readers)
             and not inputs.intersection(n.input)]
    rest = [n for n in rest if n not in joins]
    copies = [onnx.NodeProto() for _ in prefix + rest + joins]
    for c, n in zip(copies, prefix + rest + joins):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    del g.value_info[:]   # (every value the prefix hands on must be typed)
    g.value_info.extend(onnx.shape_inference.infer_shapes(out).graph.value_info)
    props = {**{p.key: p.value for p in out.metadata_props}, PREFIX_KEY: str(len(prefix))}
    if joins:
        props[JOIN_KEY] = str(len(joins))
    helper.set_model_props(out, props)
    return out


def _split_nodes(g: onnx.GraphProto, sources: set[str], readers: dict[str, int]):
    """(prefix nodes, the others), each in graph order (module docstring's rule)."""
    consts = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    derived = {i.name for i in g.input if i.name in sources
               and i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    prefix, rest = [], []
    for n in g.node:
        if _moves(n, derived, readers, consts, outputs):
            prefix.append(n)
            derived.update(o for o in n.output if o)
        else:
            rest.append(n)
    return prefix, rest


def _moves(n: onnx.NodeProto, derived: set[str], readers: dict[str, int], consts: set[str],
           outputs: set[str]) -> bool:
    """True when ``n`` joins the prefix: a move of ``derived`` values, each read by it
    alone (so the conversion writes every element at most once), its other inputs
    constants, no graph output made."""
    if n.op_type not in MOVE_OPS or n.domain not in ("", "ai.onnx"):
        return False
    data = _data_inputs(n)
    others = [t for t in n.input if t and t not in data]
    return (bool(data) and len(set(data)) == len(data)
            and all(t in derived and readers.get(t) == 1 for t in data)
            and all(t in consts for t in others) and not any(o in outputs for o in n.output))


def _is_join(n: onnx.NodeProto, moved: set[str], outputs: set[str],
             readers: dict[str, int]) -> bool:
    """True for a Concat making a graph output no node reads, some of whose inputs are
    prefix outputs (``moved``) read by it alone (the conversion writes those into its
    output)."""
    return (n.op_type == "Concat" and n.domain in ("", "ai.onnx") and n.output[0] in outputs
            and not readers.get(n.output[0]) and len(set(n.input)) == len(n.input)
            and any(t in moved and readers.get(t) == 1 for t in n.input))


def _parts(proto: onnx.ModelProto):
    """(prefix nodes, middle nodes, join nodes) of a host graph recording a prefix, else
    None.

    Raises:
        ValueError: the recorded counts are not whole numbers of the graph's nodes.
    """
    meta = {p.key: p.value for p in proto.metadata_props}
    if PREFIX_KEY not in meta:
        return None
    k, j = int(meta[PREFIX_KEY]), int(meta.get(JOIN_KEY, 0))
    nodes = list(proto.graph.node)
    if not (0 < k <= len(nodes) and 0 <= j <= len(nodes) - k):
        raise ValueError(f"{PREFIX_KEY} = {k}, {JOIN_KEY} = {j} for a graph of "
                         f"{len(nodes)} nodes")
    return nodes[:k], nodes[k:len(nodes) - j], nodes[len(nodes) - j:]


def _submodel(proto: onnx.ModelProto, nodes, ins: list[str], outs: list[str],
              name: str) -> onnx.ModelProto:
    """``nodes`` of ``proto`` as a model reading ``ins`` and making ``outs`` (typed as
    ``proto`` types them), with the initializers they read."""
    g = proto.graph
    types = {vi.name: vi for vi in list(g.input) + list(g.value_info) + list(g.output)}
    used = {t for n in nodes for t in n.input}
    m = helper.make_model(helper.make_graph(
        nodes, name, [types[t] for t in ins], [types[t] for t in outs],
        [t for t in g.initializer if t.name in used]), opset_imports=list(proto.opset_import))
    m.ir_version = proto.ir_version
    return m


def split_prefix(proto: onnx.ModelProto) -> tuple[onnx.ModelProto | None, onnx.ModelProto,
                                                  list[onnx.NodeProto]]:
    """(the prefix as a model of its own, the graph's middle, its joins) of a host graph
    written by :func:`movement_prefix`; (None, ``proto``, []) when it records no prefix.

    The prefix model reads the NPU outputs its nodes read and outputs the values the middle
    or a join reads; the middle reads those instead (typed as the host graph's
    ``value_info`` types them) and outputs the graph outputs no join makes plus the join
    inputs it makes.

    Raises:
        ValueError: the recorded counts are not whole numbers of the graph's nodes, or a
            join reads a value neither the prefix nor the middle makes.
    """
    parts = _parts(proto)
    if parts is None:
        return None, proto, []
    pre, rest, joins = parts
    g = proto.graph
    graph_in, graph_out = [i.name for i in g.input], [o.name for o in g.output]
    made, rest_made = _outputs_of(pre), _outputs_of(rest)
    join_ins = list(dict.fromkeys(t for n in joins for t in n.input))
    if any(t not in made and t not in rest_made for t in join_ins):
        raise ValueError("a join reads a value neither the prefix nor the graph makes")
    read_later = _inputs_of(rest + joins) | set(graph_out)
    handed = [o for o in made if o in read_later]
    pre_in = [t for t in graph_in if t in _inputs_of(pre)]
    rest_in, rest_out = _middle_io(rest, joins, graph_in, graph_out, handed, join_ins)
    return (_submodel(proto, pre, pre_in, handed, g.name + "_prefix"),
            _submodel(proto, rest, rest_in, rest_out, g.name), joins)


def _middle_io(rest, joins, graph_in, graph_out, handed, join_ins):
    """(inputs, outputs) of the graph's middle: the graph inputs it reads (or passes out)
    and the prefix values it reads; the graph outputs no join makes and the join inputs it
    makes."""
    reads, makes = _inputs_of(rest), set(_outputs_of(rest))
    ins = [t for t in graph_in if t in reads or t in graph_out]
    ins += [t for t in handed if t in reads]
    joined = {n.output[0] for n in joins}
    outs = [t for t in graph_out if t not in joined]
    outs += [t for t in join_ins if t in makes and t not in outs]
    return ins, outs


def _outputs_of(nodes) -> list[str]:
    """The values ``nodes`` make, in order."""
    return [o for n in nodes for o in n.output if o]


def _inputs_of(nodes) -> set[str]:
    """The values ``nodes`` read."""
    return {t for n in nodes for t in n.input if t}
