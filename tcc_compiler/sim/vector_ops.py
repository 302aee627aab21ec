"""Execution of LUT_TILE, EW_TILE and RESIZE_TILE on the reference executor's SRAM (kept
apart from the conv/pool/add handlers of :mod:`tcc_compiler.sim.executor`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.commands import EwTile, LutTile, ResizeTile
from tcc_compiler.isa.spec import WIDE_MASK
from tcc_compiler.numerics import SHIFT_MAX
from tcc_compiler.numerics.eltwise import EwKind, eltwise_int8
from tcc_compiler.numerics.lut import LUT_ENTRIES, apply_lut
from tcc_compiler.numerics.resize import COORD_MODES, bilinear_int8
from tcc_compiler.numerics.softmax import EXP_BITS, EXP_ENTRIES, softmax_int8

#: Element bytes -> dtype of an EW_TILE operand (its ``wide`` bits).
_INT = {1: np.int8, 2: np.int16}


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
    ea, eb, eo = (_INT[e] for e in t.elem_bytes())
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
