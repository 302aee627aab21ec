"""Rewrite YOLOv8's DFL decode per detection level, so its softmax and expectation run on the
NPU next to the box convs.

ultralytics' ``Detect`` head (8.x, YOLO11) exports DFL after joining the levels' box maps:

    box_i = Reshape(y_i [1, 4*R, H_i, W_i], [1, 4*R, -1]);  box = Concat(box_i.., axis=-1)
    t = Transpose(Reshape(box, [1, 4, R, A]), perm=[0, 2, 1, 3])      # [1, R, 4, A]
    d = Reshape(Conv(Softmax(t, axis=1), w [1, R, 1, 1]), [1, 4, A])    # expectation

with R = 16 bins per box side and A = sum of H_i * W_i anchors. The Reshape/Concat/Transpose
reorder the NPU's NHWC maps, so all of it ran on the host: a float32 softmax over 64 x A
values and the box maps leaving the NPU as raw int32 (YOLOv8n 640: about 2.8 ms of the
modelled host's time). The softmax normalises each (side, anchor)'s R bins, which are the
channels ``[k R, (k + 1) R)`` of one pixel of ``y_i``, so the same values come out of

    p_i = Reshape(Softmax(Reshape(y_i, [1, 4, R, H_i W_i]), axis=2), [1, 4 R, H_i, W_i])
    c_i = Conv(p_i, tile(w, 4) [4, R, 1, 1], group=4)                   # [1, 4, H_i, W_i]
    d = Concat(Reshape(c_i, [1, 4, H_i W_i]).., axis=-1)

(each output element the same sum of the same products: exact up to float32 summation
order). The importer turns the Reshape-Softmax-Reshape into the NPU's ``group_softmax``
(:mod:`tcc_compiler.frontend.converters`), the grouped conv runs on the MAC array, and only
the [1, 4, A] distances (and the rest of the box decode) go to the host.

Checks: opset >= 13 (Softmax over one axis), every intermediate read once and no graph
output, the Reshape splitting the joined maps' channels ([1, 4 R, A] -> [1, 4, R, A]), the
conv a fixed 1x1 kernel [1, R, 1, 1] with group 1, no padding, stride and dilation 1 (an
optional bias [1]), the Concat along the last axis of Reshapes of 4-D maps.
A declined match logs its reason at DEBUG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)


@dataclass
class _Match:
    """One DFL decode: its nodes (to remove), the levels' 4-D box maps and shapes, the
    expectation weights and bias, the output tensor name, the name scope of the new nodes
    (the Softmax's, e.g. ``/model.22/dfl``: nodes ``/model.22/dfl/level0/Softmax`` ...)."""

    nodes: list
    levels: list[tuple[str, tuple[int, ...]]]
    weights: np.ndarray
    bias: np.ndarray | None
    out: str
    name: str


def split_dfl(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with every DFL decode rewritten per level (module docstring).

    Args:
        proto: a folded, shape-inferred model (``value_info`` holds intermediate shapes).

    Returns:
        (the rewritten model, number of DFL decodes rewritten); ``proto`` is not changed.
        The new nodes take the place of the levels' Concat, so the order stays topological.
    """
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        return proto, 0
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    count = 0
    for soft in [n for n in out.graph.node if n.op_type == "Softmax"]:
        m = _match(out.graph, soft)
        if m is not None:
            _rewrite(out.graph, m)
            count += 1
    if count:
        log.info("%s: %d DFL decode(s) split per level for the NPU", out.graph.name, count)
    return out, count


def _shapes(g: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    return {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
            for vi in list(g.value_info) + list(g.input) + list(g.output)}


def _attr(n: onnx.NodeProto, name: str, default=None):
    a = next((a for a in n.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


class _Uses:
    """Who makes and who reads each tensor of a graph, to walk a chain of single-use nodes."""

    def __init__(self, g: onnx.GraphProto) -> None:
        self.producer = {o: n for n in g.node for o in n.output}
        self.readers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.readers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}

    def only(self, t: str, op: str):
        """The one reader of ``t`` when it is of type ``op`` and ``t`` no graph output."""
        r = self.readers.get(t, [])
        return r[0] if len(r) == 1 and r[0].op_type == op and t not in self.outputs else None

    def made(self, t: str, op: str):
        """``t``'s producer when it is of type ``op``, ``t`` read once and no graph output."""
        p = self.producer.get(t)
        return p if p is not None and p.op_type == op and len(self.readers.get(t, [])) == 1 \
            and t not in self.outputs else None


def _match(g: onnx.GraphProto, soft: onnx.NodeProto) -> _Match | None:
    """The DFL decode around Softmax ``soft``, or None (reason at DEBUG)."""
    uses = _Uses(g)
    shapes, inits = _shapes(g), {t.name: t for t in g.initializer}
    tr = uses.made(soft.input[0], "Transpose")
    r4 = uses.made(tr.input[0], "Reshape") if tr is not None else None
    cat = uses.made(r4.input[0], "Concat") if r4 is not None else None
    conv = uses.only(soft.output[0], "Conv")
    r3 = uses.only(conv.output[0], "Reshape") if conv is not None else None
    why = _decline(soft, tr, r4, cat, conv, r3, shapes, inits)
    parts, why = _level_maps(cat, uses, shapes) if not why else ([], why)
    if why:
        log.debug("DFL rewrite declined at Softmax '%s': %s", soft.name, why)
        return None
    w = numpy_helper.to_array(inits[conv.input[1]]).reshape(-1)
    b = numpy_helper.to_array(inits[conv.input[2]]).reshape(-1) if len(conv.input) > 2 \
        and conv.input[2] else None
    scope = (soft.name or soft.output[0]).rsplit("/", 1)[0] or soft.output[0]
    levels = [(rs.input[0], shapes[rs.input[0]]) for rs in parts]
    return _Match(parts + [cat, r4, tr, soft, conv, r3], levels, w, b, r3.output[0], scope)


def _level_maps(cat: onnx.NodeProto, uses: _Uses, shapes: dict) -> tuple[list, str]:
    """(the Reshape of each level's 4-D box map ``[1, C, H, W]`` to ``[1, C, H*W]`` that the
    levels' Concat ``cat`` joins, in its input order, "") or ([], why not) when an input is
    no such Reshape made for the Concat alone."""
    parts = []
    for t in cat.input:
        rs = uses.made(t, "Reshape")
        src = shapes.get(rs.input[0], ()) if rs is not None else ()
        if rs is None or len(src) != 4 or shapes.get(t) != (1, src[1], src[2] * src[3]):
            return [], f"Concat input '{t}' is no Reshape of a 4-D map"
        parts.append(rs)
    return parts, ""


def _decline(soft, tr, r4, cat, conv, r3, shapes, inits) -> str:
    """Why the nodes around ``soft`` are no DFL decode ("" when they are one)."""
    if None in (tr, r4, cat, conv, r3):
        return "not Concat -> Reshape -> Transpose -> Softmax -> Conv -> Reshape, each read once"
    t4 = shapes.get(r4.output[0], ())
    if len(t4) != 4 or t4[0] != 1 or list(_attr(tr, "perm", [])) != [0, 2, 1, 3]:
        return "not a Reshape to [1, 4, R, A] transposed by (0, 2, 1, 3)"
    if _attr(soft, "axis", -1) not in (1, -3) or _attr(cat, "axis") not in (-1, 2):
        return "softmax not over the bins (axis 1) or levels not joined on the anchors"
    sides, bins, anchors = t4[1], t4[2], t4[3]
    if shapes.get(r4.input[0]) != (1, sides * bins, anchors):
        return "the Reshape to [1, 4, R, A] does not split the joined maps' channels"
    if shapes.get(r3.output[0]) != (1, sides, anchors) or conv.input[1] not in inits:
        return "the expectation is not a constant conv reshaped to [1, sides, A]"
    if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
        return "the conv's bias is not constant"
    if tuple(inits[conv.input[1]].dims) != (1, bins, 1, 1) or _attr(conv, "group", 1) != 1 \
            or any(v != 1 for v in list(_attr(conv, "strides", [1, 1]))
                   + list(_attr(conv, "dilations", [1, 1]))) \
            or any(list(_attr(conv, "pads", [0, 0, 0, 0]))) \
            or _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID",
                                                          "VALID"):
        return "the conv is not a plain 1x1 kernel [1, R, 1, 1]"
    return ""


def _level(g: onnx.GraphProto, m: _Match, k: int) -> tuple[list, list, str]:
    """The nodes of level ``k`` (Reshape, Softmax, Reshape, grouped Conv, Reshape), the
    shapes of their outputs and the name of its distances ``[1, sides, H*W]``; adds its
    constants to ``g``."""
    y, (n, c, h, w) = m.levels[k]
    bins = m.weights.size
    sides = c // bins
    nm = f"{m.name}/level{k}"
    consts = {f"{nm}_s4": np.array([n, sides, bins, h * w], np.int64),
              f"{nm}_sb": np.array([n, c, h, w], np.int64),
              f"{nm}_s3": np.array([n, sides, h * w], np.int64),
              f"{nm}_w": np.tile(m.weights.reshape(1, bins, 1, 1),
                                 (sides, 1, 1, 1)).astype(np.float32)}
    if m.bias is not None:
        consts[f"{nm}_b"] = np.repeat(m.bias, sides).astype(np.float32)
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items())
    r, sm, p = f"{nm}/Reshape_output_0", f"{nm}/Softmax_output_0", f"{nm}/Reshape_1_output_0"
    cv, d = f"{nm}/conv/Conv_output_0", f"{nm}/Reshape_2_output_0"
    conv_in = [p, f"{nm}_w"] + ([f"{nm}_b"] if m.bias is not None else [])
    nodes = [helper.make_node("Reshape", [y, f"{nm}_s4"], [r], name=f"{nm}/Reshape"),
             helper.make_node("Softmax", [r], [sm], name=f"{nm}/Softmax", axis=2),
             helper.make_node("Reshape", [sm, f"{nm}_sb"], [p], name=f"{nm}/Reshape_1"),
             helper.make_node("Conv", conv_in, [cv], name=f"{nm}/conv/Conv", group=sides,
                              kernel_shape=[1, 1]),
             helper.make_node("Reshape", [cv, f"{nm}_s3"], [d], name=f"{nm}/Reshape_2")]
    shapes = [(r, [n, sides, bins, h * w]), (sm, [n, sides, bins, h * w]), (p, [n, c, h, w]),
              (cv, [n, sides, h, w]), (d, [n, sides, h * w])]
    return nodes, shapes, d


def _rewrite(g: onnx.GraphProto, m: _Match) -> None:
    """Replace the matched nodes by the per-level form (module docstring)."""
    new, vis, d_parts = [], [], []
    for k in range(len(m.levels)):
        nodes, shapes, d = _level(g, m, k)
        new += nodes
        vis += shapes
        d_parts.append(d)
    new.append(helper.make_node("Concat", d_parts, [m.out], name=f"{m.name}/Concat_levels",
                                axis=-1))
    _splice(g, m, new)
    _drop_dead(g, m, vis)


def _splice(g: onnx.GraphProto, m: _Match, new: list) -> None:
    """Remove ``m``'s nodes from ``g`` and put ``new`` where the levels' Concat was (every
    producer of the new nodes' inputs comes before it: the order stays topological)."""
    gone = {id(n) for n in m.nodes}
    at = next(i for i, n in enumerate(g.node) if n is m.nodes[len(m.levels)])   # the Concat
    nodes = list(g.node)
    kept = [n for n in nodes[:at] if id(n) not in gone] + new + \
        [n for n in nodes[at:] if id(n) not in gone]
    del g.node[:]
    g.node.extend(kept)


def _drop_dead(g: onnx.GraphProto, m: _Match, vis: list) -> None:
    """After :func:`_splice`: drop the initializers no node reads any more and the shapes of
    ``m``'s removed tensors, and record the new tensors' shapes ``vis`` (name, dims)."""
    removed = {o for n in m.nodes for o in n.output} - {m.out}
    used = {i for n in g.node for i in n.input}
    dead = {i for n in m.nodes for i in n.input} - used
    keep_init = [t for t in g.initializer if t.name not in dead]
    del g.initializer[:]
    g.initializer.extend(keep_init)
    keep_vi = [vi for vi in g.value_info if vi.name not in removed]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    g.value_info.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, s)
                        for t, s in vis)
