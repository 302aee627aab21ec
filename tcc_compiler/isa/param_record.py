"""The 16-byte per-output-channel conv parameter record that CONV_TILE reads at ``p_sram``
(specs/isa.md, specs/weights.md): its numpy layout and the packing and viewing of ``oc`` records.
Re-exported by :mod:`tcc_compiler.isa.spec`.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.isa.encoding import I32


#: ``{bias i32, mult i32, sc_mult i32, shift u8, clamp_lo u8, clamp_hi u8, 1 reserved zero
#: byte}``, 16 bytes per record. ``clamp_lo``/``clamp_hi`` narrow the channel's output clamp
#: (an ASSUMPTION, specs/target.md "Per-channel output clamp"): after the layer's ``[act_lo,
#: act_hi]`` clamp the output is clamped to ``[MIN + clamp_lo, MAX - clamp_hi]`` (MIN, MAX: the
#: output type's extremes), so zero bytes (every record before this field) change nothing.
PARAM_RECORD_DTYPE = np.dtype([("bias", "<i4"), ("mult", "<i4"), ("sc_mult", "<i4"),
                               ("shift", "u1"), ("clamp_lo", "u1"), ("clamp_hi", "u1"),
                               ("reserved", "u1", (1,))])
PARAM_RECORD_BYTES = 16
assert PARAM_RECORD_DTYPE.itemsize == PARAM_RECORD_BYTES


def pack_conv_params(bias, mult, shift, sc_mult=None, clamp_lo=None, clamp_hi=None) -> bytes:
    """Pack per-output-channel conv parameters into 16-byte records (``oc * 16`` bytes).

    Args:
        bias: int32 [oc] bias in accumulator units.
        mult: [oc] multipliers, 0 <= M < 2**31.
        shift: [oc] shifts, 1..62.
        sc_mult: [oc] shortcut multipliers (0 <= M < 2**31) or None (zeros).
        clamp_lo, clamp_hi: [oc] per-channel clamp offsets 0..255 (output clamped to
            ``[MIN + clamp_lo, MAX - clamp_hi]``) or None (zeros: no per-channel clamp).

    Returns:
        ``oc`` records laid out as :data:`PARAM_RECORD_DTYPE`.

    Raises:
        InternalError: shapes differ or a value is out of range.
    """
    bias = np.asarray(bias, dtype=np.int64).reshape(-1)
    oc = bias.size

    def arr(a):
        return (np.zeros(oc, np.int64) if a is None
                else np.asarray(a, dtype=np.int64).reshape(-1))

    mult, shift, sc, c_lo, c_hi = (arr(a) for a in (mult, shift, sc_mult, clamp_lo, clamp_hi))
    if not (mult.size == shift.size == sc.size == c_lo.size == c_hi.size == oc):
        raise InternalError(f"conv params: bias/mult/shift/sc_mult/clamp lengths differ "
                            f"({oc}, {mult.size}, {shift.size}, {sc.size}, {c_lo.size}, "
                            f"{c_hi.size})")
    checks = (("bias", bias, I32.min, I32.max), ("mult", mult, 0, I32.max),
              ("sc_mult", sc, 0, I32.max), ("shift", shift, 1, 62),
              ("clamp_lo", c_lo, 0, 255), ("clamp_hi", c_hi, 0, 255))
    for name, a, lo, hi in checks:
        if a.size and (a.min() < lo or a.max() > hi):
            raise InternalError(f"conv params: {name} outside {lo}..{hi}")
    rec = np.zeros(oc, dtype=PARAM_RECORD_DTYPE)
    rec["bias"], rec["mult"], rec["sc_mult"], rec["shift"] = bias, mult, sc, shift
    rec["clamp_lo"], rec["clamp_hi"] = c_lo, c_hi
    return rec.tobytes()


def unpack_conv_params(data: bytes | np.ndarray) -> np.ndarray:
    """View ``oc * 16`` bytes as a structured array of :data:`PARAM_RECORD_DTYPE` records.

    Raises:
        InternalError: the length is not a multiple of 16 bytes.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.size % PARAM_RECORD_BYTES:
        raise InternalError(f"conv params: {buf.size} bytes is not a multiple of 16")
    return buf.view(PARAM_RECORD_DTYPE)
