"""Rounding ties of the QDQ export: the constant offset (output LSBs) added before a
``QuantizeLinear`` so its round-half-to-even gives tccc's round-half-up on every reachable
value, computed exactly from an op's integer multipliers; ``None`` when no offset is safe (the
export then builds the integer-side form, ``qdq_builder.QdqBuilder.exact_pool``). See
:mod:`tcc_compiler.export.qdq`, "Rounding", for why and where."""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import Op

#: Smallest margin (output LSBs) kept between a tie offset and float32 rounding error; ONNX
#: Runtime's float32 rescale of a value below 256 errs by about 1e-5 LSB.
TIE_MARGIN_LSB = 1e-3
#: Enumeration cap for tie_offset (reachable integer inputs of one op).
TIE_GRID_MAX = 1 << 22


def tie_offset(mults: list[int], ranges: list[tuple[int, int]], shift: int,
                where: str, strict: bool = True) -> float | None:
    """Offset (in output LSBs) that turns round-half-even into tccc's round-half-up.

    tccc computes ``t = sum_i k_i * M_i / 2**S`` exactly and rounds half up; ``k_i`` ranges
    over the integers ``ranges[i] = (lo, hi)`` (e.g. a window sum of ``x - zp_x``). If no
    reachable ``t`` is an exact tie, returns 0. Otherwise returns ``d / 2`` with ``d`` the
    distance from 1/2 to the largest reachable fractional part below 1/2, so that
    ``round_half_even(t + d/2) == floor(t + 1/2)`` for every reachable ``t``.

    With ``strict=False`` returns None instead of raising (the caller builds an exact
    integer-side form instead, :meth:`tcc_compiler.export.qdq_builder.QdqBuilder.exact_pool`).

    Raises:
        InternalError: (``strict``) ties exist but ``d / 2`` is within
            :data:`TIE_MARGIN_LSB` of float32 rounding (no safe offset), or the grid is
            too large to enumerate.
    """
    size = 1
    for lo, hi in ranges:
        size *= hi - lo + 1
    if size > TIE_GRID_MAX:
        if not strict:
            return None
        raise InternalError(f"QDQ export: {where}: {size} reachable inputs, too many to check "
                            "for rounding ties")
    mod, half = 1 << shift, 1 << (shift - 1)
    res = np.zeros(1, np.int64)
    for (lo, hi), m in zip(ranges, mults):
        k = np.arange(lo, hi + 1, dtype=np.int64)
        res = ((res[:, None] + (k * m) % mod) % mod).reshape(-1)  # int64: k*m < 2**47
    if not (res == half).any():
        return 0.0
    below = res[res < half]
    d = float(half - below.max()) / mod if below.size else 0.5
    if d / 2 < TIE_MARGIN_LSB:
        if not strict:
            return None
        raise InternalError(f"QDQ export: {where}: rounding ties with no safe offset "
                            f"(nearest value {d:.3g} LSB below a tie)")
    return d / 2


def pool_multipliers(node) -> tuple[np.ndarray, np.ndarray]:
    """(M, S) of an average pool / gap as int64 scalars, or as [1, 1, OH, OW] maps (one
    divisor per output pixel: count_include_pad=0, quant/params.pool_divisors)."""
    from tcc_compiler.quant.params import pool_divisors, pool_quant

    div = pool_divisors(node)
    if div is None:
        p = pool_quant(node)
        return np.int64(p.mult), np.int64(p.shift)
    d = np.multiply.outer(*div)
    qs = {int(v): pool_quant(node, int(v)) for v in np.unique(d)}
    mult = np.vectorize(lambda v: qs[v].mult, otypes=[np.int64])(d)
    shift = np.vectorize(lambda v: qs[v].shift, otypes=[np.int64])(d)
    return mult[None, None], shift[None, None]


def pool_tie_offset(node) -> float | None:
    """Tie offset of an avgpool / global average pool (window sums of ``x - zp_x``); None
    when no offset is safe (then the pool is exported on the integer side)."""
    from tcc_compiler.quant.params import pool_quant

    p = pool_quant(node)
    x = node.inputs[0]
    n = x.shape[2] * x.shape[3] if node.op is Op.GAP else \
        node.attrs.kernel[0] * node.attrs.kernel[1]
    qmin, qmax = qrange(x)
    rng = (n * (qmin - p.zp_in), n * (qmax - p.zp_in))
    return tie_offset([p.mult], [rng], p.shift, f"{node.op.value} '{node.name}'",
                       strict=False)


def qrange(v: Value) -> tuple[int, int]:
    """(min, max) of an int8 or int16 activation's integer type."""
    return (-32768, 32767) if v.dtype == "int16" else (-128, 127)


def add_tie_offset(node) -> float:
    """Tie offset of a standalone add (``(a - zp_a) * M_a + (b - zp_b) * M_b``). With an
    int16 operand the grid is too large to enumerate: no offset (a tie may then round the
    other way, by one int16 LSB)."""
    from tcc_compiler.quant.params import add_quant

    p = add_quant(node)
    a, b = node.inputs[0], node.inputs[1]
    rngs = [(qrange(a)[0] - p.zp_a, qrange(a)[1] - p.zp_a),
            (qrange(b)[0] - p.zp_b, qrange(b)[1] - p.zp_b)]
    wide = "int16" in (a.dtype, b.dtype)
    off = tie_offset([p.mult_a, p.mult_b], rngs, p.shift, f"add '{node.name}'",
                      strict=not wide)
    return off or 0.0
