"""Quantize a float graph IR to INT8 (in place).

Scheme (specs/quantization.md):
* weights: int8 symmetric per output channel, ``s_w[o] = max|W[o]| / 127`` (zero point 0);
* biases: int32 with ``s_b[o] = s_x * s_w[o]``, zero point 0; a channel whose bias would
  overflow int32 gets a larger weight scale (ONNX Runtime's rule, :func:`bias_safe_weight_scales`);
* activations: int8 asymmetric per tensor from the calibrated range widened to include 0:
  ``s = (hi - lo) / 255``, ``zp = clamp(round(-128 - lo / s), -128, 127)``; a constant
  activation (hi = lo = 0) gets s = 1, zp = 0;
* max-pool, average-pool, nearest-resize and view outputs share their input's parameters (max
  commutes with the affine map, a repeat copies; an average never leaves its inputs' range, so
  it is never clipped), except a global average pool whose pooled range, with
  :data:`GAP_HEADROOM`, is at most half its input's (:func:`gap_params`): it is requantized to
  its own, finer range (a squeeze-excitation vector would otherwise get a few int8 levels);
* the inputs and output of a channel concat or slice share one set (quant/groups.py), so the
  op moves bytes and does no arithmetic (int16 symmetric for the whole group when its
  producers are promoted together, quant/precision.py);
* a graph output produced by a conv/fc stays int32 (acc + bias), dequantized by the host with
  ``s_x * s_w[o]`` per channel: no rounding of the logits.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op, VIEW_OPS
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.softmax import OUT_SCALE as SOFTMAX_OUT_SCALE
from tcc_compiler.numerics.softmax import OUT_ZERO_POINT as SOFTMAX_OUT_ZP
from tcc_compiler.quant.calibrate_run import workers
from tcc_compiler.quant.groups import shared_params

log = logging.getLogger(__name__)


def activation_params(lo: float, hi: float) -> QuantParams:
    """Per-tensor int8 parameters for a real range [lo, hi] (widened to include 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return QuantParams(np.float64(1.0), np.int64(0))
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return QuantParams(np.float64(scale), np.int64(zp))


INT16_MAX = 32767
#: An int16 tensor's range is its observed one times this (specs/quantization.md, "Mixed
#: precision"): one of its 16 bits buys room for inputs beyond the calibration photos' (dark
#: photos drive MobileNetV3's squeeze-excitation and last depthwise outputs 1.2-1.4x past
#: them), at a rounding noise still about 84 dB under full scale.
INT16_HEADROOM = 2.0


def activation_params_int16(lo: float, hi: float,
                            bounds: tuple[float, float] = (-np.inf, np.inf)) -> QuantParams:
    """Per-tensor int16 parameters for a real range [lo, hi]: symmetric, zero point 0,
    ``s = min(INT16_HEADROOM * max(|lo|, |hi|), max(|b_lo|, |b_hi|)) / 32767`` with
    ``bounds = (b_lo, b_hi)`` the fused activation's output bounds (a Relu6 output never
    passes 6); s = 1 for an all-zero tensor."""
    amax = INT16_HEADROOM * max(abs(float(lo)), abs(float(hi)))
    amax = min(amax, max(abs(float(bounds[0])), abs(float(bounds[1]))))
    return QuantParams(np.float64(amax / INT16_MAX if amax > 0 else 1.0), np.int64(0))


def quantize_weights(w: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of a weight tensor [O, ...]:
    ``s[o] = max|W[o]| / qmax``, ``q = clip(round(w / s), -qmax, qmax)``.

    Args:
        w: float weights [O, ...]. qmax: 127 (int8) or 32767 (int16 weights).

    Returns:
        (int8 weights, int16 for ``qmax`` above 127, of the same shape; float64 scales [O]);
        an all-zero channel gets scale 1 and zero weights (no division by 0).
    """
    w2 = w.reshape(w.shape[0], -1)
    got = _quantize_compiled(w2, qmax)
    if got is not None:
        return got[0].reshape(w.shape), got[1]
    # |w| max in the input's own dtype: exact (float64 holds every float32), half the bytes
    amax = np.abs(w2).max(axis=1).astype(np.float64)
    scale = np.where(amax > 0, amax / float(qmax), 1.0)
    r = np.divide(w2, scale[:, None], dtype=np.float64)     # w / s in float64, no w copy
    q = np.round(r)
    if qmax == 127:         # int8: fixed-weight channels keep their exact power-of-two grid
        new = exact_grid_scales(w2, scale, amax, np.all(r == q, axis=1))
        ch = np.flatnonzero(new != scale)   # only those channels change: quantize them anew
        if ch.size:
            q[ch] = np.round(np.divide(w2[ch], new[ch, None], dtype=np.float64))
            scale = new
    np.clip(q, -qmax, qmax, out=q)
    return q.reshape(w.shape).astype(np.int8 if qmax <= 127 else np.int16), scale


def _quantize_compiled(w2: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`quantize_weights` of the float weights ``w2`` [O, K] by the compiled kernels
    (:mod:`tcc_compiler.quant.weights_jit`: the same ``max |w|``, levels and scales, in two
    passes per row), or None: kernels unavailable or not loaded yet (a compile without
    calibration does not load numba, whose import and first call cost about 0.5 s of CPU, for
    the 0.1 s the kernels save on ResNet-50), or weights that are not finite float32/float64
    (the numpy form decides those)."""
    kern = jit.kernel_module("tcc_compiler.quant.weights_jit") if jit.loaded() else None
    if kern is None or w2.dtype not in (np.float32, np.float64) or w2.size == 0:
        return None
    w2 = np.ascontiguousarray(w2)
    amax = np.empty(w2.shape[0])
    kern.row_amax(w2, amax)
    if not np.all(np.isfinite(amax)):
        return None
    scale = np.where(amax > 0, amax / float(qmax), 1.0)
    step = np.zeros(len(amax))
    if qmax == 127:   # exact_grid_scales' step for every non-zero channel
        live = amax > 0
        step[live] = 2.0 ** -np.floor(np.log2(127.0 / amax[live]))
    q = np.empty(w2.shape, np.int8 if qmax <= 127 else np.int16)
    kern.quantize_rows(w2, scale, step, float(qmax), q)
    return q, scale


def exact_grid_scales(w: np.ndarray, scale: np.ndarray, amax: np.ndarray | None = None,
                      whole: np.ndarray | None = None) -> np.ndarray:
    """Per-channel ``scale`` (float64 [O]) of weights ``w`` (float [O, K]), with each
    channel that ``amax / 127`` does not represent exactly but a power-of-two step does given
    that step: the finest ``2**-j`` with ``amax * 2**j <= 127`` when every weight of the
    channel is a multiple of it. Fixed-weight convs, e.g. YOLOv8's DFL expectation (weights
    0..15: step 1/8 stores them exactly, ``15 / 127`` rounds 1 to 8/8.47), keep their exact
    values; trained or seeded float weights are never all on such a grid (their scale is
    unchanged).

    ``amax`` (float64 [O], ``max |w|`` per channel) and ``whole`` (bool [O], every
    float64 ``w / scale`` of the channel a whole number) may be given when the caller has
    them (:func:`quantize_weights`: two passes over the weights fewer); the result is the
    same."""
    if amax is None:
        amax = np.abs(w).max(axis=1).astype(np.float64)
    if whole is None:
        r = np.divide(w, scale[:, None], dtype=np.float64)
        whole = np.all(r == np.round(r), axis=1)
    todo = (amax > 0) & ~whole
    if not todo.any():
        return scale
    step = 2.0 ** -np.floor(np.log2(127.0 / amax[todo]))
    r = np.divide(w[todo], step[:, None], dtype=np.float64)
    exact = np.all(r == np.round(r), axis=1)
    out = scale.copy()
    out[np.flatnonzero(todo)[exact]] = step[exact]
    return out


#: ONNX Runtime's safety factor when it raises a weight scale for the bias (see below).
BIAS_SCALE_EPS = 1.0001
INT32_MAX = 2 ** 31 - 1


def bias_safe_weight_scales(b: np.ndarray, s_x: float, s_w: np.ndarray) -> np.ndarray:
    """Raise per-channel weight scales whose bias would not fit in int32.

    A channel needs ``|b[o]| / (s_x * s_w[o]) <= 2**31 - 1``; when it does not (tiny weights,
    large bias), its scale becomes ``s_w[o] = 1.0001 * |b[o]| / (2**31 - 1) / s_x``, the rule of
    ONNX Runtime's ``_adjust_weight_scale_for_int32_bias`` (quantization/base_quantizer.py,
    ``bias_smallest_valid_scale = 1.0001 * 2 * absmax / (2**32 - 2)``).

    Args:
        b: float bias [O]. s_x: input scale. s_w: float64 weight scales [O] (> 0).

    Returns:
        float64 scales [O], each >= the given one.
    """
    need = BIAS_SCALE_EPS * np.abs(b.astype(np.float64)) / INT32_MAX / float(s_x)
    return np.maximum(s_w, need)


def quantize_weights_with_scale(w: np.ndarray, scale: np.ndarray,
                                qmax: int = 127) -> np.ndarray:
    """``clip(round(w / scale[o]), -qmax, qmax)`` per output channel -> int8 (int16 for
    ``qmax`` above 127), the shape of ``w``."""
    w64 = w.astype(np.float64)
    q = np.round(w64 / scale.reshape((-1,) + (1,) * (w.ndim - 1)))
    return np.clip(q, -qmax, qmax).astype(np.int8 if qmax <= 127 else np.int16)


def _bias_int32(b: np.ndarray, s_b: np.ndarray) -> np.ndarray:
    q = np.round(b.astype(np.float64) / s_b)
    return np.clip(q, -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32)


def is_fixed(v: Value) -> bool:
    """True when a float value carries parameters fixed by a pre-quantized model (QDQ import,
    tcc_compiler/frontend/qdq_import.py): the quantizer takes them as they are."""
    return v.quant is not None and v.dtype == "float32"


def _raw_int32(node) -> bool:
    """A conv/fc output stays raw int32 when only host ops read it, nothing is fused into it
    (no shortcut, activation or per-channel clamp)
    and the imported model does not fix its quantization (a graph output that also feeds an
    NPU op stays int8, or its consumer got a per-channel input scale)."""
    out = node.output
    return all(u.op in HOST_OPS for u, _ in out.uses) and node.input(3) is None \
        and node.input(5) is None and node.attrs.act.kind.value == "none" \
        and not is_fixed(out)


def _shares_input_params(node) -> bool:
    """Outputs that reuse their input's parameters: views, max-pool and nearest resize always
    (max and pixel repeats commute with the affine map); average pools unless the imported
    model fixes their output (an average lies within its inputs' range, so reusing them never
    clips); a global average pool may instead get its own range (:func:`gap_params`)."""
    if node.op in VIEW_OPS or node.op in (Op.MAXPOOL, Op.RESIZE, Op.SHUFFLE):
        return True
    return node.op in (Op.GAP, Op.AVGPOOL) and not is_fixed(node.output)


#: A global average pool's own range is its calibrated range scaled by this factor about 0
#: (pooled features move with the image domain: a dark photo's reached 1.6x the calibrated
#: maximum on ResNet-18, specs/quantization.md "Pooling").
GAP_HEADROOM = 2.0
#: ... and it is used only when it is at most this fraction of the input's span (a step at
#: least twice finer than sharing the input's; otherwise sharing, which never clips, wins).
GAP_MAX_SPAN = 0.5


def gap_params(node, ranges: dict[str, tuple[float, float]]) -> QuantParams | None:
    """Own int8 parameters of a global average pool's output, or None to share its input's.

    A squeeze-excitation block pools a feature map whose range is set by a few large pixels;
    the per-channel means span a fraction of it, so the input's step leaves the pooled vector
    only a few levels (issue #13: tf_efficientnetv2_s at 2.8 dB). The pool then requantizes
    (POOL_CFG's multiplier ``s_x / (s_y * n)``, no extra cost) to the calibrated range of its
    output widened by :data:`GAP_HEADROOM` about 0 and cut to the input's representable range,
    when that span is at most :data:`GAP_MAX_SPAN` of the input's (ONNX Runtime's
    QLinearGlobalAveragePool and TFLite's int8 MEAN likewise give the output its own scale).

    Args:
        node: a GAP node whose input is quantized (int8; an int16 input keeps sharing).
        ranges: calibrated {value name: (lo, hi)}; without the output's range: None.
    """
    x, out = node.inputs[0], node.output
    if node.op is not Op.GAP or x.dtype != "int8" or is_fixed(out) or out.name not in ranges:
        return None
    s, zp = float(x.quant.scale), int(x.quant.zero_point)
    x_lo, x_hi = s * (-128 - zp), s * (127 - zp)
    lo, hi = ranges[out.name]
    lo = max(GAP_HEADROOM * min(float(lo), 0.0), x_lo)
    hi = min(GAP_HEADROOM * max(float(hi), 0.0), x_hi)
    if hi - lo > GAP_MAX_SPAN * (x_hi - x_lo):
        return None
    return activation_params(lo, hi)


def fixed_ranges(graph: Graph) -> dict[str, tuple[float, float]]:
    """{name: (lo, hi)} of the activations whose parameters a pre-quantized model fixes:
    ``s * (-128 - zp)``, ``s * (127 - zp)`` (the range :func:`activation_params` maps back to
    the same ``s`` and ``zp``)."""
    out = {}
    for v in graph.values():
        if is_fixed(v) and not v.is_const and not v.quant.per_channel:
            s, zp = float(v.quant.scale), int(v.quant.zero_point)
            out[v.name] = (s * (-128 - zp), s * (127 - zp))
    return out


def ranges_needed(graph: Graph) -> list[str]:
    """Names of the values :func:`quantize_graph` needs a calibrated range for: the input and
    the int8 node outputs (a global average pool's too: :func:`gap_params` may give it its
    own), minus those a pre-quantized model fixes (graph order)."""
    names = [v.name for v in graph.inputs if not is_fixed(v)]
    for node in graph.nodes:
        if node.op in HOST_OPS or is_fixed(node.output) or (
                _shares_input_params(node) and node.op is not Op.GAP):
            continue
        if node.op in (Op.CONV, Op.FC) and _raw_int32(node):
            continue
        names.append(node.output.name)
    return names


def _weights_ahead(graph: Graph, int16_weights) -> dict[str, Future]:
    """:func:`quantize_weights` of every conv/fc whose weights tccc quantizes (not fixed),
    started on worker threads: it depends on the weights alone (numpy releases the GIL on
    its passes over them). {node name: future of (levels, scales)}."""
    todo = [n for n in graph.nodes if n.op in (Op.CONV, Op.FC) and not is_fixed(n.inputs[1])]
    if len(todo) < 2 or workers() < 2:
        return {}
    pool = ThreadPoolExecutor(workers())
    out = {n.name: pool.submit(quantize_weights, n.inputs[1].const,
                               INT16_MAX if n.name in int16_weights else 127) for n in todo}
    pool.shutdown(wait=False)
    return out


def _quantize_conv_weights(node, x: Value, wide: bool = False,
                           ahead: Future | None = None) -> None:
    """int8 weights (per output channel; int16 when ``wide``) and int32 bias of a conv/fc, in
    place: with the imported model's weight scales when fixed (int8 range -128..127 as
    given), else tccc's symmetric scheme with the bias-safe scale rule (``ahead``: the
    :func:`quantize_weights` result, computed ahead, :func:`_weights_ahead`)."""
    wv, bv = node.inputs[1], node.inputs[2]
    qmax = INT16_MAX if wide and not is_fixed(wv) else 127
    if is_fixed(wv):
        s_w = np.asarray(wv.quant.scale, np.float64)
        w64 = wv.const.astype(np.float64) / s_w.reshape((-1,) + (1,) * (wv.const.ndim - 1))
        wq = np.clip(np.round(w64), -128, 127).astype(np.int8)
    else:
        wq, s_w = ahead.result() if ahead is not None else quantize_weights(wv.const, qmax)
        s_safe = bias_safe_weight_scales(bv.const, float(x.quant.scale), s_w)
        if np.any(s_safe > s_w):
            log.info("%s: weight scale raised on %d channel(s) so the bias fits int32",
                     node.name, int(np.count_nonzero(s_safe > s_w)))
            s_w, wq = s_safe, quantize_weights_with_scale(wv.const, s_safe, qmax)
    wv.const, wv.dtype = wq, "int16" if qmax > 127 else "int8"
    wv.quant = QuantParams(s_w, np.zeros(len(s_w), np.int64), axis=0)
    s_b = float(x.quant.scale) * s_w
    bv.const, bv.dtype = _bias_int32(bv.const, s_b), "int32"
    bv.quant = QuantParams(s_b, np.zeros(len(s_b), np.int64), axis=0)


def quantize_graph(graph: Graph, ranges: dict[str, tuple[float, float]],
                   int16: dict[str, tuple[float, float]] | None = None,
                   int16_weights=()) -> Graph:
    """Attach quantization parameters and integer constants to every value.

    Args:
        graph: legalized float graph (NPU ops, views, host ops at the end); float values
            with ``quant`` set keep those parameters (:func:`is_fixed`).
        ranges: calibrated {value name: (lo, hi)} for every name :func:`ranges_needed` lists.
        int16: {value name: (lo, hi)} of the layer outputs made int16 (quant/precision.py
            decides which may be; the range is the observed min/max), symmetric
            (:func:`activation_params_int16`); the pools and views after them follow, and a
            channel concat/slice group with a member named here is int16 as a whole, one
            range over its named members (quant/groups.py).
        int16_weights: names of the conv/fc nodes whose weights are int16 (symmetric per
            output channel, ``s_w = max|W[o]| / 32767``; quant/precision.py decides which may
            be: not a raw int32 output, not fixed by a pre-quantized model).

    Returns:
        The same graph, quantized: activation values int8 (int16 where asked, int32 for raw
        conv outputs), conv/fc weight constants int8 with per-channel QuantParams (axis 0),
        bias int32.

    Raises:
        InternalError: a value without a calibrated range.
    """
    def rng(v: Value) -> tuple[float, float]:
        if v.name not in ranges:
            raise InternalError(f"value '{v.name}' has no calibrated range")
        return ranges[v.name]

    shared = shared_params(graph, ranges, activation_params, int16, activation_params_int16)
    ahead = _weights_ahead(graph, int16_weights)
    for v in graph.inputs:
        if id(v) in shared:   # tied to a channel concat/slice (quant/groups.py)
            v.quant = shared[id(v)][0]
        elif not is_fixed(v):
            v.quant = activation_params(*rng(v))
        v.dtype = "int8"
    for node in graph.nodes:
        out = node.output
        if node.op in HOST_OPS:
            continue
        x = node.inputs[0]
        if node.op in CHANNEL_OPS:
            out.quant, out.dtype = shared[id(out)]
            continue
        if _shares_input_params(node):
            own = gap_params(node, ranges) if id(out) not in shared else None
            out.quant, out.dtype = (own, "int8") if own is not None else (x.quant, x.dtype)
            continue
        if node.op in (Op.CONV, Op.FC):
            _quantize_conv_weights(node, x, node.name in int16_weights, ahead.get(node.name))
            if _raw_int32(node):
                s_b = node.inputs[2].quant.scale
                out.dtype = "int32"
                out.quant = QuantParams(s_b, np.zeros(len(s_b), np.int64), axis=1)
                continue
        if id(out) in shared:   # a producer writing into a channel concat's buffer
            out.quant, out.dtype = shared[id(out)]
            continue
        if node.op is Op.GROUP_SOFTMAX:   # the NPU softmax's fixed output (numerics/softmax)
            out.quant = QuantParams(np.float64(SOFTMAX_OUT_SCALE), np.int64(SOFTMAX_OUT_ZP))
            out.dtype = "int8"
            continue
        wide = int16 is not None and out.name in int16
        if not is_fixed(out):
            lo, hi = int16[out.name] if wide else rng(out)
            # a node without a fused activation (a lookup table...) is unbounded: its observed
            # range must not double as the bounds that would cancel an int16 range's headroom
            a_lo, a_hi = getattr(getattr(node.attrs, "act", None), "bounds",
                                 lambda: (-np.inf, np.inf))()
            out.quant = (activation_params_int16(max(lo, a_lo), min(hi, a_hi), (a_lo, a_hi))
                         if wide else activation_params(max(lo, a_lo), min(hi, a_hi)))
        out.dtype = "int16" if wide else "int8"
    graph.meta["quantized"] = True
    return graph
