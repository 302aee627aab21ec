"""Calibration table: the activation range of every tensor, written with the compiled outputs
(``calib_table.json``), editable by hand and reusable with ``tccc compile --calib-table``.

Format (JSON)::

    {"format": "tccc-calib-table", "version": 1, "method": "mse", "percentile": 99.99,
     "tensors": {"<value name>": {"lo": -1.2, "hi": 3.4, "method": "mse",
                                  "summary": {"min": -1.9, "max": 6.1, ...}}, ...}}

``lo``/``hi`` are the real-valued clipping range the quantizer uses (before it is intersected
with a fused activation's bounds and widened to include 0); ``summary`` is informative (observed
min/max and the method's statistic: percentile, KL threshold, histogram bins) and is ignored
when the table is read back, as is ``guard`` (present when the collapse guard of
:mod:`tcc_compiler.quant.ranges` rejected the method's range for that tensor: the reason).
Editing ``lo``/``hi`` of one tensor overrides that tensor only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tcc_compiler.errors import InputError

FORMAT = "tccc-calib-table"
VERSION = 1
CALIB_TABLE_FILE = "calib_table.json"


def build_table(observers: dict, method: str, percentile: float | None = None,
                ranges: dict | None = None, rejected: dict | None = None) -> dict:
    """The table of one calibration run.

    Args:
        observers: {value name: observer} as returned by ``calibrate.observe(...)[method]``.
        method: the calibration method name. percentile: p of the percentile method.
        ranges: the ranges chosen ({value name: (lo, hi)}, :func:`quant.ranges.choose_ranges`);
            None = each observer's own ``range()``.
        rejected: {value name: reason} of the tensors whose proposed range the collapse guard
            replaced; such a tensor's record gets ``"guard": reason`` (its ``lo``/``hi`` are the
            replacement).

    Returns:
        A JSON-ready dict (see the module docstring), tensors sorted by name.
    """
    tensors = {}
    for name in sorted(observers):
        o = observers[name]
        lo, hi = o.range() if ranges is None else ranges[name]
        tensors[name] = {"lo": float(lo), "hi": float(hi), "method": method,
                         "summary": {k: (float(v) if isinstance(v, float) else v)
                                     for k, v in o.summary().items()}}
        if rejected and name in rejected:
            tensors[name]["guard"] = rejected[name]
    return {"format": FORMAT, "version": VERSION, "method": method,
            "percentile": percentile if method == "percentile" else None,
            "tensors": tensors}


def add_fixed(table: dict | None, ranges: dict[str, tuple[float, float]]) -> dict:
    """``table`` (None: a new one, method "fixed") with the tensors a pre-quantized model fixes
    added as ``{"lo", "hi", "method": "fixed"}``: the range whose int8 parameters are exactly
    the model's (``lo = s * (-128 - zp)``, ``hi = s * (127 - zp)``), so ``--calib-table``
    reproduces them."""
    table = table or {"format": FORMAT, "version": VERSION, "method": "fixed",
                      "percentile": None, "tensors": {}}
    for name in sorted(ranges):
        lo, hi = ranges[name]
        table["tensors"][name] = {"lo": float(lo), "hi": float(hi), "method": "fixed",
                                  "summary": {}}
    return table


def write_table(table: dict, path: str | os.PathLike) -> Path:
    """Write ``table`` as indented JSON; returns the path."""
    p = Path(path)
    p.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return p


def read_table(path: str | os.PathLike) -> tuple[dict, dict[str, tuple[float, float]]]:
    """Read a calibration table.

    Returns:
        (the table dict, {value name: (lo, hi)}).

    Raises:
        InputError: missing/unreadable file, wrong format or version, a tensor whose ``lo``
            or ``hi`` is not a JSON number (a string such as ``"3"``, a bool, null, missing),
            or not finite ``lo <= hi``.
    """
    p = Path(path)
    table = _load_json(p)
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise InputError(f"{p}: not a tccc calibration table (format must be '{FORMAT}')")
    if not _is_number(table.get("version")) or table.get("version") != VERSION:
        raise InputError(f"{p}: calibration table version {table.get('version')!r}, "
                         f"this tccc reads {VERSION}")
    tensors = table.get("tensors")
    if not isinstance(tensors, dict) or not tensors:
        raise InputError(f"{p}: 'tensors' must be a non-empty object")
    return table, {name: _tensor_range(p, name, rec) for name, rec in tensors.items()}


def _load_json(p: Path):
    """The JSON value in file ``p``.

    Raises:
        InputError: ``p`` is a folder, missing, unreadable, or not valid JSON.
    """
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a calibration table (give its "
                         "calib_table.json)")
    if not p.exists():
        raise InputError(f"{p}: calibration table not found")
    try:
        return json.loads(p.read_text())
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None


def _tensor_range(p: Path, name: str, rec) -> tuple[float, float]:
    """One tensor record's ``(lo, hi)`` in real units.

    Raises:
        InputError: ``lo`` or ``hi`` is not a JSON number, overflows a float, or the two are
            not finite ``lo <= hi``.
    """
    bounds = [rec.get(k) if isinstance(rec, dict) else None for k in ("lo", "hi")]
    if not all(_is_number(b) for b in bounds):   # "3" or true is no range: say so
        raise InputError(f"{p}: tensor '{name}': 'lo' and 'hi' must be JSON numbers, got "
                         f"{', '.join(json.dumps(b) for b in bounds)}")
    try:
        lo, hi = (float(b) for b in bounds)
    except OverflowError:                          # an integer beyond float's range
        raise InputError(f"{p}: tensor '{name}': 'lo' and 'hi' must be finite floats, got "
                         f"{', '.join(_short(b) for b in bounds)}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InputError(f"{p}: tensor '{name}': need finite lo <= hi, got {lo}, {hi}")
    return lo, hi


def _short(v) -> str:
    """A JSON number for a message, an over-long integer abbreviated (``1e400`` has 401
    digits)."""
    text = json.dumps(v)
    return text if len(text) <= 24 else f"{text[:8]}...({len(text)} digits)"


def _is_number(v) -> bool:
    """True for a JSON number (int or float; not a bool, a string or null)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_covers(ranges: dict, names: list[str], path: str | os.PathLike) -> None:
    """Raise InputError naming the first value of ``names`` missing from the table."""
    missing = [n for n in names if n not in ranges]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"{path}: calibration table has no range for tensor "
                         f"'{missing[0]}'{more}; was it made for this model and tccc version?")
