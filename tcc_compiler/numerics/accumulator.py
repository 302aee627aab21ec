"""A conv's accumulator routine chosen once for a fixed input shape (:func:`accumulator`), the
executor's (the golden model has its own, ``quant/golden_gemm.py``).

Why: the reference executor runs the same CONV_TILE (same shape, zero point and weights) on
every image, a hundred and fifty tiles an image on EfficientNet-Lite0, and
:func:`~tcc_compiler.numerics.gemm.conv_accumulate_f` re-derives its route on each call (the
output size, whether the integer GEMM is worth it, the depthwise taps widened to int32): a
few microseconds a tile, about as much as a small tile's arithmetic. Every one of those
decisions depends on the shapes, the zero point and the weights only, never on the input's
values, so it is taken once here and the returned routine runs only the arithmetic.

Exactness: the routine runs the very kernels ``conv_accumulate_f`` runs for that input
(:func:`~tcc_compiler.numerics.jit.depthwise`'s compiled depthwise kernels; the integer GEMM
of :func:`~tcc_compiler.numerics.int8_gemm.int8_matmul` on ``x + 128``, unpadded for a plain
1x1 conv, else through the compiled im2col), on the same operands, so the same int32 sums.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.gemm import ConvWeights, patches_u8
from tcc_compiler.numerics.int8_gemm import (MAX_K, PACKED_MAX_ROWS, int8_session, packed_b,
                                             worth)


def _out_len(n: int, k: int, s: int, d: int) -> int:
    """Output length of a window ``k`` (stride ``s``, dilation ``d``) over ``n`` padded
    elements (may be < 1 when it does not fit)."""
    return (n - ((k - 1) * d + 1)) // s + 1


def accumulator(shape: tuple, zp_x: int, cw: ConvWeights, strides, pads,
                dilations, any_size: bool = False) -> Callable[[np.ndarray], np.ndarray] | None:
    """A routine ``f(x) -> acc`` equal to ``conv_accumulate_f(x, zp_x, cw, strides, pads,
    dilations)`` as int32 [OH, OW, O] for every int8 ``x`` of ``shape`` [H, W, C] (NHWC, any
    strides), or None when that call would take another route (no compiled kernels or
    exact integer GEMM, int16 weights, a grouped non-depthwise conv, a GEMM too small for
    the integer kernel, a window that does not fit): then call ``conv_accumulate_f``.

    Args:
        shape: (H, W, C) of the input. zp_x: its zero point (int8 range). cw: the prepared
            weights (:func:`~tcc_compiler.numerics.gemm.prepare_conv_weights`). strides,
            dilations: (h, w). pads: (top, left, bottom, right).
        any_size: take the integer GEMM however few its multiply-accumulates (a caller that
            packs the weights once, :func:`packed`, for a tile run many times: the per-call
            packing :func:`~tcc_compiler.numerics.int8_gemm.worth` weighs is not paid); the
            same exact sums as the float32 route ``conv_accumulate_f`` takes then.
    """
    h, w, c = shape
    o, kh, kw, cg = cw.w.shape
    top, left, bottom, right = pads
    if cw.w.dtype != np.int8 or c != cg * cw.group or not jit.available():
        return None
    oh = _out_len(h + top + bottom, kh, strides[0], dilations[0])
    ow = _out_len(w + left + right, kw, strides[1], dilations[1])
    if oh < 1 or ow < 1:
        return None
    if cw.dw is not None:
        return _depthwise(c, zp_x, cw, strides, pads, dilations, oh, ow)
    zpu = int(zp_x) + 128
    if cw.group != 1 or not cw.imats or not (any_size or worth(oh * ow, kh * kw * cg, o)) \
            or kh * kw * cg > MAX_K or not 0 <= zpu <= 255 or int8_session() is None:
        return None
    b, key_extra = cw.imats[0], ()
    if top == left == bottom == right == 0 and kh == kw == 1 and tuple(strides) == (1, 1):
        def cols(x: np.ndarray) -> np.ndarray:       # int8 v -> uint8 v + 128, no padding
            return np.bitwise_xor(x.view(np.uint8), np.uint8(0x80)).reshape(oh * ow, c)
    elif c == 3 and kh * kw * 4 <= MAX_K:   # an image's stem: a four-byte word per tap
        b = _widened(cw)
        idx = jit.px4_index(h, w, (kh, kw), strides, dilations, pads, oh, ow)

        def cols(x: np.ndarray) -> np.ndarray:
            m = jit.im2col_px4(x, zpu, idx, oh * ow)
            return m if m is not None else _patches_px4(x, zpu, (kh, kw), strides, dilations,
                                                        pads, oh, ow)
        key_extra = ("px4",)
    else:
        def cols(x: np.ndarray) -> np.ndarray:   # numpy once the kernels are switched off
            m = jit.im2col_u8(x, zpu, (kh, kw), strides, dilations, pads, oh, ow)
            return m if m is not None else patches_u8(x, zpu, (kh, kw), strides, dilations,
                                                      pads, oh, ow)
    key = (h, w, c, zpu, kh, kw, tuple(strides), tuple(pads), tuple(dilations)) + key_extra
    return GemmRoutine(cols, b, zpu, (oh, ow, o), key, cw.memo)


def _widened(cw: ConvWeights) -> np.ndarray:
    """The int8 GEMM weights [KH*KW*4, O] of a three-channel conv (group 1) with a fourth,
    zero input channel per tap (K order KH, KW, C + 1; :func:`~tcc_compiler.numerics.jit.
    im2col_px4`'s matrix): the same sums, the fourth byte of every tap times zero. Made
    once per weights (kept in their memo)."""
    with _memo_lock:
        b = cw.memo.get("px4")
        if b is None:
            o, kh, kw, _ = cw.w.shape
            w4 = np.zeros((o, kh, kw, 4), np.int8)
            w4[:, :, :, :3] = cw.w
            b = cw.memo["px4"] = np.ascontiguousarray(w4.reshape(o, -1).T)
    return b


def _patches_px4(x: np.ndarray, zpu: int, kernel, strides, dilations, pads, oh: int,
                 ow: int) -> np.ndarray:
    """numpy's :func:`~tcc_compiler.numerics.jit.im2col_px4` (the kernels switched off):
    :func:`~tcc_compiler.numerics.gemm.patches_u8` of ``x`` with a fourth channel holding
    ``zpu - 128`` (so ``zpu`` as ``x + 128``)."""
    h, w, _ = x.shape
    x4 = np.empty((h, w, 4), np.int8)
    x4[:, :, :3] = x
    x4[:, :, 3] = np.uint8(zpu).view(np.int8) ^ np.int8(-128)
    return patches_u8(x4, zpu, kernel, strides, dilations, pads, oh, ow)


class GemmRoutine:
    """The integer-GEMM routine :func:`accumulator` returns: ``routine(x)`` is the int32
    accumulator [OH, OW, O] of the int8 input ``x`` [H, W, C] (NHWC).

    Attributes:
        cols: ``cols(x)`` -> the uint8 patch matrix [OH*OW, KH*KW*C] of ``x + 128`` (K order
            KH, KW, C = OHWI), padded with the zero point + 128.
        b: the int8 weights [KH*KW*C, O] (C-contiguous). za: the zero point + 128 (0-d uint8).
        shape: (OH, OW, O).
        key: what fixes ``cols`` (input shape, zero point, window geometry): routines with
            equal keys form the same patch matrix of the same input.
        memo: the weights' :attr:`~tcc_compiler.numerics.gemm.ConvWeights.memo` (where the
            session holding ``b`` packed is kept, :class:`PackedGemmRoutine`), or None.
    """

    __slots__ = ("cols", "b", "za", "shape", "key", "memo")

    def __init__(self, cols: Callable[[np.ndarray], np.ndarray], b: np.ndarray, zpu: int,
                 shape: tuple[int, int, int], key: tuple, memo: dict | None = None):
        self.cols, self.b, self.za, self.shape = cols, b, np.array(zpu, np.uint8), shape
        self.key, self.memo = key, memo

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # the session is looked up per call: a forked child builds its own (int8_gemm)
        return int8_session().run(None, {"a": self.cols(x), "b": self.b, "za": self.za}
                                  )[0].reshape(self.shape)


#: Calls a :class:`PackedGemmRoutine` makes through the process-wide session before it packs
#: its weights: a program run once (``tccc run`` on one image) builds no session of its own
#: (about 3 us of CPU per KB of weights, ResNet-50's 25 MB some 0.1 s); from the second run
#: on the packed session serves.
PACK_AFTER = 1

_memo_lock = threading.Lock()


def packed_session(b: np.ndarray, memo: dict | None):
    """:func:`~tcc_compiler.numerics.int8_gemm.packed_b` of ``b`` (its ``run(a, za)`` or
    None), made once per weights: kept in ``memo`` (the weights'
    :attr:`~tcc_compiler.numerics.gemm.ConvWeights.memo`, so every tile of a layer shares
    one session and it lives as long as the weights), or made anew when ``memo`` is None."""
    if memo is None:
        return packed_b(b)
    with _memo_lock:
        hit = memo.get(("packed_b", id(b)))
        if hit is None or hit[0] is not b:
            hit = memo[("packed_b", id(b))] = (b, packed_b(b))
    return hit[1]


class PackedGemmRoutine(GemmRoutine):
    """A :class:`GemmRoutine` whose weights ``b`` a session of their own holds packed
    (:func:`packed_session`, the same exact sums), made on its call after the first
    :data:`PACK_AFTER` (a tile run many times: the executor's later runs; the first calls
    go through the process-wide session as :class:`GemmRoutine`); when none can be made, the
    process-wide session as :class:`GemmRoutine`."""

    __slots__ = ("run", "calls")

    def __init__(self, r: GemmRoutine):
        super().__init__(r.cols, r.b, int(r.za), r.shape, r.key, r.memo)
        self.run = None
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        run = self.run
        if run is None:
            if self.calls < PACK_AFTER:
                self.calls += 1
                return GemmRoutine.__call__(self, x)
            self.run = run = packed_session(self.b, self.memo) or False
        if run:
            return run(self.cols(x), self.za).reshape(self.shape)
        return GemmRoutine.__call__(self, x)


def packed(routine):
    """``routine`` (an :func:`accumulator` routine or None) as a :class:`PackedGemmRoutine`
    when it is a :class:`GemmRoutine` of at most
    :data:`~tcc_compiler.numerics.int8_gemm.PACKED_MAX_ROWS` rows, else itself: for a tile
    run many times (the executor's). The tiles of one layer share one packed session
    (:func:`packed_session`): one session per tile held one packed copy of the weights per
    tile, and ResNet-50's 28- and 21-row stage-4 tiles streamed both (in-process A/B, loaded,
    thread CPU per image 19.22 -> 17.77 ms)."""
    if type(routine) is GemmRoutine and routine.shape[0] * routine.shape[1] <= PACKED_MAX_ROWS:
        return PackedGemmRoutine(routine)
    return routine


def shared_input(routines: list[GemmRoutine],
                 run_id: Callable[[], object]) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Routines equal to ``routines`` (two or more, equal :attr:`GemmRoutine.key`) for tiles
    that read the same input bytes one after another, the first making one GEMM for all.

    Why: EfficientNet-Lite0's late layers split their output channels into tiles of 64 that
    all read one input (its head conv into 20, the classifier into 15): one [M, K] x [K, sum N]
    call instead of one per tile halved those GEMMs' time (measured on this machine: 20 x
    49x320x64 121 us, one 49x320x1280 63 us; 15 x 1x1280x64 87 us against 45 us).

    Exactness: the integer GEMM's every output element is the exact int32 sum of its own
    column of ``b`` (:mod:`~tcc_compiler.numerics.int8_gemm`), whatever the other columns; so
    the concatenated weights' columns give each routine's own result, provided its input
    bytes are those the first read. That is the caller's guarantee (nothing writes them
    between the first routine's call and the last's, in one run identified by ``run_id()``);
    a later routine called in another run than the first's last call (or before it) computes
    its own GEMM instead.

    Args:
        routines: the tiles' routines, in the order they run. run_id: the current run's
            identity (compared with ``==``).

    Returns:
        One routine per tile, same order: the first computes every tile's result and returns
        its own; each later one returns its part (C-contiguous int32 [OH, OW, O_k]).

    Raises:
        ValueError: fewer than two routines, or their keys differ.
    """
    if len(routines) < 2 or any(r.key != routines[0].key for r in routines):
        raise ValueError("shared_input: needs two or more routines of one input geometry")
    first = routines[0]
    b = np.ascontiguousarray(np.concatenate([r.b for r in routines], axis=1))
    ends = np.cumsum([r.b.shape[1] for r in routines]).tolist()
    cuts = list(zip([0] + ends[:-1], ends))
    kept: list = [None, None]   # [the parts, the run they belong to]
    rows = first.shape[0] * first.shape[1]
    pk: list = [None if rows <= PACKED_MAX_ROWS else False]   # b's packed session, or False

    def lead(x: np.ndarray) -> np.ndarray:
        run = pk[0]
        if run is None:   # b packed once for few rows, on the first call (the second run's)
            run = pk[0] = packed_b(b) or False
        if run:
            y = run(first.cols(x), first.za)
        else:
            y = int8_session().run(None, {"a": first.cols(x), "b": b, "za": first.za})[0]
        kept[0] = [np.ascontiguousarray(y[:, a:e]).reshape(r.shape)
                   for (a, e), r in zip(cuts, routines)]
        kept[1] = run_id()
        return kept[0][0]

    def part(k: int) -> Callable[[np.ndarray], np.ndarray]:
        own = routines[k]

        def follow(x: np.ndarray) -> np.ndarray:
            if kept[1] is None or kept[1] != run_id():
                return own(x)
            return kept[0][k]
        return follow

    return [lead] + [part(k) for k in range(1, len(routines))]


def _depthwise(c: int, zp_x: int, cw: ConvWeights, strides, pads, dilations, oh: int,
               ow: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """The depthwise routine of :func:`accumulator`: :func:`~tcc_compiler.numerics.jit.
    depthwise_routine` on the weights' taps [KH, KW, C]."""
    taps = cw.w[:, :, :, 0].transpose(1, 2, 0)
    if taps.shape[2] != c:
        return None
    return jit.depthwise_routine(zp_x, taps, strides, pads, dilations, oh, ow)


def depthwise_epilogue(shape: tuple, zp_x: int, cw: ConvWeights, strides, pads, dilations,
                       params: tuple | None, zp_y: int, lo: int,
                       hi: int) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """A depthwise conv's accumulator and plain epilogue (no shortcut, 32-bit accumulator) in
    one compiled pass, for every int8 ``x`` of ``shape`` [H, W, C]: a routine ``f(x, out)``
    writing into ``out`` (int8/int16 [OH, OW, C], any strides; it may overlap ``x``) the
    bytes ``jit.epilogue_into(accumulator(...)(x), params, zp_y, lo, hi, None, 0, out)``
    writes (:func:`~tcc_compiler.numerics.jit.depthwise_epilogue_routine`), or None when
    :func:`accumulator` would not take the depthwise route or that routine declines.

    Args:
        shape, zp_x, cw, strides, pads, dilations: as :func:`accumulator`. params: the
            layer's :func:`~tcc_compiler.numerics.jit.epilogue_params` (None: declines).
        zp_y, lo, hi: the output zero point and clamp.
    """
    h, w, c = shape
    o, kh, kw, _ = cw.w.shape
    top, left, bottom, right = pads
    if cw.dw is None or cw.w.dtype != np.int8 or c != o or params is None \
            or not jit.available():
        return None
    oh = _out_len(h + top + bottom, kh, strides[0], dilations[0])
    ow = _out_len(w + left + right, kw, strides[1], dilations[1])
    if oh < 1 or ow < 1:
        return None
    taps = cw.w[:, :, :, 0].transpose(1, 2, 0)
    return jit.depthwise_epilogue_routine(zp_x, taps, strides, pads, dilations, oh, ow,
                                          params, zp_y, lo, hi)
