"""A CONV_TILE's plan: what the reference executor derives from the command, its CONV_CFG and
the SRAM's size alone (the ISA checks of the pair, the output size, the operands' views over
the SRAM), made once per command and reused on every run (:class:`ConvPlan`).

Why: a layer's tiles are small on networks such as EfficientNet-Lite0 (a hundred CONV_TILEs
per image), and re-deriving all this per tile and per image cost about as much as the
arithmetic. Soundness: the plan is a function of the command, the CONV_CFG in force (the
COMPUTE queue runs in order in every legal schedule, so a command index always sees the same
one; the executor still compares it by identity) and the SRAM object the views are over
(the executor keeps each core's SRAM across runs and refills it, specs/isa.md: every run
starts from the fill value). Nothing here depends on the SRAM's *contents*: the views read the
bytes current when the tile runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import ConvCfg, ConvTile
from tcc_compiler.numerics import jit
from tcc_compiler.sim.conv_params import conv_flags_problem, param_fields
from tcc_compiler.sim.memory import INT_DTYPES


def conv_out(n_in: int, pad_a: int, pad_b: int, k: int, s: int, d: int) -> int:
    """Output length (elements) of a conv/pool along one axis of ``n_in`` elements, pads
    ``pad_a``/``pad_b``, kernel ``k``, stride ``s``, dilation ``d`` (may be <= 0 when the
    window does not fit)."""
    eff = (k - 1) * d + 1
    return (n_in + pad_a + pad_b - eff) // s + 1


def conv_setup_problem(cfg: ConvCfg | None, t: ConvTile, array_in: int) -> str | None:
    """Why tile ``t`` cannot run under ``cfg`` (the ISA's rules for the pair, specs/isa.md
    CONV_TILE: a missing CONV_CFG, zero kernel fields, unknown out_mode, flags that do not fit,
    groups that do not divide the channels, an output size the padded tile does not give),
    or None when it can. ``array_in``: the target's MAC array input lanes."""
    if cfg is None:
        return "no CONV_CFG before this tile"
    if min(cfg.kh, cfg.kw, cfg.sh, cfg.sw, cfg.dh, cfg.dw, cfg.cin_g) == 0:
        return "CONV_CFG has a zero kernel/stride/dilation/cin_g"
    if cfg.out_mode > (spec.OUT_MODE_INT32 | spec.OUT_MODE_ACCUMULATE | spec.OUT_MODE_TWO_SLOPE
                       | spec.OUT_MODE_LUT16):
        return f"CONV_CFG out_mode {cfg.out_mode} unknown"
    problem = conv_flags_problem(cfg, t, array_in)
    if problem:
        return problem
    if cfg.has_shortcut and cfg.out_mode != spec.OUT_MODE_INT8:
        return "shortcut needs out_mode 0 (int8)"
    if cfg.has_lut and cfg.out_mode & spec.OUT_MODE_INT32:
        return "LUT epilogue needs an int8 output (out_mode 0 or 2)"
    if t.in_c == 0 or t.oc == 0 or t.in_c % cfg.cin_g:
        return f"in_c {t.in_c} is not a non-zero multiple of cin_g {cfg.cin_g}"
    groups = t.in_c // cfg.cin_g
    if t.oc % groups:
        return f"oc {t.oc} not divisible by the tile's {groups} groups"
    oh = conv_out(t.in_h, t.pad_t, t.pad_b, cfg.kh, cfg.sh, cfg.dh)
    ow = conv_out(t.in_w, t.pad_l, t.pad_r, cfg.kw, cfg.sw, cfg.dw)
    if oh < 1 or ow < 1 or (t.out_h, t.out_w) != (oh, ow):
        return f"out_h x out_w = {t.out_h}x{t.out_w}, the padded tile gives {oh}x{ow}"
    return None


@dataclass(frozen=True)
class ConvPlan:
    """One CONV_TILE under one CONV_CFG over one SRAM (module docstring).

    Attributes:
        cfg: the CONV_CFG it was made under (compared by identity before reuse).
        sram: the SRAM object the views are over (compared by identity before reuse).
        groups: groups in the tile (``in_c / cin_g``). oh, ow: output size.
        x: the input [in_h, in_w, in_c] (NHWC) view, or None when it must be read anew each
            run (a strided multi-byte operand is read as a copy).
        w: the weights [oc, kh, kw, cin_g] (OHWI) view, int8 or int16 (little-endian).
        p_raw: the parameter records' bytes (uint8 view, ``oc * PARAM_RECORD_BYTES``).
        part: the int32 partial sums [oh, ow, oc] (accumulate mode) view, or None (not in that
            mode, or read anew each run).
        sc: the shortcut [oh, ow, oc] view, or None (no shortcut, or read anew each run).
        out: the output box [oh, ow, oc]: an ndarray view, or a ByteBox (strided multi-byte).
        direct: ``out`` when the epilogue may write it itself (an ndarray, no LUT, not int32
            output), else None.
        fits: ``direct`` also passes :func:`~tcc_compiler.numerics.jit.out_fits` (the
            compiled epilogue may write it with no further check).
        lut: the LUT epilogue's table (int8 [1, 256] view), or None.
        fields: the CONV_CFG fields the decoded parameters depend on
            (:class:`~tcc_compiler.sim.conv_params.ConvParamCache`).
        strides, dilations: (h, w). macs: multiply-accumulates of the tile (padding taps
            included). read_fixed: SRAM bytes read by the tile besides a re-read operand
            (input, weights, params, partials/shortcut, LUT).
    """

    cfg: ConvCfg
    sram: object
    groups: int
    oh: int
    ow: int
    x: np.ndarray | None
    w: np.ndarray
    p_raw: np.ndarray
    part: np.ndarray | None
    sc: np.ndarray | None
    out: object
    direct: np.ndarray | None
    fits: bool
    lut: np.ndarray | None
    fields: tuple
    strides: tuple[int, int]
    dilations: tuple[int, int]
    macs: int
    read_fixed: int


#: ``(i, cmd, what, addr, shape, px_stride, row_stride, dtype, write)`` -> a box
#: (Executor._sram_box); ``(i, cmd, what, addr, shape, dtype)`` -> a packed tensor view
#: (Executor._sram_tensor); ``(i, cmd, what, addr, nbytes)`` -> uint8 view (_sram_view).
BoxFn = Callable[..., object]


def is_view(px_stride: int, row_stride: int, elem_bytes: int) -> bool:
    """Whether the executor's read of an operand box is a view of the SRAM (packed, or
    single-byte elements) rather than a copy (a strided multi-byte operand)."""
    return elem_bytes == 1 or not (px_stride or row_stride)


def make_plan(i: int, t: ConvTile, cfg: ConvCfg, sram: object, box: BoxFn, tensor: BoxFn,
              view: BoxFn) -> ConvPlan:
    """The plan of tile ``t`` (command ``i``) under ``cfg`` (already checked by
    :func:`conv_setup_problem`) over ``sram``, its operands bounds-checked and made views of
    the SRAM through the executor's ``box``, ``tensor`` and ``view`` helpers.

    Raises:
        ExecutionError: an operand outside the SRAM or with impossible strides (from the
            helpers, naming command ``i``).
    """
    groups = t.in_c // cfg.cin_g
    oh, ow = t.out_h, t.out_w
    in_b, out_b = cfg.in_bytes, cfg.out_bytes
    x = box(i, t, "input", t.in_sram, (t.in_h, t.in_w, t.in_c), t.in_px_stride,
            t.in_row_stride, INT_DTYPES[in_b])
    w = tensor(i, t, "weights", t.w_sram, (t.oc, cfg.kh, cfg.kw, cfg.cin_g),
               INT_DTYPES[cfg.w_bytes])
    n_param = t.oc * spec.PARAM_RECORD_BYTES
    p_raw = view(i, t, "params", t.p_sram, n_param)
    read = x.nbytes + w.nbytes + n_param
    part = sc = lut = direct = None
    int32_out = bool(cfg.out_mode & spec.OUT_MODE_INT32)
    if cfg.accumulate:
        part = box(i, t, "partial sums", t.sc_sram, (oh, ow, t.oc), t.sc_px_stride,
                   t.sc_row_stride, np.dtype("<i4"))
        read += part.nbytes
        if not is_view(t.sc_px_stride, t.sc_row_stride, 4):
            part = None
    if not int32_out and cfg.has_shortcut:
        sc = box(i, t, "shortcut", t.sc_sram, (oh, ow, t.oc), t.sc_px_stride, t.sc_row_stride,
                 INT_DTYPES[cfg.sc_bytes])
        read += sc.nbytes
        if not is_view(t.sc_px_stride, t.sc_row_stride, cfg.sc_bytes):
            sc = None
    if not int32_out and cfg.has_lut:   # 256 int8 entries, or 257 int16 knots (bits 3 + 5)
        lut = (tensor(i, t, "lut", cfg.lut_sram, (spec.LUT_WIDE_KNOTS,), np.dtype("<i2"))
               if cfg.requant_bytes == 2 else tensor(i, t, "lut", cfg.lut_sram, (1, 256)))
        read += lut.nbytes
    out = box(i, t, "output", t.out_sram, (oh, ow, t.oc), t.out_px_stride, t.out_row_stride,
              np.dtype("<i4") if int32_out else INT_DTYPES[out_b], write=True)
    if not int32_out and not cfg.has_lut and not cfg.two_slope and isinstance(out, np.ndarray):
        direct = out
    fits = direct is not None and jit.out_fits(direct, (oh, ow, t.oc), INT_DTYPES[out_b], sc)
    fields = param_fields(cfg)
    return ConvPlan(cfg, sram, groups, oh, ow,
                    x if is_view(t.in_px_stride, t.in_row_stride, in_b) else None, w, p_raw,
                    part, sc, out, direct, fits, lut, fields, (cfg.sh, cfg.sw), (cfg.dh, cfg.dw),
                    oh * ow * t.oc * cfg.kh * cfg.kw * cfg.cin_g, read)
