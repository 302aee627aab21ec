"""Compile a model whose nodes run partly on the host: one NPU program per NPU segment, one
ONNX model per host segment (the layout is in specs/manifest.md).

    plan (plan.py) -> calibrate the boundaries (float model in ONNX Runtime) -> compile each
    NPU segment with the driver's pipeline -> manifest + report (emit/segments.py)

Each NPU segment is compiled by :func:`tcc_compiler.driver.compile_model` exactly as a whole
model is, calibrated on the float values its input tensors take in the whole float model
(ONNX Runtime runs the model with every NPU segment input as an extra output), so
host-produced tensors get calibrated scales too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from tcc_compiler.datasets.calibration import default_calibration, resolve_calibration
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.datasets.presets import preprocess_at
from tcc_compiler.emit.segments import (build_segment_manifest, build_segment_report,
                                        host_graph_cost)
from tcc_compiler.errors import ModelError, UnsupportedError
from tcc_compiler.frontend.host_concat import hoist_concats
from tcc_compiler.frontend.host_graph import flatten_softmax_tails
from tcc_compiler.frontend.host_int8 import int8_handoff
from tcc_compiler.frontend.host_prefix import movement_prefix
from tcc_compiler.frontend.onnx_import import is_nhwc_input
from tcc_compiler.frontend.segments import HOST, extract_model, tensor_types
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.options import CompileOptions
from tcc_compiler.segmenting.plan import SegmentPlan, plan_model
from tcc_compiler.target import Target, load_target
from tcc_compiler.target.host import load_host_model

log = logging.getLogger(__name__)


@dataclass
class SegmentedArtifacts:
    """Everything a segmented compilation produces.

    Attributes:
        plan: the segment plan (nodes, segments, reasons).
        parts: one entry per segment in run order: the NPU segment's
            :class:`tcc_compiler.driver.CompiledArtifacts`, or the host segment's
            ``onnx.ModelProto``.
        manifest, report: the top-level JSON-ready dicts (emit/segments.py).
        calib_table: the merged calibration table of every NPU segment, or None.
        target: the target compiled for.
    """

    plan: SegmentPlan
    parts: list
    manifest: dict
    report: dict
    calib_table: dict | None
    target: Target


def input_nchw(plan: SegmentPlan) -> tuple[int, ...]:
    """The model input's shape as the runtime takes it: NCHW ``(1, C, H, W)`` (an NHWC
    model's input is transposed by the runtime, as for a whole-NPU model)."""
    shape = plan.prepared.in_shape
    if plan.prepared.layout == "NHWC":
        return (shape[0], shape[3], shape[1], shape[2])
    return tuple(shape)


def model_preprocess(plan: SegmentPlan, options: CompileOptions) -> Preprocess:
    """``options.preprocess`` at the model input's size and channel count, as
    :func:`tcc_compiler.driver.preprocess_for` takes it for a whole-NPU model
    (:func:`~tcc_compiler.datasets.presets.preprocess_at`).

    Raises:
        InputError: settings :class:`Preprocess` refuses (e.g. a mean of the wrong length), a
            :class:`Preprocess` for another input size or channel count.
    """
    _, c, h, w = input_nchw(plan)
    return preprocess_at(options.preprocess, w, h, c)


def _model_inputs(plan: SegmentPlan, options: CompileOptions) -> tuple[list, str]:
    """The model-level calibration inputs (float32 NCHW) and their description."""
    g = Graph(name=plan.prepared.where)
    g.inputs = [Value(plan.prepared.in_name, input_nchw(plan))]
    pre = model_preprocess(plan, options)
    if options.calibration is None:
        return default_calibration(g, pre)
    return resolve_calibration(options.calibration, g, pre, options.raw_spec())


def boundary_values(plan: SegmentPlan, names: list[str], xs,
                    progress: Callable | None = None) -> dict[str, list[np.ndarray]]:
    """Float values of tensors ``names`` in the whole float model (ONNX Runtime) for every
    NCHW input in ``xs``: {name: [array per input]}.

    Raises:
        InputError: ONNX Runtime cannot load the model.
    """
    import onnxruntime as ort

    proto = onnx.ModelProto()
    proto.CopyFrom(plan.prepared.proto)
    types = tensor_types(proto)
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(types[n] for n in names if n not in have)
    so = ort.SessionOptions()
    so.log_severity_level = 4   # fatal only: errors come back as exceptions, reported once
    sess = ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    nhwc = plan.prepared.layout == "NHWC"
    for x in (progress or (lambda it: it))(xs):
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x
        for n, v in zip(names, sess.run(names, {plan.prepared.in_name: feed})):
            out[n].append(np.asarray(v, np.float32))
    return out


def segment_inputs(sub: onnx.ModelProto, seg, calib: dict | None) -> list | None:
    """The arrays of NPU segment ``seg`` (its ONNX model ``sub``) for each model input, from
    ``calib`` ({tensor: [float array per model input]}, :func:`boundary_values`), as
    ``compile_model`` takes its calibration and ``tccc analyze`` its inputs: NCHW, one array
    per model input, or a dict {input name: array} for a segment with several inputs. ONNX
    Runtime's values of an input the segment reads through Transpose(0, 3, 1, 2) are NHWC
    (the model input of an NHWC model with a host segment after its first NPU ops: compile
    refused its own arrays, "shape (1, 16, 16, 3), model expects (1, 3, 16, 16)")."""
    if calib is None:
        return None
    values = calib[seg.inputs[0]]
    if is_nhwc_input(sub, seg.inputs[0]):
        values = [np.ascontiguousarray(v.transpose(0, 3, 1, 2)) for v in values]
    if len(seg.inputs) == 1:
        return values
    # several inputs: one {input: array} per calibration input (the others NCHW as read)
    return [{seg.inputs[0]: v, **{t: calib[t][k] for t in seg.inputs[1:]}}
            for k, v in enumerate(values)]


def boundary_overflow(plan: SegmentPlan, values: dict[str, list[np.ndarray]]) \
        -> dict[int, str]:
    """{node index: why} of the nodes whose output, an NPU segment's input in ``values``
    (:func:`boundary_values`), is non-finite or beyond what calibration holds
    (:data:`tcc_compiler.quant.calibrate.MAX_ACTIVATION`) on some calibration input: float32
    overflow upstream (weights of absurd magnitude run by ONNX Runtime on the host), or NaN
    (e.g. a Sqrt of negative values: the reason names the producer's undefined case), which
    no int8 scale can represent. The model input itself is checked by calibration."""
    from tcc_compiler.quant.calibrate import MAX_ACTIVATION

    nodes = plan.prepared.proto.graph.node
    producer = {t: i for i, n in enumerate(nodes) for t in n.output}
    bad: dict[int, str] = {}
    for name, arrays in values.items():
        if name not in producer:
            continue
        for k, a in enumerate(arrays):
            what = f"its output '{name}', an NPU segment's input,"
            if a.size and np.isnan(a).any():
                cause = _NAN_CAUSES.get(nodes[producer[name]].op_type,
                                        "an undefined float operation such as 0/0 or inf - inf")
                bad.setdefault(producer[name], (
                    f"{what} is NaN (not a number) on calibration input {k}: {cause} (no int8 "
                    "scale represents NaN)"))
                break
            peak = float(np.max(np.abs(a))) if a.size else 0.0
            if not np.isfinite(peak) or peak > MAX_ACTIVATION:
                bad.setdefault(producer[name], (
                    f"{what} reaches {peak:.3g} on calibration input {k} (float32 overflow; "
                    "weights of absurd magnitude?)"))
                break
    return bad


#: Why an ONNX op's float output is NaN on finite inputs (ONNX operator docs: the float
#: functions are undefined there), said by :func:`boundary_overflow`.
_NAN_CAUSES: dict[str, str] = {
    "Sqrt": "the square root of negative values",
    "Log": "the logarithm of negative values",
    "Pow": "a fractional power of negative values",
    "Div": "0 / 0 or inf / inf",
    "Asin": "arcsine of values outside [-1, 1]",
    "Acos": "arccosine of values outside [-1, 1]",
    "Acosh": "inverse hyperbolic cosine of values below 1",
    "Atanh": "inverse hyperbolic tangent of values outside [-1, 1]",
}


def check_default_calibration(plan: SegmentPlan) -> dict[int, str]:
    """:func:`boundary_overflow` on the bundled calibration photos ``tccc compile`` uses by
    default, so ``tccc ops`` refuses what such a compile would; {} when the model's channel
    count has no bundled photos (compile then asks for calibration arrays)."""
    from tcc_compiler.errors import InputError

    if not plan.npu_segments:
        return {}
    try:
        xs, _ = _model_inputs(plan, CompileOptions())
    except InputError:
        return {}
    return boundary_overflow(plan, boundary_values(
        plan, sorted({t for s in plan.npu_segments for t in s.inputs}), xs))


def _merge_tables(tables: list[dict]) -> dict | None:
    """One calibration table holding every segment's tensors (names are the ONNX model's,
    unique across segments), or None when no segment has one."""
    tables = [t for t in tables if t]
    if not tables:
        return None
    merged = dict(tables[0])
    merged["tensors"] = {k: v for t in tables for k, v in t.get("tensors", {}).items()}
    return merged


def compile_segmented(model: str | os.PathLike | onnx.ModelProto, options: CompileOptions,
                      plan: SegmentPlan | None = None,
                      progress: Callable | None = None) -> SegmentedArtifacts:
    """Compile ``model`` as NPU segments and host segments.

    Args:
        model: .onnx path or ModelProto. options: the compile options (``strict`` is not
            read here: the driver only calls this when it is off).
        plan: the plan (:func:`plan_model`), made here when None.
        progress: optional iterable wrapper for the calibration pass over the float model.

    Returns:
        :class:`SegmentedArtifacts`.

    Raises:
        UnsupportedError: nodes neither the NPU nor ONNX Runtime runs (every one listed).
        ModelError: nothing is left to compute (:attr:`SegmentPlan.problem`).
        TccError subclasses: as :func:`tcc_compiler.driver.compile_model` for each segment.
    """
    from tcc_compiler.driver import compile_model

    plan = plan or plan_model(model, options.input_whc)
    if plan.problem:
        raise ModelError(f"{plan.prepared.where}: {plan.problem}")
    if plan.unsupported:
        nodes = plan.prepared.proto.graph.node
        raise UnsupportedError(plan.prepared.where, [
            f"{nodes[i].op_type} '{lab}': {plan.unsupported[i]}"
            for i, lab in zip(sorted(plan.unsupported), plan.labels(sorted(plan.unsupported)))])
    tgt = options.target if isinstance(options.target, Target) else load_target(options.target)
    npu = plan.npu_segments
    calib, n_calib, source = None, 0, f"table {options.calib_table}"
    if options.calib_table is None:
        xs, source = _model_inputs(plan, options)
        calib = boundary_values(plan, sorted({t for s in npu for t in s.inputs}), xs, progress)
        n_calib = len(xs)
        bad = boundary_overflow(plan, calib)
        if bad:
            nodes = plan.prepared.proto.graph.node
            raise UnsupportedError(plan.prepared.where, [
                f"{nodes[i].op_type} '{lab}': {bad[i]}"
                for i, lab in zip(sorted(bad), plan.labels(sorted(bad)))])
    given, names = options.precision, _precision_names(options.precision)
    if names is not None:   # every segment takes the names of its own layers
        options = options.with_(precision=names)
    parts: list = []
    host = load_host_model(tgt.source)
    for seg in plan.segments:
        name = f"{Path(plan.prepared.where).name}:{seg.device}_{seg.index}"
        sub = extract_model(plan.prepared.proto, seg, name)
        if seg.device == HOST:
            sub = flatten_softmax_tails(sub)[0]   # (ONNX Runtime's slow Softmax path)
            parts.append(cheapest_host_graph(sub, int8_outputs(parts), npu_outputs(parts),
                                             host))
            continue
        first = seg.inputs[0] == plan.prepared.in_name
        seg_opts = options.with_(
            input_whc=None, target=tgt, calibration=segment_inputs(sub, seg, calib),
            preprocess=options.preprocess if first else None,
            dump_ir=None if options.dump_ir is None else Path(options.dump_ir) / f"npu_{seg.index}")
        log.info("segment %d/%d: NPU, %d node(s), input(s) %s", seg.index + 1,
                 len(plan.segments), len(seg.nodes), ", ".join(seg.inputs))
        parts.append(compile_model(sub, seg_opts))
    manifest = build_segment_manifest(plan, parts, tgt, model, model_preprocess(plan, options),
                                      input_nchw(plan), (options.method, n_calib, source))
    report = build_segment_report(plan, parts, tgt, host)
    _given_names(report, parts, names, given, plan.prepared.where)
    tables = [p.calib_table for p in parts if not isinstance(p, onnx.ModelProto)]
    return SegmentedArtifacts(plan, parts, manifest, report, _merge_tables(tables), tgt)


def _given_names(report: dict, parts: list, names: dict | None, given, where: str) -> None:
    """For a ``precision`` given as layer names (``names``; None for a mode): refuse a name
    no segment has (:func:`_check_precision_names`), and name a precision file in the
    top-level report's ``precision`` (each segment saw only its names: mode "list").

    Raises:
        InputError: as :func:`_check_precision_names`.
    """
    if not names:
        return
    _check_precision_names([n for v in names.values() for n in v], parts, given, where)
    if "precision" in report and isinstance(given, (str, os.PathLike)):
        report["precision"].update(mode="file", file=str(given))


def cheapest_host_graph(sub: onnx.ModelProto, quant: dict[str, tuple[float, int]],
                        sources: dict[str, int], host) -> onnx.ModelProto:
    """Host graph ``sub`` as the host cost model prices it lowest, of: the NPU outputs in
    ``quant`` taken as int8 where that saves bytes (:func:`int8_handoff`), or the moves at
    its start made by the boundary conversions (:func:`movement_prefix`); each with or
    without the exact Concat reordering of :func:`hoist_concats` first. Counted: the host
    graph's nodes and each NPU output's boundary (a reorder of its int8 values, or its
    conversion to float32: :func:`tcc_compiler.emit.segments.boundaries`).

    Args:
        sub: the host segment's model. quant: {int8 NPU output: (scale, zero point)}.
        sources: {NPU output: bytes per element on the NPU} of every NPU segment so far.
        host: the :class:`~tcc_compiler.target.host.HostModel`.
    """
    best, best_ms = None, 0.0
    hoisted, n = hoist_concats(sub)
    for cand in ([sub, hoisted] if n else [sub]):
        for model, kept in (int8_handoff(cand, quant), (movement_prefix(cand, set(sources)),
                                                         [])):
            ms = host_graph_cost(model, host)["estimated_host_ms"]
            for inp in model.graph.input:
                if inp.name in sources:
                    elems = int(np.prod([d.dim_value
                                         for d in inp.type.tensor_type.shape.dim]))
                    ms += host.boundary_seconds(elems * sources[inp.name], elems * (
                        1 if inp.name in kept else 4)) * 1e3
            if best is None or ms < best_ms - 1e-9:
                best, best_ms = model, ms
    return best


def npu_outputs(parts: list) -> dict[str, int]:
    """{tensor: bytes per element (int8 1, int16 2, int32 4)} of every output of the NPU
    segments compiled so far."""
    return {o["name"]: np.dtype(o.get("dtype", "int8")).itemsize for p in parts
            if not isinstance(p, onnx.ModelProto) for o in p.manifest["outputs"]}


def int8_outputs(parts: list) -> dict[str, tuple[float, int]]:
    """{tensor: (scale, zero point)} of the int8 outputs, one scale per tensor, of the NPU
    segments compiled so far: what a later host segment may take as int8
    (:func:`tcc_compiler.frontend.host_int8.int8_handoff`)."""
    out = {}
    for p in parts:
        if isinstance(p, onnx.ModelProto):
            continue
        for o in p.manifest["outputs"]:
            s, z = o.get("scale"), o.get("zero_point")
            if o.get("dtype") == "int8" and isinstance(s, list) and isinstance(z, list) \
                    and len(s) == len(z) == 1:
                out[o["name"]] = (float(s[0]), int(z[0]))
    return out


def _precision_names(precision) -> dict | None:
    """The layer names of a ``precision`` given as names, a dict or a precision file, as
    ``{"int16": [...], "int16_weights": [...]}``; None for the modes ("int8", "auto", "budget": each
    segment chooses for itself).

    Raises:
        InputError: an unreadable or malformed precision file.
    """
    from tcc_compiler.quant.auto_precision import MODES, split_precision
    from tcc_compiler.quant.precision import FILE_KEY, WEIGHTS_KEY, read_precision_file

    given = split_precision(precision)
    if given is None:
        if precision in MODES:
            return None
        given = read_precision_file(precision)
    return {FILE_KEY: list(given[0]), WEIGHTS_KEY: list(given[1])}


def _check_precision_names(names: list[str], parts: list, given, where: str) -> None:
    """Refuse names that are no layer of any NPU segment (each segment skipped the others').

    Raises:
        InputError: naming the precision file (or "precision") and the unknown names.
    """
    from tcc_compiler.errors import InputError
    from tcc_compiler.quant.precision import layer_nodes

    known: set[str] = set()
    for p in parts:
        if not isinstance(p, onnx.ModelProto):
            known |= set(layer_nodes(p.graph))
    unknown = list(dict.fromkeys(n for n in names if n not in known))   # each once
    if unknown:
        src = given if not isinstance(given, (list, tuple, dict)) else "precision"
        raise InputError(f"{src}: no layer named {', '.join(repr(u) for u in unknown[:5])} in "
                         f"the NPU segments of {where} (layer names as 'tccc analyze' lists "
                         "them)")
