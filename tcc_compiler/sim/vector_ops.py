"""Execution of the tile commands other than CONV_TILE (POOL_TILE, ADD_TILE, LUT_TILE, EW_TILE,
RESIZE_TILE) on the reference executor's SRAM, through the accessors and error constructor of
:mod:`tcc_compiler.sim.executor` (CONV_TILE: :mod:`tcc_compiler.sim.conv_exec`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.commands import (AddCfg, AddTile, EwTile, LutTile, PoolCfg, PoolTile,
                                       ResizeTile)
from tcc_compiler.isa.spec import POOL_KIND_AVG, POOL_KIND_MAX, WIDE_IN, WIDE_MASK, WIDE_OUT
from tcc_compiler.numerics import SHIFT_MAX, add_int8, avgpool_int8, maxpool_int8
from tcc_compiler.numerics.eltwise import EwKind, eltwise_int8
from tcc_compiler.numerics.lut import LUT_ENTRIES, apply_lut
from tcc_compiler.numerics.pool import global_avgpool
from tcc_compiler.numerics.resize import COORD_MODES, bilinear_int8
from tcc_compiler.numerics.softmax import EXP_BITS, EXP_ENTRIES, softmax_int8
from tcc_compiler.sim.conv_tile import conv_out
from tcc_compiler.sim.memory import INT_DTYPES


def run_lut_tile(i: int, t: LutTile,
                 sram_tensor: Callable[..., np.ndarray],
                 err: Callable[[int, LutTile, str], ExecutionError]) -> int:
    """Run one LUT_TILE: ``out[k] = lut[(ch0 + k) % tables][in[k] + 128]``, or in softmax
    mode (``group`` > 0) :func:`tcc_compiler.numerics.softmax.softmax_int8`.

    Args:
        i: command index (for messages). t: the command.
        sram_tensor: the executor's ``(i, cmd, what, addr, shape) -> int8 view`` accessor
            (range-checked against the SRAM).
        err: the executor's error constructor.

    Returns:
        Bytes the compute queue touched (input + output + tables).

    Raises:
        ExecutionError: ``tables`` is 0 or ``ch0 >= tables``, or an operand outside the SRAM;
            in softmax mode also a group of 1, ``tables`` or ``ch0`` other than 1 and 0,
            ``n`` not a multiple of ``group`` or a table whose first entry is not 2**15.
    """
    if t.tables < 1 or t.ch0 >= t.tables:
        raise err(i, t, f"LUT_TILE tables = {t.tables}, ch0 = {t.ch0}: need 1 <= tables and "
                        "ch0 < tables")
    if t.group:
        return _softmax_tile(i, t, sram_tensor, err)
    tables = np.array(sram_tensor(i, t, "tables", t.lut_sram, (t.tables, LUT_ENTRIES)))
    x = np.array(sram_tensor(i, t, "input", t.in_sram, (t.n,)))
    sram_tensor(i, t, "output", t.out_sram, (t.n,))[...] = apply_lut(x, tables, t.ch0)
    return 2 * t.n + tables.size


def _softmax_tile(i: int, t: LutTile, sram_tensor: Callable[..., np.ndarray],
                  err: Callable[[int, LutTile, str], ExecutionError]) -> int:
    """LUT_TILE in softmax mode (``group`` > 0): see :func:`run_lut_tile`."""
    if t.group < 2 or t.tables != 1 or t.ch0 or t.n % t.group:
        raise err(i, t, f"LUT_TILE softmax: group {t.group}, tables {t.tables}, ch0 {t.ch0}, "
                        f"n {t.n}: need group >= 2, one table, ch0 = 0, n a multiple of group")
    table = np.array(sram_tensor(i, t, "tables", t.lut_sram, (EXP_ENTRIES,), np.uint16))
    if table[0] != 1 << EXP_BITS:
        raise err(i, t, f"LUT_TILE softmax table starts with {table[0]}, not 2**{EXP_BITS}")
    x = np.array(sram_tensor(i, t, "input", t.in_sram, (t.n,)))
    sram_tensor(i, t, "output", t.out_sram, (t.n,))[...] = softmax_int8(x, t.group, table)
    return 2 * t.n + table.nbytes


def run_ew_tile(i: int, t: EwTile,
                sram_tensor: Callable[..., np.ndarray],
                err: Callable[[int, EwTile, str], ExecutionError]) -> int:
    """Run one EW_TILE (numerics/eltwise.py :func:`eltwise_int8`).

    Args: as :func:`run_lut_tile`.

    Returns:
        Bytes the compute queue touched (a, b, output).

    Raises:
        ExecutionError: unknown kind, shift outside 1..62, ``b0 >= b_period`` (b_period > 0),
            reserved ``wide`` bits or int16 with mul, or an operand outside the SRAM.
    """
    if t.kind not in EwKind._value2member_map_:
        raise err(i, t, f"EW_TILE kind {t.kind} unknown")
    if not 1 <= t.shift <= SHIFT_MAX:
        raise err(i, t, f"EW_TILE shift {t.shift} outside 1..{SHIFT_MAX}")
    if t.b_period and t.b0 >= t.b_period:
        raise err(i, t, f"EW_TILE b0 = {t.b0} not below b_period = {t.b_period}")
    if t.wide & ~WIDE_MASK or (t.wide and t.kind == EwKind.MUL):
        raise err(i, t, f"EW_TILE wide {t.wide:#x}: reserved bits, or int16 with mul")
    nb = t.b_period or t.n
    ea, eb, eo = (INT_DTYPES[e] for e in t.elem_bytes())
    a = np.array(sram_tensor(i, t, "a", t.a_sram, (t.n,), ea))
    b = np.array(sram_tensor(i, t, "b", t.b_sram, (nb,), eb))
    y = eltwise_int8(EwKind(t.kind), a, t.zp_a, t.mult_a, b, t.zp_b, t.mult_b, t.shift,
                     t.zp_out, t.act_lo, t.act_hi, t.b_period, t.b0, eo)
    sram_tensor(i, t, "output", t.out_sram, (t.n,), eo)[...] = y
    return a.nbytes + b.nbytes + y.nbytes


def run_resize_tile(i: int, t: ResizeTile,
                    sram_tensor: Callable[..., np.ndarray],
                    err: Callable[[int, ResizeTile, str], ExecutionError]) -> int:
    """Run one RESIZE_TILE (numerics/resize.py :func:`bilinear_int8`).

    Args: as :func:`run_lut_tile`.

    Returns:
        Bytes the compute queue touched (input band + output tile).

    Raises:
        ExecutionError: an unknown mode, a zero factor, a band that does not lie in the input
            (``in_y0 + in_h > full_h``), an output row past the output, a tap row outside the
            band, or an operand outside the SRAM.
    """
    if t.mode >= len(COORD_MODES) or not (t.fh and t.fw):
        raise err(i, t, f"RESIZE_TILE mode {t.mode}, factors {t.fh}x{t.fw}: mode 0..2 and "
                        "factors >= 1 expected")
    if t.in_y0 + t.in_h > t.full_h or t.out_y0 + t.out_h > t.full_h * t.fh:
        raise err(i, t, f"RESIZE_TILE band rows {t.in_y0}+{t.in_h} / output rows "
                        f"{t.out_y0}+{t.out_h} outside the {t.full_h}-row input x{t.fh}")
    band = np.array(sram_tensor(i, t, "input", t.in_sram, (t.in_h, t.in_w, t.c)))
    try:
        y = bilinear_int8(band, t.full_h, t.fh, t.fw, COORD_MODES[t.mode], t.in_y0, t.out_y0,
                          t.out_h)
    except ValueError as exc:
        raise err(i, t, str(exc)) from None
    sram_tensor(i, t, "output", t.out_sram, y.shape)[...] = y
    return band.nbytes + y.nbytes


def run_pool_tile(i: int, t: PoolTile, cfg: PoolCfg | None,
                  sram_box: Callable[..., np.ndarray],
                  err: Callable[[int, PoolTile, str], ExecutionError]) -> int:
    """Run one POOL_TILE under ``cfg``: max pooling (pads hold the type's minimum) or average
    pooling (:func:`~tcc_compiler.numerics.avgpool_int8`) of the [in_h, in_w, c] (NHWC) int8
    or int16 input box into the [out_h, out_w, c] output box.

    Args:
        i: command index (for messages). t: the command. cfg: the POOL_CFG in force, or None.
        sram_box: the executor's strided box accessor ``(i, cmd, what, addr, shape,
            px_stride, row_stride, dtype, write)`` (range-checked against the SRAM).
        err: the executor's error constructor.

    Returns:
        Bytes the compute queue touched (input + output).

    Raises:
        ExecutionError: no POOL_CFG, a zero kernel or stride, input and output widths that
            differ (or reserved ``wide`` bits), an output size the padded tile does not give,
            an unknown kind, an average pool's shift outside 1..62, an operand outside the
            SRAM.
    """
    if cfg is None:
        raise err(i, t, "no POOL_CFG before this tile")
    if min(cfg.kh, cfg.kw, cfg.sh, cfg.sw) == 0:
        raise err(i, t, "POOL_CFG has a zero kernel/stride")
    if cfg.wide not in (0, WIDE_IN | WIDE_OUT):
        raise err(i, t, f"POOL_CFG wide {cfg.wide:#x}: input and output widths differ "
                        "or reserved bits set")
    dt = INT_DTYPES[cfg.elem_bytes]
    oh = conv_out(t.in_h, t.pad_t, t.pad_b, cfg.kh, cfg.sh, 1)
    ow = conv_out(t.in_w, t.pad_l, t.pad_r, cfg.kw, cfg.sw, 1)
    if oh < 1 or ow < 1 or (t.out_h, t.out_w) != (oh, ow):
        raise err(i, t, f"out_h x out_w = {t.out_h}x{t.out_w}, the padded tile gives {oh}x{ow}")
    x = sram_box(i, t, "input", t.in_sram, (t.in_h, t.in_w, t.c), t.in_px_stride,
                 t.in_row_stride, dt)
    if cfg.kind == POOL_KIND_MAX:
        y = maxpool_int8(x, (cfg.kh, cfg.kw), (cfg.sh, cfg.sw), t.pads)
    elif cfg.kind == POOL_KIND_AVG:
        if not 1 <= cfg.shift <= SHIFT_MAX:
            raise err(i, t, f"POOL_CFG shift {cfg.shift} outside 1..{SHIFT_MAX}")
        y = None
        if (oh, ow) == (1, 1) and (cfg.kh, cfg.kw) == x.shape[:2] and not any(t.pads):
            y = global_avgpool(x, cfg.zp_in, cfg.mult, cfg.shift, cfg.zp_out, dt)  # one pass
        if y is None:
            y = avgpool_int8(x, cfg.zp_in, (cfg.kh, cfg.kw), (cfg.sh, cfg.sw), t.pads,
                             cfg.mult, cfg.shift, cfg.zp_out, dt)
    else:
        raise err(i, t, f"POOL_CFG kind {cfg.kind} unknown")
    out = sram_box(i, t, "output", t.out_sram, (oh, ow, t.c), t.out_px_stride,
                   t.out_row_stride, dt, write=True)
    out[...] = y
    return x.nbytes + y.nbytes


def run_add_tile(i: int, t: AddTile, cfg: AddCfg | None,
                 sram_tensor: Callable[..., np.ndarray],
                 err: Callable[[int, AddTile, str], ExecutionError]) -> int:
    """Run one ADD_TILE under ``cfg``: the quantized add of ``n`` int8 elements
    (:func:`~tcc_compiler.numerics.add_int8`).

    Args:
        i: command index (for messages). t: the command. cfg: the ADD_CFG in force, or None.
        sram_tensor: the executor's ``(i, cmd, what, addr, shape) -> int8 view`` accessor.
        err: the executor's error constructor.

    Returns:
        Bytes the compute queue touched (``3 * n``: a, b and the output).

    Raises:
        ExecutionError: no ADD_CFG, a shift outside 1..62, an operand outside the SRAM.
    """
    if cfg is None:
        raise err(i, t, "no ADD_CFG before this tile")
    if not 1 <= cfg.shift <= SHIFT_MAX:
        raise err(i, t, f"ADD_CFG shift {cfg.shift} outside 1..{SHIFT_MAX}")
    a = sram_tensor(i, t, "a", t.a_sram, (t.n,))
    b = sram_tensor(i, t, "b", t.b_sram, (t.n,))
    y = add_int8(a, cfg.zp_a, cfg.mult_a, b, cfg.zp_b, cfg.mult_b, cfg.shift, cfg.zp_out,
                 cfg.act_lo, cfg.act_hi)
    sram_tensor(i, t, "output", t.out_sram, (t.n,))[...] = y
    return 3 * t.n
