"""ONNX -> graph IR.

Steps: load (external data, initializers-as-inputs), fix the input dims from ``--input``,
constant-fold and clean up with onnx-graphsurgeon (:mod:`tcc_compiler.frontend.fold`: folds
Constant, ConstantOfShape and the Shape->Gather->Concat->Reshape chains exporters write for
dynamic batch), then convert node by node with one converter per ONNX op type
(:mod:`tcc_compiler.frontend.converters`). Every unsupported node is collected and reported at
once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import onnx

from tcc_compiler.errors import InputError, ModelError, UnsupportedError
from tcc_compiler.frontend.converters import (CONVERTERS, Ctx, Downstream, Unsupported,
                                              unknown_op_reason)
from tcc_compiler.frontend.loader import (check_inferred_shapes, check_input_dims,
                                          check_onnx_validity,
                                          check_node_attributes, check_tensors, load_onnx,
                                          extra_inputs, parse_input_spec, set_input_dims)
from tcc_compiler.frontend import nofold
from tcc_compiler.frontend.fold import fold_and_infer
from tcc_compiler.frontend.magnitudes import parameter_problems
from tcc_compiler.frontend.qdq_import import attach_fixed, strip_qdq
from tcc_compiler.frontend.shape_infer import light_copy
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS

log = logging.getLogger(__name__)

__all__ = ["PreparedModel", "import_onnx", "load_onnx", "parse_input_spec", "prepare_onnx"]


def _activation_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def is_nhwc_input(model: onnx.ModelProto, name: str) -> bool:
    """True when the input's only consumer is Transpose(perm=0,3,1,2) (an NHWC model input)."""
    users = [n for n in model.graph.node if name in n.input]
    if len(users) != 1 or users[0].op_type != "Transpose":
        return False
    perm = [list(a.ints) for a in users[0].attribute if a.name == "perm"]
    return perm == [[0, 3, 1, 2]]


def _image_input(model: onnx.ModelProto, where: str):
    """(input ValueInfo, its dims (0 = unknown), NHWC?) of the model's one image input (an
    NPU segment's first input: ``PreparedModel.extra`` are its others).

    Raises:
        ModelError: not exactly one activation input (an NPU segment: none), not float32, or
            a known rank other than 4.
    """
    ins = _activation_inputs(model)
    if len(ins) != 1 and not (is_segment(model) and ins):
        raise ModelError(f"{where}: expected exactly one image input, found {len(ins)} "
                         f"({', '.join(i.name for i in ins) or 'none'})")
    inp = ins[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise ModelError(f"{where}: input '{inp.name}' must be float32")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
    if len(dims) not in (0, 4):  # known rank that is not an image's: --input cannot help
        raise ModelError(f"{where}: input '{inp.name}' has rank {len(dims)} (dims {dims}), "
                         "expected a 4-D NCHW (or NHWC) image")
    return inp, dims, is_nhwc_input(model, inp.name)


def _warn_fixed_dims(where: str, name: str, dims: list[int], nhwc: bool, w: int, h: int) -> None:
    """Log when the model's own batch or spatial dims differ from what is compiled."""
    if len(dims) != 4:
        return
    if dims[0] > 1:  # the NPU program runs one image at a time
        log.warning("%s: input '%s' has a fixed batch of %d; compiling it at batch 1 (run "
                    "the images one at a time, or several with `tccc run ... --jobs`)", where,
                    name, dims[0])
    mh, mw = (dims[1], dims[2]) if nhwc else (dims[2], dims[3])
    if mh > 0 and mw > 0 and (mw, mh) != (w, h):
        # callers: --input / input_whc, or `tccc analyze` (the folder's compiled size)
        log.warning("%s: input '%s' is fixed at %dx%d (W x H); importing it at the "
                    "requested %dx%d%s", where, name, mw, mh, w, h,
                    " (width and height swapped?)" if (mh, mw) == (w, h) else "")


def _fix_input_dims(model: onnx.ModelProto, whc: tuple[int, int, int] | None,
                    where: str) -> tuple[str, tuple[int, ...], str]:
    """Fix the image input to batch 1 and ``whc`` (None: the model's own dims); return
    (input name, new shape, ``"NCHW"``/``"NHWC"``).

    Raises:
        ModelError: see :func:`_image_input`. InputError: unknown dims and no ``whc``, a size
            out of range, or a channel count the model does not take.
    """
    inp, dims, nhwc = _image_input(model, where)
    if whc is None:
        if len(dims) != 4 or any(d <= 0 for d in dims[1:]):
            raise InputError(f"{where}: input '{inp.name}' has unknown dims {dims}; "
                             "pass input_whc/--input WxHxC")
        whc = (dims[2], dims[1], dims[3]) if nhwc else (dims[3], dims[2], dims[1])
    w, h, c = whc
    # a boundary tensor of a bigger model (an NPU segment) takes any channel count
    check_input_dims(w, h, 1 if is_segment(model) else c, where, inp.name)
    _warn_fixed_dims(where, inp.name, dims, nhwc, w, h)
    new = [1, h, w, c] if nhwc else [1, c, h, w]
    model_c = dims[3] if nhwc and len(dims) == 4 else (dims[1] if len(dims) == 4 else 0)
    if model_c > 0 and model_c != c:
        raise InputError(f"{where}: input_whc/--input has {c} channel{'s' * (c != 1)} but "
                         f"input '{inp.name}' takes {model_c}")
    set_input_dims(model, inp, new)
    return inp.name, tuple(new), "NHWC" if nhwc else "NCHW"


#: ``metadata_props`` key marking a model as one NPU segment cut out of a bigger model
#: (:func:`tcc_compiler.frontend.segments.extract_model`): its input is a boundary tensor,
#: not an image, so the ``--input`` channel limit (1..64) does not apply.
SEGMENT_META = "tccc.segment"


def is_segment(model) -> bool:
    """True for a ModelProto :func:`tcc_compiler.frontend.segments.extract_model` wrote
    (False for paths and anything else)."""
    return isinstance(model, onnx.ModelProto) and any(
        p.key == SEGMENT_META for p in model.metadata_props)


def _check_domains(model: onnx.ModelProto, where: str, custom_domains: bool = False) -> int:
    opset = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise ModelError(f"{where}: model imports no default-domain ONNX opset")
    if opset < 6 or opset > onnx.defs.onnx_opset_version():
        raise ModelError(f"{where}: opset {opset} not supported "
                         f"(6..{onnx.defs.onnx_opset_version()})")
    bad = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if bad and not custom_domains:
        # "<op> '<label>': reason", the label as everywhere (an unnamed node is named by its
        # first output), so the problems group and tccc ops can place them on their nodes
        raise UnsupportedError(where, [
            f"{n.op_type} '{n.name or (n.output[0] if n.output else '')}': custom-domain op "
            f"(domain {n.domain}), not an ONNX standard op"
            for n in model.graph.node if n.domain not in ("", "ai.onnx")])
    return opset


@dataclass(frozen=True)
class PreparedModel:
    """An ONNX model ready to convert: input dims fixed, constants folded, shapes inferred.

    Attributes:
        proto: the folded ``onnx.ModelProto`` with every intermediate shape inferred
            (``value_info``), nodes in topological order (onnx-graphsurgeon's toposort).
        original: the model as loaded (before folding), for the validity checks: its large
            float initializers hold name, type and dims only
            (:func:`~tcc_compiler.frontend.shape_infer.light_copy`).
        where: the model's name in messages (its path, or the graph name).
        opset: its default-domain opset.
        in_name, in_shape, layout: the image input's name, fixed shape (NCHW ``[1, C, H, W]``
            or NHWC ``[1, H, W, C]``) and ``"NCHW"``/``"NHWC"``.
        extra: (name, NCHW shape) of an NPU segment's inputs after the first
            (:func:`~tcc_compiler.frontend.loader.extra_inputs`); empty for a whole model.
        fixed: the quantization parameters a pre-quantized (QDQ / QOperator) model fixes,
            from :func:`~tcc_compiler.frontend.qdq_import.strip_qdq` (``proto`` is then its
            float model); None for a float model.
        arrays: {initializer name: flat read-only values} of ``proto``'s float initializers
            already read (:func:`~tcc_compiler.frontend.loader.check_tensors`), when
            ``proto`` holds the checked initializers unchanged (no folding); else empty.
    """

    proto: onnx.ModelProto
    original: onnx.ModelProto
    where: str
    opset: int
    in_name: str
    in_shape: tuple[int, ...]
    layout: str
    fixed: object | None = None
    extra: tuple = ()
    arrays: dict = field(default_factory=dict)


def prepare_onnx(model: str | os.PathLike | onnx.ModelProto,
                 input_whc: tuple[int, int, int] | str | None = None, *,
                 custom_domains: bool = False) -> PreparedModel:
    """Load, fix the input dims, constant-fold and shape-infer an ONNX model (the first half
    of :func:`import_onnx`; the host-segment planner, :mod:`tcc_compiler.segmenting`, cuts
    the result into NPU and host segments).

    Args:
        model: path to a .onnx file, or a ModelProto (copied, never changed).
        input_whc: (W, H, C) or "WxHxC" of the single image input; None = its fixed dims.
        custom_domains: accept nodes of non-standard domains (they can run on the host in
            ONNX Runtime); False refuses them as the NPU compile does.

    Returns:
        :class:`PreparedModel`.

    Raises:
        InputError, ModelError: unreadable or inconsistent model / input spec.
        UnsupportedError: custom-domain nodes (unless ``custom_domains``).
    """
    if isinstance(input_whc, str):
        input_whc = parse_input_spec(input_whc)
    if isinstance(model, onnx.ModelProto):
        where = model.graph.name or "<model>"
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    else:
        where = str(model)
        proto = load_onnx(model)
    original = light_copy(proto)   # the validity checks read no weight data
    # QDQ / QOperator: the float model + the quantization parameters it fixes
    proto, fixed = strip_qdq(proto, where)
    opset = _check_domains(proto, where, custom_domains)
    read = check_tensors(proto, where)  # before anything allocates from a tensor's claimed dims
    check_node_attributes(proto, where)
    in_name, in_shape, layout = _fix_input_dims(proto, input_whc, where)
    # an NPU segment's other inputs (before folding: graphsurgeon drops the segment mark)
    extra = tuple(extra_inputs(proto, where)) if is_segment(proto) else ()

    inferred = nofold.inferred_unfolded(proto, where, opset)
    if inferred is None:
        inferred = fold_and_infer(proto, where, opset)
    check_inferred_shapes(inferred, where)
    return PreparedModel(inferred, original, where, opset, in_name, in_shape, layout, fixed,
                         extra, read if inferred is proto else {})


def import_onnx(model: str | os.PathLike | onnx.ModelProto,
                input_whc: tuple[int, int, int] | str | None = None) -> Graph:
    """Import an ONNX image model into the graph IR.

    Args:
        model: path to a .onnx file, or a ModelProto.
        input_whc: (W, H, C) or "WxHxC" for the single image input; None to use the model's
            fixed dims. The batch is fixed to 1.

    Returns:
        A :class:`Graph` with NCHW float32 activations, constants attached to values, node
        provenance set to the ONNX node names, ``meta`` holding source path, opset and input
        layout.

    Raises:
        InputError, ModelError: unreadable or inconsistent model / input spec.
        UnsupportedError: lists every node the NPU cannot run, at once.
    """
    pm = prepare_onnx(model, input_whc)
    graph = _convert(pm.proto, pm.where, pm.opset, pm.in_name, pm.in_shape, pm.layout,
                     pm.extra, pm.arrays)
    if pm.fixed is not None:
        graph.meta["prequantized"] = attach_fixed(graph, pm.fixed)
    check_onnx_validity(pm.original, pm.where)  # last: the checks above say more specific
    return graph


def _convert(model: onnx.ModelProto, where: str, opset: int, in_name: str,
             in_shape: tuple[int, ...], layout: str, extra=(), arrays=None) -> Graph:
    """The graph IR of a prepared model (``arrays``: :attr:`PreparedModel.arrays`)."""
    arrays = arrays or {}
    g = Graph(name=model.graph.name or "graph")
    g.meta.update({"source": where, "opset": opset, "input_layout": layout,
                   "onnx_input": in_name})
    ctx = Ctx(g, where, opset)
    for init in model.graph.initializer:
        got = arrays.get(init.name)
        arr = got.reshape(tuple(init.dims)) if got is not None else \
            np.asarray(onnx.numpy_helper.to_array(init))
        if arr.dtype == np.float64:
            # onnx-graphsurgeon folds Constant(value_float(s)) into float64 arrays; the graph
            # is float32 (its one input is checked to be) so these are float32 values, exact
            arr = arr.astype(np.float32)
        ctx.add_const(init.name, arr)
    for vi in list(model.graph.value_info) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1
                for d in vi.type.tensor_type.shape.dim]
        ctx.onnx_shapes[vi.name] = tuple(dims)
        ctx.onnx_types[vi.name] = vi.type.tensor_type.elem_type
    ctx.add_input(in_name, in_shape)
    for name, shape in extra:   # an NPU segment's other inputs (extra_inputs)
        ctx.add_input(name, shape)
    problems: list[str] = []
    downstream = 0
    for node in model.graph.node:
        conv = CONVERTERS.get(node.op_type)
        label = f"{node.op_type} '{node.name or node.output[0]}'"
        if conv is None:
            problems.append(f"{label}: {unknown_op_reason(node.op_type)}")
            ctx.poison(node)
            continue
        try:
            conv(ctx, node)
        except Unsupported as exc:
            problems.append(f"{label}: {exc}")
            ctx.poison(node)
        except Downstream:  # reads a refused node's output whose shape is unknown
            downstream += 1
            ctx.poison(node)
    if problems:
        if downstream:
            problems.append(f"({downstream} node(s) after these were not checked: their "
                            "input shapes depend on the refused nodes)")
        raise UnsupportedError(where, problems)
    outs = _graph_outputs(model, ctx, g, where)
    g.outputs = outs
    g.dead_code_elimination()
    if not g.nodes:
        raise UnsupportedError(where, ["graph: no computation between input and output"])
    return g


def _graph_outputs(model: onnx.ModelProto, ctx: Ctx, g: Graph, where: str) -> list:
    """The IR values of the model's graph outputs, in order.

    Raises:
        ModelError: an output no node produces, or listed twice.
        UnsupportedError: a constant output, the graph input as an output, a zero Pad's.
    """
    outs = []
    onnx_names = {t for n in model.graph.node for t in n.output} | {
        i.name for i in model.graph.input}
    for o in model.graph.output:
        v = ctx.lookup(o.name)
        if v is None and o.name in ctx.pending_pad:
            # named as every node refusal ("<op> '<label>': reason"): the host-segment
            # planner then moves this Pad alone to the host, not the whole segment before it
            pad = next((n for n in model.graph.node if o.name in n.output), None)
            label = (pad.name or pad.output[0]) if pad is not None else o.name
            raise UnsupportedError(where, [(f"Pad '{label}': a zero Pad producing graph output "
                                            f"'{o.name}' is only supported in front of a Conv "
                                            "(it becomes the Conv's padding)")])
        if v is None:
            raise ModelError(f"{where}: graph output '{o.name}' is not produced by any node")
        if v.is_const:
            raise UnsupportedError(where, [f"output '{o.name}': constant graph output"])
        if v in g.inputs:  # the NPU program has no node writing it: the manifest would lie
            raise UnsupportedError(where, [(f"output '{o.name}': the graph input is also a "
                                            "graph output (nothing computes it on the NPU)")])
        _refuse_input_transpose_output(model, o.name, where)
        _keep_onnx_name(v, o.name, outs, onnx_names)
        outs.append(v)
    names = [o.name for o in model.graph.output]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ModelError(f"{where}: duplicate graph output '{dup}' (listed twice)")
    return outs


def _refuse_input_transpose_output(model: onnx.ModelProto, name: str, where: str) -> None:
    """Refuse graph output ``name`` when it is the NHWC input's Transpose(perm=0,3,1,2): the
    float passes remove that Transpose (the NPU reads NHWC natively), so the output would be
    the program input itself, which no NPU command writes (the manifest would list an output
    the program does not have). Named as a node refusal ("<op> '<label>': reason") so the
    host-segment planner runs that Transpose alone on the host.

    Raises:
        UnsupportedError: naming the Transpose node and the output.
    """
    inputs = {i.name for i in model.graph.input}
    node = next((n for n in model.graph.node if name in n.output), None)
    if node is None or node.op_type != "Transpose" or node.input[0] not in inputs:
        return
    perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
    if perm == [[0, 3, 1, 2]]:
        label = node.name or node.output[0]
        raise UnsupportedError(where, [(f"Transpose '{label}': output '{name}' is the NHWC "
                                        "graph input transposed, which the NPU program reads "
                                        "as it is (nothing computes it on the NPU)")])


def _keep_onnx_name(v, name: str, outs: list, onnx_names: set[str]) -> None:
    """Rename graph output ``v`` to its ONNX name ``name`` when ``v`` is an alias of an internal
    value (a group softmax viewed back to its input's shape), not yet an output and not named
    by the ONNX model: a segmented manifest's NPU segment lists the ONNX name as its output."""
    if v.name != name and v not in outs and v.name not in onnx_names:
        v.name = name


def check_npu_work(g: Graph) -> None:
    """Refuse, for compiling, a float graph (after the passes) the NPU cannot run as INT8:

    * nothing for the NPU to compute: only host ops (Softmax, ArgMax) and views, so the NPU
      program would have no output for the host ops to read (it compiled into a folder
      ``tccc run`` refused);
    * a float parameter that is NaN, infinite or beyond
      :data:`~tcc_compiler.frontend.magnitudes.MAX_PARAM_MAGNITUDE` once folded
      (:func:`~tcc_compiler.frontend.magnitudes.parameter_problems`), which calibration or
      quantization would otherwise refuse only after ``tccc ops`` had called the model
      supported.

    Called by the driver's compile and by :func:`tcc_compiler.placement.partition` (``tccc
    ops``), so both give the same answer; the import alone still takes such graphs
    (float-level tests use them).

    Raises:
        UnsupportedError: naming the model (``g.meta["source"]``) and every node at fault.
    """
    where = g.meta.get("source", g.name)
    if all(n.op in HOST_OPS or n.op in VIEW_OPS for n in g.nodes):
        ops = ", ".join(sorted({n.op.value for n in g.nodes}))
        raise UnsupportedError(where, [
            f"{n.op.value} '{n.name}': nothing to run on the NPU (the graph has only {ops}, "
            "which run on the host after an NPU program)" for n in g.nodes])
    problems = parameter_problems(g)
    if problems:
        raise UnsupportedError(where, problems)
