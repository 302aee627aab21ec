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
            if node.op in (Op.BATCHNORM, Op.MUL, Op.ADD) and len(node.inputs[0].shape) == 2:
                if (node.op is Op.BATCHNORM or node.inputs[1].is_const) \
                        and self._fold_into_fc(graph, node):
                    fired += 1
                continue
            if node.op is Op.BATCHNORM:
                x, g_, b_, m_, v_ = node.inputs
                gamma, beta, mean, var = (t.const.astype(np.float64) for t in (g_, b_, m_, v_))
                with np.errstate(divide="ignore", invalid="ignore"):
                    # var + eps = 0 folds to inf: frontend/magnitudes.py refuses it by name
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
    def _affine_of(node) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) float64 per channel of a batchnorm / mul-const / add-const node."""
        if node.op is Op.BATCHNORM:
            gamma, beta, mean, var = (t.const.astype(np.float64) for t in node.inputs[1:5])
            a = gamma / np.sqrt(var + node.attrs.epsilon)
            return a, beta - mean * a
        c = node.inputs[0].shape[1]
        k = np.broadcast_to(node.inputs[1].const.astype(np.float64).reshape(-1), (c,))
        return (k, np.zeros(c)) if node.op is Op.MUL else (np.ones(c), k)

    def _fold_into_fc(self, graph: Graph, node) -> bool:
        """Per-channel affine on a rank-2 FC output: fold into the FC's weights and bias."""
        fc = node.inputs[0].producer
        if (fc is None or fc.op is not Op.FC or fc.attrs.act.kind.value != "none"
                or fc.input(3) is not None or len(node.inputs[0].uses) != 1
                or graph.is_output(node.inputs[0])
                or getattr(node.attrs, "act", None) not in (None, fc.attrs.act)):
            log.debug("canonicalize: %s on a rank-2 tensor not foldable into an FC", node.name)
            return False
        a, c = self._affine_of(node)
        w, b = fc.inputs[1], fc.inputs[2]
        nw = w.const.astype(np.float64) * a.reshape(-1, 1, 1, 1)
        nb = b.const.astype(np.float64) * a + c
        graph.set_input(fc, 1, Value(graph.fresh_name(w.name), w.shape, "float32",
                                     const=nw.astype(np.float32)))
        graph.set_input(fc, 2, Value(graph.fresh_name(b.name), b.shape, "float32",
                                     const=nb.astype(np.float32)))
        fc.source = fc.source + node.source
        graph.replace_all_uses_with(node.output, fc.output)
        graph.remove_node(node)
        return True

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
        # same output channels: fixed per-channel weight scales (a pre-quantized model) hold
        new_w = Value(graph.fresh_name(w.name), (m,) + x.shape[1:], "float32",
                      const=w.const.reshape((m,) + x.shape[1:]), quant=w.quant)
        graph.set_input(fc, 0, x)
        graph.set_input(fc, 1, new_w)
        fc.source = src.source + fc.source
        return True
