"""Exact int8 GEMM through ONNX Runtime's integer kernel (``MatMulInteger``), the fast path of
the conv accumulators (:mod:`tcc_compiler.numerics.gemm`) for the executor (the golden model
opens its own sessions, ``quant/golden_gemm.py``).

``MatMulInteger(a, b, a_zero_point)`` with ``a`` uint8 [M, K], ``b`` int8 [K, N] returns the
int32 ``sum_k (a[m, k] - za) * b[k, n]``. The arithmetic is integer, so the result is exact
whenever the kernel forms every product exactly and the true sum fits in int32 (two's
complement sums are exact modulo 2**32 in any order, and |sum| <= K * 255 * 128 < 2**31 for
K <= 65,535). ONNX Runtime's x86 kernels for AVX-512 VNNI / AVX-VNNI / AMX multiply-accumulate
into int32 exactly; its plain AVX2 kernel (``vpmaddubsw``) saturates pairs of products at int16
(ORT's documentation, "Quantize ONNX models", x86-64 saturation note) and would be wrong. So
the kernel is *probed* once per process with operands whose pair sums pass int16 either way
(255 * 127 * 2 and 255 * -128 * 2, also with the zero point in play) and at a K that needs
more than int16: a kernel that returns anything but the exact sums is never used (the float32
BLAS path of :mod:`~tcc_compiler.numerics.gemm` runs instead; logged at INFO).

One ONNX Runtime session with symbolic M, K, N serves every call; it runs on one thread in
the calling thread (``intra_op_num_threads=1``, as the executor's BLAS: parallelism comes from
processes, see :mod:`tcc_compiler.sim.blas`). Measured on this machine's Sapphire Rapids
(AMX-INT8), per-process CPU time, loaded: 3136x576x64 1.6 ms against 4.4 ms for float32
OpenBLAS (one thread), 196x2304x256 0.5 ms against 3.2 ms. ``b`` is packed on each call, so
for a small GEMM float32 is faster: :data:`MIN_MACS`.
"""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace

import numpy as np

log = logging.getLogger(__name__)

#: Fewest rows M, and fewest multiply-accumulates M*K*N, for which the integer kernel is used:
#: below them packing ``b`` costs more than the float32 GEMM saves. Measured through
#: :func:`~tcc_compiler.numerics.gemm.conv_accumulate_f` (whole path, one BLAS thread, CPU us,
#: integer vs float32) on this machine's AMD EPYC (AVX-512 VNNI), loaded: 1x1280x64 8.6 vs
#: 12.0, 49x320x64 9.1 vs 24.2, 16x576x64 8.5 vs 19.1, 1x1280x1000 50 vs 62, 8x64x16 6.6 vs
#: 4.7, 2x32x8 6.3 vs 4.3 (the Sapphire Rapids machine before favoured float32 up to about
#: 2**20 MACs and for a single row: re-measure on another CPU).
MIN_ROWS = 1
MIN_MACS = 1 << 16
#: Largest K whose int32 sum cannot overflow: K * 255 * 128 < 2**31.
MAX_K = (2 ** 31 - 1) // (255 * 128)

_lock = threading.Lock()
#: The zero point operand of each value (0-d uint8), made once.
_ZP = [np.array(v, np.uint8) for v in range(256)]
_session: object | None | bool = False   # False = not built yet, None = unusable


def _build():
    """The MatMulInteger session, or None when ONNX Runtime is missing or fails the probe."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:   # pragma: no cover (both are dependencies of tccc)
        log.info("onnxruntime not importable: conv GEMMs run in float32 BLAS")
        return None
    ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", "K"]),
           helper.make_tensor_value_info("b", TensorProto.INT8, ["K", "N"]),
           helper.make_tensor_value_info("za", TensorProto.UINT8, [])]
    out = helper.make_tensor_value_info("y", TensorProto.INT32, ["M", "N"])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])],
                              "int8_gemm", ins, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:   # ORT raises its own exception types
        log.info("ONNX Runtime MatMulInteger unavailable (%s): float32 BLAS instead", exc)
        return None
    if not _probe(sess):
        log.info("ONNX Runtime's int8 GEMM is not exact on this CPU (saturating kernel): "
                 "conv GEMMs run in float32 BLAS")
        return None
    return _direct_run(sess)


def _direct_run(sess):
    """An object whose ``run(None, feeds) -> [y]`` calls ``sess``'s binding directly when
    that passes the probe too, else ``sess`` itself. Why: ``InferenceSession.run`` re-validates the
    feed's names and values in Python on every call, a few microseconds that added up to about
    4 % of ResNet-50's executor time over its ~280 GEMMs a image; the binding (the private
    ``_sess`` that public ``run`` itself calls with the same arguments) skips that. Probed, so
    an ONNX Runtime that changes it falls back to the public call."""
    inner = getattr(sess, "_sess", None)
    if inner is None:
        return sess

    def run(_names, feeds):
        return inner.run(["y"], feeds, None)

    direct = SimpleNamespace(run=run)
    try:
        if _probe(direct):
            return direct
    except Exception as exc:   # ORT raises its own exception types
        log.debug("ONNX Runtime binding call unusable (%s): public run", exc)
    return sess


def _probe(sess) -> bool:
    """Whether ``sess.run`` returns exact sums on operands that saturate an int16 pair sum."""
    k = 1200                        # 1200 * 255 * 128 > 2**24 and pair sums beyond int16
    rng = np.random.default_rng(1)
    a = np.full((7, k), 255, np.uint8)
    a[1::2, 1::2] = 0
    a[2] = rng.integers(0, 256, k)
    b = np.full((k, 5), -128, np.int8)
    b[:, 1] = 127
    b[1::2, 2] = 127
    b[:, 3] = rng.integers(-128, 128, k)
    for za in (0, 255, 3):
        got = sess.run(None, {"a": a, "b": b, "za": np.array(za, np.uint8)})[0]
        want = (a.astype(np.int64) - za) @ b.astype(np.int64)
        if got.dtype != np.int32 or not np.array_equal(got, want):
            return False
    return True


#: Most rows M of a tile's GEMM whose weights ``b`` a session of their own holds packed once
#: (:func:`packed_b`, shared by the layer's tiles:
#: :func:`~tcc_compiler.numerics.accumulator.packed`); such a GEMM takes the integer kernel
#: however few its multiply-accumulates (the per-call packing :func:`worth` weighs is not
#: paid). For few rows, packing ``b`` on every call is most of the call. Measured on this
#: AMD EPYC (one thread, us per call, loaded), packed vs per call: 1x1280x1000 15.7 vs 44.8,
#: 49x320x1280 45.5 vs 58.0, 49x192x512 13.2 vs 17.3, 49x1152x64 11.9 vs 13.6. Not raised to
#: 256 (session 18, Zen 5, in-process A/B, loaded): ResNet-50's 98- and 196-row tiles gained
#: about 0.3 ms an image, but EfficientNet-Lite0's images were about 0.08 ms slower (thread
#: CPU 4.65 vs 4.45-4.60 ms): a session of its own writes its output to memory of its own,
#: not the process-wide session's recently used buffer (3136-row tiles: 2600 -> 2787 us).
PACKED_MAX_ROWS = 64


def packed_b(b: np.ndarray):
    """A function ``run(a, za) -> int32 [M, N]`` equal to the integer GEMM ``(a - za) @ b``
    (``a`` uint8 [M, K] C-contiguous, ``za`` a 0-d uint8) through an ONNX Runtime session
    that holds ``b`` (int8 [K, N]) as a constant, packed once when the session is made
    (about 7 ms of CPU for 1280x1000), or None: no exact integer kernel here
    (:func:`int8_session`), K above :data:`MAX_K`, or the session failing to build or to
    give the exact sums of ``b`` on the probe operands (255 and 0 in every pattern of
    :func:`_probe`, with zero points 0, 255 and 3, against numpy's int64 product).
    One thread, as :func:`int8_session`."""
    k = b.shape[0]
    if b.ndim != 2 or b.dtype != np.int8 or k > MAX_K or int8_session() is None:
        return None
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k]),
               helper.make_tensor_value_info("za", TensorProto.UINT8, [])]
        out = helper.make_tensor_value_info("y", TensorProto.INT32, ["M", b.shape[1]])
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b", "za"], ["y"])],
                                  "int8_gemm_packed", ins, [out],
                                  initializer=[numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        call = getattr(sess, "_sess", sess)   # the binding, as _direct_run
        names = ["y"] if call is not sess else None
        gen = forks
        feeds_b = {"b": b}

        def run(a: np.ndarray, za: np.ndarray) -> np.ndarray:
            if forks != gen:   # a forked child: the process-wide session, b fed
                return int8_session().run(None, {"a": a, "za": za, **feeds_b})[0]
            return call.run(names, {"a": a, "za": za}, None)[0] if names else \
                call.run(None, {"a": a, "za": za})[0]
        rng = np.random.default_rng(1)
        a = np.full((5, k), 255, np.uint8)
        a[1, 1::2] = 0
        a[2, ::2] = 0
        a[3] = rng.integers(0, 256, k)
        b64 = b.astype(np.int64)
        ab, colsum = a.astype(np.int64) @ b64, b64.sum(axis=0)   # (a - za) b = ab - za colsum
        for za in (0, 255, 3):
            want = ab - za * colsum
            got = run(a, _ZP[za])
            if got.dtype != np.int32 or not np.array_equal(got, want):
                log.info("packed int8 GEMM not exact for a %dx%d weight: per-call packing",
                         *b.shape)
                return None
    except Exception as exc:   # ORT raises its own exception types
        log.info("packed int8 GEMM unavailable (%s): per-call packing", exc)
        return None
    return run


def _forget_session() -> None:
    """Drop the session in a forked child (ONNX Runtime's state does not survive a fork): the
    child builds its own on first use; the packed sessions made before the fork are not used
    there (:data:`forks`)."""
    global _session, forks
    _session = False
    forks += 1


#: Forks this process descends from since the module loaded: a :func:`packed_b` session is
#: used only in the process (fork count) that made it.
forks = 0


if hasattr(os, "register_at_fork"):   # POSIX; elsewhere workers start fresh (spawn)
    os.register_at_fork(after_in_child=_forget_session)


def int8_session():
    """The probed ONNX Runtime session (built on first use; ``run(None, feeds) -> [y]``), or
    None when unusable."""
    global _session
    if _session is False:
        with _lock:
            if _session is False:
                _session = _build()
    return _session


def worth(m: int, k: int, n: int) -> bool:
    """Whether an [M, K] x [K, N] GEMM is large enough for the integer kernel (module
    docstring; :data:`MIN_ROWS`, :data:`MIN_MACS`)."""
    return m >= MIN_ROWS and m * k * n >= MIN_MACS


def int8_matmul(a: np.ndarray, za: int, b: np.ndarray) -> np.ndarray | None:
    """Exact ``(a - za) @ b`` as int32 [M, N], or None when the integer kernel is not used
    (no exact kernel on this CPU, fewer than :data:`MIN_ROWS` rows or :data:`MIN_MACS`
    multiply-accumulates, K above :data:`MAX_K`).

    Args:
        a: uint8 [M, K] (C-contiguous). za: its zero point, 0..255.
        b: int8 [K, N] (C-contiguous).
    """
    m, k = a.shape
    if not worth(m, k, b.shape[1]) or k > MAX_K or not 0 <= za <= 255:
        return None
    sess = int8_session()
    if sess is None:
        return None
    return sess.run(None, {"a": a, "b": b, "za": _ZP[za]})[0]
