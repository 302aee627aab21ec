"""The arithmetic of one CONV_TILE on the reference executor, given its plan
(:class:`~tcc_compiler.sim.conv_tile.ConvPlan`) and decoded parameter records
(:class:`~tcc_compiler.sim.conv_params.ConvParams`): the weights made GEMM-ready once
(:class:`ConvWeightCache`) and the epilogue the CONV_CFG's out_mode and flags select
(:func:`conv_result`, specs/isa.md CONV_CFG / CONV_TILE). Arithmetic is
:mod:`tcc_compiler.numerics`'s; this module only chooses it. The executor
(:mod:`tcc_compiler.sim.executor`) reads the operands and writes the result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tcc_compiler.isa import spec
from tcc_compiler.numerics import conv_epilogue, jit
from tcc_compiler.numerics.epilogue import channel_clamp, two_slope_epilogue
from tcc_compiler.numerics.gemm import ConvWeights, conv_accumulate_f, prepare_conv_weights
from tcc_compiler.numerics.kernels import conv_epilogue_int32
from tcc_compiler.numerics.lut import apply_lut, apply_lut_wide
from tcc_compiler.sim.conv_bands import (EPILOGUE_SPLIT_MIN, SPLIT_MIN_MACS, conv_in_bands,
                                         epilogue_in_parts, fused_bands, run_parts, threads)
from tcc_compiler.sim.conv_params import ConvParams
from tcc_compiler.sim.conv_tile import ConvPlan
from tcc_compiler.sim.memory import INT_DTYPES


def wrap32(a: np.ndarray) -> np.ndarray:
    """int64 ``a`` wrapped to int32 (two's complement, the 32-bit accumulator); any shape."""
    return (((a + 2 ** 31) % 2 ** 32) - 2 ** 31).astype(np.int32)


class ConvWeightCache:
    """GEMM-ready conv weights (:class:`~tcc_compiler.numerics.gemm.ConvWeights`) kept across
    tiles and runs: keyed by the weight load the bytes came from unchanged
    (:mod:`tcc_compiler.sim.provenance`; the source determines the bytes), else by SRAM
    address, shape and the bytes themselves (compared byte for byte; weights are reloaded into
    the same buffers every run)."""

    def __init__(self) -> None:
        # (SRAM address, OHWI shape, element bytes, groups) -> [(weight bytes, prepared)]
        self._prepared: dict[tuple, list[tuple[bytes, ConvWeights]]] = {}
        # (source, OHWI shape, element bytes, groups) -> prepared, for unchanged loaded bytes
        self._by_source: dict[tuple, ConvWeights] = {}

    def get(self, addr: int, w: np.ndarray, groups: int,
            source: tuple | None = None) -> ConvWeights:
        """The GEMM-ready form of the OHWI weights ``w`` ([oc, kh, kw, cin_g], int8 or int16
        little-endian) read at SRAM byte ``addr`` in a tile of ``groups`` groups.

        Args:
            source: the weight load's source and the offset in its data
                (:meth:`~tcc_compiler.sim.provenance.Provenance.source_of`), or None when the
                bytes are not an unchanged copy of one.

        Raises:
            ValueError: ``w``'s channels are not divisible by ``groups`` (from
                :func:`~tcc_compiler.numerics.gemm.prepare_conv_weights`).
        """
        if source is not None:
            key = (source, w.shape, w.dtype.itemsize, groups)
            cw = self._by_source.get(key)
            if cw is None:
                cw = self._by_source[key] = self.get(addr, w, groups)
            return cw
        data = w.tobytes()
        entries = self._prepared.setdefault((addr, w.shape, w.dtype.itemsize, groups), [])
        for raw, cw in entries:
            if raw == data:
                return cw
        cw = prepare_conv_weights(np.frombuffer(data, w.dtype).reshape(w.shape), groups)
        entries.append((data, cw))
        return cw


def conv_result(pl: ConvPlan, cp: ConvParams, x: np.ndarray, cw: ConvWeights, pads: tuple,
                part: np.ndarray | None, sc: np.ndarray | None,
                acc_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The output of one CONV_TILE under ``pl.cfg`` (out_mode and flags as specs/isa.md):
    accumulate, then int32 (out_mode bit0), or requantize (two-slope with out_mode bit2,
    else the plain epilogue: compiled straight into ``pl.direct`` when the plan allows, a
    large such tile in two bands of rows side by side, :mod:`tcc_compiler.sim.conv_bands`),
    the records' per-channel clamp, then the LUT epilogue (flags bit3: 256 int8 entries, or
    257 int16 knots when the requantized value is int16, flags bit5, interpolated to int8, or
    to int16 with out_mode bit3).

    Args:
        pl: the tile's plan. cp: its decoded parameter records.
        x: the input [in_h, in_w, in_c] (NHWC), int8 or int16. cw: the prepared weights.
        pads: (top, left, bottom, right) rows/columns of ``zp_in`` padding.
        part: the int32 partial sums [oh, ow, oc] (out_mode bit1), else None.
        sc: the shortcut [oh, ow, oc] (flags bit0, int8 or int16), else None.
        acc_fn: the tile's :func:`~tcc_compiler.numerics.accumulator.accumulator` (made once
            for its input shape, zero point and ``cw``), or None: ``conv_accumulate_f``.

    Returns:
        [oh, ow, oc]: int32 (little-endian) for out_mode bit0, else int8 or int16 (the
        output type); ``pl.direct`` itself when the epilogue wrote it in place.
    """
    cfg, p = pl.cfg, cp.records
    fast = pl.fits and cp.jit is not None and not cfg.wide_weights and jit.available()
    if fast and not cfg.accumulate and conv_in_bands(
            x, pads, cw, pl.strides, pl.dilations, cfg.kh, pl.macs,
            (cp.jit, cfg.zp_in, cfg.zp_out, cfg.act_lo, cfg.act_hi, cfg.zp_sc), sc, pl.direct):
        return channel_clamp(pl.direct, cp.clamp_lo, cp.clamp_hi)   # two bands, side by side
    acc = (acc_fn(x) if acc_fn is not None
           else conv_accumulate_f(x, cfg.zp_in, cw, pl.strides, pads, pl.dilations))
    if cfg.accumulate:   # the partial replaces the bias: the epilogue adds bias back
        acc = wrap32(np.asarray(acc, np.int64) + part.astype(np.int64)
                     - p["bias"].astype(np.int64))
    if cfg.out_mode & spec.OUT_MODE_INT32:
        return conv_epilogue_int32(acc, p["bias"]).astype("<i4")
    if cfg.two_slope:   # out_mode bit2: sc_mult below zero (no shortcut)
        y = two_slope_epilogue(acc, p["bias"], p["mult"], p["sc_mult"], p["shift"],
                               cfg.zp_out, cfg.act_lo, cfg.act_hi, INT_DTYPES[cfg.out_bytes],
                               (cp.consts, cp.neg_consts), (cp.jit, cp.neg_jit),
                               cfg.wide_weights)
    elif fast:
        y = jit.epilogue_into(acc, cp.jit, cfg.zp_out, cfg.act_lo, cfg.act_hi, sc,
                              cfg.zp_sc, pl.direct)   # checked once, in the plan
    else:
        y = conv_epilogue(acc, p["bias"], p["mult"], p["shift"], cfg.zp_out,
                          cfg.act_lo, cfg.act_hi, sc, cfg.zp_sc, p["sc_mult"],
                          INT_DTYPES[cfg.requant_bytes], cp.consts, cp.jit, pl.direct,
                          acc64=cfg.wide_weights)
    y = channel_clamp(y, cp.clamp_lo, cp.clamp_hi)   # per-channel clamp bytes
    if pl.lut is not None and cfg.requant_bytes == 2:   # bits 3 + 5: int16 -> int8/int16
        return apply_lut_wide(y, pl.lut, cfg.lut16)   # out_mode bit3: int16 knots, output
    if pl.lut is not None:   # flags bit3: one table on the way out
        return apply_lut(y, pl.lut)
    return y


def plain_step(pl: ConvPlan, cp: ConvParams, cw: ConvWeights,
               acc_fn: Callable[[np.ndarray], np.ndarray] | None,
               fused: Callable[[np.ndarray, np.ndarray], None] | None = None,
               pads: tuple | None = None) -> Callable[[], bool] | None:
    """The whole of :func:`conv_result` for a tile that takes its plainest route, as one
    routine made once: ``step()`` runs the accumulator routine on the input view, the
    compiled epilogue straight into the output box and the per-channel clamp, and returns
    True; False (nothing written) when the compiled kernels are off by then (the caller runs
    :func:`conv_result`). Returns None for a tile on any other route: no accumulator
    routine, an epilogue not written in place (``pl.fits``), wide weights, partial sums,
    int32 output, two slopes, a LUT, an input or shortcut read anew each run, or a depthwise
    tile :func:`~tcc_compiler.sim.conv_bands.conv_in_bands` may split.

    Why: a tile's route is a function of its plan, CONV_CFG and decoded records, so
    re-deciding it on each call (a dozen checks, a few microseconds) cost about a tenth of
    EfficientNet-Lite0's executor time over its 150 tiles an image. Exactness: the very
    calls :func:`conv_result` makes on that route, on the same operands.

    Args:
        pl: the tile's plan. cp: its decoded parameter records. cw: its prepared weights.
        acc_fn: its accumulator routine (:func:`~tcc_compiler.numerics.accumulator.
            accumulator`) or None.
        fused: for a depthwise tile without a shortcut, its accumulator and epilogue in one
            pass (:func:`~tcc_compiler.numerics.accumulator.depthwise_epilogue`, the same
            bytes as ``acc_fn`` then the compiled epilogue), used instead of them; or None.
        pads: the tile's (top, left, bottom, right), or None (then a depthwise tile
            :func:`~tcc_compiler.sim.conv_bands.conv_in_bands` may split gets no plain step).

    A depthwise tile :func:`~tcc_compiler.sim.conv_bands.conv_in_bands` would split runs
    the same two bands (:func:`~tcc_compiler.sim.conv_bands.fused_bands`, made once) on both
    threads, ``fused`` on one. The epilogue of a tile of two rows or more and at least
    :data:`~tcc_compiler.sim.conv_bands.EPILOGUE_SPLIT_MIN` accumulators is computed in parts
    on both threads (:func:`~tcc_compiler.sim.conv_bands.epilogue_in_parts`, the same bytes)
    while :func:`~tcc_compiler.sim.conv_bands.threads` is 2. An int32-output tile adds the
    bias to its accumulators in int32 straight into its box (:func:`_int32_step`).
    """
    cfg = pl.cfg
    if _int32_route(pl, acc_fn):
        return _int32_step(acc_fn, pl.x, cp.records["bias"], pl.out)
    if not _plain_route(pl, cp, acc_fn):
        return None
    x, sc, out = pl.x, pl.sc, pl.direct
    clamp = (cp.clamp_lo, cp.clamp_hi)
    if cw.dw is not None and pl.macs >= SPLIT_MIN_MACS and pl.oh >= 2:
        bands = None if fused is None or sc is not None or pads is None else fused_bands(
            x, pads, cw, pl.strides, pl.dilations, cfg.kh,
            (cp.jit, cfg.zp_in, cfg.zp_out, cfg.act_lo, cfg.act_hi, cfg.zp_sc), out)
        if bands is None:
            return None   # may run as two bands (conv_in_bands)
        return _band_step(bands, fused, x, out, clamp)
    if fused is not None and sc is None:
        return _fused_step(fused, x, out, clamp)
    epi = (cp.jit, cfg.zp_out, cfg.act_lo, cfg.act_hi, sc, cfg.zp_sc, out)
    split = pl.oh >= 2 and pl.oh * pl.ow * out.shape[2] >= EPILOGUE_SPLIT_MIN
    return _gemm_step(acc_fn, x, epi, clamp, split)


def plain_gemm_args(pl: ConvPlan, cp: ConvParams, acc_fn) -> tuple | None:
    """The epilogue arguments :func:`plain_step` gives a GEMM tile on its plainest route:
    ((params, zp_out, lo, hi, shortcut, zp_sc, output box) for
    :func:`~tcc_compiler.numerics.jit.epilogue_into`, (clamp_lo, clamp_hi) for
    :func:`~tcc_compiler.numerics.epilogue.channel_clamp`), or None when the tile takes
    another route (:func:`plain_step`'s docstring) or its epilogue is computed in parts on
    both threads (:data:`~tcc_compiler.sim.conv_bands.EPILOGUE_SPLIT_MIN`). For
    :mod:`tcc_compiler.sim.row_groups`, which runs that epilogue on a shared GEMM's rows."""
    if acc_fn is None or not _plain_route(pl, cp, acc_fn):
        return None
    out = pl.direct
    if pl.oh >= 2 and pl.oh * pl.ow * out.shape[2] >= EPILOGUE_SPLIT_MIN:
        return None
    cfg = pl.cfg
    return ((cp.jit, cfg.zp_out, cfg.act_lo, cfg.act_hi, pl.sc, cfg.zp_sc, out),
            (cp.clamp_lo, cp.clamp_hi))


def _int32_route(pl: ConvPlan, acc_fn) -> bool:
    """Whether a tile takes :func:`_int32_step`: out_mode int32 alone (no partial sums: the
    ISA allows no shortcut or LUT with it), int8 weights, an accumulator routine, its input
    a view and its output an int32 view of the SRAM."""
    cfg = pl.cfg
    return (acc_fn is not None and cfg.out_mode == spec.OUT_MODE_INT32 and not cfg.wide_weights
            and pl.x is not None and isinstance(pl.out, np.ndarray)
            and pl.out.dtype == np.dtype("<i4") and pl.out.dtype.isnative)


def _int32_step(acc_fn, x: np.ndarray, bias: np.ndarray, out: np.ndarray):
    """An int32-output tile (:func:`conv_result`'s out_mode bit0 route): the accumulator plus
    the bias, added in int32 straight into the output box. Exactness: int32 additions wrap
    modulo 2**32, so with the bias first reduced modulo 2**32 the sum is
    :func:`~tcc_compiler.numerics.kernels.conv_epilogue_int32`'s ``wrap32(acc + bias)``."""
    available = jit.available
    b32 = wrap32(np.asarray(bias, np.int64))

    def int32_step() -> bool:
        if not available():
            return False
        np.add(acc_fn(x), b32, out=out)
        return True
    return int32_step


def _plain_route(pl: ConvPlan, cp: ConvParams, acc_fn) -> bool:
    """Whether a tile takes :func:`plain_step`'s route (its docstring)."""
    cfg = pl.cfg
    return not (acc_fn is None or not pl.fits or cp.jit is None or cfg.wide_weights
                or cfg.accumulate or cfg.out_mode & spec.OUT_MODE_INT32 or cfg.two_slope
                or pl.lut is not None or pl.x is None or (cfg.has_shortcut and pl.sc is None))


def _band_step(bands: list, fused, x: np.ndarray, out: np.ndarray, clamp: tuple):
    """conv_in_bands' two bands, made once (:func:`~tcc_compiler.sim.conv_bands.
    fused_bands`), on both threads; the whole tile's ``fused`` routine on one."""
    available = jit.available

    def band_step() -> bool:
        if not available():
            return False
        if threads() > 1:
            run_parts(lambda k: bands[k][2](bands[k][0], bands[k][1]), 2)
        else:
            fused(x, out)
        channel_clamp(out, *clamp)
        return True
    return band_step


def _fused_step(fused, x: np.ndarray, out: np.ndarray, clamp: tuple):
    """A depthwise tile's accumulator and epilogue in one compiled pass."""
    available = jit.available

    def fused_step() -> bool:
        if not available():
            return False
        fused(x, out)
        channel_clamp(out, *clamp)
        return True
    return fused_step


def _gemm_step(acc_fn, x: np.ndarray, epi: tuple, clamp: tuple, split: bool):
    """The accumulator routine, then the compiled epilogue ``epi`` = (params, zp_out, lo, hi,
    shortcut, zp_sc, out) straight into the output box; ``split``: in parts on both threads
    (:func:`~tcc_compiler.sim.conv_bands.epilogue_in_parts`) while
    :func:`~tcc_compiler.sim.conv_bands.threads` is 2."""
    available, epilogue_into = jit.available, jit.epilogue_into
    out = epi[-1]
    if split:
        def split_step() -> bool:
            if not available():
                return False
            if threads() > 1:
                epilogue_in_parts(acc_fn(x), *epi)
            else:
                epilogue_into(acc_fn(x), *epi)
            channel_clamp(out, *clamp)
            return True
        return split_step

    def step() -> bool:
        if not available():
            return False
        epilogue_into(acc_fn(x), *epi)
        channel_clamp(out, *clamp)
        return True
    return step
