"""Execution of LUT_TILE on the reference executor's SRAM (kept apart from the conv/pool/add
handlers of :mod:`tcc_compiler.sim.executor`)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.commands import LutTile
from tcc_compiler.numerics.lut import LUT_ENTRIES, apply_lut


def run_lut_tile(i: int, t: LutTile,
                 sram_tensor: Callable[..., np.ndarray],
                 err: Callable[[int, LutTile, str], ExecutionError]) -> int:
    """Run one LUT_TILE: ``out[k] = lut[(ch0 + k) % tables][in[k] + 128]``.

    Args:
        i: command index (for messages). t: the command.
        sram_tensor: the executor's ``(i, cmd, what, addr, shape) -> int8 view`` accessor
            (range-checked against the SRAM).
        err: the executor's error constructor.

    Returns:
        Bytes the compute queue touched (input + output + tables).

    Raises:
        ExecutionError: ``tables`` is 0 or ``ch0 >= tables``, or an operand outside the SRAM.
    """
    if t.tables < 1 or t.ch0 >= t.tables:
        raise err(i, t, f"LUT_TILE tables = {t.tables}, ch0 = {t.ch0}: need 1 <= tables and "
                        "ch0 < tables")
    tables = np.array(sram_tensor(i, t, "tables", t.lut_sram, (t.tables, LUT_ENTRIES)))
    x = np.array(sram_tensor(i, t, "input", t.in_sram, (t.n,)))
    sram_tensor(i, t, "output", t.out_sram, (t.n,))[...] = apply_lut(x, tables, t.ch0)
    return 2 * t.n + tables.size
