"""The golden model's own softmax over channel groups (used by :mod:`tcc_compiler.quant.golden`),
written from specs/quantization.md ("Softmax over channel groups") and specs/isa.md (LUT_TILE
softmax mode).

Why not the executor's ``numerics/softmax.softmax_int8``: ``tccc run --check`` compares the
executor against the golden model, so a fault in a kernel both call would be invisible to it.
Here the runs are the groups of an NHWC map's channel axis ([H, W, C / g, g]), the exp table is
indexed with ``np.take``, and the divisions are floor divisions; no code is shared with it.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError


def group_softmax(x: np.ndarray, group: int, table: np.ndarray) -> np.ndarray:
    """Softmax over each channel group of ``group`` channels of every pixel of ``x``:
    with ``m`` the group's maximum and ``e_i = table[m - q_i]``,
    ``y_i = clamp(floor((e_i floor(2**31 / sum e) + 2**22) / 2**23), 0, 255) - 128``, int8 at
    scale 1/256 and zero point -128. Exact in int64 (``e_i <= 2**15``, ``2**31 / sum e <=
    2**16``).

    Args:
        x: int8 NHWC [H, W, C] (any leading shape; channels last), C a multiple of ``group``.
        group: channels per group (>= 1).
        table: u16 [256], ``table[d] = rint(2**15 exp(-s_x d))`` (``table[0] = 2**15``).

    Returns:
        int8 array shaped like ``x``.

    Raises:
        InternalError: ``x`` not int8, C not a multiple of ``group``, or a table that is not
            256 entries starting with 2**15.
    """
    c = x.shape[-1]
    tab = np.asarray(table, dtype=np.int64)
    if x.dtype != np.int8 or group < 1 or c % group or tab.shape != (256,) \
            or tab[0] != 1 << 15:
        raise InternalError(f"golden softmax: int8 input of {c} channels in groups of {group} "
                            f"and a 256-entry table from 2**15 expected (got {x.dtype}, table "
                            f"{tab.shape})")
    q = x.astype(np.int64).reshape(*x.shape[:-1], c // group, group)
    e = np.take(tab, q.max(axis=-1, keepdims=True) - q)
    r = np.floor_divide(1 << 31, e.sum(axis=-1, keepdims=True))
    y = np.floor_divide(e * r + (1 << 22), 1 << 23)
    return (np.clip(y, 0, 255) - 128).astype(np.int8).reshape(x.shape)
