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
from tcc_compiler.sim.memory import INT_DTYPES


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
        neg_consts, neg_jit: with out_mode bit2 (two-slope), ``consts`` and ``jit`` of the
            multipliers below zero (the records' ``sc_mult``), else None.
    """

    records: np.ndarray
    consts: EpilogueConsts | None
    jit: tuple | None
    clamp_lo: np.ndarray | None = None
    clamp_hi: np.ndarray | None = None
    neg_consts: EpilogueConsts | None = None
    neg_jit: tuple | None = None


def param_fields(cfg: ConvCfg) -> tuple:
    """The CONV_CFG fields a tile's decoded parameters depend on (a cache key part)."""
    return (cfg.out_mode, cfg.zp_out, cfg.act_lo, cfg.act_hi, cfg.zp_sc, cfg.has_shortcut,
            cfg.sc_bytes, cfg.out_bytes, cfg.requant_bytes, cfg.wide_weights)


class ParamRecordError(ValueError):
    """A parameter record the epilogue cannot use.

    Attributes:
        record: index of the first such record among the tile's ``oc`` records (its output
            channel within the tile), so the caller can say where its bytes came from.
    """

    def __init__(self, msg: str, record: int):
        super().__init__(msg)
        self.record = record


def _first_bad(bad: np.ndarray, what) -> None:
    """Raise :class:`ParamRecordError` for the first record (channel) ``bad`` marks, saying
    ``what(channel)`` is wrong with it."""
    hits = np.flatnonzero(bad)
    if hits.size:
        c = int(hits[0])
        raise ParamRecordError(f"parameter record of channel {c}: {what(c)}", c)


class ConvParamCache:
    """Decoded parameters (:class:`ConvParams`) keyed by the records' bytes and the CONV_CFG
    fields the factors depend on. All are functions of the key, so a hit is what decoding
    again would give; the records come from a copy of the bytes, never a view of the SRAM."""

    def __init__(self) -> None:
        self._cache: dict[tuple, ConvParams] = {}
        self._by_source: dict[tuple, ConvParams] = {}

    def get(self, raw: np.ndarray, cfg: ConvCfg, source: tuple | None = None,
            fields: tuple | None = None) -> ConvParams:
        """Decode ``raw`` (uint8, ``oc * 16`` bytes of SRAM) for a tile under ``cfg``.

        ``source``: where the bytes come from unchanged (:mod:`tcc_compiler.sim.provenance`;
        it determines them), so a hit needs no copy of the bytes; None: keyed by the bytes.
        ``fields``: :func:`param_fields` of ``cfg`` when the caller has it (a tile run many
        times), else None: derived here.

        Raises:
            ParamRecordError: naming the first bad record: the reserved byte not zero; for
                out_mode 0 or 2, a shift outside 1..62 or a negative multiplier, or with int16
                weights (flags bit7) a multiplier M of 2**15 or more, or clamp bytes leaving
                no output value (``MIN + clamp_lo > MAX - clamp_hi``; the executor names the
                command, and the file bytes the record came from).
        """
        if fields is None:
            fields = param_fields(cfg)
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
        _first_bad(p["reserved"].any(axis=-1), lambda c: "reserved byte not zero")
        consts = jit_params = None
        neg = (None, None)
        if not cfg.out_mode & spec.OUT_MODE_INT32:   # requantized (also when accumulating)
            consts, jit_params, neg = _requant_params(p, cfg)
        clamps = ((p["clamp_lo"].copy(), p["clamp_hi"].copy())
                  if p["clamp_lo"].any() or p["clamp_hi"].any() else (None, None))
        got = self._cache[key] = ConvParams(p, consts, jit_params, *clamps, *neg)
        return got


def _requant_params(p: np.ndarray, cfg: ConvCfg) -> tuple:
    """(consts, jit, (neg_consts, neg_jit)) of :class:`ConvParams` for the records ``p`` of a
    requantizing tile (out_mode bit0 clear), after checking them (ValueError: see
    :meth:`ConvParamCache.get`)."""
    span = np.iinfo(INT_DTYPES[cfg.requant_bytes])   # [MIN + lo, MAX - hi] must hold a value
    lo, hi, shift, mult = p["clamp_lo"], p["clamp_hi"], p["shift"], p["mult"]
    _first_bad(lo.astype(np.int64) + hi > span.max - span.min,
               lambda c: f"clamp_lo + clamp_hi ({int(lo[c])} + {int(hi[c])}) leave no "
                         f"{span.dtype} output value")
    _first_bad((shift < 1) | (shift > SHIFT_MAX),
               lambda c: f"shift {int(shift[c])} outside 1..{SHIFT_MAX}")
    _first_bad((mult < 0) | (p["sc_mult"] < 0), lambda c: "mult/sc_mult negative")
    if cfg.wide_weights:
        _first_bad(mult >= spec.WIDE_W_MULT_LIMIT,
                   lambda c: f"mult {int(mult[c])} of an int16-weight layer not below "
                             f"{spec.WIDE_W_MULT_LIMIT} (2**15)")
    consts = epilogue_consts(p["bias"], p["mult"], p["shift"], cfg.zp_out, cfg.act_lo,
                             cfg.act_hi, p["sc_mult"] if cfg.has_shortcut else None,
                             cfg.zp_sc, INT_DTYPES[cfg.sc_bytes], INT_DTYPES[cfg.requant_bytes])
    jit_params = None
    if jit.available():
        jit_params = jit.epilogue_params(p["bias"], p["mult"], p["shift"],
                                         p["sc_mult"] if cfg.has_shortcut else None)
    neg = (None, None)
    if cfg.two_slope:   # the multipliers below zero, without a shortcut
        if cfg.wide_weights:
            sc_mult = p["sc_mult"]
            _first_bad(sc_mult >= spec.WIDE_W_MULT_LIMIT,
                       lambda c: f"sc_mult {int(sc_mult[c])} of an int16-weight layer not "
                                 f"below {spec.WIDE_W_MULT_LIMIT} (2**15)")
        neg = (epilogue_consts(p["bias"], p["sc_mult"], p["shift"], cfg.zp_out,
                               cfg.act_lo, cfg.act_hi, out_dtype=INT_DTYPES[cfg.requant_bytes]),
               jit.epilogue_params(p["bias"], p["sc_mult"], p["shift"], None)
               if jit.available() else None)
    return consts, jit_params, neg


def conv_flags_problem(cfg: ConvCfg, t: ConvTile, array_in: int) -> str | None:
    """Why the CONV_CFG flags do not fit tile ``t`` (reserved bits, image mode with more
    than one group or ``kw * cin_g > array_in``, depthwise mode without ``cin_g = 1``,
    ``oc = in_c``); None when they do."""
    if cfg.flags & ~(spec.CONV_FLAG_SHORTCUT | spec.CONV_FLAG_IMAGE | spec.CONV_FLAG_DEPTHWISE
                     | spec.CONV_FLAG_LUT | spec.WIDE_MASK << spec.CONV_FLAG_WIDE_SHIFT
                     | spec.CONV_FLAG_WIDE_W):
        return f"CONV_CFG reserved flag bits set ({cfg.flags:#x})"
    problem = _mode_problem(cfg)
    if problem:
        return problem
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


def _mode_problem(cfg: ConvCfg) -> str | None:
    """Why the CONV_CFG's out_mode and width bits do not go together (int16 weights need
    out_mode 0 (bit2 or bit3 allowed); an int16 output (with a LUT: the table's input) no int32;
    an int16 table output (bit3) an int16-input LUT epilogue; two-slope a requantized output,
    no shortcut, no LUT); None when they do."""
    if cfg.wide_weights and cfg.out_mode & ~(spec.OUT_MODE_TWO_SLOPE | spec.OUT_MODE_LUT16) \
            != spec.OUT_MODE_INT8:
        return f"CONV_CFG flags {cfg.flags:#x}: int16 weights need out_mode 0, 4 or 8"
    if cfg.wide & spec.WIDE_OUT and cfg.out_mode & spec.OUT_MODE_INT32:
        return f"CONV_CFG flags {cfg.flags:#x}: int16 output with out_mode {cfg.out_mode}"
    if cfg.lut16 and (not cfg.has_lut or not cfg.wide & spec.WIDE_OUT or cfg.two_slope
                      or cfg.out_mode & spec.OUT_MODE_INT32):
        return (f"CONV_CFG out_mode {cfg.out_mode} (int16 table output) needs flags bits 3 and "
                f"5 (an int16-input LUT epilogue), no two-slope and no int32 (flags "
                f"{cfg.flags:#x})")
    if cfg.two_slope and (cfg.has_shortcut or cfg.has_lut
                          or cfg.out_mode & spec.OUT_MODE_INT32):
        return (f"CONV_CFG out_mode {cfg.out_mode} (two-slope) needs a requantized output, no "
                f"shortcut and no LUT (flags {cfg.flags:#x})")
    return None
