"""Which ONNX nodes tccc runs on the NPU and which it leaves to the host, with the reason.

For toolkits that split graphs (run the NPU part with tccc, the rest elsewhere)::

    >>> from tcc_compiler import partition
    >>> for p in partition("model.onnx", "224x224x3"):
    ...     print(p.node, p.op_type, p.device, p.reason)

The answer comes from the compiler's own stages, never from a separate table that could drift:
the driver's import stage (the frontend's converters,
:data:`tcc_compiler.frontend.converters.CONVERTERS`, and their checks) decides which nodes
import, its float-pass stage (:func:`tcc_compiler.driver.run_float_passes`) what fuses and what
legalizes,
and node provenance (``Node.source``: the ONNX node names each IR node came from) maps the
result back onto the ONNX nodes. Heavy imports are deferred so ``import tcc_compiler`` stays
cheap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

#: Placement values: part of an NPU program; run on the host (Softmax/ArgMax after the NPU
#: program, or a host segment run by ONNX Runtime between NPU segments); refused by
#: ``tccc compile`` (a model with any such node does not compile).
NPU = "npu"
HOST = "host"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Placement:
    """Where one ONNX node runs.

    Attributes:
        node: the ONNX node's name (its first output's name when the node is unnamed, as in
            tccc's error messages).
        op_type: the ONNX op type (e.g. ``"Conv"``).
        device: ``"npu"`` (part of the compiled NPU program, possibly fused into a
            neighbour or folded away at compile time), ``"host"`` (compiled into the package
            and run on the host CPU after the NPU program, e.g. Softmax) or
            ``"unsupported"`` (``tccc compile`` refuses the model because of this node).
        reason: one line saying why (the NPU op it became, or the constraint that failed).
        npu_op: the NPU op kind it lowers into (``"conv"``, ``"fc"``, ...), None otherwise.
        folded: True when the node disappears at compile time (constant-folded, identity,
            dropout, batch norm folded into a conv, ...) and costs nothing at run time.
    """

    node: str
    op_type: str
    device: str
    reason: str
    npu_op: str | None = None
    folded: bool = False

    @property
    def supported(self) -> bool:
        """False when ``tccc compile`` refuses the model because of this node."""
        return self.device != UNSUPPORTED

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)


def _label(node) -> str:
    return node.name or (node.output[0] if node.output else "")


def _load(model):
    import onnx

    from tcc_compiler.api import as_model
    from tcc_compiler.frontend.loader import load_onnx

    m = as_model(model)
    if isinstance(m, onnx.ModelProto):
        return m
    return load_onnx(m)


def _provisional(n, host_reason: dict, converters: dict, support: dict) -> Placement:
    """Placement of ONNX node ``n`` when the frontend refused part of the model (so the
    passes never ran): refused nodes are unsupported, with the frontend's reason; the others by
    their op's support record (frontend/support.py: Softmax and ArgMax run on the host); an op
    without a converter is folded at import (shape arithmetic such as ConstantOfShape)."""
    name = _label(n)
    if name in host_reason:
        return Placement(name, n.op_type, UNSUPPORTED, host_reason[name])
    if n.op_type not in converters:
        return Placement(name, n.op_type, NPU, "folded at import (constant or shape "
                         "arithmetic)", None, True)
    runs = getattr(support.get(n.op_type), "runs", "")
    if runs == HOST:
        return Placement(name, n.op_type, HOST, "runs on the host CPU after the NPU program, "
                         "on the dequantized output (manifest host_ops)")
    return Placement(name, n.op_type, NPU, "supported op (the frontend converts it); placement "
                     "after fusion is known once the unsupported nodes are removed", None,
                     runs == "folded")


def partition(model, input_whc: str | tuple[int, int, int] | None = None, *,
              strict: bool = False, target=None) -> list[Placement]:
    """Place every node of an ONNX model on the NPU or the host, or mark it unsupported.

    A model compiles (``tccc compile`` / :func:`tcc_compiler.compile`) exactly when no node is
    ``"unsupported"``: the answer comes from the same import and float-pass stages, whose
    checks include the NPU command fields' ranges (an FC over a map wider than 255, a window
    or stride above 255), and the scheduler's up-front bound on ``target``: a conv-like op
    its SRAM cuts into more than ``MAX_OP_TILES`` tiles is unsupported, with compile's
    refusal (:func:`tcc_compiler.schedule.bounds.op_tile_problems`). A model the NPU cannot
    run whole is placed as compile then segments it
    (:func:`tcc_compiler.segmenting.plan.plan_model`): the refused nodes are ``"host"`` (run
    by ONNX Runtime between NPU segments), or ``"unsupported"`` when ONNX Runtime cannot run
    them either, or with ``strict``.

    Args:
        model: .onnx path (str or PathLike), ``onnx.ModelProto`` or ``onnx_graphsurgeon.Graph``.
        input_whc: ``"WxHxC"`` or ``(W, H, C)``; None = the model's fixed input dims.
        strict: as ``tccc compile --strict``: no host segments, refused nodes are unsupported.
        target: as ``tccc compile --target``: a :class:`~tcc_compiler.target.Target`, a target
            name or a .toml path; None = the default target.

    Returns:
        One :class:`Placement` per ONNX node, in the model's node order.

    Raises:
        InputError, ModelError: the model cannot be read at all (unreadable file, not one
        float image input, inconsistent shapes), or compiling it needs more memory than this
        process may use (as ``tccc compile`` refuses it), or ``target`` cannot be loaded
        (:func:`tcc_compiler.target.load_target`). Unsupported nodes are not errors
        here: they get device ``"unsupported"`` with the frontend's or legalizer's reason.
    """
    from tcc_compiler.driver import import_model
    from tcc_compiler.errors import UnsupportedError
    from tcc_compiler.frontend.converters import CONVERTERS
    from tcc_compiler.frontend.support import SUPPORT
    from tcc_compiler.segmenting.plan import frontend_refusals

    tgt = _target(target)   # a bad target file is refused before any work, as compile does
    proto = _load(model)
    nodes = list(proto.graph.node)
    where = str(model) if isinstance(model, (str, os.PathLike)) else (proto.graph.name
                                                                       or "<model>")
    try:  # the driver's import stage; a path is passed on so its errors name the file
        graph, passes = import_model(model if isinstance(model, (str, os.PathLike)) else proto,
                                     input_whc)
    except UnsupportedError as exc:
        host_reason = frontend_refusals(nodes, exc.problems)
        log.info("%s: %d node(s) refused by the frontend", where, len(host_reason))
        if not strict:
            return _segmented(model, proto, input_whc, tgt)
        return [_provisional(n, host_reason, CONVERTERS, SUPPORT) for n in nodes]

    graph, host_reason = _float_stage(model, graph, passes, nodes)
    if host_reason and not strict:
        return _segmented(model, proto, input_whc, tgt)
    ir_nodes = graph.nodes if graph is not None else []
    where_ir = {src: n for n in ir_nodes for src in n.source}
    copies = _channel_copies(graph)
    too_many = _tile_refusals(ir_nodes, tgt)
    out = []
    for n in nodes:
        name = _label(n)
        why = host_reason.get(name) or too_many.get(name)
        if why:
            out.append(Placement(name, n.op_type, UNSUPPORTED, why))
        else:
            out.append(_placed(n, name, where_ir.get(name), copies))
    return out


def _float_stage(model, graph, passes, nodes) -> tuple[object, dict[str, str]]:
    """The driver's float-pass stage on imported ``graph`` and the checks compile makes
    after it (NPU work, memory): (the float graph, {}) or, when they refuse it, (None,
    {ONNX node label: reason}); a refusal naming no ONNX node is every node's, so the model
    is never reported as compiling when compile refuses it.

    Raises:
        InputError: compiling needs more memory than this process may use (as compile).
    """
    from tcc_compiler.driver import check_memory, run_float_passes
    from tcc_compiler.errors import UnsupportedError
    from tcc_compiler.frontend.onnx_import import check_npu_work
    from tcc_compiler.segmenting.plan import legalizer_refusals

    by_ir_name = {n.name: n for n in graph.nodes}
    try:
        graph = run_float_passes(graph, passes).graph
        check_npu_work(graph)  # as the driver's compile does
        check_memory(graph, model)  # and its memory check (an InputError, as in compile)
    except UnsupportedError as exc:
        reasons = legalizer_refusals(by_ir_name, exc.problems)
        return None, reasons or dict.fromkeys((_label(n) for n in nodes),
                                              "; ".join(exc.problems))
    return graph, {}


def _target(target):
    """``target`` (a Target, a name, a .toml path or None) as a Target."""
    from tcc_compiler.target import Target, load_target

    return target if isinstance(target, Target) else load_target(target)


def _tile_refusals(ir_nodes, tgt) -> dict[str, str]:
    """{ONNX node label: compile's refusal} of the nodes that became a conv-like op ``tgt``'s
    SRAM cuts into more than ``MAX_OP_TILES`` tiles (the driver's up-front check,
    :func:`tcc_compiler.schedule.bounds.op_tile_problems`; compile refuses the model, it does
    not move such an op to the host)."""
    from tcc_compiler.schedule.bounds import op_tile_problems

    return {src: why for n, why in op_tile_problems(ir_nodes, tgt) for src in n.source}


def _segmented(model, proto, input_whc, tgt) -> list[Placement]:
    """Placements of a model compile segments (the plan of :mod:`tcc_compiler.segmenting`):
    NPU segment nodes as the NPU stages place them, host nodes with the refusal that moved
    them, nodes folded before segmenting as folded, and ``unsupported`` where neither runs
    or where an NPU op needs more tiles than target ``tgt`` allows (:func:`_tile_refusals`;
    each segment's compile refuses it)."""
    from tcc_compiler.segmenting.build import check_default_calibration
    from tcc_compiler.segmenting.plan import plan_model

    plan = plan_model(model if isinstance(model, (str, os.PathLike)) else proto, input_whc)
    if plan.problem:
        return [Placement(_label(n), n.op_type, UNSUPPORTED, plan.problem)
                for n in proto.graph.node]
    nodes = plan.prepared.proto.graph.node
    overflow = {} if plan.unsupported else check_default_calibration(plan)
    too_many = _tile_refusals(dict.fromkeys(plan.npu_ir.values()), tgt)
    seg_of = {i: s for s in plan.segments for i in s.nodes}
    placed: dict[str, Placement] = {}
    for i, n in enumerate(nodes):
        name, seg = _label(n), seg_of[i]
        if i in plan.unsupported or i in overflow or name in too_many:
            placed[name] = Placement(name, n.op_type, UNSUPPORTED, plan.unsupported.get(i)
                                     or overflow.get(i) or too_many[name])
        elif seg.device == HOST:
            placed[name] = Placement(name, n.op_type, HOST, f"host segment {seg.index} (ONNX "
                                     f"Runtime, float32): {plan.host_reason.get(i, '')}")
        else:
            p = _placed(n, name, plan.npu_ir.get(name), None)
            placed[name] = Placement(name, n.op_type, p.device,
                                     f"NPU segment {seg.index}: {p.reason}", p.npu_op, p.folded)
    return [placed.get(_label(n)) or _sunk(_label(n), n.op_type, placed) or Placement(
        _label(n), n.op_type, NPU, "removed at compile time (constant-folded before "
        "segmenting)", None, True) for n in proto.graph.node]


def _sunk(name: str, op_type: str, placed: dict) -> Placement | None:
    """The placement of an activation the segment planner moved ahead of data movement
    (:mod:`tcc_compiler.frontend.sink`: its copies are named ``name + "_sunk<k>"``), as
    its first copy's; None when ``name`` was not moved."""
    copies = [p for k, p in placed.items() if k.startswith(f"{name}_sunk")]
    if not copies:
        return None
    p = copies[0]
    return Placement(name, op_type, p.device, f"moved ahead of the reshape/transpose/concat "
                     f"reading it, onto its {len(copies)} producer(s): {p.reason}", p.npu_op,
                     p.folded)


def _channel_copies(graph) -> dict:
    """id(concat/slice IR node) -> operands it copies (schedule/views.py: the same plan the
    compile's memory planner makes; the others are views)."""
    if graph is None:
        return {}
    from tcc_compiler.schedule.views import plan_views
    return plan_views(graph).copies


def _placed(n, name: str, ir, copies: dict) -> Placement:
    """Placement of ONNX node ``n`` (label ``name``) after the float passes: ``ir`` is the IR
    node it ended up in (None: removed at compile time); ``copies``: the channel concat/slice
    nodes that copy operands (:func:`_channel_copies`), None when not planned (a segment of
    a segmented model: its memory plan is made per segment at compile time)."""
    from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, VIEW_OPS

    if ir is None:
        return Placement(name, n.op_type, NPU, "removed at compile time (constant-folded, "
                         "identity or folded into a neighbour)", None, True)
    if ir.op in HOST_OPS:
        return Placement(name, n.op_type, HOST,
                         f"{ir.op.value} runs on the host CPU after the NPU program, on "
                         "the dequantized output (manifest host_ops)", None)
    if ir.op in VIEW_OPS:
        return Placement(name, n.op_type, NPU,
                         f"view '{ir.name}': same bytes in the NPU's NHWC layout, no "
                         "data movement", ir.op.value, True)
    if ir.op in CHANNEL_OPS:
        if copies is None:
            return Placement(name, n.op_type, NPU,
                             f"NPU {ir.op.value} '{ir.name}': channel slices of one DRAM "
                             "buffer where a view can hold them, else a DMA copy",
                             ir.op.value)
        if id(ir) not in copies:
            return Placement(name, n.op_type, NPU,
                             f"view '{ir.name}': channel slices of one DRAM buffer (producers "
                             "write into it, readers read from it), no data movement",
                             ir.op.value, True)
        return Placement(name, n.op_type, NPU,
                         f"NPU {ir.op.value} '{ir.name}': DMA copy of {len(copies[id(ir)])} "
                         "operand(s) no view can hold (the others are views)", ir.op.value)
    fused = [s for s in ir.source if s != name]
    why = f"NPU {ir.op.value} '{ir.name}'"
    if fused:
        why += f" (fused with {', '.join(fused)})"
    return Placement(name, n.op_type, NPU, why, ir.op.value)
