"""Load an ONNX model from disk safely and fix its input dims.

Covers what real exporters write: initializers listed as graph inputs (IR version 3), external
data files (kept inside the model's folder), symbolic or missing dims fixed by ``--input``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError
from onnx import parser as onnx_parser

from tcc_compiler.datasets.raw import parse_whc
from tcc_compiler.errors import InputError, ModelError, first_line
from tcc_compiler.fsutil import check_path

log = logging.getLogger(__name__)


def parse_input_spec(text: str | tuple | list) -> tuple[int, int, int]:
    """Parse ``--input`` ``"WxHxC"`` (width x height x channels) into (W, H, C).

    A tuple or list (the API's ``input_whc=(W, H, C)``) is checked the same way, as if
    written ``"WxHxC"``.

    Raises:
        InputError: not three positive integers separated by 'x', or absurd sizes.
    """
    return parse_whc(text, "input_whc/--input", "224x224x3")


def _check_external_data(model: onnx.ModelProto, base: Path) -> None:
    """Refuse external-data references that leave the model's folder or are missing."""
    base = base.resolve()
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or base not in target.parents:
            raise ModelError(f"initializer '{init.name}': external data location '{loc}' "
                             "points outside the model's folder")
        if not target.is_file():
            raise ModelError(f"initializer '{init.name}': external data file '{loc}' not found")
        size = target.stat().st_size
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info.get("length", 0) or 0)
        except ValueError:
            raise ModelError(f"initializer '{init.name}': external data offset/length "
                             f"{info.get('offset')!r}/{info.get('length')!r} not integers"
                             ) from None
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(f"initializer '{init.name}': external data range "
                             f"{offset}+{length} exceeds '{loc}' ({size} bytes)")


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file, including external data, without following paths outside its folder.

    Returns:
        The ModelProto with external tensors loaded in memory.

    Raises:
        InputError: the file does not exist or is not a file, its name is too long, or a
            symbolic link loop is on the way to it.
        ModelError: the file is not a valid ONNX protobuf or its external data is bad.
    """
    check_path(path)  # a symlink loop or a too-long name: exists() says False or raises
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    try:
        with warnings.catch_warnings():   # onnx warns that its .onnxtxt parser is experimental
            warnings.simplefilter("ignore", UserWarning)
            model = onnx.load(str(p), load_external_data=False)
    except _UNREADABLE as exc:
        raise ModelError(f"{p}: not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{p}: not a valid ONNX model (empty graph)")
    try:
        _check_external_data(model, p.parent)
    except ModelError as exc:
        raise ModelError(f"{p}: {exc}") from None
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: cannot load external data ({exc})") from None
    return model


#: What ``onnx.load`` raises on a file it cannot parse: it picks the protobuf, JSON
#: (``.json``), ONNX text (``.onnxtxt``) or protobuf text (``.txtpb``...) parser by suffix.
_UNREADABLE = (DecodeError, json_format.ParseError, text_format.ParseError,
               onnx_parser.ParseError, ValueError, RuntimeError, OSError, UnicodeDecodeError)

#: Largest input width/height and channel count tccc accepts (same limits as ``--input``).
MAX_INPUT_HW, MAX_INPUT_C = 8192, 64
_CONV_LIKE = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")
_POOLS = ("MaxPool", "AveragePool", "LpPool")


def check_input_dims(w: int, h: int, c: int, where: str, name: str) -> None:
    """Refuse input dims outside 1..8192 (width, height) and 1..64 (channels).

    Raises:
        InputError: naming the model and input, so a model declaring e.g. a 10**9-pixel input
            never reaches calibration (which would allocate it).
    """
    if min(w, h, c) <= 0 or max(w, h) > MAX_INPUT_HW or c > MAX_INPUT_C:
        raise InputError(f"{where}: input '{name}' is {w}x{h}x{c} (WxHxC); width and height "
                         f"must be 1..{MAX_INPUT_HW} and channels 1..{MAX_INPUT_C} "
                         "(pass input_whc/--input WxHxC)")


def _tensor_problem(t: onnx.TensorProto, name: str, consumers: dict[str, set[str]],
                    read: dict | None = None) -> str | None:
    """Why tensor ``t`` cannot be trusted, or None: unknown type, negative dims, a payload
    whose size disagrees with its dims, or NaN/Inf floats (except Clip bounds). The float
    values read for the NaN/Inf check go into ``read`` ({name: flat read-only array}) when
    given."""
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
    except (KeyError, ValueError, TypeError):
        return f"unknown data type {t.data_type}"
    if any(d < 0 for d in t.dims):
        return f"negative dimension in {list(t.dims)}"
    n = 1
    for d in t.dims:
        n *= d
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None  # range checked by _check_external_data, size once loaded (raw_data)
    raw = None
    if t.HasField("raw_data"):
        raw = t.raw_data   # a copy of the payload per access: read once
        if np_dtype.kind != "O" and len(raw) != n * np_dtype.itemsize:
            return (f"payload is {len(raw)} bytes, dims {list(t.dims)} of "
                    f"{np_dtype} need {n * np_dtype.itemsize}")
    elif np_dtype.kind in "biuf" and len(getattr(t, field)) != n:
        return f"holds {len(getattr(t, field))} values, dims {list(t.dims)} need {n}"
    if np_dtype.kind == "f" and n and not consumers.get(name, set()) <= {"Clip"}:
        arr = np.frombuffer(raw, np_dtype) if raw is not None and sys.byteorder == "little" \
            else onnx.numpy_helper.to_array(t)
        if read is not None:
            read[name] = arr
        # min and max are NaN when any value is, +-inf when one is: counted only then
        if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
            return f"holds {int(np.count_nonzero(~np.isfinite(arr)))} NaN/Inf value(s)"
    return None


def check_tensors(model: onnx.ModelProto, where: str) -> dict[str, np.ndarray]:
    """Check every initializer and Constant-node tensor before anything allocates from it.

    Returns:
        {initializer name: its values} of the float initializers whose values the check
        read (flat, read-only, the initializer's dtype): the import converts them without
        copying the payload again (``raw_data`` copies it on every access; ResNet-50: 100 MB).

    Raises:
        ModelError: naming the model and tensor (see :func:`_tensor_problem` for the checks).
    """
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    tensors = [(f"initializer '{t.name}'", t.name, t) for t in model.graph.initializer]
    inits = len(tensors)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    out = node.output[0]
                    tensors.append((f"Constant '{node.name or out}'", out, a.t))
    read: dict[str, np.ndarray] = {}
    for i, (label, name, t) in enumerate(tensors):
        problem = _tensor_problem(t, name, consumers, read if i < inits else None)
        if problem:
            raise ModelError(f"{where}: {label}: {problem}")
    return read


def _pool_problem(node: onnx.NodeProto, opset: int) -> str | None:
    """What ONNX Runtime's pool kernels refuse at load (``PoolAttributes``,
    onnxruntime/core/providers/cpu/nn/pool_attributes.h) and the import would pass over: a
    MaxPool ``storage_order`` (an attribute from opset 8) other than 0 (row-major) or 1
    (column-major), and a pad not
    smaller than the kernel along its axis (a window wholly in the padding: no input value,
    -inf for MaxPool). None when the node keeps these rules."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MaxPool" and opset >= 8 and int(attrs.get("storage_order", 0)) \
            not in (0, 1):
        return (f"attribute storage_order = {attrs['storage_order']} is invalid (0 row-major "
                "or 1 column-major)")
    kernel, pads = list(attrs.get("kernel_shape", [])), list(attrs.get("pads", []))
    if kernel and len(pads) == 2 * len(kernel) and any(
            p >= kernel[i % len(kernel)] for i, p in enumerate(pads)):
        return (f"pads {pads} not smaller than kernel_shape {kernel} (a window entirely in "
                "the padding; ONNX Runtime refuses it)")
    return None


def check_node_attributes(model: onnx.ModelProto, where: str) -> None:
    """Refuse impossible attributes: an empty list on any node (onnx-graphsurgeon cannot write
    one back: it was an internal error); on conv/pool nodes, kernel_shape, strides or
    dilations < 1, negative pads, group < 1; on pool nodes, what :func:`_pool_problem` lists.

    Raises:
        ModelError: naming the model, node and attribute.
    """
    opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
                default=0)
    for node in model.graph.node:
        why = _attribute_problem(node, opset)
        if why:
            raise ModelError(f"{where}: {node.op_type} '{node.name or node.output[0]}': {why}")


def _attribute_problem(node: onnx.NodeProto, opset: int) -> str | None:
    """The first of :func:`check_node_attributes`'s rules ``node`` breaks, or None."""
    lists = (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRINGS)
    for a in node.attribute:
        if a.type in lists and not (a.ints or a.floats or a.strings):
            return f"attribute {a.name} is an empty list (give its values or leave it out)"
    if node.op_type not in _CONV_LIKE:
        return None
    for a in node.attribute:
        vals = list(a.ints) if a.type == onnx.AttributeProto.INTS else [a.i]
        if ((a.name in ("kernel_shape", "strides", "dilations", "group")
             and any(v < 1 for v in vals)) or (a.name == "pads" and any(v < 0 for v in vals))):
            return f"attribute {a.name} = {vals} is invalid"
    return _pool_problem(node, opset) if node.op_type in _POOLS else None


def check_inferred_shapes(model: onnx.ModelProto, where: str) -> None:
    """After ONNX shape inference: refuse float tensors with a zero or negative dimension
    (an empty or impossible activation, e.g. a kernel larger than its padded input).

    Raises:
        ModelError: naming the model and tensor.
    """
    for vi in list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value for d in tt.shape.dim if d.HasField("dim_value")]
        if any(d <= 0 for d in dims):
            shape = [d.dim_value if d.HasField("dim_value") else "?" for d in tt.shape.dim]
            raise ModelError(f"{where}: tensor '{vi.name}' has shape {shape} (an empty or "
                             "negative dimension)")


def set_input_dims(model: onnx.ModelProto, inp: onnx.ValueInfoProto, dims) -> None:
    """Fix ``inp``'s dims to ``dims`` and drop the stale intermediate/output shape annotations
    (ONNX shape inference recomputes them). Edits ``model`` in place."""
    tt = inp.type.tensor_type
    del tt.shape.dim[:]
    for d in dims:
        tt.shape.dim.add().dim_value = int(d)
    del model.graph.value_info[:]
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.ClearField("dim_value")
            d.ClearField("dim_param")


#: auto_pad values the ONNX spec defines (conv and pool ops).
AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def check_onnx_validity(model: onnx.ModelProto, where: str,
                        standard_only: bool = False) -> None:
    """What ONNX Runtime refuses as "an invalid model" and tccc's import would otherwise pass
    over (so tccc never compiles a model no float reference can run): an IR version newer
    than the onnx package knows, nodes breaking their op's schema at the model's opset (input
    counts, attribute types: ``onnx.checker.check_node``), two nodes of the same name or
    writing the same tensor, an ``auto_pad`` outside the spec's values or set together with
    ``pads``, a Conv ``kernel_shape`` other than its weight's.
    Run after the import's own checks, whose messages are more specific. ``standard_only``
    skips the schema check of custom-domain nodes (the host-segment planner lets ONNX Runtime
    decide whether it runs them).

    Raises:
        ModelError: naming the model, node and rule.
    """
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"{where}: IR version {model.ir_version} is newer than this onnx "
                         f"package reads ({onnx.IR_VERSION})")
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = {o.domain: o.version for o in model.opset_import}
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    seen: set[str] = set()
    written = {i.name for i in model.graph.input} | set(inits)
    for node in model.graph.node:
        label = f"{node.op_type} '{node.name or (node.output[0] if node.output else '')}'"
        custom = node.domain not in ("", "ai.onnx")
        why = (_naming_problem(node, seen, written)
               or (None if standard_only and custom else _schema_problem(node, ctx))
               or _padding_problem(node, inits))
        if why:
            raise ModelError(f"{where}: {label}: {why}")


def _naming_problem(node: onnx.NodeProto, seen: set[str], written: set[str]) -> str | None:
    """A second node of the same name, or a second writer of a tensor (ONNX graphs are SSA:
    ONNX Runtime refuses one); None when fine, after adding the node's name to ``seen`` and
    its outputs to ``written``."""
    if node.name and node.name in seen:
        return "two nodes have this name (node names must be unique)"
    seen.add(node.name)
    for out in (o for o in node.output if o):
        if out in written:
            return (f"writes '{out}', which another node, a graph input or an initializer "
                    "already defines (each tensor has one producer)")
        written.add(out)
    return None


def _padding_problem(node: onnx.NodeProto, inits: dict[str, tuple]) -> str | None:
    """A conv or pool ``auto_pad`` outside the spec's values or set together with ``pads``,
    or a Conv ``kernel_shape`` other than its weight's (OIHW ``dims[2:]``, from ``inits``:
    initializer name -> dims); None when fine."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    pad = attrs.get("auto_pad", b"NOTSET")
    pad = pad.decode(errors="replace") if isinstance(pad, bytes) else str(pad)
    if node.op_type in _CONV_LIKE and pad not in AUTO_PAD:
        return f"auto_pad '{pad}' is not one of {', '.join(AUTO_PAD)}"
    if node.op_type in _CONV_LIKE and pad != "NOTSET" and "pads" in attrs:
        return f"has both auto_pad '{pad}' and pads (the ONNX spec allows one or the other)"
    w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
    if w is not None and "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != w[2:]:
        return (f"kernel_shape {list(attrs['kernel_shape'])} differs from its weight's "
                f"{list(w[2:])}")
    return None


def _schema_problem(node: onnx.NodeProto, ctx) -> str | None:
    """``onnx.checker.check_node``'s first line, or None when the node keeps its schema. An
    unrecognized attribute is not a problem: old exporters wrote legacy ones (BatchNorm's
    ``consumed_inputs``) that tccc ignores by design."""
    try:
        onnx.checker.check_node(node, ctx)
    except onnx.checker.ValidationError as exc:
        first = first_line(exc, 300)
        return None if "Unrecognized attribute" in first else first
    return None


def extra_inputs(model: onnx.ModelProto, where: str) -> list[tuple[str, tuple[int, ...]]]:
    """(name, NCHW shape) of an NPU segment's inputs after its first, in order: tensors other
    segments make (specs/manifest.md, "Segmented layout"), each float32 ``[1, C, H, W]``
    with the dims inferred on the whole model. Only for a model
    :func:`~tcc_compiler.frontend.segments.extract_model` wrote (a whole model has one
    input).

    Raises:
        ModelError: such an input that is not float32 rank 4 with known dims and batch 1.
    """
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    out = []
    for inp in ins[1:]:
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim)
        if tt.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[0] != 1 \
                or min(dims) <= 0:
            raise ModelError(f"{where}: segment input '{inp.name}' is not a float32 "
                             f"[1, C, H, W] tensor with known dims (dims {list(dims)})")
        out.append((inp.name, dims))
    return out
