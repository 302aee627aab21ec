"""Choosing each tensor's clipping range from its observers, with a guard against collapse.

:func:`choose_ranges` turns the observers of one calibration run
(:func:`tcc_compiler.quant.calibrate.observe`) into ``{value name: (lo, hi)}``. Every range a
method proposes is checked by :func:`guard_reason` before it is used: a range that keeps less
than :data:`GUARD_MIN_KEPT` of the tensor's observed span, or whose expected quantization error
on the calibration data is more than :data:`GUARD_ERROR_RATIO` times the min-max range's, is
rejected for that tensor with a warning naming it, and the tensor takes the MSE-optimal range of
the same histogram instead (never worse than min-max in that error, never below 5 % of the
span). This is the failure the issue describes: entropy calibration clipped five post-ReLU
outputs of a real MobileNetV1 to 2-5 % of their range and the model predicted one class.

The error of a range ``[lo, hi]`` (widened to include 0, as
:func:`tcc_compiler.quant.quantize.activation_params` does) on a histogram is the expected
per-value squared error ``sum_b count_b * (d_b^2 if clipped else step^2 / 12) / sum_b count_b``
with ``d_b`` the distance of bin ``b``'s centre to the nearest bound and ``step = (hi - lo) /
255`` (uniform rounding noise, Widrow 1956): the error the tensor's quantized values carry on the
calibration inputs. Magnitude histograms (entropy: ``|x|``, zeros left out) clip at ``t = max(-lo,
hi)`` on both sides, exact for the symmetric ranges the entropy method proposes and for min-max.
"""

from __future__ import annotations

import logging

import numpy as np

from tcc_compiler.quant.calibrate import EntropyObserver, MSEObserver, PercentileObserver

log = logging.getLogger(__name__)

#: A proposed range keeping less than this fraction of the observed span is rejected.
GUARD_MIN_KEPT = 0.05
#: A proposed range whose expected error exceeds this multiple of min-max's is rejected
#: ("far worse than min-max", issue #14). On the real ResNet-8 and EfficientNet-Lite0
#: (tools/bench_quant.py) no mse range comes near it.
GUARD_ERROR_RATIO = 4.0
#: Scale factors of the fallback's candidate ranges (as :class:`MSEObserver`'s).
_ALPHAS = np.linspace(0.05, 1.0, 191)


def _histogram(obs) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(bin centres, counts, magnitude?) of an observer's histogram, None without one (min-max,
    or no span seen). Exact zeros are left out of the counts (always representable)."""
    hist = getattr(obs, "hist", None)
    if hist is None or hist.width == 0.0:
        return None
    counts = hist.counts.copy()
    if isinstance(obs, MSEObserver):
        z = int((0.0 - hist.lo) // hist.width)
        if 0 <= z < hist.bins:
            counts[z] = max(counts[z] - obs.zeros, 0.0)
    if counts.sum() <= 0:
        return None
    return hist.centers(), counts, isinstance(obs, EntropyObserver)


def range_errors(obs, los: np.ndarray, his: np.ndarray) -> np.ndarray | None:
    """Expected quantization MSE (real units squared) of each candidate range
    ``[los[i], his[i]]`` on the observer's histogram (module docstring), averaged over the
    values it counts (exact zeros, always representable, are left out by the mse and entropy
    observers); None when the observer keeps no histogram."""
    h = _histogram(obs)
    if h is None:
        return None
    c, counts, magnitude = h
    los = np.minimum(np.asarray(los, np.float64), 0.0)[:, None]
    his = np.maximum(np.asarray(his, np.float64), 0.0)[:, None]
    step2 = ((his - los) / 255.0) ** 2 / 12.0
    if magnitude:
        d = np.maximum(c[None] - np.maximum(-los, his), 0.0)
    else:
        d = np.maximum(c[None] - his, 0.0) + np.maximum(los - c[None], 0.0)
    return (counts[None] * np.where(d > 0, d * d, step2)).sum(axis=1) / counts.sum()


def guard_reason(obs, lo: float, hi: float) -> str | None:
    """Why the range ``(lo, hi)`` proposed for the observer's tensor is rejected, or None.

    Rejected: it keeps < :data:`GUARD_MIN_KEPT` of the observed span, or its expected error
    (:func:`range_errors`) is > :data:`GUARD_ERROR_RATIO` x the min-max range's.
    """
    mm = getattr(obs, "mm", None)
    if mm is None or not np.isfinite(mm.lo) or mm.hi - mm.lo <= 0.0:
        return None
    kept = (min(hi, mm.hi) - max(lo, mm.lo)) / (mm.hi - mm.lo)
    if kept < GUARD_MIN_KEPT * (1.0 - 1e-9):
        return f"keeps {100 * kept:.1f}% of the observed range [{mm.lo:.4g}, {mm.hi:.4g}]"
    err = range_errors(obs, np.array([lo, mm.lo]), np.array([hi, mm.hi]))
    if err is not None and err[0] > GUARD_ERROR_RATIO * err[1]:
        return (f"its quantization error is {err[0] / max(err[1], 1e-300):.1f}x min-max's "
                f"on the calibration data")
    return None


def mse_range(obs) -> tuple[float, float]:
    """The range minimising :func:`range_errors` among ``alpha * [min(lo, 0), max(hi, 0)]``,
    ``alpha`` in [0.05, 1] (the guard's fallback); min-max without a histogram."""
    mm = obs.mm
    lo0, hi0 = min(mm.lo, 0.0), max(mm.hi, 0.0)
    err = range_errors(obs, lo0 * _ALPHAS, hi0 * _ALPHAS)
    if err is None:
        return mm.range()
    a = float(_ALPHAS[int(np.argmin(err))])
    return max(lo0 * a, mm.lo), min(hi0 * a, mm.hi)


def choose_ranges(observers: dict, method: str = "", guard: bool = True
                  ) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Each tensor's range from its observer, guarded.

    Args:
        observers: {value name: observer} (``observe(...)[method]``).
        method: the method's name, for the warning.
        guard: False takes every proposed range as it is.

    Returns:
        ({value name: (lo, hi)} in real units, {value name: rejection reason} for the tensors
        whose proposed range the guard replaced by :func:`mse_range`).
    """
    ranges, rejected = {}, {}
    for name, obs in observers.items():
        lo, hi = obs.range()
        why = guard_reason(obs, lo, hi) if guard and isinstance(
            obs, (PercentileObserver, EntropyObserver, MSEObserver)) else None
        if why is not None:
            nlo, nhi = mse_range(obs)
            log.warning("calibration (%s): range [%.4g, %.4g] of tensor '%s' rejected: %s; "
                        "using the MSE range [%.4g, %.4g]", method, lo, hi, name, why, nlo, nhi)
            rejected[name] = why
            lo, hi = nlo, nhi
        ranges[name] = (lo, hi)
    return ranges, rejected


#: Largest distance (in pixel steps) of ``mean / scale`` from an integer for which the
#: input is still on an int8 grid (float rounding of a preset's numbers, not a half step).
GRID_TOLERANCE = 1e-6


def pixel_grid_range(preprocess, observed: tuple[float, float]) -> tuple[float, float] | None:
    """The input range whose int8 parameters represent every preprocessed pixel exactly, or
    None when there is none.

    With ``value = (pixel * scale - mean) / std`` (pixel 0..255, the same ``mean`` and ``std``
    on every channel, :class:`tcc_compiler.datasets.images.Preprocess`) the input takes only
    the 256 values ``(p * scale - mean) / std``. The range ``[-mean / std, (255 * scale -
    mean) / std]`` gives (:func:`tcc_compiler.quant.quantize.activation_params`) the step
    ``s = scale / std`` and zero point ``zp = mean / scale - 128``, so pixel ``p`` becomes
    ``q = value / s + zp = p - 128``: exact when ``mean / scale`` is an integer in [0, 255]
    (e.g. TF/EfficientNet's (p - 127) / 128, ``--preset raw``). A range a calibration method
    chooses instead may clip the brightest pixels or, without a pixel 0 or 255 in the
    calibration images, put the input between grid points (noise on every pixel).

    Args:
        preprocess: an object with ``mean``, ``std`` (per channel) and ``scale`` (floats).
        observed: (min, max) of the calibration inputs (real units).

    Returns:
        (lo, hi) in real units, or None: channels with different mean or std (ImageNet's
        default: three grids, one per-tensor scale), ``mean / scale`` not an integer in
        [0, 255], or calibration inputs outside the grid's range (arrays not made by this
        preprocessing).
    """
    mean, std = set(getattr(preprocess, "mean", ())), set(getattr(preprocess, "std", ()))
    if len(mean) != 1 or len(std) != 1:
        return None
    (m,), (sd,), sc = mean, std, float(preprocess.scale)
    offset = m / sc                                     # pixel value that maps to 0.0
    if abs(offset - round(offset)) > GRID_TOLERANCE or not 0 <= round(offset) <= 255:
        return None
    lo, hi = -m / sd, (255.0 * sc - m) / sd
    slack = GRID_TOLERANCE * (hi - lo)
    if observed[0] < lo - slack or observed[1] > hi + slack:
        return None
    return lo, hi


def snap_input_range(ranges: dict, minmax: dict, name: str, preprocess) -> bool:
    """Replace the graph input ``name``'s range in ``ranges`` (in place) by
    :func:`pixel_grid_range` when there is one (the input then quantizes without error).

    Args:
        ranges: {value name: (lo, hi)} chosen by :func:`choose_ranges`.
        minmax: {value name: observed (min, max)} of the same calibration run.
        name: the graph input's value name. preprocess: the image preprocessing.

    Returns:
        True when the range was replaced (logged at INFO with the method's range).
    """
    if name not in ranges or name not in minmax:
        return False
    grid = pixel_grid_range(preprocess, minmax[name])
    if grid is None:
        return False
    if tuple(ranges[name]) != grid:
        log.info("calibration: input '%s' takes the pixel grid's range [%.6g, %.6g] (exact "
                 "int8) instead of [%.6g, %.6g]", name, *grid, *ranges[name])
    ranges[name] = grid
    return True
