"""Cut a prepared ONNX model into NPU and host segments, and write each as an ONNX model.

Pure graph work on the folded, shape-inferred model of
:func:`tcc_compiler.frontend.onnx_import.prepare_onnx`; which nodes may run on the NPU is
decided by :mod:`tcc_compiler.segmenting` (it asks the importer and the legalizer).

Rules (specs/manifest.md, "Segmented models"):

* **Convex stages.** Every node gets a stage number; NPU stages are even, host stages odd, and
  a node's stage is the smallest of its device's parity that is >= the stage of every
  producer on the same device and > the stage of every producer on the other one. Every edge
  then runs from a lower or equal stage to a higher one, so running the stages in order runs
  every node after its inputs.
  A host node then moves to the latest host stage that already holds nodes and still
  precedes its readers (:func:`_sink_host_nodes`), so data movement feeding only the last
  host segment runs there.
* **One NPU segment per connected part of a stage**, in the order of their first node.
* **NPU segment inputs** are float32 rank-4 tensors with known dims (an NPU program's INPUT
  region holds its NCHW maps one after another, int8 NHWC): the model input, outputs of
  earlier NPU segments (handed over as int8) or of host segments. A node of an NPU part
  that reads an input of another rank or type moves to the host and the stages are
  computed again (each round moves at least one node, so the loop ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from tcc_compiler.frontend.onnx_import import SEGMENT_META

#: Segment devices.
NPU = "npu"
HOST = "host"


@dataclass(frozen=True)
class Segment:
    """One segment of a partitioned model.

    Attributes:
        index: position in run order (0-based, over all segments).
        device: ``"npu"`` or ``"host"``.
        nodes: indices of its nodes in the prepared model's node list, in topological order.
        inputs: names of the tensors it reads that other segments (or the model input)
            produce, in first-use order; initializers are not inputs.
        outputs: names of the tensors it produces that later segments read or that are graph
            outputs, in production order.
    """

    index: int
    device: str
    nodes: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or its first output's name when unnamed (as in tccc's messages)."""
    return node.name or (node.output[0] if node.output else "")


def tensor_types(proto: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """{tensor name: value info} of every input, output and inferred intermediate tensor."""
    out = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        out[vi.name] = vi
    return out


def _stages(nodes, producer: dict[str, int], host: set[int]) -> list[int]:
    """Stage number of every node (see the module docstring)."""
    stage: list[int] = []
    for i, node in enumerate(nodes):
        dev_host = i in host
        need = 0
        for t in node.input:
            p = producer.get(t)
            if p is None:
                continue
            need = max(need, stage[p] + (0 if (p in host) == dev_host else 1))
        parity = 1 if dev_host else 0
        stage.append(need if need % 2 == parity else need + 1)
    return _sink_host_nodes(stage, nodes, producer, host)


def _sink_host_nodes(stage: list[int], nodes, producer: dict[str, int],
                     host: set[int]) -> list[int]:
    """``stage`` with every host node moved to the latest host stage that already holds
    nodes and still runs before its readers (a host reader's stage or earlier, an NPU
    reader's stage minus one); nodes without readers stay. The head of a detector whose neck
    leaves several host stages (YOLO11's Concats after its attention block) then reshapes
    and joins the levels' outputs in the last host segment, where the boundary conversion
    makes those moves (frontend/host_prefix.py), instead of copying float32 maps between
    host segments. Readers are visited first (reverse node order), so every node's limit is
    final; producers only ever stay at or below a node's stage, so the stages stay convex."""
    readers: dict[int, list[int]] = {}
    for j, node in enumerate(nodes):
        for t in node.input:
            p = producer.get(t)
            if p is not None:
                readers.setdefault(p, []).append(j)
    host_stages = sorted({stage[i] for i in host})
    for i in sorted(host, reverse=True):
        if i not in readers:
            continue
        limit = min(stage[j] if j in host else stage[j] - 1 for j in readers[i])
        later = [s for s in host_stages if stage[i] < s <= limit]
        if later:
            stage[i] = later[-1]
    return stage


def _components(members: list[int], nodes, producer: dict[str, int]) -> list[list[int]]:
    """Connected parts of ``members`` (edges between members only), each sorted, ordered by
    their first node."""
    parent = {i: i for i in members}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in members:
        for t in nodes[i].input:
            p = producer.get(t)
            if p is not None and p in parent:
                parent[find(p)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in members:
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _external_inputs(part: list[int], nodes, producer: dict[str, int],
                     graph_inputs: set[str]) -> list[tuple[str, int]]:
    """(tensor, first consuming node) of every tensor ``part`` reads from outside, in order."""
    inside = set(part)
    seen: dict[str, int] = {}
    for i in part:
        for t in nodes[i].input:
            if not t or t in seen:
                continue
            p = producer.get(t)
            if (p is not None and p not in inside) or (p is None and t in graph_inputs):
                seen[t] = i
    return list(seen.items())


def _npu_input_ok(vi: onnx.ValueInfoProto | None) -> bool:
    """True for a float32 rank-4 tensor with known positive dims (an NPU program input)."""
    if vi is None:
        return False
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
    return tt.elem_type == onnx.TensorProto.FLOAT and len(dims) == 4 and all(d > 0 for d in dims)


def _misfits(part: list[int], nodes, producer, graph_inputs, types) -> set[int]:
    """Nodes of an NPU part that read an input no NPU program can take (empty set: the part
    is fine): every input must be a float32 rank-4 tensor with known dims."""
    ext = _external_inputs(part, nodes, producer, graph_inputs)
    if not ext:  # reads constants only (folded away at import): nothing to run on the NPU
        return set(part)
    return {i for t, _ in ext if not _npu_input_ok(types.get(t))
            for i in part if t in nodes[i].input}


def plan_segments(proto: onnx.ModelProto, host: set[int]) -> tuple[list[Segment], set[int]]:
    """Cut ``proto`` into segments, ``host`` nodes on the host and the others on the NPU.

    Args:
        proto: a prepared model (:func:`prepare_onnx`: nodes in topological order, shapes
            inferred).
        host: indices of the nodes that must run on the host.

    Returns:
        (segments in run order, the host node set after the input rule moved nodes to the
        host: a superset of ``host``).
    """
    nodes = list(proto.graph.node)
    producer = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    inits = {t.name for t in proto.graph.initializer}
    graph_inputs = {i.name for i in proto.graph.input if i.name not in inits}
    types = tensor_types(proto)
    host = set(host)
    while True:
        stage = _stages(nodes, producer, host)
        parts: list[tuple[str, list[int]]] = []
        moved: set[int] = set()
        for s in sorted(set(stage)):
            members = [i for i in range(len(nodes)) if stage[i] == s]
            if s % 2:
                parts.append((HOST, members))
                continue
            for part in _components(members, nodes, producer):
                moved |= _misfits(part, nodes, producer, graph_inputs, types)
                parts.append((NPU, part))
        if not moved:
            break
        host |= moved
    return _segments(parts, nodes, producer, graph_inputs, proto), host


def _segments(parts, nodes, producer, graph_inputs, proto) -> list[Segment]:
    """:class:`Segment` records of the (device, node list) parts, with inputs and outputs."""
    owner = {i: k for k, (_, part) in enumerate(parts) for i in part}
    used_later: dict[str, set[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t in producer:
                used_later.setdefault(t, set()).add(owner[i])
    graph_outs = [o.name for o in proto.graph.output]
    segs = []
    for k, (device, part) in enumerate(parts):
        ins = [t for t, _ in _external_inputs(part, nodes, producer, graph_inputs)]
        outs = [t for i in part for t in nodes[i].output if t and (
            t in graph_outs or any(o != k for o in used_later.get(t, ())))]
        segs.append(Segment(k, device, tuple(part), tuple(ins), tuple(outs)))
    return segs


def extract_model(proto: onnx.ModelProto, seg: Segment, name: str) -> onnx.ModelProto:
    """The segment as a standalone ONNX model: its nodes, the initializers they read, its
    inputs and outputs typed and shaped as inferred on the whole model, the same opsets.

    Args:
        proto: the prepared model ``seg`` was planned on. name: the new graph's name.

    Returns:
        A new ``onnx.ModelProto`` (inferred intermediate shapes kept as ``value_info``).
    """
    nodes = [proto.graph.node[i] for i in seg.nodes]
    used = {t for n in nodes for t in n.input}
    types = tensor_types(proto)
    produced = {t for n in nodes for t in n.output}
    inits = [t for t in proto.graph.initializer if t.name in used]
    value_info = [types[t] for t in sorted(produced) if t in types and t not in seg.outputs]
    def typed(t: str) -> onnx.ValueInfoProto:  # untyped when shape inference gave up on it
        return types[t] if t in types else onnx.ValueInfoProto(name=t)

    graph = helper.make_graph(nodes, name, [typed(t) for t in seg.inputs],
                              [typed(t) for t in seg.outputs], inits, value_info=value_info)
    model = helper.make_model(graph, opset_imports=list(proto.opset_import),
                              producer_name="tccc")
    model.ir_version = proto.ir_version
    helper.set_model_props(model, {SEGMENT_META: f"{seg.device} {seg.index}"})
    return model
