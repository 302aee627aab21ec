"""Empirical per-channel bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2,
empirical variant; Finkelstein et al. 2019).

Quantizing weights and rounding in the epilogue shift each output channel's mean. For every
conv/fc with an int32 bias, this measures on calibration inputs the mean per-channel error of
the layer's *isolated* dequantized output (its inputs: the float values, quantized with the
layer's input parameters, as in :mod:`tcc_compiler.quant.analyze`) against the float output,
and folds it into the bias: ``bias[c] -= round(mean_err[c] / s_b[c])`` with
``s_b[c] = s_x * s_w[c]``, clipped to int32. Using the isolated error means every layer is
corrected for its own shift only: upstream shifts are corrected upstream, never twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import logging
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp import run_float
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.analyze import quantize_value
from tcc_compiler.quant.golden import eval_int_node
from tcc_compiler.quant.params import dequantize_output

log = logging.getLogger(__name__)


def correct_biases(float_graph: Graph, qgraph: Graph, inputs: Iterable[np.ndarray]) -> dict:
    """Fold each conv/fc's mean isolated output error into its int32 bias (in place).

    Args:
        float_graph: the float graph the quantized one was made from (same value names).
        qgraph: the quantized graph (modified: bias constants of conv/fc nodes).
        inputs: float32 NCHW calibration inputs.

    Returns:
        {node name: largest |correction| in bias units (int)} for every corrected node.

    Raises:
        InputError: no inputs, or a value missing from the float graph.
    """
    if not isinstance(inputs, Sequence):  # a lazy sequence (datasets) loads one at a time
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("bias correction needs at least one calibration input")
    layers = [n for n in qgraph.nodes if n.op in (Op.CONV, Op.FC)]
    sums = {n.name: np.zeros(n.output.shape[1], np.float64) for n in layers}
    count = {n.name: 0 for n in layers}
    for x in inputs:
        fl = run_float(float_graph, x, keep=True)
        fl[float_graph.inputs[0].name] = x
        for n in layers:
            names = [n.output.name] + [v.name for v in n.inputs if v is not None
                                       and not v.is_const]
            for name in names:
                if name not in fl:
                    raise InputError(f"bias correction: value '{name}' of node '{n.name}' is "
                                     "not in the float graph")
            args = [None if v is None or v.is_const else quantize_value(fl[v.name], v)
                    for v in n.inputs]
            q = eval_int_node(n, args)
            f = fl[n.output.name]
            f4 = f.reshape(1, -1, 1, 1) if f.ndim == 2 else f
            hwc = (f4.shape[2], f4.shape[3], f4.shape[1])
            qd = dequantize_output(q.reshape(hwc), n.output)
            qd4 = qd.reshape(f4.shape)
            err = (qd4.astype(np.float64) - f4).mean(axis=(0, 2, 3))
            sums[n.name] += err
            count[n.name] += 1
    changed = {}
    for n in layers:
        b = n.inputs[2]
        s_b = np.asarray(b.quant.scale, np.float64)
        delta = np.round(sums[n.name] / count[n.name] / s_b)
        new = np.clip(b.const.astype(np.int64) - delta, -(2 ** 31) + 1, 2 ** 31 - 1)
        if np.any(delta != 0):
            changed[n.name] = int(np.abs(delta).max())
            b.const = new.astype(np.int32)
    log.info("bias correction: %d of %d layers changed", len(changed), len(layers))
    return changed
