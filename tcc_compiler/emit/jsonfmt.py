"""Standard JSON text for everything tccc writes: ``--json`` outputs, report.json,
manifest.json, analysis.json.

Standard JSON (RFC 8259) has no ``Infinity`` or ``NaN``; Python's :func:`json.dumps` writes them
anyway, and strict parsers (``JSON.parse``, ``jq``, Go, Rust) reject the result. The convention
(README, "JSON output"): a quantity that is not a finite number is written as ``null``, and
the field's documentation says what ``null`` means there.
"""

from __future__ import annotations

import json
import math


def json_ready(obj):
    """``obj`` with every non-finite float (``inf``, ``-inf``, ``nan``; Python or numpy) replaced
    by ``None`` and numpy scalars turned into Python numbers, recursively through dicts, lists
    and tuples (tuples become lists).

    The convention of every JSON tccc writes (``--json`` outputs, report.json, analysis.json,
    manifest.json; README "JSON"): standard JSON (RFC 8259) has no Infinity or NaN, so a quantity
    that is not a finite number is ``null``, and the field's documentation says what ``null``
    means (e.g. ``sqnr_db: null``: the error is exactly zero, an infinite SQNR). ``null`` rather
    than a large finite cap because a cap reads as a measurement and every strict parser
    accepts ``null``.
    """
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:  # numpy scalars (imported lazily: this module stays numpy-free)
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return json_ready(float(obj))
    return obj


def json_text(obj, **kwargs) -> str:
    """``json.dumps(json_ready(obj), allow_nan=False, **kwargs)``: standard JSON text (no
    ``Infinity``/``NaN`` tokens; see :func:`json_ready` for the convention).

    Raises:
        ValueError: ``obj`` still holds a non-finite number json_ready cannot see (a bug).
        TypeError: ``obj`` holds a value JSON cannot represent.
    """
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)
