"""List the ONNX ops tccc converts, or place each node of a model on the NPU or the host.

Without MODEL: the op types of the frontend's converter table (the same table the importer and
SUPPORTED_OPS.md use). With MODEL: :func:`tcc_compiler.placement.partition` per node, with the reason.
"""

from __future__ import annotations

import json

NAME = "ops"
HELP = "supported ONNX ops, or the NPU/host placement of each node of a model"
ORDER = 70


def add_arguments(p) -> None:
    """Arguments of ``tccc ops``."""
    p.add_argument("model", nargs="?", help="an .onnx model to partition (optional)")
    p.add_argument("--input", default=None, help="input size W x H x C for MODEL")
    p.add_argument("--json", action="store_true", help="print JSON")


def _op_table() -> list[dict]:
    """One row per converted op type: ``notes`` = where it runs and what it accepts, from the
    support records (frontend/support.py, the source of SUPPORTED_OPS.md), so the two agree;
    ``runs``/``accepts``/``refuses`` are the record's fields. An op without a record (a bug
    tests/test_opsets.py catches) falls back to its converter's docstring."""
    from tcc_compiler.frontend.converters import CONVERTERS
    from tcc_compiler.frontend.support import SUPPORT

    rows = []
    for op, fn in sorted(CONVERTERS.items()):
        rec = SUPPORT.get(op)
        if rec is None:
            doc = (fn.__doc__ or "").strip().splitlines()
            rows.append({"op_type": op, "notes": doc[0] if doc else ""})
            continue
        rows.append({"op_type": op, "notes": f"{rec.runs}: {rec.accepts}", "runs": rec.runs,
                     "accepts": rec.accepts, "refuses": rec.refuses})
    return rows


def run(args) -> int:
    """tccc ops [MODEL [--input WxHxC]] [--json]"""
    if args.model is None:
        rows = _op_table()
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                print(f"{r['op_type']:<20} {r['notes']}".rstrip())
        return 0
    from tcc_compiler.placement import partition

    places = partition(args.model, args.input)
    if args.json:
        print(json.dumps([p.to_dict() for p in places]))
        return 0
    for p in places:
        print(f"{p.device:<5} {p.op_type:<20} {p.node}: {p.reason}")
    n_host = sum(p.device == "host" for p in places)
    n_folded = sum(p.device != "host" and p.folded for p in places)
    print(f"{len(places) - n_host} node(s) on the NPU ({n_folded} of them folded away or views "
          f"at compile time, no NPU op of their own), {n_host} on the host")
    return 0
