"""The golden model's own exact conv/fc accumulators (used by :mod:`tcc_compiler.quant.golden`),
written apart from the executor's (``numerics/accumulator.py``, ``numerics/gemm.py``,
``numerics/int8_gemm.py``), so a fault in those fails ``tccc run --check``.

Routes, each exact (specs/quantization.md, "Conv / FC epilogue": the accumulator is
``sum_k (x[k] - zp_x) w[k]``, the padding holding ``zp_x``):

* int8 input and weights, not depthwise (plain, windowed, grouped, fc): the *unshifted*
  sums ``S[m, n] = sum_k u[m, k] w[k, n]`` of ``u = x + 128`` (uint8; the padding ``zp_x +
  128``) by ONNX Runtime's ``MatMulInteger`` *without* a zero point, on a session of this
  module's own (probed here; one holding the weights packed for a GEMM of few rows run many
  times). The zero point's share is the same for every pixel, ``(zp_x + 128) colsum[n]``
  with ``colsum[n] = sum_k w[k, n]``, so ``acc = S - (zp_x + 128) colsum``; the epilogue
  reads ``wrap32(acc + bias)`` only, so the caller takes ``S`` with the bias
  :func:`folded_bias` ``= wrap32(bias - (zp_x + 128) colsum)``: ``wrap32(S + folded) =
  wrap32(acc + bias)`` (sums modulo 2**32). The executor feeds ONNX Runtime ``x + 128`` with
  the zero point and takes ``acc`` itself, so a fault in its zero point, patch matrix,
  packing or routine choice shows. Exact: integer arithmetic, ``|S| <= K 255 128 < 2**31``
  for ``K <=`` :data:`MAX_K` (larger K take the float64 route); the session is used only
  when it returns numpy's int64 sums on operands whose int16 pair sums saturate (x86's
  plain AVX2 kernel would, :func:`_probe`).
* the same without an exact ONNX Runtime kernel (or K above :data:`MAX_K`): ``S`` as one
  float64 BLAS GEMM of the same uint8 patch matrix: every partial sum is an integer of
  magnitude ``<= K 255 128 < 2**53`` (asserted), so exact in any order.
* int8 depthwise (the golden model's compiled fused kernels decline: a shortcut, raw int32 or
  two-slope output): ``acc`` itself as int32 multiply-adds of ``x - zp_x`` over the taps'
  strided views (``|acc| <= KH KW 255 128 < 2**31``).
* int16 input or int16 weights (mixed precision): ``acc`` as one float64 GEMM per group of
  ``x - zp_x``: every partial sum an integer below ``K max|x - zp| max|w| < 2**53``
  (asserted); the epilogue wraps (int16 input) or keeps it (int16 weights' 64-bit
  accumulator).

Why ONNX Runtime's integer kernel and not a float BLAS GEMM for the main route: the golden
model's CPU per image must not grow (``run --check``, bias correction). One thread, CPU ms per
call, this machine's AMD EPYC (AVX-512 VNNI), loaded, median of 15: 3136x576x64 ONNX Runtime
uint8 x int8 0.38 (without the zero point 0.32), float32 MLAS 1.03, numpy float32 2.28, int8
x int8 4.79; 196x2304x256 0.26, 0.26, 0.90, 1.89, 4.93 (/tmp/s17/goldacc/gemmb.py).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from tcc_compiler.numerics import jit

log = logging.getLogger(__name__)

#: Largest K whose unshifted int32 sums cannot overflow: ``K 255 128 < 2**31``.
MAX_K = (2 ** 31 - 1) // (255 * 128)
#: float64 holds every integer of magnitude <= 2**53 exactly.
F64_EXACT = 1 << 53
#: Most rows of a GEMM whose weights a session of its own holds packed in a model run many
#: times (``repeat``): below that, packing them on every call is most of the call (measured
#: for the executor's sessions, numerics/int8_gemm.py ``PACKED_MAX_ROWS``: 1x1280x1000 15.7
#: vs 44.8 us, 49x320x1280 45.5 vs 58.0).
PACKED_ROWS = 64


@dataclass(frozen=True)
class GoldWeights:
    """A conv/fc's int8 (or int16) OHWI weights as the golden model's accumulators take them.

    Attributes:
        w: the weights [O, KH, KW, C/group] (OHWI), as given.
        group: number of groups.
        dw: one input and one output channel per group (depthwise).
        mats: per group, int8 [KH*KW*C/group, O/group] C-contiguous (K order KH, KW, C); empty
            for depthwise and int16 weights.
        colsum: int64 [O]: each output channel's sum of its weights (:func:`folded_bias`).
    """

    w: np.ndarray
    group: int
    dw: bool
    mats: tuple[np.ndarray, ...]
    colsum: np.ndarray


def prepare_weights(w: np.ndarray, group: int = 1) -> GoldWeights:
    """The golden model's form of the OHWI weights ``w`` [O, KH, KW, C/group] (int8/int16).

    Raises:
        ValueError: O not divisible by ``group``."""
    o, kh, kw, cg = w.shape
    if group < 1 or o % group:
        raise ValueError(f"{o} output channels not divisible by {group} groups")
    og = o // group
    dw = cg == 1 and og == 1
    mats = () if dw or w.dtype != np.int8 else tuple(
        np.ascontiguousarray(w[g * og:(g + 1) * og].reshape(og, -1).T) for g in range(group))
    return GoldWeights(w, group, dw, mats, w.reshape(o, -1).sum(axis=1, dtype=np.int64))


def folded_bias(bias, zp_x: int, gw: GoldWeights) -> np.ndarray:
    """int32 [O] ``wrap32(bias - (zp_x + 128) colsum)``: the bias to add to an unshifted
    accumulator (:attr:`Accumulator.folded`) for ``wrap32(acc + bias)`` (module docstring)."""
    b = np.asarray(bias, np.int64) - (int(zp_x) + 128) * gw.colsum
    return b.astype(np.int32)   # two's complement: modulo 2**32


class Accumulator:
    """A conv/fc's accumulator routine for one input shape: ``routine(x)`` for int8/int16
    ``x`` [H, W, C] (NHWC, any strides) gives [OH, OW, O] (:attr:`shape`) int32 (or exact
    integers in int64/float64 on the wide routes).

    Attributes:
        folded: the routine gives the unshifted sums ``S`` of ``x + 128``: add
            :func:`folded_bias`, not the bias (module docstring); else ``acc`` itself.
        shape: (OH, OW, O).
    """

    __slots__ = ("run", "folded", "shape")

    def __init__(self, run, folded: bool, shape: tuple[int, int, int]):
        self.run, self.folded, self.shape = run, folded, shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


def _out_len(n: int, k: int, s: int, d: int) -> int:
    return (n - ((k - 1) * d + 1)) // s + 1


def accumulator(shape: tuple, dtype, zp_x: int, gw: GoldWeights, strides=(1, 1),
                pads=(0, 0, 0, 0), dilations=(1, 1), repeat: bool = False) -> Accumulator:
    """The accumulator routine of a conv (fc: defaults) for inputs of ``shape`` (H, W, C) and
    ``dtype`` (int8/int16), zero point ``zp_x``, weights ``gw`` (:func:`prepare_weights`).

    Args:
        strides, dilations: (h, w). pads: (top, left, bottom, right).
        repeat: the routine will run on many inputs: a GEMM of at most
            :data:`PACKED_ROWS` rows gets a session holding its weights packed.

    Raises:
        ValueError: the input's channels do not match the weights, or the window does not fit.
    """
    h, w, c = shape
    o, kh, kw, cg = gw.w.shape
    if c != cg * gw.group:
        raise ValueError(f"input has {c} channels, weights expect {cg * gw.group}")
    top, left, bottom, right = (int(p) for p in pads)
    oh = _out_len(h + top + bottom, kh, int(strides[0]), int(dilations[0]))
    ow = _out_len(w + left + right, kw, int(strides[1]), int(dilations[1]))
    if oh < 1 or ow < 1:
        raise ValueError(f"window {kh}x{kw} does not fit the padded input "
                         f"{(h + top + bottom, w + left + right)}")
    geo = ((kh, kw), tuple(int(s) for s in strides), tuple(int(d) for d in dilations),
           (top, left, bottom, right), oh, ow)
    if np.dtype(dtype) != np.int8 or gw.w.dtype != np.int8:
        return Accumulator(_wide(np.dtype(dtype), zp_x, gw, geo), False, (oh, ow, o))
    if gw.dw:
        return Accumulator(_depthwise(zp_x, gw, geo), False, (oh, ow, o))
    return Accumulator(_gemm(c, zp_x, gw, geo, repeat), True, (oh, ow, o))


# ------------------------------------------------------------------------ patch matrices

def _patches_np(xs: np.ndarray, kernel, strides, dilations, oh: int, ow: int) -> np.ndarray:
    """[OH*OW, KH*KW*C] patch matrix (K order KH, KW, C) of an already padded [H', W', C]
    array, ``xs``'s dtype: one strided copy per tap."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    c = xs.shape[2]
    cols = np.empty((oh, ow, kh, kw, c), xs.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xs[i * dh:i * dh + (oh - 1) * sh + 1:sh,
                                  j * dw:j * dw + (ow - 1) * sw + 1:sw]
    return cols.reshape(oh * ow, kh * kw * c)


def _padded(x: np.ndarray, fill, pads, dtype) -> np.ndarray:
    """``x`` as ``dtype`` [H + top + bottom, W + left + right, C], ``fill`` in the padding."""
    top, left, bottom, right = pads
    h, w, c = x.shape
    xs = np.full((h + top + bottom, w + left + right, c), fill, dtype)
    xs[top:top + h, left:left + w] = x
    return xs


def _cols_u8(c: int, zpu: int, geo):
    """``cols(x)``: the uint8 patch matrix [OH*OW, KH*KW*C] of ``u = x + 128`` (the padding
    ``zpu``) for int8 ``x`` [H, W, C]: a plain 1x1 conv's is ``x`` itself (``x ^ 0x80``); the
    others by the golden model's compiled kernel (:func:`~tcc_compiler.quant.golden_jit.
    patches`), or numpy without it."""
    kernel, strides, dilations, pads, oh, ow = geo
    kh, kw = kernel
    if kernel == (1, 1) and strides == (1, 1) and not any(pads):
        def plain(x: np.ndarray) -> np.ndarray:
            return np.bitwise_xor(x.view(np.uint8), np.uint8(0x80)).reshape(oh * ow, c)
        return plain
    k = jit.kernel_module("tcc_compiler.quant.golden_jit")
    if k is not None:
        args = (zpu, *strides, *dilations, pads[0], pads[1], kh, kw, ow)

        def compiled(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh * ow, kh * kw * c), np.uint8)
            k.patches(np.ascontiguousarray(x), *args, out)
            return out
        return compiled

    def numpy_cols(x: np.ndarray) -> np.ndarray:
        u = np.bitwise_xor(x.view(np.uint8), np.uint8(0x80))
        return _patches_np(_padded(u, zpu, pads, np.uint8), kernel, strides, dilations, oh, ow)
    return numpy_cols


# ------------------------------------------------------------------------ routes

def _gemm(c: int, zp_x: int, gw: GoldWeights, geo, repeat: bool):
    """The unshifted sums of an int8 GEMM conv (one GEMM per group), int32 [OH, OW, O]."""
    o, kh, kw, cg = gw.w.shape
    oh, ow = geo[4], geo[5]
    zpu = int(zp_x) + 128
    if not 0 <= zpu <= 255:
        raise ValueError(f"input zero point {zp_x} outside int8")
    cols = _cols_u8(cg, zpu, geo)
    mms = [_matmul(m, repeat and oh * ow <= PACKED_ROWS) for m in gw.mats]
    if gw.group == 1:
        mm = mms[0]

        def one(x: np.ndarray) -> np.ndarray:
            return mm(cols(x)).reshape(oh, ow, o)
        return one
    og = o // gw.group

    def grouped(x: np.ndarray) -> np.ndarray:
        out = np.empty((oh, ow, o), np.int32)
        for g, mm in enumerate(mms):
            part = mm(cols(np.ascontiguousarray(x[:, :, g * cg:(g + 1) * cg])))
            out[:, :, g * og:(g + 1) * og] = part.reshape(oh, ow, og)
        return out
    return grouped


def _matmul(b: np.ndarray, packed: bool):
    """``mm(a)``: exact ``a @ b`` (``a`` uint8 [M, K], ``b`` int8 [K, N]) as int32 (int64
    for K above :data:`MAX_K`): this module's ONNX Runtime session (one holding ``b`` packed
    when ``packed``), else one float64 GEMM."""
    k = b.shape[0]
    if k <= MAX_K and _session() is not None:
        if packed:
            run = _packed(b)
            if run is not None:
                return run
        return lambda a: _session()(a, b)
    bound = k * 255 * 128
    assert bound < F64_EXACT, f"K={k}: float64 GEMM not exact"
    bf: list = []

    def f64(a: np.ndarray) -> np.ndarray:
        if not bf:
            bf.append(b.astype(np.float64))
        y = a.astype(np.float64) @ bf[0]
        return y.astype(np.int32 if k <= MAX_K else np.int64)
    return f64


def _depthwise(zp_x: int, gw: GoldWeights, geo):
    """``acc`` of an int8 depthwise conv: int32 ``x - zp_x`` (padding 0) multiplied by each
    tap over its strided view, summed in int32 (exact: ``|acc| <= KH KW 255 128``)."""
    kernel, (sh, sw), (dh, dw), pads, oh, ow = geo
    taps = gw.w[:, :, :, 0].transpose(1, 2, 0).astype(np.int32)   # [KH, KW, C]
    zp = np.int32(zp_x)

    def run(x: np.ndarray) -> np.ndarray:
        xs = _padded(np.subtract(x, zp, dtype=np.int32), 0, pads, np.int32)
        acc = np.zeros((oh, ow, x.shape[2]), np.int32)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                v = xs[i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                acc += v * taps[i, j]
        return acc
    return run


def _wide(dtype, zp_x: int, gw: GoldWeights, geo):
    """``acc`` of an int16 input or int16 weights: float64 GEMMs of ``x - zp_x`` (padding 0)
    per group, float64 [OH, OW, O] holding exact integers (module docstring)."""
    kernel, strides, dilations, pads, oh, ow = geo
    o, kh, kw, cg = gw.w.shape
    xmax = int(np.iinfo(dtype).max) - int(np.iinfo(dtype).min)
    wmax = int(np.abs(gw.w.astype(np.int64)).max(initial=0))
    assert kh * kw * cg * xmax * wmax < F64_EXACT, "float64 accumulator not exact"
    og = o // gw.group
    mats = [np.ascontiguousarray(gw.w[g * og:(g + 1) * og].reshape(og, -1).T, np.float64)
            for g in range(gw.group)]

    def run(x: np.ndarray) -> np.ndarray:
        xs = _padded(x.astype(np.float64) - float(zp_x), 0.0, pads, np.float64)
        out = np.empty((oh, ow, o), np.float64)
        for g, m in enumerate(mats):
            cols = _patches_np(xs[:, :, g * cg:(g + 1) * cg], kernel, strides, dilations,
                               oh, ow)
            out[:, :, g * og:(g + 1) * og] = (cols @ m).reshape(oh, ow, og)
        return out
    return run


# ------------------------------------------------------------------------ ONNX Runtime

_lock = threading.Lock()
_state: dict = {"session": False, "forks": 0}   # False: not built yet; None: unusable


def _model(b: np.ndarray | None):
    """Serialized ONNX ``y = MatMulInteger(a, b)`` (uint8 a [M, K], int8 b [K, N], no zero
    points, int32 y); ``b`` a constant when given (packed once by ONNX Runtime)."""
    from onnx import TensorProto, helper, numpy_helper

    k = "K" if b is None else b.shape[0]
    ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k])]
    inits = []
    if b is None:
        ins.append(helper.make_tensor_value_info("b", TensorProto.INT8, ["K", "N"]))
    else:
        inits.append(numpy_helper.from_array(b, "b"))
    out = helper.make_tensor_value_info("y", TensorProto.INT32, ["M", "N"])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
                              "golden_gemm", ins, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]
                             ).SerializeToString()


def _open(b: np.ndarray | None):
    """``run(a, b) -> int32`` over a one-thread ONNX Runtime session of :func:`_model`
    (``b`` ignored when it is the session's constant), through the session's binding when
    that gives the public call's result; None when ONNX Runtime cannot build it."""
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(_model(b), so, providers=["CPUExecutionProvider"])
    except Exception as exc:   # ORT raises its own exception types
        log.info("golden model: ONNX Runtime MatMulInteger unavailable (%s)", exc)
        return None
    inner = getattr(sess, "_sess", None)
    if b is None:
        def run(a, bb):
            return sess.run(None, {"a": a, "b": bb})[0]

        def fast(a, bb):
            return inner.run(["y"], {"a": a, "b": bb}, None)[0]
    else:
        def run(a, _bb=None):
            return sess.run(None, {"a": a})[0]

        def fast(a, _bb=None):
            return inner.run(["y"], {"a": a}, None)[0]
    if inner is not None:
        try:
            if _probe(fast, b):
                return fast
        except Exception as exc:   # ORT raises its own exception types
            log.debug("golden model: ONNX Runtime binding unusable (%s)", exc)
    return run


def _probe(run, b: np.ndarray | None) -> bool:
    """Whether ``run(a, b)`` gives numpy's int64 ``a @ b`` on operands whose int16 pair sums
    saturate (255 x -128 and 255 x 127 pairs) and whose sums pass 2**24 (``b`` None: probe
    weights, K 1200)."""
    rng = np.random.default_rng(7)
    if b is None:
        k = 1200
        bb = np.full((k, 4), -128, np.int8)
        bb[:, 1] = 127
        bb[1::2, 2] = 127
        bb[:, 3] = rng.integers(-128, 128, k)
    else:
        bb, k = b, b.shape[0]
    a = np.full((5, k), 255, np.uint8)
    a[1, 1::2] = 0
    a[2, ::2] = 0
    a[3] = rng.integers(0, 256, k)
    a[4] = 128
    got = run(a, bb)
    return got.dtype == np.int32 and np.array_equal(got, a.astype(np.int64) @ bb.astype(np.int64))


def _session():
    """This process's probed ``run(a, b)`` (built on first use), or None: no exact kernel."""
    if _state["session"] is False:
        with _lock:
            if _state["session"] is False:
                run = _open(None)
                if run is not None and not _probe(run, None):
                    log.info("golden model: ONNX Runtime's int8 GEMM is not exact on this "
                             "CPU: float64 GEMMs")
                    run = None
                _state["session"] = run
    return _state["session"]


def _packed(b: np.ndarray):
    """``run(a)`` through a session holding ``b`` packed (probed on ``b``), falling back to
    :func:`_session` in a forked child (ONNX Runtime's state does not survive a fork); or
    None when it cannot be made exact."""
    run = _open(b)
    if run is None or not _probe(run, b):
        return None
    born = _state["forks"]

    def packed(a: np.ndarray) -> np.ndarray:
        if _state["forks"] != born:
            return _session()(a, b)
        return run(a)
    return packed


def _forget() -> None:
    """A forked child builds its own session (:func:`_session`), under a lock of its own: the
    parent's may have been held by another thread at the fork, which the child does not
    have, so its copy would never be released."""
    global _lock
    _lock = threading.Lock()
    _state["session"] = False
    _state["forks"] += 1


if hasattr(os, "register_at_fork"):   # POSIX; elsewhere workers start fresh (spawn)
    os.register_at_fork(after_in_child=_forget)
