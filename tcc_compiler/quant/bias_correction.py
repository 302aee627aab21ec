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


def _float_means(float_graph: Graph, names: set, inputs: Sequence[np.ndarray]) -> dict:
    """{value name: per-channel mean (float64 [C]) over all ``inputs`` and positions} of the
    float values ``names`` (NCHW, or [N, C] for fc outputs)."""
    sums: dict[str, np.ndarray] = {}

    def visit(name: str, arr: np.ndarray) -> None:
        if name in names:
            a = np.asarray(arr, np.float64)
            a4 = a.reshape(1, -1, 1, 1) if a.ndim == 2 else a
            m = a4.mean(axis=(0, 2, 3))
            sums[name] = sums.get(name, 0.0) + m

    for x in inputs:
        run_float(float_graph, x, visit=visit)
    return {k: v / len(inputs) for k, v in sums.items()}


def _last_uses(graph: Graph) -> dict[int, int]:
    """{id(value): index of the last node reading it} (graph outputs never released)."""
    last: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None and not v.is_const:
                last[id(v)] = i
    for o in graph.outputs:
        last[id(o)] = len(graph.nodes)
    return last


def correct_biases_sequential(float_graph: Graph, qgraph: Graph,
                              inputs: Iterable[np.ndarray]) -> dict:
    """Fold each conv/fc's mean output error *with the quantized network upstream* into its
    int32 bias (in place; Finkelstein et al. 2019, "Fighting Quantization Bias With Bias",
    sec. 3; Nagel et al. 2019, sec. 4.2, empirical variant with quantized inputs).

    Layers are corrected in graph order on all ``inputs`` at once: layer ``k``'s dequantized
    output is computed by the golden integer model from the int8 outputs of the layers
    before it (already corrected), its per-channel mean over inputs and positions is compared
    with the float network's, and ``bias[c] -= round((mean_q[c] - mean_f[c]) / s_b[c])``
    (clipped to int32); its output is then recomputed with the new bias for the layers after
    it. So every layer cancels the mean shift that reaches it (its own, and what the
    quantization upstream pushed through non-linearities), not only its isolated one.
    Memory: the live int8 activations of every input at once (released after their last
    reader).

    Args:
        float_graph: the float graph the quantized one was made from (same value names).
        qgraph: the quantized graph (modified: bias constants of conv/fc nodes).
        inputs: float32 NCHW calibration inputs.

    Returns:
        {node name: largest |correction| in bias units (int)} for every corrected node.

    Raises:
        InputError: no inputs, or a graph with host ops between NPU layers.
    """
    from tcc_compiler.quant.params import quantize_input

    if not isinstance(inputs, Sequence):
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("bias correction needs at least one calibration input")
    layers = {n.name for n in qgraph.nodes if n.op in (Op.CONV, Op.FC)}
    fmeans = _float_means(float_graph, {n.output.name for n in qgraph.nodes
                                        if n.name in layers}, inputs)
    inp = qgraph.inputs[0]
    envs = [{id(inp): quantize_input(np.asarray(x, np.float32), inp)} for x in inputs]
    last = _last_uses(qgraph)
    changed = {}
    for i, node in enumerate(qgraph.nodes):
        fmean = fmeans.get(node.output.name) if node.name in layers else None
        delta = _advance(node, envs, fmean)
        if delta is not None:
            changed[node.name] = int(np.abs(delta).max())
        for v in node.inputs:
            if v is not None and not v.is_const and last.get(id(v)) == i:
                for env in envs:
                    env.pop(id(v), None)
    log.info("bias correction (quantized upstream): %d of %d layers changed", len(changed),
             len(layers))
    return changed


def _advance(node, envs: list, fmean: np.ndarray | None) -> np.ndarray | None:
    """Compute ``node`` on every env (a conv/fc with a float mean ``fmean``: corrected first,
    :func:`_layer_shift`); its bias change, or None. Host ops are skipped (they read
    dequantized floats; nothing NPU-side follows them)."""
    from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS
    from tcc_compiler.ir.shapes import npu_hwc
    from tcc_compiler.quant.golden import prepare_conv

    if node.op in HOST_OPS:
        return None
    if node.op in VIEW_OPS:
        for env in envs:
            env[id(node.output)] = env[id(node.inputs[0])].reshape(npu_hwc(node.output.shape))
        return None
    if fmean is not None:
        return _layer_shift(node, envs, fmean, prepare_conv)
    for env in envs:
        args = [env[id(v)] if v is not None and not v.is_const else None for v in node.inputs]
        env[id(node.output)] = eval_int_node(node, args)
    return None


def _layer_shift(node, envs: list, fmean: np.ndarray, prepare) -> np.ndarray | None:
    """Run conv/fc ``node`` on every env, fold its mean error against ``fmean`` into its bias,
    store its (re-run) outputs in the envs; the bias change (None when zero)."""
    def run_all(prep):
        outs = []
        for env in envs:
            args = [env[id(v)] if v is not None and not v.is_const else None
                    for v in node.inputs]
            outs.append(eval_int_node(node, args, prep))
        return outs

    outs = run_all(prepare(node))
    qsum = 0.0
    for q in outs:
        d = np.asarray(dequantize_output(q, node.output), np.float64)
        d4 = d.reshape(1, -1, 1, 1) if d.ndim == 2 else d
        qsum = qsum + d4.mean(axis=(0, 2, 3))
    err = qsum / len(outs) - fmean
    b = node.inputs[2]
    s_b = np.asarray(b.quant.scale, np.float64)
    delta = np.round(err / s_b)
    if np.any(delta != 0):
        b.const = np.clip(b.const.astype(np.int64) - delta, -(2 ** 31) + 1,
                          2 ** 31 - 1).astype(np.int32)
        outs = run_all(prepare(node))
    for env, q in zip(envs, outs):
        env[id(node.output)] = q
    return delta if np.any(delta != 0) else None
