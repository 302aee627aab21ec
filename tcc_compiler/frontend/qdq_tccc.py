"""Read back the forms ``tccc export-onnx`` writes only for ONNX Runtime's sake (round trip:
export then compile gives the same binaries); used by :mod:`tcc_compiler.frontend.qdq_import`."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def drop_tccc_rounding(model: onnx.ModelProto, consts: dict[str, np.ndarray]) -> None:
    """Undo the two forms ``tccc export-onnx`` adds only to make ONNX Runtime round half up
    like the NPU (tcc_compiler/export/qdq.py): the ``<op>_RoundHalfUp`` constant offset before
    a QuantizeLinear (dropped: tccc rounds half up itself), and an average pool exported as
    integer ops ``<op>_Centre`` ... ``<op>_ToInt8`` (collapsed back to the float pool between
    a DequantizeLinear and a QuantizeLinear). Only in models tccc wrote (``producer_name``)."""
    if model.producer_name != "tccc":
        return
    nodes = list(model.graph.node)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    for n in list(nodes):
        if n.op_type == "Add" and n.name.endswith("_RoundHalfUp") and n.input[1] in consts \
                and consts[n.input[1]].dtype == np.float32:
            rename[n.output[0]] = n.input[0]
            drop.add(id(n))
        elif n.op_type == "DequantizeLinear" and n.name.endswith("_Centre"):
            _collapse_exact_pool(nodes, n, drop)
    kept = []
    for n in nodes:
        if id(n) in drop:
            continue
        for i, x in enumerate(n.input):
            n.input[i] = rename.get(x, x)
        kept.append(n)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _collapse_exact_pool(nodes: list[onnx.NodeProto], centre: onnx.NodeProto,
                         drop: set[int]) -> None:
    """Replace tccc's integer-op average pool starting at ``centre`` (in ``nodes``, in place)
    by ``DequantizeLinear -> GlobalAveragePool|AveragePool -> QuantizeLinear``; the chain's
    node ids go to ``drop``. Leaves anything that is not that exact form alone."""
    base = centre.name[:-len("_Centre")]
    by_name = {n.name: n for n in nodes}
    pool, last = by_name.get(base), by_name.get(f"{base}_ToInt8")
    src_q = next((n for n in nodes if centre.input[0] in n.output), None)
    out_dq = next((m for m in nodes if m.op_type == "DequantizeLinear" and last is not None
                   and m.input[0] == last.output[0]), None)
    if pool is None or out_dq is None or src_q is None or src_q.op_type != "QuantizeLinear":
        return
    drop.update(id(c) for c in nodes[nodes.index(centre):nodes.index(last) + 1])
    f_in, f_out = f"{base}__x", f"{base}__pooled"
    new = [helper.make_node("DequantizeLinear", [centre.input[0]] + list(src_q.input[1:]),
                            [f_in], name=f"{base}_DQ")]
    if pool.op_type == "ReduceSum":
        new.append(helper.make_node("GlobalAveragePool", [f_in], [f_out], name=base))
    else:
        a = {x.name: helper.get_attribute_value(x) for x in pool.attribute}
        new.append(helper.make_node("AveragePool", [f_in], [f_out], name=base,
                                    count_include_pad=1, kernel_shape=a["kernel_shape"],
                                    strides=a["strides"], pads=a["pads"]))
    new.append(helper.make_node("QuantizeLinear", [f_out] + list(out_dq.input[1:]),
                                [last.output[0]], name=f"{base}_Q"))
    i = nodes.index(centre)
    nodes[i:i + 1] = new


