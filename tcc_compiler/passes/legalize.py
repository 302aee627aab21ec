"""Legalize for the NPU: what is left outside the NPU op set is rewritten or refused.

* standalone relu/clip -> identity depthwise 1x1 conv with that activation (exact);
* any other op outside NPU ops, views and host ops at the graph end -> UnsupportedError;
* an NPU op whose window, stride, dilation or padding does not fit its configuration
  command's field (``specs/isa.md``: CONV_CFG/POOL_CFG ``kh``/``kw``... are u8, CONV_TILE and
  POOL_TILE pads u8) -> UnsupportedError. An FC runs as a conv whose window is its whole
  input map, so an FC on a map wider or higher than 255 is refused here (it used to reach the
  encoder and fail there as an internal error).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import UnsupportedError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, NPU_OPS, VIEW_OPS, Op
from tcc_compiler.ir.shapes import is_nhwc_view
from tcc_compiler.isa.spec import BY_NAME
from tcc_compiler.passes.affine import make_affine


class Legalize:
    """See module docstring."""

    name = "legalize"

    def __init__(self) -> None:
        self.last_fired = 0

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        """Rewrite leftover activations; raise on anything the NPU cannot run."""
        fired = 0
        problems = []
        for node in list(graph.nodes):
            if node.op in (Op.RELU, Op.CLIP):
                x = node.inputs[0]
                if len(x.shape) != 4:
                    problems.append(f"{node.op.value} '{node.name}': activation on a "
                                    f"rank-{len(x.shape)} tensor that no NPU op produces")
                    continue
                c = x.shape[1]
                new = make_affine(graph, node, x, np.ones(c), np.zeros(c), node.attrs.act)
                graph.replace_all_uses_with(node.output, new.output)
                graph.remove_node(node)
                fired += 1
            elif node.op in HOST_OPS:
                # a graph output read by an NPU op too is not at the end: the NPU op would
                # read a tensor the program never computes (quantization found no range)
                if not all(u.op in HOST_OPS for o in node.outputs for u, _ in o.uses):
                    problems.append(f"{node.op.value} '{node.name}': host-side op must be at "
                                    "the end of the graph")
            elif node.op not in NPU_OPS and node.op not in VIEW_OPS \
                    and node.op not in CHANNEL_OPS:
                problems.append(f"{node.op.value} '{node.name}': no NPU lowering")
            elif node.op in VIEW_OPS and not is_nhwc_view(node.inputs[0].shape,
                                                          node.output.shape):
                problems.append(f"{node.op.value} '{node.name}': reshape {node.inputs[0].shape} "
                                f"-> {node.output.shape} reorders data in the NPU's NHWC layout "
                                "(only flattening of 1x1 maps is free)")
            elif node.op in (Op.ADD, Op.MUL, Op.SUB) and node.inputs[1].is_const:
                problems.append(f"{node.op.value} '{node.name}': constant operand left after "
                                "folding")
            problems += field_problems(node)
        if problems:
            raise UnsupportedError(graph.meta.get("source", graph.name), problems)
        self.last_fired = fired
        return graph, fired > 0


#: Op -> (configuration command, tile command) whose fields carry its geometry.
_GEOMETRY_COMMANDS = {Op.CONV: ("CONV_CFG", "CONV_TILE"), Op.FC: ("CONV_CFG", "CONV_TILE"),
                      Op.MAXPOOL: ("POOL_CFG", "POOL_TILE"), Op.AVGPOOL: ("POOL_CFG", "POOL_TILE"),
                      Op.GAP: ("POOL_CFG", "POOL_TILE")}


def _geometry(node) -> dict[str, int]:
    """The window, stride, dilation and padding fields ``node`` needs (an FC's and a global
    average pool's window is the whole input map, NCHW [N, C, H, W] or [N, F] = 1x1)."""
    shape = node.inputs[0].shape
    h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
    if node.op in (Op.FC, Op.GAP):
        return {"kh": h, "kw": w}
    a = node.attrs
    geo = {"kh": a.kernel[0], "kw": a.kernel[1], "sh": a.strides[0], "sw": a.strides[1],
           "pad_t": a.pads[0], "pad_l": a.pads[1], "pad_b": a.pads[2], "pad_r": a.pads[3]}
    if node.op is Op.CONV:
        geo.update(dh=a.dilations[0], dw=a.dilations[1])
    return geo


def field_problems(node) -> list[str]:
    """Why ``node``'s geometry cannot be encoded (one line per field outside its command
    field's range, from the ISA table :mod:`tcc_compiler.isa.spec`); [] when it fits or the
    op has no geometry fields."""
    cmds = _GEOMETRY_COMMANDS.get(node.op)
    if cmds is None:
        return []
    types = {f.name: (c, f.type) for c in reversed(cmds) for f in BY_NAME[c].fields}
    out = []
    for name, v in _geometry(node).items():
        cmd, t = types[name]
        if not t.min <= v <= t.max:
            what = (" (an FC's window is its whole input map: flatten a smaller map, or "
                    "pool it first)" if node.op is Op.FC else "")
            out.append(f"{node.op.value} '{node.name}': {name} = {v} exceeds the NPU's "
                       f"{cmd} field range {t.min}..{t.max}{what}")
    return out
