"""Canonicalization: put the graph in the few forms the later passes match.

Rewrites (each counted): BatchNormalization -> affine; Mul/Add by a per-channel constant ->
affine; Reshape(flatten) + FC -> FC over the 4-D map (weights reshaped to [M, C, H, W]);
the NHWC input Transpose -> removed (the NPU reads NHWC natively; ``meta['input_layout']``
keeps the user-facing layout). Identity and Dropout are already dropped at import.
"""

from __future__ import annotations

import logging

import numpy as np

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.passes.affine import make_affine

log = logging.getLogger(__name__)


class Canonicalize:
    """See module docstring. ``run(graph) -> (graph, modified)``."""

    name = "canonicalize"

    def __init__(self) -> None:
        self.last_fired = 0

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        """Apply every canonicalization once per node."""
        fired = 0
        for node in list(graph.nodes):
            if node.op is Op.BATCHNORM:
                x, g_, b_, m_, v_ = node.inputs
                gamma, beta, mean, var = (t.const.astype(np.float64) for t in (g_, b_, m_, v_))
                a = gamma / np.sqrt(var + node.attrs.epsilon)
                new = make_affine(graph, node, x, a, beta - mean * a)
            elif node.op in (Op.MUL, Op.ADD) and node.inputs[1].is_const:
                x = node.inputs[0]
                c = x.shape[1]
                k = np.broadcast_to(node.inputs[1].const.astype(np.float64).reshape(-1), (c,))
                if node.op is Op.MUL:
                    new = make_affine(graph, node, x, k, np.zeros(c), node.attrs.act)
                else:
                    new = make_affine(graph, node, x, np.ones(c), k, node.attrs.act)
            elif node.op is Op.FC and self._flatten_input(graph, node):
                fired += 1
                continue
            elif (node.op is Op.TRANSPOSE and node.inputs[0] in graph.inputs
                  and node.attrs.perm == (0, 3, 1, 2)):
                inp = node.inputs[0]
                out = node.output
                graph.replace_all_uses_with(out, inp)
                graph.remove_node(node)
                inp.shape = out.shape
                graph.meta["input_layout"] = "NHWC"
                fired += 1
                continue
            else:
                continue
            graph.replace_all_uses_with(node.output, new.output)
            graph.remove_node(node)
            fired += 1
        self.last_fired = fired
        if fired:
            graph.dead_code_elimination()
        return graph, fired > 0

    @staticmethod
    def _flatten_input(graph: Graph, fc) -> bool:
        src = fc.inputs[0].producer
        if src is None or src.op is not Op.RESHAPE:
            return False
        x = src.inputs[0]
        if len(x.shape) != 4 or len(fc.inputs[0].shape) != 2 or x.shape[0] != 1:
            return False
        w = fc.inputs[1]
        m = w.shape[0]
        if w.shape[1] * w.shape[2] * w.shape[3] != int(np.prod(x.shape[1:])):
            return False
        new_w = Value(graph.fresh_name(w.name), (m,) + x.shape[1:], "float32",
                      const=w.const.reshape((m,) + x.shape[1:]))
        graph.set_input(fc, 0, x)
        graph.set_input(fc, 1, new_w)
        fc.source = src.source + fc.source
        return True
