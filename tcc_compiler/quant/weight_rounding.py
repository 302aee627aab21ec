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
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp.onnx_float import float_values
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics import jit
from tcc_compiler.quant.calibrate_run import workers
from tcc_compiler.quant.hessian_dw import DepthwiseHessianSum, is_depthwise, shifts_cheaper
from tcc_compiler.quant.hessian_dw import kernel_available as dw_kernel_available
from tcc_compiler.quant.quantize import is_fixed

log = logging.getLogger(__name__)

#: Damping of H, as a fraction of its mean diagonal (GPTQ's default).
DAMP = 0.01
#: Columns per lazy-batch block (GPTQ's B = 128).
BLOCK = 128
#: The default ``gptq`` re-rounds a layer only when its cost is bounded: ``K`` (inputs per
#: output, :func:`layer_k`) at most :data:`GPTQ_MAX_K` (the Cholesky factor and the column
#: updates cost ``K^3 / 3 + Cout * K^2``) and ``positions * K^2``, the multiply-adds of H per
#: calibration input, at most :data:`GPTQ_MAX_H_MACS`; other layers keep round-to-nearest.
#: Every layer of EfficientNet-Lite0 (largest ``positions * K^2``: 1.2e8) and ResNet-8 (2.1e7)
#: is within both; of ResNet-50 at 224x224 21 of its 54 layers, 1x1 convs (its 3x3 convs take
#: about 1.0e9 each, and re-rounding them made the compile several times slower).
GPTQ_MAX_K = 1280
GPTQ_MAX_H_MACS = 1 << 27
#: Weight rounding modes (``--weight-rounding``).
#: "gptq" re-rounds the layers within :data:`GPTQ_MAX_K`, "gptq-all" every conv/fc.
WEIGHT_ROUNDING = ("nearest", "gptq", "gptq-all")
#: Default weight rounding (read by :class:`tcc_compiler.options.CompileOptions`, written only
#: here): GPTQ on the layers whose cost is bounded. Measured with tools/bench_quant.py
#: (specs/quantization.md, "Optional improvements"): predictions differing from FP32 on the
#: real ResNet-8 7 -> 1 of 200 and on EfficientNet-Lite0 16 -> 10 of 900.
DEFAULT_WEIGHT_ROUNDING = "gptq"


def _taps(x: np.ndarray, node, dtype=np.float64) -> np.ndarray:
    """The layer's input as im2col columns per group, taps-major: [G, K, positions] of
    ``dtype`` (float64, or float32: the input's own values, for columns kept a while),
    K = Cin/G * kh * kw in (c, kh, kw) order (OIHW weight columns), positions in output
    raster order. ``x``: float32 NCHW [1, C, H, W].

    Built one kernel tap at a time (``kh * kw`` strided slices of the padded input, each
    copied whole), so ``H = A A^T`` is one GEMM over contiguous rows; a 1x1 stride-1 unpadded
    conv (most of a MobileNet's layers) and an FC are their input as it is (a view of ``x``,
    no copy, when ``dtype`` is float32: read only). The same H as the position-major
    im2col it replaces (bit for bit on EfficientNet-Lite0), without the transposing gather that
    took a third of H's time on the depthwise convs.
    """
    if node.op == Op.FC:
        return np.asarray(x.reshape(1, -1, 1), dtype)   # a view when already ``dtype``
    a = node.attrs
    kh, kw = a.kernel
    (sh, sw), (dh, dw) = a.strides, a.dilations
    c, g = x.shape[1], a.group
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and not any(a.pads):
        return np.asarray(x.reshape(g, c // g, -1), dtype)   # a view when already ``dtype``
    t, left, b, r = a.pads
    xp = np.pad(x[0], ((0, 0), (t, b), (left, r)))
    oh = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.empty((c, kh * kw, oh, ow), dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, i * kw + j] = xp[:, i * dh: i * dh + (oh - 1) * sh + 1: sh,
                                    j * dw: j * dw + (ow - 1) * sw + 1: sw]
    return out.reshape(g, (c // g) * kh * kw, oh * ow)


def _gptq(w: np.ndarray, scale: np.ndarray, h: np.ndarray) -> np.ndarray:
    """GPTQ rounding of one layer, in its nearest-plane form (no matrix inverse).

    GPTQ quantizes column ``i`` at ``w~_i = w_i - sum_{j<i} e_j U_ji`` (``U`` the upper
    Cholesky factor of ``H^-1``, ``e_j = (w~_j - s q_j) / U_jj``). With ``H = V V^T``, ``V``
    upper triangular (``V = U^-1``: the Cholesky factor of ``H`` with rows and columns
    reversed), the same point is ``w~_i = w_i + sum_{j<i} (w_j - s q_j) V_ji / V_ii``: the
    errors against the *original* weights, weighted by ``V`` (Babai's nearest-plane algorithm,
    which GPTQ equals: Chen et al. 2025, "The Geometry of LLM Quantization: GPTQ as Babai's
    Nearest Plane Algorithm"). One Cholesky (``K^3 / 3``) replaces ``inv`` and a Cholesky of
    the inverse (about ``2.3 K^3``), and the earlier blocks' errors reach a block of
    :data:`BLOCK` columns in one matrix product (GPTQ's lazy batch updates, sec. 4).

    Args:
        w: float64 [G, Cout/G, K] weights per group. scale: float64 [G, Cout/G] per-channel
            scales. h: float64 [G, K, K] input second moments per group.

    Returns:
        int8 [G, Cout/G, K] weights on the same scales.
    """
    k = h.shape[-1]
    h = h.copy()
    diag = np.einsum("gkk->gk", h)
    dead = diag <= 0.0
    idx = np.arange(k)
    h[:, idx, idx] += DAMP * np.maximum(diag.mean(axis=1, keepdims=True), 1e-12) + dead
    v = np.linalg.cholesky(h[:, ::-1, ::-1])[:, ::-1, ::-1]        # H = V V^T, V upper
    v = v / np.einsum("gkk->gk", v)[:, None, :]                    # column i over V_ii
    kern = _block_kernel()
    if kern is not None:
        return _columns_compiled(kern, w, scale, v)
    q = np.zeros(w.shape, np.int8)
    d = np.zeros(w.shape)                                          # w - s q, done columns
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        wt = w[:, :, b0:b1] + np.matmul(d[:, :, :b0], v[:, :b0, b0:b1])
        for i in range(b0, b1):
            col = wt[:, :, i - b0] + np.matmul(d[:, :, b0:i], v[:, b0:i, i, None])[..., 0]
            qi = np.clip(np.round(col / scale), -127, 127)
            q[:, :, i] = qi
            d[:, :, i] = w[:, :, i] - qi * scale
    return q


def _columns_compiled(kern, w: np.ndarray, scale: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:func:`_gptq`'s column loop with the compiled kernel
    (:func:`tcc_compiler.quant.gptq_jit.gptq_block`), on the transposed layout [G, K, O]
    (a column's rows contiguous, so one column's update is vectorised across the rows): the
    same operations as the numpy loop but for the order of the additions inside one column's
    update (float64 rounding only; the same levels on EfficientNet-Lite0 and the ResNet
    goldens). ``w`` float64 [G, O, K], ``scale`` float64 [G, O], ``v`` float64 [G, K, K]
    (columns over their diagonal); returns int8 [G, O, K]."""
    k = w.shape[2]
    wt = np.ascontiguousarray(w.transpose(0, 2, 1))                # [G, K, O]
    vt = np.ascontiguousarray(v.transpose(0, 2, 1))                # vt[g, i, j] = v[g, j, i]
    dt = np.zeros(wt.shape)                                        # w - s q, done columns
    qt = np.zeros(wt.shape, np.int8)
    scale = np.ascontiguousarray(scale, np.float64)
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        start = wt[:, b0:b1] + np.matmul(vt[:, b0:b1, :b0], dt[:, :b0])   # [G, B, O]
        kern.gptq_block(start, wt, vt, scale, dt, qt, b0, b1)
    return np.ascontiguousarray(qt.transpose(0, 2, 1))




def _block_kernel():
    """The compiled column loop (:mod:`tcc_compiler.quant.gptq_jit`), or None (numba
    unavailable or disabled, :func:`tcc_compiler.numerics.jit.available`: the numpy loop)."""
    return jit.kernel_module("tcc_compiler.quant.gptq_jit")


def layer_k(node) -> int:
    """Inputs per output of a conv/fc: ``Cin / group * kh * kw`` (the size of GPTQ's ``H``)."""
    w = node.inputs[1]
    return int(np.prod(w.shape[1:]))


def gptq_cost(node) -> int:
    """The multiply-adds of :func:`_gptq` on a conv/fc: per group the Cholesky factor of
    ``H`` (``K^3 / 3``) and the column updates (``Cout/G * K^2``)."""
    k = layer_k(node)
    group = getattr(node.attrs, "group", 1) if node.op is Op.CONV else 1
    return group * (k ** 3 // 3 + node.inputs[1].shape[0] // group * k * k)


def bounded_cost(node) -> bool:
    """True when the default ``gptq`` re-rounds this conv/fc (:data:`GPTQ_MAX_K`,
    :data:`GPTQ_MAX_H_MACS`): H per input costs ``positions * K^2`` per group."""
    k = layer_k(node)
    out = node.output.shape
    positions = int(np.prod(out[2:])) if len(out) == 4 else 1
    group = getattr(node.attrs, "group", 1) if node.op is Op.CONV else 1
    return k <= GPTQ_MAX_K and positions * k * k * group <= GPTQ_MAX_H_MACS


def _taps_key(node) -> tuple:
    """What :func:`_taps` reads of a layer besides its input: equal keys on the same input
    give the same columns, hence the same ``H``."""
    if node.op == Op.FC:
        return (Op.FC,)
    a = node.attrs
    return (Op.CONV, tuple(a.kernel), tuple(a.strides), tuple(a.dilations), tuple(a.pads),
            a.group)


class HessianSum:
    """GPTQ's ``H = X^T X`` per conv/fc, summed over calibration inputs as their float values
    arrive (:meth:`visit`, e.g. as :func:`tcc_compiler.quant.calibrate.observe`'s ``also``, so
    calibration's float pass serves both).

    Layers reading the same value through the same window (:func:`_taps_key`: ResNet's first
    bottleneck conv and its downsample conv) share one ``H``, built once per input from one
    set of columns. How each ``H`` is summed (float64 throughout; the ways differ only in the
    order of the float64 additions, so an ``H`` moves by rounding only, about 1e-15 of its
    largest entry):

    * a depthwise conv, with the compiled kernels (:func:`tcc_compiler.numerics.jit.available`),
      where that makes fewer products (:func:`~tcc_compiler.quant.hessian_dw.shifts_cheaper`:
      not a stride-2 3x3): from shifted products of its input
      (:mod:`tcc_compiler.quant.hessian_dw`), no im2col, each input added in place
      (:class:`~tcc_compiler.quant.hessian_dw.DepthwiseHessianSum`);
    * a layer with fewer than :data:`BATCH_COLUMNS` output positions per input (FC, the
      7x7 and 14x14 layers): the columns of consecutive inputs (kept as float32, the values
      themselves) are gathered and multiplied once per :data:`BATCH_COLUMNS` or more (a rank-49
      update of a 1152 x 1152 ``H`` writes all of ``H`` for little arithmetic: measured about
      3x faster per input, loaded machine);
    * otherwise ``A A^T`` of each input's taps-major im2col ``A`` (:func:`_taps`).

    Attributes:
        layers: {node name: float node} of the layers re-rounded (:func:`bounded_cost` unless
            ``bounded`` is False; weights a pre-quantized model fixes are left out).
        hess: {node name: float64 [G, K, K]} (read after the last :meth:`visit`: gathered
            columns are multiplied then; layers sharing an ``H`` share the array: read only).
    """

    def __init__(self, float_graph: Graph, bounded: bool = True) -> None:
        self.layers = {n.name: n for n in float_graph.nodes if n.op in (Op.CONV, Op.FC)
                       and not is_fixed(n.inputs[1]) and (not bounded or bounded_cost(n))}
        # {value name: {window key: [layers]}}, in graph order
        self._readers: dict[str, dict[tuple, list]] = {}
        for n in self.layers.values():
            by_key = self._readers.setdefault(n.inputs[0].name, {})
            by_key.setdefault(_taps_key(n), []).append(n)
        self._sum: dict[tuple, np.ndarray] = {}          # (value, key) -> H so far
        # (value, key) -> the depthwise sum, [K, K, C], summed in place (moved to _sum once)
        self._dw: dict[tuple, DepthwiseHessianSum] = {}
        self._pending: dict[tuple, list[np.ndarray]] = {}  # (value, key) -> float32 columns
        # (views of the values themselves for a 1x1 conv or an FC: calibration never changes
        # a value in place)

    def names(self) -> list[str]:
        """The values the layers read (what :meth:`visit` needs)."""
        return list(self._readers)

    def visit(self, name: str, value: np.ndarray) -> None:
        """Add one input's value ``name`` (float32 NCHW) to the H of every layer reading it
        (safe to call concurrently for different names; each name in input order)."""
        for key, group in self._readers.get(name, {}).items():
            node, at = group[0], (name, key)
            if node.op == Op.CONV and is_depthwise(node) and dw_kernel_available() \
                    and shifts_cheaper(node):
                # summed channels last, in place; transposed once (hess)
                self._dw.setdefault(at, DepthwiseHessianSum(node.attrs)).add(value)
                continue
            cols = _taps(value, node, np.float32)
            if cols.shape[2] >= BATCH_COLUMNS:
                self._add(at, _gram(cols))
                continue
            pend = self._pending.setdefault(at, [])
            pend.append(cols)
            if sum(c.shape[2] for c in pend) >= BATCH_COLUMNS:
                self._flush(at)

    def _add(self, at: tuple, h: np.ndarray) -> None:
        """Add ``h`` (a fresh array, owned from here) to the ``H`` of ``at``, in place: the
        same float64 additions as ``sum + h``, without a new array per input."""
        if at in self._sum:
            self._sum[at] += h
        else:
            self._sum[at] = h

    def _flush(self, at: tuple) -> None:
        """Multiply the gathered columns of ``at`` into its ``H``."""
        pend = self._pending.pop(at, None)
        if pend:
            self._add(at, _gram(np.concatenate(pend, axis=2, dtype=np.float64)))

    @property
    def hess(self) -> dict[str, np.ndarray]:
        """{node name: float64 [G, K, K]} of the layers seen so far (multiplies the gathered
        columns first; call after the last :meth:`visit`)."""
        if self._pending:   # the last gathered columns: BLAS releases the GIL, so on threads
            with ThreadPoolExecutor(max(1, min(len(self._pending), workers()))) as pool:
                list(pool.map(self._flush, list(self._pending)))
        for at in list(self._dw):   # [K, K, C] -> [C, K, K], once
            self._sum[at] = np.ascontiguousarray(self._dw.pop(at).kkc.transpose(2, 0, 1))
        out = {}
        for name, by_key in self._readers.items():
            for key, group in by_key.items():
                at = (name, key)
                if at in self._sum:
                    for n in group:
                        out[n.name] = self._sum[at]
        return out


#: Fewest output positions per input for which a layer's ``H`` is multiplied per input;
#: below it the columns of several inputs are gathered to at least this many first
#: (:class:`HessianSum`).
BATCH_COLUMNS = 512


def _gram(cols: np.ndarray) -> np.ndarray:
    """``A A^T`` float64 [G, K, K] of columns ``A`` [G, K, P] (float32 values, converted
    exactly, or float64)."""
    a = np.asarray(cols, np.float64)
    return np.matmul(a, a.transpose(0, 2, 1))        # BLAS (symmetric: dsyrk); einsum 100x slower


def gptq_round_weights(float_graph: Graph, qgraph: Graph, inputs: Iterable[np.ndarray],
                       bounded: bool = True, hessians: HessianSum | None = None
                       ) -> dict[str, int]:
    """Re-round the int8 weights of ``qgraph``'s conv/fc layers with GPTQ (in place).

    Args:
        float_graph: the float graph ``qgraph`` was quantized from (same node and value names).
        qgraph: quantized graph (its conv/fc weight constants are replaced).
        inputs: float32 NCHW [1, C, H, W] calibration inputs.
        bounded: re-round only the layers whose cost is bounded (:func:`bounded_cost`), the
            others keep round-to-nearest; False: every conv/fc.
        hessians: the H of the layers, already summed over ``inputs`` (e.g. during
            calibration); None: computed here (one float run per input).

    Returns:
        {node name: number of int8 weights that differ from round-to-nearest}.

    Raises:
        InputError: no calibration inputs.
    """
    if not isinstance(inputs, Sequence):
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("weight rounding gptq needs at least one calibration input")
    if hessians is None:
        hessians = HessianSum(float_graph, bounded)
        for fl in float_values(float_graph, hessians.names(), inputs):
            for name, value in fl.items():
                hessians.visit(name, value)
    hess = hessians.hess
    fnodes = {n.name: n for n in float_graph.nodes}   # float weights (the H may come from
    layers = [n for n in qgraph.nodes if n.name in hess   # a graph since quantized)
              and n.inputs[1].dtype == "int8"]   # int16 weights keep round-to-nearest
    def one(n) -> np.ndarray:
        wv, fw = n.inputs[1], fnodes[n.name].inputs[1].const
        h = hess[n.name]
        g = h.shape[0]
        cout = fw.shape[0]
        w = fw.reshape(g, cout // g, -1).astype(np.float64)
        s = np.asarray(wv.quant.scale, np.float64).reshape(g, cout // g)
        return _gptq(w, s, h).reshape(wv.const.shape)

    # layers are independent and their Cholesky factors and products release the GIL: a
    # few at once on worker threads (each layer's arithmetic as on one thread), the costliest
    # started first so that no large layer trails the others alone (ResNet-50's last
    # 1024-input layer, about half the rounding's CPU, came last in graph order)
    order = sorted(range(len(layers)), key=lambda i: -gptq_cost(layers[i]))
    with ThreadPoolExecutor(max(1, min(len(layers), workers()))) as pool:
        started = {i: pool.submit(one, layers[i]) for i in order}
        rounded = [started[i].result() for i in range(len(layers))]
    changed = {}
    for n, q in zip(layers, rounded):
        wv = n.inputs[1]
        changed[n.name] = int(np.count_nonzero(q != wv.const))
        wv.const = q
    log.info("gptq weight rounding: %d of %d weights differ from round-to-nearest",
             sum(changed.values()), sum(n.inputs[1].const.size for n in layers))
    return changed
