"""CONV_TILE parameter records, decoded and checked once per distinct record bytes (a layer's
tiles share them) for the reference executor, with the float64 epilogue's factors
(:mod:`tcc_compiler.numerics.epilogue`) and the compiled epilogue's parameters
(:func:`tcc_compiler.numerics.jit.epilogue_params`) derived from them; and the check of a
CONV_CFG's flags against a tile (:func:`conv_flags_problem`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import ConvCfg, ConvTile
from tcc_compiler.numerics import SHIFT_MAX, jit
from tcc_compiler.numerics.epilogue import EpilogueConsts, epilogue_consts

#: Element bytes -> the integer dtype of an operand (CONV_CFG ``wide`` bits).
_INT = {1: np.int8, 2: np.int16, 4: np.int32}


@dataclass(frozen=True)
class ConvParams:
    """One tile's decoded parameters.

    Attributes:
        records: the :data:`~tcc_compiler.isa.spec.PARAM_RECORD_DTYPE` records [oc].
        consts: for out_mode 0 (int8/int16 output), :func:`epilogue_consts` of them (None when
            the float64 form cannot be exact, or for the int32 output mode).
        jit: for out_mode 0, :func:`~tcc_compiler.numerics.jit.epilogue_params` of them (the
            shortcut multipliers only with a shortcut), else None.
        clamp_lo, clamp_hi: the records' per-channel clamp offsets (uint8 [oc]), or None
            when every record's are zero (:func:`~tcc_compiler.numerics.epilogue.channel_clamp`).
    """

    records: np.ndarray
    consts: EpilogueConsts | None
    jit: tuple | None
    clamp_lo: np.ndarray | None = None
    clamp_hi: np.ndarray | None = None


class ConvParamCache:
    """Decoded parameters (:class:`ConvParams`) keyed by the records' bytes and the CONV_CFG
    fields the factors depend on. All are functions of the key, so a hit is what decoding
    again would give; the records come from a copy of the bytes, never a view of the SRAM."""

    def __init__(self) -> None:
        self._cache: dict[tuple, ConvParams] = {}
        self._by_source: dict[tuple, ConvParams] = {}

    def get(self, raw: np.ndarray, cfg: ConvCfg, source: tuple | None = None) -> ConvParams:
        """Decode ``raw`` (uint8, ``oc * 16`` bytes of SRAM) for a tile under ``cfg``.

        ``source``: where the bytes come from unchanged (:mod:`tcc_compiler.sim.provenance`;
        it determines them), so a hit needs no copy of the bytes; None: keyed by the bytes.

        Raises:
            ValueError: the reserved byte not zero; for out_mode 0 or 2, a shift outside 1..62 or a
                negative multiplier, or with int16 weights (flags bit7) a multiplier M of
                2**15 or more, or clamp bytes leaving no output value (``MIN + clamp_lo >
                MAX - clamp_hi``; the executor names the command).
        """
        fields = (cfg.out_mode, cfg.zp_out, cfg.act_lo, cfg.act_hi, cfg.zp_sc,
                  cfg.has_shortcut, cfg.sc_bytes, cfg.requant_bytes, cfg.wide_weights)
        if source is not None:
            skey = (source, raw.size, fields)
            hit = self._by_source.get(skey)
            if hit is None:
                hit = self._by_source[skey] = self.get(raw, cfg)
            return hit
        key = (raw.tobytes(), fields)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        p = spec.unpack_conv_params(np.frombuffer(key[0], np.uint8))
        if p["reserved"].any():
            raise ValueError("parameter record reserved byte not zero")
        consts = jit_params = None
        if not cfg.out_mode & spec.OUT_MODE_INT32:   # requantized (also when accumulating)
            span = np.iinfo(_INT[cfg.requant_bytes])   # [MIN + lo, MAX - hi] holds a value
            empty = p["clamp_lo"].astype(np.int64) + p["clamp_hi"] > span.max - span.min
            if empty.any():
                c = int(np.flatnonzero(empty)[0])
                raise ValueError(f"parameter clamp_lo + clamp_hi of channel {c} "
                                 f"({int(p['clamp_lo'][c])} + {int(p['clamp_hi'][c])}) leave "
                                 f"no {span.dtype} output value")
            if p["shift"].min() < 1 or p["shift"].max() > SHIFT_MAX:
                raise ValueError("parameter shift outside 1..62")
            if p["mult"].min() < 0 or p["sc_mult"].min() < 0:
                raise ValueError("parameter mult/sc_mult negative")
            if cfg.wide_weights and p["mult"].max() >= spec.WIDE_W_MULT_LIMIT:
                raise ValueError(f"parameter mult {int(p['mult'].max())} of an int16-weight "
                                 f"layer not below {spec.WIDE_W_MULT_LIMIT} (2**15)")
            consts = epilogue_consts(p["bias"], p["mult"], p["shift"], cfg.zp_out, cfg.act_lo,
                                     cfg.act_hi, p["sc_mult"] if cfg.has_shortcut else None,
                                     cfg.zp_sc, _INT[cfg.sc_bytes], _INT[cfg.requant_bytes])
            if jit.available():
                jit_params = jit.epilogue_params(p["bias"], p["mult"], p["shift"],
                                                 p["sc_mult"] if cfg.has_shortcut else None)
        clamps = ((p["clamp_lo"].copy(), p["clamp_hi"].copy())
                  if p["clamp_lo"].any() or p["clamp_hi"].any() else (None, None))
        got = self._cache[key] = ConvParams(p, consts, jit_params, *clamps)
        return got


def conv_flags_problem(cfg: ConvCfg, t: ConvTile, array_in: int) -> str | None:
    """Why the CONV_CFG flags do not fit tile ``t`` (reserved bits, image mode with more
    than one group or ``kw * cin_g > array_in``, depthwise mode without ``cin_g = 1``,
    ``oc = in_c``); None when they do."""
    if cfg.flags & ~(spec.CONV_FLAG_SHORTCUT | spec.CONV_FLAG_IMAGE | spec.CONV_FLAG_DEPTHWISE
                     | spec.CONV_FLAG_LUT | spec.WIDE_MASK << spec.CONV_FLAG_WIDE_SHIFT
                     | spec.CONV_FLAG_WIDE_W):
        return f"CONV_CFG reserved flag bits set ({cfg.flags:#x})"
    if cfg.wide_weights and cfg.out_mode != spec.OUT_MODE_INT8:
        return f"CONV_CFG flags {cfg.flags:#x}: int16 weights need out_mode 0"
    if cfg.wide & spec.WIDE_OUT and cfg.out_mode & spec.OUT_MODE_INT32:
        return f"CONV_CFG flags {cfg.flags:#x}: int16 output with out_mode {cfg.out_mode}"
    if cfg.accumulate and (cfg.has_shortcut or not cfg.flags & spec.CONV_FLAG_DEPTHWISE):
        return (f"CONV_CFG out_mode {cfg.out_mode} (accumulate) needs depthwise mode and no "
                f"shortcut (flags {cfg.flags:#x})")
    if cfg.flags & spec.CONV_FLAG_DEPTHWISE and (
            cfg.flags & spec.CONV_FLAG_IMAGE or cfg.cin_g != 1 or t.oc != t.in_c):
        return (f"depthwise mode needs cin_g 1, oc == in_c and no image mode "
                f"(cin_g {cfg.cin_g}, in_c {t.in_c}, oc {t.oc})")
    if cfg.flags & spec.CONV_FLAG_IMAGE and (t.in_c != cfg.cin_g or cfg.kw * cfg.cin_g > array_in):
        return (f"image mode needs one group per tile and kw * cin_g <= {array_in} "
                f"(in_c {t.in_c}, cin_g {cfg.cin_g}, kw {cfg.kw})")
    return None
