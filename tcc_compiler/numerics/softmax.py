"""Integer softmax over runs of consecutive int8 elements: the NPU's softmax mode of LUT_TILE
(``group`` > 0, specs/isa.md) and the golden model's kernel, one definition for both.

For each run of ``g`` elements (the g channels of one channel group of one NHWC pixel, e.g.
the 16 DFL bins of one box side of YOLOv8):

* ``m = max(q)``; ``d = m - q`` (0..255);
* ``e = table[d]``, the table ``round(2**15 * exp(-s_in * d))`` as u16 (``table[0]`` =
  32768 = exp(0)), built at compile time from the input scale (:func:`softmax_table`);
* ``S = sum(e)`` (>= 32768), ``r = 2**31 // S`` (one integer division per run);
* ``out = clamp((e * r + 2**22) >> 23, 0, 255) - 128``: the probability at the fixed output
  scale 1/256 and zero point -128 (:data:`OUT_SCALE`, :data:`OUT_ZERO_POINT`; TFLite's int8
  softmax output quantization), 1.0 clamped to 255/256.

Subtracting the run's maximum keeps every exponent <= 1, so no input range overflows; the
error against float softmax is the int8 rounding of the inputs, ~2**-15 of the table, the
floor of ``r`` (relative <= S / 2**31 <= g * 2**-16) and the output step 1/256.
"""

from __future__ import annotations

import numpy as np

#: Fractional bits of the exp table's entries.
EXP_BITS = 15
#: Entries of the exp table (every difference d = max - q of two int8 values).
EXP_ENTRIES = 256
#: Output quantization of the softmax (probabilities in [0, 1)).
OUT_SCALE = 1.0 / 256.0
OUT_ZERO_POINT = -128
#: Bits of the reciprocal 2**31 // S and of the final shift (31 - 8 output bits).
_RECIP_BITS = 31
_OUT_SHIFT = _RECIP_BITS - 8


def softmax_table(s_in: float) -> np.ndarray:
    """The exp table of an input at scale ``s_in``: u16 [256], ``round(2**15 * exp(-s_in *
    d))`` for d = 0..255, in float64 with round-half-to-even (``np.rint``).

    Raises:
        ValueError: ``s_in`` is not a finite positive number.
    """
    if not np.isfinite(s_in) or s_in <= 0:
        raise ValueError(f"softmax input scale {s_in!r} must be finite and positive")
    d = np.arange(EXP_ENTRIES, dtype=np.float64)
    return np.rint(np.exp(-float(s_in) * d) * (1 << EXP_BITS)).astype(np.uint16)


def softmax_int8(x: np.ndarray, group: int, table: np.ndarray) -> np.ndarray:
    """Softmax over every run of ``group`` consecutive elements of ``x`` (flat order).

    Args:
        x: int8 array (any shape; ``x.size`` a multiple of ``group``), e.g. NHWC with the
            channel groups contiguous.
        group: elements per run (>= 1).
        table: u16 [256] from :func:`softmax_table` (``table[0]`` must be 32768).

    Returns:
        int8 array shaped like ``x``: probabilities at scale 1/256, zero point -128.

    Raises:
        ValueError: ``x.size`` is not a multiple of ``group``, or a table whose first entry
            is not 2**15 (the sum could be 0).
    """
    if group < 1 or x.size % group:
        raise ValueError(f"softmax over runs of {group}: {x.size} elements is not a multiple")
    table = np.asarray(table, dtype=np.int64)
    if table.shape != (EXP_ENTRIES,) or table[0] != 1 << EXP_BITS:
        raise ValueError("softmax table must hold 256 entries, the first 2**15")
    q = x.reshape(-1, group).astype(np.int64)
    e = table[q.max(axis=1, keepdims=True) - q]
    recip = (1 << _RECIP_BITS) // e.sum(axis=1, keepdims=True)
    y = (e * recip + (1 << (_OUT_SHIFT - 1))) >> _OUT_SHIFT
    return (np.minimum(y, 255) + OUT_ZERO_POINT).astype(np.int8).reshape(x.shape)
