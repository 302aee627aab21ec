"""Hand a host segment the NPU's int8 values and move them in int8: dequantize after the data
movement instead of before it.

A host segment reading an NPU output used to receive it as float32 (the boundary dequantized
every element: int8 read, float32 written), and then moved those float32 values around:
YOLOv5's Reshape -> Transpose -> Split of each head map, SSDLite's Transpose -> Reshape ->
Concat of its twelve head maps, YOLOv8's Reshape -> Concat of its box and class maps. Those
ops only copy elements, and dequantization ``(q - zero_point) * scale`` is element-wise with
one scale per tensor, so ``Move(Dequantize(q)) == Dequantize(Move(q))`` element for element:
the copies can move int8 (a quarter of the bytes), and the one conversion to float32
happens where the first arithmetic op (or the graph output) needs it.

:func:`int8_handoff` rewrites a host segment's ONNX graph so (pure ONNX work, opset >= 13 for
per-axis DequantizeLinear):

1. each input listed in ``quant`` (an NPU output, int8, per-tensor scale and zero point)
   becomes an int8 input of the same name and shape, followed by ``DequantizeLinear``;
2. a ``DequantizeLinear`` whose output every reader moves (:data:`MOVE_OPS` with it as data
   input 0) and that is no graph output sinks below them: each reader runs on the int8 tensor
   and its outputs are dequantized (the names the rest of the graph reads are kept);
3. a ``Concat`` all of whose inputs are per-tensor dequantizations read by it alone becomes
   an int8 Concat and one ``DequantizeLinear``: one scale and zero point when all inputs share
   them, else per-axis along the concat axis (each element keeps its own input's scale and
   zero point: ``scale[i]`` is the scale of the input slice holding index ``i``);
4. a per-axis ``DequantizeLinear`` sinks below a Reshape or Transpose whose reader is its
   only one when the quantized axis survives (Transpose: it moves to ``perm.index(axis)``;
   Reshape: the axis's size and the product of the dims after it are kept).

An input the rewrite gains nothing on (its DequantizeLinear would stay right at the input,
in front of an arithmetic op) is left float32: the boundary converts it as before.

The runtime feeds an int8 host input the NPU's integer output in the ONNX (NCHW) order
(specs/manifest.md, "Segmented models"). The float values equal the float32 boundary's to
within one unit in the last place: ONNX's DequantizeLinear multiplies by the scale rounded
to float32, the runtime's boundary by the float64 scale, each product rounded once to
float32 (relative difference <= 2^-23; equal when the scale is a float32 value).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

#: Single-data-input ops that only move or copy elements (data input 0; other inputs are
#: constants: shapes, axes, starts, split sizes).
MOVE_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity",
                      "Slice", "Split"})

#: The ONNX op that dequantizes.
DQ = "DequantizeLinear"


def int8_handoff(proto: onnx.ModelProto,
                 quant: dict[str, tuple[float, int]]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of host graph ``proto`` taking the listed inputs as int8 (module docstring).

    Args:
        proto: a host segment's ONNX model (inputs and intermediates shaped in
            ``value_info``). quant: {input name: (scale, zero point)} of the inputs an NPU
            segment produces as int8 with one scale per tensor.

    Returns:
        (the rewritten model, the inputs now taken as int8 in NCHW order); ``proto`` itself
        is not changed. With no input gaining, or a default-domain opset below 13, the model
        comes back unchanged (as a copy) with an empty list.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    opset = max((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    names = [i.name for i in out.graph.input if i.name in quant
             and i.type.tensor_type.elem_type == TensorProto.FLOAT]
    if opset < 13:
        names = []
    while names:   # drop the inputs that gain nothing and rewrite again (each round drops one)
        trial, idle = _trial(proto, names, quant)
        if not idle:
            out = trial
            break
        names = [n for n in names if n != idle[0]]
    if not names:
        return out, []
    for inp in out.graph.input:
        if inp.name in names:
            inp.type.tensor_type.elem_type = TensorProto.INT8
    used = {t for n in out.graph.node for t in n.input}   # (merged Concat inputs' scales)
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    _fix_value_info(out)
    log.debug("%s: host inputs %s taken as int8", out.graph.name, names)
    return out, names


def _trial(proto: onnx.ModelProto, names: list[str], quant: dict):
    """(a copy of ``proto`` with inputs ``names`` dequantized and every sink applied, the
    inputs among ``names`` whose int8 values no op but a view moves)."""
    trial = onnx.ModelProto()
    trial.CopyFrom(proto)
    g = trial.graph
    shapes = _shapes(g)
    for name in names:
        _insert_dq(g, name, quant[name], shapes)
    while _sink_once(g, shapes):
        pass
    return trial, [n for n in names if not _moves_int8(g, n)]


def _shapes(g: onnx.GraphProto) -> dict[str, list[int]]:
    """{tensor: static dims} of the graph's typed values."""
    return {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(g.input) + list(g.value_info) + list(g.output)
            if vi.type.tensor_type.HasField("shape")}


def _const(g: onnx.GraphProto, name: str, arr: np.ndarray) -> str:
    """Add initializer ``name`` (made unique) holding ``arr``; returns its name."""
    taken = {t.name for t in g.initializer}
    base, k = name, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    g.initializer.append(numpy_helper.from_array(arr, name))
    return name


def _insert_dq(g: onnx.GraphProto, name: str, sz: tuple[float, int], shapes: dict) -> None:
    """Readers of input ``name`` read ``DequantizeLinear(name)`` instead."""
    deq = name + "::deq"
    shapes[deq] = shapes.get(name, [])
    for n in g.node:
        for k, t in enumerate(n.input):
            if t == name:
                n.input[k] = deq
    for o in g.output:   # (an input passed straight through to the output)
        if o.name == name:
            raise AssertionError("a host input that is also its output is never handed int8")
    s = _const(g, name + "::scale", np.array(sz[0], np.float32))
    z = _const(g, name + "::zero_point", np.array(sz[1], np.int8))
    g.node.insert(0, helper.make_node(DQ, [name, s, z], [deq], name=name + "::dequantize"))


def _readers(g: onnx.GraphProto, t: str) -> list[onnx.NodeProto]:
    return [n for n in g.node if t in n.input]


def _is_output(g: onnx.GraphProto, t: str) -> bool:
    return any(o.name == t for o in g.output)


def _dq_params(g: onnx.GraphProto, dq: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, axis) of a DequantizeLinear whose parameters are initializers."""
    inits = {t.name: t for t in g.initializer}
    s = numpy_helper.to_array(inits[dq.input[1]])
    z = numpy_helper.to_array(inits[dq.input[2]])
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return s, z, axis


def _sink_once(g: onnx.GraphProto, shapes: dict) -> bool:
    """Apply one rewrite of the module docstring (steps 2-4); False when none applies."""
    for dq in list(g.node):
        if dq.op_type != DQ or _is_output(g, dq.output[0]):
            continue
        readers = _readers(g, dq.output[0])
        s, _, _ = _dq_params(g, dq)
        if s.ndim == 0 and readers and all(
                r.op_type in MOVE_OPS and list(r.input).count(dq.output[0]) == 1
                and r.input[0] == dq.output[0] for r in readers):
            _sink_below(g, dq, readers, shapes)
            return True
        if len(readers) == 1 and readers[0].op_type == "Concat" and _concat(g, readers[0],
                                                                            shapes):
            return True
        if s.ndim == 1 and len(readers) == 1 and _sink_axis(g, dq, readers[0], shapes):
            return True
    return False


def _sink_below(g: onnx.GraphProto, dq: onnx.NodeProto, readers, shapes: dict) -> None:
    """Step 2: ``readers`` move the int8 tensor; their outputs are dequantized."""
    q = dq.input[0]
    nodes = list(g.node)
    at = nodes.index(dq)
    for r in readers:
        r.input[0] = q
        idx = nodes.index(r)
        new = []
        for k, o in enumerate(r.output):
            if not o:
                continue
            oq = o + "::int8"
            r.output[k] = oq
            shapes[oq] = shapes.get(o, [])
            new.append(helper.make_node(DQ, [oq, dq.input[1], dq.input[2]], [o],
                                        name=f"{r.name or o}::dequantize{k}"))
        nodes[idx + 1:idx + 1] = new
    nodes.pop(at)
    del g.node[:]
    g.node.extend(nodes)


def _concat_inputs(g: onnx.GraphProto, cat: onnx.NodeProto, shapes: dict):
    """(the DequantizeLinear nodes making each input of ``cat``, their (scale, zero point,
    axis), the inputs' and output's dims) when step 3 applies, else None."""
    producers = {o: n for n in g.node for o in n.output}
    dqs = [producers.get(t) for t in cat.input]
    if any(d is None or d.op_type != DQ or _is_output(g, d.output[0])
           or len(_readers(g, d.output[0])) != 1 or list(cat.input).count(d.output[0]) != 1
           for d in dqs):
        return None
    params = [_dq_params(g, d) for d in dqs]
    dims = [shapes.get(t) for t in cat.input] + [shapes.get(cat.output[0])]
    if any(s.ndim for s, _, _ in params) or any(not d or any(v <= 0 for v in d)
                                                for d in dims):
        return None
    return dqs, params, dims


def _concat(g: onnx.GraphProto, cat: onnx.NodeProto, shapes: dict) -> bool:
    """Step 3 on Concat ``cat``; False (nothing changed) when it does not apply."""
    found = _concat_inputs(g, cat, shapes)
    if found is None:
        return False
    dqs, params, dims = found
    axis = next(a.i for a in cat.attribute if a.name == "axis") % len(dims[-1])
    same = len({(float(s), int(z)) for s, z, _ in params}) == 1
    if same:
        s_name, z_name, extra = dqs[0].input[1], dqs[0].input[2], {}
    else:
        s = np.concatenate([np.full(d[axis], p[0], np.float32) for d, p in zip(dims, params)])
        z = np.concatenate([np.full(d[axis], p[1], np.int8) for d, p in zip(dims, params)])
        s_name = _const(g, cat.output[0] + "::scale", s)
        z_name = _const(g, cat.output[0] + "::zero_point", z)
        extra = {"axis": axis}
    o = cat.output[0]
    for k, d in enumerate(dqs):
        cat.input[k] = d.input[0]
    cat.output[0] = o + "::int8"
    shapes[cat.output[0]] = dims[-1]
    nodes = [n for n in g.node if n not in dqs]
    nodes.insert(nodes.index(cat) + 1, helper.make_node(
        DQ, [cat.output[0], s_name, z_name], [o], name=f"{cat.name or o}::dequantize", **extra))
    del g.node[:]
    g.node.extend(nodes)
    return True


def _moved_axis(r: onnx.NodeProto, g: onnx.GraphProto, axis: int, src: list[int],
                dst: list[int]) -> int | None:
    """Where quantized ``axis`` of ``src`` lands in ``r``'s output ``dst`` (step 4), else
    None."""
    if r.op_type == "Transpose":
        perm = next((list(a.ints) for a in r.attribute if a.name == "perm"),
                    list(range(len(src)))[::-1])
        return perm.index(axis)
    if r.op_type == "Reshape":
        tail = int(np.prod(src[axis + 1:], dtype=np.int64))
        for k in range(len(dst)):
            if dst[k] == src[axis] and int(np.prod(dst[k + 1:], dtype=np.int64)) == tail:
                return k
    return None


def _sink_axis(g: onnx.GraphProto, dq: onnx.NodeProto, r: onnx.NodeProto, shapes: dict) -> bool:
    """Step 4: a per-axis DequantizeLinear below its only reader ``r``; False when not."""
    if r.op_type not in ("Transpose", "Reshape") or r.input[0] != dq.output[0] \
            or list(r.input).count(dq.output[0]) != 1:
        return False
    src, dst = shapes.get(dq.output[0]), shapes.get(r.output[0])
    if not src or not dst:
        return False
    _, _, axis = _dq_params(g, dq)
    new_axis = _moved_axis(r, g, axis % len(src), src, dst)
    if new_axis is None:
        return False
    o = r.output[0]
    r.input[0] = dq.input[0]
    r.output[0] = o + "::int8"
    shapes[r.output[0]] = dst
    nodes = [n for n in g.node if n is not dq]
    nodes.insert(nodes.index(r) + 1, helper.make_node(
        DQ, [r.output[0], dq.input[1], dq.input[2]], [o], name=f"{r.name or o}::dequantize",
        axis=new_axis))
    del g.node[:]
    g.node.extend(nodes)
    return True


#: Ops that relabel a shape without moving bytes (ONNX Runtime runs them in place): moving
#: int8 through only these gains nothing over converting at the boundary.
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def _moves_int8(g: onnx.GraphProto, name: str) -> bool:
    """True when some op other than a view or a DequantizeLinear reads int8 values that
    come from input ``name`` (the int8 hand-off then saves bytes)."""
    live, todo = {name}, [name]
    while todo:
        t = todo.pop()
        for n in _readers(g, t):
            if n.op_type == DQ:
                continue
            if n.op_type not in _VIEWS:
                return True
            for o in n.output:
                if o and o not in live:
                    live.add(o)
                    todo.append(o)
    return False


def _fix_value_info(model: onnx.ModelProto) -> None:
    """Re-derive ``value_info`` (int8 intermediates are new tensors) with ONNX shape
    inference; the graph's inputs and outputs keep their declared types."""
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.value_info.extend(inferred.graph.value_info)
