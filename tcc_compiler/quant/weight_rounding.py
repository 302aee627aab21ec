"""Data-aware rounding of int8 weights (GPTQ: Frantar et al. 2023, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", Algorithm 1; built on Optimal Brain
Quantization, Frantar & Alistarh 2022). An alternative to AdaRound (Nagel et al. 2020) with the
same goal -- choose each weight's rounding direction to minimise the layer's output error on
calibration data rather than each weight's own error -- solved in closed form instead of by
gradient descent.

For a conv/fc with float weights ``W`` (one row per output channel, columns in OIHW order
``(c, kh, kw)``) and calibration inputs ``X`` (im2col rows of the layer's float input,
per group), the output error ``||X W^T - X Q^T||^2`` has Hessian ``H = X^T X`` (``2 X^T X``;
the factor cancels). The columns are quantized one at a time (round to nearest on the layer's
unchanged per-channel scale, clip to +-127), and each column's rounding error is pushed onto the
not-yet-quantized columns through the upper Cholesky factor of ``H^-1`` (GPTQ eq. 3 /
Algorithm 1). ``H`` is damped by 1 % of its mean diagonal (GPTQ sec. 4); inputs never
non-zero get a unit diagonal (their weights only round).

Only the int8 weight values change: scales, zero points, biases and the binary layout stay as
:func:`tcc_compiler.quant.quantize_graph` made them, so the NPU program is unchanged but for the
weight bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp import run_float
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op

log = logging.getLogger(__name__)

#: Damping of H, as a fraction of its mean diagonal (GPTQ's default).
DAMP = 0.01
#: Weight rounding modes (``--weight-rounding``).
WEIGHT_ROUNDING = ("nearest", "gptq")
#: Default weight rounding (read by :class:`tcc_compiler.options.CompileOptions`, written only
#: here; tools/bench_quant.py measures both).
DEFAULT_WEIGHT_ROUNDING = "nearest"


def _columns(x: np.ndarray, node) -> np.ndarray:
    """The layer's input as im2col rows per group: float64 [G, positions, K], K = Cin/G * kh *
    kw in (c, kh, kw) order (OIHW weight columns). ``x``: float32 NCHW [1, C, H, W]."""
    if node.op == Op.FC:
        return x.reshape(1, 1, -1).astype(np.float64)
    a = node.attrs
    kh, kw = a.kernel
    (sh, sw), (dh, dw) = a.strides, a.dilations
    t, left, b, r = a.pads
    xp = np.pad(x[0], ((0, 0), (t, b), (left, r)))
    win = np.lib.stride_tricks.sliding_window_view(
        xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    win = win[:, ::sh, ::sw, ::dh, ::dw]                    # [C, OH, OW, kh, kw]
    c, oh, ow = win.shape[:3]
    g = a.group
    cols = win.reshape(g, c // g, oh * ow, kh * kw).transpose(0, 2, 1, 3)
    return cols.reshape(g, oh * ow, (c // g) * kh * kw).astype(np.float64)


def _gptq(w: np.ndarray, scale: np.ndarray, h: np.ndarray) -> np.ndarray:
    """GPTQ rounding of one layer.

    Args:
        w: float64 [G, Cout/G, K] weights per group. scale: float64 [G, Cout/G] per-channel
            scales. h: float64 [G, K, K] input second moments per group.

    Returns:
        int8 [G, Cout/G, K] weights on the same scales.
    """
    w = w.copy()
    k = h.shape[-1]
    h = h.copy()
    diag = np.einsum("gkk->gk", h)
    dead = diag <= 0.0
    idx = np.arange(k)
    h[:, idx, idx] += DAMP * np.maximum(diag.mean(axis=1, keepdims=True), 1e-12) + dead
    # upper Cholesky factor U of H^-1 (H^-1 = U^T U)
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    q = np.zeros(w.shape, np.int8)
    for i in range(k):
        col = w[:, :, i]
        qi = np.clip(np.round(col / scale), -127, 127)
        q[:, :, i] = qi
        err = (col - qi * scale) / u[:, i, i][:, None]                   # [G, Cout/G]
        w[:, :, i + 1:] -= err[:, :, None] * u[:, None, i, i + 1:]
    return q


def gptq_round_weights(float_graph: Graph, qgraph: Graph,
                       inputs: Iterable[np.ndarray]) -> dict[str, int]:
    """Re-round every conv/fc's int8 weights of ``qgraph`` with GPTQ (in place).

    Args:
        float_graph: the float graph ``qgraph`` was quantized from (same node and value names).
        qgraph: quantized graph (its conv/fc weight constants are replaced).
        inputs: float32 NCHW [1, C, H, W] calibration inputs.

    Returns:
        {node name: number of int8 weights that differ from round-to-nearest}.

    Raises:
        InputError: no calibration inputs.
    """
    if not isinstance(inputs, Sequence):
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("weight rounding gptq needs at least one calibration input")
    fnodes = {n.name: n for n in float_graph.nodes}
    layers = [n for n in qgraph.nodes if n.op in (Op.CONV, Op.FC) and n.name in fnodes]
    hess: dict[str, np.ndarray] = {}
    for x in inputs:
        fl = run_float(float_graph, x, keep=True)
        fl[float_graph.inputs[0].name] = x
        for n in layers:
            cols = _columns(fl[fnodes[n.name].inputs[0].name], fnodes[n.name])
            h = np.matmul(cols.transpose(0, 2, 1), cols)       # BLAS; einsum is 100x slower
            hess[n.name] = hess[n.name] + h if n.name in hess else h
    changed = {}
    for n in layers:
        wv, fw = n.inputs[1], fnodes[n.name].inputs[1].const
        h = hess[n.name]
        g = h.shape[0]
        cout = fw.shape[0]
        w = fw.reshape(g, cout // g, -1).astype(np.float64)
        s = np.asarray(wv.quant.scale, np.float64).reshape(g, cout // g)
        q = _gptq(w, s, h).reshape(wv.const.shape)
        changed[n.name] = int(np.count_nonzero(q != wv.const))
        wv.const = q
    log.info("gptq weight rounding: %d of %d weights differ from round-to-nearest",
             sum(changed.values()), sum(n.inputs[1].const.size for n in layers))
    return changed
