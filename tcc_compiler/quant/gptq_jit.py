"""The numba kernel behind GPTQ's column loop (:func:`tcc_compiler.quant.weight_rounding._gptq`),
imported only when numba is (:func:`tcc_compiler.numerics.jit.available`): one block of
columns rounded in order, each column's update from the block's earlier columns summed in
float64 and vectorised across the rows, where the numpy form makes a matrix-vector product
per column (about 25 us of Python per column; EfficientNet-Lite0 has 14,000 columns).

The arithmetic is the numpy form's but for the order of the additions inside one column's
update: a column's value moves by float64 rounding only, so a level changes only where that
value lies within a few units in the last place of a rounding boundary (the EfficientNet-Lite0
and ResNet golden binaries are unchanged)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def gptq_block(start, wt, vt, scale, dt, qt, b0, b1):
    """Round columns ``b0 <= i < b1`` of every row, in place, on the transposed layout
    (columns major, rows contiguous).

    Args:
        start: float64 [G, b1 - b0, O], the block's columns with the earlier blocks' updates.
        wt: float64 [G, K, O] weights. vt: float64 [G, K, K], ``V`` transposed, columns over
            their diagonal (``vt[g, i, j] = V[g, j, i] / V[g, i, i]``). scale: float64 [G, O]
            per-row scales (> 0).
        dt: float64 [G, K, O], ``w - s q`` of the done columns (column ``i`` written).
        qt: int8 [G, K, O] levels (column ``i`` written).
    """
    ng, _, no = start.shape
    acc = np.empty(no)
    for g in range(ng):
        for i in range(b0, b1):
            for o in range(no):
                acc[o] = 0.0
            for j in range(b0, i):
                c = vt[g, i, j]
                for o in range(no):
                    acc[o] += dt[g, j, o] * c
            for o in range(no):
                s = scale[g, o]
                qi = min(max(np.rint((start[g, i - b0, o] + acc[o]) / s), -127.0), 127.0)
                qt[g, i, o] = np.int8(qi)
                dt[g, i, o] = wt[g, i, o] - qi * s
