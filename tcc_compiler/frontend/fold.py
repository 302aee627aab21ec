"""Constant folding of an ONNX model with onnx-graphsurgeon (folds Constant, ConstantOfShape
and the Shape->Gather->Concat->Reshape chains exporters write for dynamic batch), in rounds
while the graph shrinks, then ONNX shape inference. :mod:`tcc_compiler.frontend.nofold` decides
when no round is needed; :func:`tcc_compiler.frontend.onnx_import.prepare_onnx` calls
:func:`fold_and_infer` otherwise.
"""

from __future__ import annotations

import logging

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import EncodeError

from tcc_compiler.errors import ModelError, first_line
from tcc_compiler.frontend.shape_infer import infer_shapes, infer_shapes_into

log = logging.getLogger(__name__)
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR


def fold_and_infer(proto: onnx.ModelProto, where: str, opset: int) -> onnx.ModelProto:
    """``proto`` constant-folded (rounds of :func:`fold_constants`) and shape-inferred.

    Raises:
        ModelError: folding or shape inference fails.
    """
    folded = fold_constants(proto, where)
    for _ in range(MAX_FOLD_ROUNDS - 1 if may_fold_again(folded) else 0):
        # A Pad/Reshape whose pads/shape were just folded has an output shape only now: the
        # next round folds the Shape arithmetic that reads it (timm's "SAME" padding writes
        # one such chain per strided conv, each reading the previous padded map's shape).
        again = fold_constants(folded, where)
        if len(again.graph.node) >= len(folded.graph.node):
            break
        folded = again
    for imp in folded.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    try:
        inferred = infer_shapes_into(folded)   # graphsurgeon's new model: ours to fill in
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except EncodeError:  # protobuf could not allocate the serialized model (ulimit -v)
        raise MemoryError(f"{where}: serializing the model for shape inference") from None
    except Exception as exc:  # shape inference errors: inconsistent model
        raise ModelError(f"{where}: shape inference failed: {first_line(exc, 10**6)}") from None
    return inferred


def may_fold_again(proto: onnx.ModelProto) -> bool:
    """Whether another folding round could shrink the once-folded ``proto``: one round folds
    every node whose inputs are all constants (transitively), so only a Shape node, which
    graphsurgeon folds once its input's shape is known (Shape, Shape->Gather, Shape->Slice),
    can give a later round work. A graph holding subgraphs (If/Loop bodies) is always folded
    again. Skipping the round saves a shape inference and a graphsurgeon round trip (about
    0.3 s CPU on ResNet-50); the result is the same, as the caller keeps the earlier graph
    when a round does not shrink it."""
    for n in proto.graph.node:
        if n.op_type == "Shape" or any(a.type in (onnx.AttributeProto.GRAPH,
                                                   onnx.AttributeProto.GRAPHS)
                                       for a in n.attribute):
            return True
    return False


#: Rounds of shape inference + constant folding before giving up on a shrinking graph.
MAX_FOLD_ROUNDS = 32


def fold_constants(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """One round: ONNX shape inference, then onnx-graphsurgeon constant folding and cleanup.

    Raises:
        ModelError: graphsurgeon cannot read, fold or write the graph, or it has a cycle.
    """
    try:  # shapes of intermediate tensors let graphsurgeon fold Shape->Gather->... chains
        proto = infer_shapes(proto)
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:  # inconsistent model: reported by the caller's inference
        log.debug("%s: shape inference before folding failed: %s", where, exc)
    try:
        graph = gs.import_onnx(proto)
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:  # onnx-graphsurgeon raises assorted errors on bad protos
        raise ModelError(f"{where}: cannot read graph ({type(exc).__name__}: {exc})") from None
    check_cycles(graph, where)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    try:
        graph.fold_constants(error_ok=True).cleanup().toposort()
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:
        raise ModelError(f"{where}: constant folding failed "
                         f"({type(exc).__name__}: {exc})") from None
    try:
        return gs.export_onnx(graph)
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:  # onnx-graphsurgeon raises assorted errors on odd attributes
        raise ModelError(f"{where}: cannot write the folded graph back "
                         f"({type(exc).__name__}: {exc})") from None


def check_cycles(graph: gs.Graph, where: str) -> None:
    """Raise ModelError naming a node on a cycle, if the graph has one. Kahn's algorithm
    decides; networkx (0.5 s of CPU to import, so only then) names the node."""
    producers = {}
    for node in graph.nodes:
        for t in node.outputs:
            producers[t.name] = node
    indeg = {id(node): 0 for node in graph.nodes}
    succ: dict[int, list[int]] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if t.name in producers:
                succ.setdefault(id(producers[t.name]), []).append(id(node))
                indeg[id(node)] += 1
    ready = [k for k, d in indeg.items() if d == 0]
    done = 0
    while ready:
        k = ready.pop()
        done += 1
        for s in succ.get(k, ()):
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if done == len(indeg):
        return
    import networkx as nx

    g = nx.DiGraph()
    for node in graph.nodes:
        g.add_node(id(node))
        for t in node.inputs:
            if t.name in producers:
                g.add_edge(id(producers[t.name]), id(node))
    cycle = nx.find_cycle(g)
    names = {id(n): n.name for n in graph.nodes}
    raise ModelError(f"{where}: graph has a cycle through node '{names[cycle[0][0]]}'")
