"""Decide which ONNX nodes run on the NPU and which on the host, and cut the model there.

:func:`plan_model` is the one answer both ``tccc compile`` (falling back from a model the NPU
cannot run whole) and ``tccc ops`` use, so the two cannot disagree. It asks the compiler's
own stages, never a table: the driver's import (:func:`tcc_compiler.driver.import_model`),
float passes and NPU-work check decide whether each NPU segment compiles; a node they refuse
moves to the host and the model is cut again, until every NPU segment imports and
legalizes (each round moves at least one node, so the loop ends). Host segments are then
loaded into ONNX Runtime: a node ORT cannot run either is ``unsupported``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

import onnx

from tcc_compiler.errors import TccError, UnsupportedError, first_line
from tcc_compiler.frontend.dfl import split_dfl
from tcc_compiler.frontend.loader import check_onnx_validity
from tcc_compiler.frontend.onnx_import import PreparedModel, prepare_onnx
from tcc_compiler.frontend.segments import (HOST, NPU, Segment, extract_model, node_label,
                                            plan_segments)
from tcc_compiler.frontend.sink import sink_activations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentPlan:
    """Where every node of a model runs, and the segments that follow.

    Attributes:
        prepared: the folded, shape-inferred model the segments index into.
        segments: in run order (:class:`tcc_compiler.frontend.segments.Segment`).
        host_reason: {node index: why it runs on the host} (the NPU stage's refusal, or the
            one-input rule of NPU segments).
        unsupported: {node index: why it runs nowhere} (ONNX Runtime cannot run it, or no
            node is left for the NPU); non-empty means the model does not compile.
        rounds: how many cut-and-check rounds the plan took.
        npu_ir: {ONNX node label: the IR node it became} in the NPU segments after the float
            passes (fused nodes share one; nodes removed at compile time are absent).
        problem: why the model as a whole does not compile though no node is at fault (no
            node is left to compute: every output is the input or a constant), else "".
    """

    prepared: PreparedModel
    segments: list[Segment]
    host_reason: dict[int, str]
    unsupported: dict[int, str] = field(default_factory=dict)
    rounds: int = 0
    npu_ir: dict = field(default_factory=dict)
    problem: str = ""

    @property
    def npu_segments(self) -> list[Segment]:
        """The NPU segments, in run order."""
        return [s for s in self.segments if s.device == NPU]

    def labels(self, indices) -> list[str]:
        """ONNX node labels of node ``indices``."""
        nodes = self.prepared.proto.graph.node
        return [node_label(nodes[i]) for i in indices]


def frontend_refusals(nodes, problems: list[str]) -> dict[str, str]:
    """{ONNX node label: reason} of the nodes the frontend refused (its problems name them as
    ``"<op_type> '<label>': reason"``); a problem naming no node is given to every node."""
    reasons: dict[str, str] = {}
    placed: set[str] = set()
    for n in nodes:
        prefix = f"{n.op_type} '{node_label(n)}'"
        for prob in problems:
            if prob.startswith(prefix + ":") or prob.startswith(prefix + " "):
                reasons[node_label(n)] = prob[len(prefix):].lstrip(": ").strip()
                placed.add(prob)
    model_level = [p for p in problems if p not in placed and not p.startswith("(")]
    if model_level:
        for n in nodes:
            reasons.setdefault(node_label(n), "; ".join(model_level))
    return reasons


def legalizer_refusals(by_ir_name: dict, problems: list[str]) -> dict[str, str]:
    """{ONNX node label: reason} of the legalizer's refusals: it names IR nodes, mapped back
    onto ONNX nodes by provenance (``Node.source``)."""
    reasons: dict[str, str] = {}
    for prob in problems:
        head, _, reason = prob.partition(": ")
        ir_name = head.split("'")[1] if head.count("'") >= 2 else ""
        ir_node = by_ir_name.get(ir_name)
        for src in (ir_node.source if ir_node is not None else ()):
            reasons[src] = reason or prob
    return reasons


def _batched_input(sub: onnx.ModelProto) -> dict[str, str]:
    """{ONNX node label: reason} of the nodes reading a segment input whose fixed first dim is
    above 1, else {}. The model's own input is fixed at batch 1 before planning, so such an
    input is a tensor from another segment whose first axis is data (MobileViT's attention
    folds patches into it): compiling it at batch 1, as the import does for a network input,
    would drop all but the first slice."""
    for inp in sub.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 1:
            why = (f"reads '{inp.name}' with a first dim of {dims[0].dim_value} from another "
                   "segment: an NPU program takes one image (batch 1)")
            return {node_label(n): why for n in sub.graph.node if inp.name in n.input}
    return {}


def check_npu_segment(sub: onnx.ModelProto) -> tuple[dict[str, str], dict]:
    """Run the driver's import, float passes and NPU-work check on one NPU segment.

    Raises:
        InputError: the segment needs more memory to compile than this process may use
            (:func:`tcc_compiler.driver.check_memory`).

    Returns:
        (refused, where): refused = {ONNX node label: reason} of the nodes the NPU cannot run
        (every node of the segment when the refusal names none), {} when the segment
        compiles to an NPU program; where = {ONNX node label: the IR node it ended up in}
        after the float passes (labels of nodes removed at compile time are absent).
    """
    from tcc_compiler.driver import check_memory, import_model, run_float_passes
    from tcc_compiler.frontend.onnx_import import check_npu_work

    nodes = list(sub.graph.node)
    every = {node_label(n) for n in nodes}
    batched = _batched_input(sub)
    if batched:
        return batched, {}
    try:
        graph, passes = import_model(sub)
    except UnsupportedError as exc:
        return frontend_refusals(nodes, exc.problems) or dict.fromkeys(every, str(exc)), {}
    except TccError as exc:  # e.g. an input the NPU program cannot take
        named = [i.name for i in sub.graph.input if f"'{i.name}'" in str(exc)]
        first = named[0] if named else (sub.graph.input[0].name if sub.graph.input else "")
        entry = {node_label(n) for n in nodes if first in n.input} or every
        return dict.fromkeys(entry, str(exc).split(": ", 1)[-1]), {}
    by_ir = {n.name: n for n in graph.nodes}
    try:
        graph = run_float_passes(graph, passes).graph
        check_npu_work(graph)
    except UnsupportedError as exc:
        return legalizer_refusals(by_ir, exc.problems) or dict.fromkeys(every, str(exc)), {}
    check_memory(graph, sub.graph.name)  # as the segment's compile does: ops agrees with it
    return {}, {src: n for n in graph.nodes for src in n.source}


def _ort_problem(model: onnx.ModelProto) -> str | None:
    """None when ONNX Runtime loads ``model`` (CPU provider) and runs it once on zeros of its
    input types and shapes (unknown dims as 1), else its first error line: a node whose
    shapes or attributes ORT refuses only at run time is caught here, not mid-compile."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    so = ort.SessionOptions()
    so.log_severity_level = 4   # fatal only: errors come back as exceptions, reported once
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        feeds = {}
        for vi in model.graph.input:
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                    for d in tt.shape.dim]
            feeds[vi.name] = np.zeros(dims, helper.tensor_dtype_to_np_dtype(tt.elem_type))
        sess.run(None, feeds)
    except MemoryError:  # running out of memory says nothing about the model
        raise
    except Exception as exc:  # ORT (and the dtype lookup) raise assorted exception types
        return first_line(exc)
    return None


def _host_unsupported(prepared: PreparedModel, segs: list[Segment],
                      npu_reason: dict[int, str]) -> dict[int, str]:
    """{node index: the NPU's and ORT's reasons} of host nodes ONNX Runtime cannot run: each
    host segment is loaded and run once whole, node by node (in order) only when that
    fails; a node reading a refused node's output is refused with that reason."""
    nodes = prepared.proto.graph.node
    bad: dict[int, str] = {}
    bad_out: dict[str, str] = {}
    for seg in segs:
        if seg.device != HOST or _ort_problem(extract_model(prepared.proto, seg, "h")) is None:
            continue
        for i in seg.nodes:
            upstream = next((bad_out[t] for t in nodes[i].input if t in bad_out), None)
            if upstream is not None:
                why = f"reads the output of '{upstream}', which runs nowhere"
            else:
                why = _ort_problem(extract_model(prepared.proto, plan_one(prepared.proto, i),
                                                 "n"))
                if why is None:
                    continue
                npu = npu_reason.get(i, "")
                why = (f"{npu + '; ' if npu else ''}ONNX Runtime cannot run it on the host "
                       f"either ({why})")
            bad[i] = why
            bad_out.update(dict.fromkeys((t for t in nodes[i].output if t),
                                         node_label(nodes[i])))
    return bad


def plan_one(proto: onnx.ModelProto, i: int) -> Segment:
    """A one-node host segment of node ``i`` (its non-constant inputs, all its outputs)."""
    inits = {t.name for t in proto.graph.initializer}
    node = proto.graph.node[i]
    ins = tuple(dict.fromkeys(t for t in node.input if t and t not in inits))
    return Segment(0, HOST, (i,), ins, tuple(t for t in node.output if t))


def _refused_round(prepared: PreparedModel, segs: list[Segment], checked: dict,
                   index: dict[str, int]) -> dict[int, str]:
    """{node index: reason} of the nodes the NPU segments of one round refuse (each segment
    checked once: ``checked`` caches the answer per node set)."""
    new: dict[int, str] = {}
    for seg in segs:
        if seg.device != NPU:
            continue
        if seg.nodes not in checked:
            checked[seg.nodes] = check_npu_segment(
                extract_model(prepared.proto, seg, f"npu_{seg.index}"))
        refused = checked[seg.nodes][0]
        mine = {index[k]: v for k, v in refused.items() if index.get(k) in seg.nodes}
        if refused and not mine:  # a refusal naming no node of ours: the whole segment
            mine = dict.fromkeys(seg.nodes, "; ".join(sorted(set(refused.values()))))
        new.update(mine)
    return new


def plan_model(model: str | os.PathLike | onnx.ModelProto,
               input_whc: str | tuple[int, int, int] | None = None) -> SegmentPlan:
    """Place every node on the NPU or the host and cut the model into segments.

    Args:
        model: .onnx path or ModelProto. input_whc: "WxHxC" or (W, H, C); None = its dims.

    Returns:
        :class:`SegmentPlan`; its ``unsupported`` lists the nodes that run nowhere (then the
        model does not compile).

    Raises:
        InputError, ModelError: the model cannot be read at all (not one float image input,
            inconsistent shapes).
    """
    prepared = prepare_onnx(model, input_whc, custom_domains=True)
    # a malformed model is refused as the NPU import refuses it, not run on the host
    check_onnx_validity(prepared.original, prepared.where, standard_only=True)
    if prepared.fixed is None:   # (a pre-quantized model's scales are fixed per tensor name)
        # a detection head's Sigmoid after host-only data movement runs on the NPU instead
        proto, moved = sink_activations(prepared.proto)
        # and YOLOv8's DFL softmax and expectation, split per level, next to its box convs
        proto, split = split_dfl(proto)
        if moved or split:
            prepared = dataclasses.replace(prepared, proto=proto)
    nodes = list(prepared.proto.graph.node)
    index = {node_label(n): i for i, n in enumerate(nodes)}
    host: set[int] = set()
    reasons: dict[int, str] = {}
    checked: dict[tuple[int, ...], dict[str, str]] = {}
    rounds = 0
    while True:
        rounds += 1
        segs, host_after = plan_segments(prepared.proto, host)
        for i in host_after - host:
            reasons.setdefault(i, "moved to the host: it reads a tensor from another segment "
                                  "that no NPU program takes as input (only float32 rank-4 "
                                  "tensors with known dims)")
        host = host_after
        new = _refused_round(prepared, segs, checked, index)
        if not new:
            break
        for i, why in new.items():
            reasons.setdefault(i, why)
        host |= set(new)
    log.info("%s: %d segment(s) after %d round(s)", prepared.where, len(segs), rounds)
    unsupported = _host_unsupported(prepared, segs, reasons)
    if not any(s.device == NPU for s in segs):
        why = "nothing is left for the NPU (every node runs on the host)"
        unsupported.update({i: f"{reasons.get(i, '')}; {why}".lstrip("; ")
                            for i in range(len(nodes)) if i not in unsupported})
    problem = "" if nodes else (
        f"nothing is left to compute once constants are folded: output(s) "
        f"{', '.join(repr(o.name) for o in prepared.proto.graph.output)} are the input or "
        "constants")
    npu_ir = {k: v for s in segs if s.device == NPU for k, v in checked[s.nodes][1].items()}
    return SegmentPlan(prepared, segs, {i: reasons.get(i, "") for i in host}, unsupported,
                       rounds, npu_ir, problem)
