"""Legalize for the NPU: what is left outside the NPU op set is rewritten or refused.

* standalone relu/clip -> identity depthwise 1x1 conv with that activation (exact);
* any other op outside NPU ops, views and host ops at the graph end -> UnsupportedError.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import UnsupportedError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import HOST_OPS, NPU_OPS, VIEW_OPS, Op
from tcc_compiler.ir.shapes import is_nhwc_view
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
                if not all(graph.is_output(o) or all(u.op in HOST_OPS for u, _ in o.uses)
                           for o in node.outputs):
                    problems.append(f"{node.op.value} '{node.name}': host-side op must be at "
                                    "the end of the graph")
            elif node.op not in NPU_OPS and node.op not in VIEW_OPS:
                problems.append(f"{node.op.value} '{node.name}': no NPU lowering")
            elif node.op in VIEW_OPS and not is_nhwc_view(node.inputs[0].shape,
                                                          node.output.shape):
                problems.append(f"{node.op.value} '{node.name}': reshape {node.inputs[0].shape} "
                                f"-> {node.output.shape} reorders data in the NPU's NHWC layout "
                                "(only flattening of 1x1 maps is free)")
            elif node.op in (Op.ADD, Op.MUL, Op.SUB) and node.inputs[1].is_const:
                problems.append(f"{node.op.value} '{node.name}': constant operand left after "
                                "folding")
        if problems:
            raise UnsupportedError(graph.meta.get("source", graph.name), problems)
        self.last_fired = fired
        return graph, fired > 0
